"""From an algorithm's name to its sampler: the one module that knows them all.

Why a module of its own: the model-based sampler builds on the simple ones (parasearch.samplers), so the
function choosing among them cannot live beside those without an import cycle.
"""
from __future__ import annotations

from orchestra.errors import SearchError
from parasearch.bayes import BayesSampler
from parasearch.samplers import GOALS, GridSampler, QMCSampler, RandomSampler, Sampler
from parasearch.space import Space


def make_sampler(algorithm: str, space: Space, *, seed: int = 0, budget: int = 100,
                 goal: str = "minimize") -> Sampler:
    """The sampler for ``algorithm`` after checking it can search ``space`` (SearchError otherwise)."""
    if goal not in GOALS:
        raise SearchError(f"unknown objective goal {goal!r}", hint="use minimize or maximize")
    if budget < 1:
        raise SearchError(f"search budget must be at least 1, got {budget}")
    space.check(algorithm)
    if algorithm == "grid":
        return GridSampler(space, seed=seed, budget=budget, goal=goal)
    if algorithm == "random":
        return RandomSampler(space, seed=seed, budget=budget, goal=goal)
    if algorithm in ("sobol", "halton", "lhs"):
        return QMCSampler(space, seed=seed, budget=budget, goal=goal, kind=algorithm)
    return BayesSampler(space, seed=seed, budget=budget, goal=goal)


__all__ = ["make_sampler"]
