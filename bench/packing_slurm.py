"""Packing by resources on real Slurm (the dev cluster's fake GPUs as GRES), beside the plain way.

A mixed campaign (executions needing 1 or 2 GPUs, random durations) runs in one allocation of 2 nodes x
gpu:2 in two ways:
- orchestra: `expegit run --grid` with `resources: {gpus: "{g}"}`: one allocation asked for by what the
  executions need, executions packed onto what each node was given (runaway/placement.py), bound by the
  node agents;
- srun: the same executions as one `srun --gres=gpu:G -N1 -n1` step each, all started at once inside
  the same kind of allocation (Slurm's step scheduler makes each wait for its GPUs).
It reports makespan (first start to last end of the executions) and utilisation (busy device-time over
allocated device-time = devices x makespan), and the lower bound on the makespan of bench/packing.py.
Why only 1 and 2 GPUs: the dev cluster's nodes have 2 GPUs each, and Slurm is the referee here (a
4-GPU execution fits no node); bench/packing.py measures 1/2/4 on simulated 4-GPU nodes.

    python bench/packing_slurm.py [--per-width 12] [--seed 1] [--write BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
import uuid
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import expegit, machine, make_campaign, now, scratch  # noqa: E402
from packing import lower_bound, nodes, simulate  # noqa: E402

from orchestra.resources import Request  # noqa: E402

CLUSTER = Path(os.environ.get("ORCHESTRA_DEVCLUSTER_DIR", "/tmp/orchestra-devcluster"))
SSH_CONFIG = CLUSTER / "ssh" / "ssh_config"
NODES, GPUS_PER_NODE, WIDTHS = 2, 2, (1, 2)


def durations(per_width: int, seed: int) -> dict[tuple[int, int], float]:
    rng = random.Random(seed)
    return {(g, k): round(rng.uniform(1.0, 6.0), 2) for g in WIDTHS for k in range(1, per_width + 1)}


def ssh(command: str, timeout: float = 600) -> str:
    done = subprocess.run(["ssh", "-F", str(SSH_CONFIG), "devcluster", command], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`{command[:80]}` failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def ours(table: dict[tuple[int, int], float], workdir: Path) -> tuple[float, float]:
    name = f"pack{uuid.uuid4().hex[:6]}"
    remote = f"/tmp/orchestra-bench/{name}"
    per_width = max(k for _g, k in table)
    manifest = f"""\
name: packing-slurm
command: python3 nap.py {{g}} {{k}}
parameters:
  g: {{choices: [{', '.join(map(str, WIDTHS))}]}}
  k: {{type: int, low: 1, high: {per_width}}}
resources: {{gpus: "{{g}}"}}
profiles:
  {name}: {{kind: slurm, host: devcluster, ssh_config: {SSH_CONFIG}, launcher: agent, workdir: {remote},
          squeue_interval: 1, idle_release: 1, allocation: {{nodes: {NODES}, walltime: '00:30:00'}}}}
