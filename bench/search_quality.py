"""Search quality: parasearch samplers side by side with Optuna on known test functions.

Why: the bayes sampler is our own GP code, so it must earn its place against the default a user would
otherwise reach for (Optuna's TPE). This runs every method through its library API (no processes),
sequentially and with 4 trials in flight, and reports the simple regret (best value found minus the
known minimum) at a fixed budget: median and quartiles over seeds, plus the mean time per suggestion.

    python bench/search_quality.py              # full: budgets 30 and 80, 20 seeds
    python bench/search_quality.py --quick      # 5 seeds, budget 30, for a smoke check
    python bench/search_quality.py --write BENCHMARKS.md

Parallel mode is synchronous batches of 4: parasearch asks 4 points at once (each later one sees the
earlier ones as pending); Optuna calls ``study.ask()`` 4 times, then tells the 4 results. The last
batch is smaller when the budget is not a multiple of 4. Runs are spread over the machine's cores in
separate processes with single-threaded BLAS, so the timings are per core.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import datetime
import math
import multiprocessing
import platform
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
try:  # installed (setup.py maps core/ -> orchestra); from a bare checkout, load core/ under that name
    import orchestra  # noqa: F401
except ImportError:
    import importlib.util

    _spec = importlib.util.spec_from_file_location("orchestra", _ROOT / "core" / "__init__.py",
                                                   submodule_search_locations=[str(_ROOT / "core")])
    assert _spec is not None and _spec.loader is not None
    sys.modules["orchestra"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["orchestra"])

from parasearch import Space, Trial, make_sampler  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_section  # noqa: E402

# --------------------------------------------------------------------------------------------------
# Test functions: (parameters as a manifest would declare them, objective, known minimum)


def branin(p: Mapping[str, Any]) -> float:
    x1, x2 = p["x1"], p["x2"]
    return ((x2 - 5.1 / (4 * math.pi ** 2) * x1 ** 2 + 5 / math.pi * x1 - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                 [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                        [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def hartmann6(p: Mapping[str, Any]) -> float:
    x = np.array([p[f"x{i}"] for i in range(6)])
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


def rosenbrock4(p: Mapping[str, Any]) -> float:
    x = [p[f"x{i}"] for i in range(4)]
    return float(sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3)))


_MIX_SHIFT = {"sgd": -1.0, "adam": 0.3, "rmsprop": -0.5}
_MIX_OFFSET = {"sgd": 0.5, "adam": 0.0, "rmsprop": 0.2}


def mixed(p: Mapping[str, Any]) -> float:
    """A learning-rate-like float (log), an int and a categorical that moves the float's optimum.

    f = (log10 lr - t_c)^2 + 0.05 (n - 6)^2 + 0.1 (log10 lr - t_c)(n - 6) + b_c, minimum 0 at
    lr = 10^0.3, n = 6, c = adam (the quadratic form is positive definite, the offsets b_c >= 0).
    """
    d = math.log10(p["lr"]) - _MIX_SHIFT[p["opt"]]
    k = p["layers"] - 6
    return d * d + 0.05 * k * k + 0.1 * d * k + _MIX_OFFSET[p["opt"]]


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    parameters: Mapping[str, Mapping[str, Any]]
    objective: Callable[[Mapping[str, Any]], float]
    minimum: float


PROBLEMS: dict[str, Problem] = {
    "branin": Problem("Branin (2-D)", {"x1": {"type": "float", "low": -5.0, "high": 10.0},
                                       "x2": {"type": "float", "low": 0.0, "high": 15.0}}, branin, 0.397887357729739),
    "hartmann6": Problem("Hartmann6 (6-D)", {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(6)},
                         hartmann6, -3.322368011391339),
    "rosenbrock4": Problem("Rosenbrock (4-D, [-2.048, 2.048])",
                           {f"x{i}": {"type": "float", "low": -2.048, "high": 2.048} for i in range(4)},
                           rosenbrock4, 0.0),
    "mixed": Problem("Mixed (log float, int, categorical)",
                     {"lr": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
                      "layers": {"type": "int", "low": 1, "high": 12},
                      "opt": {"choices": ["sgd", "adam", "rmsprop"]}}, mixed, 0.0),
}

METHODS = ("parasearch-bayes", "optuna-tpe", "optuna-random", "parasearch-random")

# --------------------------------------------------------------------------------------------------
# Drivers


def run_parasearch(problem: Problem, algorithm: str, budget: int, batch: int, seed: int) -> tuple[float, float]:
    """Best value found and mean seconds per suggestion, driving the sampler as Orchestra's study does."""
    space = Space.from_parameters(problem.parameters)
    sampler = make_sampler(algorithm, space, seed=seed, budget=budget, goal="minimize")
    history: list[Trial] = []
    spent = 0.0
    while len(history) < budget:
        k = min(batch, budget - len(history))
        t0 = time.perf_counter()
        points = sampler.ask(k, history, [])
        spent += time.perf_counter() - t0
        if not points:
            break
        history.extend(Trial(p, problem.objective(p)) for p in points)
    return min(t.value for t in history if t.value is not None), spent / max(len(history), 1)


