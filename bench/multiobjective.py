"""Multi-objective search quality: parasearch's `bayes` (log-EHVI, ParEGO) against Optuna's NSGA-II and GPSampler.

Why: issue 14 asks `bayes` on several objectives to beat Optuna's NSGA-II and GPSampler on standard
two-objective problems. The measure is the hypervolume regret at a fixed budget: the hypervolume of the
true Pareto front minus that of the points found, both up to the reference point (11, 11) customary for
ZDT (so early points far from the front still count), (1.1, 1.1, 1.1) for the three-objective DTLZ2. Lower is better; 0 is the true front.

    python bench/multiobjective.py --seeds 5 --budgets 50            # a first figure
    python bench/multiobjective.py --write BENCHMARKS.md              # 20 seeds, budgets 50 and 100

Every method runs through its library API (no processes), sequentially; parasearch's samplers are driven
as its study drives them (trials carry their objective vectors). Each (method, problem, seed) runs once at
the largest budget and every smaller budget's row is the hypervolume of its first points: no sampler here
knows the budget at those sizes (Optuna's never do; parasearch's only through its initial design, whose
size is checked to be the same for every budget asked), so a run of 50 *is* the first 50 of a run of 100.

The p-value column: a two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu) of each parasearch
method's regrets against those of the best anchor in the row (the Optuna sampler of lowest median).
``--cache`` keeps every finished run in a JSON-lines file, so an interrupted run resumes where it stopped.
A run's key is (method, problem, budgets, seed) and nothing else: after a change to one method's code,
delete that method's lines (the anchors' runs depend on Optuna alone and stay valid).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import json  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine, write_section  # noqa: E402

from parasearch.bayes import initial_design_size  # noqa: E402
from orchestra.pareto import hypervolume  # noqa: E402
from parasearch.parego import ParEGOSampler  # noqa: E402
from parasearch.sampler_factory import make_sampler  # noqa: E402
from parasearch.space import Space, Trial  # noqa: E402
from parasearch.study import VectorTrial  # noqa: E402

REFERENCE = np.array([11.0, 11.0])
DIM = 6
PARAMETERS = {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(DIM)}


Objectives = tuple[float, ...]


def _zdt(h: Callable[[float, float], float]) -> Callable[[Mapping[str, Any]], Objectives]:
    def f(p: Mapping[str, Any]) -> Objectives:
        x = [float(p[f"x{i}"]) for i in range(DIM)]
        g = 1.0 + 9.0 * sum(x[1:]) / (DIM - 1)
        return x[0], g * h(x[0], g)
    return f


def dtlz2(p: Mapping[str, Any]) -> Objectives:
    """Three objectives; the front is the unit sphere's positive octant, at x3..x6 = 0.5 (not on a bound)."""
    x = [float(p[f"x{i}"]) for i in range(DIM)]
    g = sum((v - 0.5) ** 2 for v in x[2:])
    a, b = x[0] * math.pi / 2, x[1] * math.pi / 2
    return ((1 + g) * math.cos(a) * math.cos(b), (1 + g) * math.cos(a) * math.sin(b), (1 + g) * math.sin(a))


# (objectives, reference point, hypervolume of the true front up to it). ZDT: the front is g = 1,
# f2 = h(f1), so the box minus the area under the front, 121 - ∫_0^1 h(f1) df1; DTLZ2: the cube 1.1^3
# minus the octant of the unit ball, pi/6.
PROBLEMS: dict[str, tuple[Callable[[Mapping[str, Any]], Objectives], np.ndarray, float]] = {
    "ZDT1": (_zdt(lambda f1, g: 1.0 - math.sqrt(f1 / g)), REFERENCE, 121.0 - 1.0 / 3.0),
    "ZDT2": (_zdt(lambda f1, g: 1.0 - (f1 / g) ** 2), REFERENCE, 121.0 - 2.0 / 3.0),
    "DTLZ2": (dtlz2, np.full(3, 1.1), 1.1 ** 3 - math.pi / 6),
}
METHODS = ("parasearch-ehvi", "parasearch-parego", "optuna-nsga2", "optuna-gp", "parasearch-random")
ANCHORS = ("optuna-nsga2", "optuna-gp")


