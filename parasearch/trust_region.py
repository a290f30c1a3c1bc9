"""Trust regions for ``bayes`` in many dimensions (after TuRBO-1, Eriksson et al. 2019), replayed from the history.

Why: in 20-D almost every point is far from every observation, so a global acquisition scored on
uniform candidates rarely looks closely at the incumbent's neighbourhood. TuRBO keeps a box around the
incumbent whose side grows after successes and shrinks after failures. Here the box *adds* candidates
(uniform in the box, and TuRBO's perturbations of the incumbent) to the global ones, and log-EI on the
global GP chooses among all of them. Measured in bench/search_highdim.py (BENCHMARKS.md): confining
the acquisition to the box (TuRBO proper, ``CONFINE = True``) tripled the regret on 20-D Levy, whose
global trend a local search loses, so confinement is off and kept only as the measured alternative.

Why replayed: samplers are stateless (parasearch.samplers). A resumed or cloned study only has the
branches, so the region is *derived* from the trials in the order the study lists them (by completion):
each trial after the initial design is a success (it improved the best value by a relative 1e-3) or a
failure (a crashed trial too: its slot was spent without progress); ``SUCCESS_TOLERANCE`` successes in
a row double the side, ``failure_tolerance`` failures in a row halve it, and a side under
``MIN_LENGTH`` restarts at ``INIT_LENGTH``. Pending points play no part in the region (they are
fantasies in the model, as in every ask), so 4 slots in flight ask around the same region as one would.

The box lives in the space's unit cube (log-warped, integer cells, categorical bins: parasearch.space),
is centred on the best trial and stretched per coordinate by the GP's lengthscales (long lengthscale:
the function varies slowly that way, so the box may reach further), with the product of the stretches 1
so that the volume depends on the side alone. A categorical coordinate is never boxed: its bins carry
no order, so candidates resample it with a small probability instead. Candidates are snapped to valid
points by the caller (rounded integers, a choice per bin), exactly as the global ones.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from parasearch.space import Space, Trial

#: Spaces with at least this many searched parameters use a trust region; smaller ones keep the global
#: acquisition (every row of bench/search_quality.py has at most 6 and is unchanged).
MIN_DIM = 10
#: Whether asks are confined to the box (TuRBO proper) or the box only adds candidates: see above.
CONFINE = False
INIT_LENGTH = 0.8
MIN_LENGTH = 0.5 ** 7
MAX_LENGTH = 1.6
SUCCESS_TOLERANCE = 3
#: Relative improvement of the best value that counts as a success (TuRBO's 1e-3).
SUCCESS_MARGIN = 1e-3
#: Bounds on a coordinate's stretch (lengthscale over their geometric mean), so that one irrelevant
#: parameter's huge lengthscale does not collapse the box on every other one.
MAX_STRETCH = 4.0


def failure_tolerance(dim: int) -> int:
    """Failures in a row before the side halves: TuRBO's max(4/q, d/q) batches of q, i.e. max(4, d) trials.

    Counted per trial so that the rule does not depend on how many slots happened to be in flight
    (which a resumed study does not know).
    """
    return max(4, dim)


def applies(space: Space) -> bool:
    return space.dim >= MIN_DIM


@dataclasses.dataclass(frozen=True)
class State:
    """Where the replay of the history left the region: its side, counters and restarts so far."""

    length: float
    successes: int
    failures: int
    restarts: int


def replay(values: Sequence[float | None], n_init: int, dim: int) -> State:
    """The region's state after the trials' (oriented, to minimize) values in trial order.

    ``None`` is a trial without a usable value (crashed): a failure, since the slot was spent without
    progress. The first ``n_init`` trials are the space-filling design and only set the best value.
    """
    length, succ, fail, restarts = INIT_LENGTH, 0, 0, 0
    tol = failure_tolerance(dim)
    best = math.inf
    for i, v in enumerate(values):
        improved = v is not None and (not math.isfinite(best) or v < best - SUCCESS_MARGIN * abs(best))
        if v is not None:
            best = min(best, v)
        if i < n_init:
            continue
        if improved:
            succ, fail = succ + 1, 0
        else:
            succ, fail = 0, fail + 1
        if succ >= SUCCESS_TOLERANCE:
            length, succ = min(2.0 * length, MAX_LENGTH), 0
        elif fail >= tol:
            length, fail = length / 2.0, 0
        if length < MIN_LENGTH:
            length, succ, fail, restarts = INIT_LENGTH, 0, 0, restarts + 1
    return State(length, succ, fail, restarts)


def oriented_values(history: Sequence[Trial], goal: str) -> list[float | None]:
    sign = -1.0 if goal == "maximize" else 1.0
    return [sign * float(t.value) if t.usable else None for t in history]  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Region:
    """A box [low, high] in the unit cube (one coordinate per searched parameter) around ``centre``."""

    centre: np.ndarray
    low: np.ndarray
    high: np.ndarray
    boxed: np.ndarray  # bool per coordinate: False for categoricals (never narrowed)
    state: State

    def contains(self, U: np.ndarray) -> np.ndarray:
        U = np.atleast_2d(U)
        return np.all((U >= self.low - 1e-12) & (U <= self.high + 1e-12), axis=1)

    def candidates(self, rng: np.random.Generator, n_uniform: int, n_perturbed: int) -> np.ndarray:
        """Unit-cube candidates in the box: uniform ones, and TuRBO's perturbations of the centre.

        A perturbation changes each coordinate with probability min(1, 20/d) (at least one), which keeps
        most of the incumbent in very high dimensions; categorical coordinates move with probability 0.2.
        """
        d = len(self.centre)
        span = self.high - self.low
        uniform = self.low + span * rng.random((n_uniform, d))
        pert = self.low + span * rng.random((n_perturbed, d))
        mask = rng.random((n_perturbed, d)) < min(1.0, 20.0 / max(d, 1))
        mask[np.arange(n_perturbed), rng.integers(0, d, n_perturbed)] = True
        pert = np.where(mask, pert, self.centre)
        out = np.vstack([uniform, pert])
        cat = ~self.boxed
        if cat.any():
            shape = (len(out), int(cat.sum()))
            out[:, cat] = np.where(rng.random(shape) < 0.2, rng.random(shape), np.broadcast_to(self.centre[cat], shape))
        return out

    def unit_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.low, self.high


def region(space: Space, history: Sequence[Trial], goal: str, n_init: int,
           lengthscales: np.ndarray) -> Region:
    """The trust region for the next ask: replayed state, centred on the best trial.

    ``lengthscales`` has one entry per searched parameter (the GP's, averaged over a categorical's
    one-hot columns); they only stretch the box, the side comes from the replay.
    """
    values = oriented_values(history, goal)
    state = replay(values, n_init, space.dim)
    scored = [(v, i) for i, v in enumerate(values) if v is not None]
    if not scored:
        raise ValueError("a trust region needs at least one finished trial")
    best_index = min(scored)[1]  # ties: the earliest, so the centre does not depend on later equal values
    centre = np.asarray(space.to_unit(history[best_index].params), dtype=float)
    boxed = np.array([p.kind != "choice" for p in space.searched], dtype=bool)
    ls = np.asarray(lengthscales, dtype=float)
    weights = np.ones(space.dim)
    if boxed.any():
        w = ls[boxed] / np.exp(np.mean(np.log(ls[boxed])))
        w = np.clip(w, 1.0 / MAX_STRETCH, MAX_STRETCH)
        weights[boxed] = w / np.exp(np.mean(np.log(w)))
    half = 0.5 * state.length * weights
    low = np.where(boxed, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(boxed, np.clip(centre + half, 0.0, 1.0), 1.0)
    return Region(centre, low, high, boxed, state)


__all__ = ["MIN_DIM", "Region", "State", "applies", "failure_tolerance", "region", "replay"]
