"""What a model-based search is told about ended trials with early stopping (BOHB's rule): the highest
fidelity with enough values, every trial's value at it, and a stopped trial's early value mapped up through
the trials seen at both, instead of "as bad as the worst finished" (which told the model that good regions
were bad wherever ASHA stopped a good point at a low rung)."""
from __future__ import annotations

import pytest

from orchestra.execution import ExecutionRecord
from orchestra.search import EarlyStoppingSpec
from parasearch.early_stopping import FINAL, fidelity_values, make_curve, map_up, model_level
from parasearch.pruning import PruneWatch
from parasearch.space import Space
from parasearch.study import StudyConfig, StudyState, record_value

SPEC = EarlyStoppingSpec("asha", "loss", step="epoch", min_step=1, max_step=27, reduction=3)  # rungs 1, 3, 9


def finished(number: int, at1: float, final: float) -> object:
    return make_curve(number, [(1.0, at1), (3.0, at1 - 0.01), (9.0, at1 - 0.02), (27.0, final)],
                      created=f"t{number:04d}a", ended=f"t{number:04d}b", state="finished")


def pruned(number: int, at1: float, *more: tuple[float, float]) -> object:
    points = [(1.0, at1), *more]
    return make_curve(number, points, created=f"t{number:04d}a", ended=f"t{number:04d}b", state="pruned",
                      pruned_step=points[-1][0])


def test_the_level_is_the_highest_fidelity_with_enough_values() -> None:
    levels = {0: {1.0: 0.5, 3.0: 0.4, FINAL: 0.1}, 1: {1.0: 0.6, 3.0: 0.5}, 2: {1.0: 0.7}}
    assert model_level(levels, 1) == FINAL
    assert model_level(levels, 2) == 3.0
    assert model_level(levels, 3) == 1.0
    assert model_level(levels, 4) is None  # not enough anywhere: the initial design goes on


def test_a_stopped_trial_is_told_its_early_value_mapped_through_the_finished_ones() -> None:
    # Finished: 0.5 -> 0.1, 0.6 -> 0.2, 0.7 -> 0.3 at rung 1: final = at1 - 0.4.
    curves = [finished(0, 0.5, 0.1), finished(1, 0.6, 0.2), finished(2, 0.7, 0.3), pruned(3, 0.65), pruned(4, 0.9)]
    finals = {0: 0.1, 1: 0.2, 2: 0.3}
    told = fidelity_values(SPEC, curves, finals, min_points=3)
    assert told[0] == 0.1 and told[1] == 0.2 and told[2] == 0.3  # finished: their objective
    assert told[3] == pytest.approx(0.25)  # a good early value is no longer "as bad as the worst"
    assert told[4] == pytest.approx(0.3)  # past the worst seen: the worst, not an extrapolation


def test_below_enough_finished_the_model_is_fitted_at_a_rung_on_every_trial() -> None:
    curves = [finished(0, 0.5, 0.1), finished(1, 0.6, 0.2), pruned(2, 0.65), pruned(3, 0.9)]
    told = fidelity_values(SPEC, curves, {0: 0.1, 1: 0.2}, min_points=3)
    # Rungs 3 and 9 and the final level have 2 values; rung 1 has 4: everyone is told its rung-1 value.
    assert told == {0: 0.5, 1: 0.6, 2: 0.65, 3: 0.9}


def test_a_trial_stopped_at_a_higher_rung_is_mapped_from_there() -> None:
    curves = [finished(0, 0.5, 0.1), finished(1, 0.6, 0.2), finished(2, 0.7, 0.3),
              pruned(3, 0.95, (3.0, 0.58))]  # bad at rung 1, good at rung 3 (where finished ones had 0.49..0.69)
    told = fidelity_values(SPEC, curves, {0: 0.1, 1: 0.2, 2: 0.3}, min_points=3)
    assert told[3] == pytest.approx(0.58 - 0.39)


def test_orientation_a_flat_or_inverted_relation_and_too_few_pairs() -> None:
    # Maximize: higher early values predict higher finals.
    assert map_up([(0.5, 0.1), (0.6, 0.2), (0.7, 0.3)], 0.65, "maximize") == pytest.approx(0.25)
    # Curves that cross (better early, worse final): no slope is trusted, the estimate is the mean.
    assert map_up([(0.5, 0.3), (0.6, 0.2), (0.7, 0.1)], 0.55, "minimize") == pytest.approx(0.2)
    assert map_up([(0.5, 0.1), (0.6, 0.2)], 0.55, "minimize") is None
    assert map_up([(0.5, 0.1), (0.5, 0.2), (0.5, 0.3)], 0.55, "minimize") is None
    # With fewer than three trials seen at both levels, the stopped one is told the worst value at the level.
    curves = [finished(0, 0.5, 0.1), finished(1, 0.6, 0.2), pruned(2, 0.55)]
    assert fidelity_values(SPEC, curves, {0: 0.1, 1: 0.2}, min_points=2)[2] == 0.2


