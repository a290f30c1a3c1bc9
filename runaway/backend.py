"""The seam between the controller (which executions run, in what order) and the places they run on.

A backend owns slots (places where one execution runs at a time) and everything host-specific: shipping
code, launching detached, watching, collecting outputs. The controller only acquires slots, launches jobs
and waits for outcomes; it never knows whether a slot is a local process, an SSH host or a Slurm node.
Every method may block: callers run them in greenlets, so a backend waits with gevent-friendly calls.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import gevent.event
    from orchestra.checkpoint import CheckpointPolicy
    from orchestra.resources import Request

    from .placement import Binding

    from .transports import Transport

# A function that yields the bytes of an uncompressed tar of a commit's tree (expegit provides it).
CodeArchive = Callable[[str], Iterable[bytes]]


@dataclasses.dataclass(frozen=True)
class Slot:
    """One place on one node where one execution runs at a time."""

    host: str
    index: int
    node: str | None = None  # scheduler node name when it differs from the host reached by SSH
    allocation: str | None = None  # the scheduler's job id of the allocation the node belongs to


@dataclasses.dataclass(frozen=True)
class Job:
    """What a backend needs to run one execution: nothing about git, records or searches."""

    execution_id: str
    commit: str
    command: str  # a shell command line whose user-supplied parts are already quoted
    outputs: tuple[str, ...] = ()  # globs, relative to the run directory
    timeout: float | None = None  # seconds
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # What it needs (manifest `resources:`, resolved for its parameters); None: one slot, as without packing.
    resources: "Request | None" = None
    # `checkpoint:` of the manifest: gets ORCHESTRA_CHECKPOINT_DIR, a warning before the walltime, and may
    # start with less time left than its timeout. None: none of that, at no cost.
    checkpoint: "CheckpointPolicy | None" = None


@dataclasses.dataclass
class RunHandle:
    """Where a launched execution lives; its fields go into the record so `resume` can re-attach."""

    execution_id: str
    slot: Slot
    remote_dir: str
    pid: int | None = None
    started: float | None = None  # epoch seconds, as seen by the host that ran it
    binding: "Binding | None" = None  # the cores, devices and memory limit it got (packing by resources)
    # Epoch of the newest file in its checkpoint directory at launch: what this attempt resumed from.
    resumed_from: float | None = None


@dataclasses.dataclass
class Outcome:
    """How an execution ended. ``lost`` means the slot's node or allocation vanished under it."""

    exit_code: int | None
    started: float | None
    ended: float | None
    timed_out: bool = False
    lost: bool = False
    error: str | None = None
    walltime: bool = False  # stopped (warned, then killed) because its allocation was about to end
    preempted: bool = False  # its allocation was preempted or requeued by the scheduler


@dataclasses.dataclass
class Collected:
    """Results brought back: stdout, stderr and the outputs matched by the globs.

    Either files under ``directory``, or, when ``contents`` is set, bytes held in memory (relative path
    -> data; ``directory`` then does not exist). Why the second form: small results of short remote
    executions went straight from the network into git, while writing them to disk first cost more than
    the rest of the controller's work per execution (measured: ~0.7 ms per small file on this disk).
    """

    directory: Path
    stdout: Path
    stderr: Path
    outputs: list[str]  # relative paths under ``directory``, sorted
    contents: Mapping[str, bytes] | None = None

    def source(self, rel: str) -> Path | bytes:
        """What to commit for ``rel``: its bytes when held in memory, else its path."""
        if self.contents is not None:
            return self.contents.get(rel, b"")
        return self.directory / rel

    def read(self, rel: str) -> bytes | None:
        """The bytes of ``rel`` (a relative path such as an output or ``.orchestra/stdout``), or None."""
        if self.contents is not None:
            return self.contents.get(rel)
        try:
            return (self.directory / rel).read_bytes()
        except OSError:
            return None

    def materialized(self) -> "Collected":
        """The same results as files under ``directory`` (for callers that hand paths on)."""
        if self.contents is None:
            return self
        for rel, data in self.contents.items():
            path = self.directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for path in (self.stdout, self.stderr):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        return dataclasses.replace(self, contents=None)


# Which run directories stay on the host once their results are committed (`--leave`).
LEAVE_POLICIES = ("none", "failed", "all")


@dataclasses.dataclass(frozen=True)
class AllocationInfo:
    """Which allocation a slot belongs to (what `runaway test` shows)."""

    job_id: str
    nodes: tuple[str, ...]