def run_parasearch(problem: str, algorithm: str, budget: int, seed: int) -> tuple[list[Objectives], float]:
    f = PROBLEMS[problem][0]
    space = Space.from_parameters(PARAMETERS)
    goals = ["minimize"] * len(PROBLEMS[problem][1])
    if algorithm == "parego":
        sampler: Any = ParEGOSampler(space, seed=seed, budget=budget, goals=goals)
    elif algorithm == "ehvi":
        from parasearch.ehvi import EHVISampler

        sampler = EHVISampler(space, seed=seed, budget=budget, goals=goals)
    else:
        sampler = make_sampler(algorithm, space, seed=seed, budget=budget)
    history: list[Trial] = []
    found: list[Objectives] = []
    spent = 0.0
    while len(history) < budget:
        t0 = time.perf_counter()
        points = sampler.ask(1, history, [])
        spent += time.perf_counter() - t0
        if not points:
            break
        values = f(points[0])
        found.append(values)
        history.append(VectorTrial(points[0], values[0], values=values))
    return found, spent / max(len(history), 1)


def run_optuna(problem: str, kind: str, budget: int, seed: int) -> tuple[list[Objectives], float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    f = PROBLEMS[problem][0]
    sampler = optuna.samplers.NSGAIISampler(seed=seed) if kind == "nsga2" else optuna.samplers.GPSampler(seed=seed)
    study = optuna.create_study(directions=["minimize"] * len(PROBLEMS[problem][1]), sampler=sampler)
    found: list[Objectives] = []
    spent = 0.0
    for _ in range(budget):
        t0 = time.perf_counter()
        trial = study.ask()
        point = {name: trial.suggest_float(name, 0.0, 1.0) for name in PARAMETERS}
        spent += time.perf_counter() - t0
        values = f(point)
        found.append(values)
        study.tell(trial, list(values))
    return found, spent / budget


Job = tuple[str, str, tuple[int, ...], int]  # (method, problem, budgets, seed)


def run_one(job: Job) -> tuple[Job, list[float], float]:
    """One run at the largest budget; the regret after each budget's first points (see the docstring)."""
    method, problem, budgets, seed = job
    kind = method.split("-", 1)[1]
    found, per = (run_parasearch if method.startswith("parasearch-") else run_optuna)(problem, kind, max(budgets), seed)
    _, reference, best = PROBLEMS[problem]
    regrets = [max(best - hypervolume(np.array(found[:b]), reference), 0.0) for b in budgets]
    return job, regrets, per


def p_value(ours: Sequence[float], anchor: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U: do the two samples of regrets come from one distribution?"""
    if len(ours) < 2 or len(anchor) < 2 or (len(set(ours)) == 1 and set(ours) == set(anchor)):
        return 1.0
    return float(stats.mannwhitneyu(ours, anchor, alternative="two-sided").pvalue)


def render(results: Mapping[tuple[str, str, int], list[tuple[float, float]]], methods: Sequence[str],
           problems: Sequence[str], budgets: Sequence[int], seeds: int) -> str:
    def cell(values: list[float]) -> str:
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        short = f" (n={len(values)})" if len(values) != seeds else ""  # an interrupted run says so per cell
        return f"{q50:.3g} [{q25:.3g}, {q75:.3g}]{short}"

    ours = [m for m in methods if m.startswith("parasearch-") and m != "parasearch-random"]
    anchors = [m for m in methods if m in ANCHORS]
    lines = [f"Hypervolume regret (reference (11, 11) for ZDT, (1.1, 1.1, 1.1) for DTLZ2; {DIM} parameters), median [p25, p75] over {seeds} seeds (a cell says n= where fewer ran), "
             "sequential; **bold** = lowest median in the row; p: two-sided Mann-Whitney U of each parasearch "
             "method against the row's best anchor (Optuna sampler of lowest median); the last columns: mean "
             "seconds per ask over the largest budget's run.", "",
             "| problem | budget | " + " | ".join(methods) + "".join(f" | p {m.split('-', 1)[1]}" for m in ours)
             + "".join(f" | {m.split('-', 1)[1]} s/ask" for m in (*ours, *anchors)) + " |",
             "|---|---|" + "---|" * (len(methods) + len(ours) + len(ours) + len(anchors))]
    for problem in problems:
        for budget in budgets:
            medians = {m: float(np.median([r for r, _ in results[(m, problem, budget)]])) for m in methods
                       if (m, problem, budget) in results}
            best = min(medians.values())
            cells = []
            for m in methods:
                if (m, problem, budget) not in results:
                    cells.append("-")
                    continue
                text = cell([r for r, _ in results[(m, problem, budget)]])
                cells.append(f"**{text}**" if medians[m] == best else text)
            present = [a for a in anchors if a in medians]
            anchor = min(present, key=lambda a: medians[a]) if present else None
            for m in ours:
                if anchor is None or (m, problem, budget) not in results:
                    cells.append("-")
                    continue
                p = p_value([r for r, _ in results[(m, problem, budget)]], [r for r, _ in results[(anchor, problem, budget)]])
                cells.append(f"{p:.2g} vs {anchor.split('-', 1)[1]}")
            for m in (*ours, *anchors):
                per = results.get((m, problem, budget))
                cells.append(f"{np.mean([p for _, p in per]):.2f}" if per else "-")
            lines.append(f"| {problem} | {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budgets", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=None, metavar="PATH",
                    help="JSON-lines file of finished runs: read to skip them, appended to as runs finish")
    ap.add_argument("--cached-only", action="store_true",
                    help="run nothing: render the runs --cache holds (cells with fewer seeds say n=)")
    ap.add_argument("--write", type=Path, nargs="+", default=[], metavar="PATH",
                    help="markdown file(s) to append our section to (or replace it in)")
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401  (Optuna's GPSampler needs it)
    except ImportError:
        if "optuna-gp" in args.methods:
            print("optuna-gp skipped: Optuna's GPSampler needs torch (pip install torch)", file=sys.stderr)
            args.methods = [m for m in args.methods if m != "optuna-gp"]
    budgets = tuple(sorted(set(args.budgets)))
    if len({initial_design_size(DIM, b) for b in budgets}) > 1:
        ap.error(f"budgets {budgets} give parasearch different initial designs: run them separately")
    jobs: list[Job] = [(m, p, budgets, s) for p in args.problems for m in args.methods for s in range(args.seeds)]
    cost = {"optuna-gp": 0, "parasearch-ehvi": 1, "parasearch-parego": 2}
    # Seed by seed, the slowest first: an interrupted run still has whole seeds of every method.
    jobs.sort(key=lambda j: (j[3], cost.get(j[0], 3), j))
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    done: dict[str, tuple[list[float], float]] = {}
    if args.cache is not None and args.cache.exists():
        for line in args.cache.read_text().splitlines():
            row = json.loads(line)
            done[row["job"]] = (row["regrets"], row["per_ask"])

    def record(job: Job, regrets: list[float], per: float) -> None:
        for b, r in zip(budgets, regrets):
            results.setdefault((job[0], job[1], b), []).append((r, per))

    for job in jobs:
        if json.dumps(job) in done:
            record(job, *done[json.dumps(job)])
    todo = [] if args.cached_only else [j for j in jobs if json.dumps(j) not in done]
    t0 = time.time()
    start = machine()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for i, (job, regrets, per) in enumerate(pool.imap_unordered(run_one, todo), 1):
            job = (job[0], job[1], tuple(job[2]), job[3])
            record(job, regrets, per)
            if args.cache is not None:
                with args.cache.open("a") as fh:
                    fh.write(json.dumps({"job": json.dumps(job), "regrets": regrets, "per_ask": per}) + "\n")
            print(f"  {i}/{len(todo)} runs, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    what = (f"Rendered {stamp} from the {len(done)} runs cached in {args.cache.name}, made by earlier invocations "
            f"(machine at rendering: {start})" if args.cached_only and args.cache is not None
            else f"Run {stamp} on {start}; wall time {time.time() - t0:.0f} s")
    body = (f"{what}.\n\n"
            f"{render(results, args.methods, args.problems, budgets, args.seeds)}\n")
    print(body)
    for path in args.write:
        write_section(path, "Multi-objective search (bench/multiobjective.py)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
