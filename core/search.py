"""The ``search:`` section of a manifest: the algorithm names and the checks, in core with the manifest.

The names are defined here once: the manifest's checks, parasearch's samplers and `expegit check` read
them from this module, so checking a manifest never imports parasearch (nor numpy and scipy), and
expegit needs nothing of parasearch. The schema's ``enum`` repeats them for editors; a unit test keeps
it equal to :data:`ALGORITHMS`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .durations import parse_duration
from .parameters import ParameterSpec, when_cycle

#: Algorithms that never look at objective values (they may run without an ``objective:``).
BLIND_ALGORITHMS: tuple[str, ...] = ("grid", "random", "sobol", "halton", "lhs")
#: Every search algorithm parasearch implements (``parasearch.sampler_factory.make_sampler``).
ALGORITHMS: tuple[str, ...] = BLIND_ALGORITHMS + ("bayes",)
#: The largest grid we agree to enumerate: every ask walks it, and nobody runs more executions anyway.
MAX_GRID_POINTS = 1_000_000

#: ``search.early_stopping.rule``: the schema's ``enum`` repeats them (a unit test keeps both equal).
EARLY_STOPPING_RULES: tuple[str, ...] = ("asha", "median", "hyperband")

Where = list[str | int]
#: (where in the manifest, message, hint): the manifest loader adds the file:line:col.
Problem = tuple[Where, str, str | None]


@dataclasses.dataclass(frozen=True)
class EarlyStoppingSpec:
    """``search.early_stopping`` with its defaults filled in, and the goal taken from the objective.

    Why the goal is not a key of its own: the rule judges executions by the same standard as the search
    (a lower val_loss is better for both); two goals for one metric would be a contradiction to report.
    """

    rule: str
    metric: str
    goal: str = "minimize"
    step: str = "step"
    min_step: float = 1.0
    max_step: float | None = None
    reduction: int = 3
    n_startup: int = 1
    n_warmup: float = 0.0
    grace: float = 10.0

    @property
    def brackets(self) -> int:
        """hyperband: how many ASHA brackets (each starts one rung later), as Optuna's HyperbandPruner."""
        if self.max_step is None or self.max_step <= self.min_step:
            return 1
        return int(math.floor(math.log(self.max_step / self.min_step, self.reduction) + 1e-9)) + 1


def early_stopping_spec(search: Mapping[str, Any] | None,
                        objectives: Sequence[tuple[str, str]]) -> EarlyStoppingSpec | None:
    """The spec of a checked manifest's ``search.early_stopping`` (None without one).

    ``objectives``: (metric, goal) of each objective; the goal is that of the objective of the same metric,
    else of the first (a loss watched per epoch for an accuracy read at the end must say so by its name).
    """
    declared = (search or {}).get("early_stopping")
    if not isinstance(declared, Mapping):
        return None
    metric = str(declared["metric"])
    goal = next((g for m, g in objectives if m == metric), objectives[0][1] if objectives else "minimize")
    rule = str(declared["rule"])
    try:
        grace = parse_duration(declared.get("grace", 10))
    except ValueError:
        grace = 10.0  # refused by early_stopping_problems; a spec is only built for checked manifests
    return EarlyStoppingSpec(
        rule=rule, metric=metric, goal=goal, step=str(declared.get("step", "step")),
        min_step=float(declared.get("min_step", 1)),
        max_step=float(declared["max_step"]) if "max_step" in declared else None,
        reduction=int(declared.get("reduction", 3)),
        n_startup=int(declared.get("n_startup", 5 if rule == "median" else 1)),
        n_warmup=float(declared.get("n_warmup", 0)), grace=grace)


