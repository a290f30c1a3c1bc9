"""The record cache's text formats: its lines, its summary line and the list file, pure render and
parse (expegit/records.py keeps the cache itself; expegit/shipped_index.py reads and writes the same
lines in the index shipped with a campaign, which is why they live apart from both).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestra.errors import ExecutionError
from orchestra.execution import RECORD_PATH, ExecutionRecord, parse_record


CACHE_NAME = "records.tsv"
LIST_NAME = "records.list"  # what the text `expegit list` needs alone (render_list_file)
LIST_MAGIC = "orchestra-list"
OLD_CACHE_NAMES = ("records.json",)  # version 1: a JSON object of [tip, record dict]; removed on rebuild
CACHE_FORMAT = 3
LIST_FORMAT = f"{CACHE_FORMAT}.2"  # .1 (first drafts) held the list column alone
MAGIC = "orchestra-records"
FIELDS = 9
PARSE_BATCH = 10000  # records read and parsed at once: bounds memory after a clone of a huge campaign
PROBLEM = "!"  # the state column of a branch whose record is unreadable; the JSON column holds why


def _schema_key() -> str:
    """Changes whenever ExecutionRecord's fields or this format change."""
    names = "\0".join(f.name for f in dataclasses.fields(ExecutionRecord))
    return hashlib.sha256(f"{CACHE_FORMAT}\0{names}".encode()).hexdigest()[:16]


SCHEMA_KEY = _schema_key()


def short_value(value: Any) -> str:
    """A parameter value as `expegit list` shows it: quoted when it holds spaces, cut at 30 characters."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) and (" " in value or "\n" in value) \
        else str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def params_text(parameters: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={short_value(v)}" for k, v in parameters.items())


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _escape(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return text


def unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append({"t": "\t", "n": "\n"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def list_line(execution_id: str, state: str, objective: str, duration: str, commit: str, params: str) -> str:
    """One line of `expegit list` (no newline); the header goes through it too, so its columns stay over
    the values."""
    return f"{execution_id:12}  {state:9} {objective:>10} {duration:>8}  {commit:8}  {params}".rstrip()


def record_list_line(record: ExecutionRecord) -> str:
    objective = "" if not isinstance(record.objective, (int, float)) else f"{record.objective:.6g}"
    duration = "" if not isinstance(record.duration, (int, float)) else f"{record.duration:.1f}s"
    return list_line(record.id, record.state, objective, duration, record.commit[:8], params_text(record.parameters))


class Entry:
    """One branch as the cache knows it; ``record()`` parses the full record only when asked."""

    __slots__ = ("id", "tip", "created", "state", "objective", "duration", "repeat", "line", "json")

    def __init__(self, fields: Sequence[str]) -> None:
        self.id, self.tip = fields[0], fields[1]
        self.created = unescape(fields[2])
        self.state = fields[3]
        self.objective = float(fields[4]) if fields[4] else None
        self.duration = float(fields[5]) if fields[5] else None
        self.repeat = int(fields[6]) if fields[6] else 0
        self.line = unescape(fields[7])
        self.json = fields[8]

    @property
    def problem(self) -> str | None:
        return self.json if self.state == PROBLEM else None

    def record(self) -> ExecutionRecord:
        return ExecutionRecord.from_checked_dict(json.loads(self.json))


def render_line(execution_id: str, tip: str, record: ExecutionRecord | None, problem: str = "",
                json_text: str | None = None) -> str:
    """One cache line (no newline) for a branch: its record's columns, or the problem that made it unreadable.

    ``json_text``: the record's JSON already at hand (a shipped index's row whose dict is the record's
    to_dict(), one line without tabs), used as the last column instead of encoding the record again.
    """
    if record is None:
        return "\t".join((execution_id, tip, "", PROBLEM, "", "", "", "", _escape(problem) or "unreadable"))
    # The JSON is what `list --json` prints for this record: json.dumps escapes control characters, so it
    # holds no tab or newline, and it is the last column, so it needs no escaping of its own.
    return "\t".join((execution_id, tip, _escape(record.created or ""), _escape(record.state),
                      _number(record.objective), _number(record.duration),
                      str(record.repeat) if isinstance(record.repeat, int) else "0",
                      _escape(record_list_line(record)),
                      json_text if json_text is not None else json.dumps(record.to_dict(), ensure_ascii=False)))


def summarize(lines: Sequence[Sequence[str]]) -> dict[str, Any]:
    """What `expegit status` shows, from the columns: counts, the best records both ways, the first running."""
    states: dict[str, int] = {}
    low = high = None
    repeats = False
    running = []
    for f in lines:
        state = f[3]
        states[state] = states.get(state, 0) + 1
        if state == "finished" and f[4] and f[4] != "nan":
            value = float(f[4])
            if low is None or value < low[0]:
                low = (value, f)
            if high is None or value > high[0]:
                high = (value, f)
        elif state == "running":
            running.append(f)
        if f[6] not in ("", "0"):
            repeats = True
    running.sort(key=lambda f: json.loads(f[8]).get("started") or "")
    return {"states": states, "min": low[1][8] if low else None, "max": high[1][8] if high else None,
            "running": [f[8] for f in running[:RUNNING_SHOWN]], "repeats": repeats}


RUNNING_SHOWN = 10
SUMMARY_KEYS = frozenset({"states", "min", "max", "running", "repeats"})


def is_summary(value: Any) -> bool:
    """Whether ``value`` has summarize()'s shape: a damaged line is refused, not half read."""
    return isinstance(value, dict) and value.keys() == SUMMARY_KEYS and isinstance(value["states"], dict) \
        and isinstance(value["running"], list) and all(isinstance(v, int) for v in value["states"].values())


