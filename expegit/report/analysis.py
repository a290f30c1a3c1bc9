"""The report's analysis page (analysis.html): configurations over repeats, error bars, parameter importance.

Pure like the other pages: statistics come from the records in ``ReportData`` (expegit.aggregate for the
configurations, expegit.importance for PED-ANOVA), the markup from f-strings with every value escaped.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..aggregate import Configuration, configurations, has_repeats
from ..importance import MAX_EXECUTIONS, ImportanceUnavailable, parameter_importance
from . import svg
from .fmt import esc, fmt_num
from .layout import page
from .model import ReportData, objective_label
from .plots import Plot, _axis_scale
from .svg import BandScale, f1, numeric_scale

MAX_CONFIGURATIONS = 200  # table rows; the rest are counted (they are in `expegit status` and the API)


def _ci_text(c: Configuration) -> str:
    return f"[{fmt_num(c.low)}, {fmt_num(c.high)}]" if c.low is not None else "—"


def configurations_table_html(configs: Sequence[Configuration], pages_by_id: dict[str, str], metric: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in
                   ("", "rank", f"mean {metric}", "sd", "95% CI", "n", "parameters", "executions"))
    rows = []
    for k, c in enumerate(configs[:MAX_CONFIGURATIONS]):
        mark = ('<span class="cfg-mark best" title="best mean">★</span>' if c.best else
                '<span class="cfg-mark overlap" title="its interval overlaps the best one\'s">≈</span>'
                if c.overlaps_best else "")
        params = "".join(f'<span class="param"><b>{esc(str(n))}</b>={esc(fmt_num(v))}</span>'
                         for n, v in c.parameters.items())
        links = " ".join(f'<a class="mono" href="{esc(pages_by_id[i])}">{esc(i)}</a>'
                         for i in c.ids[:8] if i in pages_by_id) + (" …" if len(c.ids) > 8 else "")
        cls = "best" if c.best else "overlaps" if c.overlaps_best else ""
        rows.append(f'<tr class="{cls}" data-n="{c.n}"><td>{mark}</td><td class="num">{k + 1}</td>'
                    f'<td class="num">{esc(fmt_num(c.mean))}</td><td class="num">{esc(fmt_num(c.std))}</td>'
                    f'<td class="num">{esc(_ci_text(c))}</td><td class="num">{c.n}</td>'
                    f'<td><span class="params">{params}</span></td><td>{links}</td></tr>')
    more = (f'<p class="muted small">and {len(configs) - MAX_CONFIGURATIONS} more configurations</p>'
            if len(configs) > MAX_CONFIGURATIONS else "")
    return (f'<div class="table-scroll"><table id="configurations" class="configurations"><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>{more}")


def errorbar_plots(configs: Sequence[Configuration], metric: str, width: int = svg.HALF) -> list[Plot]:
    """The mean objective of each configuration against each parameter that varies, with its 95% interval
    as a vertical bar (none for a single execution)."""
    names = [n for n in dict.fromkeys(k for c in configs for k in c.parameters)
             if len({repr(c.parameters.get(n)) for c in configs}) >= 2]
    if not configs or not names:
        return []
    w, h = width, 280
    x0, x1 = svg.MARGIN_LEFT, w - svg.MARGIN_RIGHT
    y0, y1 = h - svg.MARGIN_BOTTOM, svg.MARGIN_TOP
    extent = [c.mean for c in configs] + [v for c in configs for v in (c.low, c.high) if v is not None]
    ys = numeric_scale(extent, y0, y1)
    plots = []
    for name in names:
        present = [c for c in configs if name in c.parameters]
        xs = _axis_scale([c.parameters[name] for c in present], x0, x1)
        if xs is None:
            continue
        marks = []
        for k, c in enumerate(present):
            value = c.parameters[name]
            cx = xs.jittered(value, k) if isinstance(xs, BandScale) else xs(value)
            cls = "best" if c.best else "overlaps" if c.overlaps_best else "other"
            title = f"{metric} {fmt_num(c.mean)} ± {fmt_num(c.half_width)} (n={c.n})"
            if c.low is not None and c.high is not None:
                marks.append(f'<line class="errbar {cls}" x1="{f1(cx)}" x2="{f1(cx)}" y1="{f1(ys(c.low))}" '
                             f'y2="{f1(ys(c.high))}"/>')
            marks.append(f'<circle class="cfg {cls}" cx="{f1(cx)}" cy="{f1(ys(c.mean))}" r="4">'
                         f"<title>{esc(title)}</title></circle>")
        body = "".join([
            svg.open_svg(f"mean {metric} against {name}", "errorbars", len(present), height=h, width=w),
            svg.y_axis(ys, x0, y0, y1, f"mean {metric}", grid_to=x1),
            svg.x_axis(xs, y0, x0, x1, name, rotate=isinstance(xs, BandScale) and len(xs.categories) > 8),
            '<g class="points">', "".join(marks), "</g></svg>"])
        plots.append(Plot("errorbars", f"mean {metric} against {name}", body, len(present)))
    return plots


def importance_plot(importances: dict[str, float], width: int = svg.WIDE) -> Plot:
    """Horizontal bars, most important first; the numbers are PED-ANOVA's normalised importances."""
    row = 26
    h = svg.MARGIN_TOP + row * len(importances) + 30
    label_w = 200
    x0, x1 = label_w, width - 80
    top = max(importances.values()) or 1.0
    bars = []
    for k, (name, value) in enumerate(importances.items()):
        y = svg.MARGIN_TOP + k * row
        length = (x1 - x0) * value / top
        bars.append(f'<text x="{label_w - 8}" y="{f1(y + 15)}" text-anchor="end">{esc(svg.clip(name, 28))}</text>'
                    f'<rect class="imp" x="{x0}" y="{f1(y + 3)}" width="{f1(length)}" height="{row - 8}" '
                    f'data-param="{esc(name)}"><title>{esc(name)}: {value:.3f}</title></rect>'
                    f'<text x="{f1(x0 + length + 6)}" y="{f1(y + 15)}">{value:.3f}</text>')
    body = (svg.open_svg("parameter importance", "importance", len(importances), height=h, width=width)
            + "".join(bars) + "</svg>")
    return Plot("importance", "parameter importance", body, len(importances))


