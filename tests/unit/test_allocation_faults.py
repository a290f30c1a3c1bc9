"""The allocation backend's fault paths, on a scripted frontend (fast logic tests; the real symptoms are
exercised on the dev cluster by tests/integration/test_requeue.py and test_faults.py):

- giving allocations back at close survives a dropped connection (scancel retried), and when it cannot,
  ONE line says which allocation is left and the command that cancels it by hand;
- an allocation the scheduler requeues while it runs: one line, its executions lost at once with the
  reason, its places brought up fresh when it runs again;
- an agent link that re-attaches within a few seconds says nothing; one that does not says it once.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import gevent
import pytest

from orchestra.errors import ConnectionError_
from runaway import agent_link
from runaway.allocation_backend import Allocation, AllocationBackend
from runaway.allocation_ledger import AllocationLedger
from runaway.backend import Outcome, RunHandle, Slot
from runaway.hosts import Result
from runaway.profiles import build_profile
from runaway.providers import JobState
from runaway.providers.slurm import SlurmProvider, render_scancel


class Frontend:
    """The cluster's frontend as a transport: records commands; drops the first ``drops`` scancels."""

    name = "devcluster"

    def __init__(self, drops: int = 0) -> None:
        self.drops = drops
        self.commands: list[str] = []

    def run(self, cmd: str, stdin: bytes | None = None, timeout: float | None = None, warn: bool = False) -> Result:
        self.commands.append(cmd)
        if cmd.startswith("scancel") and self.drops:
            self.drops -= 1
            if self.drops % 2:
                raise ConnectionError_(f"{self.name}: connection lost during `{cmd}`: EOFError()")
            return Result(cmd, None, "", "", b"")  # the channel closed without an exit status
        return Result(cmd, 0, "", "", b"")

    def close(self) -> None:
        pass


class Runs:
    def __init__(self, host: Frontend) -> None:
        self.host = host
        self.workdir = "/w"

    def prepare(self) -> None:
        pass

    def stop_watching(self) -> None:
        pass


class Launcher:
    def __init__(self) -> None:
        self.up: list[list[str]] = []
        self.down: list[tuple[list[str], str]] = []
        self.outcome = Outcome(None, None, None, lost=True, error="its place's agent went away")

    def start(self) -> None:
        pass

    def places_up(self, places) -> None:
        self.up.append([p.node for p in places])

    def places_down(self, places, error: str) -> None:
        self.down.append(([p.node for p in places], error))

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        return self.outcome

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


def make(tmp_path: Path, drops: int = 0) -> tuple[AllocationBackend, Frontend, Launcher, AllocationLedger]:
    profile = build_profile("hpc", {"kind": "slurm", "host": "devcluster", "ssh_config": "/etc/cfg",
                                    "squeue_interval": 0.05, "allocation": {"nodes": 1, "walltime": "10m"}})
    frontend, launcher = Frontend(drops), Launcher()
    ledger = AllocationLedger(tmp_path / "ledger", "hpc")
    backend = AllocationBackend(profile, SlurmProvider(), launcher, Runs(frontend), ledger)  # type: ignore[arg-type]
    return backend, frontend, launcher, ledger


def hold(backend: AllocationBackend, ledger: AllocationLedger, job_id: str = "42") -> Allocation:
    backend.ledger.add(job_id)  # type: ignore[union-attr]
    alloc = backend.allocations[job_id] = Allocation(job_id, time.time())
    backend._update(alloc, JobState(job_id, "RUNNING", 600.0, ("node1",)), time.time())
    return alloc


def test_close_cancels_again_after_a_dropped_connection(tmp_path, caplog):
    backend, frontend, _launcher, ledger = make(tmp_path, drops=2)
    hold(backend, ledger)
    with caplog.at_level(logging.WARNING):
        backend.close()
    assert [c for c in frontend.commands if c.startswith("scancel")] == ["scancel 42"] * 3
    assert not caplog.records, caplog.text
    path = tmp_path / "ledger" / str(ledger.pid)
    assert not path.exists() or not path.read_text().strip()  # given back


def test_close_says_in_one_line_what_is_left_and_how_to_cancel_it(tmp_path, caplog):
    backend, frontend, _launcher, ledger = make(tmp_path, drops=10_000)
    backend.cancel_retry_for = 0.5
    hold(backend, ledger)
    with caplog.at_level(logging.WARNING):
        backend.close()
    assert len(frontend.commands) >= 2  # retried within the bound
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "allocation 42 may still hold nodes" in message, message
    assert f"`ssh -F /etc/cfg devcluster {render_scancel(['42'])}`" in message, message
    assert "42" in (tmp_path / "ledger" / str(ledger.pid)).read_text()  # left for a resume to give back


