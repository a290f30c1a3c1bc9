"""Early stopping: parasearch's rules side by side with Optuna's pruners, on learning curves, 4 slots.

Why: stopping bad runs early is where a search saves the most budget (issue 14). Every method runs in one
process per (family, seed), in SIMULATED time: each epoch costs one time unit on one of 4 slots, trials
start as slots free up (asynchronous, as Orchestra's study runs), and a method's pruner is asked after
every epoch. Simulated time because a real wall clock would be dominated by this loaded 2-core machine's
noise; the sum of epochs run is what a cluster pays. The samplers' own ask time is measured and printed
apart (it is real seconds on this machine).

Families:
- ``synthetic``: 4 parameters, known curves val(e) = final(x) + (1 - final(x)) * exp(-rate(x) * e) plus
  a fixed jitter of +-0.005: a fast learning rate converges faster, to a worse final value past its
  optimum, so early values mislead a little (curves cross), as real ones do. Best final value 0.05; the
  curves are still descending at the last epoch (27), so reaching the target needs full runs.
- ``digits``: a one-hidden-layer MLP trained epoch by epoch (minibatch SGD with momentum, numpy) on
  scikit-learn's bundled digits set (70/30 split), 5 hyper-parameters (lr, width, l2, momentum, batch);
  the value is the validation error.

Methods: parasearch bayes without early stopping, bayes + asha (the model told what each fidelity taught,
as parasearch's study tells it: parasearch.early_stopping.fidelity_values), random + asha, Optuna TPE + its
HyperbandPruner, TPE + its MedianPruner. Reported: simulated time until some trial reports a validation
error at or below the family's target, and the best error within the budget; median [p25, p75] over
seeds, with a Mann-Whitney U p-value (two-sided) of bayes + asha against the best other method.

    python bench/early_stopping.py --quick          # 3 seeds, synthetic only
    python bench/early_stopping.py --write BENCHMARKS.md
    python bench/early_stopping.py --from-log a.log --write BENCHMARKS.md   # families run apart, cat'ed
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import datetime
import hashlib
import heapq
import math
import multiprocessing
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_section  # noqa: E402

from orchestra.search import EarlyStoppingSpec  # noqa: E402
from parasearch import Space, Trial, make_sampler  # noqa: E402
from parasearch.early_stopping import Curve, decide, fidelity_values, make_curve  # noqa: E402

SLOTS = 4
MAX_EPOCHS = 27
METHODS = ("bayes", "bayes+asha", "random+asha", "tpe+hyperband", "tpe+median")
ANCHORS = ("bayes", "random+asha", "tpe+hyperband", "tpe+median")  # issue 14's: every other method


# --------------------------------------------------------------------------------------------- families
@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    parameters: Mapping[str, Mapping[str, Any]]
    target: float
    budget: float  # simulated time units (epochs per slot)
    curve: Callable[[Mapping[str, Any]], Callable[[int], float]]  # params -> (epoch -> validation error)


def _jitter(params: Mapping[str, Any], epoch: int) -> float:
    """Deterministic noise of a curve (the same params and epoch give the same value in every method)."""
    digest = hashlib.sha256(repr((sorted(params.items()), epoch)).encode()).digest()
    return (int.from_bytes(digest[:8], "big") / 2 ** 64 - 0.5) * 0.01


def synthetic_curve(params: Mapping[str, Any]) -> Callable[[int], float]:
    lr, width, reg, mom = params["lr"], params["width"], params["reg"], params["momentum"]
    final = 0.05 + 0.6 * ((lr - 0.35) ** 2 + 0.6 * (width - 0.7) ** 2 + 0.4 * (reg - 0.25) ** 2
                          + 0.3 * (mom - 0.6) ** 2 + 0.5 * max(lr - 0.8, 0))
    rate = 0.10 + 0.06 * lr + 0.02 * mom  # a faster lr converges faster: curves cross, a little

    def at(epoch: int) -> float:
        return final + (1.0 - final) * math.exp(-rate * epoch) + _jitter(params, epoch)

    return at


SYNTHETIC = Family("synthetic", {
    "lr": {"type": "float", "low": 0.0, "high": 1.0}, "width": {"type": "float", "low": 0.0, "high": 1.0},
    "reg": {"type": "float", "low": 0.0, "high": 1.0}, "momentum": {"type": "float", "low": 0.0, "high": 1.0},
}, target=0.08, budget=40 * MAX_EPOCHS / SLOTS, curve=synthetic_curve)

_DIGITS: Any = None


def _digits() -> Any:
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        X, y = load_digits(return_X_y=True)
        Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
        scaler = StandardScaler().fit(Xtr)
        _DIGITS = (scaler.transform(Xtr), scaler.transform(Xva), ytr, yva)
    return _DIGITS


def digits_curve(params: Mapping[str, Any]) -> Callable[[int], float]:
    """Validation error after each epoch of a one-hidden-layer MLP trained by minibatch SGD with momentum
    on scikit-learn's digits; computed lazily, one epoch per step asked.

    Why numpy and not sklearn's MLPClassifier/SGDClassifier: measured on this machine (load 11 on 2 cores),
    SGDClassifier.partial_fit took 86 ms an epoch (one-vs-rest, joblib overhead per class): 20 seeds x 5
    methods x 1,080 epochs would take hours. This MLP does an epoch in a few ms, and its curves are real."""
    import numpy as np

    Xtr, Xva, ytr, yva = _digits()
    width, batch = int(params["width"]), int(params["batch"])
    lr, l2, momentum = float(params["lr"]), float(params["l2"]), float(params["momentum"])
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(repr(sorted(params.items())).encode()).digest()[:4],
                                               "big"))
    W1 = rng.normal(0, 1 / math.sqrt(Xtr.shape[1]), (Xtr.shape[1], width))
    b1 = np.zeros(width)
    W2 = rng.normal(0, 1 / math.sqrt(width), (width, 10))
    b2 = np.zeros(10)
    velocity = [np.zeros_like(W1), np.zeros_like(b1), np.zeros_like(W2), np.zeros_like(b2)]
    onehot = np.eye(10)[ytr]
    values: list[float] = []
    state = {"dead": False}

    def epoch_pass() -> None:
        nonlocal W1, b1, W2, b2
        order = rng.permutation(len(ytr))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            h = np.maximum(Xtr[idx] @ W1 + b1, 0)
            logits = h @ W2 + b2
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            g = (p - onehot[idx]) / len(idx)
            gW2 = h.T @ g + l2 * W2
            gh = (g @ W2.T) * (h > 0)
            gW1 = Xtr[idx].T @ gh + l2 * W1
            for k, grad in enumerate((gW1, gh.sum(axis=0), gW2, g.sum(axis=0))):
                velocity[k] = momentum * velocity[k] - lr * grad
            W1 = W1 + velocity[0]
            b1 = b1 + velocity[1]
            W2 = W2 + velocity[2]
            b2 = b2 + velocity[3]

    def at(epoch: int) -> float:
        while len(values) < epoch:
            if not state["dead"]:
                with np.errstate(all="ignore"):
                    epoch_pass()
                    scores = np.maximum(Xva @ W1 + b1, 0) @ W2 + b2
                error = float(np.mean(np.argmax(scores, axis=1) != yva))
                if not np.isfinite(scores).all():
                    state["dead"] = True  # diverged: stays at chance, as a real run would
                    error = 0.9
            else:
                error = 0.9
            values.append(error)
        return values[epoch - 1]

    return at


DIGITS = Family("digits", {
    "lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
    "width": {"type": "int", "low": 4, "high": 64, "log": True},
    "l2": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "batch": {"choices": [32, 64, 128, 256]},
}, target=0.015, budget=40 * MAX_EPOCHS / SLOTS, curve=digits_curve)

FAMILIES = {"synthetic": SYNTHETIC, "digits": DIGITS}


# ----------------------------------------------------------------------------------- the simulation
@dataclasses.dataclass
class Outcome:
    time_to_target: float  # inf: not within the budget
    best: float
    trials: int
    epochs: int
    ask_seconds: float


def _stamp(t: float) -> str:
    return f"{t:014.4f}"  # sorts as the number does: the rules compare created/ended as text


class _Parasearch:
    """parasearch's sampler and, optionally, its ASHA rule, driven as Orchestra's study drives them."""

    def __init__(self, family: Family, algorithm: str, seed: int, rule: str) -> None:
        self.space = Space.from_parameters(family.parameters)
        self.sampler = make_sampler(algorithm, self.space, seed=seed, budget=10_000)
        self.spec = EarlyStoppingSpec(rule, "val", step="epoch", min_step=1, max_step=MAX_EPOCHS,
                                      reduction=3) if rule else None
        self.ended: list[Curve] = []
        self.finished: list[tuple[dict[str, Any], float]] = []
        self.pruned: list[dict[str, Any]] = []
        self.finals: dict[int, float] = {}
        self.points: dict[int, dict[str, Any]] = {}
        self.running: dict[int, tuple[dict[str, Any], float, list[tuple[float, float]]]] = {}

    def start(self, number: int, now: float) -> dict[str, Any]:
        if self.spec is None:
            history = [Trial(p, v) for p, v in self.finished]
        else:
            # parasearch's study rule (StudyState.trials told by PruneWatch.told): what each fidelity taught,
            # at the highest rung with dim + 2 values, the stopped trials' values mapped up to it.
            told = fidelity_values(self.spec, self.ended, self.finals, self.space.dim + 2)
            worst = max((v for _p, v in self.finished), default=None)  # no level yet: the penalty rule
            history = [Trial(self.points[c.number], told.get(c.number, worst if c.state == "pruned" else None))
                       if told else Trial(self.points[c.number], self.finals.get(c.number, worst))
                       for c in self.ended]
            history = [Trial(t.params, t.value, failed=t.value is None) for t in history]
        pending = [p for p, _t, _c in self.running.values()]
        point = self.sampler.ask(1, history, pending)[0]
        self.running[number] = (point, now, [])
        self.points[number] = point
        return point

    def report(self, number: int, epoch: int, value: float, now: float) -> bool:
        point, created, points = self.running[number]
        points.append((float(epoch), value))
        if self.spec is None:
            return False
        stop = decide(self.spec, make_curve(number, points, created=_stamp(created)), self.ended)
        return stop is not None

    def end(self, number: int, now: float, pruned: bool) -> None:
        point, created, points = self.running.pop(number)
        self.ended.append(make_curve(number, points, created=_stamp(created), ended=_stamp(now),
                                     state="pruned" if pruned else "finished",
                                     pruned_step=points[-1][0] if pruned else None))
        if pruned:
            self.pruned.append(point)
        else:
            self.finished.append((point, points[-1][1]))
            self.finals[number] = points[-1][1]


class _Optuna:
    """Optuna's TPE with one of its pruners: report after each epoch, ask should_prune, as its docs show."""

    def __init__(self, family: Family, pruner: str, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.parameters = family.parameters
        chosen = (optuna.pruners.HyperbandPruner(min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=3)
                  if pruner == "hyperband" else optuna.pruners.MedianPruner())
        self.study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), pruner=chosen)
        self.trials: dict[int, Any] = {}
        self.last: dict[int, float] = {}

    def start(self, number: int, now: float) -> dict[str, Any]:
        trial = self.study.ask()
        self.trials[number] = trial
        point: dict[str, Any] = {}
        for name, decl in self.parameters.items():
            if "choices" in decl:
                point[name] = trial.suggest_categorical(name, list(decl["choices"]))
            elif decl["type"] == "int":
                point[name] = trial.suggest_int(name, decl["low"], decl["high"], log=decl.get("log", False))
            else:
                point[name] = trial.suggest_float(name, decl["low"], decl["high"], log=decl.get("log", False))
        return point

    def report(self, number: int, epoch: int, value: float, now: float) -> bool:
        trial = self.trials[number]
        self.last[number] = value
        trial.report(value, epoch)
        return bool(trial.should_prune())

    def end(self, number: int, now: float, pruned: bool) -> None:
        trial = self.trials.pop(number)
        if pruned:
            self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, self.last[number])
        self.last.pop(number, None)


