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
# The journal writer's flushes wait longer where one packed-refs rewrite is dear (a large campaign), so that
# rewrites take at most this share of the writer's time; never longer than MAX_FLUSH_INTERVAL, the most a
# result waits to be on disk (its run directory is kept until it is, and its slot is free already).
FLUSH_SHARE = 0.05
MAX_FLUSH_INTERVAL = 1.0


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
        where = record.node or record.host or "?"
        if record.attempt > 1 and record.resumed_from:  # a checkpointing execution's next attempt
            return (f"attempt {record.attempt} on {where} slot {record.slot}, resumed from checkpoint of "
                    f"{record.resumed_from[11:16] or record.resumed_from}")
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
        sha = self.create_commit(record)
        self.create_branch(record.id, sha)
        return sha

    def create_commit(self, record: ExecutionRecord) -> str:
        """The first commit alone (inside GitStore.batch(), before its branch may exist)."""
        base_tree = self.store.tree_of(record.commit)
        blob = self.store.write_blob(render_record(record).encode("utf-8"))
        tree = self.store.tree_with(base_tree, {RECORD_PATH: (FILE_MODE, blob)})
        return self.store.write_commit(tree, [record.commit], subject_for(record) + "\n")

    def create_branch(self, execution_id: str, sha: str) -> None:
        self.create_branches([(execution_id, sha)])

    def create_branches(self, created: list[tuple[str, str]]) -> None:
        """New branches; fails on an id that is taken."""
        results = self.try_create_branches(created)
        for (execution_id, _sha), ok in zip(created, results):
            if not ok:
                raise RepositoryError(f"execution {execution_id} already exists", hint="ids are random: retry")

    def try_create_branches(self, created: list[tuple[str, str]]) -> list[bool]:
        """New branches, each created only if its id is free: whether each was."""
        return self.store.swap_refs([("refs/heads/" + render_branch_name(i), None, sha) for i, sha in created])

    def remove_branches(self, tips: list[tuple[str, str]]) -> list[str]:
        """Delete branches still at the given tips; the ids actually deleted.

        Only for branches a run created and never launched (a profile that could not be reached): a
        branch that moved since holds a story and stays.
        """
        results = self.store.swap_refs([("refs/heads/" + render_branch_name(i), tip, None) for i, tip in tips])
        return [i for (i, _tip), ok in zip(tips, results) if ok]

    def append(self, tip: str, record: ExecutionRecord, files: Mapping[str, bytes | Path] | None = None,
               *, body: str = "") -> str:
        """A commit on top of ``tip`` with the new record (and result files); CAS of the branch ref."""
        sha = self.append_commit(tip, record, files, body=body)
        self.move_branch(record.id, tip, sha)
        return sha

    def append_commit(self, tip: str, record: ExecutionRecord, files: Mapping[str, bytes | Path] | None = None,
                      *, body: str = "") -> str:
        """The commit alone; the branch is moved by move_branch (now, or after a staged flush)."""
        entries = {RECORD_PATH: (FILE_MODE, self.store.write_blob(render_record(record).encode("utf-8")))}
        for path, content in (files or {}).items():
            mode = FILE_MODE
            if isinstance(content, Path):
                mode = EXEC_MODE if content.stat().st_mode & 0o111 else FILE_MODE
                content = content.read_bytes()
            entries[path] = (mode, self.store.write_blob(content))
        tree = self.store.tree_with(self.store.tree_of(tip), entries)
        message = subject_for(record) + "\n" + (f"\n{body.rstrip()}\n" if body else "")
        return self.store.write_commit(tree, [tip], message)

    def move_branch(self, execution_id: str, old: str, new: str) -> None:
        ref = "refs/heads/" + render_branch_name(execution_id)
        if not self.store.swap_refs([(ref, old, new)])[0]:
            now = self.store.ref(ref)
            raise RepositoryError(f"execution {execution_id}: its branch moved to {str(now)[:12]} while "
                                  f"Orchestra was writing it", hint="another controller may be running this campaign")

    def finish(self, tip: str, record: ExecutionRecord, stdout: Path, stderr: Path,
               outputs: Mapping[str, Path]) -> str:
        files: dict[str, bytes | Path] = {STDOUT_PATH: stdout if stdout.exists() else b"",
                                          STDERR_PATH: stderr if stderr.exists() else b""}
        files.update(outputs)
        return self.append(tip, record, files)


