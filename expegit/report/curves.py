"""Learning curves: each execution's intermediate metrics (``.orchestra/metrics.jsonl``) as one line.

Pure render functions over (report index, points) pairs, like plots.py: the x axis is ``step`` (or
``epoch``, ``iteration``, ...; the point's position when none is given), the y axis the objective's
metric when the points carry it, else the first other numeric key. The best execution (by the objective,
else by its last value) is drawn last and highlighted, so it is never hidden under the others.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import svg
from .fmt import esc, fmt_num, is_number
from .plots import Plot
from .svg import LinearScale, f1, numeric_scale

X_KEYS = ("step", "epoch", "iteration", "iter", "batch", "round", "t", "time")
MAX_POINTS = 240  # per curve: a 100k-step log still draws as a few KB of path
MAX_CURVES = 300
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # one per metric on a page  # the best is always among those drawn

Curve = tuple[int, Sequence[Mapping[str, Any]]]  # (index in the report's data.js, points in order)


def curve_keys(curves: Sequence[Curve], prefer: str | None = None) -> tuple[str | None, str | None]:
    """(x key or None for the point's position, y key or None when no point has a number)."""
    seen: dict[str, None] = {}
    for _i, points in curves:
        for point in points:
            for key, value in point.items():
                if is_number(value) and not isinstance(value, bool):
                    seen.setdefault(key, None)
    x = next((k for k in X_KEYS if k in seen), None)
    if prefer is not None and prefer in seen and prefer != x:
        return x, prefer
    y = next((k for k in seen if k != x), None)
    return x, y


def series(points: Sequence[Mapping[str, Any]], x: str | None, y: str) -> list[tuple[float, float]]:
    """The (x, y) pairs of one curve, in order, points without a number for y (or x) left out."""
    out = []
    for n, point in enumerate(points):
        yv: Any = point.get(y)
        xv: Any = point.get(x) if x is not None else n
        if is_number(yv) and is_number(xv) and not isinstance(yv, bool):
            out.append((float(xv), float(yv)))
    return out


def downsample(pairs: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most ``limit`` pairs, evenly spaced, first and last kept (the end of a curve is what matters)."""
    if len(pairs) <= limit:
        return list(pairs)
    step = (len(pairs) - 1) / (limit - 1)
    return [pairs[round(k * step)] for k in range(limit)]


def best_curve(curves: Sequence[Curve], lines: Mapping[int, Sequence[tuple[float, float]]], goal: str,
               objective: Mapping[int, float] | None = None) -> int | None:
    """The report index of the best execution: by its objective when known, else by its last y value."""
    pick = max if goal == "maximize" else min
    scored = {i: v for i, v in (objective or {}).items() if i in lines and is_number(v)}
    if scored:
        return pick(scored, key=lambda i: scored[i])
    last = {i: pairs[-1][1] for i, pairs in lines.items() if pairs}
    return pick(last, key=lambda i: last[i]) if last else None


def learning_curves_plot(curves: Sequence[Curve], *, goal: str = "minimize", prefer: str | None = None,
                         objective: Mapping[int, float] | None = None, width: int = svg.WIDE,
                         title: str = "Learning curves") -> Plot | None:
    """One polyline per execution (``data-i`` for the report's tooltips and links), the best highlighted."""
    x, y = curve_keys(curves, prefer)
    if y is None:
        return None
    lines = {i: downsample(series(points, x, y)) for i, points in curves}
    lines = {i: pairs for i, pairs in lines.items() if pairs}
    if not lines:
        return None
    best = best_curve(curves, lines, goal, objective)
    order = [i for i in lines if i != best][: MAX_CURVES - 1] + ([best] if best is not None else [])
    w, h = width, svg.HEIGHT
    x0, x1 = svg.MARGIN_LEFT, w - svg.MARGIN_RIGHT
    y0, y1 = h - svg.MARGIN_BOTTOM, svg.MARGIN_TOP
    xs_all = [px for i in order for px, _ in lines[i]]
    ys_all = [py for i in order for _, py in lines[i]]
    xs = LinearScale(min(xs_all), max(xs_all), x0, x1)
    ys = numeric_scale(ys_all, y0, y1)
    if not all(v > 0 for v in ys_all) and not isinstance(ys, LinearScale):  # a log scale needs positives
        ys = LinearScale(min(ys_all), max(ys_all), y0, y1)
    parts = [svg.open_svg(f"{title}: {y} against {x or 'report order'}", "curves", len(order), width=w),
             svg.y_axis(ys, x0, y0, y1, y, grid_to=x1),
             svg.x_axis(xs, y0, x0, x1, x or "point")]
    for i in order:
        pairs = lines[i]
        cls = "curve best" if i == best else "curve"
        path = " ".join(f"{f1(xs(px))},{f1(ys(py))}" for px, py in pairs)
        last_x, last_y = pairs[-1]
        label = f"{y}={fmt_num(last_y)} at {x or 'point'} {fmt_num(last_x)}"
        parts.append(f'<polyline class="{cls}" data-i="{i}" points="{path}"><title>{esc(label)}</title></polyline>')
        if i == best:
            parts.append(f'<circle class="curve-end best" data-i="{i}" cx="{f1(xs(last_x))}" '
                         f'cy="{f1(ys(last_y))}" r="3.5"/>')
    parts.append("</svg>")
    return Plot("curves", title, "".join(parts), len(order))


def execution_curve_svg(points: Sequence[Mapping[str, Any]], *, prefer: str | None = None) -> str | None:
    """One execution's curve as a standalone SVG document (its page shows it as an image): every numeric
    key but the x one is a line, so its page shows loss and accuracy alike."""
    x, _ = curve_keys([(0, points)], prefer)
    keys = [k for k in curve_keys_all(points) if k != x]
    if not keys:
        return None
    w, h = svg.WIDE, svg.HEIGHT
    x0, x1 = svg.MARGIN_LEFT, w - svg.MARGIN_RIGHT
    y0, y1 = h - svg.MARGIN_BOTTOM, svg.MARGIN_TOP
    shown = keys[:len(COLOURS)]
    lines = {k: downsample(series(points, x, k)) for k in shown}
    lines = {k: v for k, v in lines.items() if v}
    if not lines:
        return None
    main = prefer if prefer in lines else next(iter(lines))
    xs_all = [px for v in lines.values() for px, _ in v]
    xs = LinearScale(min(xs_all), max(xs_all), x0, x1)
    parts = [svg.open_svg(f"metrics against {x or 'point'}", "execution-curves", len(lines), width=w).replace(
        "<svg ", '<svg font-family="sans-serif" font-size="11" ', 1),
        "<style>.axis line{stroke:#888}.axis line.grid{stroke:#e4e4e4}.curve{fill:none;stroke-width:1.5}text{fill:#333}"
        + "".join(f"polyline.k{n}{{stroke:{c}}}text.k{n}{{fill:{c}}}" for n, c in enumerate(COLOURS)) + "</style>"]
    # Each metric on its own scale (loss and accuracy differ by orders): the axis is the main one's, the
    # others are drawn to the same height and named in the legend with their last value.
    for n, (key, pairs) in enumerate(lines.items()):
        ys = numeric_scale([py for _, py in pairs], y0, y1)
        if key == main:
            parts.append(svg.y_axis(ys, x0, y0, y1, key, grid_to=x1))
        path = " ".join(f"{f1(xs(px))},{f1(ys(py))}" for px, py in pairs)
        parts.append(f'<polyline class="curve k{n}" points="{path}"><title>{esc(key)}</title></polyline>')
        parts.append(f'<text class="k{n}" x="{f1(x1 - 4)}" y="{f1(y1 + 12 + 13 * n)}" text-anchor="end">'
                     f'{esc(key)} = {esc(fmt_num(pairs[-1][1]))}</text>')
    parts.append(svg.x_axis(xs, y0, x0, x1, x or "point"))
    parts.append("</svg>")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + "".join(parts)


def curve_keys_all(points: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for point in points:
        for key, value in point.items():
            if is_number(value) and not isinstance(value, bool):
                seen.setdefault(key, None)
    return list(seen)


__all__ = ["best_curve", "curve_keys", "downsample", "execution_curve_svg", "learning_curves_plot", "series"]
