"""What the report and the listings say about each execution: node, profile, every metric, parameter kinds.

Pure parts only (fast); tests/e2e/test_report_cli.py runs the same through git and the CLI, and
tests/e2e/test_report_browser.py checks what a reader sees.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest

from expegit.listing import EXPORT_FIELDS, LIST_HEADER, export_row, list_line, write_export, write_list
from expegit.metrics import MetricsIndex, metric_names, parse_metrics
from expegit.report.demo import grid_report, synthetic_report
from expegit.report.execution_page import detail_entry
from expegit.report.model import ExecutionView, browser_kinds, report_metrics, value_kind
from expegit.report.pages import executions_page, plots_page
from expegit.report.plots import bundle_class, parallel_coordinates, timeline_plot
from expegit.report_build import declared_parameter_types, manifest_facts
from orchestra.execution import ExecutionRecord


def _record(k: int, **changes: object) -> ExecutionRecord:
    values: dict[str, object] = dict(
        id=f"{k:012x}", campaign="c", commit="a" * 40, command="python train.py",
        parameters={"lr": 0.5, "layers": 2}, profile="cluster", state="finished", host="login1",
        node=f"node{k}", slot=1, objective=0.25)
    values.update(changes)
    return ExecutionRecord(**values)  # type: ignore[arg-type]


def test_parse_metrics_keeps_finite_top_level_numbers_only() -> None:
    raw = json.dumps({"val_loss": 0.25, "val_acc": 0.9, "epochs": 10, "ok": True, "name": "x",
                      "nested": {"a": 1}, "bad": float("nan")}).encode()
    assert parse_metrics(raw) == {"val_loss": 0.25, "val_acc": 0.9, "epochs": 10}
    assert list(parse_metrics(raw)) == ["val_loss", "val_acc", "epochs"]  # file order
    for junk in (None, b"", b"[1, 2]", b"{not json", b"\xff\xfe", b"3.5"):
        assert parse_metrics(junk) == {}


def test_metric_names_put_the_objective_first() -> None:
    metrics = {"a": {"val_acc": 0.9, "val_loss": 0.2}, "b": {"lr_final": 1e-4}}
    assert metric_names(metrics, "val_loss") == ["val_loss", "val_acc", "lr_final"]
    assert metric_names(metrics, "absent") == ["val_acc", "val_loss", "lr_final"]


class _Store:
    """The things MetricsIndex needs of a GitStore, counting blob reads."""

    def __init__(self, root: Path, blobs: dict[tuple[str, str], bytes]) -> None:
        self.git_dir = root
        self.blobs = blobs
        self.reads = 0

    def read_path(self, tip: str, path: str) -> bytes | None:
        self.reads += 1
        return self.blobs.get((tip, path))

    def read_path_many(self, tips: list[str], path: str) -> list[bytes | None]:
        return [self.read_path(t, path) for t in tips]


def test_metrics_index_reads_only_branches_that_moved(tmp_path: Path) -> None:
    store = _Store(tmp_path, {("t1", "m.json"): b'{"a": 1.5}', ("t2", "m.json"): b'{"a": 2.5, "b": 3}',
                              ("t3", "m.json"): b'{"a": 9}'})
    index = MetricsIndex(store)  # type: ignore[arg-type]
    assert index.load("m.json", {"x": "t1", "y": "t2"}) == {"x": {"a": 1.5}, "y": {"a": 2.5, "b": 3}}
    assert store.reads == 2
    assert index.load("m.json", {"x": "t1", "y": "t2"}) == {"x": {"a": 1.5}, "y": {"a": 2.5, "b": 3}}
    assert store.reads == 2  # served from the cache
    assert index.load("m.json", {"x": "t1", "y": "t3"})["y"] == {"a": 9}  # y moved: read again
    assert store.reads == 3
    assert index.load("other.json", {"x": "t1"}) == {}  # another metrics file never reads a stale cache
    assert store.reads == 4
    assert index.load(None, {"x": "t1"}) == {}
    (tmp_path / "orchestra" / "metrics.json").write_text("{garbage")
    assert index.load("m.json", {"x": "t1"}) == {"x": {"a": 1.5}}  # a damaged cache costs a re-read only


def test_export_has_node_profile_and_metric_columns() -> None:
    records = [_record(1), _record(2, node=None, host="laptop", profile="local")]
    metrics = {records[0].id: {"val_loss": 0.25, "val_acc": 0.9}}
    out = io.StringIO()
    write_export(records, out, "csv", metrics=metrics)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    header = out.getvalue().splitlines()[0].split(",")
    assert header[:len(EXPORT_FIELDS)] == list(EXPORT_FIELDS)
    assert header[len(EXPORT_FIELDS):] == ["param.lr", "param.layers", "metric.val_loss", "metric.val_acc"]
    assert rows[0]["node"] == "node1" and rows[0]["host"] == "login1" and rows[0]["profile"] == "cluster"
    assert rows[1]["node"] == "" and rows[1]["host"] == "laptop" and rows[1]["metric.val_acc"] == ""
    assert rows[0]["metric.val_acc"] == "0.9"
    out = io.StringIO()
    write_export(records, out, "jsonl", metrics=metrics)
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["node"] == "node1" and first["metric.val_acc"] == 0.9
    assert "metric.val_acc" not in export_row(records[1])


def test_list_text_has_a_header_over_its_columns_and_json_none() -> None:
    records = [_record(1, duration=12.0), _record(2, objective=None)]
    out = io.StringIO()
    write_list(records, out, as_json=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == list_line(*LIST_HEADER).rstrip("\n")
    assert lines[0].split() == ["id", "state", "objective", "duration", "commit", "parameters"]
    # each header word sits over its column: the objective's right edge, the parameters' left edge
    assert lines[0].index("objective") + len("objective") == lines[1].index("0.25") + len("0.25")
    assert lines[0].index("parameters") == lines[1].index("lr=")
    out = io.StringIO()
    write_list(records, out, as_json=True)
    assert [r["id"] for r in json.loads(out.getvalue())] == [r.id for r in records]
    out = io.StringIO()
    write_list([], out, as_json=False)
    assert out.getvalue().startswith("no executions yet")


def test_parameter_kinds_prefer_the_declared_type() -> None:
    assert value_kind(1.0) == "float" and value_kind(1) == "int" and value_kind(True) == "bool"
    assert value_kind(None) == "null" and value_kind("x") == "str"
    assert browser_kinds({"lr": 1, "dropout": 0.5, "w": 2.0, "opt": "sgd", "flag": False}, {"lr": "float"}) == \
        {"lr": "float", "w": "float"}
    assert browser_kinds({"n": 2.0}, {"n": "int"}) == {}  # declared int: the browser's guess is right
    manifest = b"name: n\nparameters:\n  lr: {type: float, low: 0.1, high: 1}\n  n: {type: int, low: 1, high: 3}\n" \
               b"  opt: {choices: [a, b]}\n  seed: {value: 0}\nobjective: {metric: m, from: out.json}\n"
    facts = manifest_facts(manifest)
    assert facts.parameter_types == {"lr": "float", "n": "int"} and facts.metrics_file == "out.json"
    assert declared_parameter_types([1, 2]) == {} and manifest_facts(b": bad: [").parameter_types == {}


def test_execution_details_carry_kinds_the_browser_cannot_infer() -> None:
    view = ExecutionView(_record(1, parameters={"scale": 1.0, "layers": 2, "opt": "adam"}),
                         metrics={"val_acc": 0.9})
    entry = detail_entry(view, [], None, None, None, {"layers": "float"})
    # only what JSON would hide from the browser: a whole float, a declared type the value does not show
    assert entry["types"] == {"scale": "float", "layers": "float"}
    assert browser_kinds({"lr": 0.5, "n": 3, "on": True, "s": "x", "z": None}, {}) == {}
    assert entry["metrics"] == {"val_acc": 0.9}


def test_executions_table_has_node_profile_and_a_column_per_metric() -> None:
    data = synthetic_report(30)
    assert report_metrics(data) == ["val_loss", "val_acc"]
    html = executions_page(data)
    keys = re.findall(r'<th data-key="([a-z]+)"', html)
    assert keys == ["select", "id", "state", "parameters", "objective", "metric", "duration", "node", "profile",
                    "commit", "started"]
    assert 'data-metric="val_acc"' in html and 'data-key="host"' not in html


def test_timeline_lanes_are_nodes_not_the_login_host() -> None:
    records = [_record(k, started="2024-05-01T08:00:00Z", ended="2024-05-01T08:05:00Z") for k in (1, 2)]
    plot = timeline_plot(records, "2024-05-01T09:00:00Z")
    assert plot is not None
    assert "node1 · slot 1" in plot.svg and "node2 · slot 1" in plot.svg and "login1" not in plot.svg
    local = timeline_plot([_record(3, node=None, started="2024-05-01T08:00:00Z")], "2024-05-01T09:00:00Z")
    assert local is not None and "login1 · slot 1" in local.svg


def test_parallel_coordinates_bundle_identical_lines_with_a_count() -> None:
    data = grid_report(repeats=3)
    records = [v.record for v in data.executions]
    plot = parallel_coordinates(records, "val_loss", "minimize")
    assert plot is not None and plot.points == len(records) == 54
    paths = re.findall(r'<path class="pc q[0-4]( b[1-4])?" d="[^"]+" data-i="(\d+)"( data-n="(\d+)")?', plot.svg)
    assert len(paths) == 18 and 'data-marks="18"' in plot.svg
    assert all(cls == " b2" and n == "3" for cls, _i, _attr, n in paths)
    members = [set(map(int, m.split())) for m in re.findall(r'data-is="([^"]+)"', plot.svg)]
    assert set().union(*members) == set(range(54))  # every execution is in exactly one bundle
    assert sum(len(m) for m in members) == 54
    single = grid_report(repeats=1)
    plot1 = parallel_coordinates([v.record for v in single.executions], "val_loss", "minimize")
    assert plot1 is not None and "data-n=" not in plot1.svg and plot1.points == 18
    assert [bundle_class(n) for n in (1, 2, 3, 4, 5, 9, 1000)] == ["", " b1", " b2", " b2", " b3", " b4", " b4"]


def test_plots_page_offers_every_metric_with_a_picker() -> None:
    data = grid_report(repeats=2)
    html = plots_page(data)
    groups = re.findall(r'<div class="metric-group" data-metric="([^"]+)"( hidden)?>', html)
    assert groups == [("val_loss", ""), ("val_acc", " hidden")]
    assert '<select id="metric-picker"' in html and '<option value="val_acc">' in html
    assert "val_acc against scale" in html and "a higher val_acc" in html
    single = synthetic_report(10)
    only_objective = dataclasses.replace(single, executions=[ExecutionView(v.record) for v in single.executions])
    assert "metric-picker" not in plots_page(only_objective)  # one metric: no picker


@pytest.mark.parametrize("value", [0.5, 1.0, 2.0])
def test_whole_floats_stay_floats_through_the_record(value: float) -> None:
    from orchestra.execution import parse_record, render_record

    record = parse_record(render_record(_record(1, parameters={"scale": value})))
    assert value_kind(record.parameters["scale"]) == "float"
    assert browser_kinds(record.parameters, {}) == ({"scale": "float"} if value.is_integer() else {})


def test_many_metrics_are_bounded_in_the_table_and_the_plots() -> None:
    from expegit.report.pages import MAX_PLOT_METRICS, MAX_TABLE_METRICS

    base = grid_report(repeats=1)
    many = {f"m{k:02d}": float(k) for k in range(40)}
    views = [dataclasses.replace(v, metrics={**v.metrics, **{n: x + j for n, x in many.items()}})
             for j, v in enumerate(base.executions)]
    data = dataclasses.replace(base, executions=views)
    assert len(report_metrics(data)) == 42
    table = executions_page(data)
    assert table.count('data-key="metric"') == MAX_TABLE_METRICS
    assert f"{41 - MAX_TABLE_METRICS} more metrics" in table
    plots = plots_page(data)
    assert plots.count('class="metric-group"') == MAX_PLOT_METRICS
    assert f"{42 - MAX_PLOT_METRICS} more metrics" in plots
