"""Early stopping: pure decision rules over learning curves (median, ASHA, Hyperband over ASHA brackets).

What a rule sees, and why: the decision for one execution (a *trial*) is a function of its own curve and
of the curves of the trials that had ENDED when it was CREATED (``Curve.ended <= trial.created``), in the
study's trial order (creation time, then id). Both timestamps and every curve are on the branches
(``.orchestra/metrics.jsonl`` and the record), so a resumed or cloned study, or a second look at the same
branches, makes exactly the same decisions; the rule never depends on how far a neighbour had got when a
poll happened to run. Run one at a time, this is exactly the information Optuna's pruners see, and the
decisions match theirs (tests/unit/test_early_stopping.py checks them against Optuna on the same curves).
In parallel it leaves out the few trials still running beside this one (with 4 slots, three): a small price
for decisions that can be re-derived from git alone.

A pruned trial's curve counts only up to the step it was pruned at: the points it wrote while the stop
signal travelled were never part of a decision.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestra.search import EarlyStoppingSpec

Point = tuple[float, float]  # (step, value)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One trial's learning curve and what the rules need of its record."""

    number: int  # its place in the study's order (creation time, then id)
    points: tuple[Point, ...]
    created: str = ""
    ended: str | None = None  # None while it runs
    state: str = "running"
    pruned_step: float | None = None


@dataclasses.dataclass(frozen=True)
class Stop:
    """A decision to stop: at which point of the curve, and why (said in the record and the live log)."""

    step: float
    value: float
    rung: float | None
    reason: str


def curve_points(points: Iterable[Mapping[str, Any]], metric: str, step_key: str) -> tuple[Point, ...]:
    """(step, value) of the metrics lines that carry both keys as finite numbers, in order.

    A line without the step counts as the next step after the previous one (a script that writes only
    ``{"val_loss": ...}`` once per epoch); a step that does not advance is a restarted attempt's repeat and
    replaces nothing (the first value at a step is the one the rule saw).
    """
    out: list[Point] = []
    last = -math.inf
    for point in points:
        value: Any = point.get(metric)
        if not _number(value):
            continue
        raw: Any = point.get(step_key)
        step = float(raw) if _number(raw) else (last + 1 if out else 1.0)
        if step <= last:
            continue
        out.append((step, float(value)))
        last = step
    return tuple(out)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def make_curve(number: int, points: Sequence[Point], *, created: str = "", ended: str | None = None,
               state: str = "running", pruned_step: float | None = None) -> Curve:
    """A Curve, cut at its pruned step (what came after the decision is not evidence for any rule)."""
    kept = tuple(p for p in points if pruned_step is None or p[0] <= pruned_step)
    return Curve(number, kept, created, ended, state, pruned_step)


def reference(trial: Curve, curves: Iterable[Curve]) -> list[Curve]:
    """The trials a decision about ``trial`` may look at: those that had ended when it was created."""
    return sorted((c for c in curves if c.number != trial.number and c.ended is not None
                   and c.ended <= trial.created), key=lambda c: c.number)


def _better(a: float, b: float, goal: str) -> bool:
    return a > b if goal == "maximize" else a < b


# --------------------------------------------------------------------------------------------- median
def _percentile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) percentile, without importing numpy on the controller's path."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_stop(spec: EarlyStoppingSpec, trial: Curve, others: Sequence[Curve]) -> Stop | None:
    """Optuna's MedianPruner: stop at step s (from n_warmup on, once n_startup trials finished) when the
    trial's best value so far is worse than the median of the finished trials' values at step s."""
    finished = [c for c in others if c.state == "finished"]
    if len(finished) < spec.n_startup or not finished:
        return None
    at_step: dict[float, list[float]] = {}
    for c in finished:
        for step, value in c.points:
            at_step.setdefault(step, []).append(value)
    best: float | None = None
    for step, value in trial.points:
        best = value if best is None or _better(value, best, spec.goal) else best
        if step < spec.n_warmup or step not in at_step:
            continue
        median = _percentile(at_step[step], 50.0)
        if _better(median, best, spec.goal):
            return Stop(step, value, None, f"{spec.metric} {best:.4g} (best so far) is worse than the median "
                                           f"{median:.4g} of {len(at_step[step])} finished at {spec.step} {step:g}")
    return None


