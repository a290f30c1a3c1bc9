"""The report's one data file (``data.js``): pure render and pure parse.

Browsers block ``fetch()`` of ``file://`` URLs, so the data ships as a script that assigns one global
(``window.ORCHESTRA_REPORT``) and every page loads it with ``<script src>``. One shared file keeps a
10,000-execution site small: pages carry markup, not copies of the data.

The payload is JSON (a subset of JavaScript) with ``<``, ``>``, ``&`` and every non-ASCII character
escaped as ``\\uXXXX``: the file stays safe even if someone inlines it into a ``<script>`` element
(no ``</script>`` or ``<!--`` can appear), and lone surrogates from odd YAML cannot break the encoding.
NaN and Infinity are kept (valid JavaScript, read back by Python's json), so round trips are exact.
"""
from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from orchestra.errors import UsageError
from orchestra.execution import ExecutionRecord

from .model import ExecutionView, ReportData, report_metrics

FORMAT = "orchestra-report/1"
DATA_FILE = "data.js"
GLOBAL_NAME = "ORCHESTRA_REPORT"
_PREFIX = f"/* Orchestra report data ({FORMAT}); generated, do not edit. */\nwindow.{GLOBAL_NAME} = "
_SUFFIX = ";\n"
_RECORD_FIELDS = [f.name for f in dataclasses.fields(ExecutionRecord)]


def build_payload(data: ReportData, pages: list[str]) -> dict[str, Any]:
    """The JSON-able view of the report; ``pages[i]`` is the site-relative page of execution ``i``."""
    return {
        "format": FORMAT,
        "campaign": data.campaign,
        "objective": dict(data.objective) if data.objective else None,
        "generated": data.generated,
        "commits": {sha: dataclasses.asdict(info) for sha, info in data.commits.items()},
        "metrics": report_metrics(data),
        "parameter_types": dict(data.parameter_types),
        "executions": [_execution_entry(view, page) for view, page in zip(data.executions, pages)],
    }


def _execution_entry(view: ExecutionView, page: str) -> dict[str, Any]:
    # Fields that are None are left out (report.js reads a missing field as null; parse_report_data puts
    # them back): at 100,000 executions the nulls alone were a sixth of data.js, which every table loads.
    record = {k: v for k, v in record_dict(view.record).items() if v is not None}
    entry: dict[str, Any] = {"record": record, "page": page}
    if view.metrics:  # left out when empty: at 10,000 executions every key counts
        entry["metrics"] = dict(view.metrics)
    return entry


def record_dict(record: ExecutionRecord) -> dict[str, Any]:
    """``record.to_dict()`` without its deep copy: ten times faster, and json.dumps never mutates."""
    return {name: getattr(record, name) for name in _RECORD_FIELDS}


def dumps_script_safe(value: Any) -> str:
    """JSON that can sit inside a ``<script>`` element or a .js file without ending or commenting it."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=True, default=str)
    # Three str.replace passes, not str.translate: translate looks every character up in a dict, 15x
    # slower, and at 100,000 executions it was a sixth of `expegit report` (200 MB of JSON).
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_data_js(payload: dict[str, Any]) -> str:
    return _PREFIX + dumps_script_safe(payload) + _SUFFIX


def parse_data_js(text: str) -> dict[str, Any]:
    """Read back what ``render_data_js`` wrote; raise UsageError for anything else."""
    start = text.find(f"window.{GLOBAL_NAME} = ")
    if start < 0:
        raise UsageError("not an Orchestra report data file", hint=f"expected {DATA_FILE} from `expegit report`")
    body = text[start + len(f"window.{GLOBAL_NAME} = "):].rstrip()
    if body.endswith(";"):
        body = body[:-1]
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise UsageError(f"report data is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"report data is not in format {FORMAT}")
    for item in payload.get("executions") or []:  # the fields render left out as None come back as None
        if isinstance(item, dict) and isinstance(item.get("record"), dict):
            item["record"] = {name: item["record"].get(name) for name in _RECORD_FIELDS} | item["record"]
    return payload


class _DataScriptFinder(HTMLParser):
    """Finds ``<script src=... data-orchestra-data>`` (or the lazy pages' ``<meta name="orchestra-data">``) in a
    page, whatever the attribute order or quoting."""

    def __init__(self) -> None:
        super().__init__()
        self.src: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "data-orchestra-data" in names and self.src is None:
            self.src = names.get("src")
        elif tag == "meta" and names.get("name") == "orchestra-data" and self.src is None:
            self.src = names.get("content")  # a page that loads the data lazily (layout.page(lazy_data=True))


def load_report_payload(path: str | Path) -> dict[str, Any]:
    """The whole payload from a report directory, one of its HTML pages, or its ``data.js``."""
    path = Path(path)
    if path.is_dir():
        path = path / DATA_FILE
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".html", ".htm"):
        finder = _DataScriptFinder()
        finder.feed(text)
        if not finder.src:
            raise UsageError(f"{path} does not reference Orchestra report data")
        path = (path.parent / finder.src).resolve()
        text = path.read_text(encoding="utf-8")
    return parse_data_js(text)


def parse_report_data(index_html_or_data_file: str | Path) -> list[dict[str, Any]]:
    """The execution records (as ``ExecutionRecord.to_dict()`` dicts) a rendered report holds."""
    return [item["record"] for item in load_report_payload(index_html_or_data_file)["executions"]]
