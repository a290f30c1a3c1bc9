"""The record cache's text format, `git cat-file --batch` answers and the pager choice: pure functions."""
from __future__ import annotations

import json

import pytest

from expegit.gitstore import parse_cat_file_batch, render_cat_file_batch
from expegit.pager import pager_command
from expegit.records import CACHE_FORMAT, PROBLEM, SCHEMA_KEY, Entry, params_text, parse_cache, record_list_line, \
    render_cache, render_line, split_line, summarize
from orchestra.execution import ExecutionRecord

TIP = "a" * 40


def _record(**changes) -> ExecutionRecord:
    base = dict(id="0123456789ab", campaign="c", commit="b" * 40, command="true", parameters={"x": 1},
                profile="local", state="finished", created="2026-12-01T00:00:00Z", duration=2.5, objective=0.25)
    base.update(changes)
    return ExecutionRecord(**base)


def test_cat_file_answers_round_trip() -> None:
    requests = ["c1:p", "c2:p", "c3:p", "c4:p"]
    answers = [("1" * 40, "blob", b"hello\n"), None, ("2" * 40, "tree", b"xx"), ("3" * 40, "blob", b"")]
    data = render_cat_file_batch(answers, requests)
    assert parse_cat_file_batch(data, 4) == [b"hello\n", None, None, b""]


def test_cat_file_content_that_looks_like_a_header_is_content() -> None:
    body = ("4" * 40 + " blob 3\nabc\n").encode()
    data = render_cat_file_batch([("5" * 40, "blob", body), None], ["a:p", "b:p with spaces"])
    assert parse_cat_file_batch(data, 2) == [body, None]


def test_a_line_carries_the_columns_and_the_json_dumps_text() -> None:
    record = _record(parameters={"s": "tab\tnew\nline \u2028 back\\slash", "n": 3})
    line = render_line(record.id, TIP, record)
    assert "\n" not in line
    entry = Entry(line.split("\t", 8))
    assert (entry.id, entry.tip, entry.state, entry.objective, entry.duration) == \
        (record.id, TIP, "finished", 0.25, 2.5)
    assert entry.line == record_list_line(record)  # escaped in the file, whole again when read
    assert "\n" not in line.split("\t", 8)[7]
    assert entry.json == json.dumps(record.to_dict(), ensure_ascii=False)
    assert entry.record() == record


def test_params_column_is_what_list_shows() -> None:
    record = _record(parameters={"s": "a\tb", "long": "x" * 40})
    entry = Entry(render_line(record.id, TIP, record).split("\t", 8))
    assert params_text(record.parameters) == "s=a\tb long=" + "x" * 27 + "..."
    assert entry.line.endswith(params_text(record.parameters))


def test_a_problem_line_keeps_its_reason() -> None:
    entry = Entry(render_line("0123456789ab", TIP, None, "not valid\tYAML\nat line 1").split("\t", 8))
    assert entry.state == PROBLEM and entry.problem is not None and "YAML" in entry.problem


def test_cache_round_trips_in_order() -> None:
    records = [_record(id=f"{i:012x}", objective=None if i == 1 else i / 3) for i in range(3)]
    lines = [render_line(r.id, TIP, r).split("\t", 8) for r in records]
    parsed = parse_cache(render_cache(lines, "f" * 40))
    assert parsed is not None
    fingerprint, summary, body = parsed
    assert fingerprint == "f" * 40 and summary == summarize(lines)
    assert [Entry(line.split("\t", 8)).record() for line in body] == records
    assert json.loads(summary["min"])["id"] == records[0].id and json.loads(summary["max"])["id"] == records[2].id


def test_summary_counts_and_running_first_started() -> None:
    records = [_record(id=f"{i:012x}", state="running", started=f"2026-12-01T00:00:{59 - i:02d}Z") for i in range(12)]
    records.append(_record(id="f" * 12, objective=float("nan")))
    summary = summarize([render_line(r.id, TIP, r).split("\t", 8) for r in records])
    assert summary["states"] == {"running": 12, "finished": 1} and summary["min"] is None  # NaN is no best
    assert [json.loads(t)["id"] for t in summary["running"]] == [f"{i:012x}" for i in range(11, 1, -1)]


GOOD_SUMMARY = '{"states":{},"min":null,"max":null,"running":[],"repeats":false}'


@pytest.mark.parametrize("text", [
    "",
    '{"version": 1, "records": {}}',
    f"orchestra-records\t{CACHE_FORMAT + 1}\t{SCHEMA_KEY}\t0\tfp\n{GOOD_SUMMARY}\n",
    f"orchestra-records\t{CACHE_FORMAT}\t{'0' * 16}\t0\tfp\n{GOOD_SUMMARY}\n",
    f"orchestra-records\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t2\tfp\n{GOOD_SUMMARY}\nx\n",  # short by a line
    f"orchestra-records\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t0\tfp\n{{}}\n",  # a summary of another shape
    f"orchestra-records\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t0\n{GOOD_SUMMARY}\n",  # no fingerprint
])
def test_a_cache_this_version_did_not_write_is_refused(text: str) -> None:
    assert parse_cache(text) is None


def test_a_line_of_another_shape_is_refused() -> None:
    assert split_line("x\tnot-a-tip\t\t\t\t\t\t\t{}") is None
    assert split_line("x\t" + TIP + "\ttoo few") is None
    assert split_line("x\t" + TIP + "\t" * 7 + "{}") is not None


def test_the_schema_key_follows_the_record_fields(monkeypatch) -> None:
    import dataclasses

    from expegit import record_lines

    real = dataclasses.fields(ExecutionRecord)
    monkeypatch.setattr(record_lines.dataclasses, "fields", lambda cls: real[:-1])
    assert record_lines._schema_key() != SCHEMA_KEY


@pytest.mark.parametrize("environ,expected", [
    ({}, ["less"]),
    ({"PAGER": "more -s"}, ["more", "-s"]),
    ({"PAGER": "more", "GIT_PAGER": "less -S"}, ["less", "-S"]),
    ({"GIT_PAGER": "cat", "PAGER": "less"}, None),
    ({"PAGER": ""}, None),
])
def test_pager_choice_is_gits(environ: dict[str, str], expected: list[str] | None) -> None:
    assert pager_command(environ) == expected
