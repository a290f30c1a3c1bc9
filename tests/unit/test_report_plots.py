"""Plots draw one mark per execution they claim to show, on sensible axes."""
from __future__ import annotations

import re

from expegit.report.demo import synthetic_report
from expegit.report.fmt import is_number
from expegit.report.plots import (
    parallel_coordinates,
    progress_plot,
    scatter_plots,
    timeline_plot,
    varying_parameters,
)
from expegit.report.svg import BandScale, LinearScale, LogScale, nice_step, numeric_scale
from orchestra.execution import ExecutionRecord

DATA = synthetic_report(200, hostile=True)
RECORDS = [v.record for v in DATA.executions]
SCORED = [r for r in RECORDS if is_number(r.objective)]


def _count(svg: str, pattern: str) -> int:
    return len(re.findall(pattern, svg))


def test_progress_has_one_point_per_objective_and_a_best_line() -> None:
    plot = progress_plot(RECORDS, "val_loss", "minimize")
    assert plot is not None
    assert _count(plot.svg, r'<circle class="pt ') == len(SCORED) == plot.points
    assert f'data-points="{len(SCORED)}"' in plot.svg
    assert _count(plot.svg, r'class="best-line"') == 1 and _count(plot.svg, "best-ring") == 1
    assert set(map(int, re.findall(r'data-i="(\d+)"', plot.svg))) == {
        i for i, r in enumerate(RECORDS) if is_number(r.objective)}


def test_best_so_far_only_improves() -> None:
    records = [ExecutionRecord(id=f"{k:012x}", campaign="c", commit="a" * 40, command="", parameters={},
                               profile="p", state="finished", ended=f"2024-05-01T08:{k:02d}:00Z", objective=v)
               for k, v in enumerate([5.0, 3.0, 4.0, 1.0, 2.0])]
    plot = progress_plot(records, "loss", "minimize")
    assert plot is not None
    path = re.search(r'class="best-line" d="([^"]+)"', plot.svg)
    assert path is not None and path.group(1).count("V") == 2  # improvements at 3.0 and 1.0
    maximize = progress_plot(records, "score", "maximize")
    assert maximize is not None
    assert re.search(r'class="best-line" d="([^"]+)"', maximize.svg).group(1).count("V") == 0  # type: ignore[union-attr]


def test_scatter_per_varying_parameter_with_bands_for_categories() -> None:
    plots = scatter_plots(RECORDS, "val_loss")
    names = varying_parameters(RECORDS)
    assert "seed" not in names and {"lr", "layers", "opt"} <= set(names)
    assert len(plots) == len(names)
    for plot in plots:
        assert _count(plot.svg, r'<circle class="pt ') == plot.points > 0
    opt = next(p for p in plots if p.title.endswith(" opt"))
    assert 'class="band"' in opt.svg and ">adam<" in opt.svg and ">sgd<" in opt.svg
    lr = next(p for p in plots if p.title.endswith(" lr"))
    assert lr.points == sum(1 for r in SCORED if "lr" in r.parameters)


def test_parallel_coordinates_one_line_per_scored_execution() -> None:
    plot = parallel_coordinates(RECORDS, "val_loss", "minimize")
    assert plot is not None
    complete = [r for r in SCORED if all(k in r.parameters for k in ("lr", "layers"))]
    assert _count(plot.svg, r'<path class="pc q[0-4]"') == plot.points == len(complete)
    one_param = [ExecutionRecord(id=f"{k:012x}", campaign="c", commit="a" * 40, command="",
                                 parameters={"x": k}, profile="p", state="finished", objective=float(k))
                 for k in range(5)]
    assert parallel_coordinates(one_param, "y", "minimize") is None


def test_timeline_one_bar_per_started_execution() -> None:
    plot = timeline_plot(RECORDS, DATA.generated)
    assert plot is not None
    started = [r for r in RECORDS if r.started]
    assert _count(plot.svg, r'<rect class="bar ') == plot.points == len(started)
    assert "node1 · slot 0" in plot.svg


def test_no_plots_without_data() -> None:
    assert progress_plot([], "m", "minimize") is None
    assert scatter_plots([], "m") == []
    assert timeline_plot([], "") is None


