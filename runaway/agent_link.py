"""The controller's side of the agent (runaway/agent/): one session per agent, kept open, re-opened after a drop.

An :class:`AgentLink` owns one attach session (an SSH channel running the agent's ``attach``, or an
``srun --overlap`` step doing the same on a Slurm node). Requests from many greenlets are coalesced into
one write; one reader greenlet parses events and hands each execution's exit (and its results payload) to
whoever waits for it. When the session drops, the link re-opens it with backoff and tells the agent again
what it still waits for: launches not yet acknowledged are re-sent (the agent never starts one twice),
started ones are re-watched. Removals and kills are re-sent until a ``pong`` confirms the agent read them.

:class:`AgentRuns` is what a backend uses for one place (an SSH host, a node): launch, wait, collect,
discard and stop on top of a link, lives with the agent launcher (runaway/launchers/agent.py).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import logging
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import gevent
import gevent.event
import tenacity

from orchestra.errors import ConnectionError_, ExecutionError

from . import agent as protocol
from .backoff import RECONNECT_FOR, retrying
from .rundir import MARKER, WRAPPER

if TYPE_CHECKING:
    from .transports import Session


log = logging.getLogger(__name__)

# A link that comes back within this is not worth a line (an sshd restart, a requeue the allocation
# backend reports itself); one that does not gets ONE warning, never one per retry.
QUIET_FOR = 5.0
SPOOL_OVER = 8 << 20  # results larger than this go to a temporary file as they arrive, not into memory


@dataclasses.dataclass
class AgentExit:
    """An ``exited`` event with its results payload (bytes, or a temporary file for large ones)."""

    code: int | None
    started: float | None
    ended: float
    payload: bytes | Path
    error: str | None = None


class LinkLost(ConnectionError_):
    """The agent stayed unreachable for longer than the reconnect budget."""


def attach_argv(python: str, agent_path: str, agent_dir: str, root: str, *, spawn: bool,
                idle_exit: float | None = None) -> list[str]:
    wrapper = base64.b64encode(WRAPPER.encode()).decode()
    return ([python, agent_path, "attach", agent_dir, root, wrapper, MARKER] + (["--spawn"] if spawn else [])
            + ([f"--idle-exit={idle_exit:g}"] if idle_exit is not None else []))


def attach_command(python: str, agent_path: str, agent_dir: str, root: str, *, spawn: bool,
                   prefix: str = "") -> str:
    """The shell line a session runs to reach an agent (``prefix``: e.g. an ``srun`` onto a node)."""
    return prefix + " ".join(shlex.quote(w) for w in attach_argv(python, agent_path, agent_dir, root, spawn=spawn))


def serve_command(python: str, agent_path: str, agent_dir: str, root: str) -> str:
    wrapper = base64.b64encode(WRAPPER.encode()).decode()
    return " ".join(shlex.quote(w) for w in [python, agent_path, "serve", agent_dir, root, wrapper, MARKER])


@dataclasses.dataclass
class _Pending:
    line: str  # the launch or watch request, re-sent after a reconnect
    exited: gevent.event.AsyncResult
    started: gevent.event.AsyncResult  # (pid, epoch), or None if it ended before we heard it start


@dataclasses.dataclass
class _Frame:
    execution_id: str
    fields: dict
    handle: BinaryIO
    path: Path
    sha: "hashlib._Hash"
    remaining: int


class AgentLink:
    """One attach session to one agent, with coalesced writes, a reader greenlet and reconnects."""

    def __init__(self, open_session: Callable[[], Session], name: str, *, reconnect_for: float = RECONNECT_FOR,
                 spool_dir: Path | None = None, greeting: Iterable[str] = ()) -> None:
        self.open_session = open_session
        self.greeting = list(greeting)  # requests sent first on every (re)connection, e.g. ``env``
        self.name = name
        self.reconnect_for = reconnect_for
        self.spool_dir = spool_dir
        self.session: Session | None = None
        self.pending: dict[str, _Pending] = {}
        self._outbox: list[str] = []
        self._unconfirmed: list[tuple[int, str]] = []  # (ping token, removal or kill) until its pong
        self._tokens = itertools.count(1)
        self._wake = gevent.event.Event()
        self._up = gevent.event.Event()
        self._reader: gevent.Greenlet | None = None
        self._writer: gevent.Greenlet | None = None
        self._closed = False
        self._buffer = b""
        self._pos = 0  # how much of _buffer the parser consumed
        self._frame: _Frame | None = None  # a large results frame being written to its spool file
        self.error: Exception | None = None
        self.reconnects = 0
        # `read` requests in flight, by (execution id, file name, offset): answered by one `data` frame, or
        # failed when the session drops (the reader asks again from the same offset: nothing lost, nothing
        # read twice).
        self._reads: dict[tuple[str, str, int], gevent.event.AsyncResult] = {}

    # -- lifecycle
    def start(self) -> None:
        self._connect()
        self._reader = gevent.spawn(self._read_loop)
        self._writer = gevent.spawn(self._write_loop)

    def fail_all(self, error: str) -> None:
        """The place is gone (its allocation ended): everything still waited for is lost, now."""
        for execution_id in list(self.pending):
            self._settle(execution_id, AgentExit(None, None, time.time(), b"", error=error))

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the agent confirmed every request written so far (removals before a close)."""
        deadline = time.monotonic() + timeout
        while (self._outbox or self._unconfirmed) and self.error is None and not self._closed:
            if time.monotonic() > deadline:
                return False
            gevent.sleep(0.02)
        return True

    def close(self) -> None:
        self._closed = True
        for greenlet in (self._reader, self._writer):
            if greenlet is not None:
                greenlet.kill(block=False)
        self._drop_frame()
        if self.session is not None:
            self.session.close()
            self.session = None

    def _connect(self) -> None:
        session = self.open_session()
        try:
            head = b""
            while True:
                newline = head.find(b"\n")
                if newline >= 0:
                    line, head = head[:newline], head[newline + 1:]
                    if line.startswith(b"hello "):
                        break
                    # A login shell may print a banner before the agent speaks: skip it, bounded.
                    continue
                if len(head) > 65536:
                    raise ConnectionError_(f"{self.name}: no agent greeting in the first 64 KiB of output")
                data = session.recv()
                if not data:
                    raise ConnectionError_(f"{self.name}: the agent did not answer: "
                                           f"{session.stderr_tail() or 'no output'}")
                head += data
            kind, _eid, fields = protocol.parse_event(line.decode("ascii", "replace"))
            if fields["protocol"] != protocol.PROTOCOL:
                raise ConnectionError_(f"{self.name}: the agent speaks protocol {fields['protocol']}, "
                                       f"this controller {protocol.PROTOCOL}")
        except ValueError as exc:
            session.close()
            raise ConnectionError_(f"{self.name}: unexpected agent greeting: {exc}") from exc
        except BaseException:
            session.close()
            raise
        self.session = session
        self._buffer, self._pos = head, 0
        if self.greeting:
            session.send(("\n".join(self.greeting) + "\n").encode("utf-8"))
        self._up.set()

    # -- requests
    def _queue(self, line: str) -> None:
        self._outbox.append(line)
        self._wake.set()

    def launch(self, execution_id: str, line: str) -> _Pending:
        """Send a launch; the result's ``started`` and ``exited`` fire as the agent reports."""
        return self._track(execution_id, line)

    def _track(self, execution_id: str, line: str) -> _Pending:
        if self.error is not None:
            raise self.error
        pending = _Pending(line, gevent.event.AsyncResult(), gevent.event.AsyncResult())
        self.pending[execution_id] = pending
        self._queue(line)
        return pending

    def send(self, line: str) -> None:
        """A request that needs no answer (kill, remove): re-sent after a drop until confirmed."""
        if self.error is not None:
            raise self.error
        self._queue(line)

    def read(self, execution_id: str, name: str, offset: int, run_dir: str) -> gevent.event.AsyncResult:
        """Ask the agent for ``<run_dir>/.orchestra/NAME`` past ``offset``; the result is the bytes."""
        if self.error is not None:
            raise self.error
        key = (execution_id, name, offset)
        found = self._reads.get(key)
        if found is not None:
            return found
        result = gevent.event.AsyncResult()
        self._reads[key] = result
        self._queue(protocol.render_request("read", execution_id, name=name, offset=offset, run_dir=run_dir))
        return result

    def _fail_reads(self, error: Exception) -> None:
        reads, self._reads = self._reads, {}
        for result in reads.values():
            result.set_exception(error)

    def forget(self, execution_id: str) -> None:
        self.pending.pop(execution_id, None)

    def _write_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            self._up.wait()
            if not self._outbox or self.session is None:
                continue
            lines, self._outbox = self._outbox, []
            token = next(self._tokens)
            confirm = [line for line in lines if line.startswith(("remove ", "kill "))]
            self._unconfirmed.extend((token, line) for line in confirm)
            # Only removals and kills need to know they arrived (launches are answered by `started`).
            payload = "\n".join(lines) + (f"\nping {token}\n" if confirm else "\n")
            try:
                self.session.send(payload.encode("utf-8"))
            except ConnectionError_:
                # The reader notices the drop and reconnects; everything tracked is re-sent from state.
                continue

    # -- events
    def _read_loop(self) -> None:
        while not self._closed:
            session = self.session
            try:
                while session is not None:
                    if not self._parse():
                        data = session.recv()
                        if not data:
                            break
                        # Drop what was consumed before appending: one copy per chunk, not per event.
                        self._buffer = self._buffer[self._pos:] + data
                        self._pos = 0
            except ConnectionError_:
                pass
            except ValueError as exc:  # a garbled stream: drop it and start a clean one
                log.warning("%s: %s; re-attaching", self.name, exc)
            if self._closed:
                return
            self._reconnect(session)

    def _parse(self) -> bool:
        """Consume one complete event from the buffer; False when more bytes are needed."""
        buffer, pos = self._buffer, self._pos
        if self._frame is not None:
            return self._spool_frame(buffer, pos)
        newline = buffer.find(b"\n", pos)
        if newline < 0:
            if len(buffer) - pos > protocol.MAX_LINE:
                raise ValueError("an event line longer than 1 MiB")
            return False
        kind, execution_id, fields = protocol.parse_event(buffer[pos:newline].decode("ascii", "replace"))
        if kind == "exited":
            end = newline + 1 + fields["size"]
            if fields["size"] > SPOOL_OVER:  # large results go to a file as they arrive, never all in memory
                fd, name = tempfile.mkstemp(prefix=".agent-", suffix=".results", dir=self.spool_dir)
                self._frame = _Frame(execution_id, fields, os.fdopen(fd, "wb"), Path(name), hashlib.sha256(),
                                     fields["size"])
                self._pos = newline + 1
                return True
            if len(buffer) < end:
                return False
            self._pos = end
            self._exited(execution_id, fields, buffer[newline + 1:end])
            return True
        if kind == "data":
            end = newline + 1 + fields["size"]
            if len(buffer) < end:
                return False
            self._pos = end
            waiting = self._reads.pop((execution_id, fields["name"], fields["offset"]), None)
            if waiting is not None:
                waiting.set(bytes(buffer[newline + 1:end]))
            return True
        self._pos = newline + 1
        if kind == "started":
            pending = self.pending.get(execution_id)
            if pending is not None and not pending.started.ready():
                pending.started.set((fields["pid"], fields["started"]))
        elif kind == "gone":
            self._settle(execution_id, AgentExit(None, None, time.time(), b"",
                                                 error="the run directory is gone"))
        elif kind == "error":
            self._settle(execution_id, AgentExit(None, None, time.time(), b"", error=fields["message"]))
        elif kind == "pong":
            token = int(fields["token"]) if fields["token"].isdigit() else 0
            self._unconfirmed = [(t, line) for t, line in self._unconfirmed if t > token]
        return True

    def _spool_frame(self, buffer: bytes, pos: int) -> bool:
        frame = self._frame
        assert frame is not None
        take = min(frame.remaining, len(buffer) - pos)
        if take <= 0:
            return False
        chunk = buffer[pos:pos + take]
        frame.handle.write(chunk)
        frame.sha.update(chunk)
        frame.remaining -= take
        self._pos = pos + take
        if frame.remaining == 0:
            frame.handle.close()
            self._frame = None
            if frame.sha.hexdigest() != frame.fields["sha256"]:
                frame.path.unlink(missing_ok=True)
                self._exited(frame.execution_id, frame.fields, None)
            else:
                self._exited(frame.execution_id, frame.fields, frame.path)
        return True

    def _drop_frame(self) -> None:
        """A session dropped mid-frame: the partial file goes; a re-watch brings the results again."""
        if self._frame is not None:
            self._frame.handle.close()
            self._frame.path.unlink(missing_ok=True)
            self._frame = None

    def _exited(self, execution_id: str, fields: dict, payload: bytes | Path | None) -> None:
        """Settle an execution's exit; ``payload`` is its results (None: they arrived corrupted)."""
        if isinstance(payload, bytes) and hashlib.sha256(payload).hexdigest() != fields["sha256"]:
            payload = None
        if payload is None:
            self._settle(execution_id, AgentExit(fields["code"], fields["started"], fields["ended"], b"",
                                                 error="results arrived corrupted (checksum mismatch)"))
            return
        lost = fields["code"] is None
        self._settle(execution_id, AgentExit(fields["code"], fields["started"], fields["ended"], payload,
                                             error="it died without an exit code" if lost else None))

    def _settle(self, execution_id: str, result: AgentExit) -> None:
        pending = self.pending.pop(execution_id, None)
        if pending is not None:
            if not pending.started.ready():
                pending.started.set(None)
            pending.exited.set(result)

    def _reconnect(self, dead: Session | None) -> None:
        self._up.clear()
        self._drop_frame()
        self._fail_reads(LinkLost(f"{self.name}: the connection to the agent dropped"))
        if dead is not None:
            dead.close()
        self.session = None
        lost_at = time.monotonic()
        told = False

        def tell(state: tenacity.RetryCallState) -> None:
            nonlocal told
            exc = state.outcome.exception() if state.outcome is not None else None
            why = str(exc).strip().splitlines()[-1] if exc is not None and str(exc).strip() else "no answer"
            if not told and not self._closed and time.monotonic() - lost_at >= QUIET_FOR:
                told = True
                log.warning("%s: lost the connection to the agent (%s); re-attaching for up to %.0fs",
                            self.name, why, self.reconnect_for)
            else:
                log.debug("%s: re-attaching to the agent failed (%s); retrying in %.1fs", self.name, why,
                          state.upcoming_sleep)

        retry = retrying(self.reconnect_for,
                         lambda exc: isinstance(exc, (ConnectionError_, ExecutionError, OSError)) and not self._closed,
                         f"{self.name}: re-attaching to the agent failed", stop_after=True, before_sleep=tell)
        try:
            retry(self._connect)
        except (ConnectionError_, ExecutionError, OSError) as exc:
            if self._closed:
                return
            self.error = LinkLost(f"{self.name}: agent unreachable for {self.reconnect_for:.0f}s: {exc}")
            for execution_id in list(self.pending):
                self._settle(execution_id, AgentExit(None, None, time.time(), b"", error=str(self.error)))
            self._up.set()
            self._closed = True
            return
        self.reconnects += 1
        if told:
            log.warning("%s: re-attached to the agent", self.name)
        # Say again what we wait for. A launch the agent never read is started now; one it read is
        # recognised by its run directory and watched instead.
        resend = [p.line for p in self.pending.values()]
        resend += [line for _t, line in self._unconfirmed]
        self._unconfirmed = []
        self._outbox = resend + self._outbox
        self._wake.set()


def extract_results(handle: BinaryIO, dest: Path) -> list[str]:
    """Write a (large) results payload under ``dest``; paths are checked before anything is written,
    and no file is written through a symlink, so nothing lands outside ``dest``."""
    files: list[str] = []
    root = dest.resolve()
    while True:
        line = handle.readline(protocol.MAX_LINE)
        if not line:
            return sorted(set(files))
        rel, size, mode = protocol.parse_result_header(line.rstrip(b"\n"))
        target = dest / rel
        parent = target.parent
        parent.mkdir(parents=True, exist_ok=True)
        if parent.resolve() != root and root not in parent.resolve().parents:
            raise ValueError(f"results path {rel!r} leaves the directory")
        if target.is_symlink():
            target.unlink()
        with open(target, "wb") as out:
            left = size
            while left > 0:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    raise ValueError(f"results entry {rel!r} is truncated")
                out.write(chunk)
                left -= len(chunk)
        os.chmod(target, (mode & 0o777) | 0o600)
        files.append(rel)


__all__ = ["AgentExit", "AgentLink", "LinkLost", "attach_argv", "attach_command", "extract_results",
           "serve_command"]
