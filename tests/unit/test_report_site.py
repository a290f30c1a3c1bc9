"""The site as files: round trip of its data, edge-case campaigns, output copying, safe replacement."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from expegit.report import CommitInfo, ExecutionView, ReportData, parse_report_data, write_report
from expegit.report.datafile import load_report_payload
from expegit.report.execution_page import parse_shard
from expegit.report.demo import demo_loader, synthetic_report
from expegit.report.files import safe_relpath
from expegit.report.fmt import clean_tail, safe_page_name
from expegit.report.summary import summarize
from orchestra.errors import UsageError
from orchestra.execution import ExecutionRecord

SHA = "a" * 40


def _record(exid: str, state: str = "finished", objective: float | None = 1.0, **extra: object) -> ExecutionRecord:
    fields: dict[str, object] = dict(
        id=exid, campaign="c", commit=SHA, command="run", parameters={"lr": 0.1}, profile="local", state=state,
        host="h1", slot=0, started="2024-05-01T08:00:00Z", ended="2024-05-01T08:01:00Z", duration=60.0,
        objective=objective)
    fields.update(extra)
    return ExecutionRecord(**fields)  # type: ignore[arg-type]


def _data(records: list[ExecutionRecord], objective: dict[str, str] | None = None) -> ReportData:
    return ReportData("c", objective, "2024-05-02T00:00:00Z",  # type: ignore[arg-type]
                      {SHA: CommitInfo(SHA, "subject", "me", "2024-04-30T00:00:00Z")},
                      [ExecutionView(r, "", "", {}, []) for r in records])


def test_round_trip_render_parse(tmp_path: Path) -> None:
    data = synthetic_report(120)
    odd = _record("0123456789ab", parameters={"lr": 1e-05, "flag": True, "none": None, "name": "é\u2028🎉",
                                              "big": 10**18, "neg": -0.0}, objective=float("nan"))
    data.executions.append(ExecutionView(odd, "", "", {}, []))
    index = write_report(data, tmp_path / "site")
    assert index.name == "index.html"
    expected = [v.record.to_dict() for v in data.executions]
    for source in (index, tmp_path / "site", tmp_path / "site" / "data.js", tmp_path / "site" / "plots.html"):
        parsed = parse_report_data(source)
        assert len(parsed) == len(expected)
        assert parsed[:-1] == expected[:-1]
        assert math.isnan(parsed[-1].pop("objective"))
        assert parsed[-1] == {k: v for k, v in expected[-1].items() if k != "objective"}
    payload = load_report_payload(index)
    assert payload["campaign"] == "mnist-lr" and payload["objective"]["goal"] == "minimize"
    assert set(payload["commits"]) == set(data.commits)


def test_parse_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.html").write_text("<html><script src='a.js'></script></html>")
    with pytest.raises(UsageError):
        parse_report_data(tmp_path / "x.html")
    (tmp_path / "data.js").write_text("var x = 1;")
    with pytest.raises(UsageError):
        parse_report_data(tmp_path / "data.js")


def test_empty_campaign(tmp_path: Path) -> None:
    index = write_report(ReportData("empty", None, "2024-05-02T00:00:00Z", {}, []), tmp_path / "site")
    assert "No executions yet" in index.read_text()
    plots = (tmp_path / "site" / "plots.html").read_text()
    assert "<svg class=\"plot\"" not in plots and "No objective values yet" in plots
    assert parse_report_data(index) == []
    assert (tmp_path / "site" / "execution.html").is_file()


def test_all_failed_campaign_without_objective(tmp_path: Path) -> None:
    records = [_record(f"{k:012x}", state="failed", objective=None, exit_code=1, error="boom") for k in range(5)]
    index = write_report(_data(records), tmp_path / "site")
    text = index.read_text()
    assert "No execution reported an objective yet" in text and "no objective declared" in text
    assert 'data-plot="progress"' not in text
    plots = (tmp_path / "site" / "plots.html").read_text()
    assert 'data-plot="timeline"' in plots and 'data-plot="scatter"' not in plots
    assert [r["state"] for r in parse_report_data(index)] == ["failed"] * 5


def test_outputs_are_copied_safely_and_lazily(tmp_path: Path) -> None:
    view = ExecutionView(_record("00000000000a"), "", "", {
        "metrics.json": b"{}", "plots/a b#?.png": b"\x89PNG", "../up.txt": b"no", "/abs.txt": b"no",
        "a/./b.txt": b"ok"}, [])
    data = ReportData("c", None, "2024-05-02T00:00:00Z", {}, [view, ExecutionView(_record("00000000000b"))])
    calls: list[str] = []

    def loader(execution_id: str) -> dict[str, bytes]:
        calls.append(execution_id)
        return {"late.txt": execution_id.encode()}

    write_report(data, tmp_path / "site", load_outputs=loader)
    files = tmp_path / "site" / "files"
    assert calls == ["00000000000a", "00000000000b"]
    assert (files / "00000000000a" / "plots" / "a b#?.png").read_bytes() == b"\x89PNG"
    # Small text outputs stay in the details shard (files.inline_text), not as one file each.
    shard_entries = parse_shard((tmp_path / "site" / "details" / "00.js").read_text())
    inline = {o["path"]: o for o in shard_entries["00000000000a"]["outputs"] if o.get("inline")}
    assert inline["a/b.txt"]["preview"] == "ok" and inline["a/b.txt"]["href"] is None
    assert inline["metrics.json"]["preview"] == "{}"
    assert [o["preview"] for o in shard_entries["00000000000b"]["outputs"]] == ["00000000000b"]
    assert not (files / "00000000000a" / "a").exists() and not (files / "00000000000b").exists()
    assert not (tmp_path / "up.txt").exists() and not (tmp_path / "site" / "up.txt").exists()
    shard = (tmp_path / "site" / "details" / "00.js").read_text()
    assert "plots/a%20b%23%3F.png" in shard  # a file name cannot become a URL fragment or query
    assert "unsafe path, not copied" in shard


@pytest.mark.parametrize("path,expected", [
    ("a.txt", "a.txt"), ("./a//b", "a/b"), ("../x", None), ("a/../../x", None), ("/etc/passwd", None),
    ("", None), (".", None), ("a\x00b", None), ("\ud800", None), (b"bytes", None)])
def test_safe_relpath(path: object, expected: str | None) -> None:
    assert safe_relpath(path) == expected


def test_page_names_are_safe() -> None:
    assert safe_page_name("0123456789ab") == "0123456789ab"
    for hostile in ("../../x", "a/b", "<x>", "", "a" * 100, "x?y#z"):
        name = safe_page_name(hostile)
        assert name.isalnum() and name.startswith("x")


def test_replaces_previous_report_but_not_other_directories(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_report(synthetic_report(5), site)
    stale = site / "files" / "stale.txt"
    stale.write_text("old")
    write_report(synthetic_report(3, seed=2), site)
    assert not stale.exists() and len(parse_report_data(site)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temporary directories left over
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UsageError):
        write_report(synthetic_report(1), other)
    assert (other / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        write_report(synthetic_report(1), tmp_path / "file")


def test_demo_loader_streams_outputs(tmp_path: Path) -> None:
    data = synthetic_report(60, include_outputs=False)
    write_report(data, tmp_path / "site", load_outputs=demo_loader(data))
    first = data.executions[0].record.id
    assert (tmp_path / "site" / "files" / first / "plots" / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_summary_best_respects_goal() -> None:
    records = [_record("000000000001", objective=0.3), _record("000000000002", objective=0.9),
               _record("000000000003", objective=float("nan")), _record("000000000004", objective=None)]
    assert summarize(records, "minimize", "").best_index == 0
    assert summarize(records, "maximize", "").best_index == 1
    assert summarize(records, "minimize", "").ranked == [0, 1]


def test_clean_tail_shows_what_a_terminal_shows() -> None:
    assert clean_tail("\x1b[32mok\x1b[0m\r\n") == "ok\n"
    assert clean_tail("10%\r50%\r100%\ndone\x00\x07") == "100%\ndone"


def test_rerender_reuses_outputs_of_unchanged_final_executions(tmp_path: Path) -> None:
    import dataclasses

    data = synthetic_report(40, include_outputs=False)
    calls: list[str] = []
    inner = demo_loader(data)

    def loader(execution_id: str) -> dict[str, bytes]:
        calls.append(execution_id)
        return inner(execution_id)

    site = tmp_path / "site"
    write_report(data, site, load_outputs=loader)
    assert len(calls) == 40
    first = data.executions[0]
    old_png = (site / "files" / first.record.id / "plots" / "loss.png").read_bytes()
    changed = dataclasses.replace(first.record, objective=0.01)
    running = [v.record.id for v in data.executions if v.record.state not in ("finished", "failed", "cancelled")]
    data2 = dataclasses.replace(data, executions=[dataclasses.replace(first, record=changed)] + data.executions[1:])
    calls.clear()
    write_report(data2, site, load_outputs=loader)
    assert sorted(calls) == sorted([first.record.id, *running])  # everything else was carried over
    assert (site / "files" / first.record.id / "plots" / "loss.png").read_bytes() == old_png
    shards: dict = {}
    for path in (site / "details").glob("*.js"):
        shards.update(parse_shard(path.read_text()))
    for view in data.executions[1:]:
        if view.record.objective is not None:
            metrics = [o for o in shards[view.record.id]["outputs"] if o["path"] == "metrics.json"]
            assert metrics and metrics[0]["inline"] and view.record.id in metrics[0]["preview"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_small_text_outputs_are_inlined_and_large_or_binary_ones_copied(tmp_path: Path) -> None:
    """Why: one file per execution made the site's file count grow with the campaign (100,000 metrics.json)."""
    big = b"x" * 5000
    view = ExecutionView(_record("00000000000c"), "", "", {
        "m.json": b'{"loss": 1}', "big.txt": big, "bin.txt": b"\xff\xfe", "pic.png": b"\x89PNG"}, [])
    write_report(ReportData("c", None, "2024-05-02T00:00:00Z", {}, [view]), tmp_path / "site")
    base = tmp_path / "site" / "files" / "00000000000c"
    assert sorted(p.name for p in base.iterdir()) == ["big.txt", "bin.txt", "pic.png"]
    outputs = {o["path"]: o for o in parse_shard((tmp_path / "site" / "details" / "00.js").read_text())
               ["00000000000c"]["outputs"]}
    assert outputs["m.json"]["inline"] and outputs["m.json"]["preview"] == '{"loss": 1}'
    assert not outputs["big.txt"]["inline"] and outputs["big.txt"]["href"].endswith("big.txt")


