"""The site-level pages: overview (index.html), executions table, plots.

Markup is built with f-strings and ``esc``: a template engine would add a dependency and, at 10,000
executions, most of the time. Every campaign-provided value goes through ``esc``; helpers that return
markup end in ``_html``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from orchestra.execution import STATES

from . import plots as P
from . import resources as R
from .fmt import esc, fmt_duration, fmt_num, fmt_time, short_sha, state_class
from .layout import page
from .model import ReportData, metric_value, objective_label, report_metrics
from .summary import Summary, summarize


PEOPLE_LIMIT = 50
# A metrics file may hold dozens of numbers. Each plotted metric adds its scatter plots and parallel
# coordinates (about 1.5 MB of SVG and 0.15 s at 10,000 executions), each table column a cell per row:
# beyond these bounds the rest stay in data.js, on execution pages and in `expegit export`, and the page says so.
MAX_TABLE_METRICS = 16
MAX_PLOT_METRICS = 8


def badge_html(state: object) -> str:
    return f'<span class="badge s-{state_class(state)}">{esc(str(state))}</span>'


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A plain table from pre-escaped cells; headers are escaped here."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table-scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def params_html(parameters: object) -> str:
    if not isinstance(parameters, dict) or not parameters:
        return '<span class="muted">none</span>'
    return '<span class="params">' + "".join(
        f'<span class="param"><b>{esc(str(k))}</b>={esc(fmt_num(v))}</span>' for k, v in parameters.items()
    ) + "</span>"


def state_bar_html(summary: Summary) -> str:
    """A stacked bar of states; SVG because the page's policy forbids inline style widths."""
    if not summary.total:
        return ""
    x = 0.0
    rects = []
    for state in summary.state_order:
        width = 1000 * summary.states[state] / summary.total
        rects.append(f'<rect class="s-{state}" x="{x:.1f}" y="0" width="{width:.1f}" height="12"/>')
        x += width
    return ('<svg class="statebar" viewBox="0 0 1000 12" preserveAspectRatio="none" role="img" '
            f'aria-label="executions by state">{"".join(rects)}</svg>')


def _state_counts_html(summary: Summary) -> str:
    return '<ul class="states">' + "".join(
        f'<li><a href="executions.html#state={s}">{badge_html(s)} <b>{summary.states[s]}</b></a></li>'
        for s in summary.state_order) + "</ul>"


def _figure_html(plot: P.Plot | None, caption: str, legend: str = "", wide: bool = False) -> str:
    if plot is None:
        return ""
    return (f'<figure class="card plot-card{" wide" if wide else ""}"><figcaption><h3>{esc(plot.title)}</h3>'
            f'<span class="muted">{esc(caption)}</span></figcaption>{legend}{plot.svg}</figure>')


