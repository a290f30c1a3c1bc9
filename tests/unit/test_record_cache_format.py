"""The record cache's text format, `git cat-file --batch` answers and the pager choice: pure functions."""
from __future__ import annotations

import json

import pytest

from expegit.gitstore import parse_cat_file_batch, render_cat_file_batch
from expegit.pager import pager_command
from expegit.records import CACHE_FORMAT, PROBLEM, SCHEMA_KEY, Entry, params_text, parse_cache, render_cache, render_line
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
    entry = Entry(line.split("\t", 9))
    assert (entry.id, entry.tip, entry.state, entry.objective, entry.duration) == \
        (record.id, TIP, "finished", 0.25, 2.5)
    assert entry.params == params_text(record.parameters)  # escaped in the file, whole again when read
    assert entry.json == json.dumps(record.to_dict(), ensure_ascii=False)
    assert entry.record() == record


def test_params_column_is_what_list_shows() -> None:
    record = _record(parameters={"s": "a\tb", "long": "x" * 40})
    entry = Entry(render_line(record.id, TIP, record).split("\t", 9))
    assert entry.params == params_text(record.parameters) == "s=a\tb long=" + "x" * 27 + "..."


def test_a_problem_line_keeps_its_reason() -> None:
    entry = Entry(render_line("0123456789ab", TIP, None, "not valid\tYAML\nat line 1").split("\t", 9))
    assert entry.state == PROBLEM and entry.problem is not None and "YAML" in entry.problem


def test_cache_round_trips_in_order() -> None:
    records = [_record(id=f"{i:012x}", objective=None if i == 1 else i / 3) for i in range(3)]
    lines = [render_line(r.id, TIP, r) for r in records]
    parsed = parse_cache(render_cache(lines, len(lines)))
    assert parsed is not None and list(parsed) == [r.id for r in records]
    assert [Entry(f).record() for f in parsed.values()] == records


@pytest.mark.parametrize("text", [
    "",
    '{"version": 1, "records": {}}',
    f"orchestra-records\t{CACHE_FORMAT + 1}\t{SCHEMA_KEY}\t0\n",
    f"orchestra-records\t{CACHE_FORMAT}\t{'0' * 16}\t0\n",
    f"orchestra-records\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t2\n" + "x\t" + TIP + "\t\n",  # short by a line
    f"orchestra-records\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t1\n" + "x\tnot-a-tip\t\t\t\t\t\t\t\t{}\n",
    f"orchestra-records\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t1\n" + "x\t" + TIP + "\ttoo few\n",
])
def test_a_cache_this_version_did_not_write_is_refused(text: str) -> None:
    assert parse_cache(text) is None


def test_the_schema_key_follows_the_record_fields(monkeypatch) -> None:
    import dataclasses

    from expegit import records

    real = dataclasses.fields(ExecutionRecord)
    monkeypatch.setattr(records.dataclasses, "fields", lambda cls: real[:-1])
    assert records._schema_key() != SCHEMA_KEY


@pytest.mark.parametrize("environ,expected", [
    ({}, ["less"]),
    ({"PAGER": "more -s"}, ["more", "-s"]),
    ({"PAGER": "more", "GIT_PAGER": "less -S"}, ["less", "-S"]),
    ({"GIT_PAGER": "cat", "PAGER": "less"}, None),
    ({"PAGER": ""}, None),
])
def test_pager_choice_is_gits(environ: dict[str, str], expected: list[str] | None) -> None:
    assert pager_command(environ) == expected
