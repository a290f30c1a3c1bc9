"""Parameter importance (Optuna's PED-ANOVA) and the report's analysis page, on synthetic records."""
from __future__ import annotations

import random
import re

import pytest

from expegit.importance import ImportanceUnavailable, parameter_importance
from expegit.report import ExecutionView, ReportData
from expegit.report.analysis import analysis_page, errorbar_plots
from expegit.aggregate import configurations
from orchestra.execution import ExecutionRecord

pytest.importorskip("optuna")


def records(n: int, seed: int = 1, repeats: int = 1) -> list[ExecutionRecord]:
    """The objective depends strongly on lr, a little on opt, not at all on noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lr, opt, noise = rng.choice([0.001, 0.01, 0.1, 1.0]), rng.choice(["sgd", "adam"]), rng.randint(0, 9)
        for k in range(repeats):
            value = (abs(lr - 0.01) * 10) + (0.05 if opt == "sgd" else 0) + rng.gauss(0, 0.01)
            out.append(ExecutionRecord(id=f"{i * repeats + k:012x}", campaign="c", commit="a" * 40, command="x",
                                       parameters={"lr": lr, "opt": opt, "noise": noise, "fixed": 1},
                                       profile="local", state="finished", objective=value, repeat=k))
    return out


def test_importance_ranks_the_parameter_that_drives_the_objective() -> None:
    importances = parameter_importance(records(80))
    assert list(importances)[0] == "lr"
    assert "fixed" not in importances  # one value explains nothing
    assert sum(importances.values()) == pytest.approx(1.0)
    assert importances["lr"] > importances["noise"]


def test_importance_refuses_too_few_executions() -> None:
    with pytest.raises(ImportanceUnavailable, match="at least 20"):
        parameter_importance(records(5))


def test_errorbar_plots_draw_one_mark_and_bar_per_configuration() -> None:
    configs = configurations(records(12, repeats=3))
    plots = errorbar_plots(configs, "loss")
    assert {p.title for p in plots} >= {"mean loss against lr", "mean loss against opt"}
    for plot in plots:
        assert plot.svg.count('<circle class="cfg') == plot.points
        assert plot.svg.count('<line class="errbar') == sum(1 for c in configs if c.n > 1 and c.parameters)


def _data(rs: list[ExecutionRecord]) -> ReportData:
    return ReportData(campaign="c", objective={"metric": "loss", "goal": "minimize"}, generated="2026-01-01T00:00:00Z",
                      commits={}, executions=[ExecutionView(record=r) for r in rs])


def test_analysis_page_shows_configurations_and_importance() -> None:
    rs = records(12, repeats=3)
    html = analysis_page(_data(rs), [f"execution.html?id={r.id}" for r in rs])
    assert html.count('<tr class="best"') == 1
    rows = re.findall(r'<tr class="[a-z]*" data-n="(\d+)"', html)
    assert rows and sum(map(int, rows)) == len(rs)
    assert 'data-plot="errorbars"' in html and 'data-plot="importance"' in html


def test_analysis_page_without_repeats_or_enough_executions_says_why() -> None:
    rs = records(5)
    html = analysis_page(_data(rs), ["p"] * len(rs))
    assert "No parameter point has repeats yet" in html and "importance needs at least 20" in html
    assert 'data-plot="errorbars"' not in html
