"""Search at scale: how long one `bayes` ask takes with 200 to 2,000 finished observations, old vs new.

Why: a campaign of thousands of executions driven by parasearch asks the sampler again every time a slot
frees up; an exact GP on every trial makes each ask cost seconds at 2,000 (goal: under 1 s). "exact" is
the model conditioned on every trial (``MAX_MODEL_POINTS`` lifted), "subset" today's bounded subset-of-data
model (parasearch.bayes.model_subset). The quality rows continue a search from the same history for a
few sequential asks with both models and report the regret reached: the subset must not search worse.
(bench/search_quality.py's budgets stay under ``MAX_MODEL_POINTS``, so its rows run the exact model.)

    python bench/search_scale.py                       # ask times at 200/500/1000/2000, quality at 500/1000
    python bench/search_scale.py --sizes 2000 --quality-sizes
    python bench/search_scale.py --write BENCHMARKS.md
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import PROBLEMS, Problem  # noqa: E402  (same test functions, same bootstrap of core/)

from _common import machine, now, write_section  # noqa: E402
from parasearch import Space, Trial, bayes, make_sampler  # noqa: E402

SECTION = "Search at scale (bench/search_scale.py)"


@contextmanager
def model(kind: str) -> Iterator[None]:
    """``exact``: the GP conditioned on every trial (the code before the subset); ``subset``: as shipped."""
    saved = bayes.MAX_MODEL_POINTS, bayes.MAX_FAILED_FANTASIES
    if kind == "exact":
        bayes.MAX_MODEL_POINTS = bayes.MAX_FAILED_FANTASIES = 10 ** 9
    try:
        yield
    finally:
        bayes.MAX_MODEL_POINTS, bayes.MAX_FAILED_FANTASIES = saved


def history(problem: Problem, n: int, seed: int) -> tuple[Space, list[Trial]]:
    """n trials at random points: what a campaign holds after a wide random or grid stage."""
    space = Space.from_parameters(problem.parameters)
    rng = np.random.default_rng(seed)
    points = [space.from_unit(u) for u in rng.random((n, space.dim))]
    return space, [Trial(p, problem.objective(p)) for p in points]


def ask_seconds(problem: Problem, n: int, kind: str, rounds: int) -> list[float]:
    out = []
    for seed in range(rounds):
        space, trials = history(problem, n, seed)
        sampler = make_sampler("bayes", space, seed=seed, budget=n + 100, goal="minimize")
        with model(kind):
            start = time.perf_counter()
            sampler.ask(1, trials, [])
            out.append(time.perf_counter() - start)
    return out


def continued_regret(problem: Problem, n: int, kind: str, steps: int, seed: int) -> float:
    """Regret after ``steps`` sequential asks continuing from n random trials."""
    space, trials = history(problem, n, seed)
    sampler = make_sampler("bayes", space, seed=seed, budget=n + steps, goal="minimize")
    with model(kind):
        for _ in range(steps):
            trials.extend(Trial(p, problem.objective(p)) for p in sampler.ask(1, trials, []))
    return min(float(t.value) for t in trials if t.value is not None) - problem.minimum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", choices=list(PROBLEMS), default="hartmann6")
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000, 2000])
    ap.add_argument("--rounds", type=int, default=3, help="asks per size and model (different histories)")
    ap.add_argument("--quality-sizes", type=int, nargs="*", default=[500, 1000])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    problem = PROBLEMS[args.problem]
    header = machine()
    rows = ["| observations | exact GP: median (min) s | subset GP: median (min) s | speed-up |", "|---|---|---|---|"]
    for n in args.sizes:
        old = ask_seconds(problem, n, "exact", args.rounds)
        new = ask_seconds(problem, n, "subset", args.rounds)
        rows.append(f"| {n} | {statistics.median(old):.2f} ({min(old):.2f}) | {statistics.median(new):.2f} "
                    f"({min(new):.2f}) | {statistics.median(old) / statistics.median(new):.1f}x |")
        print(rows[-1], flush=True)
    quality = []
    if args.quality_sizes:
        quality = [f"| observations | exact GP: median regret after {args.steps} asks | subset GP | seeds |",
                   "|---|---|---|---|"]
        for n in args.quality_sizes:
            old = [continued_regret(problem, n, "exact", args.steps, s) for s in range(args.seeds)]
            new = [continued_regret(problem, n, "subset", args.steps, s) for s in range(args.seeds)]
            quality.append(f"| {n} | {statistics.median(old):.3g} ({', '.join(f'{v:.3g}' for v in old)}) | "
                           f"{statistics.median(new):.3g} ({', '.join(f'{v:.3g}' for v in new)}) | {args.seeds} |")
            print(quality[-1], flush=True)
    body = "\n".join([
        f"{now()} · {header}", "",
        f"One `bayes` ask (q=1) on {problem.name} with n finished observations at random points, "
        f"{args.rounds} histories per size; single-threaded BLAS. Goal: under 1 s at 2,000. The subset model "
        f"conditions on at most {bayes.MAX_MODEL_POINTS} trials (best third + max-min space-filling rest).", "",
        *rows, "", *(["Search quality at scale: regret (best found minus the minimum) after continuing the "
                      "search from the same history; lower is better.", "", *quality, ""] if quality else []),
    ])
    print(body)
    if args.write:
        write_section(args.write, SECTION, body)


if __name__ == "__main__":
    main()
