"""`search.early_stopping` in the manifest: defaults, the goal taken from the objective, located errors."""
from __future__ import annotations

import json

import pytest

import orchestra.search
from orchestra.manifest import parse_manifest

HEAD = """\
name: t
command: python3 f.py {x}
parameters:
  x: {type: float, low: 0, high: 1}
objective: {metric: acc, from: m.json, goal: maximize}
metrics: {every: 1s}
"""


def errors_of(text: str) -> list[str]:
    manifest, errors = parse_manifest(text)
    assert manifest is None, "expected the manifest to be refused"
    return [str(e).split(" (hint: ")[0].removeprefix("orchestra.yaml:") for e in errors]


def test_defaults_and_the_goal_of_the_objective() -> None:
    manifest, errors = parse_manifest(HEAD + "search: {algorithm: bayes, budget: 9, early_stopping: "
                                             "{rule: asha, metric: acc, step: epoch}}\n")
    assert not errors and manifest is not None
    spec = manifest.early_stopping
    assert spec is not None
    assert (spec.rule, spec.metric, spec.goal, spec.step, spec.min_step, spec.reduction, spec.grace) == \
        ("asha", "acc", "maximize", "epoch", 1.0, 3, 10.0)
    # A watched metric other than the objective's takes the objective's goal (the same standard).
    other, _ = parse_manifest(HEAD + "search: {algorithm: random, budget: 9, early_stopping: "
                                     "{rule: hyperband, metric: loss, max_step: 27, grace: 2s}}\n")
    assert other is not None and other.early_stopping is not None
    assert (other.early_stopping.goal, other.early_stopping.brackets, other.early_stopping.grace) == ("maximize", 4, 2.0)
    median, _ = parse_manifest(HEAD + "search: {algorithm: random, budget: 9, early_stopping: "
                                      "{rule: median, metric: acc}}\n")
    assert median is not None and median.early_stopping is not None and median.early_stopping.n_startup == 5
    plain, _ = parse_manifest(HEAD + "search: {algorithm: random, budget: 9}\n")
    assert plain is not None and plain.early_stopping is None


@pytest.mark.parametrize("search, expected", [
    ("{rule: asha}", ["7:55: missing required key 'metric' in search.early_stopping"]),
    ("{rule: sha, metric: acc}", ["7:62: search.early_stopping.rule: 'sha' is not one of: asha, median, hyperband"]),
    ("{rule: asha, metric: acc, reduction: 1}",
     ["7:92: search.early_stopping.reduction: must be at least 2, got 1"]),
    ("{rule: hyperband, metric: acc}",
     ["7:55: search.early_stopping: rule hyperband needs max_step (the step a full execution reaches: it sets "
      "the brackets)"]),
    ("{rule: asha, metric: acc, min_step: 4, max_step: 2}",
     ["7:104: search.early_stopping.max_step (2) is below min_step (4)"]),
    ("{rule: median, metric: acc, reduction: 3}",
     ["7:94: search.early_stopping.reduction: has no meaning for rule median"]),
    ("{rule: asha, metric: acc, n_warmup: 3}",
     ["7:91: search.early_stopping.n_warmup: has no meaning for rule asha (its first rung is min_step)"]),
    ("{rule: asha, metric: acc, grace: soon}",
     ["7:88: search.early_stopping.grace: "]),
    ("{rule: asha, metric: acc, patience: 3}",
     ["7:81: unknown key 'patience' in search.early_stopping"]),
])
def test_bad_early_stopping_is_located(search: str, expected: list[str]) -> None:
    got = errors_of(HEAD + f"search: {{algorithm: bayes, budget: 9, early_stopping: {search}}}\n")
    assert len(got) == len(expected) and all(g.startswith(e) for g, e in zip(got, expected)), got


def test_it_needs_metrics_and_one_objective() -> None:
    no_metrics = HEAD.replace("metrics: {every: 1s}\n", "")
    got = errors_of(no_metrics + "search: {algorithm: bayes, budget: 9, early_stopping: {rule: asha, metric: acc}}\n")
    assert got == ["6:76: search.early_stopping.metric: 'acc' is an intermediate metric, but the manifest declares "
                   "no `metrics:` (nothing is read while executions run)"], got
    no_objective = HEAD.replace("objective: {metric: acc, from: m.json, goal: maximize}\n", "")
    got = errors_of(no_objective + "search: {algorithm: random, budget: 9, early_stopping: {rule: asha, metric: acc}}\n")
    assert got == ["6:56: search.early_stopping: needs an objective (its goal says which values are better)"], got
    two = HEAD.replace("objective: {metric: acc, from: m.json, goal: maximize}\n",
                       "objective: [{metric: acc, from: m.json}, {metric: t, from: m.json}]\n")
    got = errors_of(two + "search: {algorithm: random, budget: 9, early_stopping: {rule: asha, metric: acc}}\n")
    assert got[0].startswith("7:56: search.early_stopping: needs a single objective"), got


def test_the_schema_lists_the_rules() -> None:
    from importlib.resources import files

    schema = json.loads(files("schemas").joinpath("orchestra.schema.json").read_text("utf-8"))
    rules = schema["properties"]["search"]["properties"]["early_stopping"]["properties"]["rule"]["enum"]
    assert tuple(rules) == orchestra.search.EARLY_STOPPING_RULES
