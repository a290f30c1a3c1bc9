"""Runs that outlive an allocation: the pure rules (runaway/walltime.py, core/checkpoint.py) and the
controller's decisions on the fake backend's allocations with a walltime (virtual seconds, no sleep):
what fits in the time left, when the warning goes out, how attempts resume and are bounded."""
from __future__ import annotations

import signal
import types
from pathlib import Path

import gevent
import gevent.event
import gevent.pool
import pytest

import runaway.controller as controller_module
from orchestra.checkpoint import CheckpointPolicy, parse_checkpoint
from orchestra.manifest import RetryPolicy, check_manifest
from orchestra.retry import failure_kind, retried
from runaway.backend import Job
from runaway.checkpoints import checkpoint_dir, parse_prepare, prepare_local, render_prepare, render_remove
from runaway.controller import Controller, Task
from runaway.fake import FakeBackend, FakeWorld, parse_script, render_script
from runaway.walltime import SLACK, fits, need, signal_name, warning_at

from .test_controller_fake import COMMIT, Recorder, Sleeps, code

POLICY = CheckpointPolicy(signal="USR1", grace=10.0)


# ------------------------------------------------------------------------------------------ pure rules
def test_need_is_the_timeout_or_room_for_a_checkpointing_run_capped_at_a_fresh_allocation() -> None:
    assert need(None, None, 3600) is None  # no timeout, no checkpoint: any slot, decided without a call
    assert need(600, None, 3600) == 600
    assert need(7200, None, 3600, margin=120) is None  # longer than any allocation: any slot, as before
    assert need(7200, POLICY, 3600) == 2 * 10 + SLACK  # a checkpointing run may start with little left
    assert need(None, CheckpointPolicy(grace=300), 60) is None
    assert need(3480, None, 3600, margin=120) == 3480


def test_fits_compares_what_is_left() -> None:
    assert fits(None, 100.0, 0.0) and fits(50, None, 0.0)
    assert fits(50, 150.0, 100.0) and not fits(51, 150.0, 100.0)


def test_the_warning_leaves_the_grace_and_the_slack_before_the_end() -> None:
    assert warning_at(1000.0, 20.0) == 1000.0 - 20.0 - SLACK
    assert signal_name(signal.SIGUSR1) == "USR1" and signal_name(signal.SIGTERM) == "TERM"


def test_failure_kinds_and_which_are_retried() -> None:
    assert failure_kind(0, False, False, walltime=True) == "walltime"  # saved and exited 0: not done
    assert failure_kind(None, False, True, preempted=True) == "preempted"
    assert retried("preempted", ("preempted",)) and retried("preempted", ("node-failure",))
    assert not retried("walltime", ("node-failure",)) and not retried(None, ("exit",))


def test_checkpoint_policy_parse_and_problems() -> None:
    policy, problems = parse_checkpoint({"signal": "SIGTERM", "grace": "20s", "every": "30m"})
    assert problems == [] and policy == CheckpointPolicy("TERM", 20.0, 1800.0)
    assert policy.signal_number == signal.SIGTERM
    assert parse_checkpoint({})[0] == CheckpointPolicy()
    _, problems = parse_checkpoint({"signal": "KILL", "grace": "0s"})
    assert [p[0] for p in problems] == [["signal"], ["grace"]]


def test_expegit_check_names_line_and_column_of_a_bad_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "orchestra.yaml"
    path.write_text("name: x\ncommand: echo hi\ncheckpoint: {signal: HUP, grace: 5m, every: soon}\n")
    manifest, errors = check_manifest(path)
    assert manifest is None
    lines = [str(e) for e in errors]
    assert any(":3:22:" in line and "checkpoint.signal" in line and "USR1" in line for line in lines), lines
    assert any(":3:45:" in line and "checkpoint.every" in line for line in lines), lines
    path.write_text("name: x\ncommand: echo hi\ncheckpoint: {grace: 20s}\nretries: {max: 2, on: [walltime, preempted]}\n")
    manifest, errors = check_manifest(path)
    assert errors == [] and manifest is not None
    assert manifest.checkpoint == CheckpointPolicy(grace=20.0) and manifest.retries.on == ("walltime", "preempted")


def test_checkpoint_directory_commands_render_and_parse(tmp_path: Path) -> None:
    directory = checkpoint_dir("/w/orch/", "abc")
    assert directory == "/w/orch/checkpoints/abc"
    assert render_prepare("/w/it's").startswith("mkdir -p '/w/it'\"'\"'s'")
    assert render_remove("/w/a b") == "rm -rf -- '/w/a b' '/w/a b'.old '/w/a b'.incoming.*"
    assert parse_prepare("") is None and parse_prepare("1700000000\n1700000100\n") == 1700000100.0
    assert parse_prepare("garbage") is None
    target = tmp_path / "ck"
    assert prepare_local(target) is None and target.is_dir()
    (target / "state.json").write_text("{}")
    assert prepare_local(target) == pytest.approx((target / "state.json").stat().st_mtime)


def test_the_fake_checkpoint_script_round_trips() -> None:
    assert parse_script(render_script(duration=5, checkpoint=True)).checkpoint
    assert not parse_script(render_script(duration=5)).checkpoint