def test_a_requeued_allocation_loses_its_executions_at_once_and_comes_back_fresh(tmp_path, caplog):
    backend, _frontend, launcher, ledger = make(tmp_path)
    alloc = hold(backend, ledger)
    assert launcher.up == [["node1"]]
    slot = backend.acquire()
    handle = RunHandle("e1", slot, "/w/runs/e1")
    with caplog.at_level(logging.WARNING):
        backend._update(alloc, JobState("42", "PENDING", None, (), "BeginTime"), time.time())
        outcome = backend.wait(handle, None)
        backend.release(slot)
        assert backend.waiting_for() is None  # nobody waits yet
        backend._update(alloc, JobState("42", "RUNNING", 600.0, ("node2",)), time.time())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["hpc: allocation 42 was requeued by the scheduler: waiting for it to run again",
                     "hpc: allocation 42 is running again (on node2)"], lines
    assert outcome.lost and outcome.exit_code is None
    assert outcome.error == "allocation 42 was requeued by the scheduler under the execution"
    assert launcher.down == [(["node1"], outcome.error)]
    assert launcher.up == [["node1"], ["node2"]]  # its places come up again, on the nodes it now has
    again = backend.acquire()
    assert again.node == "node2" and again != slot
    assert backend._requeued == {}


def test_an_execution_that_ends_normally_is_not_blamed_on_a_later_requeue(tmp_path):
    backend, _frontend, launcher, ledger = make(tmp_path)
    alloc = hold(backend, ledger)
    slot = backend.acquire()
    launcher.outcome = Outcome(0, 1.0, 2.0)
    assert backend.wait(RunHandle("e1", slot, "/w/runs/e1"), None) == launcher.outcome
    backend.release(slot)
    backend._update(alloc, JobState("42", "PENDING", None, (), "BeginTime"), time.time())
    assert backend._requeued == {}  # no execution held a slot of it


class FlakySession:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def recv(self) -> bytes:
        gevent.sleep(3600)
        return b""

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass

    def stderr_tail(self) -> str:
        return ""


class Greeting(FlakySession):
    def __init__(self) -> None:
        super().__init__()
        self._hello = True

    def recv(self) -> bytes:
        if self._hello:
            self._hello = False
            return f"hello {agent_link.protocol.PROTOCOL} 1\n".encode()
        return super().recv()


def _link(fail_for: float) -> agent_link.AgentLink:
    until = time.monotonic() + fail_for

    def open_session():
        if time.monotonic() < until:
            raise ConnectionError_("node1: the agent did not answer: srun: error: Job is pending execution\n")
        return Greeting()

    return agent_link.AgentLink(open_session, "hpc:42:node1", reconnect_for=30.0)


@pytest.mark.parametrize("down_for, lines", [(0.6, 0), (2.0, 2)])
def test_a_link_that_comes_back_soon_says_nothing_and_one_that_does_not_says_it_once(monkeypatch, caplog,
                                                                                    down_for, lines):
    monkeypatch.setattr(agent_link, "QUIET_FOR", 1.0)
    link = _link(down_for)
    with caplog.at_level(logging.WARNING, logger="runaway"):
        link._reconnect(None)
    link.close()
    assert link.reconnects == 1 and link.error is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == lines, messages
    if lines:
        assert "lost the connection to the agent (node1: the agent did not answer: srun: error: Job is pending execution)" in messages[0]
        assert messages[1] == "hpc:42:node1: re-attached to the agent"


class ResumeFrontend(Frontend):
    """A frontend whose squeue lists the dead controller's allocation 7 running on node1 and node2."""

    def run(self, cmd: str, stdin: bytes | None = None, timeout: float | None = None, warn: bool = False) -> Result:
        if cmd.startswith("squeue"):
            self.commands.append(cmd)
            return Result(cmd, 0, "7|RUNNING|9:00|node1,node2|None\n", "", b"")
        if cmd.startswith("sbatch"):
            self.commands.append(cmd)
            return Result(cmd, 0, "99\n", "", b"")
        return super().run(cmd, stdin, timeout, warn)


class FindingLauncher(Launcher):
    def find(self, execution_id: str, host: str, remote_dir: str | None):
        from runaway.launchers import Found
        return Found(remote_dir or f"/w/runs/{execution_id}", 123, time.time(), None)

    def discard(self, handle: RunHandle) -> None:
        pass


