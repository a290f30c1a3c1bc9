"""The report's analysis page and compare view in headless Chromium (fixtures from test_report_browser):
configurations with intervals, error bars, parameter importance, and two ticked executions compared.
Screenshots go to $ORCHESTRA_ARTIFACTS."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from expegit.report import write_report
from expegit.report.demo import repeats_report
from tests.e2e.test_report_browser import _errors, _shot, _wait, artifacts, driver  # noqa: F401 - fixtures

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(repeats_report(), tmp_path_factory.mktemp("sweep") / "site").parent


def test_analysis_page_configurations_errorbars_importance(driver: Any, sweep: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get((sweep / "analysis.html").as_uri())
    rows = driver.find_elements(By.CSS_SELECTOR, "#configurations tbody tr")
    assert len(rows) == 12  # 3 lr x 2 width x 2 opt; the seed is the repeat
    assert [int(r.get_attribute("data-n")) for r in rows] == [4] * 12
    assert "best" in rows[0].get_attribute("class") and rows[0].find_element(By.CSS_SELECTOR, ".cfg-mark.best")
    means = [float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows]
    assert means == sorted(means)
    overlapping = [r for r in rows[1:] if "overlaps" in r.get_attribute("class")]
    assert 0 < len(overlapping) < 11
    plots = driver.find_elements(By.CSS_SELECTOR, 'svg.plot[data-plot="errorbars"]')
    assert {p.get_attribute("aria-label") for p in plots} == {"mean val_loss against lr", "mean val_loss against width",
                                                              "mean val_loss against opt"}
    for plot in plots:
        assert len(plot.find_elements(By.CSS_SELECTOR, "circle.cfg")) == int(plot.get_attribute("data-points")) == 12
        assert len(plot.find_elements(By.CSS_SELECTOR, "line.errbar")) == 12
        assert plot.size["width"] > 300
    bars = driver.find_elements(By.CSS_SELECTOR, 'svg.plot[data-plot="importance"] rect.imp')
    assert bars[0].get_attribute("data-param") == "lr"  # the parameter that drives the objective
    assert _errors(driver) == []
    _shot(driver, artifacts, "analysis")


def test_tick_two_executions_then_compare(driver: Any, sweep: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get((sweep / "executions.html").as_uri())
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#executions tbody tr")) == 48)
    button = driver.find_element(By.ID, "compare")
    assert not button.is_enabled()
    boxes = driver.find_elements(By.CSS_SELECTOR, "#executions input.pick")
    ids = [boxes[0].get_attribute("data-id"), boxes[1].get_attribute("data-id")]
    boxes[0].click()
    assert driver.current_url.endswith("executions.html") or "executions.html" in driver.current_url  # no navigation
    driver.find_elements(By.CSS_SELECTOR, "#executions input.pick")[1].click()
    _wait(driver, lambda d: d.find_element(By.ID, "compare").is_enabled())
    assert driver.find_element(By.ID, "compare").text == "Compare (2/2)"
    _shot(driver, artifacts, "executions_ticked", full=False)
    driver.find_element(By.ID, "compare").click()
    _wait(driver, lambda d: "compare.html" in d.current_url and d.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr"))
    assert driver.find_element(By.ID, "compare-a").text == ids[0]
    assert driver.find_element(By.ID, "compare-b").text == ids[1]
    rows = {r.find_element(By.TAG_NAME, "th").text: r for r in driver.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr")}
    assert rows["param seed"].get_attribute("data-differs") == "1"  # repeats 0 and 1 of one point
    assert rows["param lr"].get_attribute("data-differs") == "0"
    assert rows["env packages_blob"].get_attribute("data-differs") == "1"
    assert rows["env driver"].get_attribute("data-differs") == "0"
    delta = rows["val_loss (objective)"].find_elements(By.TAG_NAME, "td")[2].text
    assert delta and delta[0] in "+-"
    assert "facts differ" in driver.find_element(By.ID, "compare-what").text
    assert _errors(driver) == []
    _shot(driver, artifacts, "compare")

    # packages, as `expegit compare` names them: the demo's two lists differ in torch's version, tqdm left, mylib came
    section = driver.find_element(By.ID, "compare-packages")
    assert section.is_displayed()
    groups = {g.get_attribute("data-group"): [li.text for li in g.find_elements(By.TAG_NAME, "li")]
              for g in section.find_elements(By.CSS_SELECTOR, ".pkg-group")}
    assert groups == {"changed": ["torch 2.3.0 \u2192 2.4.1"], "added": ["mylib file:///src/<b>mylib</b>"],
                      "removed": ["tqdm 4.66.1"]}
    assert "1 added, 1 removed, 1 changed" in driver.find_element(By.ID, "compare-packages-what").text
    assert not section.find_elements(By.CSS_SELECTOR, "b")  # the markup in a direct reference stays text
    driver.execute_script("arguments[0].scrollIntoView()", section)  # the groups, below the facts table
    driver.save_screenshot(str(artifacts / "report_compare_packages.png"))


def test_compare_view_same_environment_names_no_package_differences(driver: Any, sweep: Path) -> None:
    from selenium.webdriver.common.by import By

    ids = [v.record.id for v in repeats_report().executions[:2]]
    driver.get("about:blank")  # a new hash on the same page would not load it again
    driver.get((sweep / "compare.html").as_uri() + f"#a={ids[0]}&b={ids[0]}")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr"))
    assert "the same packages" in driver.find_element(By.ID, "compare-packages-what").text
    assert not driver.find_elements(By.CSS_SELECTOR, "#compare-packages .pkg-group")
    assert _errors(driver) == []