def _figure(plot: Plot, caption: str, wide: bool = False) -> str:
    return (f'<figure class="card plot-card{" wide" if wide else ""}"><figcaption><h3>{esc(plot.title)}</h3>'
            f'<span class="muted">{esc(caption)}</span></figcaption>{plot.svg}</figure>')


def analysis_page(data: ReportData, pages: list[str]) -> str:
    metric, goal = objective_label(data)
    records = [v.record for v in data.executions]
    pages_by_id = {str(v.record.id): p for v, p in zip(data.executions, pages)}
    configs = configurations(records, goal)
    parts = ['<section class="hero"><div><h1>Analysis</h1><p class="muted">Configurations (one per parameter '
             f"point, over its repeats), the mean {esc(metric)} against each parameter, and which parameters "
             "explain it.</p></div></section>"]
    section = ['<section class="card" id="configurations-card"><h2>Configurations</h2>']
    if has_repeats(configs):
        section.append(f'<p class="muted">{len(configs)} configurations, best mean first ({esc(goal)}); the '
                       "interval is the 95% confidence interval of the mean (Student t); ≈ marks those whose "
                       "interval overlaps the best one's: the data do not tell them apart.</p>")
        section.append(configurations_table_html(configs, pages_by_id, metric))
    else:
        section.append('<p class="muted empty-note">No parameter point has repeats yet: run with '
                       "<code>--repeat N</code> (or <code>repeats:</code> in the manifest) for means and "
                       "intervals.</p>")
    section.append("</section>")
    parts.extend(section)
    plots = errorbar_plots(configs, metric) if has_repeats(configs) else []
    if plots:
        parts.append('<section class="grid2">' + "".join(
            _figure(p, "one mark per configuration; bars are 95% intervals") for p in plots) + "</section>")
    try:
        importances = parameter_importance(records, goal)
    except ImportanceUnavailable as why:
        parts.append('<section class="card" id="importance-card"><h2>Parameter importance</h2>'
                     f'<p class="muted empty-note">Not shown: {esc(str(why))}.</p></section>')
    else:
        scored = sum(1 for r in records if r.state == "finished" and r.objective is not None)
        sample = f" (the last {MAX_EXECUTIONS} of {scored} executions)" if scored > MAX_EXECUTIONS else ""
        parts.append(_figure(importance_plot(importances),
                             "PED-ANOVA (Optuna): the share of the objective's variance among the best executions "
                             f"each parameter explains{sample}", wide=True).replace("<figure ", '<figure id="importance-card" ', 1))
    return page("Analysis", "".join(parts), root="", active="analysis", campaign=data.campaign,
                generated=data.generated)


__all__ = ["analysis_page", "configurations_table_html", "errorbar_plots", "importance_plot"]
