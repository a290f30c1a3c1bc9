"""The report's table at 100,000 executions in headless Chromium: filter and sort stay correct at scale.

What this checks is correctness against the data (the first page after a sort is the true first 50, the
count after a filter is the true count); how long the page took (its own ``data-ms`` figure) is written
to $ORCHESTRA_ARTIFACTS/report_browser_scale.json for a human, never asserted: speed is measured in
bench/report_browser.py. ORCHESTRA_BROWSER_SCALE_N sets the size (default 100000).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from expegit.report import write_report
from expegit.report.demo import synthetic_report

from .test_report_browser import _errors, _wait, artifacts, driver  # noqa: F401  (shared fixtures)

N = int(os.environ.get("ORCHESTRA_BROWSER_SCALE_N", "100000"))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    data = synthetic_report(N, include_outputs=False)
    site = write_report(data, tmp_path_factory.mktemp("big") / "site").parent
    return site, data


def _ms(driver: Any) -> float:
    return float(driver.find_element("id", "executions").get_attribute("data-ms"))


def _ids(driver: Any) -> list[str]:
    return driver.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#executions tbody td.c-id'),"
        " function (td) { return td.textContent; });")


def test_table_filters_and_sorts_the_whole_campaign(driver: Any, big: tuple[Path, Any], artifacts: Path) -> None:
    site, data = big
    records = [v.record for v in data.executions]
    timings: dict[str, float] = {}
    driver.set_page_load_timeout(600)  # a loaded CI machine parses tens of MB slowly; speed is bench's job
    driver.get((site / "index.html").as_uri())
    timings["index_load_ms"] = driver.execute_script(
        "var t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;")
    driver.get((site / "executions.html").as_uri())
    _wait(driver, lambda d: d.find_element("id", "executions").get_attribute("data-ms"), timeout=60)
    assert driver.find_element("id", "count").text == f"{N} executions"
    timings["rows_build_ms"] = float(driver.find_element("id", "executions").get_attribute("data-rows-ms"))

    # Sort by objective, ascending: missing values last, ties in campaign order (the old comparator's rule).
    order = sorted(range(N), key=lambda i: (records[i].objective is None or records[i].objective != records[i].objective,
                                            records[i].objective if records[i].objective == records[i].objective
                                            and records[i].objective is not None else 0.0, i))
    driver.execute_script("document.querySelector('th[data-key=\"objective\"] button').click()")
    assert _ids(driver) == [str(records[i].id) for i in order[:50]]
    timings["sort_objective_ms"] = _ms(driver)
    driver.execute_script("document.querySelector('th[data-key=\"objective\"] button').click()")
    scored = [i for i in order if records[i].objective is not None and records[i].objective == records[i].objective]
    top = sorted(scored, key=lambda i: (-records[i].objective, i))[:50]  # type: ignore[operator]
    assert _ids(driver) == [str(records[i].id) for i in top]
    timings["sort_objective_desc_ms"] = _ms(driver)

    # Sort by id (a string column), then filter by state and by text on top of the sort.
    driver.execute_script("document.querySelector('th[data-key=\"id\"] button').click()")
    assert _ids(driver) == sorted(str(r.id) for r in records)[:50]
    timings["sort_id_ms"] = _ms(driver)
    driver.execute_script("var s = document.getElementById('state-filter'); s.value = 'failed';"
                          "s.dispatchEvent(new Event('change'));")
    failed = sorted(str(r.id) for r in records if r.state == "failed")
    assert driver.find_element("id", "count").text == f"{len(failed)} of {N} executions"
    assert _ids(driver) == failed[:50]
    timings["filter_state_ms"] = _ms(driver)
    driver.execute_script("var s = document.getElementById('state-filter'); s.value = '';"
                          "s.dispatchEvent(new Event('change'));"
                          "var f = document.getElementById('filter'); f.value = 'opt=adam';"
                          "f.dispatchEvent(new Event('input'));")
    adam = sorted(str(r.id) for r in records if isinstance(r.parameters, dict) and r.parameters.get("opt") == "adam")
    _wait(driver, lambda d: d.find_element("id", "count").text == f"{len(adam)} of {N} executions", timeout=30)
    assert _ids(driver) == adam[:50]
    timings["filter_text_ms"] = _ms(driver)
    assert _errors(driver) == []
    (artifacts / "report_browser_scale.json").write_text(json.dumps({"executions": N, **timings}, indent=1) + "\n")
