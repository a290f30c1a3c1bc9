"""Learning curves (expegit/report/curves.py): pure SVG, and their place in the rendered site."""
from __future__ import annotations

import re
from pathlib import Path

from expegit.report import CommitInfo, ExecutionView, ReportData, write_report
from expegit.report.curves import curve_keys, downsample, execution_curve_svg, learning_curves_plot, series
from expegit.report.pages import learning_curves
from orchestra.execution import ExecutionRecord

SHA = "b" * 40


def _curve(rate: float, steps: int = 20) -> list[dict]:
    return [{"step": s * 10, "loss": 1.0 / (1 + rate * s), "acc": 1 - 1.0 / (1 + rate * s)} for s in range(steps)]


def test_keys_prefer_step_and_the_objective() -> None:
    curves = [(0, _curve(0.5)), (1, _curve(1.0))]
    assert curve_keys(curves) == ("step", "loss")
    assert curve_keys(curves, prefer="acc") == ("step", "acc")
    assert curve_keys([(0, [{"loss": 1.0}, {"loss": 0.5}])]) == (None, "loss")
    assert curve_keys([(0, [{"phase": "x"}])]) == (None, None)
    assert series([{"loss": 1.0}, {"note": "x"}, {"loss": 0.5}], None, "loss") == [(0.0, 1.0), (2.0, 0.5)]


def test_downsample_keeps_the_ends() -> None:
    pairs = [(float(i), float(i)) for i in range(1000)]
    out = downsample(pairs, 50)
    assert len(out) == 50 and out[0] == pairs[0] and out[-1] == pairs[-1]


def test_one_line_per_execution_and_the_best_highlighted() -> None:
    curves = [(3, _curve(0.2)), (5, _curve(2.0)), (9, _curve(0.7))]
    plot = learning_curves_plot(curves)
    assert plot is not None
    lines = re.findall(r'<polyline class="([^"]+)" data-i="(\d+)"', plot.svg)
    assert len(lines) == 3 and plot.points == 3
    assert [i for cls, i in lines if "best" in cls] == ["5"]  # lowest final loss
    assert lines[-1] == ("curve best", "5")  # drawn last: never hidden under the others
    # by the objective when known (maximize: the highest wins even if its curve ends higher)
    plot = learning_curves_plot(curves, goal="maximize", objective={3: 0.9, 5: 0.1, 9: 0.5})
    assert plot is not None and 'class="curve best" data-i="3"' in plot.svg
    assert learning_curves_plot([(0, [{"phase": "warmup"}])]) is None


def test_hostile_keys_are_escaped() -> None:
    plot = learning_curves_plot([(0, [{"<script>": 1.0}, {"<script>": 0.5}])])
    assert plot is not None and "<script>" not in plot.svg and "&lt;script&gt;" in plot.svg
    doc = execution_curve_svg([{"x<y": 1.0}, {"x<y": 2.0}])
    assert doc is not None and "x<y" not in doc


def _view(exid: str, objective: float, curve: list[dict]) -> ExecutionView:
    record = ExecutionRecord(id=exid, campaign="c", commit=SHA, command="run", parameters={"rate": objective},
                             profile="local", state="finished", started="2024-05-01T08:00:00Z",
                             ended="2024-05-01T08:01:00Z", objective=objective)
    return ExecutionView(record, "", "", {}, [], curve=curve)


def test_site_has_curves_on_the_plots_page_and_each_execution_page(tmp_path: Path) -> None:
    views = [_view(f"{k:012x}", 1.0 / (1 + r), _curve(r)) for k, r in enumerate((0.3, 1.5, 0.8))]
    views.append(_view("0000000000ff", 0.9, []))  # reported no metrics: no file, no line
    data = ReportData("c", {"metric": "loss", "goal": "minimize"}, "2024-05-02T00:00:00Z",
                      {SHA: CommitInfo(SHA, "s", "me", "2024-04-30T00:00:00Z")}, views)
    plot = learning_curves(data)
    assert plot is not None and plot.points == 3 and 'class="curve best" data-i="1"' in plot.svg
    site = write_report(data, tmp_path / "site").parent
    assert 'data-plot="curves"' in (site / "plots.html").read_text()
    curves = sorted(p.name for p in (site / "curves").iterdir())
    assert curves == [f"{k:012x}.svg" for k in range(3)]
    assert (site / "curves" / "000000000001.svg").read_text().count("<polyline") == 2  # loss and acc
    shard = (site / "details" / "00.js").read_text()
    assert '"curve": "curves/000000000001.svg"' in shard or '"curve":"curves/000000000001.svg"' in shard
