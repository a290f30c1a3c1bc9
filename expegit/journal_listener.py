"""The journal of a run: each state change of an execution written as a commit on its branch.

runaway's controller tells a Listener what happens (launched, an attempt failed, finished, cancelled);
this one turns it into the record and files of a journal commit, and the run's progress lines.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

import gevent

from orchestra.execution import (ExecutionRecord)
from orchestra.manifest import Manifest
from orchestra.progress import Progress
from runaway.backend import RunHandle
from runaway.capacity import render_cpu_list
from runaway.rundir import STDERR_FILE, STDOUT_FILE
from runaway.controller import AttemptResult, Task
from runaway.environment_capture import record_vars, summary_of

from .metrics_stream import METRICS_PATH, final_points, render_metrics_text
from .journal import JournalWriter, describe_parameters, iso_from_epoch, utc_now
from .objective import read_objectives
from .run_summary import RunSummary


def record_binding(record: ExecutionRecord, handle: RunHandle) -> None:
    """What the execution was given on its node, into its record (`expegit show` lists it)."""
    binding = handle.binding
    if binding is None:
        record.cores = record.gpus = record.gpu_share = record.memory_limit = None
        return
    record.cores = render_cpu_list(binding.cores)
    record.gpus = ",".join(binding.gpus) if binding.gpus else None
    record.gpu_share = float(binding.gpu_share) if binding.gpus and binding.gpu_share < 1 else None
    record.memory_limit = binding.memory


def stderr_tail(data: bytes | None, limit: int = 300) -> str:
    """The last non-empty line of a failed execution's stderr, for its one progress line.

    Why: the reason an execution failed (a traceback's last line, a missing file) was only in `expegit
    show`; the user watching a run saw "exit=1" and nothing to act on.
    """
    if not data:
        return ""
    lines = [line.strip() for line in data[-8192:].decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = "".join(ch if ch.isprintable() else "?" for ch in lines[-1])
    return last if len(last) <= limit else "..." + last[-limit:]


class JournalListener:
    """Writes each state change of an execution as a commit on its branch (runaway's Listener)."""

    def __init__(self, writer: JournalWriter, manifest: Manifest, records: dict[str, ExecutionRecord],
                 tips: dict[str, str], progress: Progress, summary: RunSummary,
                 on_result: Callable[[ExecutionRecord, str], None] | None = None, *,
                 running_commit_delay: float = 0.0) -> None:
        self.writer = writer
        self.manifest = manifest
        self.records = records
        self.tips = tips
        self.progress = progress
        self.summary = summary
        self.on_result = on_result
        self.running_commit_delay = running_commit_delay
        self._delayed: dict[str, gevent.Greenlet] = {}
        self._unmatched_said: set[str] = set()
        # Intermediate metrics of running executions (expegit/metrics_follow.py), when the manifest declares
        # `metrics:`; set by the runner after construction, so other listeners' callers need not change.
        self.metrics: Any = None

    def commit_metrics(self, execution_id: str, stream: bytes) -> None:
        """A running execution's metrics so far, as a journal commit of its running record (the follower's
        ``commit``). Skipped once it has ended: its final commit holds the whole stream."""
        record = self.records.get(execution_id)
        if record is None or record.state != "running":
            return
        self._commit(record, {METRICS_PATH: stream})

    def _commit(self, record: ExecutionRecord, files: Mapping[str, Any] | None = None, *,
                durable: bool = False) -> None:
        """Journal a state; with ``durable``, return only once it is on disk (results about to be deleted)."""
        sha, done = self.writer.commit(self.tips[record.id], record, files)
        self.tips[record.id] = sha
        if durable:
            done.get()

    def launched(self, task: Task, handle: RunHandle, attempt: int) -> None:
        record = self.records[task.job.execution_id]
        record.state = "running"
        record.attempt = attempt
        record.host = handle.slot.host
        record.node = handle.slot.node
        record.slot = handle.slot.index
        record.remote_dir = handle.remote_dir
        record_binding(record, handle)
        if self.metrics is not None:
            self.metrics.add(record.id, handle)
        record.started = iso_from_epoch(handle.started) or utc_now()
        record.resumed_from = iso_from_epoch(handle.resumed_from) if handle.resumed_from is not None else None
        record.ended = record.duration = record.exit_code = record.objective = record.objectives = record.error = None
        self.progress.started()
        if self.running_commit_delay <= 0:
            self._commit(record)
        else:
            # Short executions go from created to finished directly; the run directory alone lets a resume
            # find them. Long ones get their "running" commit once they have run for the delay.
            self._delayed[record.id] = gevent.spawn_later(self.running_commit_delay, self._commit_running, record.id)

    def journal_running(self, execution_id: str) -> None:
        """Commit the "running" state of an execution found running by a resume (see adopt_reattached)."""
        self._commit(self.records[execution_id])

    def _commit_running(self, execution_id: str) -> None:
        self._delayed.pop(execution_id, None)
        record = self.records.get(execution_id)
        if record is not None and record.state == "running":
            self._commit(record)

    def _settle(self, execution_id: str) -> None:
        if self.metrics is not None:
            self.metrics.remove(execution_id)
        pending = self._delayed.pop(execution_id, None)
        if pending is not None:
            pending.kill(block=False)

    def _note_unmatched(self, record: ExecutionRecord, outputs: Sequence[str]) -> None:
        """Say once per run when a declared output glob matched no file of a successful execution.

        Why: a typo in `outputs:` (or a script writing elsewhere) committed nothing, silently.
        """
        import fnmatch

        for pattern in self.manifest.outputs:
            if pattern in self._unmatched_said or any(fnmatch.fnmatch(rel, pattern) for rel in outputs):
                continue
            self._unmatched_said.add(pattern)
            self.progress.note(f"output {pattern!r} matched no file of execution {record.id} (exit 0): nothing of "
                               f"it was committed; check outputs: in orchestra.yaml against what the command writes")

    def _fill(self, record: ExecutionRecord, result: AttemptResult) -> dict[str, Any]:
        outcome = result.outcome
        record.exit_code = outcome.exit_code
        record.ended = iso_from_epoch(outcome.ended) or utc_now()
        if outcome.started is not None and outcome.ended is not None:
            record.duration = round(max(0.0, outcome.ended - outcome.started), 3)
        files: dict[str, Any] = {}
        record.outputs = []
        record.objective = record.objectives = None
        record.error = None
        if result.collected is not None:
            collected = result.collected
            for rel in collected.outputs:
                files[rel] = collected.source(rel)
            record.outputs = list(collected.outputs)
            if outcome.exit_code == 0:
                self._note_unmatched(record, collected.outputs)
            for rel, path in ((STDOUT_FILE, collected.stdout), (STDERR_FILE, collected.stderr)):
                if collected.contents is not None:
                    files[rel] = collected.contents.get(rel, b"")
                else:
                    files[rel] = path if path.exists() else b""
            self._fill_metrics(collected, files)
            if self.manifest.objective is not None and outcome.exit_code == 0:
                record.objective, record.objectives, problem = read_objectives(self.manifest, collected.read)
                if problem:
                    record.error = problem
        self._fill_environment(record, result, files)
        if result.failure == "timeout":
            record.error = f"timed out after {self.manifest.timeout:g}s"
        elif result.failure == "node-failure":
            record.error = outcome.error or "the host or node running it was lost"
        elif result.failure == "exit":
            record.error = f"exit {outcome.exit_code}"
        elif outcome.error and not record.error:
            record.error = outcome.error
        return files

    def _fill_metrics(self, collected: Any, files: dict[str, Any]) -> None:
        """The whole metrics stream from the results: the ORCHESTRA_METRICS file as written (exact bytes),
        or, with a `metrics.pattern`, re-rendered with the points read from stdout."""
        raw = collected.read(METRICS_PATH)
        spec = self.manifest.metrics
        if spec is None or spec.pattern is None:
            if raw:
                files[METRICS_PATH] = raw
            return
        import re

        points = final_points(raw, collected.read(STDOUT_FILE), re.compile(spec.pattern))
        if points or raw:
            files[METRICS_PATH] = render_metrics_text(points).encode("utf-8")

    def _fill_environment(self, record: ExecutionRecord, result: AttemptResult, files: dict[str, Any]) -> None:
        """The record's environment section; pip freeze and conda texts as blobs on the branch (the same
        bytes on every branch of a node: one git object for all)."""
        variables = record_vars(result.collected, self.manifest.record_env)
        summary = summary_of(result.environment, variables) if result.environment is not None or variables else {}
        record.environment = summary or None
        if result.environment is not None:
            files.update(result.environment.blobs())

    def attempt_failed(self, task: Task, result: AttemptResult, will_retry: bool) -> None:
        self._settle(task.job.execution_id)
        record = self.records[task.job.execution_id]
        files = self._fill(record, result)
        record.state = "failed"
        record.error = f"{record.error}; retrying (attempt {record.attempt + 1})"
        self._commit(record, files, durable=True)
        self.progress.running = max(0, self.progress.running - 1)
        self.progress.note(f"retry   {record.id} after {result.failure} (attempt {record.attempt})")

    def finished(self, task: Task, result: AttemptResult) -> None:
        self._settle(task.job.execution_id)
        record = self.records[task.job.execution_id]
        files = self._fill(record, result)
        record.state = "finished" if result.failure is None else "failed"
        if result.pruned is not None:  # stopped by its search's rule: the metrics so far are its result
            record.state, record.pruned_step = "pruned", float(result.pruned["step"])
            record.error, record.objective, record.objectives = result.pruned["reason"], None, None
        sha, durable = self.writer.commit(self.tips[record.id], record, files)
        self.tips[record.id] = sha
        ok = record.state in ("finished", "pruned")
        extra = f" objective={record.objective:g}" if record.objective is not None else ""
        extra += f" ({record.error})" if record.error and not ok else ""
        if not ok and result.collected is not None:
            tail = stderr_tail(result.collected.read(STDERR_FILE))
            if tail:
                extra += f"\n         stderr: {tail}"
        # Shown as ended now (its slot is already free), counted as done once it is on disk.
        self.progress.ended(ok, f"{record.state:8} {record.id} {describe_parameters(record.parameters)}"
                                f" exit={record.exit_code} {record.duration if record.duration is not None else '?'}s"
                                f"{extra}")
        if self.on_result is not None:
            # Before waiting on the disk: other executions print their lines meanwhile, so a "best" line
            # told after the wait came out below the lines of executions that ended later.
            self.on_result(record, sha)
        durable.get()  # the run directory is deleted next: the results must be committed first
        if record.state == "pruned":
            self.summary.pruned += 1
        elif ok:
            self.summary.finished += 1
        else:
            self.summary.failed += 1
        self.records.pop(record.id, None)  # 10,000 queued executions: keep only what is still in flight
        self.tips.pop(record.id, None)

    def cancelled(self, task: Task, handle: RunHandle | None) -> None:
        self._settle(task.job.execution_id)
        record = self.records[task.job.execution_id]
        if record.state == "created" and handle is None:
            return  # never launched: stays "created", resume runs it
        record.state = "cancelled"
        record.error = "stopped by the user"
        record.ended = utc_now()
        self._commit(record)
        self.summary.cancelled += 1
        self.progress.running = max(0, self.progress.running - 1)
