"""Early stopping's plumbing without processes: Controller.prune on the fake backend (signal, grace, no
retry, its slot to the next execution), the pruned record's shape, and what the sampler is told."""
from __future__ import annotations

import gevent

from orchestra.execution import FINAL_STATES, STATES, ExecutionRecord, parse_record, render_record
from orchestra.manifest import RetryPolicy
from orchestra.search import EarlyStoppingSpec
from parasearch.pruning import PruneWatch, prune_note, trial_numbers
from parasearch.space import Space
from parasearch.study import StudyConfig, StudyState
from runaway.controller import Task
from tests.unit.test_controller_fake import job, make, sleeps  # noqa: F401 - the fixture is used by name
from runaway.fake import FakeWorld


def test_a_pruned_execution_is_signalled_collected_not_retried_and_its_slot_reused(tmp_path, sleeps) -> None:  # noqa: F811
    world = FakeWorld(places=1, slots=1)
    backend, recorder, controller = make(world, tmp_path, sleeps, RetryPolicy(max=3, on=("exit", "timeout")))
    long, nxt = job(1, duration=100), job(2, duration=5)
    note = {"step": 3.0, "reason": "at epoch 3 by asha: ..."}
    answers: list[bool] = []
    launched = recorder.launched

    def prune_once_launched(task: Task, handle, attempt: int) -> None:
        launched(task, handle, attempt)
        if task.job.execution_id == long.execution_id:  # once it waits on its run: what the study does
            gevent.spawn(lambda: answers.extend([controller.prune(long.execution_id, 7.0, note),
                                                 controller.prune(long.execution_id, 7.0, note)]))

    recorder.launched = prune_once_launched  # type: ignore[method-assign]
    with gevent.Timeout(10):
        controller.run([Task(long), Task(nxt)])
    assert answers == [True, False]  # once
    assert world.warnings[0][:3] == (long.execution_id, 15, 7.0)  # SIGTERM, then SIGKILL after the grace
    result = recorder.results[long.execution_id]
    assert result.pruned == note and result.failure is None  # ended on purpose: no failure to retry
    assert [e[0] for e in recorder.events if e[1] == long.execution_id] == ["launched", "finished"]
    assert recorder.results[nxt.execution_id].outcome.exit_code == 0  # the slot went to the next one
    assert controller.prune("nothing-here", 1.0, note) is False


def test_the_pruned_state_and_step_round_trip() -> None:
    assert "pruned" in STATES and "pruned" in FINAL_STATES
    record = ExecutionRecord(id="0123456789ab", campaign="t", commit="a" * 40, command="c", parameters={"x": 1},
                             profile="local", state="pruned", pruned_step=3.0, error="at epoch 3 by asha: x")
    text = render_record(record)
    assert "pruned_step: 3.0" in text and parse_record(text) == record
    plain = ExecutionRecord(id="0123456789ab", campaign="t", commit="a" * 40, command="c", parameters={},
                            profile="local", state="finished")
    assert "pruned_step" not in render_record(plain)  # every other record keeps its shape


def _record(i: int, x: float, state: str, objective: float | None = None, step: float | None = None) -> ExecutionRecord:
    return ExecutionRecord(id=f"{i:012x}", campaign="t", commit="a" * 40, command="c", parameters={"x": x},
                           profile="local", state=state, objective=objective, pruned_step=step,
                           created=f"2026-12-01T00:00:0{i}.000Z", ended=f"2026-12-01T00:00:0{i}.500Z", search="s")


def test_the_sampler_sees_a_pruned_point_as_bad_as_the_worst_finished() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0, "high": 1}})
    config = StudyConfig(algorithm="bayes", budget=10, parallel=1, seed=0, repeats=1, metric="loss", goal="minimize")
    early = StudyState(space, config, [_record(1, 0.1, "pruned", step=1.0)])
    assert [t.failed for t in early.trials()] == [True]  # nothing finished yet: no scale to penalise on
    state = StudyState(space, config, [_record(1, 0.1, "finished", 0.2), _record(2, 0.5, "finished", 0.6),
                                       _record(3, 0.9, "pruned", step=1.0)])
    assert [(t.params["x"], t.value, t.failed) for t in state.trials()][-1] == (0.9, 0.6, False)
    assert state.counts() == {"done": 2, "failed": 0, "unfinished": 0, "pruned": 1}
    assert state.best() is not None and state.best().value == 0.2  # a pruned point is never the best


def test_the_watch_stops_a_running_curve_the_rule_refuses_once() -> None:
    spec = EarlyStoppingSpec("asha", "loss", step="epoch", min_step=1, reduction=2)
    done = _record(1, 0.1, "finished", 0.2)
    running = ExecutionRecord(id=f"{2:012x}", campaign="t", commit="a" * 40, command="c", parameters={"x": 0.5},
                              profile="local", state="running", created="2026-12-01T00:00:09.000Z", search="s")
    assert trial_numbers([running, done]) == {done.id: 0, running.id: 1}
    committed = {done.id: [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.3}]}
    stopped: list[tuple[str, float, dict]] = []
    notes: list[str] = []

    def prune(execution_id: str, grace: float, note: dict) -> bool:
        stopped.append((execution_id, grace, note))
        return True

    watch = PruneWatch(spec, lambda: [done, running], lambda i, _tip: committed.get(i, []), prune, notes.append)
    watch.on_points(running.id, [{"epoch": 1, "loss": 0.45}])  # better than 0.5 at rung 1: goes on
    assert stopped == []
    watch.on_points(running.id, [{"epoch": 2, "loss": 0.35}])  # worse than 0.3 at rung 2: stopped
    assert stopped == [(running.id, 10.0, prune_note(spec, 2.0, stopped[0][2]["reason"].split(": ", 1)[1]))]
    assert stopped[0][2]["reason"].startswith("at epoch 2 by asha: loss 0.35 is not in the top 1 of 2")
    watch.on_points(running.id, [{"epoch": 3, "loss": 0.3}])
    assert len(stopped) == 1 and notes and running.id in notes[0]