def simulate(family: Family, method: str, seed: int) -> Outcome:
    """Run one method on one family for the family's budget of simulated time, 4 slots."""
    if method.startswith("tpe+"):
        driver: Any = _Optuna(family, method.split("+")[1], seed)
    else:
        algorithm, _, rule = method.partition("+")
        driver = _Parasearch(family, algorithm, seed, rule)
    events: list[tuple[float, int, int]] = []  # (time, trial number, epoch it completes)
    curves: dict[int, Callable[[int], float]] = {}
    best, reached, epochs, number, spent = math.inf, math.inf, 0, 0, 0.0

    def launch(now: float) -> None:
        nonlocal number, spent
        t0 = time.perf_counter()
        point = driver.start(number, now)
        spent += time.perf_counter() - t0
        curves[number] = family.curve(point)
        heapq.heappush(events, (now + 1.0, number, 1))
        number += 1

    for _ in range(SLOTS):
        launch(0.0)
    while events:
        now, trial, epoch = heapq.heappop(events)
        if now > family.budget:
            break
        value = curves[trial](epoch)
        epochs += 1
        if value < best:
            best = value
        if value <= family.target and reached == math.inf:
            reached = now
        t0 = time.perf_counter()
        stop = driver.report(trial, epoch, value, now)
        spent += time.perf_counter() - t0
        if stop or epoch == MAX_EPOCHS:
            driver.end(trial, now, pruned=stop and epoch < MAX_EPOCHS)
            del curves[trial]
            launch(now)
        else:
            heapq.heappush(events, (now + 1.0, trial, epoch + 1))
    return Outcome(reached, best, number, epochs, spent / max(number, 1))