class JournalWriter:
    """Journal commits from many greenlets, made durable in groups.

    Commits are built at once (so the next state of the same execution can build on them) but their
    objects are staged in memory and written as one pack per flush, after which the branch refs move in
    order. ``commit()`` returns the new tip and an event set once it is on disk: a caller that is about to
    delete the only other copy of the results (a run directory) waits for it.
    """

    def __init__(self, store: GitStore, *, interval: float = 0.1, max_pending: int = 64) -> None:
        import gevent
        import gevent.event

        self._gevent = gevent
        self.journal = Journal(store)
        self.store = store
        self.interval = interval
        self.max_pending = max_pending
        # Stretched by _pace() after each flush: with 100,000 branches a rewrite of packed-refs (7 MB) is a
        # fixed ~12 ms, so flushing every 0.1 s spent a tenth of a core on it; grouping more updates per
        # flush costs nothing but latency. Only the rewrite's cost paces: the rest of a flush grows with
        # what it writes, and pacing on that would stretch the interval without end.
        self.wait = interval
        self.batch = max_pending
        self._pending: list[tuple[str, str | None, str, "gevent.event.AsyncResult"]] = []
        self._wake = gevent.event.Event()
        self._closed = False
        store.start_staging()
        self._flusher = gevent.spawn(self._run)

    def commit(self, tip: str, record: ExecutionRecord, files: Mapping[str, bytes | Path] | None = None):
        import gevent.event

        sha = self.journal.append_commit(tip, record, files)
        done = gevent.event.AsyncResult()
        self._pending.append((record.id, tip, sha, done))
        if len(self._pending) >= self.batch:
            self._wake.set()
        return sha, done

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.wait)
            self._wake.clear()
            self.flush()
            self._pace()

    def _pace(self) -> None:
        if self.interval >= MAX_FLUSH_INTERVAL:
            return  # a writer asked to wait that long (tests: one that flushes only when told) keeps it
        self.wait = min(MAX_FLUSH_INTERVAL, max(self.interval, self.store.rewrite_cost() / FLUSH_SHARE))
        self.batch = max(self.max_pending, round(self.max_pending * self.wait / self.interval))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            self.store.flush_staged()
        except BaseException as exc:
            for *_rest, done in pending:
                done.set_exception(exc)
            raise
        if not pending:
            return
        updates = [("refs/heads/" + render_branch_name(execution_id), old, new)
                   for execution_id, old, new, _done in pending]
        try:
            # In a worker thread: each loose ref is a file created and renamed (about 1 ms of blocking
            # syscalls on this machine's ext4, most of it allocating the inode), and the event loop would
            # stand still meanwhile: with 100,000 executions behind, where packed-refs is too large to
            # rewrite per flush, that was a tenth of a run's time. The greenlets keep dispatching and
            # reading results while this waits; the refs still move in order, one flush at a time, and
            # nothing is acknowledged before they have.
            moved = self._gevent.get_hub().threadpool.apply(self.store.swap_refs, (updates,))
        except Exception as exc:
            for *_rest, done in pending:
                done.set_exception(exc)
            return
        for (execution_id, _old, new, done), ok in zip(pending, moved):
            if ok:
                done.set(new)
            else:  # reported to the waiter: that execution's greenlet decides
                done.set_exception(RepositoryError(
                    f"execution {execution_id}: its branch moved while Orchestra was writing it",
                    hint="another controller may be running this campaign"))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._flusher.join()
        self.flush()
        self.store.stop_staging()
