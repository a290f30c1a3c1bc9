"""Pareto dominance and hypervolume: the pure arithmetic of a multi-objective study.

In the backbone, not in parasearch: the report draws the front and its hypervolume from the records
(expegit), parasearch searches for it, and both must agree to the last digit.

Every function works on *minimisation* vectors; :func:`oriented` turns raw values with their goals into
that form once (a maximised metric is negated), so no caller has to remember signs twice.

Dominance: ``a`` dominates ``b`` when it is no worse in every objective and better in at least one. Two
equal vectors do not dominate each other, so duplicates (two points with the same values, or repeats of
one point) all stay on the front: the user sees every point that reached it.

Hypervolume: the volume dominated by a set and bounded by a reference point, the standard measure of a
front's quality (it grows with every point that improves the front, and only with those). It is exact:
a sweep for two objectives, and hypervolume by slicing objectives (HSO: slice along the last objective,
recurse on the rest) for more, which is exponential in the number of objectives but exact and fast at
a study's sizes (hundreds of points, two or three objectives).

The reference point rule (:func:`reference_point`): the nadir of the observed values (the worst value of
each objective) pushed out by 10% of each objective's observed range, so that the extreme points of the
front contribute a positive volume instead of none; an objective whose observed range is 0 is pushed out
by 10% of its magnitude (or by 0.1 at 0). A user-given reference replaces the rule.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GOALS = ("minimize", "maximize")
#: How far beyond the observed nadir the default reference point lies, as a share of each range.
REFERENCE_MARGIN = 0.1


def oriented(values: Sequence[Sequence[float]] | np.ndarray, goals: Sequence[str]) -> np.ndarray:
    """Raw objective values (n, m) with their goals -> minimisation vectors (n, m)."""
    Y = np.asarray(values, dtype=float).reshape(-1, len(goals))
    for goal in goals:
        if goal not in GOALS:
            raise ValueError(f"unknown goal {goal!r}; use minimize or maximize")
    sign = np.array([-1.0 if g == "maximize" else 1.0 for g in goals])
    oriented_values: np.ndarray = Y * sign
    return oriented_values


def dominates(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> bool:
    """Whether minimisation vector ``a`` dominates ``b``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(Y: np.ndarray) -> list[list[int]]:
    """The fronts of minimisation vectors ``Y`` (n, m): indices of front 0 (the Pareto front), then 1, ...

    Deb's fast non-dominated sort, O(m n^2), vectorised per point: a study has at most thousands of points.
    Each front lists its indices in increasing order.
    """
    Y = np.asarray(Y, dtype=float)
    n = len(Y)
    if n == 0:
        return []
    le = np.all(Y[:, None, :] <= Y[None, :, :], axis=2)
    lt = np.any(Y[:, None, :] < Y[None, :, :], axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    count = dom.sum(axis=0)  # how many points dominate each one
    fronts: list[list[int]] = []
    current = [int(i) for i in np.flatnonzero(count == 0)]
    while current:
        fronts.append(current)
        for i in current:
            count[dom[i]] -= 1
        count[current] = -1  # placed
        current = [int(i) for i in np.flatnonzero(count == 0)]
    return fronts


def pareto_front(Y: np.ndarray) -> list[int]:
    """Indices (increasing) of the non-dominated rows of minimisation vectors ``Y``."""
    fronts = non_dominated_sort(Y)
    return fronts[0] if fronts else []


def reference_point(Y: np.ndarray, margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """The default reference point of minimisation vectors ``Y``: nadir + ``margin`` × range (see above)."""
    Y = np.asarray(Y, dtype=float)
    if Y.size == 0:
        raise ValueError("a reference point needs at least one observed point")
    worst, best = Y.max(axis=0), Y.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.where(worst != 0, np.abs(worst), 1.0))
    reference: np.ndarray = worst + margin * span
    return reference


def hypervolume(Y: np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """The exact volume dominated by minimisation vectors ``Y`` (n, m) and bounded by ``reference``.

    Points not strictly better than the reference in every objective add nothing and are dropped.
    """
    ref = np.asarray(reference, dtype=float)
    Y = np.asarray(Y, dtype=float).reshape(-1, len(ref))
    Y = Y[np.all(Y < ref, axis=1)]
    if len(Y) == 0:
        return 0.0
    Y = Y[pareto_front(Y)]
    return float(_hv(Y, ref))


def _hv(Y: np.ndarray, ref: np.ndarray) -> float:
    """HSO on non-empty points strictly inside the reference box (dominated points allowed)."""
    m = Y.shape[1]
    if m == 1:
        return float(ref[0] - Y[:, 0].min())
    if m == 2:
        return _hv2(Y, ref)
    order = np.argsort(Y[:, -1], kind="stable")
    Y = Y[order]
    volume = 0.0
    for i in range(len(Y)):
        top = Y[i + 1, -1] if i + 1 < len(Y) else ref[-1]
        depth = top - Y[i, -1]
        if depth > 0:  # the slab between this point's last objective and the next one's
            volume += depth * _hv(Y[:i + 1, :-1], ref[:-1])
    return volume


def _hv2(Y: np.ndarray, ref: np.ndarray) -> float:
    """Two objectives: sweep along the first; each point adds the rectangle below the best second so far."""
    order = np.lexsort((Y[:, 1], Y[:, 0]))
    volume, best2 = 0.0, ref[1]
    for x, y in Y[order]:
        if y < best2:
            volume += (ref[0] - x) * (best2 - y)
            best2 = y
    return volume


__all__ = ["oriented", "dominates", "non_dominated_sort", "pareto_front", "reference_point", "hypervolume",
           "REFERENCE_MARGIN"]
