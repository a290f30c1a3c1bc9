"""The ``local`` backend: executions are processes on this machine, one per slot.

Executions are started by the same agent that runs them on SSH hosts and Slurm nodes
(runaway/agent/), here reached through its unix socket instead of an SSH channel. Why: the
agent is a second process, so creating run directories, spawning and reaping happen on the other
core while the controller commits; and it recycles run directories, which on the disks measured
here cut most of an execution's cost (a new inode costs ~1 ms of kernel time, see agent.RunDirs).
Each execution still runs in its own copy of the code under the campaign's ``.git/orchestra/``, in its
own session, so it survives the controller (kill -9 included) and `resume` re-attaches through its
run directory's files (:class:`LocalFiles`, the agent launcher's fallback here).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import tarfile
import time
from pathlib import Path

from collections.abc import Mapping, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue

from . import agent as agent_protocol
from .agent import pid_alive
from .agent.posix import is_wrapper_of
from .agent_link import AgentLink, attach_argv
from orchestra.resources import Request

from .backend import AllocationInfo, CodeArchive, Collected, Job, Outcome, RunHandle, Slot
from .capacity import local_capacity
from .checkpoints import ENV_NAME as CHECKPOINT_ENV, checkpoint_dir, prepare_local, remove_local
from .packed import PackedSlots
from .placement import BINDING_FILE, NodeCapacity
from .launchers import Found, Place
from .launchers.agent import AgentLauncher, AgentRuns
from .rundir import EXIT_FILE, MARKER, META_DIR, PID_FILE, STDERR_FILE, STDOUT_FILE, STOP_GRACE, match_outputs, parse_exit_code
from .transports import Transport
from .transports.local import AgentSocketSession, LocalTransport

POLL_INTERVAL = 0.2
AGENT_IDLE_EXIT = 30.0  # seconds a local agent outlives its last controller and execution


class _IterReader:
    """A file-like view of an iterator of byte chunks, for tarfile's streaming mode."""

    def __init__(self, chunks) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def extract_tar_stream(chunks, dest: Path) -> None:
    """Extract a tar stream into ``dest`` refusing absolute paths, '..' and links that leave it."""
    with tarfile.open(fileobj=_IterReader(chunks), mode="r|") as tar:
        tar.extractall(dest, filter="data")


PLACE = Place("localhost")


class _PlaceFiles:
    """What AgentRuns needs of this machine: the code cache and run directory names, as local paths."""

    def __init__(self, backend: "LocalBackend") -> None:
        self.backend = backend

    def ensure_code(self, commit: str, code: CodeArchive) -> str:
        return str(self.backend.code_dir(commit, code))

    def run_dir(self, execution_id: str) -> str:
        return str(self.backend.run_dir(execution_id))


class LocalAgent:
    """The starter of this machine's agent: a new agent version gets its own directory and socket."""

    def __init__(self, backend: "LocalBackend") -> None:
        self.backend = backend

    def install(self) -> None:
        return None

    def start(self, places: Sequence[Place]) -> dict[Place, tuple[AgentRuns, dict[str, str]]]:
        workdir = self.backend.workdir
        source = agent_protocol.write_bundle(workdir / "bin")  # the same one file a remote host runs
        digest = agent_protocol.bundle_digest()
        agent_dir = workdir / "agents" / f"local-{digest}"  # a new version gets its own agent
        argv = attach_argv(sys.executable, source, str(agent_dir), str(workdir), spawn=True,
                           idle_exit=AGENT_IDLE_EXIT)
        argv[2] = "ensure"  # start it if needed; then this controller talks to its socket directly
        # The environment executions start from is this controller's, not the agent's (which may have
        # been started by an earlier run in another shell): sent on every (re)connection.
        env = agent_protocol.render_request("env", env={**os.environ, **self.backend.env})
        log = agent_dir.parent / f"local-{digest}.start.log"
        link = AgentLink(lambda: AgentSocketSession(agent_dir, agent_protocol.SOCKET_NAME, argv, log), "local agent",
                         greeting=[env], spool_dir=workdir)
        link.start()
        return {place: (AgentRuns(_PlaceFiles(self.backend), link), {}) for place in places}


