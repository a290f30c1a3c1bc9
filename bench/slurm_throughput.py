"""N trivial executions on the dev cluster's Slurm (4 nodes x 4 slots) through `expegit run --profile <slurm>`,
beside the plain way: one `sbatch --wrap` per execution, then waiting until all of them have left the queue.

expegit's figure is end to end (branches, one allocation, shipping, launches, batched polls, collection,
commits, giving the allocation back). The sbatch baseline submits N jobs over one SSH session as the
cluster user and polls `squeue` until they are gone. Needs `sudo bash tests/cluster/devcluster.sh up`.

    python bench/slurm_throughput.py [-n 1000] [--rounds 3] [--launcher agent|srun] [--write BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from _common import scratch, precompile, expegit, machine, make_campaign, now, timed, write_section

CLUSTER = Path(os.environ.get("ORCHESTRA_DEVCLUSTER_DIR", "/tmp/orchestra-devcluster"))
SSH_CONFIG = CLUSTER / "ssh" / "ssh_config"


def ours(n: int, launcher: str, workdir: Path) -> float:
    remote = f"/tmp/orchestra-bench/{uuid.uuid4().hex[:8]}"
    name = f"bench{uuid.uuid4().hex[:6]}"
    manifest = (f'name: slurm-throughput\ncommand: "true {{i}}"\nparameters:\n  i: {{type: int, low: 1, high: {n}}}\n'
                f"profiles:\n  {name}: {{kind: slurm, host: devcluster, ssh_config: {SSH_CONFIG}, slots_per_node: 4, "
                f"launcher: {launcher}, workdir: {remote}, squeue_interval: 1, idle_release: 1, "
                f"allocation: {{nodes: 4, walltime: '00:30:00'}}}}\n")
    campaign = make_campaign(workdir / f"campaign-{launcher}", manifest)
    elapsed, result = timed(expegit("run", "--grid", "-q", "--profile", name), campaign)
    if f"{n} finished" not in result.stderr:
        raise SystemExit(f"expegit did not finish {n} executions:\n{result.stderr[-1000:]}")
    return n / elapsed


def sbatch_baseline(n: int) -> float:
    tag = f"sbbench{uuid.uuid4().hex[:6]}"
    script = (f"for i in $(seq 1 {n}); do sbatch --parsable -J {tag} -o /dev/null -e /dev/null --wrap true >/dev/null "
              f"|| exit 1; done; while [ -n \"$(squeue -h -n {tag} -o %i | head -1)\" ]; do sleep 0.1; done")
    start = time.perf_counter()
    subprocess.run(["ssh", "-F", str(SSH_CONFIG), "devcluster", script], check=True)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--launcher", action="append", choices=["agent", "srun"],
                        help="repeatable; default: agent and srun")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    precompile()
    if not SSH_CONFIG.exists():
        raise SystemExit(f"no dev cluster at {CLUSTER}: run `sudo bash tests/cluster/devcluster.sh up`")
    launchers = args.launcher or ["agent", "srun"]
    header = machine()
    # Rounds alternate expegit (agent) and the baseline: the cluster's own start-up latency (0.3-0.9 s
    # from sbatch to a running job here) moves a single expegit run by a quarter, so the median is quoted.
    rounds: list[tuple[float, float]] = []
    others: list[tuple[str, float]] = []
    with scratch() as tmp:
        for index in range(args.rounds):
            rate = ours(args.n, "agent", Path(tmp) / f"r{index}") if "agent" in launchers else float("nan")
            base = sbatch_baseline(args.n)
            rounds.append((rate, base))
            print(f"round {index + 1}: expegit (agent) {rate:.1f}/s, sbatch --wrap {base:.1f}/s, "
                  f"ratio {rate / base:.2f}x", flush=True)
        for launcher in (l for l in launchers if l != "agent"):
            rate = ours(args.n, launcher, Path(tmp) / launcher)
            others.append((f"expegit run, slurm profile, launcher: {launcher} (one round)", rate))
            print(f"expegit ({launcher}): {rate:.1f}/s", flush=True)
    base_median = statistics.median(b for _, b in rounds)
    body = "\n".join([
        f"{now()}, {header}.",
        "",
        f"{args.n} trivial executions (`true <i>`) on the Slurm of tests/cluster/devcluster.sh (4 nodes x 4 CPUs).",
        "expegit is end to end (branches, one 4-node allocation, launches, batched polls, collect, commits);",
        "the baseline is one `sbatch --wrap true` per execution, waiting until all have left the queue.",
        f"{args.rounds} rounds alternating the two.",
        "",
        "| round | expegit run, slurm profile, launcher: agent (executions/s) | one `sbatch --wrap` per execution (jobs/s) | ratio |",
        "|---|---|---|---|",
        *[f"| {i + 1} | {o:.1f} | {b:.1f} | {o / b:.2f}x |" for i, (o, b) in enumerate(rounds)],
        f"| median | {statistics.median(o for o, _ in rounds):.1f} | {base_median:.1f} | "
        f"{statistics.median(o / b for o, b in rounds):.2f}x |",
        *([""] + [f"{what}: {rate:.1f} executions/s, {rate / base_median:.2f}x the median baseline."
                  for what, rate in others] if others else []),
        "",
        "Goal: at least 10x the sbatch-per-execution rate.",
    ])
    print(body)
    if args.write:
        write_section(args.write, "Slurm throughput (bench/slurm_throughput.py)", body)


if __name__ == "__main__":
    main()
