"""The report's plots as inline SVG strings: search progress, objective per parameter, parallel
coordinates and the execution timeline.

Every mark carries ``data-i``, the execution's index in ``data.js``: one small script gives all plots
tooltips and click-through without repeating the data in the markup. Each function takes the records in
report order and returns a ``Plot`` or None when the plot would say nothing (no objective, one value).
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestra.execution import ExecutionRecord

from . import svg
from .fmt import esc, is_number, parse_time, state_class
from .svg import BandScale, LinearScale, category_key, f1, numeric_scale

MAX_CATEGORIES = 40
MAX_AXES = 12
MAX_PROGRESS_MARKS = 5000  # circles drawn in the progress plot, at most (plus each improvement of the best)
# Marks drawn per scatter plot, at most. Why 4,000: a scatter's plot area is about 470 x 230 px and a mark
# (r=3) covers ~28 px, so about 4,000 marks tile it; past that, marks only hide each other while the SVG grows
# (100,000 circles were 7 MB per plot, 30 MB for plots.html, which the browser parsed for seconds).
MAX_SCATTER_MARKS = 4000
# Lines drawn in parallel coordinates, at most: the best half of them always (drawn last, on top, and what a
# reader looks for) plus an even sample of the rest, so the spread of the campaign still shows.
MAX_PARALLEL_LINES = 3000
# Bars drawn in the timeline, at most, before neighbours on one lane that touch (< 1 px apart) and share a
# state are merged into one bar: at 100,000 executions a lane holds thousands of sub-pixel bars.
MAX_TIMELINE_BARS = 5000


def thin(count: int, limit: int, keep: Sequence[int] = ()) -> list[int]:
    """Positions ``0..count-1`` to draw when at most ``limit`` may be: all of ``keep`` (positions that must stay,
    e.g. the best), then an even stride over the others, in increasing order. Deterministic, so a report
    rendered twice draws the same marks."""
    if count <= limit:
        return list(range(count))
    kept = set(keep)
    room = max(0, limit - len(kept))
    rest = [k for k in range(count) if k not in kept]
    if room and rest:
        every = len(rest) / room
        kept.update(rest[int(j * every)] for j in range(min(room, len(rest))))
    return sorted(kept)


@dataclass(frozen=True)
class Plot:
    kind: str
    title: str
    svg: str
    points: int


# A metric's value per execution, aligned with the records; None means "the record's objective".
Values = Sequence[Any] | None


def _values(records: Sequence[ExecutionRecord], values: Values) -> Sequence[Any]:
    return [r.objective for r in records] if values is None else values


def _objective_points(records: Sequence[ExecutionRecord]) -> list[tuple[int, ExecutionRecord]]:
    return [(i, r) for i, r in enumerate(records) if is_number(r.objective)]


def _metric_points(records: Sequence[ExecutionRecord], values: Values) -> list[tuple[int, ExecutionRecord, float]]:
    """(index, record, value) of every execution with a finite value of the metric."""
    return [(i, r, float(v)) for i, (r, v) in enumerate(zip(records, _values(records, values))) if is_number(v)]


def _order_key(item: tuple[int, ExecutionRecord]) -> tuple[float, int]:
    """Executions in the order they produced their result: end time, else start, else creation."""
    i, r = item
    for text in (r.ended, r.started, r.created):
        t = parse_time(text)
        if t is not None:
            return (t.timestamp(), i)
    return (math.inf, i)


def _better(goal: str) -> Any:
    return max if goal == "maximize" else min


def progress_plot(records: Sequence[ExecutionRecord], metric: str, goal: str, width: int = svg.WIDE) -> Plot | None:
    """Objective of each execution in completion order, with the best value so far as a step line."""
    points = sorted(_objective_points(records), key=_order_key)
    if not points:
        return None
    w, h = width, svg.HEIGHT
    x0, x1 = svg.MARGIN_LEFT, w - svg.MARGIN_RIGHT
    y0, y1 = h - svg.MARGIN_BOTTOM, svg.MARGIN_TOP
    xs = LinearScale(0.5, len(points) + 0.5, x0, x1)
    ys = numeric_scale([float(r.objective) for _, r in points], y0, y1)  # type: ignore[arg-type]
    better = _better(goal)
    best: float | None = None
    best_i = -1
    step: list[str] = []
    circles: list[str] = []
    # Beyond MAX_PROGRESS_MARKS executions every k-th one is drawn, plus each that improved the best: 100,000
    # circles are 6 MB of SVG that took the overview tens of seconds to load, for dots a pixel apart.
    every = max(1, math.ceil(len(points) / MAX_PROGRESS_MARKS))
    for n, (i, r) in enumerate(points, start=1):
        value = float(r.objective)  # type: ignore[arg-type]
        cx, cy = xs(n), ys(value)
        improved = best is None or better(best, value) != best
        if improved:
            best, best_i = value, i
            step.append(f"H{f1(cx)}V{f1(cy)}" if step else f"M{f1(cx)} {f1(cy)}")
        if improved or n % every == 0:
            circles.append(f'<circle class="pt s-{state_class(r.state)}" cx="{f1(cx)}" cy="{f1(cy)}" r="3" '
                           f'data-i="{i}"/>')
    step.append(f"H{f1(x1)}")
    parts = [svg.open_svg(f"{metric} per execution and best so far", "progress", len(points), width=w,
                          marks=len(circles) if every > 1 else None),
             svg.y_axis(ys, x0, y0, y1, metric, grid_to=x1),
             svg.x_axis(xs, y0, x0, x1, "execution (in completion order)")]
    parts.append(f'<path class="best-line" d="{"".join(step)}"/>')
    parts.append('<g class="points">' + "".join(circles) + "</g>")
    bi = next(n for n, (i, _) in enumerate(points, start=1) if i == best_i)
    parts.append(f'<circle class="best-ring" cx="{f1(xs(bi))}" cy="{f1(ys(best))}" r="7"/>')  # type: ignore[arg-type]
    parts.append("</svg>")
    return Plot("progress", "Search progress", "".join(parts), len(points))


# What a plot of one metric computes about the parameters (which vary, their axes, pixel positions) depends
# only on which executions have a value, not on the values: every metric of a metrics file usually has the
# same executions, so plots_page passes one Memo to all of them and draws each parameter axis once.
Memo = dict[tuple[Any, ...], Any]


def _scored_key(scored: Sequence[tuple[int, ExecutionRecord, float]]) -> tuple[int, ...]:
    return tuple(i for i, _, _ in scored)


def varying_parameters(records: Sequence[ExecutionRecord], values: Values = None) -> list[str]:
    """Parameters (in first-seen order) that take at least two values among executions with a value of the
    metric (the objective unless ``values`` says otherwise)."""
    seen: dict[str, set[str]] = {}
    for r, v in zip(records, _values(records, values)):
        if not is_number(v) or not isinstance(r.parameters, dict):
            continue
        for name, value in r.parameters.items():
            seen.setdefault(str(name), set()).add(category_key(value) + type(value).__name__)
    return [name for name, values in seen.items() if len(values) >= 2]


def _param(r: ExecutionRecord, name: str) -> Any:
    return r.parameters.get(name) if isinstance(r.parameters, dict) else None


def _axis_scale(values: list[Any], r0: float, r1: float) -> svg.Scale | None:
    """Numeric scale for numbers, bands for anything else; None when there are too many categories."""
    if svg.is_numeric_column(values):
        return numeric_scale([float(v) for v in values if v is not None], r0, r1)
    categories = list(dict.fromkeys(category_key(v) for v in values))
    if len(categories) > MAX_CATEGORIES:
        return None
    if all(is_number(v) for v in values if v is not None):
        categories.sort(key=lambda c: float(c) if c not in ("null",) else math.inf)
    else:
        categories.sort()
    return BandScale(categories, r0, r1)


def _varying(records: Sequence[ExecutionRecord], scored: Sequence[tuple[int, ExecutionRecord, float]],
             key: tuple[int, ...], memo: Memo) -> list[str]:
    cached = memo.get(("vary", key))
    if cached is None:
        present: list[float | None] = [None] * len(records)
        for i, _, y in scored:
            present[i] = y
        cached = memo[("vary", key)] = varying_parameters(records, present)
    return cached


def _scatter_axis(scored: Sequence[tuple[int, ExecutionRecord, float]], name: str, x0: float, x1: float
                  ) -> tuple[svg.Scale, list[int], list[str]] | None:
    """(x scale, positions in ``scored`` that have the parameter, their cx as drawn)."""
    present = [k for k, (_, r, _) in enumerate(scored) if isinstance(r.parameters, dict) and name in r.parameters]
    xvalues = [_param(scored[k][1], name) for k in present]
    if svg.is_numeric_column(xvalues):
        present = [k for k, v in zip(present, xvalues) if v is not None]
        xvalues = [v for v in xvalues if v is not None]
    xs = _axis_scale(xvalues, x0, x1)
    if xs is None or not present:
        return None
    if isinstance(xs, BandScale):
        cxs = [f1(xs.jittered(v, scored[k][0])) for k, v in zip(present, xvalues)]
    else:
        cxs = [f1(xs(v)) for v in xvalues]
    return xs, present, cxs


def scatter_plots(records: Sequence[ExecutionRecord], metric: str, width: int = svg.HALF,
                  values: Values = None, memo: Memo | None = None) -> list[Plot]:
    """The metric (the objective unless ``values`` gives another) against each varying parameter;
    categorical parameters sit on bands. ``memo`` shares parameter axes between metrics (see Memo)."""
    plots: list[Plot] = []
    scored = _metric_points(records, values)
    if not scored:
        return plots
    memo = {} if memo is None else memo
    key = _scored_key(scored)
    w, h = width, 280
    x0, x1 = svg.MARGIN_LEFT, w - svg.MARGIN_RIGHT
    y0, y1 = h - svg.MARGIN_BOTTOM, svg.MARGIN_TOP
    ys = numeric_scale([y for _, _, y in scored], y0, y1)
    cys = [f1(ys(y)) for _, _, y in scored]
    states = [state_class(r.state) for _, r, _ in scored]
    for name in _varying(records, scored, key, memo):
        axis_key = ("scatter-x", name, w, key)
        if axis_key not in memo:
            memo[axis_key] = _scatter_axis(scored, name, x0, x1)
        axis = memo[axis_key]
        if axis is None:
            continue
        xs, present, cxs = axis
        drawn = list(zip(present, cxs))
        if len(drawn) > MAX_SCATTER_MARKS:
            drawn = _thin_scatter(drawn, cys, states, [y for _, _, y in scored])
        circles = [f'<circle class="pt s-{states[k]}" cx="{cx}" cy="{cys[k]}" r="3" data-i="{scored[k][0]}"/>'
                   for k, cx in drawn]
        band_lines = ""
        if isinstance(xs, BandScale):
            band_lines = "".join(
                f'<rect class="band" x="{f1(x0 + k * xs.band)}" y="{f1(y1)}" width="{f1(xs.band)}" '
                f'height="{f1(y0 - y1)}"/>' for k in range(0, len(xs.categories), 2))
        svg_text = "".join([
            svg.open_svg(f"{metric} against {name}", "scatter", len(present), height=h, width=w,
                         marks=len(circles) if len(circles) < len(present) else None),
            band_lines,
            svg.y_axis(ys, x0, y0, y1, metric, grid_to=x1),
            svg.x_axis(xs, y0, x0, x1, name, rotate=isinstance(xs, BandScale) and len(xs.categories) > 8),
            '<g class="points">', "".join(circles), "</g></svg>",
        ])
        plots.append(Plot("scatter", f"{metric} against {name}", svg_text, len(present)))
    return plots


def _thin_scatter(drawn: list[tuple[int, str]], cys: Sequence[str], states: Sequence[str],
                  ys: Sequence[float]) -> list[tuple[int, str]]:
    """At most MAX_SCATTER_MARKS of a scatter's marks: one per pixel and state first (what a reader could tell
    apart), then the 200 lowest and 200 highest values (a scatter has no goal: both ends matter) and an even
    sample of the rest."""
    seen: set[tuple[int, int, str]] = set()
    unique: list[tuple[int, str]] = []
    for k, cx in drawn:
        key = (int(float(cx)), int(float(cys[k])), states[k])
        if key not in seen:
            seen.add(key)
            unique.append((k, cx))
    if len(unique) <= MAX_SCATTER_MARKS:
        return unique
    by_value = sorted(range(len(unique)), key=lambda j: ys[unique[j][0]])
    return [unique[j] for j in thin(len(unique), MAX_SCATTER_MARKS, by_value[:200] + by_value[-200:])]


MAX_BUNDLE_IDS = 64  # a bundle's tooltip names this many of its executions; the count says how many in all


def bundle_class(count: int) -> str:
    """Line width class for a bundle of ``count`` identical lines: logarithmic, so 2 is visibly thicker than 1
    and 200 does not cover the plot."""
    return "" if count <= 1 else f" b{min(4, max(1, math.ceil(math.log2(count))))}"


def _parallel_axes(scored: Sequence[tuple[int, ExecutionRecord, float]], names: list[str], w: int, top: int,
                   bottom: int) -> tuple[list[str], list[svg.Scale], list[float], dict[int, str]] | None:
    """(parameter names kept, their scales, every axis' x, each drawable execution's path over the parameter
    axes): everything of a parallel coordinates plot but the metric's own axis."""
    scales: list[svg.Scale] = []
    kept_names: list[str] = []
    for name in names:
        axis_values = [_param(r, name) for _, r, _ in scored]
        scale = _axis_scale(axis_values, bottom, top)
        if scale is not None:
            scales.append(scale)
            kept_names.append(name)
    if len(kept_names) < 2:
        return None
    axes_x = [50 + k * (w - 130) / len(kept_names) for k in range(len(kept_names) + 1)]
    xs = [f1(x) for x in axes_x]
    prefixes: dict[int, str] = {}
    for i, r, _ in scored:
        params = [_param(r, n) for n in kept_names]
        if any(v is None for v, s in zip(params, scales) if not isinstance(s, BandScale)):
            continue
        prefixes[i] = "M" + " L".join(f"{x} {f1(s(v))}" for x, s, v in zip(xs, scales, params))
    return kept_names, scales, axes_x, prefixes


