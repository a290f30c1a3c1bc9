"""`bayes` on several objectives: ParEGO (Knowles 2006) over the single-objective GP sampler.

How one ask works, and why this method:

1. Each finished trial's objective vector is oriented for minimisation and normalised to [0, 1] per
   objective by the observed minimum and maximum, so objectives of any scale weigh alike.
2. A weight vector is drawn uniformly on the simplex (Dirichlet(1, ..., 1)) from a generator seeded by
   the study's seed and the number of points tried or pending: every ask of a resumed or cloned study draws
   the weights the first run drew, since that number is read from the branches.
3. The vectors become one number by the augmented Chebyshev scalarisation
   ``max_j w_j f_j + rho * sum_j w_j f_j`` (rho = 0.05). Unlike a weighted sum it reaches every point of a
   front, concave parts included; the small sum term breaks ties among weakly dominated points.
4. The existing GP sampler (:class:`parasearch.bayes.BayesSampler`: Sobol design, Matérn GP, log-EI,
   kriging-believer pending points) proposes the next point for that one number.

Across asks the weights sweep the simplex, so the points sweep the front. Why not expected hypervolume
improvement: ParEGO reuses the tested single-objective model unchanged, costs one GP fit per ask, and
works for any number of objectives; log-EHVI is the next step, measured against this in bench/.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from parasearch.bayes import BayesSampler
from orchestra.pareto import oriented
from parasearch.samplers import Sampler
from parasearch.space import Point, Space, Trial

RHO = 0.05
_WEIGHT_SALT = 0x9A4E60  # keeps this generator apart from the GP sampler's own ones


def chebyshev(Y: np.ndarray, weights: np.ndarray, rho: float = RHO) -> np.ndarray:
    """Augmented Chebyshev scalarisation of minimisation vectors, normalised by their observed range."""
    Y = np.asarray(Y, dtype=float)
    low, high = Y.min(axis=0), Y.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    F = (Y - low) / span
    W = F * np.asarray(weights, dtype=float)
    return W.max(axis=1) + rho * W.sum(axis=1)


def draw_weights(seed: int, index: int, m: int) -> np.ndarray:
    """The weight vector of ask number ``index``: uniform on the (m-1)-simplex, a function of its inputs."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, _WEIGHT_SALT, index]))
    return rng.dirichlet(np.ones(m))


class ParEGOSampler(Sampler):
    """Proposes points for a multi-objective study; trials carry their raw vectors in ``values``."""

    def __init__(self, space: Space, *, seed: int, budget: int, goals: Sequence[str]) -> None:
        super().__init__(space, seed=seed, budget=budget, goal="minimize")
        self.goals = tuple(goals)
        self.inner = BayesSampler(space, seed=seed, budget=budget, goal="minimize")

    def scalarised(self, history: Sequence[Trial], index: int) -> list[Trial]:
        """The history with each usable trial's value replaced by its scalarisation under ask ``index``."""
        usable = [i for i, t in enumerate(history) if _vector(t) is not None]
        out = [Trial(dict(t.params), None, failed=True) for t in history]
        if usable:
            Y = oriented([_vector(history[i]) for i in usable], self.goals)  # type: ignore[misc]
            s = chebyshev(Y, draw_weights(self.seed, index, len(self.goals)))
            for i, value in zip(usable, s):
                out[i] = Trial(dict(history[i].params), float(value))
        return out

    def ask(self, n: int, history: Sequence[Trial], pending: Sequence[Mapping[str, Any]]) -> list[Point]:
        out: list[Point] = []
        for _ in range(n):  # one weight vector per point: a batch spreads along the front
            index = len(history) + len(pending) + len(out)
            more = self.inner.ask(1, self.scalarised(history, index), [*pending, *out])
            if not more:
                break
            out.extend(more)
        return out


def _vector(trial: Trial) -> tuple[float, ...] | None:
    values = getattr(trial, "values", None)
    if trial.failed or values is None or not all(np.isfinite(values)):
        return None
    return tuple(float(v) for v in values)


__all__ = ["ParEGOSampler", "chebyshev", "draw_weights", "RHO"]