def overview_page(data: ReportData, pages: list[str], progress: P.Plot | None = None) -> str:
    """``progress`` may be passed in when the caller already drew it for the plots page."""
    records = [v.record for v in data.executions]
    metric, goal = objective_label(data)
    s = summarize(records, goal, data.generated)
    body: list[str] = [
        '<section class="hero"><div><h1>', esc(data.campaign), "</h1>",
        f'<p class="muted">{s.total} execution{"s" if s.total != 1 else ""}'
        + (f" · objective <b>{esc(metric)}</b> ({esc(goal)})" if data.objective else " · no objective declared")
        + "</p></div></section>",
    ]
    if not records:
        body.append('<section class="card empty"><h2>No executions yet</h2><p>Run <code>expegit run</code> '
                    "and regenerate this report to see results here.</p></section>")
        return page("Overview", "".join(body), root="", active="overview", campaign=data.campaign,
                    generated=data.generated)
    cards = ['<section class="cards">']
    cards.append(f'<div class="card"><h2>Executions</h2><p class="big">{s.total}</p>'
                 f"{state_bar_html(s)}{_state_counts_html(s)}</div>")
    if s.best_index is not None:
        best = records[s.best_index]
        cards.append(
            f'<div class="card"><h2>Best {esc(metric)}</h2>'
            f'<p class="big">{esc(fmt_num(best.objective))}</p>'
            f'<p><a href="{esc(pages[s.best_index])}" class="mono">{esc(str(best.id))}</a> '
            f'{badge_html(best.state)}</p>{params_html(best.parameters)}</div>')
    else:
        cards.append(f'<div class="card"><h2>Best {esc(metric)}</h2><p class="big muted">—</p>'
                     "<p class=\"muted\">No execution reported an objective yet.</p></div>")
    span = ""
    if s.first and s.last:
        span = fmt_duration((s.last - s.first).total_seconds())
    cards.append(
        '<div class="card"><h2>Time span</h2>'
        f'<p class="big">{esc(span) or "—"}</p><dl class="kv">'
        f"<dt>first start</dt><dd>{esc(fmt_time(s.first.isoformat()) if s.first else '—')}</dd>"
        f"<dt>last end</dt><dd>{esc(fmt_time(s.last.isoformat()) if s.last else '—')}</dd>"
        f"<dt>compute</dt><dd>{esc(fmt_duration(s.compute) or '0 s')}</dd></dl></div>")
    cards.append(R.busy_card_html(R.busy(records, data.generated)))
    cards.append("</section>")
    body.extend(cards)

    if progress is None:
        progress = P.progress_plot(records, metric, goal)
    if progress is not None:
        body.append(_figure_html(progress, f"each point is an execution; the line is the best {metric} so far "
                                 f"({goal})", P.legend_html([st for st in s.state_order]), wide=True))
    if s.ranked:
        rows = []
        for i in s.ranked[:10]:
            r = records[i]
            rows.append([f'<a class="mono" href="{esc(pages[i])}">{esc(str(r.id))}</a>', badge_html(r.state),
                         f'<span class="num">{esc(fmt_num(r.objective))}</span>', params_html(r.parameters),
                         esc(fmt_duration(r.duration))])
        body.append('<section class="card"><h2>Best executions</h2>'
                    + table_html(["id", "state", metric, "parameters", "duration"], rows) + "</section>")

    commit_rows = []
    for sha, group in sorted(s.commits.items(), key=lambda kv: (-kv[1].count, kv[0])):
        info = data.commits.get(sha)
        commit_rows.append([
            f'<span class="mono" title="{esc(sha)}">{esc(short_sha(sha))}</span>',
            esc(info.subject) if info else '<span class="muted">unknown commit</span>',
            esc(info.author) if info else "", esc(fmt_time(info.time)) if info else "",
            f'<span class="num">{group.count}</span>', _mini_states_html(group.states)])
    body.append('<section class="card"><h2>Code commits used</h2>'
                + table_html(["commit", "subject", "author", "time", "executions", "states"], commit_rows)
                + "</section>")
    people_rows = []
    people = sorted(s.people.items(), key=lambda kv: (-kv[1].count, kv[0]))
    for (author, host), group in people[:PEOPLE_LIMIT]:
        people_rows.append([esc(author), f'<span class="mono">{esc(host)}</span>',
                            f'<span class="num">{group.count}</span>', _mini_states_html(group.states),
                            esc(fmt_duration(group.compute) or "—")])
    more = (f'<p class="muted small">and {len(people) - PEOPLE_LIMIT} more author/host pairs</p>'
            if len(people) > PEOPLE_LIMIT else "")
    body.append('<section class="card"><h2>Who ran what</h2>'
                + table_html(["author", "host", "executions", "states", "compute"], people_rows)
                + more + "</section>")
    return page("Overview", "".join(body), root="", active="overview", campaign=data.campaign,
                generated=data.generated, lazy_data=True)


def _mini_states_html(states: object) -> str:
    counts = dict(states) if isinstance(states, dict) else {}
    return '<span class="minis">' + "".join(f'<span class="mini s-{s}" title="{s}">{counts[s]}</span>'
                                            for s in (*STATES, "unknown") if counts.get(s)) + "</span>"