# ------------------------------------------------------------------------- the controller, on the fake
@pytest.fixture
def clocked(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """The controller's sleeps and clock on the fake world's clock."""
    recorded = Sleeps()
    proxy = types.SimpleNamespace(sleep=recorded, pool=gevent.pool, event=gevent.event,
                                  GreenletExit=gevent.GreenletExit, spawn=gevent.spawn)
    monkeypatch.setattr(controller_module, "gevent", proxy)
    monkeypatch.setattr(controller_module, "time", types.SimpleNamespace(time=lambda: recorded.world.clock.time()))
    return recorded


def make(world: FakeWorld, tmp_path: Path, sleeps: Sleeps, retry: RetryPolicy) -> tuple[Recorder, Controller]:
    sleeps.world = world
    backend = FakeBackend(world)
    backend.start()
    recorder = Recorder()
    return recorder, Controller(backend, recorder, code, retry=retry, staging=tmp_path / "staging")


def job(n: int, *, timeout: float | None = None, checkpoint: CheckpointPolicy | None = None, **script) -> Job:
    return Job(f"{n:012x}", COMMIT, render_script(**script), timeout=timeout, checkpoint=checkpoint)


def run(controller: Controller, tasks: list[Task]) -> None:
    with gevent.Timeout(10):
        controller.run(tasks)


RETRY = RetryPolicy(max=5, on=("walltime", "preempted", "node-failure"), backoff=0)


def test_a_checkpointing_run_is_warned_before_each_walltime_and_resumes_on_new_allocations(tmp_path, clocked) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RETRY)
    start = world.clock.time()
    long = Job("000000000001", COMMIT, render_script(duration=100, checkpoint=True), checkpoint=POLICY)
    run(controller, [Task(long)])
    eid = long.execution_id
    # Warned at 60 - 10 - 5 = 45 s into each allocation, with the manifest's signal and grace.
    assert [(w[1], w[2], w[3] - start) for w in world.warnings] == [(signal.SIGUSR1, 10.0, 45.0),
                                                                    (signal.SIGUSR1, 10.0, 90.0)]
    assert [e[3] for e in recorder.of("launched")] == ["fake-1-node1", "fake-2-node1", "fake-3-node1"]
    assert recorder.of("retry") == [("retry", eid, 1, "walltime"), ("retry", eid, 2, "walltime")]
    final = recorder.results[eid]
    assert final.failure is None and final.attempt == 3
    assert final.outcome.ended - start == 100  # 45 + 45 + the 10 s left: nothing ran twice
    assert eid not in world.checkpoints  # removed once finished
    assert world.guards == {eid: "trap : USR1"}  # the wrapper shell survives the warning


def test_requeues_are_bounded_by_retries(tmp_path, clocked) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RetryPolicy(max=1, on=("walltime",), backoff=0))
    long = Job("000000000002", COMMIT, render_script(duration=500, checkpoint=True), checkpoint=POLICY)
    run(controller, [Task(long)])
    final = recorder.results[long.execution_id]
    assert final.attempt == 2 and final.failure == "walltime"
    assert len(world.warnings) == 2


def test_a_timeout_that_does_not_fit_what_is_left_waits_for_a_new_allocation(tmp_path, clocked) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RetryPolicy())
    first = job(1, duration=35)
    second = job(2, duration=20, timeout=50)  # 25 s left on fake-1 when the first ends: not enough
    third = job(3, duration=5, timeout=20)
    run(controller, [Task(first), Task(second), Task(third)])
    placed = {e[1]: e[3] for e in recorder.of("launched")}
    assert placed[second.execution_id] == "fake-2-node1"
    assert all(r.failure is None for r in recorder.results.values())
    assert world.warnings == [] and world.guards == {}  # nothing declared checkpoint: nothing changes


def test_a_checkpointing_run_may_start_with_less_than_its_timeout_left(tmp_path, clocked) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RETRY)
    first = job(1, duration=20)
    ck = Job("000000000009", COMMIT, render_script(duration=30, checkpoint=True), timeout=3600, checkpoint=POLICY)
    run(controller, [Task(first), Task(ck)])
    launched = [e for e in recorder.of("launched") if e[1] == ck.execution_id]
    assert launched[0][3] == "fake-1-node1"  # 40 s left >= 2 x grace + slack: it starts there
    assert recorder.results[ck.execution_id].failure is None


def test_a_timeout_longer_than_any_allocation_runs_on_the_slot_it_gets(tmp_path, clocked) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RetryPolicy())
    first, second = job(1, duration=30), job(2, duration=20, timeout=7200)
    run(controller, [Task(first), Task(second)])
    assert {e[3] for e in recorder.of("launched")} == {"fake-1-node1"} and world.allocations == ["fake-1"]


def test_without_checkpoint_an_ended_allocation_is_a_node_failure_and_no_signal(tmp_path, clocked) -> None:
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RetryPolicy(max=0, on=("node-failure",)))
    run(controller, [Task(job(1, duration=100))])
    (result,) = recorder.results.values()
    assert result.failure == "node-failure" and world.warnings == []
