"""Samplers: given everything tried so far, propose the next points.

Samplers are stateless on purpose. Git is the storage: after a crash, a resume or on another machine the
campaign's branches are re-read and every ask receives the full history (finished trials, failed ones
included) plus the pending points (launched, no result yet). The same (seed, history, pending) always
gives the same answer, and nothing handed out or tried is handed out again.
"""
from __future__ import annotations

import abc
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import qmc

from orchestra.errors import SearchError
from orchestra.search import ALGORITHMS
from parasearch.space import Point, Space, Trial, seen_keys

GOALS: tuple[str, ...] = ("minimize", "maximize")


class Sampler(abc.ABC):
    """The one interface every algorithm implements (optuna-style split: sampler here, storage in git)."""

    def __init__(self, space: Space, *, seed: int, budget: int, goal: str = "minimize") -> None:
        self.space = space
        self.seed = int(seed)
        self.budget = int(budget)
        self.goal = goal

    @abc.abstractmethod
    def ask(self, n: int, history: Sequence[Trial], pending: Sequence[Mapping[str, Any]]) -> list[Point]:
        """Up to ``n`` new points, none equal to a point in ``history`` or ``pending`` (nor to each other).

        Fewer than ``n`` (possibly none) means the space is exhausted for this algorithm.
        """

    def _rng(self, *salt: int) -> np.random.Generator:
        """A generator determined by the seed and the salt (typically how much has been tried)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, *salt]))


class GridSampler(Sampler):
    """The full product in a fixed order; each grid point handed out exactly once across all asks."""

    def ask(self, n: int, history: Sequence[Trial], pending: Sequence[Mapping[str, Any]]) -> list[Point]:
        seen = seen_keys(self.space, history, pending)
        out: list[Point] = []
        for point in self.space.grid():
            if len(out) >= n:
                break
            key = self.space.key(point)
            if key not in seen:
                seen.add(key)
                out.append(point)
        return out


class RandomSampler(Sampler):
    """Independent uniform points (log-uniform on log ranges), never repeating a tried or pending point.

    The stream is salted with the number of points already tried, so two asks in parallel with
    different pending sets do not replay the same sequence.
    """

    #: Rejections allowed per requested point before concluding that a discrete space is exhausted.
    MAX_TRIES = 200

    def ask(self, n: int, history: Sequence[Trial], pending: Sequence[Mapping[str, Any]]) -> list[Point]:
        seen = seen_keys(self.space, history, pending)
        rng = self._rng(len(seen), 1)
        out: list[Point] = []
        tries = 0
        while len(out) < n and tries < self.MAX_TRIES * max(n, 1):
            tries += 1
            point = self.space.from_unit(rng.random(self.space.dim))
            key = self.space.key(point)
            if key not in seen:
                seen.add(key)
                out.append(point)
        return out


def qmc_design(kind: str, dim: int, length: int, seed: int) -> np.ndarray:
    """The first ``length`` points of a scrambled quasi-random design in [0, 1)^dim, fixed by ``seed``.

    Sobol and Halton are extensible sequences (a longer design starts with the shorter one), which is what
    makes "continue where the history left off" meaningful. An LHS is only stratified as a whole, so it
    is made of consecutive blocks of ``block`` points, each a full Latin hypercube.
    """
    dim = max(dim, 1)
    if kind == "sobol":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "balance properties need n = 2^m": prefixes are what we want
            return _engine(qmc.Sobol, dim, seed).random(length)
    if kind == "halton":
        return _engine(qmc.Halton, dim, seed).random(length)
    raise SearchError(f"unknown quasi-random design {kind!r}", hint="use sobol, halton or lhs")


def _engine(cls: Any, dim: int, seed: Any) -> qmc.QMCEngine:
    """A scrambled scipy QMC engine; scipy >= 1.15 calls the seed ``rng``, older versions ``seed``."""
    try:
        return cls(dim, scramble=True, rng=seed)
    except TypeError:
        return cls(dim, scramble=True, seed=seed)


class QMCSampler(Sampler):
    """Sobol, Halton or Latin hypercube designs of length ``budget``, handed out in order.

    An ask continues at position ``len(distinct tried or pending)``. Design points that map onto an already
    seen point (possible with ints and choices) are skipped; the skipped ones stay duplicates forever, so
    restarting the scan at the count of distinct points never skips a fresh design point nor repeats one.
    Past the budget the design extends (Sobol/Halton) or continues with a new LHS block.
    """

    def __init__(self, space: Space, *, seed: int, budget: int, goal: str = "minimize", kind: str = "sobol") -> None:
        super().__init__(space, seed=seed, budget=budget, goal=goal)
        self.kind = kind
        self.block = max(self.budget, 1)

    def design(self, length: int) -> np.ndarray:
        if self.kind == "lhs":
            blocks = []
            for b in range(-(-length // self.block)):
                engine = _engine(qmc.LatinHypercube, max(self.space.dim, 1), self._rng(b, 2))
                blocks.append(engine.random(self.block))
            return np.concatenate(blocks)[:length] if blocks else np.empty((0, max(self.space.dim, 1)))
        return qmc_design(self.kind, self.space.dim, length, self.seed)

    def ask(self, n: int, history: Sequence[Trial], pending: Sequence[Mapping[str, Any]]) -> list[Point]:
        seen = seen_keys(self.space, history, pending)
        start = len(seen)
        out: list[Point] = []
        # Bounded scan: a small discrete space runs out; a continuous one never skips much.
        limit = start + max(4 * n, n + 64, self.block)
        chunk = max(n, 8)
        pos = start
        while len(out) < n and pos < limit:
            design = self.design(min(pos + chunk, limit))
            while pos < len(design) and len(out) < n:
                point = self.space.from_unit(design[pos])
                pos += 1
                key = self.space.key(point)
                if key not in seen:
                    seen.add(key)
                    out.append(point)
            chunk *= 2
        return out


__all__ = ["ALGORITHMS", "GOALS", "Sampler", "GridSampler", "RandomSampler", "QMCSampler", "qmc_design"]
