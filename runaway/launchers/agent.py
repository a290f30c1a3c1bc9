"""The agent launcher: one resident agent per place (runaway/agent/), reached through one session.

A launch is one line written into the session, an exit one frame read with its results; removals and
kills are lines too. Executions an earlier controller started are watched through their run
directory's files instead (the ``fallback`` launcher), which needs nothing from any agent. How an
agent is started on a place is a starter's business: a host spawns it from its attach session
(:class:`HostAgents`), an allocation's nodes run it as srun steps (runaway/launchers/srun.py), this
machine talks to its socket (runaway/local.py).
"""
from __future__ import annotations

import shlex
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

import gevent
import gevent.event

from orchestra.errors import ExecutionError, SchedulerError

from .. import agent as protocol
from ..agent_link import AgentExit, AgentLink, attach_command, extract_results
from ..backend import CodeArchive, Collected, Job, Outcome, RunHandle, Slot
from ..backoff import RECONNECT_FOR
from ..rundir import META_DIR, NODE_META, STDERR_FILE, STDOUT_FILE, STOP_GRACE
from . import Found, Place

if TYPE_CHECKING:
    from ..remote_runs import RemoteRuns
    from ..transports import Transport

LAUNCH_ANSWER_WITHIN = 600.0  # an agent busy copying a very large code tree answers late, a hung one never


class PlaceFiles(Protocol):
    """What AgentRuns needs of a place: its code cache and run directory names."""

    def ensure_code(self, commit: str, code: CodeArchive) -> str: ...

    def run_dir(self, execution_id: str) -> str: ...


def install_agent(host: "Transport", workdir: str) -> str:
    """Ship the agent (one file: the zipapp of runaway/agent/) into ``<workdir>/bin`` once per version
    (its name carries the hash of its bytes)."""
    path, command = install_command(workdir)
    host.put_stream([protocol.bundle()], command, timeout=120)
    return path


def install_command(workdir: str) -> tuple[str, str]:
    """(the agent's path, the remote command that reads it from stdin into that path unless it is there).

    The bytes are always read, also when the file exists: a command that exited without reading them
    closed the channel under a sender still writing 66 KB, and the start of the next controller on that
    host failed with "connection lost while streaming" whenever the sender was the slower side (a
    controller under load, 2026-12-02)."""
    path = f"{workdir}/bin/orchestra-agent-{protocol.bundle_digest()}.pyz"
    target = shlex.quote(path)
    return path, (f"mkdir -p {shlex.quote(workdir)}/bin && if [ -s {target} ]; then cat > /dev/null; "
                  f"else cat > {target}.tmp.$$ && mv -f {target}.tmp.$$ {target}; fi")


def start_agent_runs(runs: "RemoteRuns", python: str, *, spawn: bool, agent_dir: str | None = None,
                     prefix: str = "", name: str | None = None, reconnect_for: float = RECONNECT_FOR,
                     agent_path: str | None = None) -> "AgentRuns":
    """Install the agent on ``runs``' host, open its session, and return the place's AgentRuns."""
    path = agent_path or install_agent(runs.host, runs.workdir)
    directory = agent_dir or f"{runs.workdir}/agents/{PurePosixPath(path).stem}"
    cmd = attach_command(python, path, directory, runs.workdir, spawn=spawn, prefix=prefix)
    link = AgentLink(lambda: runs.host.open_session(cmd), name or runs.host.name, reconnect_for=reconnect_for)
    link.start()
    return AgentRuns(runs, link)


