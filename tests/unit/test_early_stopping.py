"""The early stopping rules: hand-computed cases, and the same decisions as Optuna's pruners on the same
curves when trials run one at a time (where the semantics are the same by construction)."""
from __future__ import annotations

import random

import pytest

from orchestra.search import EarlyStoppingSpec
from parasearch.early_stopping import (Curve, asha_rungs, bracket_budgets, bracket_of, curve_points, decide,
                                       make_curve, promotable, reference)


def seq(curves: list[list[float]], pruned: dict[int, float] | None = None,
        states: dict[int, str] | None = None) -> list[Curve]:
    """Trials run one after the other: each created after the previous one ended."""
    pruned, states = pruned or {}, states or {}
    return [make_curve(i, [(float(s + 1), v) for s, v in enumerate(c)], created=f"t{i:04d}a", ended=f"t{i:04d}b",
                       state="pruned" if i in pruned else states.get(i, "finished"), pruned_step=pruned.get(i))
            for i, c in enumerate(curves)]


def asha(**kw: object) -> EarlyStoppingSpec:
    return EarlyStoppingSpec(rule="asha", metric="loss", step="epoch", **kw)  # type: ignore[arg-type]


def test_curve_points_reads_steps_and_skips_what_is_no_number() -> None:
    lines = [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "acc": 0.1}, {"epoch": 2, "loss": float("nan")},
             {"epoch": 2, "loss": 0.7}, {"epoch": 2, "loss": 0.6}, {"loss": 0.5}, {"epoch": True, "loss": 0.4}]
    # The repeat of step 2 is dropped; lines without a step count on; a bool is not a step.
    assert curve_points(lines, "loss", "epoch") == ((1.0, 0.9), (2.0, 0.7), (3.0, 0.5), (4.0, 0.4))


def test_asha_by_hand() -> None:
    spec = asha(min_step=1, reduction=3)
    assert asha_rungs(EarlyStoppingSpec("asha", "loss", max_step=27)) == [1, 3, 9]
    # Five earlier trials at rung 1 with 0.1..0.5; the sixth is compared among six: the top 6//3 = 2 go on.
    done = seq([[0.1, 0.1, 0.1], [0.2] * 3, [0.3] * 3, [0.4] * 3, [0.5] * 3])
    good = make_curve(5, [(1, 0.15), (2, 0.1)], created="t9999")
    bad = make_curve(5, [(1, 0.25), (2, 0.1)], created="t9999")
    assert decide(spec, good, done) is None
    stop = decide(spec, bad, done)
    assert stop is not None and (stop.step, stop.rung, stop.value) == (1, 1, 0.25)
    assert "not in the top 2 of 6 at rung epoch 1" in stop.reason
    # Rung 3 is reached at step 4 here (no point at 3): the first point at or past it is the rung's value.
    late = make_curve(5, [(1, 0.05), (4, 0.9)], created="t9999")
    stop = decide(spec, late, done)
    assert stop is not None and (stop.step, stop.rung) == (4, 3)
    # With fewer trials than the reduction, only the best goes on.
    assert promotable(0.2, [0.1, 0.2], 3, "minimize") is False
    assert promotable(0.2, [0.1, 0.2], 3, "maximize") is True


def test_decisions_look_only_at_trials_ended_before_creation() -> None:
    spec = asha()
    ended_early = make_curve(0, [(1, 0.1)], created="a", ended="b", state="finished")
    still_running = make_curve(1, [(1, 0.01)], created="a1")
    ended_later = make_curve(2, [(1, 0.05)], created="a2", ended="z", state="finished")
    trial = make_curve(3, [(1, 0.2)], created="c")
    assert [c.number for c in reference(trial, [ended_early, still_running, ended_later])] == [0]
    stop = decide(spec, trial, [ended_later, trial, still_running, ended_early])
    assert stop is not None and "of 2" in stop.reason  # itself and trial 0, in any order of input


def test_a_pruned_trials_points_after_its_decision_do_not_count() -> None:
    spec = asha(reduction=2)
    # Trial 0 was pruned at step 1 but wrote step 2 (excellent) before the signal landed.
    pruned = make_curve(0, [(1, 0.9), (2, 0.0)], created="a", ended="b", state="pruned", pruned_step=1)
    assert pruned.points == ((1, 0.9),)
    trial = make_curve(1, [(1, 0.1), (2, 0.5)], created="c")
    assert decide(spec, trial, [pruned]) is None  # nobody recorded rung 2: nothing to lose against


