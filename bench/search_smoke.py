"""One full `parasearch run` of 30 executions through the CLI on the local profile: time and best found.

A smoke benchmark of the whole search path: process start-up, asking the bayes sampler as slots free up,
creating each execution's branch, running it, committing its result and telling it back to the study.
The objective is a cheap 2-d quadratic (minimum 0 at x=0.7, y=1.3), so the time is Orchestra's.

    python bench/search_smoke.py [-n 30] [--algorithm bayes] [--parallel 4] [--write BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import GIT_ENV, machine, make_campaign, now, timed, write_section

OBJECTIVE = """\
import json, sys
x, y = float(sys.argv[1]), float(sys.argv[2])
with open("m.json", "w") as f:
    json.dump({"loss": (x - 0.7) ** 2 + (y - 1.3) ** 2}, f)
"""


def manifest(n: int, algorithm: str, parallel: int) -> str:
    return f"""\
name: search-smoke
command: python3 f.py {{x}} {{y}}
parameters:
  x: {{type: float, low: -2, high: 2}}
  y: {{type: float, low: 0, high: 3}}
outputs: [m.json]
objective: {{metric: loss, from: m.json, goal: minimize}}
search: {{algorithm: {algorithm}, budget: {n}, parallel: {parallel}, seed: 1}}
profile: local
profiles:
  local: {{kind: local, slots: {parallel}}}
"""


def parasearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "parasearch", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="the search budget (executions)")
    parser.add_argument("--algorithm", default="bayes")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    header = machine()
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        campaign = make_campaign(Path(tmp) / "campaign", manifest(args.n, args.algorithm, args.parallel),
                                 {"f.py": OBJECTIVE})
        elapsed, result = timed(parasearch("run", "-q"), campaign)
        if f"{args.n}/{args.n} of the budget used" not in result.stderr:
            raise SystemExit(f"parasearch did not run {args.n} executions:\n{result.stderr[-2000:]}")
        best = json.loads(subprocess.run(parasearch("best", "--json"), cwd=campaign, capture_output=True,
                                         text=True, check=True, env={**os.environ, **GIT_ENV}).stdout)[0]
    params = " ".join(f"{k}={v:.4g}" for k, v in best["parameters"].items())
    body = "\n".join([
        f"{now()}, {header}.",
        "",
        f"One `parasearch run -q` of {args.n} executions ({args.algorithm}, {args.parallel} in flight) on the local "
        "profile, end to end through the CLI: start-up, asks, branches, runs, result commits.",
        "The objective is `(x - 0.7)^2 + (y - 1.3)^2` over x in [-2, 2], y in [0, 3] (minimum 0).",
        "",
        "| executions | wall time (s) | executions/s | best loss | at |",
        "|---|---|---|---|---|",
        f"| {args.n} | {elapsed:.1f} | {args.n / elapsed:.1f} | {best['objective']:.3g} | {params} |",
    ])
    print(body)
    if args.write:
        write_section(args.write, "Search smoke (bench/search_smoke.py)", body)


if __name__ == "__main__":
    main()
