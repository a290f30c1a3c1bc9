"""Reading execution records back from branches, with a cache keyed by branch tip.

Parsing 100,000 YAML records takes a minute through dulwich; reading 100,000 refs takes a tenth of a
second. The cache maps each branch to its tip and what the commands need of its record; a branch whose tip
did not move needs no reading, and any branch that moved (a new journal commit, a pull, a rewrite by an
administrator) is re-read, so the cache can never serve a stale record.

The cache is one text file, a line per branch, sorted as `expegit list` shows them:

    header: magic, format, schema key, line count, refs fingerprint
    summary: one line of JSON (counts by state, the best records, the first running ones): `expegit status`
    id TAB tip TAB created TAB state TAB objective TAB duration TAB repeat TAB list line TAB json

Why this shape: `expegit status` reads the first two lines only, the text `list` copies the list line
and `list --json` the JSON text as they are, so none of them parses JSON or formats 100,000 records (the
old JSON cache cost 5 s to load and re-serialize). The fingerprint is a digest of the refs the cache was
built from (GitStore.refs_fingerprint): when it matches, no tip needs comparing. The header carries a key
of the record's fields and this format: a cache written by another version is rebuilt, never misread.
"""
from __future__ import annotations

import json
import os
from typing import Any

from orchestra.errors import ExecutionError, UsageError
from orchestra.execution import RECORD_PATH, ExecutionRecord, parse_record

from .gitstore import GitStore
from .record_lines import (  # noqa: F401 - the formats, re-exported: callers import them from here
    CACHE_NAME, LIST_NAME, LIST_MAGIC, OLD_CACHE_NAMES, CACHE_FORMAT, LIST_FORMAT, MAGIC, FIELDS, PARSE_BATCH,
    PROBLEM, SCHEMA_KEY, short_value, params_text, unescape, list_line, record_list_line, Entry, render_line,
    summarize, RUNNING_SHOWN, SUMMARY_KEYS, is_summary, render_cache, render_list_file, parse_list_file,
    parse_head, parse_cache, split_line, parse_records_bulk, sort_key, records_of, _from_cached)
from .shipped_index import MIN_ROWS_TO_USE, trusted_lines