class LocalFiles:
    """Executions an earlier controller started here, watched through their run directories' files
    (not ours to reap); their results are on this machine already, so committing reads them in place."""

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        deadline = None if timeout is None else (handle.started or time.time()) + timeout
        run_dir = Path(handle.remote_dir)
        timed_out = False
        while True:
            code = read_exit(run_dir)
            if code is not None:
                break
            if handle.pid is not None and not is_our_wrapper(handle.pid, run_dir):
                gevent.sleep(POLL_INTERVAL)  # it may have just written exit_code
                code = read_exit(run_dir)
                if code is None:
                    return Outcome(None, handle.started, time.time(), lost=True,
                                   error="the process vanished without an exit code")
                break
            if deadline is not None and time.time() > deadline and handle.pid is not None and not timed_out:
                timed_out = True
                gevent.spawn(kill_group, handle.pid)
            gevent.sleep(POLL_INTERVAL)
        ended = mtime(run_dir / EXIT_FILE) or time.time()
        return Outcome(code, handle.started, ended, timed_out=timed_out)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        run_dir = Path(handle.remote_dir)
        return Collected(run_dir, run_dir / STDOUT_FILE, run_dir / STDERR_FILE, match_outputs(run_dir, job.outputs))

    def discard(self, handle: RunHandle) -> None:
        shutil.rmtree(handle.remote_dir, ignore_errors=True)

    def stop(self, handle: RunHandle) -> None:
        if handle.pid is not None and is_our_wrapper(handle.pid, Path(handle.remote_dir)):
            try:
                os.killpg(handle.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def warn(self, handle: RunHandle, sig: int, grace: float) -> None:
        if handle.pid is not None and is_our_wrapper(handle.pid, Path(handle.remote_dir)):
            gevent.spawn(kill_group, handle.pid, sig, grace)

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        chunks = []
        for name, offset in zip(("stdout", "stderr"), offsets):
            try:
                with open(f"{handle.remote_dir}/.orchestra/{name}", "rb") as stream:
                    stream.seek(offset)
                    chunks.append(stream.read())
            except OSError:
                chunks.append(b"")
        return chunks[0], chunks[1]

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        """``.orchestra/NAME`` past ``offset`` (intermediate metrics); b"" while it does not exist."""
        try:
            with open(f"{handle.remote_dir}/.orchestra/{name}", "rb") as stream:
                stream.seek(offset)
                return stream.read()
        except FileNotFoundError:
            return b""

    def find(self, execution_id: str, host: str, remote_dir: str | None) -> Found | None:
        """Only what is still running (our wrapper) or ended: a run that never started, or died with
        the machine, must run again."""
        run_dir = Path(remote_dir) if remote_dir else None
        if run_dir is None or not run_dir.is_dir():
            return None
        pid = _read_int(run_dir / PID_FILE)
        if pid is None and read_exit(run_dir) is None and _read_int(run_dir / META_DIR / "started") is not None:
            # The agent spawned it (it wrote `started`) but its wrapper has not written its pid yet: a
            # controller killed right after a launch. Wait for the pid briefly rather than call it never
            # started and run it a second time.
            deadline = time.monotonic() + SPAWN_GRACE
            while pid is None and read_exit(run_dir) is None and time.monotonic() < deadline:
                gevent.sleep(0.05)
                pid = _read_int(run_dir / PID_FILE)
        if read_exit(run_dir) is not None or (pid is not None and pid_alive(pid) and is_our_wrapper(pid, run_dir)):
            # The slot the agent wrote down at launch: a resume holds that one, not slot 0.
            return Found(str(run_dir), pid, mtime(run_dir / PID_FILE), _read_int(run_dir / META_DIR / "slot"))
        return None


#: Seconds a just-spawned execution has to write its pid before a resume calls it never started.
SPAWN_GRACE = 2.0


def _read_int(path: Path) -> int | None:
    """A number written by the wrapper or the agent (padded, possibly blank while being written)."""
    try:
        text = path.read_text().strip()
        return int(float(text)) if text else None
    except (OSError, ValueError):
        return None


def read_exit(run_dir: Path) -> int | None:
    try:
        return parse_exit_code((run_dir / EXIT_FILE).read_text())
    except OSError:
        return None


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def kill_group(pid: int, sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        gevent.sleep(0.05)
        if not pid_alive(pid):
            return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def is_our_wrapper(pid: int, run_dir: Path) -> bool:
    """Whether ``pid`` (read from the run directory) is still that run's wrapper (runaway/agent/posix.py
    says why a pid alone is not to be trusted)."""
    return pid_alive(pid) and is_wrapper_of(pid, str(run_dir), MARKER)


class LocalBackend:
    """``kind: local``: the agent launcher on this machine (one fixed place with ``slots`` slots)."""

    name = "local"
    running_commit_delay = 1.0

    def __init__(self, workdir: Path, slots: int | None = None, env: dict[str, str] | None = None, *,
                 capacity: Mapping[str, Any] | None = None, limit_memory: bool | None = None,
                 profile: str = "local") -> None:
        self.workdir = workdir
        self.profile = profile
        # Packing by resources (runaway/placement.py): set up by check_requests() only when the manifest
        # declares `resources:`; without it the slot queue below is all there is, as before.
        self.declared_capacity = dict(capacity or {})
        self.packed = PackedSlots(profile, limit_memory)
        self.slot_count = max(1, slots or os.cpu_count() or 1)
        self.env = env or {}
        self._free: gevent.queue.Queue[Slot] = gevent.queue.Queue()
        self._code_locks: dict[str, gevent.lock.Semaphore] = {}
        self.launcher = AgentLauncher(LocalAgent(self), LocalFiles(), timeout_from_launch=False)
        self.submitted = gevent.event.Event()
        self.submitted.set()  # nothing to ask a scheduler for
        # Slots of executions re-attached after a restart, held until their wait() ends: a resume drives
        # them beside new executions, which must not be given the slot (the cores) they still occupy.
        self._held: dict[str, Slot] = {}
        self._started = False

    # --- slots -------------------------------------------------------------------------------------------
    def start(self, expected: int = 0) -> None:
        (self.workdir / "runs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "code").mkdir(parents=True, exist_ok=True)
        self.launcher.places_up([PLACE])
        self._started = True
        held = set(self._held.values())
        for index in range(self.slot_count):
            if Slot("localhost", index) not in held:
                self._free.put(Slot("localhost", index))

    def acquire(self, need: float | None = None) -> Slot:
        return self._free.get()  # this machine has no walltime: any slot fits

    def expires(self, slot: Slot) -> float | None:
        return None

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        self.launcher.warn(handle, signal, grace)

    def drop_checkpoint(self, execution_id: str) -> None:
        remove_local(Path(checkpoint_dir(str(self.workdir), execution_id)))

    def save_checkpoint(self, handle: RunHandle) -> float | None:
        return None  # this machine: the directory is the controller's own

    def stop_waiting(self) -> None:
        self.packed.stop_waiting()  # local slots always come back; only packing waits on a release

    def waiting_for(self) -> str | None:
        return None

    def release(self, slot: Slot) -> None:
        if not self.packed.release(slot):
            self._free.put(slot)

    # --- packing by resources ----------------------------------------------------------------------------
    def capacity(self) -> NodeCapacity:
        return local_capacity("localhost", self.declared_capacity)

    def check_requests(self, requests: Sequence[Request]) -> None:
        self.packed.configure([self.capacity()])
        self.packed.check(requests)

    def acquire_for(self, requests: Sequence[Request], wait: bool = True) -> tuple[int, Slot] | None:
        if not self.packed.active:
            self.check_requests(requests)
        return self.packed.acquire(requests, wait)

    # --- code --------------------------------------------------------------------------------------------
    def code_dir(self, commit: str, code: CodeArchive) -> Path:
        target = self.workdir / "code" / commit
        if target.is_dir():
            return target
        lock = self._code_locks.setdefault(commit, gevent.lock.Semaphore())
        with lock:
            if not target.is_dir():
                staging = target.with_name(f"{commit}.tmp{os.getpid()}")
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                extract_tar_stream(code(commit), staging)
                os.replace(staging, target)  # atomic: a half-extracted tree is never used
        return target

    def run_dir(self, execution_id: str) -> Path:
        return self.workdir / "runs" / execution_id

    # --- lifecycle ---------------------------------------------------------------------------------------
    def launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        assert self.launcher.agents, "start() first"
        if job.checkpoint is not None:  # the directory outlives the run directory, which is recycled
            directory = checkpoint_dir(str(self.workdir), job.execution_id)
            resumed_from = prepare_local(Path(directory))
            job = dataclasses.replace(job, env={**job.env, CHECKPOINT_ENV: directory})
            handle = self._launch(slot, job, code)
            handle.resumed_from = resumed_from
            return handle
        return self._launch(slot, job, code)

    def _launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        bound = self.packed.bound(slot, job, dict(job.env))
        if bound is None:
            return self.launcher.launch(PLACE, slot, job, code, dict(job.env))
        handle = self.launcher.launch(PLACE, slot, bound.job, code, bound.env, affinity=bound.affinity,
                                      meta=bound.meta)
        binding = bound.binding
        handle.binding = binding
        return handle

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        try:
            return self.launcher.wait(handle, timeout)
        finally:
            held = self._held.pop(handle.execution_id, None)
            if held is not None and self._started:
                self._free.put(held)
            self.packed.unhold(handle.execution_id)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        return self.launcher.collect(handle, job, dest)

    def discard(self, handle: RunHandle) -> None:
        self.launcher.discard(handle)  # recycled by the agent when it ran it

    def stop(self, handle: RunHandle) -> None:
        self.launcher.stop(handle)

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        return self.launcher.read_output(handle, offsets)

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        return self.launcher.read_meta(handle, name, offset)

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        found = self.launcher.find(execution_id, "localhost", str(self.run_dir(execution_id)))
        if found is None:
            return None  # never started, or died with the machine: it must run again
        if slot is None:  # launched within the running-commit delay: the agent wrote down its slot
            slot = found.slot
        handle = RunHandle(execution_id, Slot("localhost", slot or 0), found.remote_dir, pid=found.pid,
                           started=found.started)
        self._hold(execution_id, handle.slot)
        self._hold_binding(handle)
        return handle

    def _hold_binding(self, handle: RunHandle) -> None:
        """A re-attached execution placed by resources keeps its cores and devices until it ends."""
        try:
            text: str | None = (Path(handle.remote_dir) / META_DIR / BINDING_FILE).read_text()
        except OSError:
            text = None  # not placed by resources (or launched by a version that kept no binding)
        handle.binding = self.packed.hold(handle.execution_id, "localhost", text)

    def _hold(self, execution_id: str, slot: Slot) -> None:
        if slot.index >= self.slot_count or slot in self._held.values() or execution_id in self._held:
            return  # a slot this backend does not have (fewer --slots now), or held already
        if self._started:
            try:
                self._free.queue.remove(slot)  # gevent's Queue keeps its items in a deque
            except ValueError:
                return  # in use by a new execution already: nothing to hold
        self._held[execution_id] = slot

    def release_orphans(self) -> list[str]:
        return []

    def allocation_of(self, slot: Slot) -> AllocationInfo | None:
        return None

    def transports(self) -> list[Transport]:
        return [LocalTransport()]

    def workdirs(self) -> dict[str, str]:
        return {"localhost": str(self.workdir)}

    def close(self) -> None:
        self.launcher.drain()  # the last removals reach the agent before the pipe closes
        self.launcher.close()


__all__ = ["LocalBackend", "LocalFiles", "extract_tar_stream"]
