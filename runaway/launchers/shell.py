"""The shell launcher: no agent; a detached wrapper per execution, watched through its run directory's
files with one poll per host (:class:`runaway.remote_runs.RemoteRuns` does the remote work).

It is also how every remote launcher watches what an earlier controller left (a resume re-attaches
through files, whatever started the execution), and how output is read while an execution runs.
"""
from __future__ import annotations

import base64
import dataclasses
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import gevent

from ..backend import CodeArchive, Collected, Job, Outcome, RunHandle, Slot
from ..remote_runs import RemoteRuns, q
from ..rundir import META_DIR, STOP_GRACE
from ..walltime import signal_name
from . import Found, Place, place_of


# Sets the CPU affinity of the wrapper shell itself ($$: the command is eval'ed in it), so everything the
# execution starts inherits it: no extra process stays in the chain. taskset (util-linux) where present,
# else the host's python3 (os.sched_setaffinity, Linux); where neither can, the execution fails at once
# (exit 126) rather than run on cores another execution was given.
_SET_AFFINITY_PY = ("import os,sys; os.sched_setaffinity(int(sys.argv[1]), "
                    "[int(c) for c in sys.argv[2].split(',')])")
AFFINITY_FAILED = 126


def affinity_line(cores: Sequence[int]) -> str:
    """The shell line binding the execution to ``cores`` (run first, in the wrapper shell)."""
    plain = ",".join(str(int(c)) for c in cores)
    listed = q(plain)
    why = q(f"orchestra: could not bind to cores {plain} (no taskset, and python3 could not set the affinity)")
    return (f"{{ command -v taskset >/dev/null 2>&1 && taskset -cp {listed} $$ >/dev/null 2>&1; }} || "
            f"python3 -c {q(_SET_AFFINITY_PY)} $$ {listed} 2>/dev/null || "
            f"{{ echo {why} >&2; exit {AFFINITY_FAILED}; }}")


def meta_lines(meta: Mapping[str, str]) -> list[str]:
    """Lines writing files beside the run (``.orchestra/NAME``: the binding a resume holds again)."""
    lines = []
    for name, text in meta.items():
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a run file name: {name!r}")
        lines.append(f"printf '%s' {q(text)} > {q(f'{META_DIR}/{name}')}")
    return lines


def bound_command(command: str, affinity: Sequence[int] | None, meta: Mapping[str, str] | None) -> str:
    """The job's command under its binding: meta files written, then the affinity set, then the command
    (which already carries its memory limit line: runaway.packed)."""
    lines = meta_lines(meta or {})
    if affinity:
        lines.append(affinity_line(affinity))
    return "\n".join([*lines, command]) if lines else command


def read_output(runs: RemoteRuns, remote_dir: str, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
    """One command: what stdout and stderr gained past ``offsets`` (base64, so any bytes survive)."""
    meta = f"{remote_dir}/.orchestra"
    o, e = offsets
    cmd = (f"cd {shlex.quote(meta)} 2>/dev/null || exit 0; "
           f"tail -c +{o + 1} stdout 2>/dev/null | base64 | tr -d '\\n'; echo; "
           f"tail -c +{e + 1} stderr 2>/dev/null | base64 | tr -d '\\n'; echo")
    result = runs.host.run(cmd, timeout=30, warn=True)
    parts = result.stdout.split("\n")
    if len(parts) < 2:
        return b"", b""
    return base64.b64decode(parts[0] or b""), base64.b64decode(parts[1] or b"")


def read_meta(runs: RemoteRuns, remote_dir: str, name: str, offset: int) -> bytes:
    """One command: what the run directory's ``.orchestra/NAME`` gained past ``offset`` (intermediate
    metrics). A missing file is b"" (not written yet); a failed command raises, so the caller's offset
    does not move and the same bytes are asked for again (exactly once across reconnections)."""
    result = runs.host.run(render_read_meta(remote_dir, name, offset), timeout=30)
    return parse_read_meta(result.stdout)


def render_read_meta(remote_dir: str, name: str, offset: int) -> str:
    """The command that prints ``.orchestra/NAME`` past ``offset`` as one base64 line (pure)."""
    if not name.replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"bad run-directory file name {name!r}")
    meta = f"{remote_dir}/.orchestra"
    return (f"cd {shlex.quote(meta)} 2>/dev/null || exit 0; "
            f"tail -c +{int(offset) + 1} {shlex.quote(name)} 2>/dev/null | base64 | tr -d '\\n'; echo")


def parse_read_meta(stdout: str) -> bytes:
    """The bytes render_read_meta's command printed (pure; b"" for a missing file or directory)."""
    return base64.b64decode(stdout.strip() or b"")