class RecordIndex:
    def __init__(self, store: GitStore) -> None:
        self.store = store
        self.path = store.git_dir / "orchestra" / CACHE_NAME

    def _save_cache(self, lines: list[list[str]], fingerprint: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        listing = self.path.with_name(LIST_NAME)
        try:
            listing.unlink()  # never a list file beside a cache of other refs, even for a moment
        except OSError:
            pass
        tmp.write_bytes(render_cache(lines, fingerprint).encode("utf-8"))
        os.replace(tmp, self.path)
        tmp.write_bytes(render_list_file(lines, fingerprint).encode("utf-8"))
        os.replace(tmp, listing)
        for name in OLD_CACHE_NAMES:
            try:
                (self.path.parent / name).unlink()
            except OSError:
                pass

    def summary(self) -> dict[str, Any]:
        """The cache's summary line (see summarize), reading two lines of the file when no ref moved."""
        fingerprint = self.store.refs_fingerprint()
        try:
            with open(self.path, encoding="utf-8") as handle:
                head = parse_head(handle.readline())
                if head is not None and head[1] == fingerprint:
                    summary = json.loads(handle.readline())
                    if is_summary(summary):
                        return summary
        except (OSError, UnicodeDecodeError, ValueError):
            pass
        return self._refresh()[1]

    def lines(self) -> list[str]:
        """Every branch's cache line, oldest first (split_line gives the columns)."""
        return self._refresh()[0]

    def _refresh(self) -> tuple[list[str], dict[str, Any]]:
        """The cache brought up to date with the refs: unchanged lines kept, moved branches re-read."""
        try:
            cached = parse_cache(self.path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            cached = None  # a missing or damaged cache only costs a re-read
        if cached is not None and cached[0] == self.store.refs_fingerprint():
            listing = self.path.with_name(LIST_NAME)
            if cached[1]["states"].get(PROBLEM, 0) == 0 and self.list_texts() is None:
                # missing (a cache an earlier version wrote) or damaged: written again, once
                try:
                    tmp = listing.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_bytes(render_list_file([line.split("\t", FIELDS - 1) for line in cached[2]],
                                                     cached[0]).encode("utf-8"))
                    os.replace(tmp, listing)
                except OSError:
                    pass
            return cached[2], cached[1]  # no ref moved since it was written: valid as a whole
        tips, fingerprint = self.store.refs_and_fingerprint()
        kept: list[list[str]] = []
        seen: set[str] = set()
        for line in cached[2] if cached is not None else ():
            fields = split_line(line)
            if fields is None:
                kept, seen = [], set()
                break  # damaged: trust none of it
            if tips.get(fields[0]) == fields[1]:
                kept.append(fields)
                seen.add(fields[0])
        stale = [(i, t) for i, t in tips.items() if i not in seen]
        if len(stale) >= MIN_ROWS_TO_USE:  # after a clone or a big pull: the records a remote shipped
            shipped = trusted_lines(self.store, dict(stale))
            if shipped:
                kept.extend(shipped.values())
                stale = [(i, t) for i, t in stale if i not in shipped]
        start = 0
        for raws in self.store.iter_path_batches([t for _i, t in stale], RECORD_PATH, PARSE_BATCH):
            batch = stale[start:start + len(raws)]
            start += len(raws)
            for (execution_id, tip), got in zip(batch, parse_records_bulk(raws)):
                line = render_line(execution_id, tip, got) if isinstance(got, ExecutionRecord) \
                    else render_line(execution_id, tip, None, got)
                kept.append(line.split("\t", FIELDS - 1))
        kept.sort(key=sort_key)
        try:
            self._save_cache(kept, fingerprint)
        except OSError:
            pass  # a read-only clone still lists, only slower
        return ["\t".join(f) for f in kept], summarize(kept)

    def entries(self) -> list[Entry]:
        """Every execution branch, oldest first, problems included (state ``!``)."""
        return [Entry(line.split("\t", FIELDS - 1)) for line in self.lines()]

    def load(self) -> tuple[dict[str, ExecutionRecord], dict[str, str], dict[str, str]]:
        """(records by id, tips by id, problems by id) for every execution branch."""
        entries = self.entries()
        good = [e for e in entries if e.state != PROBLEM]
        records = dict(zip((e.id for e in good), records_of(good)))  # keyed by branch, as the tips are
        tips = {e.id: e.tip for e in entries}
        problems = {e.id: e.json for e in entries if e.state == PROBLEM}
        return records, tips, problems

    def records(self) -> list[ExecutionRecord]:
        """Oldest first, then by id: the JSON column of each line read as one array, no Entry per line."""
        texts = [line[line.rindex("\t") + 1:] for line in self.lines() if f"\t{PROBLEM}\t" not in line]
        if not texts:
            return []
        return [_from_cached(d) for d in json.loads("[" + ",".join(texts) + "]")]

    def list_texts(self) -> list[str] | None:
        """The list file's lines (see render_list_file) when no ref moved and no branch is unreadable; None
        otherwise (then lines() answers, and writes a new list file)."""
        try:
            text = self.path.with_name(LIST_NAME).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        return parse_list_file(text, self.store.refs_fingerprint())

    def head_lines(self, limit: int) -> list[str] | None:
        """The first ``limit`` lines without reading the rest of the file, when no ref moved and no branch
        is unreadable (`expegit list -n 50` of 100,000 reads 50 lines); None otherwise."""
        fingerprint = self.store.refs_fingerprint()
        try:
            with open(self.path, encoding="utf-8") as handle:
                head = parse_head(handle.readline())
                if head is None or head[1] != fingerprint:
                    return None
                summary = json.loads(handle.readline())
                if not is_summary(summary) or summary["states"].get(PROBLEM):
                    return None
                lines = []
                for _ in range(min(limit, head[0])):
                    line = handle.readline()
                    if not line.endswith("\n") or split_line(line[:-1]) is None:
                        return None
                    lines.append(line[:-1])
                return lines
        except (OSError, UnicodeDecodeError, ValueError):
            return None

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
