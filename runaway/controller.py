"""Places jobs on a backend's slots and drives each through launch, wait, collect and retry.

The controller knows nothing about git: a Listener (expegit's journal) is told when a job starts, each
time an attempt ends, and when it is over. Jobs come from an iterator that is advanced only when a slot is
free, so a search can propose its next point at the moment a slot frees up, and a queue of 10,000 jobs is
never materialised as 10,000 greenlets.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.pool

from orchestra.errors import OrchestraError
from orchestra.manifest import RetryPolicy
from orchestra.resources import DEFAULT as DEFAULT_REQUEST
from orchestra.resources import Request
from orchestra.retry import attempts, failure_kind, first_wait, retried

from .environment_capture import Capture, EnvironmentCapture
from .backend import LEAVE_POLICIES, Backend, CodeArchive, Collected, Job, NoSlot, Outcome, RunHandle, Slot
from .checkpoints import guarded
from .walltime import fits, need, signal_name, warning_at

log = logging.getLogger(__name__)

# How often (seconds) a checkpointing execution's warning time is recomputed from the allocation's end,
# which the provider corrects at each poll.
WARNING_RECHECK = 10.0
# How long a re-attached checkpointing execution's warner waits for its adopted allocation's end to be known.
REATTACHED_END_WITHIN = 120.0


# How many executions at most wait to be placed by resources at once (the packing rule's look-ahead).
PACKING_WINDOW = 64
# How many later executions may start before a waiting one (that does not fit yet) before it is given the
# next place that frees up for it, whatever it costs the others.
PACKING_PATIENCE = 256


@dataclasses.dataclass
class Task:
    job: Job
    handle: RunHandle | None = None  # set when re-attaching to an execution an earlier controller launched
    attempt: int = 1


@dataclasses.dataclass
class AttemptResult:
    handle: RunHandle | None
    outcome: Outcome
    collected: Collected | None
    failure: str | None  # None, or a kind from retries.on
    attempt: int
    environment: Capture | None = None  # the node's environment (EnvironmentCapture), when captured
    pruned: Any = None  # what the caller of Controller.prune() gave: it stopped this attempt on purpose


class Listener(Protocol):
    def launched(self, task: Task, handle: RunHandle, attempt: int) -> None: ...

    def attempt_failed(self, task: Task, result: AttemptResult, will_retry: bool) -> None: ...

    def finished(self, task: Task, result: AttemptResult) -> None: ...

    def cancelled(self, task: Task, handle: RunHandle | None) -> None: ...


class Controller:
    def __init__(self, backend: Backend, listener: Listener, code: CodeArchive, *, retry: RetryPolicy,
                 staging: Path, leave: str = "none", packing: bool = False,
                 capture: EnvironmentCapture | None = None) -> None:
        if leave not in LEAVE_POLICIES:
            raise ValueError(f"leave policy {leave!r} is not one of {', '.join(LEAVE_POLICIES)}")
        self.backend = backend
        # Placed by resources (the manifest declares `resources:`; backend.check_requests() accepted them)
        # instead of one execution per free slot.
        self.packing = packing
        # Which run directories stay on the host after their results are committed: none, those of
        # failed executions (to look at what they left), or all.
        self.leave = leave
        self.listener = listener
        self.code = code
        self.retry = retry
        self.staging = staging
        self.stopping = gevent.event.Event()
        self.errors: list[tuple[str, BaseException]] = []
        self._running: dict[str, RunHandle] = {}
        self._pruned: dict[str, Any] = {}  # execution id -> the note of the search that stopped it
        # Which executions carry the environment probe (the first per node and commit), and the captures.
        self.capture = capture or EnvironmentCapture(enabled=False)

    def stop(self) -> None:
        """Stop launching; stop what runs. Idempotent, safe from a signal handler greenlet."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.backend.stop_waiting()  # a slot that may never come (a pending allocation) is not waited for
        for handle in list(self._running.values()):
            try:
                self.backend.stop(handle)
            except Exception:  # best effort: the execution is recorded as cancelled either way
                pass

    def prune(self, execution_id: str, grace: float, note: Any) -> bool:
        """Stop one running execution on purpose (a search's early stopping): its signal, SIGKILL after
        ``grace`` (the checkpoint warning's path), then collected and reported as ended with ``pruned=note``
        (no failure, never retried). False if it is not running here (it ended meanwhile)."""
        handle = self._running.get(execution_id)
        if handle is None or execution_id in self._pruned:
            return False
        self._pruned[execution_id] = note
        self.backend.warn(handle, signal.SIGTERM, grace)
        return True

    def run(self, tasks: Iterable[Task], reattached: Iterable[Task] = ()) -> None:
        """Drive ``tasks`` as slots free up; ``reattached`` (and re-attached tasks in a list) at once.

        Re-attached executions already hold their slots (the backend claimed them): they are driven now,
        not behind an acquire() that would wait for those very slots to free up. A lazy source (a study's
        asker) gives them separately, since they cannot be told apart before it is advanced.
        """
        group = gevent.pool.Group()
        for task in reattached:
            group.spawn(self._drive, task, None)
        if isinstance(tasks, (list, tuple)):
            for task in tasks:
                if task.handle is not None:
                    group.spawn(self._drive, task, None)
            tasks = [task for task in tasks if task.handle is None]
        iterator: Iterator[Task] = iter(tasks)
        try:
            if self.packing:
                self._run_packed(iterator, group)
            while not self.packing and not self.stopping.is_set():
                try:
                    slot = self.backend.acquire()
                except NoSlot:
                    break
                if self.stopping.is_set():
                    self.backend.release(slot)
                    break
                try:
                    task = next(iterator)
                except StopIteration:
                    self.backend.release(slot)
                    break
                if task.handle is not None:
                    # Already running somewhere: it holds its own place, so give the slot back.
                    self.backend.release(slot)
                    group.spawn(self._drive, task, None)
                    continue
                wanted = self._need(task.job)
                if wanted is not None and not fits(wanted, self.backend.expires(slot), time.time()):
                    # (The backend's acquire(wanted) knows its walltime: a need no allocation can meet
                    # takes the first usable slot.)
                    # Too little of this allocation is left for it: wait here (in order, the source not
                    # advanced) for a slot that has enough; the backend asks for a new allocation.
                    self.backend.release(slot)
                    try:
                        slot = self.backend.acquire(wanted)
                    except NoSlot:
                        break
                group.spawn(self._drive, task, slot)
            group.join()
        finally:
            if self.stopping.is_set():
                group.join(timeout=30)
            group.kill()

    def _run_packed(self, iterator: Iterator[Task], group: gevent.pool.Group) -> None:
        """Packing by resources: the backend picks, among the waiting executions, the one to place next
        (runaway/placement.py), so a wide one that does not fit yet does not hold narrower ones back.

        The source is still advanced lazily: one more execution is asked for only when none of those
        waiting fits the free capacity, and at most PACKING_WINDOW wait at once."""
        pending: list[Task] = []
        passed_over: list[int] = []  # of each waiting execution: how many later ones started before it
        exhausted = False
        while not self.stopping.is_set():
            placed = None
            # Starvation guard: one passed over PACKING_PATIENCE times is the only one placed next (its
            # node drains for it), so a wide execution waits a bounded time even in an endless search.
            starving = next((i for i, count in enumerate(passed_over) if count >= PACKING_PATIENCE), None)
            try:
                if starving is not None:
                    chosen = self.backend.acquire_for([self._request(pending[starving])])
                    assert chosen is not None
                    placed = (starving, chosen[1])
                elif pending:
                    placed = self.backend.acquire_for([self._request(t) for t in pending], wait=False)
                if placed is None and (exhausted or len(pending) >= PACKING_WINDOW):
                    if not pending:
                        break
                    placed = self.backend.acquire_for([self._request(t) for t in pending])
            except NoSlot:
                break
            if placed is None:
                try:
                    task = next(iterator)
                except StopIteration:
                    exhausted = True
                    continue
                if task.handle is not None:  # already running somewhere: it holds its own place
                    group.spawn(self._drive, task, None)
                else:
                    pending.append(task)
                    passed_over.append(0)
                continue
            index, slot = placed
            if self.stopping.is_set():
                self.backend.release(slot)
                break
            for earlier in range(index):
                passed_over[earlier] += 1
            passed_over.pop(index)
            group.spawn(self._drive, pending.pop(index), slot)

    @staticmethod
    def _request(task: Task) -> Request:
        return task.job.resources or DEFAULT_REQUEST

    @staticmethod
    def _need(job: Job) -> float | None:
        """Seconds of allocation the job must find left (the backend caps it at a fresh one's)."""
        if job.timeout is None and job.checkpoint is None:
            return None  # the common case, decided without a call
        return need(job.timeout, job.checkpoint, None)

    def _warn_before_end(self, handle: RunHandle, job: Job, warned: list[bool], reattached: bool = False) -> None:
        """Send a checkpointing execution its signal ``grace`` before its allocation ends (then SIGKILL
        after the grace, by the launcher), re-reading the end as the provider corrects it."""
        policy = job.checkpoint
        assert policy is not None
        unknown_until = time.time() + (REATTACHED_END_WITHIN if reattached else 0.0)
        while not self.stopping.is_set():
            expires = self.backend.expires(handle.slot)
            if expires is None:
                # A place without an end (or its allocation is gone: wait() says so). A re-attached
                # execution's allocation is the dead controller's, adopted: its end is known once the
                # scheduler has been asked, so it is asked again for a while before giving up.
                if time.time() >= unknown_until:
                    return
                gevent.sleep(2.0)
                continue
            delay = warning_at(expires, policy.grace) - time.time()
            if delay <= 0:
                warned.append(True)
                self.backend.warn(handle, policy.signal_number, policy.grace)
                return
            gevent.sleep(min(delay, WARNING_RECHECK))

    def _save_checkpoint(self, handle: RunHandle) -> None:
        """One copy back (a no-op where the place shares its filesystem); a failed copy keeps the last
        whole one and is tried again at the next, so it is a warning, not the execution's failure."""
        try:
            self.backend.save_checkpoint(handle)
        except (OrchestraError, OSError) as exc:
            log.warning("%s: %s", handle.execution_id, exc)

    def _copier(self, handle: RunHandle, job: Job) -> gevent.Greenlet | None:
        every = None if job.checkpoint is None else job.checkpoint.every
        return None if every is None else gevent.spawn(self._copy_every, handle, every)

    def _copy_every(self, handle: RunHandle, every: float) -> None:
        """``checkpoint.every``: copy the running execution's checkpoint directory back on a schedule, so
        a lost node loses at most that much."""
        while not self.stopping.is_set():
            gevent.sleep(every)
            self._save_checkpoint(handle)

    def _drive(self, task: Task, slot: Slot | None) -> None:
        """One job from launch (or re-attachment) to its final record, retrying under the policy."""
        job = task.job
        if job.checkpoint is not None:
            job = dataclasses.replace(job, command=guarded(job.command, signal_name(job.checkpoint.signal_number)))
        reattach = task.handle

        def one_attempt() -> AttemptResult:
            nonlocal slot, reattach
            handle, reattach = reattach, None
            reattached = handle is not None
            probed = False
            try:
                if handle is None:
                    if slot is None:
                        try:
                            if self.packing:
                                placed = self.backend.acquire_for([self._request(task)])
                                assert placed is not None
                                slot = placed[1]
                            else:
                                wanted = self._need(job)
                                slot = self.backend.acquire() if wanted is None else self.backend.acquire(wanted)
                        except NoSlot:
                            raise _Cancelled(None) from None
                    if self.stopping.is_set():
                        raise _Cancelled(None)
                    launched = self.capture.prepare(job, slot)
                    probed = launched is not job
                    handle = self.backend.launch(slot, launched, self.code)
                    self.listener.launched(task, handle, task.attempt)
                self._running[job.execution_id] = handle
                copier = self._copier(handle, job)
                warned: list[bool] = []
                warner = None if job.checkpoint is None else gevent.spawn(self._warn_before_end, handle, job, warned,
                                                                           reattached)
                try:
                    outcome = self.backend.wait(handle, job.timeout)
                finally:
                    self._running.pop(job.execution_id, None)
                    if warner is not None:
                        warner.kill(block=False)
                    if copier is not None:
                        copier.kill()  # (waits: a copy cut short cleans up before the next one starts)
                if warned and not outcome.timed_out:
                    outcome = dataclasses.replace(outcome, walltime=True, error=outcome.error or
                                                  "stopped before its allocation's walltime")
                if (job.checkpoint is not None and not outcome.lost and not self.stopping.is_set()
                        and failure_kind(outcome.exit_code, outcome.timed_out, outcome.lost, outcome.walltime,
                                         outcome.preempted) is not None):
                    # Stopped, preempted or failed, and its place still answers: what it saved reaches the
                    # controller before it is re-placed, maybe elsewhere. A lost place is not asked (it may
                    # not answer for minutes): the last scheduled copy is what the next attempt gets.
                    self._save_checkpoint(handle)
                if self.stopping.is_set() and not outcome.timed_out and outcome.exit_code != 0:
                    raise _Cancelled(handle)
                collected = None
                if not outcome.lost:
                    collected = self.backend.collect(handle, job, self.staging / job.execution_id)
            finally:
                if slot is not None:  # free the slot before committing: the next job can start meanwhile
                    self.backend.release(slot)
                    slot = None
            pruned = self._pruned.pop(job.execution_id, None)
            failure = None if pruned is not None else failure_kind(
                outcome.exit_code, outcome.timed_out, outcome.lost, outcome.walltime, outcome.preempted)
            environment = self.capture.absorb(handle.slot, job, collected, probed)
            return AttemptResult(handle, outcome, collected, failure, task.attempt, environment, pruned)

        def should_retry(result: AttemptResult) -> bool:
            retry = (retried(result.failure, self.retry.on)
                     and task.attempt <= self.retry.max and not self.stopping.is_set())
            if retry:
                self.listener.attempt_failed(task, result, True)
                if result.handle is not None:
                    self.backend.discard(result.handle)
                self._drop_staged(result.collected)
                task.attempt += 1
            return retry

        try:
            result: AttemptResult | None = one_attempt()
            if should_retry(result):  # the rare case: the policy's loop takes over from the first attempt
                gevent.sleep(first_wait(self.retry, 1))
                for attempt in attempts(self.retry, should_retry, gevent.sleep, done=1):
                    with attempt:
                        result = one_attempt()
                    if not attempt.retry_state.outcome.failed:
                        attempt.retry_state.set_result(result)
            assert result is not None
            self.listener.finished(task, result)
            left = self.leave == "all" or (self.leave == "failed" and result.failure is not None)
            if result.handle is not None and not result.outcome.lost and not left:
                self.backend.discard(result.handle)
            if job.checkpoint is not None and not left:
                self.backend.drop_checkpoint(job.execution_id)
            self._drop_staged(result.collected)
        except _Cancelled as cancelled:
            self.listener.cancelled(task, cancelled.handle)
        except OrchestraError as exc:
            self.errors.append((job.execution_id, exc))
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # a bug must not take the other executions down with it
            exc.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            self.errors.append((job.execution_id, exc))
        finally:
            if slot is not None:
                self.backend.release(slot)


    def _drop_staged(self, collected: Collected | None) -> None:
        """Results a remote backend brought into the staging area are in git now: delete the copy."""
        if collected is not None and self.staging in collected.directory.parents:
            shutil.rmtree(collected.directory, ignore_errors=True)


class _Cancelled(Exception):
    def __init__(self, handle: RunHandle | None) -> None:
        super().__init__("cancelled")
        self.handle = handle
