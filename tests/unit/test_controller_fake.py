"""The Controller's scheduling logic on the in-memory fake backend and its fake clock: no process, no sleep.

Durations and timeouts are virtual seconds (an hour-long timeout passes at once); the retry backoff's
sleeps go to the same clock, so the waits the policy asks for are checked exactly.
"""
from __future__ import annotations

import types
from pathlib import Path

import gevent
import gevent.event
import gevent.pool
import pytest

import runaway.controller as controller_module
from orchestra.manifest import RetryPolicy
from runaway.backend import RunHandle
from runaway.controller import AttemptResult, Controller, Task
from runaway.fake import FakeBackend, FakeWorld, render_script
from runaway.backend import Job

COMMIT = "c0ffee" + "0" * 34


def code(commit: str):
    yield b""


class Recorder:
    """A Listener that writes down what it is told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.results: dict[str, AttemptResult] = {}

    def launched(self, task: Task, handle: RunHandle, attempt: int) -> None:
        self.events.append(("launched", task.job.execution_id, attempt, handle.slot.host))

    def attempt_failed(self, task: Task, result: AttemptResult, will_retry: bool) -> None:
        self.events.append(("retry", task.job.execution_id, result.attempt, result.failure))

    def finished(self, task: Task, result: AttemptResult) -> None:
        self.events.append(("finished", task.job.execution_id, result.attempt, result.failure))
        self.results[task.job.execution_id] = result

    def cancelled(self, task: Task, handle: RunHandle | None) -> None:
        self.events.append(("cancelled", task.job.execution_id, handle is not None))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


class Sleeps(list):
    """The waits the controller asked for, slept on the fake clock of ``world``."""

    world: FakeWorld | None = None

    def __call__(self, seconds: float = 0) -> None:
        self.append(seconds)
        assert self.world is not None
        self.world.clock.sleep(seconds)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """The controller's gevent.sleep (retry backoff) on the fake clock; only that module's view is patched."""
    recorded = Sleeps()
    proxy = types.SimpleNamespace(sleep=recorded, pool=gevent.pool, event=gevent.event,
                                  GreenletExit=gevent.GreenletExit)
    monkeypatch.setattr(controller_module, "gevent", proxy)
    return recorded


def make(world: FakeWorld, tmp_path: Path, sleeps: Sleeps, retry: RetryPolicy = RetryPolicy(),
         **kwargs) -> tuple[FakeBackend, Recorder, Controller]:
    sleeps.world = world
    backend = FakeBackend(world)
    backend.start()
    recorder = Recorder()
    return backend, recorder, Controller(backend, recorder, code, retry=retry, staging=tmp_path / "staging",
                                         **kwargs)


def job(n: int, timeout: float | None = None, **script) -> Job:
    return Job(f"{n:012x}", COMMIT, render_script(**script), outputs=("*.json",), timeout=timeout)


def run(controller: Controller, tasks, limit: float = 10.0) -> None:
    with gevent.Timeout(limit):  # a scheduling bug must fail, not hang the suite
        controller.run(tasks)


def test_slots_bound_concurrency_and_are_freed_when_an_execution_ends(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=2)
    backend, recorder, controller = make(world, tmp_path, sleeps)
    start = world.clock.time()
    run(controller, [Task(job(n, duration=10)) for n in range(5)])
    ends = sorted(r.outcome.ended - start for r in recorder.results.values())
    assert ends == [10, 10, 20, 20, 30]  # two at a time, each next one on the slot the last one freed
    assert [e[0] for e in recorder.events].count("finished") == 5
    assert world.listing() == []  # every run directory discarded once committed


def test_a_slot_is_free_again_before_the_results_are_committed(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1)
    backend, recorder, controller = make(world, tmp_path, sleeps)
    committing = gevent.event.Event()
    original = recorder.finished

    def slow_commit(task: Task, result: AttemptResult) -> None:
        if task.job.execution_id == job(0).execution_id:
            committing.wait()  # the first commit takes as long as the second execution
        original(task, result)

    recorder.finished = slow_commit  # type: ignore[method-assign]
    runner = gevent.spawn(controller.run, [Task(job(0, duration=1)), Task(job(1, duration=1))])
    with gevent.Timeout(10):
        while not any(e[:2] == ("launched", job(1).execution_id) for e in recorder.events):
            gevent.sleep(0.001)
        committing.set()
        runner.get()
    assert {e[1] for e in recorder.of("finished")} == {job(0).execution_id, job(1).execution_id}


def test_retries_follow_the_policy_with_its_backoff(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1)
    policy = RetryPolicy(max=2, on=("exit",), backoff=5.0)
    backend, recorder, controller = make(world, tmp_path, sleeps, policy)
    flaky = job(1, exit=[1, 1, 0])
    run(controller, [Task(flaky)])
    eid = flaky.execution_id
    assert recorder.events == [("launched", eid, 1, "place1"), ("retry", eid, 1, "exit"),
                               ("launched", eid, 2, "place1"), ("retry", eid, 2, "exit"),
                               ("launched", eid, 3, "place1"), ("finished", eid, 3, None)]
    assert [s for s in sleeps if s] == [5.0, 10.0]  # the wait doubles from the policy's backoff


def test_out_of_attempts_the_last_failure_stands(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1)
    backend, recorder, controller = make(world, tmp_path, sleeps, RetryPolicy(max=1, on=("exit",), backoff=0))
    broken = job(2, exit=7)
    run(controller, [Task(broken)])
    assert [e[0] for e in recorder.events] == ["launched", "retry", "launched", "finished"]
    result = recorder.results[broken.execution_id]
    assert (result.attempt, result.failure, result.outcome.exit_code) == (2, "exit", 7)
    assert len(world.launches) == 2


def test_a_failure_kind_the_policy_does_not_name_is_not_retried(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1)
    backend, recorder, controller = make(world, tmp_path, sleeps, RetryPolicy(max=3, on=("node-failure",)))
    run(controller, [Task(job(3, exit=1))])
    assert [e[0] for e in recorder.events] == ["launched", "finished"]
    assert sleeps == []


def test_a_lost_place_is_retried_as_a_node_failure_elsewhere(tmp_path, sleeps) -> None:
    world = FakeWorld(places=2, slots=1)
    backend, recorder, controller = make(world, tmp_path, sleeps, RetryPolicy(max=1, on=("node-failure",),
                                                                              backoff=0))
    unlucky = job(4, duration=30, lose=1, files={"m.json": "{}"})
    run(controller, [Task(unlucky)])
    eid = unlucky.execution_id
    assert recorder.events == [("launched", eid, 1, "place1"), ("retry", eid, 1, "node-failure"),
                               ("launched", eid, 2, "place2"), ("finished", eid, 2, None)]
    assert recorder.results[eid].collected is not None and recorder.results[eid].collected.outputs == ["m.json"]
    assert not world.places["place1"].alive


def test_a_lost_allocation_is_replaced_by_a_new_one(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True)
    backend, recorder, controller = make(world, tmp_path, sleeps, RetryPolicy(max=1, on=("node-failure",),
                                                                              backoff=0))
    run(controller, [Task(job(5, lose=1))])
    assert world.allocations == ["fake-1", "fake-2"]
    assert [e[3] for e in recorder.of("launched")] == ["fake-1-node1", "fake-2-node1"]
    assert recorder.of("finished")[0][3] is None


def test_timeout_ends_a_hanging_execution_in_virtual_time(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1)
    backend, recorder, controller = make(world, tmp_path, sleeps)
    run(controller, [Task(job(6, hang=True, timeout=7200.0))])  # two hours, passed at once
    result = recorder.results[job(6).execution_id]
    assert result.failure == "timeout" and result.outcome.timed_out
    assert result.outcome.ended - result.outcome.started == 7200.0


def test_ctrl_c_while_the_allocation_is_pending_ends_the_run_with_nothing_launched(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True, pending=True)
    backend, recorder, controller = make(world, tmp_path, sleeps)
    backend.start(expected=3)
    runner = gevent.spawn(controller.run, (Task(job(n)) for n in range(3)))
    gevent.sleep(0.01)
    assert not runner.ready() and backend.waiting_for() == "allocation fake-1 pending"
    controller.stop()  # what Ctrl-C does
    runner.get(timeout=5)
    assert world.launches == [] and recorder.events == []  # never launched: they stay "created"
    assert world.allocations == ["fake-1"]


def test_an_allocation_granted_later_takes_the_work(tmp_path, sleeps) -> None:
    world = FakeWorld(places=2, slots=1, allocation=True, pending=True)
    backend, recorder, controller = make(world, tmp_path, sleeps)
    runner = gevent.spawn(controller.run, [Task(job(n, duration=1)) for n in range(3)])
    gevent.sleep(0.01)
    assert world.launches == []
    world.grant()
    runner.get(timeout=5)
    assert len(recorder.of("finished")) == 3 and {e[3] for e in recorder.of("launched")} == {
        "fake-1-node1", "fake-1-node2"}


def test_stop_cancels_what_runs_and_launches_nothing_more(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=2)
    backend, recorder, controller = make(world, tmp_path, sleeps)
    runner = gevent.spawn(controller.run, [Task(job(n, hang=True)) for n in range(4)])
    with gevent.Timeout(5):
        while len(recorder.of("launched")) < 2:
            gevent.sleep(0.001)
    controller.stop()
    runner.get(timeout=5)
    assert sorted(recorder.of("cancelled")) == [("cancelled", job(0).execution_id, True),
                                                ("cancelled", job(1).execution_id, True)]
    assert len(world.launches) == 2 and recorder.of("finished") == []


def test_a_resumed_controller_drives_what_an_earlier_one_left_running(tmp_path, sleeps) -> None:
    world = FakeWorld(places=1, slots=1)
    first, _recorder, _controller = make(world, tmp_path, sleeps)
    left = job(7, duration=50, files={"r.json": "1"})
    handle = first.launch(first.acquire(), left, code)
    first.close()  # the controller dies; the execution goes on

    second, recorder, controller = make(world, tmp_path, sleeps)
    again = second.reattach(left.execution_id, handle.slot.host, handle.slot.index, handle.remote_dir)
    assert again is not None
    run(controller, [Task(left, handle=again), Task(job(8, duration=1))])
    assert recorder.of("launched") == [("launched", job(8).execution_id, 1, "place1")]  # not run twice
    assert recorder.results[left.execution_id].collected.outputs == ["r.json"]
    assert [launch[0] for launch in world.launches] == [left.execution_id, job(8).execution_id]


@pytest.mark.parametrize("leave, kept", [("none", []), ("failed", ["bad"]), ("all", ["bad", "good"])])
def test_leave_keeps_the_run_directories_it_names(tmp_path, sleeps, leave: str, kept: list[str]) -> None:
    world = FakeWorld(places=1, slots=2)
    backend, recorder, controller = make(world, tmp_path, sleeps, leave=leave)
    good, bad = job(10), job(11, exit=2)
    run(controller, [Task(good), Task(bad)])
    names = {good.execution_id: "good", bad.execution_id: "bad"}
    assert sorted(names[world.runs[d].execution_id] for d in world.listing()) == kept
