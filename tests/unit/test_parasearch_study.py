"""The study's pure logic: history from records, aggregation over repeats, budget, stop conditions, identity."""
from __future__ import annotations

import math

import pytest

from orchestra.errors import ManifestError, SearchError
from orchestra.execution import ExecutionRecord
from orchestra.manifest import parse_manifest
from parasearch.study import (StudyConfig, StudyState, best_rows, make_study_sampler, record_value,
                              search_problems, study_config, study_id)

BASE = """\
name: s
command: python f.py {x} {n} {opt}
parameters:
  x:   {type: float, low: -1, high: 1, steps: 5}
  n:   {type: int, low: 1, high: 3}
  opt: {choices: [a, b]}
objective: {metric: loss, from: m.json, goal: minimize}
"""
COMMIT = "0" * 40


def manifest(search: str = "search: {algorithm: grid, budget: 10, parallel: 2, seed: 1}", base: str = BASE):
    m, errors = parse_manifest(base + search + "\n")
    assert not errors, errors
    return m


_counter = iter(range(10 ** 6))


def record(x: float, n: int = 1, opt: str = "a", *, state: str = "finished", objective: float | None = 1.0,
           repeat: int = 0, ended: str | None = None) -> ExecutionRecord:
    i = next(_counter)
    return ExecutionRecord(id=f"{i:012x}", campaign="s", commit=COMMIT, command="c",
                           parameters={"x": x, "n": n, "opt": opt}, profile="local", state=state,
                           repeat=repeat, objective=objective, search="sid",
                           created=f"2026-01-01T00:00:{i % 60:02d}Z", ended=ended or f"2026-01-01T00:01:{i % 60:02d}Z")


def state_of(config: StudyConfig, records) -> StudyState:
    space, _sampler = make_study_sampler(manifest(), config)
    return StudyState(space, config, records)


def test_study_id_ignores_budget_parallel_and_stop_but_not_what_defines_the_study() -> None:
    a = manifest("search: {algorithm: grid, budget: 10, parallel: 2, seed: 1}")
    b = manifest("search: {algorithm: grid, budget: 50, parallel: 5, seed: 1, stop: {patience: 3}}")
    sid = study_id(a, study_config(a))
    assert sid == study_id(b, study_config(b))
    assert len(sid) == 12 and int(sid, 16) >= 0
    assert sid == study_id(a, study_config(a, budget=99, parallel=3))  # command-line overrides too
    for other in ("search: {algorithm: random, budget: 10, parallel: 2, seed: 1}",
                  "search: {algorithm: grid, budget: 10, parallel: 2, seed: 2}",
                  "search: {algorithm: grid, budget: 10, parallel: 2, seed: 1, repeats: 2}"):
        m = manifest(other)
        assert study_id(m, study_config(m)) != sid, other
    changed = manifest(base=BASE.replace("high: 3", "high: 4"))
    assert study_id(changed, study_config(changed)) != sid
    goal = manifest(base=BASE.replace("minimize", "maximize"))
    assert study_id(goal, study_config(goal)) != sid


def test_repeats_are_aggregated_by_mean_and_a_point_is_pending_until_all_are_final() -> None:
    config = StudyConfig(algorithm="grid", budget=20, repeats=3, metric="loss")
    records = [record(0.5, objective=1.0, repeat=0), record(0.5, objective=2.0, repeat=1),
               record(0.5, objective=6.0, repeat=2),
               record(-0.5, objective=4.0, repeat=0), record(-0.5, state="running", objective=None, repeat=1),
               record(-0.5, state="created", objective=None, repeat=2)]
    state = state_of(config, records)
    trials = state.trials()
    assert len(trials) == 1 and trials[0].value == pytest.approx(3.0) and not trials[0].failed
    assert state.pending() == [{"x": -0.5, "n": 1, "opt": "a"}]
    assert state.executions == 6 and state.remaining() == 14
    assert state.counts() == {"done": 4, "failed": 0, "unfinished": 2, "pruned": 0}
    rows = best_rows(_study(state), top=5)
    assert len(rows) == 1 and rows[0]["objective"] == pytest.approx(3.0)
    assert rows[0]["values"] == [1.0, 2.0, 6.0] and len(rows[0]["executions"]) == 3


def _study(state: StudyState):
    from parasearch.study import Study

    return Study("sid", state.config, state.space, None, state, manifest())  # type: ignore[arg-type]


def test_failures_are_failed_trials_and_a_partly_failed_point_keeps_its_values() -> None:
    config = StudyConfig(algorithm="grid", budget=20, repeats=2, metric="loss")
    records = [record(0.0, state="failed", objective=None, repeat=0), record(0.0, state="finished", objective=None, repeat=1),
               record(1.0, objective=math.nan, repeat=0), record(1.0, objective=2.0, repeat=1)]
    state = state_of(config, records)
    by_x = {t.params["x"]: t for t in state.trials()}
    assert by_x[0.0].failed and by_x[0.0].value is None
    assert not by_x[1.0].failed and by_x[1.0].value == 2.0
    assert state.counts() == {"done": 1, "failed": 3, "unfinished": 0, "pruned": 0}
    assert record_value(records[2]) is None