def executions_page(data: ReportData) -> str:
    """The table shell; report.js fills it from data.js (sorting and filtering 10,000 rows client-side)."""
    counts = Counter(state_class(v.record.state) for v in data.executions)
    options = "".join(f'<option value="{s}">{s} ({counts[s]})</option>' for s in (*STATES, "unknown")
                      if counts.get(s))
    metric, _ = objective_label(data)
    columns = [("select", "", ""), ("id", "id", ""), ("state", "state", ""), ("parameters", "parameters", ""),
               ("objective", metric, "")]
    # Every other metric of the metrics files gets its own column (the objective already has one).
    others = [name for name in report_metrics(data) if name != metric]
    columns += [("metric", name, name) for name in others[:MAX_TABLE_METRICS]]
    columns += [("duration", "duration", ""), ("node", "node", ""), ("profile", "profile", ""),
                ("commit", "commit", ""), ("started", "started", "")]
    head = "".join(
        '<th data-key="select" class="c-select"><span class="sr-only">compare</span></th>' if key == "select" else
        f'<th data-key="{key}"' + (f' data-metric="{esc(name)}"' if name else "")
        + f' aria-sort="none"><button type="button">{esc(label)}<i class="arrow"></i></button></th>'
        for key, label, name in columns)
    body = (
        '<section class="hero"><div><h1>Executions</h1>'
        f'<p class="muted">{len(data.executions)} in this campaign · click a header to sort, a row to open'
        + (f" · {len(others) - MAX_TABLE_METRICS} more metrics on each execution's page and in "
           "<code>expegit export</code>" if len(others) > MAX_TABLE_METRICS else "") + "</p>"
        "</div></section>"
        '<section class="card table-card">'
        '<div class="toolbar">'
        '<input id="filter" type="search" placeholder="Filter: id, parameter, node, host, profile, commit, author…" '
        'aria-label="filter executions" autocomplete="off">'
        f'<select id="state-filter" aria-label="state"><option value="">all states ({len(data.executions)})'
        f"</option>{options}</select>"
        '<select id="page-size" aria-label="rows per page"><option>25</option><option selected>50</option>'
        "<option>100</option><option>250</option></select>"
        '<span id="count" class="muted"></span>'
        '<button type="button" id="compare" disabled title="tick two executions, then compare them">'
        "Compare (0/2)</button></div>"
        '<div class="table-scroll"><table id="executions" class="executions">'
        f"<thead><tr>{head}</tr></thead><tbody></tbody></table></div>"
        '<p id="no-rows" class="muted empty-row" hidden>No execution matches.</p>'
        '<div class="pager"><button type="button" id="prev">‹ Previous</button>'
        '<span id="page-info"></span><button type="button" id="next">Next ›</button></div>'
        '<noscript><p class="muted">The table needs JavaScript; the overview and execution pages do not.</p>'
        "</noscript></section>"
    )
    return page("Executions", body, root="", active="executions", campaign=data.campaign,
                generated=data.generated)


def learning_curves(data: ReportData) -> P.Plot | None:
    """Every execution's intermediate metrics (``.orchestra/metrics.jsonl``), best highlighted."""
    from .curves import learning_curves_plot

    curves = [(i, v.curve) for i, v in enumerate(data.executions) if v.curve]
    if not curves:
        return None
    metric, goal = objective_label(data)
    objective = {i: v.record.objective for i, v in enumerate(data.executions)
                 if v.curve and v.record.objective is not None}
    return learning_curves_plot(curves, goal=goal, prefer=metric, objective=objective)


