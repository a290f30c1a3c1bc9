"""Reading execution records back from branches, with a cache keyed by branch tip.

Parsing 100,000 YAML records takes a minute through dulwich; reading 100,000 refs takes a tenth of a
second. The cache maps each branch to its tip and what the commands need of its record; a branch whose tip
did not move needs no reading, and any branch that moved (a new journal commit, a pull, a rewrite by an
administrator) is re-read, so the cache can never serve a stale record.

The cache is one text file, a line per branch, sorted as `expegit list` shows them:

    id TAB tip TAB created TAB state TAB objective TAB duration TAB repeat TAB commit TAB params TAB json

Why this shape: `expegit status` needs only the state and objective columns, the text `list` the columns
before the JSON, and `list --json` the JSON text as it is, so none of them parses JSON for 100,000 records
(the old JSON cache cost 5 s to load and re-serialize). The header carries a key of the record's fields and
this format: a cache written by another version is rebuilt, never misread.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestra.errors import ExecutionError, UsageError
from orchestra.execution import RECORD_PATH, ExecutionRecord, parse_record

from .gitstore import GitStore

CACHE_NAME = "records.tsv"
OLD_CACHE_NAMES = ("records.json",)  # version 1: a JSON object of [tip, record dict]; removed on rebuild
CACHE_FORMAT = 2
MAGIC = "orchestra-records"
FIELDS = 10
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


def _unescape(text: str) -> str:
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


class Entry:
    """One branch as the cache knows it; ``record()`` parses the full record only when asked."""

    __slots__ = ("id", "tip", "created", "state", "objective", "duration", "repeat", "commit", "params", "json")

    def __init__(self, fields: Sequence[str]) -> None:
        self.id, self.tip = fields[0], fields[1]
        self.created = _unescape(fields[2])
        self.state = fields[3]
        self.objective = float(fields[4]) if fields[4] else None
        self.duration = float(fields[5]) if fields[5] else None
        self.repeat = int(fields[6]) if fields[6] else 0
        self.commit = fields[7]
        self.params = _unescape(fields[8])
        self.json = fields[9]

    @property
    def problem(self) -> str | None:
        return self.json if self.state == PROBLEM else None

    def record(self) -> ExecutionRecord:
        return ExecutionRecord.from_checked_dict(json.loads(self.json))


def render_line(execution_id: str, tip: str, record: ExecutionRecord | None, problem: str = "") -> str:
    """One cache line (no newline) for a branch: its record's columns, or the problem that made it unreadable."""
    if record is None:
        return "\t".join((execution_id, tip, "", PROBLEM, "", "", "", "", "", _escape(problem) or "unreadable"))
    # The JSON is what `list --json` prints for this record: json.dumps escapes control characters, so it
    # holds no tab or newline, and it is the last column, so it needs no escaping of its own.
    return "\t".join((execution_id, tip, _escape(record.created or ""), _escape(record.state),
                      _number(record.objective), _number(record.duration),
                      str(record.repeat) if isinstance(record.repeat, int) else "0", _escape(record.commit),
                      _escape(params_text(record.parameters)), json.dumps(record.to_dict(), ensure_ascii=False)))


def render_cache(lines: Iterable[str], count: int) -> str:
    """The cache file: a header (format, schema key, line count: a truncated copy is refused) and the lines."""
    return f"{MAGIC}\t{CACHE_FORMAT}\t{SCHEMA_KEY}\t{count}\n" + "".join(line + "\n" for line in lines)