def test_failed_trials_and_curves_without_a_rung_value_are_left_to_the_callers_rules() -> None:
    crashed = make_curve(3, [(1.0, 0.01), (2.0, 0.01)], created="t3a", ended="t3b", state="failed")
    early = make_curve(4, [(0.5, 0.01)], created="t4a", ended="t4b", state="pruned", pruned_step=0.5)
    curves = [finished(0, 0.5, 0.1), finished(1, 0.6, 0.2), finished(2, 0.7, 0.3), crashed, early]
    assert set(fidelity_values(SPEC, curves, {0: 0.1, 1: 0.2, 2: 0.3}, min_points=3)) == {0, 1, 2}
    assert fidelity_values(SPEC, curves, {}, min_points=9) == {}


def _record(i: int, x: float, state: str, objective: float | None = None, step: float | None = None,
            repeat: int = 0) -> ExecutionRecord:
    return ExecutionRecord(id=f"{i:012x}", campaign="t", commit="a" * 40, command="c", parameters={"x": x},
                           profile="local", state=state, objective=objective, pruned_step=step, repeat=repeat,
                           created=f"2026-12-01T00:00:0{i}.000Z", ended=f"2026-12-01T00:00:0{i}.500Z", search="s")


def test_the_study_tells_the_sampler_what_the_watch_learned_from_the_branches() -> None:
    records = [_record(1, 0.1, "finished", 0.1), _record(2, 0.3, "finished", 0.2), _record(3, 0.5, "finished", 0.3),
               _record(4, 0.7, "pruned", step=1.0)]
    committed = {records[0].id: [{"epoch": e, "loss": 0.5 - e / 1000} for e in range(1, 28)],
                 records[1].id: [{"epoch": e, "loss": 0.6 - e / 1000} for e in range(1, 28)],
                 records[2].id: [{"epoch": e, "loss": 0.7 - e / 1000} for e in range(1, 28)],
                 records[3].id: [{"epoch": 1, "loss": 0.649}, {"epoch": 2, "loss": 0.0}]}  # epoch 2: after the stop

    def watch() -> PruneWatch:
        return PruneWatch(SPEC, lambda: records, lambda i, _tip: committed[i], lambda *_a: False)

    told = watch().told(3, record_value)
    assert told == watch().told(3, record_value)  # a fresh watch on the same branches: the same values
    assert told[records[3].id] == pytest.approx(0.25)
    space = Space.from_parameters({"x": {"type": "float", "low": 0, "high": 1}})
    config = StudyConfig(algorithm="bayes", budget=10, parallel=1, seed=0, repeats=1, metric="loss", goal="minimize")
    state = StudyState(space, config, records)
    assert [(t.params["x"], t.value) for t in state.trials(told)][-1] == (0.7, pytest.approx(0.25))
    assert [(t.params["x"], t.value) for t in state.trials()][-1] == (0.7, 0.3)  # without: the penalty
    assert state.trials({}) == state.trials()  # no level yet: the same as without early stopping


def test_a_points_repeats_are_averaged_at_the_level() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0, "high": 1}})
    config = StudyConfig(algorithm="bayes", budget=10, parallel=1, seed=0, repeats=2, metric="loss", goal="minimize")
    a, b = _record(1, 0.4, "finished", 0.3), _record(2, 0.4, "pruned", step=1.0, repeat=1)
    state = StudyState(space, config, [a, b])
    assert [t.value for t in state.trials({a.id: 0.3, b.id: 0.5})] == [pytest.approx(0.4)]


def test_a_curve_not_on_disk_yet_is_read_again_later() -> None:
    # The sampler asks as soon as an execution ends, before its final commit is written (the writer
    # batches): that read fails, and caching its empty curve hid the execution from every later decision.
    records = [_record(1, 0.1, "finished", 0.1), _record(2, 0.3, "finished", 0.2), _record(3, 0.5, "pruned", step=1.0)]
    on_disk: set[str] = {records[0].id, records[1].id}

    def read(execution_id: str, _tip: object) -> list[dict]:
        if execution_id not in on_disk:
            raise LookupError("no such commit yet")
        return [{"epoch": 1, "loss": 0.5}]

    watch = PruneWatch(SPEC, lambda: records, read, lambda *_a: False)
    assert set(watch.told(2, record_value)) == {records[0].id, records[1].id}  # the pruned one: not read yet
    on_disk.add(records[2].id)
    assert watch.told(2, record_value)[records[2].id] == 0.2  # read now (2 pairs: too few to map, the worst)


def test_an_ended_curve_is_read_once_even_without_points_and_again_once_it_ends_anew() -> None:
    records = [_record(1, 0.1, "finished", 0.1), _record(2, 0.3, "finished", 0.2)]
    reads: list[tuple[str, object]] = []

    def read(execution_id: str, tip: object) -> list[dict]:
        reads.append((execution_id, tip))
        return [] if execution_id == records[1].id else [{"epoch": 1, "loss": 0.5}]

    watch = PruneWatch(SPEC, lambda: records, read, lambda *_a: False)
    for _ask in range(3):
        watch.told(2, record_value)
    assert sorted(reads) == sorted([(records[0].id, None), (records[1].id, None)])  # each once, the empty one too
    watch.ended(records[1], "f" * 40)  # it ended again (a retry): read anew, at its new final commit
    watch.told(2, record_value)
    assert reads[-1] == (records[1].id, "f" * 40) and len(reads) == 3