def test_median_by_hand() -> None:
    spec = EarlyStoppingSpec("median", "loss", n_startup=2, n_warmup=2)
    done = seq([[0.5, 0.4, 0.3], [0.7, 0.6, 0.5], [0.9, 0.8, 0.7]], pruned={2: 3}, states={})
    trial = make_curve(3, [(1, 0.95), (2, 0.65), (3, 0.45)], created="t9999")
    # Finished at step 2: 0.4 and 0.6 (trial 2 was pruned: it does not count), median 0.5 < 0.65: stop.
    stop = decide(spec, trial, done)
    assert stop is not None and stop.step == 2 and "median 0.5 of 2" in stop.reason
    # Not before n_warmup (step 1 is worse than every median, and is not judged).
    assert decide(spec, make_curve(3, [(1, 9.0)], created="t9999"), done) is None
    # Not before n_startup finished trials.
    assert decide(EarlyStoppingSpec("median", "loss", n_startup=3), trial, done) is None


def test_hyperband_brackets_are_optunas_allocation_and_depend_on_the_number_only() -> None:
    spec = EarlyStoppingSpec("hyperband", "loss", min_step=1, max_step=27, reduction=3)
    assert spec.brackets == 4
    n = 4
    assert bracket_budgets(spec) == [-(-n * 3 ** (n - 1 - b) // (n - b)) for b in range(n)] == [27, 12, 6, 4]
    brackets = [bracket_of(spec, i) for i in range(90)]
    assert brackets[:27] == [0] * 27 and brackets[27:39] == [1] * 12 and brackets[45] == 3
    assert brackets == [bracket_of(spec, i) for i in range(90)]
    assert asha_rungs(spec, 1) == [3, 9] and asha_rungs(spec, 3) == []


# ------------------------------------------------------------------------------------ against Optuna
def _curves(seed: int, n: int, steps: int) -> list[list[float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        final, rate = rng.uniform(0.05, 1.0), rng.uniform(0.2, 1.5)
        out.append([round(final + (1.5 - final) * 2.718 ** (-rate * s) + rng.gauss(0, 0.02), 6)
                    for s in range(steps)])
    return out


def _optuna_pruned(pruner: object, curves: list[list[float]], direction: str) -> dict[int, int]:
    """Run Optuna one trial at a time, each reporting its curve step by step (steps 1..T)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, pruner=pruner)  # type: ignore[arg-type]
    pruned: dict[int, int] = {}
    for i, curve in enumerate(curves):
        trial = study.ask()
        for s, value in enumerate(curve, start=1):
            trial.report(value, s)
            if trial.should_prune():
                pruned[i] = s
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
    return pruned


def _ours(spec: EarlyStoppingSpec, curves: list[list[float]]) -> dict[int, int]:
    done: list[Curve] = []
    pruned: dict[int, int] = {}
    for i, curve in enumerate(curves):
        full = make_curve(i, [(float(s), v) for s, v in enumerate(curve, start=1)], created=f"t{i:04d}a")
        stop = decide(spec, full, done)
        if stop is not None:
            pruned[i] = int(stop.step)
        done.append(make_curve(i, full.points, created=full.created, ended=f"t{i:04d}b",
                               state="pruned" if stop else "finished", pruned_step=stop.step if stop else None))
    return pruned


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_median_matches_optunas_median_pruner(seed: int, goal: str) -> None:
    import optuna

    curves = _curves(seed, 40, 12)
    if goal == "maximize":
        curves = [[-v for v in c] for c in curves]
    spec = EarlyStoppingSpec("median", "loss", goal=goal, n_startup=5, n_warmup=2)
    expected = _optuna_pruned(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2), curves, goal)
    assert expected  # the case must exercise pruning
    assert _ours(spec, curves) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction, rate", [(3, 0), (2, 0), (3, 1)])
def test_asha_matches_optunas_successive_halving(seed: int, reduction: int, rate: int) -> None:
    import optuna

    curves = _curves(seed, 40, 27)
    # Our bracket b is Optuna's min_early_stopping_rate b (hyperband's bracket b).
    spec = EarlyStoppingSpec("asha", "loss", min_step=1, reduction=reduction, n_startup=0)
    expected = _optuna_pruned(optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=reduction, min_early_stopping_rate=rate), curves, "minimize")
    assert expected
    if rate == 0:
        assert _ours(spec, curves) == expected
    else:
        hb = EarlyStoppingSpec("hyperband", "loss", min_step=1, max_step=10 ** 6, reduction=reduction, n_startup=0)
        done: list[Curve] = []
        ours: dict[int, int] = {}
        from parasearch.early_stopping import asha_stop

        for i, curve in enumerate(curves):
            full = make_curve(i, [(float(s), v) for s, v in enumerate(curve, start=1)], created=f"t{i:04d}a")
            stop = asha_stop(hb, full, reference(full, done), bracket=rate, bracket_of={c.number: rate for c in done})
            if stop is not None:
                ours[i] = int(stop.step)
            done.append(make_curve(i, full.points, created=full.created, ended=f"t{i:04d}b",
                                   state="pruned" if stop else "finished", pruned_step=stop.step if stop else None))
        assert ours == expected