"""
    nap = ("import json, sys, time\n"
           f"table = {json.dumps({f'{g}-{k}': d for (g, k), d in table.items()})}\n"
           "time.sleep(table[sys.argv[1] + '-' + sys.argv[2]])\n")
    campaign = make_campaign(workdir / "orchestra", manifest, {"nap.py": nap})
    result = subprocess.run(expegit("run", "--grid", "-q", "--profile", name), cwd=campaign, capture_output=True,
                            text=True, timeout=1200, check=False)
    if result.returncode != 0:
        raise SystemExit(f"expegit run failed:\n{result.stderr[-1500:]}")
    records = json.loads(subprocess.run(expegit("list", "--json"), cwd=campaign, capture_output=True, text=True,
                                        check=True).stdout)
    from datetime import datetime
    spans = [(datetime.fromisoformat(r["started"]).timestamp(), datetime.fromisoformat(r["ended"]).timestamp(),
              int(r["parameters"]["g"])) for r in records]
    makespan = max(e for _s, e, _g in spans) - min(s for s, _e, _g in spans)
    busy = sum((e - s) * g for s, e, g in spans)
    return makespan, busy


def srun_steps(table: dict[tuple[int, int], float]) -> tuple[float, float]:
    """One allocation like Orchestra's (2 nodes, gpu:2 and 2 cores each), one srun step per execution."""
    # salloc --no-shell: no batch step, which would hold every GPU of its node against the steps.
    held = ssh("salloc --no-shell -N{n} --ntasks-per-node=1 --cpus-per-task=2 --gres=gpu:{g} -t 30 "
               "-J orchestra-bench-steps 2>&1".format(n=NODES, g=GPUS_PER_NODE))
    found = re.search(r"Granted job allocation (\d+)", held)
    if found is None:
        raise SystemExit(f"salloc gave no allocation: {held[-300:]}")
    job = found.group(1)
    try:
        for _ in range(600):
            if ssh(f"squeue -h -j {job} -o %T").strip() == "RUNNING":
                break
            time.sleep(0.5)
        steps = " ".join(
            f"(srun --jobid={job} -N1 -n1 -c1 --gres=gpu:{g} --quiet sh -c "
            f"{shlex.quote(f'echo $(date +%s.%N) {g}; sleep {d}; echo $(date +%s.%N) end')} > /tmp/{job}.{g}.{k} "
            f"2>/dev/null &);" for (g, k), d in table.items())
        # Done when every step wrote its end line (a pgrep for the sruns would match this very shell).
        ssh(f"{steps} i=0; while [ \"$(cat /tmp/{job}.* 2>/dev/null | grep -c end)\" -lt {len(table)} ] && "
            f"[ $i -lt 6000 ]; do sleep 0.1; i=$((i+1)); done")
        out = ssh(f"cat /tmp/{job}.*; rm -f /tmp/{job}.*")
    finally:
        ssh(f"scancel {job}")
    lines = [line.split() for line in out.splitlines() if line.strip()]
    spans = [(float(a[0]), float(b[0]), int(a[1])) for a, b in zip(lines[::2], lines[1::2])]
    if len(spans) != len(table):
        raise SystemExit(f"{len(spans)} of {len(table)} steps ran: {out[-500:]}")
    makespan = max(e for _s, e, _g in spans) - min(s for s, _e, _g in spans)
    return makespan, sum((e - s) * g for s, e, g in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-width", type=int, default=12, help="executions of each width (1 and 2 GPUs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", type=Path, help="append the section to this BENCHMARKS.md")
    args = parser.parse_args()
    table = durations(args.per_width, args.seed)
    work = [(Request(cpus=1, gpus=Fraction(g)), d) for (g, _k), d in table.items()]
    capacities = nodes(NODES, GPUS_PER_NODE, 2)
    bound = lower_bound(work, capacities)
    simulated, _ = simulate(work, capacities)
    devices = NODES * GPUS_PER_NODE
    gpu_work = sum(float(r.gpus) * d for r, d in work)
    with scratch() as workdir:
        rows = [("orchestra", *ours(table, Path(workdir))), ("srun --gres", *srun_steps(table))]
    lines = [f"{len(work)} executions ({args.per_width} x 1 GPU, {args.per_width} x 2 GPUs, 1-6 s, seed {args.seed}) "
             f"on {NODES} nodes x gpu:{GPUS_PER_NODE}; GPU-work {gpu_work:.1f} s",
             f"  lower bound on the makespan {bound:6.2f} s; the packing rule in simulated time {simulated:6.2f} s"]
    for label, makespan, busy in rows:
        lines.append(f"  {label:12s} makespan {makespan:6.2f} s  utilisation {busy / (devices * makespan):6.1%}  "
                     f"bound/makespan {bound / makespan:6.1%}")
    text = "\n".join(lines)
    print(text)
    if args.write:
        section = (f"\n## Packing by resources on real Slurm (bench/packing_slurm.py), {now()}\n\n"
                   f"Machine: {machine()} (shared with other developers, loaded while this ran). Busy device-time "
                   f"is measured by each execution's own start and end (records, or the step's clock).\n\n"
                   f"```\n{text}\n```\n")
        with args.write.open("a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
