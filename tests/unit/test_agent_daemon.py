"""The agent daemon for real, on this machine: started by `attach --spawn` as a controller starts it over
SSH, spoken to through that attach process's stdin/stdout. Every wait is bounded."""
from __future__ import annotations

import base64
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runaway import agent
from runaway.rundir import MARKER, WRAPPER

AGENT = Path(agent.__file__)
WRAPPER_B64 = base64.b64encode(WRAPPER.encode()).decode()


class Attached:
    """One `agent.py attach` process: requests in, events (and results payloads) out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "agent"
        self.proc = subprocess.Popen([sys.executable, str(AGENT), "attach", str(self.dir), str(root), WRAPPER_B64,
                                      MARKER, "--spawn"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buffer = b""
        kind, _id, fields = self.event(10)
        assert kind == "hello" and fields["protocol"] == agent.PROTOCOL

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(("\n".join(lines) + "\n").encode())
        self.proc.stdin.flush()

    def _fill(self, deadline: float) -> None:
        assert self.proc.stdout is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no event from the agent in time")
        ready, _, _ = select.select([self.proc.stdout], [], [], left)
        if ready:
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                raise EOFError("the attach process ended")
            self.buffer += data

    def event(self, within: float = 10.0) -> tuple:
        deadline = time.monotonic() + within
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, self.buffer = self.buffer.split(b"\n", 1)
        kind, execution_id, fields = agent.parse_event(line.decode())
        if kind == "exited":
            while len(self.buffer) < fields["size"]:
                self._fill(deadline)
            payload, self.buffer = self.buffer[:fields["size"]], self.buffer[fields["size"]:]
            fields["results"] = agent.parse_results(payload)
        return kind, execution_id, fields

    def until(self, kind: str, execution_id: str, within: float = 10.0) -> dict:
        deadline = time.monotonic() + within
        while True:
            got_kind, got_id, fields = self.event(max(0.1, deadline - time.monotonic()))
            if (got_kind, got_id) == (kind, execution_id):
                return fields
            assert got_kind not in ("error",) or got_id != execution_id, fields

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(5)


@pytest.fixture
def root(tmp_path: Path):
    (tmp_path / "runs").mkdir()
    code = tmp_path / "code" / "c1"
    code.mkdir(parents=True)
    (code / "hello.py").write_text("print('hi')\n")
    yield tmp_path
    pid_file = tmp_path / "agent" / "pid"
    if pid_file.exists():  # the daemon outlives its attach processes: stop it
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def _launch(root: Path, execution_id: str, command: str, **fields) -> str:
    return agent.render_request("launch", execution_id, run_dir=str(root / "runs" / execution_id),
                                code_dir=str(root / "code" / "c1"), command=command,
                                env=fields.pop("env", {}), token=fields.pop("token", "t1"), **fields)


def test_launch_runs_in_a_copy_of_the_code_and_returns_exit_code_and_results(root):
    link = Attached(root)
    try:
        link.send(_launch(root, "e1", "python3 hello.py > out.txt; echo \"$GREETING\"; exit 7",
                          env={"GREETING": "it's me"}, outputs=["*.txt"]))
        started = link.until("started", "e1")
        assert started["pid"] > 0
        done = link.until("exited", "e1")
        assert done["code"] == 7
        assert done["results"]["out.txt"] == b"hi\n"
        assert done["results"][".orchestra/stdout"] == b"it's me\n"
        assert (root / "runs" / "e1" / "hello.py").exists()
        assert (root / "code" / "c1" / "out.txt").exists() is False  # the code cache is never touched
    finally:
        link.close()


def test_a_repeated_launch_line_never_starts_it_twice_but_a_new_token_does(root):
    counter = root / "count"
    link = Attached(root)
    try:
        line = _launch(root, "e2", f"echo x >> {counter}; sleep 0.3")
        link.send(line, line)  # a link that dropped re-sends what it was not sure of
        link.until("exited", "e2")
        time.sleep(0.3)
        assert counter.read_text() == "x\n"
        link.send(_launch(root, "e2", f"echo y >> {counter}", token="t2"))  # a new attempt
        assert link.until("exited", "e2")["code"] == 0
        assert counter.read_text() == "x\ny\n"
    finally:
        link.close()


def test_the_daemon_outlives_its_session_and_reports_what_ended_meanwhile(root):
    link = Attached(root)
    link.send(_launch(root, "e3", "sleep 0.5; exit 3"))
    link.until("started", "e3")
    daemon = int((root / "agent" / "pid").read_text())
    link.close()  # the controller goes away while e3 runs
    time.sleep(1.0)
    again = Attached(root)
    try:
        assert int((root / "agent" / "pid").read_text()) == daemon
        again.send(agent.render_request("watch", "e3", run_dir=str(root / "runs" / "e3")))
        assert again.until("exited", "e3")["code"] == 3
        again.send(agent.render_request("watch", "nope", run_dir=str(root / "runs" / "nope")))
        again.until("gone", "nope")
    finally:
        again.close()


def test_kill_stops_the_group_and_escalates_after_the_grace(root):
    link = Attached(root)
    try:
        link.send(_launch(root, "e4", "trap '' TERM; sleep 30 & sleep 30; wait"))
        link.until("started", "e4")
        start = time.monotonic()
        link.send(agent.render_request("kill", "e4", signal=15, grace=0.5))
        done = link.until("exited", "e4", within=10)
        assert time.monotonic() - start < 8 and done["code"] != 0
        left = subprocess.run(["pgrep", "-f", "sleep 30"], capture_output=True, text=True).stdout.split()
        mine = [p for p in left if str(root) in Path(f"/proc/{p}/cwd").resolve().as_posix()]
        assert mine == []
    finally:
        link.close()


def test_remove_recycles_the_directory_and_refuses_what_is_not_a_run(root):
    link = Attached(root)
    try:
        link.send(_launch(root, "e5", "echo made > extra.txt"))
        link.until("exited", "e5")
        outside = root / "keep"
        outside.mkdir()
        link.send(agent.render_request("remove", "e5", run_dir=str(root / "runs" / "e5")),
                  agent.render_request("remove", "keep", run_dir=str(outside)),
                  agent.render_request("remove", "e5", run_dir=str(root / "code" / "c1")),
                  agent.render_request("ping", token="1"))
        link.until("pong", "")
        assert not (root / "runs" / "e5").exists()
        assert outside.exists() and (root / "code" / "c1" / "hello.py").exists()
        # the next launch of the same code reuses the spare, restored to the code tree
        link.send(_launch(root, "e6", "ls -A"))
        listing = link.until("exited", "e6")["results"][".orchestra/stdout"].decode().split()
        assert listing == [".orchestra", "hello.py"]
    finally:
        link.close()


def test_env_request_sets_the_environment_launches_start_from(root):
    link = Attached(root)
    try:
        link.send(agent.render_request("env", env={"PATH": os.environ["PATH"], "FROM_SESSION": "yes"}),
                  _launch(root, "e7", 'echo "${FROM_SESSION:-no} ${HOME:-unset}"'))
        assert link.until("exited", "e7")["results"][".orchestra/stdout"] == b"yes unset\n"
    finally:
        link.close()


def test_an_execution_killed_while_nobody_listened_reports_its_signal_not_a_loss(root):
    """SIGKILL leaves no exit_code file; the agent saw the wait status and says so to a later watch."""
    link = Attached(root)
    link.send(_launch(root, "e8", "sleep 30"))
    pid = link.until("started", "e8")["pid"]
    link.close()
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.5)
    again = Attached(root)
    try:
        again.send(agent.render_request("watch", "e8", run_dir=str(root / "runs" / "e8")))
        assert again.until("exited", "e8")["code"] == 137
    finally:
        again.close()