def test_scales() -> None:
    assert nice_step(0.23) == 0.5 and nice_step(7) == 10 and nice_step(1) == 1
    assert isinstance(numeric_scale([1e-5, 1e-1], 0, 100), LogScale)
    linear = numeric_scale([1.0, 2.0], 0, 100)
    assert isinstance(linear, LinearScale) and 0 < linear(1.5) < 100
    single = LinearScale(3.0, 3.0, 0, 100)
    assert single(3.0) == 50
    bands = BandScale(["a", "b"], 0, 100)
    assert bands("a") == 25 and 0 < bands.jittered("b", 7) < 100


def test_progress_plot_thins_marks_beyond_the_bound_but_keeps_every_improvement() -> None:
    """Why: 100,000 circles made the overview take tens of seconds to load; the best-so-far line is exact."""
    import re

    from expegit.report import plots as P
    from expegit.report.demo import synthetic_report

    records = [v.record for v in synthetic_report(12_000, include_outputs=False).executions]
    plot = P.progress_plot(records, "val_loss", "minimize")
    assert plot is not None
    drawn = int(re.search(r'data-marks="(\d+)"', plot.svg).group(1))
    scored = sum(1 for r in records if isinstance(r.objective, float))
    assert plot.svg.count("<circle class=\"pt") == drawn and drawn < scored // 2
    assert f'data-points="{scored}"' in plot.svg
    small = P.progress_plot(records[:300], "val_loss", "minimize")
    assert small is not None and "data-marks" not in small.svg


def test_thin_keeps_what_must_stay_and_bounds_the_rest() -> None:
    from expegit.report.plots import thin

    assert thin(10, 20) == list(range(10))
    kept = thin(10_000, 100, keep=[9_999, 5])
    assert len(kept) == 100 and kept == sorted(kept) and {5, 9_999} <= set(kept)
    assert thin(10_000, 100, keep=[9_999, 5]) == kept  # deterministic: two renders draw the same marks


def test_large_plots_draw_a_bounded_number_of_marks_and_say_so() -> None:
    """Why: at 100,000 executions each scatter, parallel-coordinates and timeline plot was 7-9 MB of SVG
    (plots.html 30 MB); each now draws at most its bound and says in data-marks how many it drew of
    data-points executions, keeping the extremes (the best lines, the lowest and highest values)."""
    from expegit.report import plots as P

    records = [v.record for v in synthetic_report(12_000, include_outputs=False).executions]
    scored = [(i, r) for i, r in enumerate(records) if is_number(r.objective)]
    for plot in P.scatter_plots(records, "val_loss"):
        drawn = _count(plot.svg, r'<circle class="pt ')
        assert drawn <= P.MAX_SCATTER_MARKS and f'data-marks="{drawn}"' in plot.svg
        assert plot.points > drawn
        if "lr" in plot.title:  # a numeric axis: the best (lowest) value is still drawn
            best = min(scored, key=lambda ir: ir[1].objective)[0]
            assert f'data-i="{best}"' in plot.svg
    parallel = P.parallel_coordinates(records, "val_loss", "minimize")
    assert parallel is not None
    lines = re.findall(r'<path class="pc [^"]*" d="[^"]*" data-i="(\d+)"', parallel.svg)
    assert len(lines) <= P.MAX_PARALLEL_LINES and f'data-marks="{len(lines)}"' in parallel.svg
    assert str(min(scored, key=lambda ir: ir[1].objective)[0]) in lines[-5:]  # the best line, drawn on top
    timeline = P.timeline_plot(records, DATA.generated)
    assert timeline is not None
    bars = re.findall(r'<rect class="bar [^>]*?(?:data-merged="(\d+)")?/>', timeline.svg)
    assert sum(int(n or 1) for n in bars) == timeline.points  # every execution is in exactly one bar
    assert f'data-marks="{len(bars)}"' in timeline.svg and len(bars) < timeline.points


def test_small_plots_are_not_thinned() -> None:
    from expegit.report import plots as P

    for plot in [*P.scatter_plots(RECORDS, "val_loss"), P.timeline_plot(RECORDS, DATA.generated)]:
        assert plot is not None and "data-marks" not in plot.svg
