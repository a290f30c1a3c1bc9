"""Execution branches as journals: created -> running -> finished/failed, each state one commit.

The first commit of ``executions/<id>`` has the code commit as its parent and adds only the record, so
``git diff <code> executions/<id>`` shows exactly what the execution produced. Later commits build on the
branch's previous tree and move the ref with a compare-and-swap: a ref that moved under us is an error
(someone else wrote the same execution), never a silent overwrite.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path

from orchestra.errors import RepositoryError
from orchestra.execution import (RECORD_PATH, STDERR_PATH, STDOUT_PATH, ExecutionRecord, render_branch_name,
                                 render_record, render_scalar)

from .gitstore import EXEC_MODE, FILE_MODE, GitStore

MAX_SUBJECT_PARAMS = 6


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_epoch(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_parameters(parameters: Mapping[str, object]) -> str:
    parts = [f"{k}={render_scalar(v) if not isinstance(v, str) else v}" for k, v in parameters.items()]
    text = " ".join(parts[:MAX_SUBJECT_PARAMS]) + (" ..." if len(parts) > MAX_SUBJECT_PARAMS else "")
    return text.replace("\n", "\\n")[:200]


def subject_for(record: ExecutionRecord) -> str:
    """The commit subject of a journal entry: what `git log --oneline executions/<id>` shows."""
    if record.state == "created":
        return f"created: {describe_parameters(record.parameters) or '(no parameters)'}"
    if record.state == "running":
        where = record.host or "?"
        return f"running on {where} slot {record.slot}" + (f" (attempt {record.attempt})" if record.attempt > 1 else "")
    if record.state == "finished":
        objective = f", objective={render_scalar(record.objective)}" if record.objective is not None else ""
        return f"finished: exit 0{objective}"
    if record.state == "failed":
        reason = record.error or f"exit {record.exit_code}"
        return f"failed: {reason}"[:200]
    return f"{record.state}: {record.error or ''}".strip().rstrip(":")


class Journal:
    """Writes journal commits into one campaign store."""

    def __init__(self, store: GitStore) -> None:
        self.store = store

    def create(self, record: ExecutionRecord) -> str:
        """The branch's first commit, parented on the code commit. Fails if the id is taken."""
        base_tree = self.store.tree_of(record.commit)
        blob = self.store.write_blob(render_record(record).encode("utf-8"))
        tree = self.store.tree_with(base_tree, {RECORD_PATH: (FILE_MODE, blob)})
        sha = self.store.write_commit(tree, [record.commit], subject_for(record) + "\n")
        if not self.store.create_ref("refs/heads/" + render_branch_name(record.id), sha):
            raise RepositoryError(f"execution {record.id} already exists", hint="ids are random: retry")
        return sha

    def append(self, tip: str, record: ExecutionRecord, files: Mapping[str, bytes | Path] | None = None,
               *, body: str = "") -> str:
        """A commit on top of ``tip`` with the new record (and result files); CAS of the branch ref."""
        entries = {RECORD_PATH: (FILE_MODE, self.store.write_blob(render_record(record).encode("utf-8")))}
        for path, content in (files or {}).items():
            mode = FILE_MODE
            if isinstance(content, Path):
                mode = EXEC_MODE if content.stat().st_mode & 0o111 else FILE_MODE
                content = content.read_bytes()
            entries[path] = (mode, self.store.write_blob(content))
        tree = self.store.tree_with(self.store.tree_of(tip), entries)
        message = subject_for(record) + "\n" + (f"\n{body.rstrip()}\n" if body else "")
        sha = self.store.write_commit(tree, [tip], message)
        ref = "refs/heads/" + render_branch_name(record.id)
        if not self.store.update_ref(ref, tip, sha):
            now = self.store.ref(ref)
            raise RepositoryError(f"execution {record.id}: its branch moved to {str(now)[:12]} while Orchestra "
                                  f"was writing it", hint="another controller may be running this campaign")
        return sha

    def finish(self, tip: str, record: ExecutionRecord, stdout: Path, stderr: Path,
               outputs: Mapping[str, Path]) -> str:
        files: dict[str, bytes | Path] = {STDOUT_PATH: stdout if stdout.exists() else b"",
                                          STDERR_PATH: stderr if stderr.exists() else b""}
        files.update(outputs)
        return self.append(tip, record, files)