# --------------------------------------------------------------------------------------------- stats
def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    import numpy as np

    arr = np.array(values, dtype=float)
    return tuple(float(np.percentile(arr, q, method="lower" if np.isinf(arr).any() else "linear"))
                 for q in (50, 25, 75))  # type: ignore[return-value]


def _fmt(values: Sequence[float], digits: int) -> str:
    median, p25, p75 = _quartiles(values)

    def one(v: float) -> str:
        return "never" if math.isinf(v) else f"{v:.{digits}f}"

    return f"{one(median)} [{one(p25)}, {one(p75)}]"


def _p(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import mannwhitneyu

    big = 1e12  # "never" ranks after every time (mannwhitneyu ranks; inf would be refused by some versions)
    if list(a) == list(b):
        return 1.0
    return float(mannwhitneyu([min(x, big) for x in a], [min(x, big) for x in b], alternative="two-sided").pvalue)


def _job(args: tuple[str, str, int]) -> tuple[str, str, int, Outcome]:
    family, method, seed = args
    return family, method, seed, simulate(FAMILIES[family], method, seed)


def report(results: Mapping[tuple[str, str], list[Outcome]], families: Sequence[str], seeds: int,
           elapsed: float, start_machine: str) -> str:
    lines = [f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {start_machine}; "
             f"{seeds} seeds; 4 slots, asynchronous; SIMULATED time (one epoch = one unit on one slot, the "
             f"budget is 40 full runs of {MAX_EPOCHS} epochs = {40 * MAX_EPOCHS // SLOTS} units); wall "
             f"{elapsed:.0f} s for the whole run. Median [p25, p75] over seeds; p: Mann-Whitney U (two-sided) "
             f"of bayes+asha against the best other method (by median); speed-up: bayes's median time to "
             f"target over bayes+asha's. \"never\": not reached within the budget (ranked last).", ""]
    for name in families:
        family = FAMILIES[name]
        lines += [f"**{name}** (target validation error {family.target}):", "",
                  "| method | time to target | best error in budget | trials | ask (ms) |",
                  "|---|---|---|---|---|"]
        for method in METHODS:
            got = results[(name, method)]
            lines.append(f"| {method} | {_fmt([o.time_to_target for o in got], 0)} | "
                         f"{_fmt([o.best for o in got], 4)} | {_fmt([o.trials for o in got], 0)} | "
                         f"{_fmt([o.ask_seconds * 1000 for o in got], 1)} |")
        ours = results[(name, "bayes+asha")]
        anchor = min(ANCHORS, key=lambda m: _quartiles([o.time_to_target for o in results[(name, m)]])[0])
        theirs = results[(name, anchor)]
        plain = _quartiles([o.time_to_target for o in results[(name, "bayes")]])[0]
        mine = _quartiles([o.time_to_target for o in ours])[0]
        speedup = "n/a" if math.isinf(mine) else ("> budget" if math.isinf(plain) else f"{plain / mine:.1f}x")
        best_anchor = min(ANCHORS, key=lambda m: _quartiles([o.best for o in results[(name, m)]])[0])
        lines += ["", f"bayes+asha against {anchor} (the best other method on time to target): p = "
                      f"{_p([o.time_to_target for o in ours], [o.time_to_target for o in theirs]):.3g}; on best error "
                      f"against {best_anchor}: p = "
                      f"{_p([o.best for o in ours], [o.best for o in results[(name, best_anchor)]]):.3g}; "
                      f"speed-up over bayes without early stopping: {speedup}.", ""]
    return "\n".join(lines)


_LINE = re.compile(r"^(\w+)\s+(\S+)\s+seed\s+(\d+): to target\s+(\S+)\s+best (\S+)\s+trials\s+(\d+)\s+ask (\S+) ms$")


def report_from_log(text: str) -> str:
    """The report of a run cut short (a loaded machine): its per-run lines, complete seeds only."""
    lines = text.splitlines()
    start_machine = lines[0] if lines else "?"
    runs: dict[tuple[str, str, int], Outcome] = {}
    for line in lines:
        found = _LINE.match(line)
        if found:
            family, method, seed, to_target, best, trials, ask = found.groups()
            runs[(family, method, int(seed))] = Outcome(float(to_target), float(best), int(trials), 0,
                                                        float(ask) / 1000)
    families = [f for f in FAMILIES if any(k[0] == f for k in runs)]
    results: dict[tuple[str, str], list[Outcome]] = {}
    counts = []
    for family in families:
        seeds = sorted({s for f, _m, s in runs if f == family})
        complete = [s for s in seeds if all((family, m, s) in runs for m in METHODS)]
        counts.append(f"{family}: {len(complete)} seeds")
        for method in METHODS:
            results[(family, method)] = [runs[(family, method, s)] for s in complete]
    return report(results, families, 0, float("nan"), start_machine).replace(
        "; 0 seeds;", "; " + ", ".join(counts) + " (rebuilt from the runs' per-run lines: complete seeds only);").replace(
        "wall nan s for the whole run", "wall time not measured here")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--families", default="synthetic,digits")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="only these (their per-run lines, for --from-log with lines of the others)")
    parser.add_argument("--quick", action="store_true", help="3 seeds, synthetic only")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--write", type=Path, help="write the figures into this markdown file's section")
    parser.add_argument("--from-log", type=Path, help="report from the per-run lines of an earlier run's output "
                        "(only seeds every method finished)")
    args = parser.parse_args(argv)
    if args.from_log:
        text = report_from_log(args.from_log.read_text())
        print(text)
        if args.write:
            write_section(args.write, "Early stopping (bench/early_stopping.py)", text)
        return
    seeds = 3 if args.quick else args.seeds
    families = ["synthetic"] if args.quick else args.families.split(",")
    start_machine = machine()
    print(start_machine, flush=True)
    # Alternated: each seed runs every method before the next seed, so load drifts hit all alike.
    methods = [m for m in METHODS if m in args.methods.split(",")]
    jobs = [(f, m, s) for f in families for s in range(args.first_seed, args.first_seed + seeds) for m in methods]
    results: dict[tuple[str, str], list[Outcome]] = {}
    t0 = time.perf_counter()
    with multiprocessing.Pool(args.jobs) as pool:
        for family, method, seed, outcome in pool.imap_unordered(_job, jobs):
            results.setdefault((family, method), []).append(outcome)
            print(f"{family:9} {method:13} seed {seed:2}: to target {outcome.time_to_target:6.0f}  best "
                  f"{outcome.best:.4f}  trials {outcome.trials:3}  ask {outcome.ask_seconds * 1000:.1f} ms", flush=True)
    if len(methods) < len(METHODS):
        return  # per-run lines only: the report needs every method (--from-log)
    text = report(results, families, seeds, time.perf_counter() - t0, start_machine)
    print(text)
    if args.write:
        write_section(args.write, "Early stopping (bench/early_stopping.py)", text)


if __name__ == "__main__":
    main()
