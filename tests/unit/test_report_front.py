"""The report's Pareto front and hypervolume plots: what is drawn, highlighted and left out."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from expegit.report import CommitInfo, ExecutionView, ReportData, write_report
from expegit.report.front import front_plot, hypervolume_plot, hypervolume_series, objective_vectors
from orchestra.execution import ExecutionRecord

SHA = "a" * 40
OBJECTIVES = [{"metric": "loss", "goal": "minimize"}, {"metric": "seconds", "goal": "minimize"}]


def _record(k: int, objectives: dict | None, state: str = "finished") -> ExecutionRecord:
    return ExecutionRecord(id=f"{k:012x}", campaign="c", commit=SHA, command="run", parameters={"k": k},
                           profile="local", state=state, started=f"2024-05-01T08:{k:02d}:00Z",
                           ended=f"2024-05-01T08:{k:02d}:30Z",
                           objective=None if objectives is None else objectives.get("loss"), objectives=objectives)


# (loss, seconds): 0, 1 and 3 are the front; 2 is dominated by 1; 4 reported no seconds; 5 failed.
VALUES = [(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (4.0, 1.0)]
RECORDS = [_record(k, {"loss": a, "seconds": b}) for k, (a, b) in enumerate(VALUES)]
RECORDS += [_record(4, {"loss": 0.5}), _record(5, None, state="failed")]


def _front_marks(svg: str) -> set[int]:
    return {int(i) for i in re.findall(r'<circle class="pt [^"]* front"[^>]*data-i="(\d+)"', svg)}


def test_front_is_highlighted_and_incomplete_executions_are_left_out() -> None:
    assert [i for i, _ in objective_vectors(RECORDS, OBJECTIVES)] == [0, 1, 2, 3]
    plot = front_plot(RECORDS, OBJECTIVES)
    assert plot is not None and plot.points == 4 and 'data-plot="front"' in plot.svg
    assert _front_marks(plot.svg) == {0, 1, 3}
    assert plot.svg.count("<circle") == 4 and 'class="front-line"' in plot.svg
    assert "loss (min)" in plot.svg and "seconds (min)" in plot.svg


def test_a_maximised_objective_changes_the_front() -> None:
    objectives = [OBJECTIVES[0], {"metric": "seconds", "goal": "maximize"}]
    plot = front_plot(RECORDS, objectives)
    assert plot is not None and _front_marks(plot.svg) == {0}  # lowest loss and most seconds at once


def test_hypervolume_only_grows_and_marks_the_executions_that_grew_it() -> None:
    series = hypervolume_series(RECORDS, OBJECTIVES)
    assert [n for n, _, _ in series] == [1, 2, 3, 4]
    values = [v for _, _, v in series]
    assert values == sorted(values) and values[0] > 0
    assert values[2] == pytest.approx(values[1])  # execution 2 is dominated: nothing gained
    plot = hypervolume_plot(RECORDS, OBJECTIVES)
    assert plot is not None and 'data-plot="hypervolume"' in plot.svg
    assert set(map(int, re.findall(r'data-i="(\d+)"', plot.svg))) == {0, 1, 3}


def test_nothing_drawn_for_one_objective_or_no_values() -> None:
    assert front_plot(RECORDS, OBJECTIVES[:1]) is None and hypervolume_plot(RECORDS, OBJECTIVES[:1]) is None
    assert front_plot(RECORDS[4:], OBJECTIVES) is None and hypervolume_plot(RECORDS[4:], OBJECTIVES) is None


def test_hostile_metric_names_are_escaped() -> None:
    objectives = [{"metric": "<b>", "goal": "minimize"}, {"metric": "t", "goal": "minimize"}]
    records = [_record(k, {"<b>": float(k), "t": float(3 - k)}) for k in range(3)]
    plot = front_plot(records, objectives)
    assert plot is not None and "<b>" not in plot.svg and "&lt;b&gt;" in plot.svg


def test_the_plots_page_shows_both_for_a_two_objective_campaign(tmp_path: Path) -> None:
    views = [ExecutionView(r) for r in RECORDS]
    commits = {SHA: CommitInfo(SHA, "s", "me", "2024-04-30T00:00:00Z")}
    data = ReportData("c", OBJECTIVES[0], "2024-05-02T00:00:00Z", commits, views, objectives=OBJECTIVES)
    html = (write_report(data, tmp_path / "site").parent / "plots.html").read_text()
    assert 'data-plot="front"' in html and 'data-plot="hypervolume"' in html
    single = ReportData("c", OBJECTIVES[0], "2024-05-02T00:00:00Z", commits, views)
    html = (write_report(single, tmp_path / "one").parent / "plots.html").read_text()
    assert 'data-plot="front"' not in html


def test_manifest_facts_read_a_list_of_objectives() -> None:
    from expegit.report_build import manifest_facts

    facts = manifest_facts("objective:\n  - {metric: loss, from: m.json}\n  - {metric: acc, goal: maximize}\n")
    assert facts.objective == {"metric": "loss", "goal": "minimize"} and facts.metrics_file == "m.json"
    assert facts.objectives == ({"metric": "loss", "goal": "minimize"}, {"metric": "acc", "goal": "maximize"})
    assert manifest_facts("objective: {metric: loss}\n").objectives == ()


def test_three_objectives_highlight_the_full_front_without_a_staircase() -> None:
    objectives = [*OBJECTIVES, {"metric": "size", "goal": "minimize"}]
    # 2 is dominated in (loss, seconds) by 1 but smallest in size: on the three-objective front.
    records = [_record(k, {"loss": a, "seconds": b, "size": 3.0 - (k == 2) * 2}) for k, (a, b) in enumerate(VALUES)]
    plot = front_plot(records, objectives)
    assert plot is not None and _front_marks(plot.svg) == {0, 1, 2, 3} and "front-line" not in plot.svg
    assert hypervolume_plot(records, objectives) is not None