def test_overview_loads_data_lazily_and_still_names_it(tmp_path: Path) -> None:
    """The overview must open fast at 100,000 executions: no <script src=data.js>, a <meta> naming it."""
    index = write_report(synthetic_report(5), tmp_path / "site")
    html = index.read_text()
    assert '<meta name="orchestra-data" content="data.js">' in html and 'src="data.js"' not in html
    assert 'src="data.js"' in (tmp_path / "site" / "executions.html").read_text()
    assert len(parse_report_data(index)) == 5


def test_the_cyclic_collector_is_paused_while_rendering_and_restored_after(tmp_path: Path) -> None:
    """Why: its full passes over the report's millions of small objects were 40% of a render's CPU."""
    import gc

    from expegit.report import site as S
    from expegit.report.demo import synthetic_report

    seen: list[bool] = []
    original = S.render_site

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(gc.isenabled())
        original(*args, **kwargs)  # type: ignore[arg-type]

    S.render_site = spy  # type: ignore[assignment]
    try:
        assert gc.isenabled()
        S.write_report(synthetic_report(20, include_outputs=False), tmp_path / "s")
    finally:
        S.render_site = original  # type: ignore[assignment]
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        with S.no_cyclic_gc():
            pass
        assert not gc.isenabled()  # an outer pause is kept
    finally:
        gc.enable()


def test_rerender_without_copied_files_reads_outputs_again_instead_of_the_old_shards(tmp_path: Path) -> None:
    """Why: with every output inline, parsing the previous site's shards to reuse nothing cost 20 s of CPU
    and 450 MB at 100,000 executions; the outputs are read again instead, and the site is the same."""
    from expegit.report import site as S

    data = synthetic_report(30, include_outputs=False)
    outputs = {"metrics.json": b'{"loss": 1}'}
    calls: list[str] = []

    def loader(execution_id: str) -> dict[str, bytes]:
        calls.append(execution_id)
        return dict(outputs)

    site = tmp_path / "site"
    write_report(data, site, load_outputs=loader)
    assert not (site / "files").exists()
    before = {p.name: p.read_text() for p in (site / "details").glob("*.js")}
    parsed: list[object] = []
    original = S.previous_details
    S.previous_details = lambda previous: parsed.append(previous) or {}  # type: ignore[assignment]
    try:
        calls.clear()
        write_report(data, site, load_outputs=loader)
    finally:
        S.previous_details = original  # type: ignore[assignment]
    assert parsed == [] and len(calls) == 30
    assert {p.name: p.read_text() for p in (site / "details").glob("*.js")} == before
