"""Pareto fronts and hypervolumes: known values, ties, duplicates, mixed goals, and exact brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.pareto import (dominates, hypervolume, non_dominated_sort, oriented, pareto_front,
                               reference_point)


def test_dominance_needs_one_strict_improvement():
    assert dominates([1, 2], [2, 2])
    assert not dominates([1, 2], [1, 2])  # equal: neither dominates
    assert not dominates([1, 3], [2, 2])  # a trade-off


def test_front_keeps_duplicates_and_ties():
    Y = np.array([[1, 3], [2, 2], [2, 2], [3, 1], [3, 3], [2, 3]])
    assert pareto_front(Y) == [0, 1, 2, 3]
    assert non_dominated_sort(Y) == [[0, 1, 2, 3], [5], [4]]


def test_mixed_goals_are_oriented_before_dominance():
    raw = [[0.1, 0.90], [0.2, 0.95], [0.3, 0.80]]  # loss (minimize), accuracy (maximize)
    Y = oriented(raw, ["minimize", "maximize"])
    assert Y.tolist() == [[0.1, -0.90], [0.2, -0.95], [0.3, -0.80]]
    assert pareto_front(Y) == [0, 1]  # the third is worse in both


def test_unknown_goal_is_refused():
    with pytest.raises(ValueError, match="unknown goal"):
        oriented([[1.0]], ["smallest"])


def test_hypervolume_two_objectives_known_value():
    # Staircase of (1,3), (2,2), (3,1) under reference (4,4): 3 + 2 + 1 = 6.
    assert hypervolume(np.array([[1, 3], [2, 2], [3, 1]]), [4, 4]) == pytest.approx(6.0)
    # Duplicates and dominated points add nothing; points outside the reference box are dropped.
    assert hypervolume(np.array([[1, 3], [2, 2], [2, 2], [3, 3], [3, 1], [5, 0]]), [4, 4]) == pytest.approx(6.0)
    assert hypervolume(np.array([[4, 1]]), [4, 4]) == 0.0  # on the reference's boundary: no volume


def test_hypervolume_three_objectives_known_value():
    # One point (1,1,1) under (3,3,3) dominates a 2x2x2 cube.
    assert hypervolume(np.array([[1, 1, 1]]), [3, 3, 3]) == pytest.approx(8.0)
    # (0,2,2), (2,0,2), (2,2,0) under (3,3,3): each box is 3x1x1, every pairwise and the triple
    # intersection is [2,3]^3, so by inclusion-exclusion 3*3 - 3*1 + 1 = 7.
    assert hypervolume(np.array([[0, 2, 2], [2, 0, 2], [2, 2, 0]]), [3, 3, 3]) == pytest.approx(7.0)


def test_reference_point_rule():
    Y = np.array([[0.0, 10.0], [1.0, 5.0], [2.0, 5.0]])
    assert reference_point(Y).tolist() == pytest.approx([2.2, 10.5])
    # A constant objective is pushed out by 10% of its magnitude, or by 0.1 at zero.
    assert reference_point(np.array([[3.0, 0.0], [3.0, 0.0]])).tolist() == pytest.approx([3.3, 0.1])


def _brute_front(Y: np.ndarray) -> list[int]:
    return [i for i in range(len(Y)) if not any(dominates(Y[j], Y[i]) for j in range(len(Y)) if j != i)]


def _brute_hypervolume(Y: np.ndarray, ref: np.ndarray) -> float:
    """Exact by cells: the grid of every coordinate; a cell is dominated when a point is below its corner."""
    axes = [np.unique(np.concatenate([Y[:, k][Y[:, k] < ref[k]], [ref[k]]])) for k in range(len(ref))]
    total = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        low = np.array([axes[k][c] for k, c in enumerate(cell)])
        high = np.array([axes[k][c + 1] for k, c in enumerate(cell)])
        if np.any(np.all(Y <= low, axis=1)):
            total += float(np.prod(high - low))
    return total


points = st.integers(2, 3).flatmap(lambda m: st.lists(
    st.lists(st.integers(0, 6).map(float), min_size=m, max_size=m), min_size=1, max_size=9))


@settings(max_examples=150, deadline=None)
@given(points)
def test_front_and_hypervolume_match_brute_force(rows):
    Y = np.array(rows)
    assert pareto_front(Y) == _brute_front(Y)
    fronts = non_dominated_sort(Y)
    assert sorted(i for f in fronts for i in f) == list(range(len(Y)))
    for earlier, later in zip(fronts, fronts[1:]):  # every later point is dominated by an earlier front's
        assert all(any(dominates(Y[i], Y[j]) for i in earlier) for j in later)
    ref = np.full(Y.shape[1], 7.0)
    assert hypervolume(Y, ref) == pytest.approx(_brute_hypervolume(Y, ref))
    ref = reference_point(Y)
    assert hypervolume(Y, ref) == pytest.approx(_brute_hypervolume(Y, ref))
    # Adding a dominated copy never changes it; the front alone has the same volume.
    assert hypervolume(Y[pareto_front(Y)], ref) == pytest.approx(hypervolume(Y, ref))
