"""N trivial executions through `expegit run` on the local profile, beside GNU parallel, in one run.

Both run the same N commands (`true <i>`) with the same concurrency on the same machine, end to end: for
expegit that includes creating N execution branches and committing N results; for GNU parallel it is only
running them. Rates are executions per second; the ratio is what to quote.

    python bench/local_throughput.py [-n 1000] [-j 4] [--rounds 3] [--write BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import expegit, machine, make_campaign, now, precompile, timed, write_section


def expegit_rate(n: int, jobs: int, workdir: Path, name: str) -> float:
    manifest = f'name: throughput\ncommand: "true {{i}}"\nparameters:\n  i: {{type: int, low: 1, high: {n}}}\n'
    campaign = make_campaign(workdir / name, manifest)
    orchestra, result = timed(expegit("run", "--grid", "-q", "--slots", str(jobs)), campaign)
    if f"{n} finished" not in result.stderr:
        raise SystemExit(f"expegit did not finish {n} executions:\n{result.stderr[-1000:]}")
    branches = subprocess.run(["git", "for-each-ref", "--count", str(n + 1), "refs/heads/executions"],
                              cwd=campaign, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(branches) == n, f"{len(branches)} branches for {n} executions"
    return n / orchestra


def parallel_rate(n: int, jobs: int, workdir: Path) -> float:
    inputs = "\n".join(str(i) for i in range(1, n + 1)) + "\n"
    elapsed, _ = timed(["parallel", "-j", str(jobs), "true", "{}"], workdir, input=inputs)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("-j", "--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    precompile()
    if shutil.which("parallel") is None:
        raise SystemExit("GNU parallel is not installed (Debian package `parallel`)")
    header = machine()
    rates = []
    # The same campaign on a RAM filesystem too: every execution creates and deletes a run directory and
    # writes packs, so the disk's state moves expegit's figure while GNU parallel touches no disk.
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp, \
            tempfile.TemporaryDirectory(prefix="orchestra-bench-", dir=shm) as ram:
        for index in range(args.rounds):
            ours = expegit_rate(args.n, args.jobs, Path(tmp), f"campaign{index}")
            in_ram = expegit_rate(args.n, args.jobs, Path(ram), f"campaign{index}") if shm else float("nan")
            theirs = parallel_rate(args.n, args.jobs, Path(tmp))
            rates.append((ours, theirs, in_ram))
            print(f"round {index + 1}: expegit {ours:.0f}/s (tmpfs {in_ram:.0f}/s), GNU parallel {theirs:.0f}/s, "
                  f"ratio {ours / theirs:.2f}x (tmpfs {in_ram / theirs:.2f}x)")
    ratios = [o / t for o, t, _ in rates]
    ram_ratios = [r / t for _, t, r in rates]
    body = "\n".join([
        f"{now()}, {header}.",
        "",
        f"{args.n} trivial executions (`true <i>`), {args.jobs} at once, {args.rounds} rounds alternating the two tools.",
        "expegit's figure is end to end: process start-up, creating the execution branches, running, committing",
        "every result to its branch. GNU parallel only runs the commands.",
        "",
        "| round | expegit run (executions/s) | GNU parallel -j (jobs/s) | ratio | expegit, campaign on tmpfs | ratio |",
        "|---|---|---|---|---|---|",
        *[f"| {i + 1} | {o:.0f} | {t:.0f} | {o / t:.2f}x | {r:.0f} | {r / t:.2f}x |" for i, (o, t, r) in enumerate(rates)],
        f"| median | {statistics.median(o for o, _, _ in rates):.0f} | {statistics.median(t for _, t, _ in rates):.0f} | "
        f"{statistics.median(ratios):.2f}x | {statistics.median(r for _, _, r in rates):.0f} | "
        f"{statistics.median(ram_ratios):.2f}x |",
        "",
        "Goal: at least 1.0x GNU parallel's rate at N=1000 (the disk column is the one that counts: campaigns",
        "live on disk). The tmpfs column shows how much of the gap is the disk.",
    ])
    print(body)
    if args.write:
        write_section(args.write, "Local throughput (bench/local_throughput.py)", body)


if __name__ == "__main__":
    main()