def render_cache(lines: Sequence[Sequence[str]], fingerprint: str) -> str:
    """The cache file: header (format, schema key, line count: a truncated copy is refused; the refs'
    fingerprint), the summary, then a line per branch."""
    return (f"{MAGIC}\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t{len(lines)}\t{fingerprint}\n"
            + json.dumps(summarize(lines), ensure_ascii=False, separators=(",", ":")) + "\n"
            + "".join("\t".join(f) + "\n" for f in lines))


def render_list_file(lines: Sequence[Sequence[str]], fingerprint: str) -> str:
    """What the text `expegit list` prints and sorts by, one line per readable branch in list order: id,
    created, state, objective, duration, list line (the cache's columns 0, 2-5 and 7, escaped as there),
    under a header like the cache's with the count of unreadable ones.

    Why a file of its own: at 100,000 branches the cache is 100 MB, mostly JSON; the text list needs a
    tenth of it, and reading and splitting the whole cache was most of the command's second.
    """
    shown = ["\t".join((f[0], f[2], f[3], f[4], f[5], f[7])) for f in lines if f[3] != PROBLEM]
    return (f"{LIST_MAGIC}\t{LIST_FORMAT}\t{SCHEMA_KEY}\t{len(shown)}\t{len(lines) - len(shown)}\t{fingerprint}\n"
            + "".join(line + "\n" for line in shown))


def parse_list_file(text: str, fingerprint: str) -> list[str] | None:
    """The list lines (escaped) of a list file written for ``fingerprint`` with no unreadable branch;
    None for any other file, which the caller answers from the cache instead."""
    header, _, body = text.partition("\n")
    parts = header.split("\t")
    if len(parts) != 6 or parts[0] != LIST_MAGIC or parts[1] != LIST_FORMAT or parts[2] != SCHEMA_KEY \
            or not parts[3].isdigit() or parts[4] != "0" or parts[5] != fingerprint:
        return None
    lines = body.split("\n")
    if lines[-1] != "":
        return None
    lines.pop()
    return lines if len(lines) == int(parts[3]) else None


def parse_head(header: str) -> tuple[int, str] | None:
    """(line count, refs fingerprint) of a header this version wrote; None for any other."""
    parts = header.rstrip("\n").split("\t")
    if len(parts) != 5 or parts[0] != MAGIC or parts[1] != str(CACHE_FORMAT) or parts[2] != SCHEMA_KEY \
            or not parts[3].isdigit():
        return None
    return int(parts[3]), parts[4]


def parse_cache(text: str) -> tuple[str, dict[str, Any], list[str]] | None:
    """(fingerprint, summary, the branch lines in file order); None for a cache this version must not trust."""
    header, _, rest = text.partition("\n")
    head = parse_head(header)
    if head is None:
        return None
    summary_text, _, body = rest.partition("\n")
    lines = body.split("\n")  # not splitlines(): U+2028 and friends may stand inside the JSON column
    if lines and lines[-1] == "":
        lines.pop()
    if head[0] != len(lines):
        return None
    try:
        summary = json.loads(summary_text)
    except ValueError:
        return None
    if not is_summary(summary):
        return None
    return head[1], summary, lines


def split_line(line: str) -> list[str] | None:
    fields = line.split("\t", FIELDS - 1)
    return fields if len(fields) == FIELDS and len(fields[1]) in (40, 64) else None


