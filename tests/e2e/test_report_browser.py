"""The report in a real browser: headless Chromium opens the site from file://, as a user would.

What only a browser can tell: the scripts run under the page's content security policy without console
errors, the table sorts and filters, plots render, and hostile text from executions stays text (no alert
ever opens). Screenshots go to $ORCHESTRA_ARTIFACTS (default tests/artifacts) for a human to look at.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expegit.report import parse_report_data, write_report
from expegit.report.demo import HOSTILE, grid_report, synthetic_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000"]


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found or not executable"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("ORCHESTRA_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():  # screenshots are build products: keep them out of commits
        ignore.write_text("*\n")
    return path


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true and the browser test cannot run: {missing}")
        pytest.skip(f"headless Chromium unavailable: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="orchestra-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = synthetic_report(300, hostile=True)
    return write_report(data, tmp_path_factory.mktemp("report") / "site").parent


def _errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def _assert_no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    pytest.fail(f"hostile text ran as script: alert({text!r}) opened")


def _shot(driver: Any, artifacts: Path, name: str, full: bool = True) -> None:
    driver.execute_script("window.scrollTo(0, 0)")
    if full:  # grow the window to the page so the screenshot shows all of it
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(int(height) + 40, 600), 6000))
    driver.save_screenshot(str(artifacts / f"report_{name}.png"))
    driver.set_window_size(1400, 1000)


def _wait(driver: Any, condition: Any, timeout: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_overview_loads_without_console_errors(driver: Any, site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get((site / "index.html").as_uri())
    assert "mnist-lr" in driver.title
    assert driver.find_element(By.CSS_SELECTOR, ".hero h1").text == "mnist-lr"
    plot = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="progress"]')
    circles = plot.find_elements(By.CSS_SELECTOR, "circle.pt")
    assert len(circles) == int(plot.get_attribute("data-points")) > 0
    assert plot.size["width"] > 300 and plot.size["height"] > 100
    cards = driver.find_elements(By.CSS_SELECTOR, ".cards .card")
    assert len(cards) == 3
    assert "Add Adam optimizer" in driver.page_source  # commit subjects are listed
    _assert_no_alert(driver)
    assert _errors(driver) == []
    _shot(driver, artifacts, "overview")


def _column(driver: Any, key: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"#executions tbody td.c-{key}")]


def test_table_sorts_filters_and_paginates(driver: Any, site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get((site / "executions.html").as_uri())
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#executions tbody tr")) == 50)
    assert "302 executions" in driver.find_element(By.ID, "count").text

    header = driver.find_element(By.CSS_SELECTOR, 'th[data-key="objective"] button')
    header.click()
    values = [float(v) for v in _column(driver, "objective") if v]
    assert values and values == sorted(values)
    assert driver.find_element(By.CSS_SELECTOR, 'th[data-key="objective"]').get_attribute("aria-sort") == "ascending"
    header.click()
    values = [float(v) for v in _column(driver, "objective") if v]
    assert values == sorted(values, reverse=True)

    box = driver.find_element(By.ID, "filter")
    box.send_keys("opt=adam")
    _wait(driver, lambda d: "of 302" in d.find_element(By.ID, "count").text)
    params = _column(driver, "parameters")
    assert params and all("opt=adam" in p for p in params)

    box.clear()
    box.send_keys(" ")  # clear() sends no input event; a blank filter shows everything again
    _wait(driver, lambda d: d.find_element(By.ID, "count").text == "302 executions")
    Select(driver.find_element(By.ID, "state-filter")).select_by_value("failed")
    _wait(driver, lambda d: "of 302" in d.find_element(By.ID, "count").text)
    states = _column(driver, "state")
    assert states and set(states) == {"failed"}
    assert "state=failed" in driver.current_url  # the view survives back-navigation

    Select(driver.find_element(By.ID, "state-filter")).select_by_value("")
    driver.find_element(By.ID, "next").click()
    assert driver.find_element(By.ID, "page-info").text.startswith("51–100")
    _assert_no_alert(driver)
    assert _errors(driver) == []
    driver.find_element(By.ID, "prev").click()
    _shot(driver, artifacts, "executions")


def test_plots_render_with_tooltips(driver: Any, site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.get((site / "plots.html").as_uri())
    kinds = {svg.get_attribute("data-plot") for svg in driver.find_elements(By.CSS_SELECTOR, "svg.plot")}
    assert {"progress", "scatter", "parallel", "timeline"} <= kinds
    for svg in driver.find_elements(By.CSS_SELECTOR, 'svg.plot[data-plot="scatter"]'):
        assert len(svg.find_elements(By.CSS_SELECTOR, "circle.pt")) == int(svg.get_attribute("data-points"))
    parallel = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="parallel"]')
    assert len(parallel.find_elements(By.CSS_SELECTOR, "path.pc")) == int(parallel.get_attribute("data-marks"))
    timeline = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="timeline"]')
    assert len(timeline.find_elements(By.CSS_SELECTOR, "rect.bar")) == int(timeline.get_attribute("data-points"))

    point = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="progress"] circle.pt')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", point)
    ActionChains(driver).move_to_element(point).perform()
    tip = driver.find_element(By.ID, "tooltip")
    _wait(driver, lambda d: tip.is_displayed())
    assert "val_loss = " in tip.text
    _shot(driver, artifacts, "plots")
    assert _errors(driver) == []


def test_hostile_execution_shows_text_from_table_to_page(driver: Any, site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get((site / "executions.html").as_uri())
    box = driver.find_element(By.ID, "filter")
    box.send_keys("alert(1)")
    _wait(driver, lambda d: "2 of 302" in d.find_element(By.ID, "count").text)
    _assert_no_alert(driver)
    assert driver.find_elements(By.CSS_SELECTOR, "#executions tbody script, #executions tbody img") == []
    assert "<script>alert(1)</script>" in _column(driver, "parameters")[0]
    assert _errors(driver) == []

    driver.find_element(By.CSS_SELECTOR, "#executions tbody td.c-node").click()  # a row opens its page
    _wait(driver, lambda d: "execution.html?id=" in d.current_url)
    body = driver.find_element(By.ID, "ex-body")
    _wait(driver, lambda d: body.is_displayed())
    _assert_no_alert(driver)
    hostile_id = driver.find_element(By.ID, "ex-id").text
    assert hostile_id in {r["id"] for r in parse_report_data(site / "index.html") if r["author"] == HOSTILE}
    assert driver.find_element(By.ID, "ex-stdout").text.strip() == HOSTILE
    assert driver.find_element(By.ID, "ex-command").text == f"echo '{HOSTILE}'"
    names = [th.text for th in driver.find_elements(By.CSS_SELECTOR, ".params-table th")]
    assert HOSTILE in names
    assert driver.find_element(By.ID, "ex-error").text == HOSTILE
    outputs = driver.find_element(By.ID, "ex-outputs").text
    assert "unsafe path, not copied" in outputs and "../../escape.txt" in outputs
    assert driver.find_elements(By.CSS_SELECTOR, "main script, main iframe, main object") == []
    # The SVG output is shown as an image (its script cannot run there) and offered as a download.
    images = driver.find_elements(By.CSS_SELECTOR, ".output-image img")
    assert images and all(img.get_attribute("naturalWidth") != "0" for img in images)
    svg_link = driver.find_element(By.XPATH, "//a[text()='plot.svg']")
    assert svg_link.get_attribute("download") is not None
    _assert_no_alert(driver)
    assert _errors(driver) == []
    _shot(driver, artifacts, "execution_hostile")


def test_execution_page_shows_images_and_navigates(driver: Any, site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    first = parse_report_data(site)[0]  # index 0 of the synthetic campaign carries a PNG
    page = (site / "execution.html").as_uri()
    driver.get(f"{page}?id={first['id']}")
    _wait(driver, lambda d: d.find_element(By.ID, "ex-body").is_displayed())
    img = driver.find_element(By.CSS_SELECTOR, ".output-image img")
    _wait(driver, lambda d: img.get_attribute("complete") == "true")
    assert int(img.get_attribute("naturalWidth")) == 48
    assert driver.find_element(By.ID, "ex-id").text == first["id"]
    driver.find_element(By.ID, "ex-next").click()
    _wait(driver, lambda d: d.find_element(By.ID, "ex-id").text not in ("…", first["id"]))
    assert _errors(driver) == []
    driver.get(f"{page}?id={first['id']}")
    _wait(driver, lambda d: d.find_element(By.ID, "ex-body").is_displayed())
    _shot(driver, artifacts, "execution")
    driver.get(f"{page}?id=zz0000000000")  # no such shard: the page says so instead of staying blank
    _wait(driver, lambda d: d.find_element(By.ID, "ex-missing").is_displayed())
    driver.get_log("browser")  # the missing shard logs a failed load by design


@pytest.fixture(scope="module")
def grid_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid with 3 identical repeats per point on Slurm nodes, two metrics and whole float values."""
    return write_report(grid_report(3), tmp_path_factory.mktemp("grid") / "site").parent