class AgentRuns:
    """Executions on one agent: an SSH host, or one node of an allocation (its link goes through srun)."""

    def __init__(self, files: PlaceFiles, link: AgentLink) -> None:
        self.files = files
        self.link = link
        self._exits: dict[str, gevent.event.AsyncResult] = {}
        self._results: dict[str, AgentExit] = {}
        self._launched: set[str] = set()  # launched here and not discarded yet
        self.down = False  # its place went away (the launcher stops routing to it)

    def owns(self, execution_id: str) -> bool:
        """Whether this place launched the execution (and so is waited on through the agent)."""
        return execution_id in self._launched

    def launch(self, job: Job, code: CodeArchive, *, env: Mapping[str, str], setup: Iterable[str],
               slot_index: int | None, meta: Mapping[str, str] | None = None,
               affinity: Sequence[int] | None = None) -> tuple[str, int | None, float | None]:
        """Start the job through the agent; return (run dir, pid, start time) once the agent started it.

        ``affinity``: the cores the execution is bound to (its binding), applied by the agent at spawn."""
        code_dir = self.files.ensure_code(job.commit, code)
        run_dir = self.files.run_dir(job.execution_id)
        command = "\n".join([*setup, job.command]) if setup else job.command
        extra = {"affinity": list(affinity)} if affinity else {}
        line = protocol.render_request("launch", job.execution_id, run_dir=run_dir, code_dir=code_dir,
                                       command=command, env=dict(env), outputs=list(job.outputs),
                                       slot=slot_index, meta=dict(meta or {}), token=uuid.uuid4().hex, **extra)
        pending = self.link.launch(job.execution_id, line)
        self._exits[job.execution_id] = pending.exited
        self._launched.add(job.execution_id)
        try:
            started = pending.started.get(timeout=LAUNCH_ANSWER_WITHIN)
        except gevent.Timeout:
            self._exits.pop(job.execution_id, None)
            self._launched.discard(job.execution_id)
            self.link.forget(job.execution_id)
            raise ExecutionError(f"{self.link.name}: the agent did not start {job.execution_id} within "
                                 f"{LAUNCH_ANSWER_WITHIN:.0f}s") from None
        if started is None:  # refused or ended at once: wait() reports how
            return run_dir, None, None
        return run_dir, started[0], started[1]

    def wait(self, execution_id: str, timeout: float | None, started_local: float) -> Outcome:
        result = self._exits[execution_id]
        remaining = None if timeout is None else max(0.0, started_local + timeout - time.time())
        timed_out = False
        try:
            done: AgentExit = result.get(timeout=remaining)  # type: ignore[assignment]
        except gevent.Timeout:
            timed_out = True
            self.stop(execution_id)
            try:
                done = result.get(timeout=STOP_GRACE + 30)  # type: ignore[assignment]
            except gevent.Timeout:
                self._exits.pop(execution_id, None)
                self.link.forget(execution_id)
                self._results[execution_id] = AgentExit(None, None, time.time(), b"", error="no end seen")
                return Outcome(None, None, time.time(), timed_out=True, error=f"timed out after {timeout:g}s")
        self._exits.pop(execution_id, None)
        self._results[execution_id] = done
        if timed_out:
            return Outcome(done.code, done.started, done.ended, timed_out=True,
                           error=f"timed out after {timeout:g}s")
        if done.code is None:
            return Outcome(None, done.started, done.ended, lost=True, error=done.error)
        return Outcome(done.code, done.started, done.ended, error=done.error)

    def collect(self, execution_id: str, dest: Path) -> Collected:
        """The results of an ended execution: in memory when small (see Collected), else under ``dest``."""
        done = self._results.pop(execution_id, None)
        if done is None:
            raise ExecutionError(f"{self.link.name}: no results for {execution_id}")
        stdout, stderr = dest / STDOUT_FILE, dest / STDERR_FILE
        if not done.payload:  # nothing came back (a timeout that never saw its end): an empty result
            return Collected(dest, stdout, stderr, [], contents={})
        try:
            if isinstance(done.payload, bytes):
                contents = protocol.parse_results(done.payload)
                outputs = sorted(f for f in contents if PurePosixPath(f).parts[0] != META_DIR)
                return Collected(dest, stdout, stderr, outputs, contents=contents)
            try:
                with done.payload.open("rb") as handle:
                    files = extract_results(handle, dest)
            finally:
                done.payload.unlink(missing_ok=True)
        except ValueError as exc:
            raise ExecutionError(f"{self.link.name}: results of {execution_id} refused: {exc}") from exc
        for path in (stdout, stderr):
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        outputs = sorted(f for f in files if PurePosixPath(f).parts[0] != META_DIR)
        return Collected(dest, stdout, stderr, outputs)

    def discard(self, execution_id: str, run_dir: str) -> None:
        self._launched.discard(execution_id)
        self._results.pop(execution_id, None)
        self.link.send(protocol.render_request("remove", execution_id, run_dir=run_dir))

    def stop(self, execution_id: str, grace: float = STOP_GRACE, signal: int = 15) -> None:
        """``signal`` (TERM unless a checkpoint warning says otherwise), then KILL after ``grace``."""
        self.link.send(protocol.render_request("kill", execution_id, signal=signal, grace=grace))

    def read_meta(self, execution_id: str, run_dir: str, name: str, offset: int, timeout: float = 30.0) -> bytes:
        """The run directory's ``.orchestra/NAME`` past ``offset``, through the agent's session (one
        request line, one ``data`` frame); raises when the session drops or the agent does not answer."""
        try:
            data = self.link.read(execution_id, name, offset, run_dir).get(timeout=timeout)
            return data if isinstance(data, bytes) else b""
        except gevent.Timeout:
            raise ExecutionError(f"{self.link.name}: the agent did not answer a read within {timeout:.0f}s") from None