def parallel_coordinates(records: Sequence[ExecutionRecord], metric: str, goal: str,
                         width: int = svg.WIDE, values: Values = None, memo: Memo | None = None) -> Plot | None:
    """One line per distinct execution across every varying parameter and the metric, coloured by rank.

    Lines are drawn worst first so the best executions end on top; five colour bands (quintiles of the
    metric) read better than a continuous ramp at 10,000 lines.

    Identical lines are bundled, not jittered: over a grid with repeats (or a deterministic script) many
    executions share every coordinate, and drawn one over another they look like one line, so most of the
    campaign seems to vanish. Jitter would separate them but move points off their true values on numeric
    axes, where a reader reads positions; a bundle keeps every position exact and says how many executions
    it stands for, by its width (``b1``..``b4``, log2 buckets), in ``data-n`` and in its tooltip
    (``data-is`` lists the executions). Identity is judged on the drawn path (0.1 px), i.e. what a reader
    could tell apart.
    """
    scored = _metric_points(records, values)
    if not scored:
        return None
    memo = {} if memo is None else memo
    key = _scored_key(scored)
    names = _varying(records, scored, key, memo)[:MAX_AXES]
    if len(names) < 2:
        return None
    w, h = width, 360
    top, bottom = 34, h - 24
    axes_key = ("parallel", w, key)
    if axes_key not in memo:
        memo[axes_key] = _parallel_axes(scored, names, w, top, bottom)
    axes = memo[axes_key]
    if axes is None:
        return None
    kept_names, scales, axes_x, prefixes = axes
    obj_scale = numeric_scale([y for _, _, y in scored], bottom, top)
    rows = [(i, y) for i, _, y in scored if i in prefixes]
    ranked = sorted(rows, key=lambda row: row[1], reverse=(goal != "maximize"))  # worst first
    last_x = f1(axes_x[-1])
    bundles: dict[str, tuple[int, list[int]]] = {}  # path -> (rank of its best line, execution indices)
    for rank, (i, y) in enumerate(ranked):
        d = f"{prefixes[i]} L{last_x} {f1(obj_scale(y))}"
        _old_rank, members = bundles.get(d, (rank, []))
        members.append(i)
        bundles[d] = (rank, members)
    lines = []
    ordered = sorted(bundles.items(), key=lambda kv: kv[1][0])  # worst first, the best drawn last (on top)
    if len(ordered) > MAX_PARALLEL_LINES:
        best = range(len(ordered) - MAX_PARALLEL_LINES // 2, len(ordered))
        ordered = [ordered[k] for k in thin(len(ordered), MAX_PARALLEL_LINES, best)]
    for d, (rank, members) in ordered:
        quintile = 4 - min(4, rank * 5 // max(len(ranked), 1))  # q0 = best fifth
        many = ""
        if len(members) > 1:
            best_first = members[::-1]
            many = (f' data-n="{len(members)}" data-is="{" ".join(map(str, best_first[:MAX_BUNDLE_IDS]))}"')
        lines.append(f'<path class="pc q{quintile}{bundle_class(len(members))}" d="{d}" data-i="{members[-1]}"'
                     f'{many}/>')
    parts = [svg.open_svg(f"Parallel coordinates of {len(kept_names)} parameters and {metric}",
                          "parallel", len(ranked), height=h, width=w, marks=len(lines)),
             '<g class="lines">', "".join(lines), "</g>"]
    for x, name, scale in zip(axes_x, kept_names + [metric], scales + [obj_scale]):
        parts.append(f'<g class="axis pc-axis"><line x1="{f1(x)}" y1="{top}" x2="{f1(x)}" y2="{bottom}"/>'
                     f'<text class="label" x="{f1(x)}" y="{top - 14}" text-anchor="middle">'
                     f'{esc(svg.clip(name, 16))}</text>')
        ticks = scale.ticks()
        if len(ticks) > 8:
            ticks = ticks[:: math.ceil(len(ticks) / 8)]
        for pos, text in ticks:
            parts.append(f'<text class="tick" x="{f1(x + 4)}" y="{f1(pos + 3)}">{esc(svg.clip(text, 12))}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Plot("parallel", "Parallel coordinates", "".join(parts), len(ranked))


_TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
               86400, 172800, 604800, 2592000]


def _interval(r: ExecutionRecord, now: _dt.datetime | None) -> tuple[float, float] | None:
    start = parse_time(r.started)
    if start is None:
        return None
    end = parse_time(r.ended)
    if end is None and is_number(r.duration):
        end = start + _dt.timedelta(seconds=float(r.duration))  # type: ignore[arg-type]
    if end is None and r.state == "running" and now is not None:
        end = now
    if end is None or end < start:
        end = start
    return start.timestamp(), end.timestamp()


def _lane_name(r: ExecutionRecord) -> tuple[str, int, str]:
    # The node where there is one: on Slurm every execution has the login host, so host lanes would pile
    # a whole cluster's executions onto one lane per slot number.
    host = str(r.node) if r.node else str(r.host) if r.host else "unknown host"
    if isinstance(r.slot, int) and not isinstance(r.slot, bool):
        return host, r.slot, f"{host} · slot {r.slot}"
    return host, -1, host


def timeline_plot(records: Sequence[ExecutionRecord], generated: str, width: int = svg.WIDE) -> Plot | None:
    """Each execution as a bar on its node (or host) and slot lane: shows packing, idle slots and stragglers."""
    now = parse_time(generated)
    bars = [(i, r, iv) for i, r in enumerate(records) if (iv := _interval(r, now)) is not None]
    if not bars:
        return None
    lanes = sorted({_lane_name(r) for _, r, _ in bars}, key=lambda lane: (lane[0], lane[1]))
    lane_index = {lane: k for k, lane in enumerate(lanes)}
    lane_h = max(3.0, min(22.0, 520.0 / len(lanes)))
    left = 150
    w = width
    top = 10
    h = int(top + lane_h * len(lanes) + 44)
    t0 = min(iv[0] for _, _, iv in bars)
    t1 = max(iv[1] for _, _, iv in bars)
    span = max(t1 - t0, 1.0)
    xs = LinearScale(t0, t0 + span * 1.02, left, w - svg.MARGIN_RIGHT)
    step = next((s for s in _TIME_STEPS if span / s <= 8), _TIME_STEPS[-1])
    fmt = "%H:%M:%S" if step < 60 else ("%H:%M" if step < 86400 else "%m-%d")
    if step < 86400 and span > 86400:
        fmt = "%m-%d %H:%M"
    base = math.ceil(t0 / step) * step
    tick_parts = []
    y_bottom = top + lane_h * len(lanes)
    tick = base
    while tick <= t0 + span * 1.02:
        x = xs(tick)
        label = _dt.datetime.fromtimestamp(tick, _dt.timezone.utc).strftime(fmt)
        tick_parts.append(f'<line class="grid" x1="{f1(x)}" y1="{top}" x2="{f1(x)}" y2="{f1(y_bottom)}"/>'
                          f'<text x="{f1(x)}" y="{f1(y_bottom + 16)}" text-anchor="middle">{label}</text>')
        tick += step
    day = _dt.datetime.fromtimestamp(t0, _dt.timezone.utc).strftime("%Y-%m-%d")
    parts = [svg.open_svg("Execution timeline per node and slot", "timeline", len(bars), height=h, width=w),
             '<g class="axis">', "".join(tick_parts),
             f'<text class="label" x="{f1((left + w) / 2)}" y="{f1(y_bottom + 36)}" text-anchor="middle">'
             f'time (UTC, from {day})</text></g>']
    if lane_h >= 9:
        parts.append('<g class="axis lanes">')
        for lane, k in lane_index.items():
            y = top + k * lane_h + lane_h / 2 + 4
            parts.append(f'<text x="{left - 8}" y="{f1(y)}" text-anchor="end">{esc(svg.clip(lane[2], 24))}</text>')
        parts.append("</g>")
    else:
        parts.append(f'<text class="label" x="14" y="{f1(top + lane_h * len(lanes) / 2)}">'
                     f'{len(lanes)} lanes</text>')
    parts.append('<g class="bars">')
    pad = max(0.5, lane_h * 0.15)
    drawn = [(i, lane_index[_lane_name(r)], state_class(r.state), xs(a), max(xs(b) - xs(a), 1.5))
             for i, r, (a, b) in bars]
    merged = (_merge_bars(drawn) if len(drawn) > MAX_TIMELINE_BARS
              else [(i, k, st, x, bar_w, 1) for i, k, st, x, bar_w in drawn])
    for i, k, st, x, bar_w, n in merged:
        many = f' data-merged="{n}"' if n > 1 else ""  # not data-n: these executions are not identical
        parts.append(f'<rect class="bar s-{st}" x="{f1(x)}" y="{f1(top + k * lane_h + pad)}" '
                     f'width="{f1(bar_w)}" height="{f1(lane_h - 2 * pad)}" data-i="{i}"{many}/>')
    parts.append("</g></svg>")
    if len(merged) < len(drawn):
        parts[0] = svg.open_svg("Execution timeline per node and slot", "timeline", len(bars), height=h, width=w,
                                marks=len(merged))
    return Plot("timeline", "Timeline", "".join(parts), len(bars))


def _merge_bars(drawn: list[tuple[int, int, str, float, float]]) -> list[tuple[int, int, str, float, float, int]]:
    """Bars of one lane and state that touch or overlap (less than a pixel apart) drawn as one: the reader
    sees the same busy stretch. Returns (first execution, lane, state, x, width, executions merged)."""
    out: list[tuple[int, int, str, float, float, int]] = []
    open_bar: dict[tuple[int, str], int] = {}  # (lane, state) -> position in out of its latest bar
    for i, k, st, x, bar_w in sorted(drawn, key=lambda d: (d[1], d[3])):
        j = open_bar.get((k, st))
        if j is not None and x <= out[j][3] + out[j][4] + 1.0:
            first, lane, state, x0, w0, n = out[j]
            out[j] = (first, lane, state, x0, max(w0, x + bar_w - x0), n + 1)
            continue
        open_bar[(k, st)] = len(out)
        out.append((i, k, st, x, bar_w, 1))
    return out


def legend_html(states: Sequence[str]) -> str:
    """State swatches, in HTML so they wrap on narrow screens."""
    return '<div class="legend">' + "".join(
        f'<span><i class="sw s-{state_class(s)}"></i>{esc(s)}</span>' for s in states) + "</div>"


__all__ = ["Plot", "Memo", "bundle_class", "progress_plot", "scatter_plots", "parallel_coordinates", "timeline_plot",
           "varying_parameters", "legend_html"]
