"""Nothing from an execution reaches the report unescaped: not in HTML, not in SVG, not in the data files.

The browser test proves the same end to end; these tests pin it at the source, field by field, so a
regression names the page and the spot.
"""
from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import pytest

from expegit.report import ExecutionView, ReportData, parse_report_data, write_report
from expegit.report.datafile import dumps_script_safe
from expegit.report.demo import HOSTILE, synthetic_report
from expegit.report.execution_page import parse_shard
from orchestra.execution import ExecutionRecord

ALLOWED_SCRIPTS = {"data.js", "assets/report.js"}


class _Elements(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _hostile_record(exid: str) -> ExecutionRecord:
    return ExecutionRecord(
        id=exid, campaign=HOSTILE, commit=HOSTILE, command=HOSTILE, parameters={HOSTILE: HOSTILE, "x": 1.0},
        profile=HOSTILE, state=HOSTILE, repeat=0, attempt=0, search=HOSTILE, author=HOSTILE, host=HOSTILE, node=HOSTILE,
        slot=None, remote_dir=HOSTILE, created=HOSTILE, started="2024-05-01T08:00:00Z",
        ended="2024-05-01T08:05:00Z", duration=300.0, exit_code=1, objective=0.5, outputs=[HOSTILE], error=HOSTILE)


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = synthetic_report(20, hostile=True)
    records = [_hostile_record("aaaaaaaaaaaa"), _hostile_record(HOSTILE)]
    records[1] = dataclasses.replace(records[1], parameters={HOSTILE: "other", "x": 2.0}, objective=0.7)
    # A metric named with markup reaches table headers, the plot picker, axis labels and captions.
    # Output content that is not UTF-8, so the file is copied (small text ones stay inline in the shard).
    views = [ExecutionView(r, HOSTILE, HOSTILE, {HOSTILE: HOSTILE.encode() + b"\xff"}, [(HOSTILE, 1)],
                           {HOSTILE: 1.0 + k, HOSTILE + "2": 3.0 - k}) for k, r in enumerate(records)]
    data = ReportData(HOSTILE, {"metric": HOSTILE, "goal": "minimize"}, HOSTILE, base.commits,
                      base.executions + views, parameter_types={HOSTILE: HOSTILE})
    return write_report(data, tmp_path_factory.mktemp("hostile") / "site").parent


@pytest.mark.parametrize("page", ["index.html", "executions.html", "plots.html", "execution.html"])
def test_pages_have_no_injected_markup(hostile_site: Path, page: str) -> None:
    text = (hostile_site / page).read_text(encoding="utf-8")
    assert HOSTILE not in text, "raw hostile text in the page"
    parser = _Elements()
    parser.feed(text)
    scripts = [attrs.get("src") for tag, attrs in parser.tags if tag == "script"]
    assert all(src in ALLOWED_SCRIPTS for src in scripts), scripts
    for tag, attrs in parser.tags:
        assert tag not in ("img", "iframe", "object", "embed"), f"<{tag}> injected in {page}"
        handlers = [name for name in attrs if name.startswith("on")]
        assert not handlers, f"event handler attribute {handlers} on <{tag}> in {page}"
        for name in ("href", "src"):
            assert not (attrs.get(name) or "").lower().startswith(("javascript:", "data:text")), attrs


def test_hostile_text_is_shown_escaped(hostile_site: Path) -> None:
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    index = (hostile_site / "index.html").read_text(encoding="utf-8")
    assert escaped in index  # campaign name, author, host, commit, parameter names in the best table
    plots = (hostile_site / "plots.html").read_text(encoding="utf-8")
    assert f"against {escaped}" in plots  # a hostile parameter name titles its scatter plot


def test_data_files_cannot_end_a_script_element(hostile_site: Path) -> None:
    files = [hostile_site / "data.js", *sorted((hostile_site / "details").glob("*.js"))]
    for path in files:
        text = path.read_text(encoding="ascii")  # every non-ASCII character is escaped too
        assert "<" not in text and ">" not in text, path
    records = {r["id"]: r for r in parse_report_data(hostile_site / "data.js")}
    assert records[HOSTILE]["parameters"] == {HOSTILE: "other", "x": 2.0}
    assert records[HOSTILE]["error"] == HOSTILE


def test_details_keep_hostile_tails_as_data(hostile_site: Path) -> None:
    entries: dict[str, dict[str, object]] = {}
    for path in (hostile_site / "details").glob("*.js"):
        entries.update(parse_shard(path.read_text(encoding="ascii")))
    hostile = [e for e in entries.values() if e["record"]["author"] == HOSTILE]  # type: ignore[index]
    assert hostile and all(str(e["stdout"]).strip() == HOSTILE for e in hostile)


def test_unsafe_ids_never_become_paths(hostile_site: Path) -> None:
    names = {p.name for p in (hostile_site / "files").iterdir()}
    assert "aaaaaaaaaaaa" in names
    assert all(name.isalnum() or "-" in name for name in names)
    assert not any(p.name == "escape.txt" for p in hostile_site.parent.rglob("escape.txt"))


@pytest.mark.parametrize("value", ["</script><script>alert(1)</script>", "<!--", "\u2028\u2029", "\ud800", "é🎉"])
def test_script_safe_json_round_trips(value: str) -> None:
    import json

    text = dumps_script_safe({"k": value, value: [value]})
    assert "<" not in text and "\u2028" not in text and text.isascii()
    assert json.loads(text) == {"k": value, value: [value]}