class PartialStart(SchedulerError):
    """Some places' agents did not answer; ``started`` holds those that did."""

    def __init__(self, message: str, started: "dict[Place, tuple[AgentRuns, dict[str, str]]]") -> None:
        super().__init__(message)
        self.started = started


class AgentStarter(Protocol):
    """How agents come up on places (and what each launch on a place records beside its run)."""

    def install(self) -> None: ...

    def start(self, places: Sequence[Place]) -> dict[Place, tuple[AgentRuns, dict[str, str]]]: ...


class Fallback(Protocol):
    """The launcher that watches, through files, what no agent of this controller started."""

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome: ...

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected: ...

    def discard(self, handle: RunHandle) -> None: ...

    def stop(self, handle: RunHandle) -> None: ...

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None: ...

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]: ...

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes: ...

    def find(self, execution_id: str, host: str, remote_dir: str | None) -> Found | None: ...


class HostAgents:
    """One agent per SSH host, spawned by its attach session when none runs."""

    def __init__(self, runs_of: Callable[[str], "RemoteRuns"], python: str) -> None:
        self.runs_of = runs_of
        self.python = python

    def install(self) -> None:
        return None  # per host, as each comes up

    def start(self, places: Sequence[Place]) -> dict[Place, tuple[AgentRuns, dict[str, str]]]:
        return {place: (start_agent_runs(self.runs_of(place.host), self.python, spawn=True), {})
                for place in places}


