"""A tiny SVG toolkit: scales, ticks and axes, written for the report's few plot kinds.

Plots are rendered in Python rather than in the browser so they show without JavaScript, can be checked
by unit tests (count the circles), and cost the page nothing to lay out. Coordinates are rounded to one
decimal: 10,000 points stay a few hundred kilobytes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .fmt import esc, fmt_num, is_number

# viewBox widths matched to the card they sit in, so 11px text renders at about 11px on a desktop screen.
WIDE = 1150
HALF = 560
WIDTH = HALF
HEIGHT = 300
MARGIN_LEFT = 70
MARGIN_RIGHT = 20
MARGIN_TOP = 14
MARGIN_BOTTOM = 44


class Scale(Protocol):
    def __call__(self, value: Any) -> float: ...

    def ticks(self) -> list[tuple[float, str]]: ...


@dataclass
class LinearScale:
    """Maps [lo, hi] onto [r0, r1]; a degenerate domain is widened so a single point sits mid-axis."""

    lo: float
    hi: float
    r0: float
    r1: float
    count: int = 5

    def __post_init__(self) -> None:
        if self.hi <= self.lo:
            pad = abs(self.lo) * 0.1 or 1.0
            self.lo, self.hi = self.lo - pad, self.hi + pad

    def __call__(self, value: Any) -> float:
        return self.r0 + (float(value) - self.lo) / (self.hi - self.lo) * (self.r1 - self.r0)

    def ticks(self) -> list[tuple[float, str]]:
        step = nice_step((self.hi - self.lo) / max(self.count, 1))
        first = math.ceil(self.lo / step - 1e-9) * step
        out = []
        value = first
        while value <= self.hi + step * 1e-9:
            shown = 0.0 if abs(value) < step * 1e-9 else value
            out.append((self(shown), fmt_num(float(f"{shown:.12g}"))))
            value += step
        return out


@dataclass
class LogScale:
    """Log axis for positive values spanning decades (learning rates, regularisation strengths)."""

    lo: float
    hi: float
    r0: float
    r1: float

    def __post_init__(self) -> None:
        self._a = math.log10(self.lo)
        self._b = math.log10(self.hi)
        if self._b <= self._a:
            self._a, self._b = self._a - 0.5, self._b + 0.5

    def __call__(self, value: Any) -> float:
        return self.r0 + (math.log10(float(value)) - self._a) / (self._b - self._a) * (self.r1 - self.r0)

    def ticks(self) -> list[tuple[float, str]]:
        first, last = math.floor(self._a), math.ceil(self._b)
        mantissas = (1, 2, 5) if last - first <= 3 else (1,)
        out = []
        for exponent in range(first, last + 1):
            for m in mantissas:
                value = m * 10.0 ** exponent
                if self._a - 1e-9 <= math.log10(value) <= self._b + 1e-9:
                    out.append((self(value), fmt_num(value)))
        return out


@dataclass
class BandScale:
    """Categorical values on bands; points get a deterministic jitter so repeats do not hide each other."""

    categories: list[str]
    r0: float
    r1: float

    def __post_init__(self) -> None:
        self._index = {c: i for i, c in enumerate(self.categories)}
        self.band = (self.r1 - self.r0) / max(len(self.categories), 1)

    def __call__(self, value: Any) -> float:
        return self.r0 + (self._index[category_key(value)] + 0.5) * self.band

    def jittered(self, value: Any, seed: int) -> float:
        spread = ((seed * 2654435761) % 1000) / 1000.0 - 0.5  # Knuth hash: stable across renders
        return self(value) + spread * self.band * 0.5

    def ticks(self) -> list[tuple[float, str]]:
        return [(self(c), c) for c in self.categories]


def category_key(value: Any) -> str:
    return fmt_num(value) if value is not None else "null"


def nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten: tick labels a reader can add up in their head."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def numeric_scale(values: Sequence[float], r0: float, r1: float) -> LinearScale | LogScale:
    """Linear, or log when all values are positive and span at least two decades."""
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo >= 100:
        return LogScale(lo, hi, r0, r1)
    pad = (hi - lo) * 0.04
    return LinearScale(lo - pad, hi + pad, r0, r1)


def is_numeric_column(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(is_number(v) for v in present)


def f1(x: float) -> str:
    """One decimal, no trailing '.0': the SVG stays short."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def open_svg(title: str, kind: str, points: int, height: int = HEIGHT, width: int = WIDTH,
             marks: int | None = None) -> str:
    """The root element; ``data-points`` (executions shown) and ``data-marks`` (marks drawn, when one mark
    can stand for several executions) let tests and scripts know what was drawn without counting."""
    extra = f' data-marks="{marks}"' if marks is not None else ""
    return (f'<svg class="plot" data-plot="{esc(kind)}" data-points="{points}"{extra} '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">')


def x_axis(scale: Scale, y: float, x0: float, x1: float, label: str, rotate: bool = False) -> str:
    parts = [f'<g class="axis"><line x1="{f1(x0)}" y1="{f1(y)}" x2="{f1(x1)}" y2="{f1(y)}"/>']
    for pos, text in scale.ticks():
        parts.append(f'<line x1="{f1(pos)}" y1="{f1(y)}" x2="{f1(pos)}" y2="{f1(y + 4)}"/>')
        if rotate:
            parts.append(f'<text x="{f1(pos)}" y="{f1(y + 14)}" text-anchor="end" '
                         f'transform="rotate(-30 {f1(pos)} {f1(y + 14)})">{esc(clip(text, 14))}</text>')
        else:
            parts.append(f'<text x="{f1(pos)}" y="{f1(y + 16)}" text-anchor="middle">{esc(clip(text, 14))}</text>')
    parts.append(f'<text class="label" x="{f1((x0 + x1) / 2)}" y="{f1(y + 36)}" text-anchor="middle">'
                 f'{esc(label)}</text></g>')
    return "".join(parts)


def y_axis(scale: Scale, x: float, y0: float, y1: float, label: str, grid_to: float | None = None) -> str:
    parts = [f'<g class="axis"><line x1="{f1(x)}" y1="{f1(y0)}" x2="{f1(x)}" y2="{f1(y1)}"/>']
    for pos, text in scale.ticks():
        if grid_to is not None:
            parts.append(f'<line class="grid" x1="{f1(x)}" y1="{f1(pos)}" x2="{f1(grid_to)}" y2="{f1(pos)}"/>')
        parts.append(f'<line x1="{f1(x - 4)}" y1="{f1(pos)}" x2="{f1(x)}" y2="{f1(pos)}"/>')
        parts.append(f'<text x="{f1(x - 7)}" y="{f1(pos + 4)}" text-anchor="end">{esc(clip(text, 10))}</text>')
    mid = (y0 + y1) / 2
    parts.append(f'<text class="label" x="14" y="{f1(mid)}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {f1(mid)})">{esc(clip(label, 40))}</text></g>')
    return "".join(parts)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
