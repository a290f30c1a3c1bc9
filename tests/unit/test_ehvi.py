"""log-EHVI's pieces against brute force: the boxes against exact hypervolume, the expectation against
Monte Carlo, and the sampler's determinism and pending-point handling."""
from __future__ import annotations

import math

import numpy as np
import pytest

from parasearch.ehvi import EHVISampler, cells, log_ehvi, multi_objective_sampler
from parasearch.parego import ParEGOSampler
from orchestra.pareto import hypervolume, pareto_front
from parasearch.space import Space
from parasearch.study import VectorTrial


def _overlap(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.prod(np.clip(upper - np.maximum(lower, y), 0.0, None), axis=1).sum())


@pytest.mark.parametrize("m", [2, 3])
def test_boxes_give_the_exact_hypervolume_improvement(m: int) -> None:
    rng = np.random.default_rng(m)
    Y = rng.random((25, m))
    front = Y[pareto_front(Y)]
    ref = np.full(m, 1.2)
    lower, upper = cells(front, ref)
    # The boxes are the undominated part of the reference box: a point at the origin gains all of it.
    assert _overlap(np.zeros(m), lower, upper) == pytest.approx(1.2 ** m - hypervolume(front, ref))
    for y in rng.random((30, m)) * 1.3 - 0.1:
        gain = hypervolume(np.vstack([front, y]), ref) - hypervolume(front, ref)
        assert _overlap(y, lower, upper) == pytest.approx(gain, abs=1e-12)


@pytest.mark.parametrize("m", [2, 3])
def test_log_ehvi_matches_monte_carlo(m: int) -> None:
    rng = np.random.default_rng(10 + m)
    Y = rng.random((12, m))
    front = Y[pareto_front(Y)]
    lower, upper = cells(front, np.full(m, 1.1))
    mean, sigma = np.full((1, m), 0.4), np.full((1, m), 0.2)
    draws = mean + sigma * rng.standard_normal((100_000, m))
    mc = np.mean([_overlap(y, lower, upper) for y in draws[:20_000]])
    assert math.exp(log_ehvi(mean, sigma, lower, upper)[0]) == pytest.approx(mc, rel=0.05)


def test_log_ehvi_is_finite_far_from_the_front() -> None:
    lower, upper = cells(np.array([[0.0, 0.0]]), np.array([1.0, 1.0]))
    value = log_ehvi(np.array([[40.0, 40.0]]), np.array([[0.1, 0.1]]), lower, upper)
    assert np.isfinite(value).all() and value[0] < -1000  # EHVI itself would be 0.0: no slope at all


def _history(space: Space, sampler: EHVISampler, n: int) -> list[VectorTrial]:
    history: list[VectorTrial] = []
    while len(history) < n:
        point = sampler.ask(1, history, [])[0]
        x = float(point["x"]), float(point["y"])
        history.append(VectorTrial(point, x[0], values=(x[0], (1 - x[0]) ** 2 + x[1])))
    return history


def test_ehvi_is_reproducible_and_spreads_a_batch_with_pending_points() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0.0, "high": 1.0},
                                   "y": {"type": "float", "low": 0.0, "high": 1.0}})
    a = EHVISampler(space, seed=3, budget=30, goals=["minimize", "minimize"])
    history = _history(space, a, 12)
    b = EHVISampler(space, seed=3, budget=30, goals=["minimize", "minimize"])
    assert b.ask(4, history, []) == a.ask(4, history, [])
    batch = a.ask(4, history, [])
    assert len({(p["x"], p["y"]) for p in batch}) == 4
    # With the first three in flight, the fourth is chosen knowing them: not one of them again.
    later = a.ask(1, history, batch[:3])
    assert later and later[0] not in batch[:3]


def test_automatic_choice_by_number_of_objectives() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    assert isinstance(multi_objective_sampler(space, seed=0, budget=10, goals=["minimize"] * 2), EHVISampler)
    assert isinstance(multi_objective_sampler(space, seed=0, budget=10, goals=["minimize"] * 3), ParEGOSampler)
