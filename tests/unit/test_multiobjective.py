"""Several objectives below the CLI: the manifest's list form, records, reading values, the study's
front and trials, and ParEGO's reproducible scalarisation."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from expegit.objective import read_objectives
from orchestra.execution import ExecutionRecord, parse_record, render_record
from orchestra.manifest import parse_manifest
from parasearch.parego import ParEGOSampler, chebyshev, draw_weights
from parasearch.space import Space, Trial
from parasearch.study import StudyState, VectorTrial, front_data, front_text, study_config, study_id

HEAD = """\
name: t
command: python3 f.py {x}
parameters:
  x: {type: float, low: 0, high: 1}
"""
SINGLE = HEAD + "objective: {metric: loss, from: m.json, goal: minimize}\nsearch: {algorithm: bayes, budget: 9}\n"
MULTI = HEAD + """\
objective:
  - {metric: loss, from: m.json}
  - {metric: acc, from: m.json, goal: maximize}
search: {algorithm: bayes, budget: 9}
"""


def errors_of(text: str) -> list[str]:
    manifest, errors = parse_manifest(text)
    assert manifest is None
    return [str(e).split(" (hint: ")[0].removeprefix("orchestra.yaml:") for e in errors]


def test_the_single_form_is_what_it_was_and_the_list_form_keeps_order() -> None:
    single, errors = parse_manifest(SINGLE)
    assert not errors and single is not None
    assert single.objectives == (single.objective,) and not single.multi_objective
    multi, errors = parse_manifest(MULTI)
    assert not errors and multi is not None and multi.multi_objective
    assert [(o.metric, o.goal, o.source) for o in multi.objectives] == [("loss", "minimize", "m.json"),
                                                                       ("acc", "maximize", "m.json")]
    assert multi.objective == multi.objectives[0]  # the primary objective, for expegit's views


def test_a_single_objective_study_keeps_its_id_and_a_list_gives_another() -> None:
    single, _ = parse_manifest(SINGLE)
    assert single is not None
    config = study_config(single)
    assert not config.multi and config.objectives == ()
    # The id the single form always had (pinned: a changed id would orphan every existing study).
    assert study_id(single, config) == study_id(dataclasses.replace(single, objectives=()), config)
    one_item, _ = parse_manifest(SINGLE.replace("objective: {metric: loss, from: m.json, goal: minimize}",
                                                "objective: [{metric: loss, from: m.json, goal: minimize}]"))
    assert one_item is not None and study_id(one_item, study_config(one_item)) == study_id(single, config)
    multi, _ = parse_manifest(MULTI)
    assert multi is not None and study_id(multi, study_config(multi)) != study_id(single, config)


@pytest.mark.parametrize("objective, expected", [
    ("objective: []\n", ["5:12: objective: must not be empty"]),
    ("objective:\n  - {metric: a, from: m.json}\n  - {metric: a, from: m.json}\n",
     ["7:14: objective.1.metric: 'a' is already objective.0"]),
    ("objective:\n  - {metric: a, from: m.json}\n  - {metric: b, from: m.json, goal: best}\n",
     ["7:37: objective.1.goal: 'best' is not one of: minimize, maximize"]),
    ("objective:\n  - {metric: a, from: m.json}\n  - {metric: b}\n",
     ["7:5: objective.1: give exactly one of `from` (a JSON file) or `pattern` (a regex on stdout)"]),
    ("objective:\n  - {metric: a, from: m.json}\n  - {metric: b, from: m.json}\nsearch: {algorithm: bayes, "
     "budget: 9, stop: {target: 1}}\n", ["8:45: search.stop needs a single objective: a target or patience on a "
                                         "Pareto front is not defined"]),
])
def test_bad_objective_lists_are_located(objective: str, expected: list[str]) -> None:
    assert errors_of(HEAD + objective) == expected


def test_a_record_keeps_its_objectives_and_a_single_objective_record_its_shape() -> None:
    base = ExecutionRecord(id="0123456789ab", campaign="t", commit="a" * 40, command="c", parameters={"x": 0.5},
                           profile="local", state="finished", objective=0.25)
    assert "objectives" not in render_record(base)  # byte-identical to what earlier versions wrote
    multi = dataclasses.replace(base, objectives={"loss": 0.25, "acc": 0.875})
    text = render_record(multi)
    assert 'objectives: {"acc": 0.875, "loss": 0.25}' in text
    assert parse_record(text).objectives == {"acc": 0.875, "loss": 0.25}
    # Read by the YAML library too (a hand-edited record), and refused when it is not numbers.
    assert parse_record(text.replace("objectives: {", "objectives:  {")).objectives == {"acc": 0.875, "loss": 0.25}
    with pytest.raises(Exception, match="objectives are not a mapping"):
        parse_record(text.replace('"acc": 0.875', '"acc": "high"'))


def test_read_objectives_needs_every_value() -> None:
    multi, _ = parse_manifest(MULTI)
    single, _ = parse_manifest(SINGLE)
    assert multi is not None and single is not None
    files = {"m.json": json.dumps({"loss": 0.5, "acc": 0.75}).encode()}
    assert read_objectives(multi, files.get) == (0.5, {"loss": 0.5, "acc": 0.75}, None)
    assert read_objectives(single, files.get) == (0.5, None, None)
    partial = {"m.json": json.dumps({"loss": 0.5}).encode()}
    assert read_objectives(multi, partial.get) == (None, None, "objective acc is missing from m.json")


def _record(i: int, x: float, values: dict[str, float] | None, state: str = "finished") -> ExecutionRecord:
    return ExecutionRecord(id=f"{i:012x}", campaign="t", commit="a" * 40, command="c", parameters={"x": x},
                           profile="local", state=state, created=f"2026-01-01T00:00:{i:02d}Z",
                           ended=f"2026-01-01T00:01:{i:02d}Z", objective=None if values is None else values["loss"],
                           objectives=values)


def test_the_front_is_non_dominated_sorted_by_the_first_objective_with_mixed_goals() -> None:
    multi, _ = parse_manifest(MULTI)
    assert multi is not None
    config = study_config(multi)
    space = Space.from_parameters(multi.declarations())
    records = [_record(1, 0.1, {"loss": 0.3, "acc": 0.9}), _record(2, 0.2, {"loss": 0.1, "acc": 0.7}),
               _record(3, 0.3, {"loss": 0.3, "acc": 0.8}),  # dominated by the first (same loss, lower acc)
               _record(4, 0.4, {"loss": 0.2, "acc": 0.8}), _record(5, 0.5, None, state="failed")]
    state = StudyState(space, config, records)
    assert [p.params["x"] for p, _ in state.front()] == [0.2, 0.4, 0.1]
    trials = state.trials()
    assert all(isinstance(t, VectorTrial) for t in trials)
    assert [t.values for t in trials][:2] == [(0.3, 0.9), (0.1, 0.7)] and trials[-1].failed
    volume, reference = state.hypervolume()  # type: ignore[misc]
    # Oriented (loss, -acc): points (0.1,-0.7), (0.2,-0.8), (0.3,-0.9); reference (0.32, -0.68).
    assert reference == pytest.approx([0.32, 0.68])
    assert volume == pytest.approx(0.22 * 0.02 + 0.12 * 0.1 + 0.02 * 0.1)

    class FakeStudy:  # front_data reads only these
        id, state = "s", None
    study = FakeStudy()
    study.state, study.config = state, config  # type: ignore[attr-defined]
    data = front_data(study)  # type: ignore[arg-type]
    assert data["front_size"] == 3 and [p["objectives"]["loss"] for p in data["front"]] == [0.1, 0.2, 0.3]
    assert data["reference"] == {"loss": pytest.approx(0.32), "acc": pytest.approx(0.68)}
    table = front_text(data).splitlines()
    assert table[0].split()[:5] == ["#", "loss", "(min)", "acc", "(max)"] and len(table) == 5
    assert len(front_data(study, 2)["front"]) == 2  # type: ignore[arg-type]


def test_chebyshev_and_weights() -> None:
    Y = np.array([[0.0, 10.0], [1.0, 0.0], [0.5, 5.0]])
    # Normalised: (0,1), (1,0), (0.5,0.5); weights (0.5, 0.5): max of w*f + 0.05 * sum of w*f.
    assert chebyshev(Y, np.array([0.5, 0.5])).tolist() == pytest.approx([0.525, 0.525, 0.275])
    w = draw_weights(7, 3, 3)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    assert draw_weights(7, 3, 3).tolist() == w.tolist() and draw_weights(7, 4, 3).tolist() != w.tolist()


def test_parego_is_reproducible_and_uses_every_objective() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0, "high": 1},
                                   "y": {"type": "float", "low": 0, "high": 1}})
    rng = np.random.default_rng(0)
    history: list[Trial] = []
    for x, y in rng.random((8, 2)):
        history.append(VectorTrial({"x": float(x), "y": float(y)}, float(x), values=(float(x), float(1 - x + y))))
    history.append(VectorTrial({"x": 0.5, "y": 0.5}, None, failed=True))
    sampler = ParEGOSampler(space, seed=1, budget=20, goals=["minimize", "minimize"])
    a = sampler.ask(2, history, [])
    b = ParEGOSampler(space, seed=1, budget=20, goals=["minimize", "minimize"]).ask(2, history, [])
    assert a == b and len(a) == 2 and a[0] != a[1]
    scal = sampler.scalarised(history, 11)
    assert scal[-1].failed and all(t.usable for t in scal[:-1])
    # The scalarisation depends on the second objective: changing it changes the values the GP sees.
    flipped = [VectorTrial(t.params, t.value, values=(t.values[0], -t.values[1])) if t.values else t  # type: ignore[union-attr]
               for t in history]
    assert [t.value for t in sampler.scalarised(flipped, 11)] != [t.value for t in scal]