def test_missing_repeats_are_found_after_a_controller_died_midway() -> None:
    config = StudyConfig(algorithm="grid", budget=20, repeats=3)
    state = state_of(config, [record(0.5, repeat=0), record(0.5, repeat=2, state="running", objective=None)])
    assert state.missing_repeats() == [({"x": 0.5, "n": 1, "opt": "a"}, 1)]
    assert state.pending() == [{"x": 0.5, "n": 1, "opt": "a"}]


def test_a_point_read_back_from_yaml_is_the_same_point() -> None:
    config = StudyConfig(algorithm="grid", budget=20)
    state = state_of(config, [record(0.5), record(0.5000000000001)])
    assert len(state.points) == 1  # the sampler will never hand it out again, and the repeats aggregate


def test_stop_on_target_and_on_patience_in_completion_order() -> None:
    target = StudyConfig(algorithm="random", budget=20, target=0.1, metric="loss")
    assert state_of(target, [record(0.1, objective=0.5)]).stop_reason() is None
    reached = state_of(target, [record(0.1, objective=0.5), record(0.2, objective=0.1)])
    assert "target" in (reached.stop_reason() or "")
    maximize = StudyConfig(algorithm="random", budget=20, target=0.9, metric="acc", goal="maximize")
    assert state_of(maximize, [record(0.1, objective=0.5)]).stop_reason() is None
    assert state_of(maximize, [record(0.1, objective=0.95)]).stop_reason() is not None

    patience = StudyConfig(algorithm="random", budget=20, patience=3, metric="loss")
    times = [f"2026-01-01T00:02:{i:02d}Z" for i in range(10)]
    records = [record(0.0, objective=1.0, ended=times[0]), record(0.1, objective=0.5, ended=times[1]),
               record(0.2, objective=0.7, ended=times[2]), record(0.3, state="failed", objective=None, ended=times[3])]
    assert state_of(patience, records).stop_reason() is None  # 2 executions without improvement
    records.append(record(0.4, objective=0.6, ended=times[4]))
    assert "patience 3" in (state_of(patience, records).stop_reason() or "")
    records.append(record(0.6, objective=0.2, ended=times[5]))  # an improvement resets the count
    assert state_of(patience, records).stop_reason() is None
    unfinished = records + [record(0.8, state="running", objective=None) for _ in range(5)]
    assert state_of(patience, unfinished).stop_reason() is None  # only finished executions count


def test_budget_counts_every_execution_of_the_study() -> None:
    config = StudyConfig(algorithm="grid", budget=5, repeats=2)
    state = state_of(config, [record(0.0, repeat=0), record(0.0, repeat=1), record(0.5, state="created", objective=None)])
    assert state.executions == 3 and state.remaining() == 2
    assert config.point_budget == 2


def test_sampler_never_repeats_history_or_pending() -> None:
    m = manifest()
    config = study_config(m)
    space, sampler = make_study_sampler(m, config)
    state = StudyState(space, config, [record(-1.0), record(-1.0, n=2, state="running", objective=None)])
    points = sampler.ask(3, state.trials(), state.pending())
    assert points[0] == {"x": -1.0, "n": 1, "opt": "b"}  # grid order: the two first ones are taken
    assert {space.key(p) for p in points}.isdisjoint({space.key(r.parameters) for r in state.records})


@pytest.mark.parametrize("search, text", [
    ("search: {algorithm: bayes, budget: 10, parallel: 20}", "below search.parallel"),
    ("search: {algorithm: nope, budget: 10}", "not one of"),
])
def test_bad_searches_are_manifest_errors_with_positions(search: str, text: str) -> None:
    _m, errors = parse_manifest(BASE + search + "\n")
    assert errors and text in str(errors[0]) and errors[0].line == 8


def test_grid_size_is_a_manifest_error_positioned_at_the_search() -> None:
    # orchestra.search checks it when the manifest loads: `expegit check` needs nothing of parasearch.
    base = BASE.replace("x:   {type: float, low: -1, high: 1, steps: 5}",
                        "x:   {type: int, low: 0, high: 2000}\n  z:   {type: int, low: 0, high: 2000}")
    base = base.replace("{x} {n}", "{x} {z} {n}")
    _m, problems = parse_manifest(base + "search: {algorithm: grid, budget: 10}\n")
    assert len(problems) == 1 and isinstance(problems[0], ManifestError)
    assert problems[0].exit_code == 3 and problems[0].line == 9 and "grid has up to" in str(problems[0])
    assert search_problems(manifest()) == []


def test_command_line_overrides_are_checked() -> None:
    m = manifest("search: {algorithm: random, budget: 10, parallel: 2}",
                 base=BASE.replace(", steps: 5", ""))
    with pytest.raises(SearchError, match="below parallel"):
        study_config(m, budget=1)
    with pytest.raises(SearchError, match="unknown search algorithm"):
        study_config(m, algorithm="annealing")
    with pytest.raises(SearchError, match="steps"):
        make_study_sampler(m, study_config(m, algorithm="grid"))
    no_search = manifest("", base=BASE)
    with pytest.raises(SearchError, match="no `search:`"):
        study_config(no_search)
    assert study_config(no_search, algorithm="sobol", budget=4).budget == 4


def test_the_algorithm_names_have_one_definition() -> None:
    import orchestra.search
    from orchestra.manifest import load_schema
    from parasearch.samplers import ALGORITHMS

    assert ALGORITHMS is orchestra.search.ALGORITHMS
    schema = load_schema("orchestra.schema.json")
    assert tuple(schema["properties"]["search"]["properties"]["algorithm"]["enum"]) == ALGORITHMS
