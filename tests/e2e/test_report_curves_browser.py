"""Learning curves in headless Chromium (fixtures from test_report_browser): the plots page draws one line
per execution with the best highlighted, and an execution's page shows its own curve image. Screenshots
go to $ORCHESTRA_ARTIFACTS."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from expegit.report import CommitInfo, ExecutionView, ReportData, write_report
from orchestra.execution import ExecutionRecord
from tests.e2e.test_report_browser import _errors, _shot, _wait, artifacts, driver  # noqa: F401 - fixtures

SHA = "c" * 40
RATES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def _view(k: int, rate: float) -> ExecutionView:
    curve = [{"step": s, "loss": 2.0 / (1 + rate * s) + 0.05, "val_acc": 1 - 1.0 / (1 + rate * s)} for s in range(0, 200, 4)]
    record = ExecutionRecord(id=f"{k:012x}", campaign="curves", commit=SHA, command="python train.py",
                             parameters={"rate": rate}, profile="local", state="finished",
                             started=f"2024-05-01T08:0{k}:00Z", ended=f"2024-05-01T08:0{k}:30Z",
                             duration=30.0, objective=curve[-1]["loss"])
    return ExecutionView(record, "", "", {}, [], curve=curve)


@pytest.fixture(scope="module")
def curves_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = ReportData("curves", {"metric": "loss", "goal": "minimize"}, "2024-05-02T00:00:00Z",
                      {SHA: CommitInfo(SHA, "train", "me", "2024-04-30T00:00:00Z")},
                      [_view(k, r) for k, r in enumerate(RATES)])
    return write_report(data, tmp_path_factory.mktemp("curves") / "site").parent


def test_learning_curves_render_in_the_browser(driver: Any, curves_site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get((curves_site / "plots.html").as_uri())
    plot = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="curves"]')
    lines = plot.find_elements(By.CSS_SELECTOR, "polyline.curve")
    assert len(lines) == len(RATES) == int(plot.get_attribute("data-points"))
    best = plot.find_elements(By.CSS_SELECTOR, "polyline.curve.best")
    assert len(best) == 1 and best[0].get_attribute("data-i") == str(len(RATES) - 1)  # fastest decay: lowest loss
    assert plot.size["width"] > 300 and plot.size["height"] > 100
    assert best[0].value_of_css_property("stroke-width") not in ("", lines[0].value_of_css_property("stroke-width"))
    assert _errors(driver) == []
    _shot(driver, artifacts, "learning_curves")

    driver.get((curves_site / "execution.html").as_uri() + "?id=000000000002")
    img = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#ex-curve-card:not([hidden]) img.curve"))
    _wait(driver, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    assert img.size["width"] > 300
    assert _errors(driver) == []
    _shot(driver, artifacts, "execution_learning_curve")
