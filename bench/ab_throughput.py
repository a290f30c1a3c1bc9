"""Two commits side by side: the same N trivial executions run by an old and a new checkout, rounds
alternating, medians and ratios quoted (the practice "when you change a hot path, run the old commit beside
the new one").

Each side is a python whose `-m expegit` is that checkout (a `git worktree` installed in its own venv),
so nothing of one leaks into the other. The campaign, slots and profile are the same for both: local by
default, the dev cluster's SSH host with ``--ssh``. Wall-clock rate and the controller's CPU per
execution are both given: on a shared machine the second moves far less than the first.

    python bench/ab_throughput.py --old /venvs/old/bin/python --new /venvs/new/bin/python \\
        [-n 1000] [-j 4] [--rounds 5] [--ssh] [--label-old X] [--label-new Y]
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import environment_cost
from _common import machine, now, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="python of the old checkout's venv")
    parser.add_argument("--new", required=True, help="python of the new checkout's venv")
    parser.add_argument("--label-old", default="")
    parser.add_argument("--label-new", default="")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("-j", "--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ssh", action="store_true", help="on the dev cluster's SSH host instead of locally")
    args = parser.parse_args()
    environment_cost.SSH = args.ssh
    labels = {"old": args.label_old or environment_cost.commit_of(args.old, ""),
              "new": args.label_new or environment_cost.commit_of(args.new, "")}
    rates: dict[str, list[float]] = {"old": [], "new": []}
    cpus: dict[str, list[float]] = {"old": [], "new": []}
    loads: list[float] = []
    with scratch() as work:
        cache = Path(work) / "cache"  # one node cache for both: the steady state, as in environment_cost
        for k in range(args.rounds):
            sides = [("old", args.old), ("new", args.new)]
            if k % 2:
                sides.reverse()
            for name, python in sides:
                loads.append(os.getloadavg()[0])
                got, cpu = environment_cost.rate(python, args.n, args.jobs, Path(work) / f"{name}{k}",
                                                 {"XDG_CACHE_HOME": str(cache)})
                rates[name].append(got)
                cpus[name].append(cpu)
                print(f"round {k + 1} {name}: {got:.1f}/s, {cpu:.2f} ms CPU per execution", flush=True)
    med = {name: statistics.median(values) for name, values in rates.items()}
    cmed = {name: statistics.median(values) for name, values in cpus.items()}
    lines = [f"{now()} on {machine()}; load average {min(loads):.1f}-{max(loads):.1f} during the rounds; "
             f"`python bench/ab_throughput.py -n {args.n} -j {args.jobs} --rounds {args.rounds}"
             f"{' --ssh' if args.ssh else ''}`, rounds alternating; medians.", "",
             "| side | commit | executions/s (median) | rounds | rate ratio | CPU ms/execution (median) | CPU ratio |",
             "|---|---|---|---|---|---|---|"]
    for name in ("old", "new"):
        lines.append(f"| {name} | {labels[name]} | {med[name]:.1f} | {', '.join(f'{r:.0f}' for r in rates[name])} | "
                     f"{med[name] / med['old']:.3f} | {cmed[name]:.2f} | {cmed[name] / cmed['old']:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