class ShellLauncher:
    """``runs_of(host)`` gives a host's RemoteRuns; ``prefix_of(place)`` what reaches a node from it
    ("" on an ssh host, ``srun --jobid ...`` on an allocation); ``place_of(slot)`` the slot's place."""

    running_commit_delay = 0.0  # the record must name the host before a resume can find the run

    def __init__(self, runs_of: Callable[[str], RemoteRuns], place_of: Callable[[Slot], Place | None] = place_of, *,
                 setup: Iterable[str] = (), prefix_of: Callable[[Place], str] = lambda place: "",
                 wait_pid: float = 5.0) -> None:
        self.runs_of = runs_of
        self.place_of = place_of
        self.setup = tuple(setup)
        self.prefix_of = prefix_of
        self.wait_pid = wait_pid
        self._launched_at: dict[str, float] = {}

    def start(self) -> None:
        return None

    def places_up(self, places: Iterable[Place]) -> None:
        return None

    def places_down(self, places: Iterable[Place], error: str) -> None:
        return None  # the poll sees the run directories' processes die

    def _prefix(self, slot: Slot) -> str:
        place = self.place_of(slot)
        return self.prefix_of(place) if place is not None else ""  # re-attached: its launcher's death ends it

    def launch(self, place: Place, slot: Slot, job: Job, code: CodeArchive, env: Mapping[str, str],
               affinity: Sequence[int] | None = None, meta: Mapping[str, str] | None = None) -> RunHandle:
        """``affinity``, ``meta``: a binding's cores and the files kept beside the run, applied by lines of
        the wrapper shell (bound_command): the agent-less way binds too."""
        if affinity or meta:
            job = dataclasses.replace(job, command=bound_command(job.command, affinity, meta))
        self._launched_at[job.execution_id] = time.time()
        remote_dir, pid, started = self.runs_of(place.host).launch(
            job, code, env=env, setup=self.setup, launcher=self.prefix_of(place), wait_pid=self.wait_pid)
        return RunHandle(job.execution_id, slot, remote_dir, pid=pid, started=started)

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        """Wait on the host's batched watcher; enforce the timeout by killing the process group."""
        runs = self.runs_of(handle.slot.host)
        result = runs.watch(handle.execution_id, handle.remote_dir)
        start_local = self._launched_at.get(handle.execution_id)
        if start_local is None:  # re-attached: measure from the remote start time (clock skew accepted)
            start_local = handle.started or time.time()
        remaining = None if timeout is None else max(0.0, start_local + timeout - time.time())
        try:
            outcome: Outcome = result.get(timeout=remaining)  # type: ignore[assignment]
        except gevent.Timeout:
            runs.kill(handle.remote_dir, self._prefix(handle.slot))
            try:
                final: Outcome = result.get(timeout=STOP_GRACE + 4 * runs.poll_interval + 5)  # type: ignore[assignment]
                code = final.exit_code
            except gevent.Timeout:
                code = None
            runs.unwatch(handle.execution_id)
            self._launched_at.pop(handle.execution_id, None)
            return Outcome(code, handle.started, time.time(), timed_out=True,
                           error=f"timed out after {timeout:g}s")
        self._launched_at.pop(handle.execution_id, None)
        return dataclasses.replace(outcome, started=handle.started)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        return self.runs_of(handle.slot.host).collect(handle.remote_dir, job.outputs, dest)

    def discard(self, handle: RunHandle) -> None:
        self.runs_of(handle.slot.host).discard(handle.remote_dir)

    def stop(self, handle: RunHandle) -> None:
        self.runs_of(handle.slot.host).kill(handle.remote_dir, self._prefix(handle.slot))

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        """The checkpoint warning: ``signal`` to the process group, KILL after ``grace``."""
        self.runs_of(handle.slot.host).kill(handle.remote_dir, self._prefix(handle.slot), grace=grace,
                                            signal=signal_name(signal))

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        return read_output(self.runs_of(handle.slot.host), handle.remote_dir, offsets)

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        return read_meta(self.runs_of(handle.slot.host), handle.remote_dir, name, offset)

    def find(self, execution_id: str, host: str, remote_dir: str | None) -> Found | None:
        """What an earlier controller left on ``host`` for the execution, if it is running or done."""
        runs = self.runs_of(host)
        if not runs.workdir:
            runs.prepare()
        remote_dir = remote_dir or runs.run_dir(execution_id)
        state, pid, started, slot, node = runs.probe_full(remote_dir)
        if state == "none":
            return None
        return Found(remote_dir, pid, started, slot, node)

    def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


__all__ = ["AFFINITY_FAILED", "ShellLauncher", "affinity_line", "bound_command", "meta_lines", "parse_read_meta",
           "read_meta", "read_output", "render_read_meta"]