# ----------------------------------------------------------------------------------------------- ASHA
def rung_values(points: Sequence[Point], rungs: Sequence[float]) -> list[tuple[float, float, float]]:
    """(rung, step, value) for each rung the curve reached: the first point at or past the rung (Optuna's
    SuccessiveHalvingPruner records the value reported when a rung is reached)."""
    out: list[tuple[float, float, float]] = []
    k = 0
    for step, value in points:
        while k < len(rungs) and step >= rungs[k]:
            out.append((rungs[k], step, value))
            k += 1
    return out


def asha_rungs(spec: EarlyStoppingSpec, bracket: int = 0) -> list[float]:
    """The rungs of a bracket: ``min_step * reduction^(bracket+k)`` below ``max_step`` (the last step is
    the end of a full run, not a rung: stopping there saves nothing)."""
    out = []
    for k in range(64):
        rung = spec.min_step * spec.reduction ** (bracket + k)
        if spec.max_step is not None and rung >= spec.max_step * (1 - 1e-9):
            break
        out.append(rung)
    return out


def promotable(value: float, competing: Sequence[float], reduction: int, goal: str) -> bool:
    """In the top 1/reduction of ``competing`` (which holds ``value``); with fewer than ``reduction``
    values, only the best goes on (Optuna's rule: a trial cannot wait for later ones to be compared)."""
    index = max(len(competing) // reduction - 1, 0)
    ordered = sorted(competing, reverse=goal == "maximize")
    return value >= ordered[index] if goal == "maximize" else value <= ordered[index]


def asha_stop(spec: EarlyStoppingSpec, trial: Curve, others: Sequence[Curve], *,
              bracket: int = 0, bracket_of: Mapping[int, int] | None = None) -> Stop | None:
    """Asynchronous successive halving, stopping-style: at each rung ``min_step * reduction^(bracket+k)`` a
    trial goes on only if it is in the top 1/reduction of the values recorded at that rung (its own
    included). ``bracket_of``: hyperband's bracket of each trial number; only the same bracket competes."""
    rungs = asha_rungs(spec, bracket)
    if not rungs:
        return None
    competitors = [c for c in others if bracket_of is None or bracket_of.get(c.number, 0) == bracket]
    recorded: dict[float, list[float]] = {}
    for c in competitors:
        for rung, _step, value in rung_values(c.points, rungs):
            recorded.setdefault(rung, []).append(value)
    for rung, step, value in rung_values(trial.points, rungs):
        earlier = recorded.get(rung, [])
        if len(earlier) < spec.n_startup:
            continue
        competing = [*earlier, value]
        if not promotable(value, competing, spec.reduction, spec.goal):
            top = max(len(competing) // spec.reduction, 1)
            label = f"bracket {bracket} " if bracket_of is not None else ""
            return Stop(step, value, rung, f"{spec.metric} {value:.4g} is not in the top {top} of "
                                           f"{len(competing)} at {label}rung {spec.step} {rung:g}")
    return None


# ------------------------------------------------------------------------------------------ hyperband
def bracket_budgets(spec: EarlyStoppingSpec) -> list[int]:
    """How many trials of each bracket per cycle: Optuna's HyperbandPruner allocation (bracket b starts
    b rungs later and gets ceil(n * reduction^s / (s + 1)) trials, s = n - 1 - b)."""
    n = spec.brackets
    return [math.ceil(n * spec.reduction ** (n - 1 - b) / (n - b)) for b in range(n)]


def bracket_of(spec: EarlyStoppingSpec, number: int) -> int:
    """A trial's bracket from its number alone (weighted round robin): reproducible, and spread evenly in
    order, where Optuna hashes the study's name and the number."""
    budgets = bracket_budgets(spec)
    slot = number % sum(budgets)
    for bracket, size in enumerate(budgets):
        if slot < size:
            return bracket
        slot -= size
    return len(budgets) - 1  # unreachable: the slots sum to the budgets


# ------------------------------------------------------------------------------------------- the rule
def decide(spec: EarlyStoppingSpec, trial: Curve, curves: Iterable[Curve]) -> Stop | None:
    """Whether (and where) ``trial`` is stopped, given the study's curves (it may be among them)."""
    curves = list(curves)
    others = reference(trial, curves)
    if spec.rule == "median":
        return median_stop(spec, trial, others)
    if spec.rule == "asha":
        return asha_stop(spec, trial, others)
    if spec.rule == "hyperband":
        numbers = {c.number for c in curves} | {trial.number}
        brackets = {n: bracket_of(spec, n) for n in numbers}
        return asha_stop(spec, trial, others, bracket=brackets[trial.number], bracket_of=brackets)
    raise ValueError(f"unknown early stopping rule {spec.rule!r}")


# ------------------------------------------------------------------------------ what the model is told
#: The level of the final objective, above every rung (a finished trial's value there is its objective).
FINAL = math.inf


def model_level(levels: Mapping[int, Mapping[float, float]], min_points: int) -> float | None:
    """BOHB's rule: the highest fidelity (a rung, or FINAL) at which at least ``min_points`` trials have a
    value; None while no level has that many (the sampler's initial design runs meanwhile)."""
    counts: dict[float, int] = {}
    for values in levels.values():
        for level in values:
            counts[level] = counts.get(level, 0) + 1
    enough = [level for level, n in counts.items() if n >= max(min_points, 1)]
    return max(enough) if enough else None


def map_up(pairs: Sequence[tuple[float, float]], value: float, goal: str) -> float | None:
    """A value at a lower fidelity mapped to the model's level by least squares over ``pairs`` (trials seen
    at both): None with fewer than 3 pairs or no spread. The slope is kept >= 0 once oriented (a better
    early value never predicts a worse final one: with curves that cross, the slope falls towards 0 and the
    estimate towards the mean, which is what such curves tell), and the estimate stays within the values
    seen at the level (no extrapolation past the best or the worst observed)."""
    if len(pairs) < 3:
        return None
    sign = -1.0 if goal == "maximize" else 1.0
    xs = [sign * a for a, _b in pairs]
    ys = [sign * b for _a, b in pairs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var <= 1e-300:
        return None
    slope = max(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var, 0.0)
    estimate = min(max(my + slope * (sign * value - mx), min(ys)), max(ys))
    return sign * estimate


def fidelity_values(spec: EarlyStoppingSpec, curves: Iterable[Curve], finals: Mapping[int, float],
                    min_points: int) -> dict[int, float]:
    """What a model-based sampler is told about each ended trial, from what was learned at each fidelity
    (as BOHB and DEHB do, instead of a penalty for a stopped trial).

    The level is the highest one (rung ``min_step * reduction^k``, or FINAL: the objective of a finished
    trial, ``finals``) at which at least ``min_points`` trials have a value (:func:`model_level`). A trial
    seen at that level is told its value there (a finished trial its rung value while the model is fitted
    at a rung). A trial stopped below it is told its value at the highest rung it reached, mapped up to the
    level through the trials seen at both (:func:`map_up`), or, where too few are, the worst value at the
    level (it lost to trials that went on). Failed trials, and trials with no value at any rung, are left
    out (the caller's rules apply to them).

    Why not a penalty alone: with curves that cross, ASHA stops good points at random at low rungs, and
    "as bad as the worst finished" then tells the model that good regions are bad. Why not the raw early
    value: an early loss is no final loss; next to finished trials it would rank a stopped run by a number it
    never reached. Pure: the curves and the objectives are on the branches, so a resumed or cloned study is
    told the same.
    """
    rungs = asha_rungs(spec)  # bracket 0's rungs hold every bracket's (bracket b starts b rungs later)
    levels: dict[int, dict[float, float]] = {}
    for curve in curves:
        if curve.state not in ("finished", "pruned"):
            continue  # a crash is no measurement at any fidelity: the sampler's failed-trial rule applies
        values = {rung: value for rung, _step, value in rung_values(curve.points, rungs)}
        if curve.state == "finished" and curve.number in finals:
            values[FINAL] = finals[curve.number]
        if values:
            levels[curve.number] = values
    level = model_level(levels, min_points)
    if level is None:
        return {}
    seen = [values[level] for values in levels.values() if level in values]
    worst = max(seen) if spec.goal != "maximize" else min(seen)
    out: dict[int, float] = {}
    for number, values in levels.items():
        if level in values:
            out[number] = values[level]
            continue
        below = max(v for v in values if v < level)
        pairs = [(other[below], other[level]) for other in levels.values() if below in other and level in other]
        mapped = map_up(pairs, values[below], spec.goal)
        out[number] = worst if mapped is None else mapped
    return out


__all__ = ["FINAL", "Curve", "Stop", "fidelity_values", "map_up", "model_level", "asha_rungs", "asha_stop", "bracket_budgets", "bracket_of", "curve_points", "decide", "make_curve",
           "median_stop", "promotable", "reference", "rung_values"]