class AgentLauncher:
    """Executions started by the places' agents; what an earlier controller left goes to ``fallback``."""

    def __init__(self, starter: AgentStarter, fallback: Fallback, *,
                 setup: Iterable[str] = (), running_commit_delay: float = 1.0,
                 lost_error: str = "its place's agent went away", timeout_from_launch: bool = True) -> None:
        self.starter = starter
        self.fallback = fallback
        self.setup = tuple(setup)
        # With an agent, a resume finds a just-launched execution by its run directory on the hosts, so
        # short executions need no "running" commit.
        self.running_commit_delay = running_commit_delay
        self.lost_error = lost_error
        self.timeout_from_launch = timeout_from_launch
        self.agents: dict[Place, AgentRuns] = {}
        self.meta: dict[Place, dict[str, str]] = {}
        self._launched_at: dict[str, float] = {}
        self._found: set[str] = set()  # re-attached: watched through their files
        # Which agent launched each execution: one dict lookup on the hot path, no Place built per call.
        self._by_eid: dict[str, AgentRuns] = {}

    def start(self) -> None:
        self.starter.install()

    def places_up(self, places: Sequence[Place]) -> None:
        new = [place for place in places if place not in self.agents]
        if not new:
            return
        try:
            started = self.starter.start(new)
        except PartialStart as exc:
            self._adopt(exc.started)
            raise
        self._adopt(started)

    def _adopt(self, started: dict[Place, tuple[AgentRuns, dict[str, str]]]) -> None:
        for place, (agent_runs, meta) in started.items():
            self.agents[place] = agent_runs
            if meta:
                self.meta[place] = meta

    def places_down(self, places: Sequence[Place], error: str) -> None:
        """The places' agents went with them: what they ran is lost now, not after reconnect retries."""
        for place in places:
            agent_runs = self.agents.pop(place, None)
            self.meta.pop(place, None)
            if agent_runs is not None:
                agent_runs.down = True
                agent_runs.link.fail_all(error)
                agent_runs.link.close()

    def launch(self, place: Place, slot: Slot, job: Job, code: CodeArchive, env: Mapping[str, str],
               affinity: Sequence[int] | None = None, meta: Mapping[str, str] | None = None) -> RunHandle:
        """``affinity``, ``meta``: a binding's cores, and files kept beside the run (its binding line)."""
        agent_runs = self.agents.get(place)
        if agent_runs is None:
            where = f"{place.node} of allocation {place.allocation}" if place.allocation else place.host
            raise SchedulerError(f"no agent on {where}")
        now = self._launched_at[job.execution_id] = time.time()
        bound = {"affinity": affinity} if affinity else {}  # only a binding by resources has one
        # The node goes beside the run as the shell launch writes it: a resume that finds this execution
        # by its run directory (its "running" commit never made) records where it ran from it.
        files = {**self.meta.get(place, {}), **({NODE_META: place.node} if place.node else {}), **(meta or {})}
        remote_dir, pid, started = agent_runs.launch(job, code, env=env, setup=self.setup, slot_index=slot.index,
                                                     meta=files or None, **bound)
        self._by_eid[job.execution_id] = agent_runs
        return RunHandle(job.execution_id, slot, remote_dir, pid=pid, started=started or now)

    def _agent_of(self, handle: RunHandle) -> AgentRuns | None:
        """The agent an execution was launched through, or None (re-attached, or its place is gone)."""
        if handle.execution_id in self._found:
            return None
        agent_runs = self._by_eid.get(handle.execution_id)
        if agent_runs is None or agent_runs.down or not agent_runs.owns(handle.execution_id):
            return None
        return agent_runs

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            launched = self._launched_at.pop(handle.execution_id, None)
            started = launched if launched is not None and self.timeout_from_launch else \
                (handle.started or time.time())
            return agent_runs.wait(handle.execution_id, timeout, started)
        if handle.execution_id in self._found:
            return self.fallback.wait(handle, timeout)
        self._launched_at.pop(handle.execution_id, None)
        return Outcome(None, handle.started, time.time(), lost=True, error=self.lost_error)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            return agent_runs.collect(handle.execution_id, dest)
        return self.fallback.collect(handle, job, dest)

    def discard(self, handle: RunHandle) -> None:
        agent_runs = self._agent_of(handle)
        self._by_eid.pop(handle.execution_id, None)
        if agent_runs is not None:
            agent_runs.discard(handle.execution_id, handle.remote_dir)  # the agent recycles it
        else:
            self.fallback.discard(handle)
            self._found.discard(handle.execution_id)

    def stop(self, handle: RunHandle) -> None:
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            agent_runs.stop(handle.execution_id)
        else:
            self.fallback.stop(handle)

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        """The checkpoint warning: the agent signals the process group and KILLs it after ``grace``. A run
        watched through its files (re-attached) is stopped the fallback's way."""
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            agent_runs.stop(handle.execution_id, grace=grace, signal=signal)
        else:
            self.fallback.warn(handle, signal, grace)

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        return self.fallback.read_output(handle, offsets)  # the agent writes the same files

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        """Through the place's agent when it launched the execution (its session, no remote shell), else
        through the files (an execution an earlier controller left)."""
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            chunk = b""
            # At most MAX_READ per answer: ask on from the new offset until the agent has no more.
            while True:
                part = agent_runs.read_meta(handle.execution_id, handle.remote_dir, name, offset + len(chunk))
                chunk += part
                if len(part) < protocol.MAX_READ:
                    return chunk
        return self.fallback.read_meta(handle, name, offset)

    def find(self, execution_id: str, host: str, remote_dir: str | None) -> Found | None:
        found = self.fallback.find(execution_id, host, remote_dir)
        if found is not None:
            self._found.add(execution_id)
        return found

    def drain(self) -> None:
        for agent_runs in self.agents.values():
            agent_runs.link.drain()  # the last removals

    def close(self) -> None:
        for agent_runs in self.agents.values():
            agent_runs.link.close()
        self.agents.clear()
        self.meta.clear()


__all__ = ["AgentLauncher", "AgentRuns", "AgentStarter", "HostAgents", "LAUNCH_ANSWER_WITHIN", "install_agent",
           "install_command",
           "start_agent_runs"]