_JSON_UNSAFE = ("\\", ".nan", ".inf", "\t")  # YAML escapes and floats JSON spells otherwise: the exact parser reads those


def _record_as_json(text: str) -> tuple[str, int] | None:
    """render_record's output rewritten as a JSON object's text, and how many top-level keys it has; None
    when the text holds anything outside the subset where YAML and JSON read alike (then parse_record).

    Why: after a clone every record is parsed. The exact parser costs 50 µs a record in Python; this
    rewrite is a few string operations per line, and one json.loads reads a batch of them in C.
    """
    if any(s in text for s in _JSON_UNSAFE):
        return None
    out = []
    keys = 0
    block = ""
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("  "):
            if block == "p":
                name, sep, value = line[2:].partition(": ")
                if not sep or not value:
                    return None
                out.append((name if name[0] == '"' else '"' + name + '"') + ":" + value + ",")
            elif block == "o" and line.startswith("  - "):
                out.append(line[4:] + ",")
            else:
                return None
            continue
        if block:
            _close(out, block)
            block = ""
        name, sep, value = line.partition(":")
        if not sep or not name.replace("_", "").isalpha():
            return None
        keys += 1
        if value == "" and name in ("parameters", "outputs"):
            block = name[0]
            out.append('"' + name + '":' + ("{" if block == "p" else "["))
        elif value.startswith(" "):
            out.append('"' + name + '":' + value[1:] + ",")
        else:
            return None
    if block:
        _close(out, block)
    if not out:
        return None
    return "{" + "".join(out)[:-1] + "}", keys


def _close(out: list[str], block: str) -> None:
    """End a parameters (``p``) or outputs (``o``) block: after its last item's comma, or right after it opened."""
    close = "}," if block == "p" else "],"
    if out[-1].endswith(("{", "[")):
        out[-1] += close
    else:
        out[-1] = out[-1][:-1] + close


def parse_records_bulk(texts: Sequence[bytes | None]) -> list[ExecutionRecord | str]:
    """parse_record for many texts (None: no record file): each a record, or the reason it is unreadable.

    Records in render_record's common shape are read as one JSON array; any text outside it, or a batch
    that JSON refuses, goes through parse_record one by one, so the result is the exact parser's.
    """
    converted: list[tuple[str, int] | None] = []
    for raw in texts:
        try:
            converted.append(_record_as_json(raw.decode("utf-8")) if raw is not None else None)
        except UnicodeDecodeError:
            converted.append(None)
    easy = [c for c in converted if c is not None]
    try:
        dicts = iter(json.loads("[" + ",".join(c[0] for c in easy) + "]"))
    except ValueError:
        converted = [None] * len(texts)
        dicts = iter(())
    out: list[ExecutionRecord | str] = []
    for raw, conv in zip(texts, converted):
        try:
            if conv is not None:
                data = next(dicts)
                if isinstance(data, dict) and len(data) == conv[1]:  # a key given twice is not ours
                    out.append(ExecutionRecord.from_dict(data))
                    continue
            if raw is None:
                raise ExecutionError(f"no {RECORD_PATH}")
            out.append(parse_record(raw))
        except ExecutionError as exc:
            out.append(str(exc))
    return out


def sort_key(fields: Sequence[str]) -> tuple[str, str]:
    """Oldest first, then by id: the order of `expegit list` (created is ISO 8601, so text order is time order)."""
    return fields[2], fields[0]


def records_of(entries: Iterable[Entry]) -> list[ExecutionRecord]:
    """Full records, parsed in one json.loads (a tenth of the cost of one call per record)."""
    entries = [e for e in entries if e.state != PROBLEM]
    if not entries:
        return []
    data = json.loads("[" + ",".join(e.json for e in entries) + "]")
    return [_from_cached(d) for d in data]


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(ExecutionRecord))
_HAS_POST_INIT = hasattr(ExecutionRecord, "__post_init__")


def _from_cached(data: dict[str, Any]) -> ExecutionRecord:
    """ExecutionRecord.from_checked_dict for a dict the cache wrote (to_dict(): every field, no other),
    without the generated __init__'s 26 keyword arguments: a tenth of the cost, which at 100,000 records
    is a second of the notebook API's `executions()`. The schema key guarantees the fields match."""
    if _HAS_POST_INIT or data.keys() != _FIELD_NAMES:
        return ExecutionRecord.from_checked_dict(data)
    record = object.__new__(ExecutionRecord)
    record.__dict__.update(data)
    return record