def _suggest(trial: Any, parameters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    point: dict[str, Any] = {}
    for name, decl in parameters.items():
        if "choices" in decl:
            point[name] = trial.suggest_categorical(name, list(decl["choices"]))
        elif decl["type"] == "int":
            point[name] = trial.suggest_int(name, int(decl["low"]), int(decl["high"]), log=decl.get("log", False))
        else:
            point[name] = trial.suggest_float(name, decl["low"], decl["high"], log=decl.get("log", False))
    return point


def run_optuna(problem: Problem, kind: str, budget: int, batch: int, seed: int) -> tuple[float, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed) if kind == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    done, spent, best = 0, 0.0, math.inf
    while done < budget:
        k = min(batch, budget - done)
        asked = []
        t0 = time.perf_counter()
        for _ in range(k):
            trial = study.ask()
            asked.append((trial, _suggest(trial, problem.parameters)))
        spent += time.perf_counter() - t0
        for trial, point in asked:
            value = problem.objective(point)
            best = min(best, value)
            study.tell(trial, value)
        done += k
    return best, spent / budget


def run_one(job: tuple[str, str, int, int, int]) -> tuple[tuple[str, str, int, int, int], float, float]:
    method, problem_key, budget, batch, seed = job
    problem = PROBLEMS[problem_key]
    if method.startswith("parasearch-"):
        best, per = run_parasearch(problem, method.split("-", 1)[1], budget, batch, seed)
    else:
        best, per = run_optuna(problem, method.split("-", 1)[1], budget, batch, seed)
    return job, max(best - problem.minimum, 0.0), per


# --------------------------------------------------------------------------------------------------
# Report


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3g}"


def render(results: Mapping[tuple[str, str, int, int], list[tuple[float, float]]], methods: Sequence[str],
           problems: Sequence[str], budgets: Sequence[int], batches: Sequence[int], seeds: int) -> str:
    """The markdown section: one row per (function, budget, mode), one column per method."""
    lines = [
        "Simple regret (best found − known minimum): median [q1, q3] over "
        f"{seeds} seeds; time = mean ms per suggestion. Lower is better. "
        "**bold** = lowest median in the row; ✓ in the last column when parasearch-bayes beats optuna-tpe.",
        "",
        "| function | budget | mode | " + " | ".join(methods) + " | bayes < tpe |",
        "|---|---:|---|" + "---|" * len(methods) + ":---:|",
    ]
    wins = total = 0
    for pk in problems:
        for budget in budgets:
            for batch in batches:
                meds = {m: float(np.median([r for r, _ in results[(m, pk, budget, batch)]])) for m in methods}
                best = min(meds.values())
                cells = []
                for m in methods:
                    regs = np.array([r for r, _ in results[(m, pk, budget, batch)]])
                    ms = 1000 * float(np.mean([t for _, t in results[(m, pk, budget, batch)]]))
                    q1, q3 = np.percentile(regs, [25, 75])
                    med = _fmt(meds[m])
                    med = f"**{med}**" if meds[m] == best else med
                    cells.append(f"{med} [{_fmt(q1)}, {_fmt(q3)}] · {ms:.1f} ms")
                verdict = ""
                if "parasearch-bayes" in meds and "optuna-tpe" in meds:
                    total += 1
                    win = meds["parasearch-bayes"] < meds["optuna-tpe"]
                    wins += win
                    verdict = "✓" if win else "✗"
                mode = "sequential" if batch == 1 else f"{batch} in flight"
                lines.append(f"| {PROBLEMS[pk].name} | {budget} | {mode} | " + " | ".join(cells) + f" | {verdict} |")
    if total:
        lines += ["", f"parasearch-bayes has a lower median regret than optuna-tpe in {wins} of {total} rows."]
    return "\n".join(lines)


def machine_info() -> str:
    import optuna
    import scipy

    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
            f"(nproc), Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"optuna {optuna.__version__}; single-threaded BLAS per process")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 seeds, budget 30 only")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--budgets", type=int, nargs="+", default=None)
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--modes", nargs="+", type=int, default=[1, 4], help="trials in flight (1 = sequential)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--write", type=Path, nargs="+", default=[], metavar="PATH",
                    help="markdown file(s) to append our section to (or replace it in)")
    args = ap.parse_args(argv)
    seeds = args.seeds or (5 if args.quick else 20)
    budgets = args.budgets or ([30] if args.quick else [30, 80])

    jobs = [(m, pk, b, k, s) for pk in args.problems for b in budgets for k in args.modes
            for m in args.methods for s in range(seeds)]
    # Longest first so the pool does not end on one straggler.
    jobs.sort(key=lambda j: (-j[2] * (10 if j[0] == "parasearch-bayes" else 1), j))
    results: dict[tuple[str, str, int, int], list[tuple[float, float]]] = {}
    t0 = time.time()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for i, (job, regret, per) in enumerate(pool.imap_unordered(run_one, jobs), 1):
            results.setdefault(job[:4], []).append((regret, per))
            if i % 50 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} runs, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    table = render(results, args.methods, args.problems, budgets, args.modes, seeds)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    title = f"Search quality (bench/search_quality.py{' --quick' if args.quick else ''})"
    body = (
            f"Run {stamp} on {machine_info()}; wall time {time.time() - t0:.0f} s.\n\n{table}\n")
    print(body)
    for path in args.write:
        write_section(path, title, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