class NoSlot(Exception):
    """acquire() gave up because the controller is stopping (a slot may never come: an allocation the
    scheduler keeps pending)."""


class Backend(Protocol):
    """What the controller, the runner and `runaway` call: every method any caller uses is declared here,
    so no caller probes a backend with getattr. A backend is a provider (where places come from) plus a
    launcher (how executions start and are watched) over transports; runaway/factory.py builds them."""

    name: str
    # Seconds an execution may run before its "running" journal commit is written. Local runs can be found
    # again from their run directory alone, so short ones skip that commit; a remote backend needs the
    # record's host and directory to re-attach, so it keeps 0.
    running_commit_delay: float
    # Set once the first allocation is asked for (or none is needed): `expegit run` creates its branches
    # after that, so an allocation queues meanwhile instead of after them.
    submitted: "gevent.event.Event"

    def start(self, expected: int = 0) -> None:
        """Connect, start allocations; slots become available through acquire().

        ``expected``: how many executions are about to come (0: unknown). A scheduler backend asks for
        its first allocation at once when it knows work is coming, instead of at the first acquire().
        """

    def acquire(self, need: float | None = None) -> Slot:
        """Block until a slot is free, and hold it; raises NoSlot once ``stop_waiting()`` was called.

        ``need``: seconds the slot's allocation must still have (runaway/walltime.py); fixed places have
        no end and ignore it."""

    def expires(self, slot: Slot) -> float | None:
        """When the slot's allocation ends (epoch seconds, as the provider last said); None: never."""

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        """Send ``signal`` to a running execution, then SIGKILL after ``grace`` (the checkpoint warning)."""

    def drop_checkpoint(self, execution_id: str) -> None:
        """Remove an execution's checkpoint directory: it finished (called only for checkpointing ones)."""

    def save_checkpoint(self, handle: RunHandle) -> float | None:
        """Copy the attempt's checkpoint directory back to the controller where its place shares no
        filesystem with the next attempt's (a profile's ``shared: false``): between attempts and every
        ``checkpoint.every``. The newest file's epoch in the copy; None when nothing was copied (a shared
        place, nothing saved yet). Raises when the copy failed: the last whole copy stays."""

    def stop_waiting(self) -> None:
        """The controller stops: a slot that may never come (a pending allocation) is not waited for."""

    def waiting_for(self) -> str | None:
        """What executions wait on when no slot can take them (a pending allocation and its reason)."""

    def release(self, slot: Slot) -> None:
        """Give a slot back (after its execution was collected or abandoned)."""

    def check_requests(self, requests: Sequence["Request"]) -> None:
        """Refuse (ProfileError naming the profile, its node size and the request) what no node can ever
        run, before anything is created; the backend packs by resources from then on."""

    def acquire_for(self, requests: Sequence["Request"], wait: bool = True) -> tuple[int, Slot] | None:
        """Place one of the waiting requests (which one is the packing rule's choice: runaway/placement.py)
        and hold its binding under the returned slot; None when ``wait`` is False and none fits now.
        Raises NoSlot once ``stop_waiting()`` was called."""

    def launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        """Ship the job's code if the slot's host lacks it, and start the job detached."""

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        """Block until the execution ends (or its timeout passes: then stop it and say so)."""

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        """Bring stdout, stderr and outputs into ``dest``; the remote copy stays until discard()."""

    def discard(self, handle: RunHandle) -> None:
        """Remove the run directory: called only after the results were committed."""

    def stop(self, handle: RunHandle) -> None:
        """Stop a running execution (Ctrl-C, cancellation)."""

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        """stdout and stderr written past ``offsets`` (bytes already read) while it runs (`runaway exec`)."""

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        """The run directory's ``.orchestra/NAME`` past ``offset`` while it runs (intermediate metrics);
        raises when the place cannot be read now (the caller asks again from the same offset)."""

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        """A handle for an execution launched by an earlier controller, or None if nothing is left."""

    def release_orphans(self) -> list[str]:
        """Give back the allocations of controllers that are gone (their job ids); [] without a scheduler."""

    def allocation_of(self, slot: Slot) -> AllocationInfo | None:
        """The allocation a slot belongs to; None for fixed places."""

    def transports(self) -> list[Transport]:
        """How the backend reaches its places (empty for this machine): `runaway test` checks them."""

    def workdirs(self) -> dict[str, str]:
        """Each host's work directory, once started."""

    def close(self) -> None:
        """Release allocations and connections."""
