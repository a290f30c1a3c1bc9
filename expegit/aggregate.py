"""Configurations: the executions of one parameter point (its repeats, over seeds), aggregated.

One execution's objective is a sample; a point's repeats give its mean and how sure that mean is. Two
configurations whose 95% intervals overlap are not told apart by the data, so the best one's overlapping
rivals are marked: the user should not read the ranking among them as a result.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence

from orchestra.execution import ExecutionRecord, ParamValue

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Configuration:
    parameters: dict[str, ParamValue]
    n: int
    mean: float
    std: float | None          # sample standard deviation (n - 1); None for a single execution
    low: float | None          # the confidence interval of the mean (Student t); None when n < 2
    high: float | None
    ids: tuple[str, ...]
    overlaps_best: bool = False
    best: bool = False

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


def point_key(parameters: dict[str, ParamValue], ignore: Iterable[str] = ()) -> str:
    """One string per parameter point: values compared as JSON (1 and 1.0 differ, as in the record)."""
    skip = set(ignore)
    return json.dumps([[k, v] for k, v in sorted(parameters.items()) if k not in skip], sort_keys=True)


def t_quantile(df: int) -> float:
    """The two-sided 95% Student t critical value. scipy.special, not scipy.stats: the same function
    (stdtrit is what t.ppf calls) at a tenth of the import time, which `expegit status` pays."""
    from scipy.special import stdtrit

    return float(stdtrit(df, 1 - (1 - CONFIDENCE) / 2))


def summarize(values: Sequence[float]) -> tuple[float, float | None, float | None, float | None]:
    """(mean, std, low, high) of one point's objective values."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None, None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def is_seed(name: str) -> bool:
    """A seed parameter (``seed``, ``random_seed``, ``seed_init``...) varies between repeats of one point:
    sweeping it (the starter manifest's ``seed: {low: 0, high: 4}`` with --grid) is how users repeat."""
    lowered = name.lower()
    return lowered == "seed" or lowered.endswith("_seed") or lowered.startswith("seed_")


def configurations(records: Iterable[ExecutionRecord], goal: str = "minimize", *,
                   ignore: Iterable[str] | None = None) -> list[Configuration]:
    """Finished executions with an objective, grouped by parameter point, best mean first. ``ignore``: the
    names that vary between repeats; by default the seed parameters (is_seed), () to group by every one."""
    records = list(records)
    if ignore is None:
        ignore = sorted({k for r in records for k in r.parameters if is_seed(k)})
    ignore = tuple(ignore)
    groups: dict[str, list[ExecutionRecord]] = {}
    for r in records:
        if r.state == "finished" and r.objective is not None and math.isfinite(r.objective):
            groups.setdefault(point_key(r.parameters, ignore), []).append(r)
    out = []
    for members in groups.values():
        mean, std, low, high = summarize([r.objective for r in members])  # type: ignore[misc]
        params = {k: v for k, v in members[0].parameters.items() if k not in ignore}
        out.append(Configuration(parameters=params, n=len(members), mean=mean, std=std, low=low, high=high,
                                 ids=tuple(r.id for r in members)))
    sign = 1 if goal == "minimize" else -1
    out.sort(key=lambda c: (sign * c.mean, -c.n))
    if not out:
        return out
    best = out[0]
    lo = best.low if best.low is not None else best.mean
    hi = best.high if best.high is not None else best.mean
    marked = [dataclasses.replace(best, best=True, overlaps_best=True)]
    for c in out[1:]:
        c_lo = c.low if c.low is not None else c.mean
        c_hi = c.high if c.high is not None else c.mean
        marked.append(dataclasses.replace(c, overlaps_best=c_lo <= hi and lo <= c_hi))
    return marked


def has_repeats(configs: Sequence[Configuration]) -> bool:
    return any(c.n > 1 for c in configs)


def _g(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def render_configurations(configs: Sequence[Configuration], metric: str, *, limit: int = 10) -> list[str]:
    """The configurations part of `expegit status`: ``*`` marks the best, ``~`` an interval overlapping it."""
    lines = [f"  configurations (mean {metric} over repeats, 95% CI, best first; ~ overlaps the best):"]
    for c in configs[:limit]:
        mark = "*" if c.best else "~" if c.overlaps_best else " "
        ci = f"[{_g(c.low)}, {_g(c.high)}]" if c.low is not None else "(n=1: no interval)"
        params = " ".join(f"{k}={v}" for k, v in c.parameters.items())
        std = f" sd {_g(c.std)}" if c.std is not None else ""
        lines.append(f"  {mark} {_g(c.mean):>10}{std} {ci} n={c.n}  {params}".rstrip())
    if len(configs) > limit:
        lines.append(f"    ... and {len(configs) - limit} more configurations")
    return lines
