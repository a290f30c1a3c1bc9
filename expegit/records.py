"""Reading execution records back from branches, with a cache keyed by branch tip.

Parsing 10,000 YAML records takes seconds; reading 10,000 refs takes a fraction of one. The cache maps each
branch to (tip, record): a branch whose tip did not move needs no parsing, and any branch that moved (a new
journal commit, a pull) is re-read, so the cache can never serve a stale record.
"""
from __future__ import annotations

import json
import os

from orchestra.errors import ExecutionError, UsageError
from orchestra.execution import RECORD_PATH, ExecutionRecord, parse_record

from .gitstore import GitStore

CACHE_VERSION = 1


class RecordIndex:
    def __init__(self, store: GitStore) -> None:
        self.store = store
        self.path = store.git_dir / "orchestra" / "records.json"

    def _load_cache(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if data.get("version") == CACHE_VERSION:
                return data["records"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # a missing or damaged cache only costs a re-read
        return {}

    def _save_cache(self, records: dict[str, list]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "records": records}, separators=(",", ":")), "utf-8")
        os.replace(tmp, self.path)

    def load(self) -> tuple[dict[str, ExecutionRecord], dict[str, str], dict[str, str]]:
        """(records by id, tips by id, problems by id) for every execution branch."""
        tips = self.store.execution_tips()
        cache = self._load_cache()
        fresh: dict[str, list] = {}
        records: dict[str, ExecutionRecord] = {}
        problems: dict[str, str] = {}
        changed = len(cache) != len(tips)
        for execution_id, tip in tips.items():
            cached = cache.get(execution_id)
            record = None
            if cached is not None and cached[0] == tip:
                try:  # validated when it was cached; a cache from another version fails here and is re-read
                    record = ExecutionRecord.from_checked_dict(cached[1])
                    fresh[execution_id] = cached
                    records[execution_id] = record
                    continue
                except TypeError:
                    record = None
            if record is None:
                changed = True
                raw = self.store.read_path(tip, RECORD_PATH)
                try:
                    if raw is None:
                        raise ExecutionError(f"no {RECORD_PATH}")
                    record = parse_record(raw)
                except ExecutionError as exc:
                    problems[execution_id] = str(exc)
                    continue
            fresh[execution_id] = [tip, record.to_dict()]
            records[execution_id] = record
        if changed:
            try:
                self._save_cache(fresh)
            except OSError:
                pass  # a read-only clone still lists, only slower
        return records, tips, problems

    def records(self) -> list[ExecutionRecord]:
        records, _tips, _problems = self.load()
        return sorted(records.values(), key=lambda r: (r.created or "", r.id))

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
