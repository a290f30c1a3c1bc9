"""Which parameters explain the objective: PED-ANOVA importances, computed by Optuna.

Optuna is the one dependency here (the ``analysis`` extra). Why Optuna's PED-ANOVA
(``optuna.importance.PedAnovaImportanceEvaluator``, Watanabe et al., IJCAI 2023) and not fANOVA: it is
what Optuna recommends for speed, it needs no random forest (Optuna's fANOVA evaluator needs scikit-learn,
a much heavier install), it is exact for the data rather than a model's fit, and Optuna is already what
our benchmarks compare parasearch against, so it is kept well and installs on Python 3.10+ from wheels.
The standalone ``fanova`` package on PyPI is unmaintained (last release 2017, needs a C++ build).

Executions become Optuna trials in an in-memory study: nothing is written, nothing sampled.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from orchestra.execution import ExecutionRecord

# PED-ANOVA contrasts the top 10% of executions with all of them: below ~20 executions the top part is one
# or two executions and the importances are noise, so the report does not show them.
MIN_EXECUTIONS = 20
# Building Optuna trials costs ~0.3 ms each: the report of a 10,000-execution campaign would spend seconds
# here. The most recent executions are a fair sample of the space a campaign explores now.
MAX_EXECUTIONS = 2000


class ImportanceUnavailable(Exception):
    """Why no importances can be computed (too few executions, Optuna missing): the report says it."""


def _distribution(values: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        lo, hi = min(numbers), max(numbers)
        if all(isinstance(v, int) for v in numbers):
            return IntDistribution(int(lo), int(hi))
        return FloatDistribution(float(lo), float(hi))
    return CategoricalDistribution(sorted({_category(v) for v in values}))


def _category(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def parameter_importance(records: Sequence[ExecutionRecord], goal: str = "minimize", *,
                         minimum: int = MIN_EXECUTIONS) -> dict[str, float]:
    """{parameter: importance}, most important first, importances summing to 1 (Optuna normalises).

    Only finished executions with an objective count (the last MAX_EXECUTIONS of them, in the order given);
    parameters that take one value are left out.
    Raises ImportanceUnavailable with a reason a reader can act on.
    """
    scored = [r for r in records if r.state == "finished" and r.objective is not None and math.isfinite(r.objective)]
    if len(scored) < minimum:
        raise ImportanceUnavailable(f"{len(scored)} finished executions with an objective; importance needs "
                                    f"at least {minimum}")
    scored = scored[-MAX_EXECUTIONS:]
    names = [n for n in dict.fromkeys(k for r in scored for k in r.parameters)
             if all(n in r.parameters for r in scored)
             and len({repr(_category(r.parameters[n])) for r in scored}) >= 2]
    if not names:
        raise ImportanceUnavailable("no parameter takes two values among the finished executions")
    try:
        import optuna
        from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    except ModuleNotFoundError as exc:
        raise ImportanceUnavailable("parameter importance needs Optuna: pip install "
                                    "'orchestra-campaigns[analysis]'") from exc
    distributions = {n: _distribution([r.parameters[n] for r in scored]) for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning for the evaluator: its API is what we call
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.create_study(direction="maximize" if goal == "maximize" else "minimize")
        study.add_trials([
            optuna.trial.create_trial(
                params={n: _category(r.parameters[n]) if isinstance(distributions[n],
                                                                   optuna.distributions.CategoricalDistribution)
                        else r.parameters[n] for n in names},
                distributions=distributions, value=float(r.objective))  # type: ignore[arg-type]
            for r in scored])
        importances = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), normalize=True)
    return {str(k): float(v) for k, v in importances.items()}


__all__ = ["parameter_importance", "ImportanceUnavailable", "MIN_EXECUTIONS", "MAX_EXECUTIONS"]