def plots_page(data: ReportData, progress: P.Plot | None = None) -> str:
    """Search progress (the objective), then scatter plots and parallel coordinates per metric, then the
    timeline. With several metrics, each metric's plots are drawn once here and a picker (report.js) shows
    one set at a time: the site stays static and works from file://; without JavaScript the objective's
    plots show."""
    records = [v.record for v in data.executions]
    metric, goal = objective_label(data)
    states = [st for st in (*STATES, "unknown") if any(state_class(r.state) == st for r in records)]
    legend = P.legend_html(states)
    parts = ['<section class="hero"><div><h1>Plots</h1><p class="muted">Hover a mark for details, click it '
             "to open the execution.</p></div></section>"]
    if progress is None:
        progress = P.progress_plot(records, metric, goal)
    parts.append(_figure_html(progress, f"best {metric} so far ({goal})", legend, wide=True))
    curves = learning_curves(data)
    if curves is not None:
        parts.append(_figure_html(curves, "intermediate metrics, one line per execution; the best is highlighted",
                                  wide=True))
    if len(data.objectives) > 1:  # several objectives: what the search traded off, and how far it got
        from .front import front_plot, hypervolume_plot

        fronts = [_figure_html(front_plot(records, data.objectives), "every execution with all objectives; the "
                               "Pareto front (over all objectives) is outlined", legend),
                  _figure_html(hypervolume_plot(records, data.objectives), "hypervolume of the executions finished "
                               "so far, up to one reference point (the nadir pushed out by a tenth of each range)")]
        if any(fronts):
            parts.append('<section class="grid2">' + "".join(fronts) + "</section>")
    every = report_metrics(data)
    names = every[:MAX_PLOT_METRICS]
    memo: P.Memo = {}  # parameter axes drawn once for every metric that has the same executions
    groups: list[str] = []
    any_scatter = False
    for k, name in enumerate(names):
        values = [metric_value(v, name, metric) for v in data.executions]
        # Only the objective has a goal; other metrics are ranked high to low, and the caption says so.
        name_goal = goal if name == metric else "maximize"
        better = f"a better {name}" if name == metric else f"a higher {name}"
        scatters = P.scatter_plots(records, name, values=values, memo=memo)
        any_scatter = any_scatter or bool(scatters)
        group = []
        if scatters:
            group.append('<section class="grid2">' + "".join(
                _figure_html(p, "categorical values sit on bands" if 'class="band"' in p.svg else "", legend)
                for p in scatters) + "</section>")
        parallel = P.parallel_coordinates(records, name, name_goal, values=values, memo=memo)
        bundled = parallel is not None and ' data-n="' in parallel.svg
        top, bottom = ("best", "worst") if name == metric else ("highest", "lowest")
        group.append(_figure_html(
            parallel, f"one line per execution; darker lines have {better}"
            + ("; thicker lines bundle identical executions (hover for how many)" if bundled else ""),
            f'<div class="legend"><span><i class="sw q0"></i>{top} fifth</span>'
            f'<span><i class="sw q2"></i>middle</span><span><i class="sw q4"></i>{bottom} fifth</span></div>',
            wide=True))
        if not any(group) and len(names) > 1:
            group.append(f'<section class="card empty"><p class="muted">No execution reported {esc(name)} with '
                         "parameters that vary.</p></section>")
        groups.append(f'<div class="metric-group" data-metric="{esc(name)}"{" hidden" if k else ""}>'
                      + "".join(group) + "</div>")
    if len(names) > 1:
        options = "".join(f'<option value="{esc(n)}">{esc(n)}{" (objective)" if n == metric and data.objective else ""}'
                          "</option>" for n in names)
        parts.append('<div class="metric-pick" id="metric-pick" hidden><label for="metric-picker">Metric</label>'
                     f'<select id="metric-picker" aria-label="metric for the plots below">{options}</select>'
                     + (f'<span class="muted small">{len(every) - len(names)} more metrics are in the executions '
                        "table and in <code>expegit export</code></span>" if len(every) > len(names) else "")
                     + "</div>")
    parts.extend(groups)
    parts.append(_figure_html(P.timeline_plot(records, data.generated), "one bar per execution, per node and slot",
                              legend, wide=True))
    parts.append(_figure_html(R.gpu_lanes_plot(records, data.generated),
                              "one lane per GPU of each node; each execution on the devices it held, a fraction "
                              "of a GPU as a strip of that height, stacked with those sharing the device",
                              legend, wide=True))
    if progress is None and not any_scatter:
        parts.append('<section class="card empty"><h2>No objective values yet</h2><p>Plots of the objective '
                     "appear once executions report one.</p></section>")
    return page("Plots", "".join(parts), root="", active="plots", campaign=data.campaign,
                generated=data.generated)


def compare_page(data: ReportData) -> str:
    """The shell of compare.html#a=ID&b=ID; report.js fills it from data.js (what `expegit compare` shows of
    the records: parameters, code commit, place, timings, objective and metrics, environment, packages added, removed and changed)."""
    body = (
        '<section class="hero"><div><h1>Compare</h1><p class="muted" id="compare-what">Tick two executions in '
        '<a href="executions.html">the table</a>, then press Compare. <code>expegit compare A B</code> adds the '
        "code's diffstat and the output files that differ.</p></div></section>"
        '<section class="card"><div class="table-scroll"><table id="compare-table" class="compare">'
        '<thead><tr><th></th><th id="compare-a">A</th><th id="compare-b">B</th><th>B − A</th></tr></thead>'
        "<tbody></tbody></table></div>"
        '<p id="compare-missing" class="muted" hidden>These executions are not in this report.</p>'
        '<noscript><p class="muted">The comparison needs JavaScript; <code>expegit compare</code> does not.</p>'
        "</noscript></section>"
        '<section class="card" id="compare-packages" hidden><h2>Packages</h2>'
        '<p class="muted" id="compare-packages-what"></p><div id="compare-packages-groups"></div>'
        + (f'<p class="muted" id="compare-packages-left-out">{data.packages_left_out} more package lists were '
           "left out of this report; <code>expegit compare A B</code> reads them.</p>" if data.packages_left_out else "")
        + "</section>"
        # Only this page loads the package lists; before report.js, which reads them (PACKAGES_FILE).
        '<script src="packages.js"></script>')
    return page("Compare", body, root="", active="compare", campaign=data.campaign, generated=data.generated)


__all__ = ["overview_page", "executions_page", "plots_page", "compare_page", "badge_html", "params_html", "table_html"]
