"""Search quality in 20 dimensions: parasearch bayes (trust region) against Optuna's GP, TPE and CMA-ES.

Why: a plain GP degrades past ~10 parameters, and spaces of 10 to 30 are common. Issue 14 asks bayes to
stay ahead of the anchors a user would otherwise reach for (Optuna's GPSampler, TPESampler and
CmaEsSampler, all with their defaults) on Ackley, Rosenbrock and Levy in 20-D, in boxes whose optimum is
not at the centre, at budget 200, sequential and 4 in flight. Every method is driven through its library
ask/tell the way bench/search_quality.py does (parasearch: ``sampler.ask(k, history, [])`` as the
study does; Optuna: ``study.ask()`` k times, then ``tell``), one process per run, single-threaded BLAS.

    python bench/search_highdim.py                       # full: 20 seeds (hours on 2 shared cores)
    python bench/search_highdim.py --seeds 5 --jobs 2    # what fits in an afternoon
    python bench/search_highdim.py --time-ask            # only: one ask at 20-D after 200 observations
    python bench/search_highdim.py --write BENCHMARKS.md

Reported per row: median [p25, p75] simple regret over seeds, mean ms per suggestion, and the one-sided
Mann-Whitney U p-value that parasearch-bayes's regrets are lower than those of the best anchor (the
anchor with the lowest median in that row).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import math
import multiprocessing
import re
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import Problem, _fmt, _suggest, run_parasearch  # noqa: E402  (also sets up imports)
from _common import machine, now, write_section  # noqa: E402

DIM = 20


def _vec(p: Mapping[str, Any]) -> np.ndarray:
    return np.array([p[f"x{i}"] for i in range(DIM)], dtype=float)


def ackley(p: Mapping[str, Any]) -> float:
    x = _vec(p)
    return float(-20.0 * math.exp(-0.2 * math.sqrt(np.mean(x * x))) - math.exp(np.mean(np.cos(2 * math.pi * x)))
                 + 20.0 + math.e)


def rosenbrock(p: Mapping[str, Any]) -> float:
    x = _vec(p)
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def levy(p: Mapping[str, Any]) -> float:
    w = 1.0 + (_vec(p) - 1.0) / 4.0
    return float(math.sin(math.pi * w[0]) ** 2
                 + np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2))
                 + (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2))


def _box(low: float, high: float) -> dict[str, dict[str, Any]]:
    return {f"x{i}": {"type": "float", "low": low, "high": high} for i in range(DIM)}


# Optimum at 1/3 (Ackley, x* = 0), 0.4 (Rosenbrock, x* = 1) and 0.73 (Levy, x* = 1) of each side.
PROBLEMS: dict[str, Problem] = {
    "ackley": Problem("Ackley (20-D, [-5, 10])", _box(-5.0, 10.0), ackley, 0.0),
    "rosenbrock": Problem("Rosenbrock (20-D, [-5, 10])", _box(-5.0, 10.0), rosenbrock, 0.0),
    "levy": Problem("Levy (20-D, [-10, 5])", _box(-10.0, 5.0), levy, 0.0),
}
ANCHORS = ("optuna-gp", "optuna-tpe", "optuna-cmaes")
METHODS = ("parasearch-bayes", *ANCHORS)


def _optuna_sampler(kind: str, seed: int) -> Any:
    import optuna

    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.CmaEsSampler(seed=seed)


def run_optuna(problem: Problem, kind: str, budget: int, batch: int, seed: int) -> tuple[float, float]:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")  # experimental-feature warnings, one per trial
    study = optuna.create_study(direction="minimize", sampler=_optuna_sampler(kind, seed))
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
    method, key, budget, batch, seed = job
    problem = PROBLEMS[key]
    if method == "parasearch-bayes":
        best, per = run_parasearch(problem, "bayes", budget, batch, seed)
    else:
        best, per = run_optuna(problem, method.split("-", 1)[1], budget, batch, seed)
    return job, max(best - problem.minimum, 0.0), per


def time_ask(observations: int = 200, repeats: int = 5) -> list[float]:
    """Seconds for one ask of one point at 20-D after ``observations`` finished trials (Ackley values)."""
    from parasearch import Space, Trial, make_sampler

    problem = PROBLEMS["ackley"]
    space = Space.from_parameters(problem.parameters)
    out = []
    for r in range(repeats):
        rng = np.random.default_rng(r)
        history = []
        for _ in range(observations):
            point = space.from_unit(rng.random(space.dim))
            history.append(Trial(point, problem.objective(point)))
        sampler = make_sampler("bayes", space, seed=r, budget=observations + 50)
        t0 = time.perf_counter()
        sampler.ask(1, history, [])
        out.append(time.perf_counter() - t0)
    return out


def render(results: Mapping[tuple[str, str, int, int], list[tuple[float, float]]], methods: Sequence[str],
           problems: Sequence[str], budget: int, batches: Sequence[int], seeds: int) -> str:
    from scipy.stats import mannwhitneyu

    lines = [
        f"Simple regret (best found − known minimum) at budget {budget}: median [p25, p75] over "
        f"{seeds or 'the listed'} seeds; "
        "time = mean ms per suggestion. Lower is better; **bold** = lowest median in the row. "
        "p = one-sided Mann-Whitney U that parasearch-bayes's regrets are lower than the best anchor's "
        "(the anchor with the lowest median in the row).",
        "",
        "| function | mode | " + " | ".join(methods) + " | best anchor | p | bayes ahead |",
        "|---|---|" + "---|" * len(methods) + "---|---:|:---:|",
    ]
    wins = total = 0
    for pk in problems:
        for batch in batches:
            mode = "sequential" if batch == 1 else f"{batch} in flight"
            if any(not results[(m, pk, budget, batch)] for m in methods):
                lines.append(f"| {PROBLEMS[pk].name} | {mode} | " + " | ".join("not finished" for _ in methods)
                             + " | | | |")
                continue
            regs = {m: np.array([r for r, _ in results[(m, pk, budget, batch)]]) for m in methods}
            meds = {m: float(np.median(v)) for m, v in regs.items()}
            cells = []
            for m in methods:
                q1, q3 = np.percentile(regs[m], [25, 75])
                ms = 1000 * float(np.mean([t for _, t in results[(m, pk, budget, batch)]]))
                med = _fmt(meds[m])
                cells.append(f"{'**' + med + '**' if meds[m] == min(meds.values()) else med} "
                             f"[{_fmt(q1)}, {_fmt(q3)}] · {ms:.0f} ms")
            anchors = [m for m in methods if m in ANCHORS]
            verdict, p_txt, anchor = "", "", ""
            if "parasearch-bayes" in methods and anchors:
                anchor = min(anchors, key=lambda m: meds[m])
                p = float(mannwhitneyu(regs["parasearch-bayes"], regs[anchor], alternative="less").pvalue)
                p_txt = f"{p:.2g}"
                win = meds["parasearch-bayes"] < meds[anchor]
                total += 1
                wins += win
                verdict = "✓" if win else "✗"
            lines.append(f"| {PROBLEMS[pk].name} | {mode} | " + " | ".join(cells) + f" | {anchor} | {p_txt} | {verdict} |")
    if total:
        lines += ["", f"parasearch-bayes has a lower median regret than the best anchor in {wins} of {total} rows."]
    return "\n".join(lines)


_LINE = re.compile(r"^\s*\d+/\d+ \('([\w-]+)', '(\w+)', (\d+), (\d+), (\d+)\) regret (\S+) \((\d+) ms/ask\)")


def merge(args: argparse.Namespace) -> int:
    """The table from per-run log lines, on the seeds that every method finished in every row."""
    by_seed: dict[tuple[str, str, int, int], dict[int, tuple[float, float]]] = {}
    for path in args.merge:
        for line in path.read_text().splitlines():
            m = _LINE.match(line)
            if m:
                key = (m[1], m[2], int(m[3]), int(m[4]))
                by_seed.setdefault(key, {})[int(m[5])] = (float(m[6]), float(m[7]) / 1000)
    # Per row, the seeds every method finished in it, so that the columns compare the same seeds.
    results: dict[tuple[str, str, int, int], list[tuple[float, float]]] = {}
    notes = []
    for pk in args.problems:
        for k in args.modes:
            keys = [(m, pk, args.budget, k) for m in args.methods]
            common = sorted(set.intersection(*(set(by_seed.get(key, {})) for key in keys)))
            notes.append(f"{PROBLEMS[pk].name}, {'sequential' if k == 1 else f'{k} in flight'}: "
                         f"seeds {', '.join(map(str, common)) or 'none'}")
            for key in keys:
                results[key] = [by_seed[key][s] for s in common]
    print("Seeds finished by every method, per row: " + "; ".join(notes) + ".\n")
    print(render(results, args.methods, args.problems, args.budget, args.modes, 0))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--modes", nargs="+", type=int, default=[1, 4], help="trials in flight (1 = sequential)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="seconds: stop after this long and report the seeds every method finished")
    ap.add_argument("--merge", type=Path, nargs="+", default=[], metavar="LOG",
                    help="render the table from the per-run lines of earlier runs' stderr (runs cut short)")
    ap.add_argument("--time-ask", action="store_true", help="only time one ask at 20-D with 200 observations")
    ap.add_argument("--write", type=Path, nargs="+", default=[], metavar="PATH")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args)
    header = f"Run {now()} on {machine()}."
    asks = time_ask()
    ask_line = (f"One ask (1 point) at 20-D after 200 observations: median {statistics.median(asks):.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in asks)} s).")
    print(ask_line, flush=True)
    if args.time_ask:
        return 0
    jobs = [(m, pk, args.budget, k, s) for pk in args.problems for k in args.modes
            for m in args.methods for s in range(args.seeds)]
    # Seed by seed (so a --deadline leaves whole seeds), slow methods first within one.
    slow = {"parasearch-bayes": 0, "optuna-gp": 1}
    jobs.sort(key=lambda j: (j[4], slow.get(j[0], 2), j[3], j[1], j[0]))
    by_seed: dict[tuple[str, str, int, int], dict[int, tuple[float, float]]] = {}
    t0 = time.time()
    pool = multiprocessing.get_context("fork").Pool(args.jobs)
    try:
        for i, (job, regret, per) in enumerate(pool.imap_unordered(run_one, jobs), 1):
            by_seed.setdefault(job[:4], {})[job[4]] = (regret, per)
            print(f"  {i}/{len(jobs)} {job} regret {regret:.4g} ({per * 1000:.0f} ms/ask), {time.time() - t0:.0f} s",
                  file=sys.stderr, flush=True)
            if args.deadline and time.time() - t0 > args.deadline:
                print("  deadline reached: reporting the seeds finished by every method", file=sys.stderr)
                break
    finally:
        pool.terminate()
    # Only seeds every method finished in every row, so all columns compare the same seeds.
    keys = [(m, pk, args.budget, k) for pk in args.problems for k in args.modes for m in args.methods]
    common = sorted(set.intersection(*(set(by_seed.get(key, {})) for key in keys)))
    if not common:
        print("no seed finished by every method", file=sys.stderr)
        return 1
    results = {key: [by_seed[key][s] for s in common] for key in keys}
    table = render(results, args.methods, args.problems, args.budget, args.modes, len(common))
    body = (f"{header} Load average at the end {os.getloadavg()[0]:.1f}; wall time {time.time() - t0:.0f} s; "
            f"{len(common)} seeds ({', '.join(map(str, common))}) of {args.seeds} asked, {args.jobs} processes.\n\n"
            f"{ask_line}\n\n{table}\n")
    print(body)
    for path in args.write:
        write_section(path, "Search quality in 20 dimensions (bench/search_highdim.py)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
