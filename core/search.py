"""The ``search:`` section of a manifest: the algorithm names and the checks, in core with the manifest.

The names are defined here once: the manifest's checks, parasearch's samplers and `expegit check` read
them from this module, so checking a manifest never imports parasearch (nor numpy and scipy), and
expegit needs nothing of parasearch. The schema's ``enum`` repeats them for editors; a unit test keeps
it equal to :data:`ALGORITHMS`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .parameters import ParameterSpec, when_cycle

#: Algorithms that never look at objective values (they may run without an ``objective:``).
BLIND_ALGORITHMS: tuple[str, ...] = ("grid", "random", "sobol", "halton", "lhs")
#: Every search algorithm parasearch implements (``parasearch.sampler_factory.make_sampler``).
ALGORITHMS: tuple[str, ...] = BLIND_ALGORITHMS + ("bayes",)
#: The largest grid we agree to enumerate: every ask walks it, and nobody runs more executions anyway.
MAX_GRID_POINTS = 1_000_000

Where = list[str | int]
#: (where in the manifest, message, hint): the manifest loader adds the file:line:col.
Problem = tuple[Where, str, str | None]


def search_problems(search: Mapping[str, Any], specs: Mapping[str, ParameterSpec], *, has_objective: bool,
                    repeats: int, declared: int | None = None) -> list[Problem]:
    """What is wrong with a schema-valid ``search:`` section over these parameters (empty: nothing).

    ``declared``: how many parameters the manifest declares, valid or not (default: ``len(specs)``); a
    parameter with an error of its own is not missing, so it must not also read "no parameters".
    """
    problems: list[Problem] = []
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


__all__ = ["ALGORITHMS", "BLIND_ALGORITHMS", "MAX_GRID_POINTS", "Problem", "search_problems"]
