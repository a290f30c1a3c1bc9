"""A per-node launcher agent: one ``srun`` per node per allocation instead of one per execution.

Why: on a real cluster every ``srun --jobid`` is a step-creation RPC to slurmctld; thousands of short
executions turn into thousands of RPCs. RADICAL-Pilot and Parsl's HTEX start one process per node and
feed it work; so does this. Why a spool file and not stdin: an agent fed through an SSH channel dies
with the channel, and on clusters that track processes with cgroups its executions die with it. The
agent therefore reads launch requests appended to ``<agent_dir>/requests`` (on the shared filesystem,
re-opened at each read so NFS close-to-open consistency shows new lines) and appends what it did to
``<agent_dir>/events``. Executions still record their own pid/exit_code through the shared wrapper,
so the controller's batched poll works unchanged and nothing depends on the agent staying reachable.

This file is shipped to the cluster and run with the remote ``python3``: standard library only, and
importable locally for its pure protocol functions (tested in tests/unit/test_slurm_agent.py).

Protocol, one line each, fields separated by single spaces, free text base64-encoded::

    request: launch <execution_id> <b64 run_dir> <b64 command> <b64 json env>
    request: kill <execution_id> <signal number>
    request: exit
    event:   ready <pid>
    event:   started <execution_id> <pid>
    event:   exited <execution_id> <code>        (negative: killed by that signal)
    event:   error <execution_id> <b64 message>
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def _unb64(text: str) -> str:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8", "surrogateescape")
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"bad base64 field {text[:20]!r}") from exc


@dataclasses.dataclass(frozen=True)
class Request:
    kind: str  # launch | kill | exit
    execution_id: str = ""
    run_dir: str = ""
    command: str = ""
    env: dict = dataclasses.field(default_factory=dict)
    signal: int = 0


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str  # ready | started | exited | error
    execution_id: str = ""
    value: int = 0
    message: str = ""


def render_request(request: Request) -> str:
    """One request line (no newline). Ids are checked so a line can never carry a second request."""
    if request.kind == "exit":
        return "exit"
    if not _ID.match(request.execution_id):
        raise ValueError(f"bad execution id {request.execution_id!r}")
    if request.kind == "launch":
        env = json.dumps({str(k): str(v) for k, v in request.env.items()}, sort_keys=True)
        return " ".join(["launch", request.execution_id, _b64(request.run_dir), _b64(request.command), _b64(env)])
    if request.kind == "kill":
        return f"kill {request.execution_id} {int(request.signal)}"
    raise ValueError(f"unknown request kind {request.kind!r}")


def parse_request(line: str) -> Request:
    words = line.strip().split(" ")
    if words == ["exit"]:
        return Request("exit")
    if len(words) >= 2 and not _ID.match(words[1]):
        raise ValueError(f"bad execution id in {line[:80]!r}")
    if words[0] == "launch" and len(words) == 5:
        env = json.loads(_unb64(words[4]))
        if not isinstance(env, dict):
            raise ValueError("launch env is not a mapping")
        return Request("launch", words[1], _unb64(words[2]), _unb64(words[3]), {str(k): str(v) for k, v in env.items()})
    if words[0] == "kill" and len(words) == 3 and re.fullmatch(r"\d{1,2}", words[2]):
        return Request("kill", words[1], signal=int(words[2]))
    raise ValueError(f"not a request: {line[:80]!r}")


def render_event(event: Event) -> str:
    if event.kind == "ready":
        return f"ready {int(event.value)}"
    if not _ID.match(event.execution_id):
        raise ValueError(f"bad execution id {event.execution_id!r}")
    if event.kind in ("started", "exited"):
        return f"{event.kind} {event.execution_id} {int(event.value)}"
    if event.kind == "error":
        return f"error {event.execution_id} {_b64(event.message)}"
    raise ValueError(f"unknown event kind {event.kind!r}")


def parse_event(line: str) -> Event:
    words = line.strip().split(" ")
    if words[0] == "ready" and len(words) == 2 and words[1].isdigit():
        return Event("ready", value=int(words[1]))
    if len(words) == 3 and words[0] in ("started", "exited") and _ID.match(words[1]) \
            and re.fullmatch(r"-?\d+", words[2]):
        return Event(words[0], words[1], int(words[2]))
    if len(words) == 3 and words[0] == "error" and _ID.match(words[1]):
        return Event("error", words[1], message=_unb64(words[2]))
    raise ValueError(f"not an event: {line[:80]!r}")


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete lines of a buffer and the unfinished rest (a writer may be mid-line)."""
    head, sep, rest = buffer.rpartition(b"\n")
    if not sep:
        return [], buffer
    return [line.decode("utf-8", "replace") for line in head.split(b"\n") if line.strip()], rest


# ------------------------------------------------------------------------------------------ the agent
class Agent:
    """Tail the requests file, start each execution with the shared wrapper, report exits."""

    def __init__(self, directory: str, wrapper: str, marker: str, interval: float = 0.02) -> None:
        self.dir = directory
        self.wrapper = wrapper
        self.marker = marker
        self.interval = interval
        self.offset = 0
        self.rest = b""
        self.children: dict[int, str] = {}

    def emit(self, event: Event) -> None:
        with open(os.path.join(self.dir, "events"), "a", encoding="utf-8") as handle:
            handle.write(render_event(event) + "\n")

    def read_requests(self) -> list[str]:
        try:
            with open(os.path.join(self.dir, "requests"), "rb") as handle:  # re-open: NFS
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines, self.rest = split_lines(self.rest + data)
        return lines

    def launch(self, request: Request) -> None:
        env = dict(os.environ)
        env.update(request.env)
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", self.wrapper, self.marker, request.command],
                                    cwd=request.run_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            self.emit(Event("error", request.execution_id, message=str(exc)))
            return
        self.children[proc.pid] = request.execution_id
        self.emit(Event("started", request.execution_id, proc.pid))

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            execution_id = self.children.pop(pid, None)
            if execution_id is not None:
                code = os.waitstatus_to_exitcode(status)
                self.emit(Event("exited", execution_id, code))

    def kill(self, request: Request) -> None:
        for pid, execution_id in self.children.items():
            if execution_id == request.execution_id:
                try:
                    os.killpg(pid, request.signal)
                except (ProcessLookupError, PermissionError):
                    pass

    def run(self) -> int:
        os.makedirs(self.dir, exist_ok=True)
        self.emit(Event("ready", value=os.getpid()))
        while True:
            for line in self.read_requests():
                try:
                    request = parse_request(line)
                except ValueError as exc:
                    sys.stderr.write(f"orchestra-agent: {exc}\n")
                    continue
                if request.kind == "exit":
                    return 0
                if request.kind == "launch":
                    self.launch(request)
                elif request.kind == "kill":
                    self.kill(request)
            self.reap()
            time.sleep(self.interval)


def main(argv: list[str]) -> int:
    """python3 agent.py AGENT_DIR WRAPPER_B64 MARKER"""
    if len(argv) != 3:
        sys.stderr.write("usage: agent.py AGENT_DIR WRAPPER_B64 MARKER\n")
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return Agent(argv[0], _unb64(argv[1]), argv[2]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
