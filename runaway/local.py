"""The ``local`` backend: executions are processes on this machine, one per slot.

Executions are started by the same agent that runs them on SSH hosts and Slurm nodes
(runaway/agent.py), here reached through a pipe to its ``attach`` instead of an SSH channel. Why: the
agent is a second process, so creating run directories, spawning and reaping happen on the other
core while the controller commits; and it recycles run directories, which on the disks measured
here cut most of an execution's cost (a new inode costs ~1 ms of kernel time, see agent.RunDirs).
Each execution still runs in its own copy of the code under the campaign's ``.git/orchestra/``, in its
own session, so it survives the controller (kill -9 included) and `resume` re-attaches through its
run directory's files.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import tarfile
import time
from pathlib import Path

import gevent
import gevent.lock
import gevent.queue
import gevent.socket
import gevent.subprocess

from orchestra.errors import ConnectionError_

from . import agent as agent_protocol
from .agent_link import AgentLink, AgentRuns, attach_argv
from .backend import CodeArchive, Collected, Job, Outcome, RunHandle, Slot
from .agent import pid_alive
from .rundir import EXIT_FILE, MARKER, META_DIR, PID_FILE, STDERR_FILE, STDOUT_FILE, match_outputs, parse_exit_code

STOP_GRACE = 5.0
POLL_INTERVAL = 0.2
AGENT_IDLE_EXIT = 30.0  # seconds a local agent outlives its last controller and execution


class LocalSession:
    """A session straight to the local agent's unix socket: no ``attach`` process in between (one hop
    less each way, which with few slots is most of an execution's round trip)."""

    def __init__(self, agent_dir: Path, ensure_argv: list[str], log: Path) -> None:
        self.cmd = f"local agent in {agent_dir}"
        self.log = log
        self.sock = self._connect(agent_dir)
        if self.sock is None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as err:
                started = gevent.subprocess.run(ensure_argv, stdin=gevent.subprocess.DEVNULL,
                                                stdout=err, stderr=err, timeout=30)
            self.sock = self._connect(agent_dir) if started.returncode == 0 else None
        if self.sock is None:
            raise ConnectionError_(f"the local agent in {agent_dir} does not answer: {self.stderr_tail()}")

    @staticmethod
    def _connect(agent_dir: Path) -> gevent.socket.socket | None:
        path = str(agent_dir / agent_protocol.SOCKET_NAME)
        sock = gevent.socket.socket(gevent.socket.AF_UNIX, gevent.socket.SOCK_STREAM)
        try:
            if len(path.encode()) < 100:
                sock.connect(path)
            else:  # unix socket paths are limited to ~107 bytes: go through a descriptor of the directory
                fd = os.open(agent_dir, os.O_PATH)
                try:
                    sock.connect(f"/proc/self/fd/{fd}/{agent_protocol.SOCKET_NAME}")
                finally:
                    os.close(fd)
            return sock
        except OSError:
            sock.close()
            return None

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionError_(f"local agent: the connection to it closed: {exc}") from exc

    def recv(self) -> bytes:
        try:
            return self.sock.recv(1 << 16)
        except OSError:
            return b""

    def stderr_tail(self) -> str:
        try:
            return self.log.read_bytes()[-500:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.sock.close()


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


class _LocalFiles:
    """What AgentRuns needs of a place: the code cache and run directory names, here local paths."""

    def __init__(self, backend: "LocalBackend") -> None:
        self.backend = backend

    def ensure_code(self, commit: str, code: CodeArchive) -> str:
        return str(self.backend.code_dir(commit, code))

    def run_dir(self, execution_id: str) -> str:
        return str(self.backend.run_dir(execution_id))


class LocalBackend:
    name = "local"
    running_commit_delay = 1.0

    def __init__(self, workdir: Path, slots: int | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.slot_count = max(1, slots or os.cpu_count() or 1)
        self.env = env or {}
        self._free: gevent.queue.Queue[Slot] = gevent.queue.Queue()
        self._code_locks: dict[str, gevent.lock.Semaphore] = {}
        self.agent: AgentRuns | None = None
        # Slots of executions re-attached after a restart, held until their wait() ends: a resume drives
        # them beside new executions, which must not be given the slot (the cores) they still occupy.
        self._held: dict[str, Slot] = {}
        self._started = False

    # --- slots -------------------------------------------------------------------------------------------
    def start(self, expected: int = 0) -> None:
        (self.workdir / "runs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "code").mkdir(parents=True, exist_ok=True)
        self._start_agent()
        self._started = True
        held = set(self._held.values())
        for index in range(self.slot_count):
            if Slot("localhost", index) not in held:
                self._free.put(Slot("localhost", index))

    def _start_agent(self) -> None:
        if self.agent is not None:
            return
        source = Path(agent_protocol.__file__)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
        agent_dir = self.workdir / "agents" / f"local-{digest}"  # a new version gets its own agent
        argv = attach_argv(sys.executable, str(source), str(agent_dir), str(self.workdir), spawn=True,
                           idle_exit=AGENT_IDLE_EXIT)
        argv[2] = "ensure"  # start it if needed; then this controller talks to its socket directly
        # The environment executions start from is this controller's, not the agent's (which may have
        # been started by an earlier run in another shell): sent on every (re)connection.
        env = agent_protocol.render_request("env", env={**os.environ, **self.env})
        log = agent_dir.parent / f"local-{digest}.start.log"
        link = AgentLink(lambda: LocalSession(agent_dir, argv, log), "local agent",
                         greeting=[env], spool_dir=self.workdir)
        link.start()
        self.agent = AgentRuns(_LocalFiles(self), link)  # type: ignore[arg-type]

    def acquire(self) -> Slot:
        return self._free.get()

    def release(self, slot: Slot) -> None:
        self._free.put(slot)

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
        assert self.agent is not None, "start() first"
        started_local = time.time()
        run_dir, pid, started = self.agent.launch(job, code, env=dict(job.env), setup=(), slot_index=slot.index)
        return RunHandle(job.execution_id, slot, run_dir, pid=pid, started=started or started_local)

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        try:
            return self._wait(handle, timeout)
        finally:
            held = self._held.pop(handle.execution_id, None)
            if held is not None and self._started:
                self._free.put(held)

    def _wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        if self.agent is not None and self.agent.owns(handle.execution_id):
            return self.agent.wait(handle.execution_id, timeout, handle.started or time.time())
        deadline = None if timeout is None else (handle.started or time.time()) + timeout
        run_dir = Path(handle.remote_dir)
        timed_out = False
        # Re-attached after a controller restart: not ours to reap, so watch its files.
        while True:
            code = self._read_exit(run_dir)
            if code is not None:
                break
            if handle.pid is not None and not pid_alive(handle.pid):
                gevent.sleep(POLL_INTERVAL)  # it may have just written exit_code
                code = self._read_exit(run_dir)
                if code is None:
                    return Outcome(None, handle.started, time.time(), lost=True,
                                   error="the process vanished without an exit code")
                break
            if deadline is not None and time.time() > deadline and handle.pid is not None and not timed_out:
                timed_out = True
                gevent.spawn(self._kill_group, handle.pid)
            gevent.sleep(POLL_INTERVAL)
        ended = self._mtime(run_dir / EXIT_FILE) or time.time()
        return Outcome(code, handle.started, ended, timed_out=timed_out)

    def _read_exit(self, run_dir: Path) -> int | None:
        try:
            return parse_exit_code((run_dir / EXIT_FILE).read_text())
        except OSError:
            return None

    @staticmethod
    def _mtime(path: Path) -> float | None:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    def _kill_group(self, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.time() + STOP_GRACE
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

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        if self.agent is not None and self.agent.owns(handle.execution_id):
            return self.agent.collect(handle.execution_id, dest)
        # Re-attached: the results are on this machine already; committing reads them in place.
        run_dir = Path(handle.remote_dir)
        return Collected(run_dir, run_dir / STDOUT_FILE, run_dir / STDERR_FILE,
                         match_outputs(run_dir, job.outputs))

    def discard(self, handle: RunHandle) -> None:
        if self.agent is not None and self.agent.owns(handle.execution_id):
            self.agent.discard(handle.execution_id, handle.remote_dir)  # recycled by the agent
        else:
            shutil.rmtree(handle.remote_dir, ignore_errors=True)

    def stop(self, handle: RunHandle) -> None:
        if self.agent is not None and self.agent.owns(handle.execution_id):
            self.agent.stop(handle.execution_id, STOP_GRACE)
        elif handle.pid is not None:
            try:
                os.killpg(handle.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        run_dir = self.run_dir(execution_id)
        if not run_dir.is_dir():
            return None
        pid = None
        try:
            pid = int((run_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            pass
        started = self._mtime(run_dir / PID_FILE)
        if slot is None:  # launched within the running-commit delay: the agent wrote down its slot
            try:
                slot = int((run_dir / META_DIR / "slot").read_text().strip())
            except (OSError, ValueError):
                pass
        handle = RunHandle(execution_id, Slot("localhost", slot or 0), str(run_dir), pid=pid, started=started)
        if self._read_exit(run_dir) is not None or (
                pid is not None and pid_alive(pid) and self._is_our_wrapper(pid, run_dir)):
            self._hold(execution_id, handle.slot)
            return handle
        return None  # never started, or died with the machine: it must run again

    def _hold(self, execution_id: str, slot: Slot) -> None:
        if slot.index >= self.slot_count or slot in self._held.values() or execution_id in self._held:
            return  # a slot this backend does not have (fewer --slots now), or held already
        if self._started:
            try:
                self._free.queue.remove(slot)  # gevent's Queue keeps its items in a deque
            except ValueError:
                return  # in use by a new execution already: nothing to hold
        self._held[execution_id] = slot

    @staticmethod
    def _is_our_wrapper(pid: int, run_dir: Path) -> bool:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return MARKER.encode() in cmdline and Path(cwd) == run_dir.resolve()

    def close(self) -> None:
        if self.agent is not None:
            self.agent.link.drain()  # the last removals reach the agent before the pipe closes
            self.agent.link.close()
            self.agent = None
