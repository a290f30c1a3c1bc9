"""A multi-objective campaign's Pareto front and its hypervolume over time, as inline SVG.

Pure render functions over the records in report order, like plots.py and curves.py (every mark carries
``data-i`` for the report's tooltips and click-through). The values are the records' ``objectives``
(one number per declared objective, what the search traded off); the dominance and hypervolume arithmetic
is :mod:`orchestra.pareto`'s, so the report and ``parasearch best`` can never disagree on the front.

- :func:`front_plot`: every execution with all objectives at (first objective, second objective), the
  points of the Pareto front (over all objectives) highlighted and, with two objectives, joined by the
  staircase that bounds what they dominate.
- :func:`hypervolume_plot`: the hypervolume of the executions finished so far against their count, in
  completion order, up to one reference point for the whole campaign (:func:`orchestra.pareto.reference_point`
  of every point), so the curve only rises and its steps are the executions that improved the front.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra.execution import ExecutionRecord

from . import svg
from .fmt import esc, fmt_num, is_number, state_class
from .plots import Plot, _order_key
from .svg import LinearScale, f1

MAX_HYPERVOLUME_STEPS = 2000  # hypervolume recomputed at most this often (each is O(n log n) for 2-D)


def objective_vectors(records: Sequence[ExecutionRecord], objectives: Sequence[Mapping[str, object]]
                      ) -> list[tuple[int, tuple[float, ...]]]:
    """(report index, raw values in the declared order) of each execution that has every objective."""
    metrics = [str(o["metric"]) for o in objectives]
    out = []
    for i, r in enumerate(records):
        values = r.objectives if isinstance(r.objectives, Mapping) else {}
        vector = [values.get(m) for m in metrics]
        if all(is_number(v) and not isinstance(v, bool) for v in vector):
            out.append((i, tuple(float(v) for v in vector)))  # type: ignore[arg-type]
    return out


def _label(objective: Mapping[str, object]) -> str:
    return f"{objective['metric']} ({'max' if objective.get('goal') == 'maximize' else 'min'})"


def front_plot(records: Sequence[ExecutionRecord], objectives: Sequence[Mapping[str, object]],
               width: int = svg.WIDTH) -> Plot | None:
    """Scatter of the first two objectives, the Pareto front highlighted; None below two objectives or points."""
    from orchestra.pareto import oriented, pareto_front

    if len(objectives) < 2:
        return None
    points = objective_vectors(records, objectives)
    if not points:
        return None
    goals = [str(o.get("goal", "minimize")) for o in objectives]
    front = {points[k][0] for k in pareto_front(oriented([v for _, v in points], goals))}
    w, h = width, svg.HEIGHT
    x0, x1 = svg.MARGIN_LEFT, w - svg.MARGIN_RIGHT
    y0, y1 = h - svg.MARGIN_BOTTOM, svg.MARGIN_TOP
    xs_all = [v[0] for _, v in points]
    ys_all = [v[1] for _, v in points]
    xs = LinearScale(min(xs_all), max(xs_all), x0, x1)
    ys = LinearScale(min(ys_all), max(ys_all), y0, y1)
    names = [str(o["metric"]) for o in objectives]
    parts = [svg.open_svg(f"Pareto front: {names[1]} against {names[0]}", "front", len(points), width=w),
             svg.y_axis(ys, x0, y0, y1, _label(objectives[1]), grid_to=x1),
             svg.x_axis(xs, y0, x0, x1, _label(objectives[0]))]
    if len(objectives) == 2:
        # The staircase that bounds what the front dominates: by the first objective from its best end,
        # each step goes along the first objective at the previous point's second, then to the next point.
        sign = -1.0 if goals[0] == "maximize" else 1.0
        ordered = sorted((v for i, v in points if i in front), key=lambda v: (sign * v[0], v))
        if len(ordered) > 1:
            d = f"M{f1(xs(ordered[0][0]))} {f1(ys(ordered[0][1]))}" + "".join(
                f"L{f1(xs(b[0]))} {f1(ys(a[1]))}L{f1(xs(b[0]))} {f1(ys(b[1]))}" for a, b in zip(ordered, ordered[1:]))
            parts.append(f'<path class="front-line" d="{d}"/>')
    marks = []
    for i, v in sorted(points, key=lambda p: p[0] in front):  # the front drawn last, never hidden
        cls = f"pt s-{state_class(records[i].state)}" + (" front" if i in front else "")
        label = ", ".join(f"{n}={fmt_num(x)}" for n, x in zip(names, v))
        marks.append(f'<circle class="{cls}" cx="{f1(xs(v[0]))}" cy="{f1(ys(v[1]))}" r="{4 if i in front else 3}" '
                     f'data-i="{i}"><title>{esc(label)}</title></circle>')
    parts.append('<g class="points">' + "".join(marks) + "</g></svg>")
    return Plot("front", "Pareto front", "".join(parts), len(points))


def hypervolume_series(records: Sequence[ExecutionRecord], objectives: Sequence[Mapping[str, object]]
                       ) -> list[tuple[int, int, float]]:
    """(count, report index, hypervolume of the first ``count`` finished executions), in completion order."""
    from orchestra.pareto import hypervolume, oriented, reference_point

    points = objective_vectors(records, objectives)
    if not points:
        return []
    order = sorted(points, key=lambda p: _order_key((p[0], records[p[0]])))
    goals = [str(o.get("goal", "minimize")) for o in objectives]
    Y = oriented([v for _, v in order], goals)
    ref = reference_point(Y)
    every = max(1, -(-len(order) // MAX_HYPERVOLUME_STEPS))
    out = []
    for n in range(1, len(order) + 1):
        if n % every == 0 or n == len(order):
            out.append((n, order[n - 1][0], hypervolume(Y[:n], ref)))
    return out


def hypervolume_plot(records: Sequence[ExecutionRecord], objectives: Sequence[Mapping[str, object]],
                     width: int = svg.WIDTH) -> Plot | None:
    """The front's hypervolume against the number of executions finished; None without two objectives."""
    if len(objectives) < 2:
        return None
    series = hypervolume_series(records, objectives)
    if not series:
        return None
    w, h = width, svg.HEIGHT
    x0, x1 = svg.MARGIN_LEFT, w - svg.MARGIN_RIGHT
    y0, y1 = h - svg.MARGIN_BOTTOM, svg.MARGIN_TOP
    xs = LinearScale(0.5, series[-1][0] + 0.5, x0, x1)
    ys = LinearScale(0.0, max(v for _, _, v in series) or 1.0, y0, y1)
    parts = [svg.open_svg("hypervolume against executions finished", "hypervolume", len(series), width=w),
             svg.y_axis(ys, x0, y0, y1, "hypervolume", grid_to=x1),
             svg.x_axis(xs, y0, x0, x1, "execution (in completion order)")]
    d = f"M{f1(xs(series[0][0]))} {f1(ys(series[0][2]))}"
    d += "".join(f"H{f1(xs(n))}V{f1(ys(v))}" for n, _, v in series[1:])
    parts.append(f'<path class="best-line hv-line" d="{d}"/>')
    marks = []
    previous = 0.0
    for n, i, v in series:
        if v > previous:  # an execution that grew the front
            marks.append(f'<circle class="pt s-{state_class(records[i].state)}" cx="{f1(xs(n))}" cy="{f1(ys(v))}" '
                         f'r="3" data-i="{i}"><title>{esc(f"hypervolume {fmt_num(v)} after {n}")}</title></circle>')
        previous = max(previous, v)
    parts.append('<g class="points">' + "".join(marks) + "</g></svg>")
    return Plot("hypervolume", "Hypervolume over time", "".join(parts), len(series))


__all__ = ["front_plot", "hypervolume_plot", "hypervolume_series", "objective_vectors"]