_VISIBLE_POINT_ON_LINE = """
const svg = arguments[0], top = svg.getBoundingClientRect();
for (const path of Array.from(svg.querySelectorAll("path.pc")).reverse()) {
  const ctm = path.getScreenCTM(), length = path.getTotalLength();
  for (let f = 0.05; f < 1; f += 0.05) {
    const p = path.getPointAtLength(length * f);
    const x = ctm.a * p.x + ctm.c * p.y + ctm.e, y = ctm.b * p.x + ctm.d * p.y + ctm.f;
    if (document.elementFromPoint(x, y) === path) return {x: x + window.scrollX, y: y + window.scrollY};
  }
}
return null;
"""


def _headers(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#executions thead th")]


def test_table_shows_node_profile_and_every_metric(driver: Any, grid_site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get((grid_site / "executions.html").as_uri())
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#executions tbody tr")) == 50)
    headers = _headers(driver)
    assert {"val_loss", "val_acc", "node", "profile"} <= set(headers)
    assert "host" not in headers
    nodes = _column(driver, "node")
    assert nodes and all(n.split(" · ")[0] in {"c01", "c02", "c03", "c04"} for n in nodes)  # not login.cluster
    cell = driver.find_element(By.CSS_SELECTOR, "#executions tbody td.c-node")
    assert "login.cluster" in cell.get_attribute("title")  # the host stays available
    assert set(_column(driver, "profile")) == {"cluster"}
    assert any("scale=1.0" in p for p in _column(driver, "parameters"))  # a declared float keeps its point
    accs = [float(v) for v in _column(driver, "metric") if v]
    assert len(accs) == 50
    driver.find_element(By.CSS_SELECTOR, 'th[data-metric="val_acc"] button').click()
    accs = [float(v) for v in _column(driver, "metric")]
    assert accs == sorted(accs)
    box = driver.find_element(By.ID, "filter")
    box.send_keys("c03")
    _wait(driver, lambda d: "of 54" in d.find_element(By.ID, "count").text)
    assert {n.split(" · ")[0] for n in _column(driver, "node")} == {"c03"}
    _assert_no_alert(driver)
    assert _errors(driver) == []
    _shot(driver, artifacts, "grid_executions")


def test_plots_switch_metric_and_bundle_identical_lines(driver: Any, grid_site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get((grid_site / "plots.html").as_uri())
    picker = driver.find_element(By.ID, "metric-picker")
    _wait(driver, lambda d: picker.is_displayed())
    groups = driver.find_elements(By.CSS_SELECTOR, ".metric-group")
    assert [g.get_attribute("data-metric") for g in groups] == ["val_loss", "val_acc"]
    assert groups[0].is_displayed() and not groups[1].is_displayed()

    parallel = groups[0].find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="parallel"]')
    lines = parallel.find_elements(By.CSS_SELECTOR, "path.pc")
    assert int(parallel.get_attribute("data-points")) == 54  # every execution is represented...
    assert len(lines) == int(parallel.get_attribute("data-marks")) == 18  # ...by one line per grid point
    assert {line.get_attribute("data-n") for line in lines} == {"3"}
    wide = lines[-1]
    assert float(wide.value_of_css_property("stroke-width").rstrip("px")) > 1.5  # a bundle is drawn thicker
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", parallel)
    # Hover a point of a line that is on top there (lines cross: a bounding box's centre may be another's).
    spot = driver.execute_script(_VISIBLE_POINT_ON_LINE, parallel)
    assert spot is not None
    box = parallel.rect
    ActionChains(driver).move_to_element_with_offset(
        parallel, int(spot["x"] - box["x"] - box["width"] / 2), int(spot["y"] - box["y"] - box["height"] / 2)).perform()
    tip = driver.find_element(By.ID, "tooltip")
    _wait(driver, lambda d: tip.is_displayed())
    assert "3 identical executions" in tip.text and "val_acc = " in tip.text

    Select(picker).select_by_value("val_acc")
    _wait(driver, lambda d: groups[1].is_displayed() and not groups[0].is_displayed())
    assert "metric=val_acc" in driver.current_url
    labels = [t.text for t in groups[1].find_elements(By.CSS_SELECTOR, 'svg.plot[data-plot="scatter"] text.label')]
    assert "val_acc" in labels
    timeline = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="timeline"]')
    lanes = [t.text for t in timeline.find_elements(By.CSS_SELECTOR, ".lanes text")]
    assert lanes and all(lane.startswith("c0") for lane in lanes)  # lanes per node, not per login host
    _assert_no_alert(driver)
    assert _errors(driver) == []
    _shot(driver, artifacts, "grid_plots")


def test_execution_page_labels_float_parameters_float(driver: Any, grid_site: Path) -> None:
    from selenium.webdriver.common.by import By

    record = next(r for r in parse_report_data(grid_site) if r["parameters"]["scale"] == 1.0)
    driver.get(f"{(grid_site / 'execution.html').as_uri()}?id={record['id']}")
    _wait(driver, lambda d: d.find_element(By.ID, "ex-body").is_displayed())
    rows = {tr.find_element(By.TAG_NAME, "th").text: [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, ".params-table tr")}
    assert rows["scale"] == ["1.0", "float"]
    assert rows["layers"][1] == "int" and rows["opt"][1] == "str"
    summary = driver.find_element(By.ID, "ex-summary").text
    assert "val_acc" in summary and "c0" in summary and "login.cluster" in summary
    assert _errors(driver) == []


@pytest.fixture(scope="module")
def gpu_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from expegit.report.demo import gpu_report

    return write_report(gpu_report(24), tmp_path_factory.mktemp("gpu-report") / "site").parent


def test_gpu_lanes_render_with_fractions_stacked_and_the_overview_says_how_busy(
        driver: Any, gpu_site: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.get((gpu_site / "plots.html").as_uri())
    lanes_svg = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="gpu-lanes"]')
    lanes = [t.text for t in lanes_svg.find_elements(By.CSS_SELECTOR, ".lanes text")]
    assert lanes == [f"gpu{n} · GPU {g}" for n in (1, 2) for g in range(4)]  # every device of both nodes
    bars = lanes_svg.find_elements(By.CSS_SELECTOR, "rect.bar")
    assert len(bars) == int(lanes_svg.get_attribute("data-marks"))
    fractions = lanes_svg.find_elements(By.CSS_SELECTOR, "rect.bar.frac")
    assert fractions and all(0 < float(b.get_attribute("data-share")) < 1 for b in fractions)
    whole_height = max(b.size["height"] for b in bars)
    quarter = next(b for b in fractions if b.get_attribute("data-share") == "0.25")
    assert 0 < quarter.size["height"] < whole_height / 2  # a strip, not a full bar: drawn, and visibly a share
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", quarter)
    ActionChains(driver).move_to_element(quarter).perform()
    tip = driver.find_element(By.ID, "tooltip")
    _wait(driver, lambda d: tip.is_displayed())  # the bars carry data-i: the site's tooltips know them
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", lanes_svg)
    driver.save_screenshot(str(artifacts / "report_gpu_lanes.png"))
    assert _errors(driver) == []

    driver.get((gpu_site / "index.html").as_uri())
    card = driver.find_element(By.CSS_SELECTOR, ".card.busy")
    assert "busy GPU-hours of" in card.text and "allocated" in card.text and "8 devices" in card.text
    _shot(driver, artifacts, "gpu_overview")
    assert _errors(driver) == []


def test_execution_page_lists_the_cores_and_gpus_it_got(driver: Any, gpu_site: Path) -> None:
    from selenium.webdriver.common.by import By

    quarter = next(r for r in parse_report_data(gpu_site) if r.get("gpu_share") == 0.25)
    driver.get(f"{(gpu_site / 'execution.html').as_uri()}?id={quarter['id']}")
    _wait(driver, lambda d: d.find_element(By.ID, "ex-body").is_displayed())
    summary = driver.find_element(By.ID, "ex-summary").text
    assert f"cores\n{quarter['cores']}" in summary
    assert f"GPUs\n{quarter['gpus']} (0.25 of it)" in summary
    assert _errors(driver) == []


@pytest.fixture(scope="module")
def pareto_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-objective campaign: `parasearch run` (random, 8 points) then `expegit report`."""
    from tests.e2e.test_parasearch_multiobjective import OBJECTIVES, manifest
    from tests.helpers import cli, make_campaign

    root = make_campaign(tmp_path_factory.mktemp("pareto") / "c", manifest("random", 8), {"f.py": OBJECTIVES})
    run = cli(root, "parasearch", "run", "-q")
    assert run.returncode in (0, 1), run.stderr
    return Path(cli(root, "expegit", "report", "-o", str(root.parent / "site"), check=True).stdout.strip()).parent


def test_two_objective_campaign_draws_its_front_and_hypervolume(driver: Any, pareto_site: Path,
                                                                artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get((pareto_site / "plots.html").as_uri())
    front = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="front"]')
    points = front.find_elements(By.CSS_SELECTOR, "circle.pt")
    assert len(points) == int(front.get_attribute("data-points")) > 0
    on_front = front.find_elements(By.CSS_SELECTOR, "circle.pt.front")
    assert 0 < len(on_front) <= len(points)
    assert front.size["width"] > 300 and front.size["height"] > 100
    assert "loss (min)" in front.text and "seconds (min)" in front.text
    hv = driver.find_element(By.CSS_SELECTOR, 'svg.plot[data-plot="hypervolume"]')
    assert hv.find_elements(By.CSS_SELECTOR, "path.hv-line") and hv.find_elements(By.CSS_SELECTOR, "circle.pt")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", front)
    driver.save_screenshot(str(artifacts / "report_pareto_front.png"))
    _shot(driver, artifacts, "pareto_plots")
    assert _errors(driver) == []