def parse_cache(text: str) -> dict[str, list[str]] | None:
    """Branch id -> the columns of its line, in file order; None for a cache this version must not trust."""
    header, _, body = text.partition("\n")
    parts = header.split("\t")
    if len(parts) != 4 or parts[0] != MAGIC or parts[1] != str(CACHE_FORMAT) or parts[2] != SCHEMA_KEY:
        return None
    lines = body.split("\n")  # not splitlines(): U+2028 and friends may stand inside the JSON column
    if lines and lines[-1] == "":
        lines.pop()
    if not parts[3].isdigit() or int(parts[3]) != len(lines):
        return None
    out: dict[str, list[str]] = {}
    for line in lines:
        fields = line.split("\t", FIELDS - 1)
        if len(fields) != FIELDS or len(fields[1]) not in (40, 64):
            return None
        out[fields[0]] = fields
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
    return [ExecutionRecord.from_checked_dict(d) for d in data]


class RecordIndex:
    def __init__(self, store: GitStore) -> None:
        self.store = store
        self.path = store.git_dir / "orchestra" / CACHE_NAME

    def _load_cache(self) -> dict[str, list[str]]:
        try:
            cached = parse_cache(self.path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            cached = None  # a missing or damaged cache only costs a re-read
        return cached or {}

    def _save_cache(self, lines: list[list[str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(render_cache(("\t".join(f) for f in lines), len(lines)).encode("utf-8"))
        os.replace(tmp, self.path)
        for name in OLD_CACHE_NAMES:
            try:
                (self.path.parent / name).unlink()
            except OSError:
                pass

    def entries(self) -> list[Entry]:
        """Every execution branch, oldest first, problems included (state ``!``)."""
        tips = self.store.execution_tips()
        cache = self._load_cache()
        kept: list[list[str]] = []
        for execution_id, fields in cache.items():  # file order is list order: no sort when nothing moved
            if tips.get(execution_id) == fields[1]:
                kept.append(fields)
        stale = [(i, t) for i, t in tips.items() if i not in cache or cache[i][1] != t]
        if stale:
            raws = self.store.read_path_many([t for _i, t in stale], RECORD_PATH)
            for (execution_id, tip), raw in zip(stale, raws):
                kept.append(self._read_line(execution_id, tip, raw).split("\t", FIELDS - 1))
            kept.sort(key=sort_key)
        if stale or len(kept) != len(cache):
            try:
                self._save_cache(kept)
            except OSError:
                pass  # a read-only clone still lists, only slower
        return [Entry(f) for f in kept]

    @staticmethod
    def _read_line(execution_id: str, tip: str, raw: bytes | None) -> str:
        try:
            if raw is None:
                raise ExecutionError(f"no {RECORD_PATH}")
            return render_line(execution_id, tip, parse_record(raw))
        except ExecutionError as exc:
            return render_line(execution_id, tip, None, str(exc))

    def load(self) -> tuple[dict[str, ExecutionRecord], dict[str, str], dict[str, str]]:
        """(records by id, tips by id, problems by id) for every execution branch."""
        entries = self.entries()
        good = [e for e in entries if e.state != PROBLEM]
        records = dict(zip((e.id for e in good), records_of(good)))  # keyed by branch, as the tips are
        tips = {e.id: e.tip for e in entries}
        problems = {e.id: e.json for e in entries if e.state == PROBLEM}
        return records, tips, problems

    def records(self) -> list[ExecutionRecord]:
        """Oldest first, then by id."""
        return records_of(self.entries())

    def resolve(self, prefix: str) -> str:
        """The full id for a unique prefix (like git's abbreviated hashes), or UsageError."""
        prefix = prefix.removeprefix("executions/")
        tips = self.store.execution_tips()
        matches = [i for i in tips if i.startswith(prefix)]
        if not matches:
            raise UsageError(f"no execution matches {prefix!r}", hint="`expegit list` shows the ids")
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5])
            raise UsageError(f"{prefix!r} matches {len(matches)} executions ({shown}...): give more digits")
        return matches[0]

    def record_at(self, tip: str) -> ExecutionRecord:
        raw = self.store.read_path(tip, RECORD_PATH)
        if raw is None:
            raise ExecutionError(f"commit {tip[:12]} has no {RECORD_PATH}")
        return parse_record(raw)