def test_a_resume_takes_over_the_dead_controllers_allocation_and_runs_in_its_free_slots(tmp_path, caplog):
    """Its nodes are where new work can run now: a new allocation would wait for them in the queue."""
    profile = build_profile("hpc", {"kind": "slurm", "host": "devcluster", "squeue_interval": 0.05,
                                    "slots_per_node": 2, "allocation": {"nodes": 2, "walltime": "10m"}})
    directory = tmp_path / "ledger"
    dead = AllocationLedger(directory, "hpc", pid=999_999, alive=lambda pid: False)
    dead.add("7")
    frontend, launcher = ResumeFrontend(), FindingLauncher()
    ledger = AllocationLedger(directory, "hpc", alive=lambda pid: pid != 999_999)
    backend = AllocationBackend(profile, SlurmProvider(), launcher, Runs(frontend), ledger)  # type: ignore[arg-type]
    handles = [backend.reattach(e, "devcluster", i, None) for e, i in (("e1", 0), ("e2", 3))]
    assert all(h is not None for h in handles)
    with caplog.at_level(logging.INFO, logger="runaway"):
        backend.start()
        try:
            with gevent.Timeout(10, AssertionError(f"no slot of allocation 7: {frontend.commands}")):
                slots = [backend.acquire(), backend.acquire()]  # 4 slots, 2 held by the re-attached
            assert {s.allocation for s in slots} == {"7"} and min(s.index for s in slots) >= 4, slots
            assert not [c for c in frontend.commands if c.startswith(("sbatch", "scancel"))], frontend.commands
            assert launcher.up == [["node1", "node2"]]
            backend.discard(handles[0])  # e1 ended: its slot is free for the next execution
            with gevent.Timeout(10, AssertionError("the re-attached execution's slot stayed held")):
                third = backend.acquire()
            assert third.allocation == "7" and third not in slots
        finally:
            backend.close()
    assert "hpc: took over allocation 7 of the controller that is gone" in caplog.text
    assert [c for c in frontend.commands if c.startswith("scancel")] == ["scancel 7"]  # given back at the end
    assert not dead.path.exists() or "7" not in dead.path.read_text()


class DroppingSqueue(Frontend):
    def __init__(self, drops: int) -> None:
        super().__init__()
        self.squeue_drops = drops

    def run(self, cmd: str, stdin: bytes | None = None, timeout: float | None = None, warn: bool = False) -> Result:
        if cmd.startswith("squeue"):
            self.commands.append(cmd)
            if self.squeue_drops:
                self.squeue_drops -= 1
                raise ConnectionError_(f"{self.name}: connection lost during `squeue`: EOFError()")
            return Result(cmd, 0, "42|RUNNING|9:00|node1|None\n", "", b"")
        return super().run(cmd, stdin, timeout, warn)


@pytest.mark.parametrize("drops, warned", [(1, False), (10_000, True)])
def test_a_squeue_that_meets_one_dropped_link_is_not_worth_a_line(tmp_path, caplog, drops, warned):
    backend, _frontend, _launcher, ledger = make(tmp_path)
    backend.host = backend.runs.host = DroppingSqueue(drops)  # type: ignore[assignment]
    hold(backend, ledger)
    with caplog.at_level(logging.WARNING, logger="runaway"):
        backend.start()
        deadline = time.monotonic() + 10
        while backend.squeue_calls < 4 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        backend.close()
    polls = [r.getMessage() for r in caplog.records if "scheduler poll failed" in r.getMessage()]
    assert bool(polls) == warned, polls


def test_a_requeue_between_two_polls_is_noticed_by_the_new_start_time(tmp_path, caplog):
    backend, _frontend, launcher, ledger = make(tmp_path)
    alloc = hold(backend, ledger)
    backend._update(alloc, JobState("42", "RUNNING", 600.0, ("node1",), "None", "2026-12-01T10:00:00"), time.time())
    slot = backend.acquire()
    handle = RunHandle("e1", slot, "/w/runs/e1")
    with caplog.at_level(logging.WARNING):
        # Preempted, requeued and started again on node2 before the next squeue: RUNNING both times.
        backend._update(alloc, JobState("42", "RUNNING", 900.0, ("node2",), "None", "2026-12-01T10:05:00"),
                        time.time())
        outcome = backend.wait(handle, None)
    assert outcome.lost and outcome.preempted and "requeued" in (outcome.error or "")
    assert launcher.up[-1] == ["node2"] and alloc.state == "RUNNING"
    assert [r.getMessage() for r in caplog.records][0].endswith("was requeued by the scheduler: waiting for it "
                                                                "to run again")


def test_completing_is_not_the_end_until_the_next_poll_says_so(tmp_path, caplog):
    backend, _frontend, launcher, ledger = make(tmp_path)
    alloc = hold(backend, ledger)
    slot = backend.acquire()
    handle = RunHandle("e1", slot, "/w/runs/e1")
    # `scontrol requeue` and preemption with REQUEUE show COMPLETING for a moment, then PENDING.
    backend._update(alloc, JobState("42", "COMPLETING", 600.0, ("node1",)), time.time())
    assert not alloc.closing and "42" in backend.allocations and not backend._usable(alloc)
    backend._update(alloc, JobState("42", "PENDING", None, (), "BeginTime"), time.time())
    outcome = backend.wait(handle, None)
    assert outcome.lost and outcome.preempted, outcome
    # A real end: COMPLETING, then gone.
    other = hold(backend, ledger, "43")
    backend._update(other, JobState("43", "COMPLETING", 0.0, ("node1",)), time.time())
    assert not other.closing
    backend._update(other, None, time.time())
    assert other.closing and "43" not in backend.allocations