def early_stopping_problems(declared: Mapping[str, Any], *, objectives: Sequence[tuple[str, str]],
                            metrics_declared: bool) -> list[Problem]:
    """What is wrong with a schema-valid ``search.early_stopping`` (empty: nothing)."""
    at: Where = ["search", "early_stopping"]
    problems: list[Problem] = []
    if not objectives:
        problems.append((at, "search.early_stopping: needs an objective (its goal says which values are better)",
                         "declare `objective:`"))
    elif len(objectives) > 1:
        problems.append((at, "search.early_stopping: needs a single objective (stopping on one metric of a "
                             "Pareto front is not defined)", "remove early_stopping, or declare one objective"))
    if not metrics_declared:
        problems.append((at + ["metric"], f"search.early_stopping.metric: {declared['metric']!r} is an "
                         f"intermediate metric, but the manifest declares no `metrics:` (nothing is read while "
                         f"executions run)", "add `metrics: {every: 10s}` (and write JSON lines to "
                         "$ORCHESTRA_METRICS, or give metrics.pattern)"))
    rule = declared["rule"]
    min_step = float(declared.get("min_step", 1))
    if rule == "hyperband" and "max_step" not in declared:
        problems.append((at, "search.early_stopping: rule hyperband needs max_step (the step a full execution "
                             "reaches: it sets the brackets)", "add e.g. `max_step: 27`"))
    if "max_step" in declared and float(declared["max_step"]) < min_step:
        problems.append((at + ["max_step"], f"search.early_stopping.max_step ({declared['max_step']}) is below "
                         f"min_step ({min_step:g})", "raise max_step or lower min_step"))
    if rule == "median":
        for key in ("min_step", "reduction"):
            if key in declared:
                problems.append((at + [key], f"search.early_stopping.{key}: has no meaning for rule median",
                                 "remove it, or use rule asha"))
    elif "n_warmup" in declared:
        problems.append((at + ["n_warmup"], f"search.early_stopping.n_warmup: has no meaning for rule {rule} "
                         f"(its first rung is min_step)", "use min_step"))
    if "grace" in declared:
        try:
            grace = parse_duration(declared["grace"])
        except ValueError as exc:
            problems.append((at + ["grace"], f"search.early_stopping.grace: {exc}", "e.g. grace: 10s"))
        else:
            if grace < 0:
                problems.append((at + ["grace"], "search.early_stopping.grace: must be 0 or more", "e.g. grace: 10s"))
    return problems


def search_problems(search: Mapping[str, Any], specs: Mapping[str, ParameterSpec], *, has_objective: bool,
                    repeats: int, declared: int | None = None, objectives: Sequence[tuple[str, str]] | None = None,
                    metrics_declared: bool = False) -> list[Problem]:
    """What is wrong with a schema-valid ``search:`` section over these parameters (empty: nothing).

    ``declared``: how many parameters the manifest declares, valid or not (default: ``len(specs)``); a
    parameter with an error of its own is not missing, so it must not also read "no parameters".
    ``objectives`` ((metric, goal) of each) and ``metrics_declared`` are for ``early_stopping``.
    """
    problems: list[Problem] = []
    if isinstance(search.get("early_stopping"), Mapping):
        problems += early_stopping_problems(search["early_stopping"], metrics_declared=metrics_declared,
                                            objectives=objectives if objectives is not None else
                                            ([("objective", "minimize")] if has_objective else []))
    algorithm = search["algorithm"]
    budget, parallel = search["budget"], search.get("parallel", 1)
    per_point = search.get("repeats", repeats or 1)
    if budget < parallel:
        problems.append((["search", "budget"], f"search.budget ({budget}) is below search.parallel ({parallel})",
                         "raise the budget or lower parallel"))
    if budget < per_point:
        problems.append((["search", "budget"], f"search.budget ({budget}) cannot pay for one point of "
                                               f"{per_point} repeats", "raise the budget or lower repeats"))
    if not has_objective and algorithm not in BLIND_ALGORITHMS:
        problems.append((["search"], f"search: algorithm {algorithm} needs an objective: declare `objective:`",
                         None))
    if "stop" in search and not has_objective:
        problems.append((["search", "stop"], "search.stop: needs an objective: declare `objective:`", None))
    if not (len(specs) if declared is None else declared):
        problems.append((["search"], "search: there are no parameters to search over", None))
    cycle = when_cycle({name: spec.when for name, spec in specs.items() if spec.when})
    if cycle:
        problems.append((["parameters", cycle[0], "when"], f"parameters {', '.join(cycle)}: their `when` "
                         f"conditions form a cycle", "make the conditions depend on parameters without a `when`"))
    if algorithm != "grid":
        for name, spec in specs.items():
            if spec.kind == "str":
                problems.append((["parameters", name], f"parameters.{name}: a free string cannot be searched by "
                                                       f"{algorithm}; give it choices or a fixed value", None))
        return problems
    size = 1
    for name, spec in specs.items():
        if spec.kind == "float" and spec.steps is None:
            problems.append((["parameters", name], f"parameters.{name}: a grid search needs `steps:` on float "
                                                   f"parameters (how many grid points between low and high)", None))
        if spec.kind == "str" and spec.default is None:
            problems.append((["parameters", name], f"parameters.{name}: a grid search needs a default or choices "
                                                   f"for a free string", None))
        size *= max(spec.grid_size(), 1)
    if size > MAX_GRID_POINTS:
        problems.append((["search", "algorithm"], f"search: the grid has up to {size} points (more than "
                                                  f"{MAX_GRID_POINTS})",
                         "lower `steps` or use algorithm sobol/random with a budget"))
    return problems


__all__ = ["ALGORITHMS", "BLIND_ALGORITHMS", "EARLY_STOPPING_RULES", "EarlyStoppingSpec", "MAX_GRID_POINTS", "Problem",
           "early_stopping_problems", "early_stopping_spec", "search_problems"]
