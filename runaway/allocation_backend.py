"""The allocation backend: executions placed on slots of allocations held from a scheduler.

A provider (runaway/providers/: Slurm, PBS templates, OAR) says where allocations come from; a launcher
(runaway/launchers/: srun steps or node agents) starts executions on their nodes; everything goes
through ONE transport to the cluster's frontend. This module is what sits between: the manager that
asks for allocations when executions wait, gives them back once drained, and turns their nodes into
slots. Runtime rules: one ``squeue`` (or one batched ``list_nodes``) per cluster per interval, whatever
the number of executions; no placement on an allocation within ``walltime_margin`` of its end;
allocations are cancelled when the queue has drained for ``idle_release`` seconds and at close().
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gevent
import gevent.event
import gevent.queue

from orchestra.errors import ProfileError, ResourceError, SchedulerError
from orchestra.resources import Request

from .allocation_ledger import AllocationLedger
from .backoff import link_dropped, retrying
from .backend import AllocationInfo, CodeArchive, Collected, Job, NoSlot, Outcome, RunHandle, Slot
from .checkpoint_copy import CheckpointCopies
from .checkpoints import ENV_NAME as CHECKPOINT_ENV, checkpoint_dir, parse_prepare, render_prepare, render_remove
from .launchers import Launcher, Place
from .packed import PackedSlots
from .placement import NodeCapacity
from .profiles import SlurmProfile
from .providers import ENDED_STATES, AllocationProvider, JobState
from .providers.slurm import render_nodelist
from .remote_runs import RemoteRuns
from .slots import SlotPool
from .transports import Transport
from .slot_requests import SlotsOnly
from .slurm_resources import NodeRequest, NodeSize, derive_node_request, describe_sizes
from .walltime import fits

log = logging.getLogger(__name__)

# How long a scheduler command that gives nodes back (scancel at close, an idle release) is retried
# over a dropped connection (an sshd restart, a network cut) before the allocation is reported left.
CANCEL_RETRY_FOR = 30.0


@dataclasses.dataclass
class Allocation:
    job_id: str
    submitted: float
    state: str = "PENDING"
    nodes: tuple[str, ...] = ()
    slots: list[Slot] = dataclasses.field(default_factory=list)
    expires: float | None = None  # local epoch seconds
    idle_since: float | None = None
    closing: bool = False
    ready: tuple[float, list[str]] | None = None  # (start epoch, nodes) from the ready file
    reason: str = ""  # the scheduler's reason while it is pending (Resources, Priority, JobHeldUser, ...)
    requeued: bool = False  # the scheduler put it back in the queue while it ran (scontrol requeue, preemption)
    adopted: bool = False  # a dead controller's, taken over by a resume (its re-attached executions run in it)
    started: str = ""  # the scheduler's start time of its current run (a requeue renews it)


class AllocationBackend(SlotsOnly):
    """``slurm`` and ``command`` profiles (and OAR): a provider plus a launcher over the frontend's transport."""

    # The record must name the host and directory before a resume can re-attach.
    running_commit_delay = 0.0

    def __init__(self, profile: SlurmProfile, provider: AllocationProvider, launcher: Launcher, runs: RemoteRuns,
                 ledger: AllocationLedger | None = None, copies: CheckpointCopies | None = None) -> None:
        self.profile = profile
        # A workdir the nodes share (the default) keeps checkpoints in place; with `shared: false` the
        # controller keeps a copy, restored before the next attempt (runaway/checkpoint_copy.py).
        self.copies = None if profile.shared else copies
        self.provider = provider
        self.launcher = launcher
        # Which allocations this controller holds, beside the campaign: what a resume gives back if it dies.
        self.ledger = ledger
        self._orphans: dict[Path, list[str]] | None = None  # a dead controller's allocations (resume)
        self.name = profile.kind
        self.runs = runs
        self.host: Transport = runs.host
        self.pool = SlotPool()
        self.allocations: dict[str, Allocation] = {}
        self._slot_alloc: dict[Slot, Allocation] = {}
        self._busy: set[Slot] = set()
        self._waiting = 0
        # Seconds of allocation each waiter that needs some asks for (acquire(need)): the demand no
        # allocation held can meet makes the manager submit a new one.
        self._needs: list[float] = []
        self._give_up = False  # stop_waiting(): the controller stops, acquire() must not wait any longer
        self._next_index = 0
        self._files_watched: set[str] = set()  # executions re-attached: watched through their files
        # Slots of allocations requeued under their executions, with why those executions were lost.
        self._requeued: dict[Slot, str] = {}
        # Resume: slots of a taken-over allocation held for the re-attached executions still running in it.
        self._reserved: dict[str, Slot] = {}
        self._reattached_indexes: set[int] = set()
        self._wake = gevent.event.Event()
        self._manager: gevent.Greenlet | None = None
        self._closed = False
        self.squeue_calls = 0
        self._last_squeue = 0.0
        self._expected = 0
        self._expected_total = 0  # executions this run was started for (sizes a derived node request)
        self._warming = False  # an allocation asked for ahead of the first acquire() is not idle yet
        # Set once the first allocation is asked for (or none was needed): `expegit run` creates its
        # branches after that, so the allocation queues meanwhile instead of after them.
        self.submitted = gevent.event.Event()
        self.job_name = f"orchestra-{profile.name}"[:60]
        spec = profile.allocation
        self.margin = profile.walltime_margin if profile.walltime_margin is not None else \
            min(120.0, 0.1 * spec.walltime)
        self.error: Exception | None = None
        self.cancel_retry_for = CANCEL_RETRY_FOR
        # Packing by resources (the manifest declares `resources:`; a provider with places_by_resources):
        # set up by check_requests(). Without it, slots_per_node slots per node, exactly as before.
        self.packed: PackedSlots | None = None
        self._requests: list[Request] = []
        self._node_size: NodeSize | None = None
        self._capacity_changed = gevent.event.Event()

    # -- lifecycle
    def start(self, expected: int = 0) -> None:
        self._expected = expected
        self._expected_total = expected
        self._warming = expected > 0
        if self._orphans is None and self.ledger is not None:
            left = sorted(j for jobs in self.ledger.orphans().values() for j in jobs)
            if left:
                log.warning("%s: allocation%s %s of a controller that is gone still hold%s nodes; `expegit resume` "
                            "collects what runs in them and gives them back", self.profile.name,
                            "s" if len(left) > 1 else "", ", ".join(left), "" if len(left) > 1 else "s")
        self.runs.prepare()
        self.launcher.start()
        self.provider.prepare(self.host, self.runs.workdir)
        if self._orphans and self._files_watched and self.packed is None:
            # Packing by resources does not take a dead controller's allocation over: which cores and
            # devices its re-attached executions hold is not known here, so new executions go to a new
            # allocation and the old one is given back once they end.
            self._adopt_orphans()
        self._manager = gevent.spawn(self._manage)

    def _adopt_orphans(self) -> None:
        """A resume re-attached executions that still run in the dead controller's allocations: take those
        allocations over instead of giving them back once the re-attached have ended. A new allocation
        would wait in the queue for the very nodes they hold (issue 10: a resume sat ~26 s with nothing
        new running); taken over, their free slots run the rest at once, and this controller gives them
        back like its own. Slots are held for the re-attached executions until each ends (the count is
        right; which node each runs on is not known, so a node may briefly carry one more)."""
        assert self._orphans is not None
        adopted: list[str] = []
        for path, jobs in list(self._orphans.items()):
            for job_id in jobs:
                if self.ledger is not None:
                    self.ledger.add(job_id)
                # Submitted "long ago": one that has ended meanwhile is dropped at the first squeue.
                self.allocations[job_id] = Allocation(job_id, 0.0, adopted=True)
                adopted.append(job_id)
            if self.ledger is not None:
                self.ledger.forget(path, jobs)
            del self._orphans[path]
        # The re-attached keep the slot numbers their records carry: new slots are numbered after them.
        self._next_index = max(self._next_index, max(self._reattached_indexes, default=-1) + 1)
        log.info("%s: took over allocation%s %s of the controller that is gone", self.profile.name,
                 "s" if len(adopted) > 1 else "", ", ".join(adopted))

    def _await_ready(self, alloc: Allocation) -> None:
        """Learn the moment a submitted allocation starts from its ready file (Slurm's placeholder writes
        it), instead of the next squeue: that saved up to a whole squeue interval per allocation."""
        for _ in range(3):  # the first ~90 s; after that the regular squeue interval is good enough
            if self._closed or alloc.state != "PENDING" or alloc.closing:
                return
            try:
                ready = self.provider.wait_ready(self.host, alloc.job_id, 30.0)
            except Exception as exc:  # noqa: BLE001 - an optimisation: squeue still sees the start
                log.debug("%s: waiting for allocation %s to start: %s", self.profile.name, alloc.job_id, exc)
                return
            if ready is not None:
                alloc.ready = ready
                self._wake.set()
                return

    def _places(self, alloc: Allocation) -> list[Place]:
        return [Place(self.profile.host, node, alloc.job_id) for node in alloc.nodes]

    def _forget(self, allocs: list[Allocation] | None, job_ids: list[str]) -> None:
        """Allocations that ended: their places go down, their agent and ready files on the frontend too."""
        for alloc in allocs or ():
            self.launcher.places_down(self._places(alloc), f"allocation {alloc.job_id} ended under the execution")
        if job_ids and self.provider.writes_ready_files:
            globs = " ".join(f"{shlex.quote(self.runs.workdir)}/agents/{shlex.quote(j)}.* "
                             f"{shlex.quote(self.runs.workdir)}/ready/{shlex.quote(j)}" for j in job_ids)
            self.host.run(f"rm -rf -- {globs}", timeout=60, warn=True)

    def close(self) -> None:
        self._closed = True
        if self._manager is not None:
            self._manager.kill(block=True)
            self._manager = None
        self.runs.stop_watching()
        self.launcher.drain()  # the last removals
        live = list(self.allocations.values())
        if live:
            ids = [a.job_id for a in live]
            if self._cancel(ids):
                if self.ledger is not None:
                    self.ledger.remove(ids)  # given back; only a failed cancel leaves them for a resume
                self._tidy(lambda: self._forget(live, ids))
        self.allocations.clear()
        if self._orphans:
            try:
                self._release_orphans(retry=True)
            except Exception as exc:  # noqa: BLE001 - best effort: say what is left, in one line
                log.warning("%s", self._left_behind(sorted(j for js in self._orphans.values() for j in js), exc))
        self.launcher.close()
        self.host.close()

    def _survive_drops(self, what: str, action: Callable[[], object]) -> None:
        """Run a one-off scheduler command again after a dropped connection, for ``cancel_retry_for``
        seconds: giving nodes back is idempotent, and a drop is not worth a line until it is final."""
        def quiet(state: object) -> None:
            outcome = getattr(state, "outcome", None)
            log.debug("%s: %s: link dropped (%s); retrying", self.profile.name, what,
                      outcome.exception() if outcome is not None else None)

        retrying(self.cancel_retry_for, link_dropped, what, before_sleep=quiet)(action)

    def _cancel(self, job_ids: list[str]) -> bool:
        """Give allocations back; False (and one line naming what is left and how to cancel it by hand)
        when the scheduler could not be told, even after the connection came back."""
        try:
            self._survive_drops("cancelling allocations", lambda: self.provider.cancel(self.host, job_ids))
            return True
        except Exception as exc:  # noqa: BLE001 - never a traceback at close: what is left is said instead
            log.warning("%s", self._left_behind(job_ids, exc))
            return False

    def _left_behind(self, job_ids: list[str], exc: BaseException) -> str:
        render = getattr(self.provider, "cancel_command", None)
        command = render(job_ids) if render is not None else None
        ssh = "ssh " + (f"-F {shlex.quote(self.profile.ssh_config)} " if self.profile.ssh_config else "")
        how = (f"cancel by hand with `{ssh}{shlex.quote(self.profile.host)} {command}`" if command else
               "cancel by hand with the scheduler's cancel command")
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        s = "s" if len(job_ids) > 1 else ""
        return (f"{self.profile.name}: allocation{s} {', '.join(job_ids)} may still hold nodes (cancelling "
                f"failed: {why}); {how}")

    def _tidy(self, action: Callable[[], object]) -> None:
        """Cosmetic clean-up on the frontend (agent and ready files): retried over a drop, else left."""
        try:
            self._survive_drops("removing allocation files", action)
        except Exception as exc:  # noqa: BLE001 - files in the workdir, nothing that holds nodes
            log.debug("%s: removing allocation files failed: %s", self.profile.name, exc)

    # -- slots
    def acquire(self, need: float | None = None) -> Slot:
        self._warming = False
        self._waiting += 1
        if need is not None and need > self.profile.allocation.walltime - self.margin:
            need = None  # no allocation would ever do: any slot (walltime.need's rule)
        if need is not None:
            self._needs.append(need)
        self._wake.set()
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if self._give_up:
                    raise NoSlot()
                try:
                    slot = self.pool.acquire(timeout=0.2)
                except gevent.queue.Empty:
                    continue
                alloc = self._slot_alloc.get(slot)
                if alloc is None or alloc.closing or not self._usable(alloc):
                    continue  # the allocation ended or is too close to its end: drop the slot
                if need is not None and not fits(need, alloc.expires, time.time()):
                    self.pool.release(slot)  # enough for others; this one waits for a longer allocation
                    gevent.sleep(0.2)
                    continue
                self._busy.add(slot)
                alloc.idle_since = None
                return slot
        finally:
            self._waiting -= 1
            if need is not None:
                self._needs.remove(need)

    def expires(self, slot: Slot) -> float | None:
        alloc = self._slot_alloc.get(slot)
        if alloc is not None:
            return alloc.expires
        # A re-attached execution's slot is made from what its launch wrote down (node, index), not by an
        # allocation of this controller: its end is that of the adopted allocation running on its node
        # (the earliest where several share the node, or where the node was not written down: better
        # warned early than killed at the walltime). None until a squeue has seen the adopted ones run.
        ends = [a.expires for a in self.allocations.values()
                if a.adopted and a.state == "RUNNING" and a.expires is not None
                and (slot.node is None or slot.node in a.nodes)]
        return min(ends) if ends else None

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        self.launcher.warn(handle, signal, grace)

    def drop_checkpoint(self, execution_id: str) -> None:
        self.host.run(render_remove(checkpoint_dir(self.runs.workdir, execution_id)), warn=True, timeout=60)
        if self.copies is not None:
            self.copies.drop(execution_id)

    def save_checkpoint(self, handle: RunHandle) -> float | None:
        if self.copies is None:
            return None
        directory = checkpoint_dir(self.runs.workdir, handle.execution_id)
        return self.copies.pull(self.host, directory, handle.execution_id)

    def _unmet_needs(self, now: float) -> bool:
        """Whether a waiter needs more time than any allocation held (running or pending) has left."""
        if not self._needs:
            return False
        best = max((self.profile.allocation.walltime if a.state != "RUNNING" else
                    (a.expires - now if a.expires is not None else float("inf")))
                   for a in self.allocations.values() if not a.closing) if self.allocations else 0.0
        return max(self._needs) > best

    def stop_waiting(self) -> None:
        """Ctrl-C while the allocation is still pending: acquire() raises NoSlot instead of waiting on."""
        self._give_up = True
        self._wake.set()
        self._capacity_changed.set()

    def release(self, slot: Slot) -> None:
        self._busy.discard(slot)
        if self.packed is not None:  # a packed slot exists only while its execution holds its binding
            self.packed.release(slot)
            alloc = self._slot_alloc.pop(slot, None)
            if alloc is not None and slot in alloc.slots:
                alloc.slots.remove(slot)
            self._capacity_changed.set()
            self._wake.set()
            return
        alloc = self._slot_alloc.get(slot)
        if alloc is None or alloc.closing:
            return
        self.pool.release(slot)
        self._wake.set()

    # -- packing by resources (Slurm)
    def check_requests(self, requests: Sequence[Request]) -> None:
        """Refuse, before anything is created, a request that fits no node of the profile (node sizes from
        its allocation's *_per_node keys, else one ``sinfo`` of its partition); then place by resources."""
        if not requests:
            return
        if not getattr(self.provider, "places_by_resources", False):
            super().check_requests(requests)  # the one-line refusal, with the way out
        if self.profile.launcher != "agent":
            raise ProfileError(f"profile {self.profile.name!r}: launcher: {self.profile.launcher} cannot bind "
                               f"executions to their cores and GPUs; use launcher: agent with resources:")
        sizes = self._node_sizes()
        where = f"partition {self.profile.allocation.partition}" if self.profile.allocation.partition else "nodes"
        for request in dict.fromkeys(requests):
            if not any(size.fits(request) for size in sizes):
                raise ResourceError(
                    f"resources {request.render()} fit no node of profile {self.profile.name!r} ({where}: "
                    f"{describe_sizes(sizes) or 'none'}); ask for less, or a partition with bigger nodes "
                    f"(allocation.partition)")
        # The node size the request is derived from: the biggest one (Slurm picks nodes that fit).
        self._node_size = max(sizes, key=lambda n: (n.gpus, n.cpus, n.memory or 0))
        self._requests = list(dict.fromkeys([*self._requests, *requests]))
        if self.packed is None:
            self.packed = PackedSlots(self.profile.name, getattr(self.profile, "limit_memory", None))
            self.packed.configure([])  # nodes join as allocations start (node_capacities)
            starter = getattr(self.launcher, "starter", None)
            if starter is not None and hasattr(starter, "whole"):
                starter.whole = True  # the node agent step must hold every core of its node to bind them

    def _node_sizes(self) -> list[NodeSize]:
        spec = self.profile.allocation
        declared = (spec.cpus_per_node, spec.gpus_per_node, spec.memory_per_node)
        if spec.cpus_per_node is not None and spec.gpus_per_node is not None:
            return [NodeSize(spec.cpus_per_node, spec.gpus_per_node, spec.memory_per_node)]
        sizes = self.provider.node_sizes(self.host, spec.partition)  # type: ignore[attr-defined]
        if not sizes:
            raise ProfileError(f"profile {self.profile.name!r}: sinfo lists no node"
                               + (f" in partition {spec.partition!r}" if spec.partition else ""),
                               hint="check allocation.partition")
        cpus, gpus, memory = declared
        return [NodeSize(cpus if cpus is not None else n.cpus, gpus if gpus is not None else n.gpus,
                         memory if memory is not None else n.memory, n.names) for n in sizes]

    def node_request(self) -> NodeRequest | None:
        """What each node of the next allocation asks for (None: whole nodes, as without resources:)."""
        if self.packed is None or self._node_size is None:
            return None
        spec = self.profile.allocation
        nodes = max(1, int(spec.nodes))
        # A campaign smaller than the nodes' room asks only for what its executions can use at once.
        per_node = math.ceil(self._expected_total / nodes) if self._expected_total else None
        derived = derive_node_request(self._requests, self._node_size, per_node=per_node, gpu_option=spec.gpu_option)
        return NodeRequest(spec.cpus_per_node if spec.cpus_per_node is not None else derived.cpus,
                           spec.gpus_per_node if spec.gpus_per_node is not None else derived.gpus,
                           spec.memory_per_node if spec.memory_per_node is not None else derived.memory,
                           spec.gpu_option)

    def acquire_for(self, requests: Sequence[Request], wait: bool = True) -> tuple[int, Slot] | None:
        if self.packed is None:
            self.check_requests(requests)
        if self.packed is None:  # not placing by resources (no requests): a plain slot
            return 0, self.acquire()
        self._warming = False
        counted = False
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if self._give_up:
                    raise NoSlot()
                placed = self._place(requests)
                if placed is not None or not wait:
                    return placed
                if not counted:  # a waiter the free capacity cannot serve: the manager may ask for more
                    counted = True
                    self._waiting += 1
                    self._wake.set()
                self._capacity_changed.clear()
                self._capacity_changed.wait(timeout=0.5)
        finally:
            if counted:
                self._waiting -= 1

    def _place(self, requests: Sequence[Request]) -> tuple[int, Slot] | None:
        assert self.packed is not None and self.packed.packer is not None
        packer = self.packed.packer
        while True:
            chosen = packer.choose(requests)
            if chosen is None:
                return None
            index, binding = chosen
            job_id, _, node = binding.node.partition("/")
            alloc = self.allocations.get(job_id)
            if alloc is None or alloc.closing or not self._usable(alloc):
                # Gone, or too close to its end (nodes join only once it runs): none of its nodes takes work.
                packer.release(binding)
                packer.remove(binding.node)
                for name in alloc.nodes if alloc is not None else ():
                    packer.remove(f"{job_id}/{name}")
                continue
            used = {s.index for s in alloc.slots if s.node == node}
            slot = Slot(self.profile.host, next(i for i in range(len(used) + 1) if i not in used), node, job_id)
            self.packed.bindings[slot] = binding
            alloc.slots.append(slot)
            self._slot_alloc[slot] = alloc
            self._busy.add(slot)
            alloc.idle_since = None
            return index, slot

    def _read_capacities(self, alloc: Allocation) -> list[NodeCapacity]:
        """What the scheduler gave each node of an allocation that starts running."""
        capacities = self.provider.node_capacities(  # type: ignore[attr-defined]
            self.host, alloc.job_id, len(alloc.nodes), self.node_request())
        for capacity in capacities:
            log.info("%s: allocation %s node %s: %s", self.profile.name, alloc.job_id,
                     capacity.name.partition("/")[2], capacity.describe())
        return capacities

    def _add_capacities(self, capacities: Sequence[NodeCapacity]) -> None:
        """A running allocation's nodes join the packer (after it is RUNNING: only then may they take work)."""
        if self.packed is None or self.packed.packer is None or not capacities:
            return
        for capacity in capacities:
            self.packed.packer.add(capacity)
        self._capacity_changed.set()

    def _remove_capacities(self, alloc: Allocation) -> None:
        if self.packed is None or self.packed.packer is None:
            return
        for node in alloc.nodes:
            self.packed.packer.remove(f"{alloc.job_id}/{node}")
        for slot in alloc.slots:  # their executions are lost with it; nothing is given back to a new node
            self.packed.bindings.pop(slot, None)

    def _usable(self, alloc: Allocation) -> bool:
        return alloc.state == "RUNNING" and (alloc.expires is None or alloc.expires - time.time() > self.margin)

    # -- the manager: the only place that talks to the scheduler
    def _manage(self) -> None:
        failures = 0
        while not self._closed:
            try:
                self._tick()
                failures = 0
            except SchedulerError as exc:
                failures += 1
                log.warning("%s: %s", self.profile.name, exc)
                if failures >= 5 or not self.allocations:
                    self.error = exc
            except Exception as exc:  # the connection: keep trying, the Host reconnects
                failures += 1
                # A link that drops once (an sshd restart) is back by the next tick: not worth a line.
                (log.debug if link_dropped(exc) and failures < 3 else log.warning)(
                    "%s: scheduler poll failed: %s", self.profile.name, exc)
                if failures >= 10:
                    self.error = exc
            self._wake.clear()
            self._wake.wait(timeout=self.profile.squeue_interval)
            gevent.sleep(0 if failures == 0 else min(30.0, failures * self.profile.squeue_interval))

    def _tick(self) -> None:
        now = time.time()
        if self._orphans and not self._files_watched:
            try:
                self.release_orphans()  # what the resume re-attached has ended: their nodes can go
            except Exception as exc:  # noqa: BLE001 - never the campaign's failure; close() tries again
                (log.debug if link_dropped(exc) else log.warning)(
                    "%s: releasing allocations %s failed: %s", self.profile.name,
                    sorted(j for jobs in (self._orphans or {}).values() for j in jobs), exc)
        for alloc in list(self.allocations.values()):
            if alloc.state == "PENDING" and alloc.ready is not None:
                start, nodes = alloc.ready
                left = self.profile.allocation.walltime - max(0.0, now - start)
                self._update(alloc, JobState(alloc.job_id, "RUNNING", left, tuple(nodes)), now)
        # squeue at most once per interval, however often the manager is woken.
        if self.allocations and now - self._last_squeue >= self.profile.squeue_interval:
            self._last_squeue = now
            self.squeue_calls += 1
            states = self.provider.poll(self.host, list(self.allocations))
            for job_id, alloc in list(self.allocations.items()):
                self._update(alloc, states.get(job_id), now)
        # Demand: waiters that no free slot will serve. Submit at most one pending allocation at a time.
        pending = [a for a in self.allocations.values() if a.state != "RUNNING"]
        usable_free = 0 if self.packed is not None else \
            sum(1 for a in self.allocations.values() if self._usable(a) for s in a.slots if s not in self._busy)
        demand = max(self._waiting, self._expected if not self.allocations else 0)
        self._expected = 0  # only the first allocation is asked for ahead of the first acquire()
        if (demand > usable_free or self._unmet_needs(now)) and not pending and \
                len(self.allocations) < self.profile.max_allocations:
            per_node = self.node_request()
            if per_node is not None:
                job_id = self.provider.submit(self.host, self.profile.allocation, self.job_name,  # type: ignore[call-arg]
                                              per_node=per_node)
            else:
                job_id = self.provider.submit(self.host, self.profile.allocation, self.job_name)
            if self.ledger is not None:
                self.ledger.add(job_id)
            log.info("%s: submitted allocation %s", self.profile.name, job_id)
            alloc = self.allocations[job_id] = Allocation(job_id, now)
            gevent.spawn(self._await_ready, alloc)
        self.submitted.set()
        # Drained: no one waiting and nothing running on it for idle_release -> give the nodes back.
        to_cancel = []
        for alloc in list(self.allocations.values()):
            if alloc.state != "RUNNING":
                if self._waiting == 0 and alloc.state == "PENDING" and not self._busy and not self._warming:
                    to_cancel.append(alloc)
                continue
            busy = any(s in self._busy for s in alloc.slots)
            if not busy and not self._usable(alloc):
                to_cancel.append(alloc)  # too close to its walltime to take work: give it back now
                continue
            if busy or self._waiting > 0 or self._warming:
                alloc.idle_since = None
                continue
            alloc.idle_since = alloc.idle_since or now
            if now - alloc.idle_since >= self.profile.idle_release:
                to_cancel.append(alloc)
        if to_cancel:
            for alloc in to_cancel:
                self._drop(alloc)
            ids = [a.job_id for a in to_cancel]
            if self._cancel(ids):
                self._tidy(lambda: self._forget(to_cancel, ids))
                log.info("%s: released allocations %s", self.profile.name, ids)
            elif self.ledger is not None:
                for job_id in ids:  # still held: a resume gives them back
                    self.ledger.add(job_id)

    def _update(self, alloc: Allocation, state: JobState | None, now: float) -> None:
        if state is not None and state.state == "COMPLETING" and alloc.state in ("RUNNING", "COMPLETING"):
            # Ending, or being requeued (preemption, `scontrol requeue` show COMPLETING first, then
            # PENDING): no more work goes to it, and the next poll tells which.
            alloc.state = "COMPLETING"
            return
        if state is None or state.state in ENDED_STATES:
            if state is None and alloc.state == "PENDING" and now - alloc.submitted < 5:
                return  # a fresh submission may not be listed yet
            log.info("%s: allocation %s ended (%s)", self.profile.name, alloc.job_id,
                     state.state if state else "gone")
            if state is not None:
                alloc.state = state.state  # what wait() tells its executions (PREEMPTED, TIMEOUT, ...)
            self._drop(alloc)
            return
        if state.running and alloc.state == "RUNNING" and alloc.started and state.started and \
                state.started != alloc.started:
            # Requeued and started again between two polls: what ran in it was killed all the same.
            alloc.state = "REQUEUED"
            self._requeue(alloc)
        if state.running and alloc.state == "RUNNING" and not alloc.started:
            alloc.started = state.started  # the ready file said it started; squeue says when
        if state.running and alloc.state == "COMPLETING":
            alloc.state = "REQUEUED"  # requeued and running again since the poll that saw it ending
            self._requeue(alloc)
        if state.running and alloc.state != "RUNNING":
            alloc.started = state.started
            alloc.nodes = state.nodes
            # Raises (the probe step failed): the allocation stays pending, the next tick retries.
            capacities = self._read_capacities(alloc) if self.packed is not None else []
            # Raises (node agents that do not answer): the allocation stays pending, the next tick retries.
            self.launcher.places_up(self._places(alloc))
            alloc.state = "RUNNING"
            if alloc.requeued:
                alloc.requeued = False
                log.warning("%s: allocation %s is running again (on %s)", self.profile.name, alloc.job_id,
                            render_nodelist(alloc.nodes))
            walltime = self.profile.allocation.walltime
            alloc.expires = now + (state.time_left if state.time_left is not None else walltime)
            self._add_capacities(capacities)
            holders = [e for e in sorted(self._files_watched) if e not in self._reserved] if alloc.adopted else []
            for node in alloc.nodes if self.packed is None else ():  # packed: slots are made as placed
                for _ in range(self.profile.slots_per_node):
                    slot = Slot(self.profile.host, self._next_index, node, alloc.job_id)
                    self._next_index += 1
                    alloc.slots.append(slot)
                    self._slot_alloc[slot] = alloc
                    if holders:  # held until that re-attached execution ends (see _adopt_orphans)
                        self._reserved[holders.pop()] = slot
                        self._busy.add(slot)
                    else:
                        self.pool.add(slot)
        elif state.running and state.time_left is not None:
            alloc.expires = now + state.time_left
        elif not state.running:
            was_running = alloc.state in ("RUNNING", "COMPLETING")
            alloc.state = state.state
            alloc.reason = state.reason
            if was_running:
                self._requeue(alloc)

    def _requeue(self, alloc: Allocation) -> None:
        """The scheduler put a running allocation back in its queue (``scontrol requeue``, preemption with
        requeue): every step in it was killed, so its executions are lost now (their retries wait for it
        to run again, or for another allocation), and its places come back fresh when it runs again.
        One line says so: the node agents' links must not each report their failed re-attaches."""
        error = f"allocation {alloc.job_id} was requeued by the scheduler under the execution"
        log.warning("%s: allocation %s was requeued by the scheduler: waiting for it to run again",
                    self.profile.name, alloc.job_id)
        held = {slot: eid for eid, slot in self._reserved.items() if slot in alloc.slots}
        self._remove_capacities(alloc)
        for slot in alloc.slots:
            self.pool.retire(slot)
            self._slot_alloc.pop(slot, None)
            if slot in held:  # a re-attached execution's: it is watched through its files, not waited here
                del self._reserved[held[slot]]
                self._busy.discard(slot)
            elif slot in self._busy:  # wait() tells its execution why it was lost
                self._requeued[slot] = error
        alloc.slots = []
        self.launcher.places_down(self._places(alloc), error)
        alloc.nodes, alloc.expires, alloc.idle_since, alloc.ready = (), None, None, None
        alloc.requeued, alloc.adopted = True, False
        # Its old agents' directories and ready file would be taken for the new run's.
        self._tidy(lambda: self._forget(None, [alloc.job_id]))
        if alloc.state == "PENDING" and self.provider.writes_ready_files:
            gevent.spawn(self._await_ready, alloc)

    def _drop(self, alloc: Allocation) -> None:
        alloc.closing = True
        self._remove_capacities(alloc)
        for slot in alloc.slots:
            self.pool.retire(slot)
        self.allocations.pop(alloc.job_id, None)
        self.launcher.places_down(self._places(alloc), f"allocation {alloc.job_id} ended under the execution")
        if self.ledger is not None:
            self.ledger.remove([alloc.job_id])

    def waiting_for(self) -> str | None:
        """What executions wait on when no slot can take them: the allocation the scheduler has not
        started yet, with its reason (shown on the progress line: on a busy cluster that can be hours)."""
        if self._waiting == 0 or any(self._usable(a) for a in self.allocations.values()):
            return None
        for alloc in self.allocations.values():
            if alloc.state == "RUNNING" or alloc.closing:
                continue
            if alloc.ready is not None:
                return f"allocation {alloc.job_id} starting on {render_nodelist(alloc.ready[1])}"
            reason = f" ({alloc.reason})" if alloc.reason and alloc.reason != "None" else ""
            return f"allocation {alloc.job_id} {alloc.state.lower()}{reason}"
        return None

    # -- allocations a dead controller left (recorded in the ledger)
    def release_orphans(self) -> list[str]:
        """Cancel the allocations of controllers that are gone; what ran in them is over or lost."""
        return self._release_orphans()

    def _release_orphans(self, retry: bool = False) -> list[str]:
        """``retry``: over a dropped connection too (at close; the manager's next tick retries anyway)."""
        if self.ledger is None:
            return []
        if self._orphans is None:
            self._orphans = self.ledger.orphans()
        released = []
        for path, jobs in list(self._orphans.items()):
            if not self.runs.workdir:
                self.runs.prepare()
            if retry:
                self._survive_drops("cancelling allocations", lambda: self.provider.cancel(self.host, jobs))
            else:
                self.provider.cancel(self.host, jobs)
            self._tidy(lambda: self._forget(None, jobs))
            self.ledger.forget(path, jobs)
            del self._orphans[path]
            released += jobs
        if released:
            log.info("%s: released allocations %s of a controller that is gone", self.profile.name, released)
        return released

    # -- executions
    def allocation_of(self, slot: Slot) -> AllocationInfo | None:
        alloc = self._slot_alloc.get(slot)
        return AllocationInfo(alloc.job_id, alloc.nodes) if alloc is not None else None

    def _alloc_of(self, slot: Slot) -> Allocation:
        alloc = self._slot_alloc.get(slot)
        if alloc is None or slot.node is None:
            raise SchedulerError(f"slot {slot} belongs to no allocation of profile {self.profile.name}")
        return alloc

    def launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        alloc = self._alloc_of(slot)
        assert slot.node is not None
        env = {**self.profile.env, **job.env, "ORCHESTRA_EXECUTION_ID": job.execution_id,
               "ORCHESTRA_SLOT": str(slot.index), "ORCHESTRA_NODE": slot.node,
               "ORCHESTRA_ALLOCATION": alloc.job_id}
        resumed_from = None
        if job.checkpoint is not None:
            # On the workdir the nodes share: the next attempt, on any node of any allocation, finds it.
            directory = checkpoint_dir(self.runs.workdir, job.execution_id)
            result = self.host.run(render_prepare(directory), warn=True, timeout=60)
            resumed_from = parse_prepare(result.stdout)
            if self.copies is not None:
                resumed_from = self.copies.restore(self.host, directory, job.execution_id, resumed_from)
            env[CHECKPOINT_ENV] = directory
        place = Place(self.profile.host, slot.node, alloc.job_id)
        bound = self.packed.bound(slot, job, env) if self.packed is not None else None
        if bound is None:
            handle = self.launcher.launch(place, slot, job, code, env)
        else:
            handle = self.launcher.launch(place, slot, bound.job, code, bound.env,  # type: ignore[call-arg]
                                          affinity=bound.affinity, meta=bound.meta)
            handle.binding = dataclasses.replace(bound.binding, node=slot.node)
        handle.resumed_from = resumed_from
        return handle

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        outcome = self.launcher.wait(handle, timeout)
        alloc = self._slot_alloc.get(handle.slot)
        if alloc is not None and not outcome.timed_out and (outcome.lost or (outcome.exit_code or 0) > 128):
            # Lost, or killed by a signal: if its allocation ended (walltime, scancel, node failure) or was
            # requeued at the same time, it was lost with it, which a retry policy treats differently
            # from a crash.
            deadline = time.time() + 2 * self.profile.squeue_interval + 2
            self._wake.set()
            while not alloc.closing and handle.slot not in self._requeued and time.time() < deadline:
                gevent.sleep(0.1)
            if alloc.closing:
                preempted = alloc.state == "PREEMPTED"  # preemption in CANCEL mode ends the allocation
                return dataclasses.replace(outcome, lost=True, preempted=preempted,
                                           error=f"allocation {alloc.job_id} "
                                                 f"{'was preempted' if preempted else 'ended'} under the execution")
        requeued = self._requeued.pop(handle.slot, None)
        if requeued is not None and not outcome.timed_out:
            return dataclasses.replace(outcome, lost=True, exit_code=None, error=requeued, preempted=True)
        return outcome

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        return self.launcher.collect(handle, job, dest)

    def discard(self, handle: RunHandle) -> None:
        self.launcher.discard(handle)
        self._files_watched.discard(handle.execution_id)
        held = self._reserved.pop(handle.execution_id, None)
        if held is not None:  # the re-attached execution ended: its slot of the taken-over allocation is free
            self._busy.discard(held)
            alloc = self._slot_alloc.get(held)
            if alloc is not None and not alloc.closing and alloc.state == "RUNNING":
                self.pool.add(held)
                self._wake.set()

    def stop(self, handle: RunHandle) -> None:
        self.launcher.stop(handle)

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        return self.launcher.read_output(handle, offsets)

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        return self.launcher.read_meta(handle, name, offset)

    def transports(self) -> list[Transport]:
        return [self.host]

    def workdirs(self) -> dict[str, str]:
        return {self.profile.host: self.runs.workdir}

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        """Re-attach by the launcher (srun) still alive on the frontend; the slot is not re-counted
        because the allocation it ran in is not adopted by this controller."""
        if host is not None and host != self.profile.host:
            return None
        if self._orphans is None and self.ledger is not None:
            # A resume: the dead controller's allocations go once what is re-attached in them has ended.
            self._orphans = self.ledger.orphans()
        found = self.launcher.find(execution_id, self.profile.host, remote_dir)
        if found is None:
            return None
        self._files_watched.add(execution_id)
        if slot is None:  # launched within the running-commit delay: its launch wrote down slot and node
            slot = found.slot
        if slot is not None and slot >= 0:
            self._reattached_indexes.add(slot)
        return RunHandle(execution_id, Slot(self.profile.host, slot if slot is not None else -1, found.node),
                         found.remote_dir, pid=found.pid, started=found.started)


__all__ = ["Allocation", "AllocationBackend"]
