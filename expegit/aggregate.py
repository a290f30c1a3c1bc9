"""Configurations: the executions of one parameter point (its repeats, over seeds), aggregated.

One execution's objective is a sample; a point's repeats give its mean and how sure that mean is. Two
configurations whose 95% intervals overlap are not told apart by the data, so the best one's overlapping
rivals are marked: the user should not read the ranking among them as a result.
"""
from __future__ import annotations

import dataclasses
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


def point_key(parameters: dict[str, ParamValue], ignore: Iterable[str] = ()) -> tuple[tuple[str, str, ParamValue], ...]:
    """One key per parameter point. The value's type is part of it (1, 1.0 and True are one Python key but
    three values in a record); a tuple, not JSON text: `expegit status` builds 10,000 of these."""
    skip = set(ignore)
    return tuple(sorted((k, type(v).__name__, v) for k, v in parameters.items() if k not in skip))


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
    groups: dict[tuple[tuple[str, str, ParamValue], ...], list[ExecutionRecord]] = {}
    for r in records:
        if r.state == "finished" and r.objective is not None and math.isfinite(r.objective):
            groups.setdefault(point_key(r.parameters, ignore), []).append(r)
    stats = []
    for members in groups.values():
        mean, std, low, high = summarize([r.objective for r in members])  # type: ignore[misc]
        stats.append((mean, std, low, high, members))
    sign = 1 if goal == "minimize" else -1
    stats.sort(key=lambda s: (sign * s[0], -len(s[4])))
    if not stats:
        return []
    best_mean, _std, best_low, best_high, _members = stats[0]
    lo = best_low if best_low is not None else best_mean
    hi = best_high if best_high is not None else best_mean
    out = []
    for k, (mean, std, low, high, members) in enumerate(stats):
        c_lo = low if low is not None else mean
        c_hi = high if high is not None else mean
        out.append(Configuration(
            parameters={n: v for n, v in members[0].parameters.items() if n not in ignore}, n=len(members),
            mean=mean, std=std, low=low, high=high, ids=tuple(r.id for r in members), best=k == 0,
            overlaps_best=k == 0 or (c_lo <= hi and lo <= c_hi)))
    return out


def may_have_repeats(records: Sequence[ExecutionRecord], parameter_names: Iterable[str]) -> bool:
    """Cheap first look for `expegit status` (10,000 records in a millisecond): repeats come from
    --repeat (a record's ``repeat`` index) or from a seed parameter; otherwise there is nothing to group."""
    return any(is_seed(n) for n in parameter_names) or any(r.repeat for r in records)


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
