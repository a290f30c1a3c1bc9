"""N trivial executions on the dev cluster's loopback SSH host through `expegit run --profile <ssh>`, beside
GNU parallel `-S` over an OpenSSH ControlMaster connection to the same host, same concurrency, same run.

expegit's figure is end to end: creating N execution branches, shipping the code, launching every execution
detached, watching, collecting stdout/stderr, committing every result, removing the run directories.
GNU parallel only runs `true <i>` over its multiplexed connection. Needs the dev cluster up
(`sudo bash tests/cluster/devcluster.sh up`) and GNU parallel.

    python bench/ssh_throughput.py [-n 1000] [-j 16] [--rounds 1] [--write BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import uuid
from pathlib import Path

from _common import scratch, precompile, expegit, machine, make_campaign, now, timed, write_section

CLUSTER = Path(os.environ.get("ORCHESTRA_DEVCLUSTER_DIR", "/tmp/orchestra-devcluster"))
SSH_CONFIG = CLUSTER / "ssh" / "ssh_config"


def run_once(n: int, jobs: int, workdir: Path, index: int, profile_extra: str) -> tuple[float, float]:
    remote = f"/tmp/orchestra-bench/{uuid.uuid4().hex[:8]}"
    manifest = (f'name: ssh-throughput\ncommand: "true {{i}}"\nparameters:\n  i: {{type: int, low: 1, high: {n}}}\n'
                f"profiles:\n  dev: {{kind: ssh, host: devcluster, slots: {jobs}, ssh_config: {SSH_CONFIG}, "
                f"workdir: {remote}{profile_extra}}}\n")
    campaign = make_campaign(workdir / f"campaign{index}", manifest)
    ours, result = timed(expegit("run", "--grid", "-q", "--profile", "dev"), campaign)
    if f"{n} finished" not in result.stderr:
        raise SystemExit(f"expegit did not finish {n} executions:\n{result.stderr[-1000:]}")
    branches = subprocess.run(["git", "for-each-ref", "refs/heads/executions"], cwd=campaign,
                              capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(branches) == n, f"{len(branches)} branches for {n} executions"
    control = workdir / f"cm{index}"
    ssh = f"ssh -F {SSH_CONFIG} -o ControlMaster=auto -o ControlPath={control} -o ControlPersist=60"
    subprocess.run(ssh.split() + ["devcluster", "true"], check=True)  # the master is up before timing
    inputs = "\n".join(str(i) for i in range(1, n + 1)) + "\n"
    theirs, _ = timed(["parallel", "-j", str(jobs), "-S", f"{jobs}/{ssh} devcluster", "true", "{}"], workdir,
                      input=inputs)
    subprocess.run(ssh.split() + ["-O", "exit", "devcluster"], capture_output=True)
    return n / ours, n / theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("-j", "--jobs", type=int, default=16, help="slots (expegit) and -j (GNU parallel)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile-extra", default="", help="extra profile keys, e.g. ', connections: 4'")
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    precompile()
    if shutil.which("parallel") is None:
        raise SystemExit("GNU parallel is not installed (Debian package `parallel`)")
    if not SSH_CONFIG.exists():
        raise SystemExit(f"no dev cluster at {CLUSTER}: run `sudo bash tests/cluster/devcluster.sh up`")
    header = machine()
    rates = []
    with scratch() as tmp:
        for index in range(args.rounds):
            ours, theirs = run_once(args.n, args.jobs, Path(tmp), index, args.profile_extra)
            rates.append((ours, theirs))
            print(f"round {index + 1}: expegit {ours:.1f}/s, GNU parallel -S {theirs:.1f}/s, "
                  f"ratio {ours / theirs:.2f}x", flush=True)
    ratios = [o / t for o, t in rates]
    body = "\n".join([
        f"{now()}, {header}.",
        "",
        f"{args.n} trivial executions (`true <i>`) on the loopback SSH host of tests/cluster/devcluster.sh, "
        f"{args.jobs} at once, {args.rounds} round(s).",
        "expegit is end to end (branches, ship, detached launch, batched poll, collect, commit, cleanup);",
        "GNU parallel `-S` runs the commands over one OpenSSH ControlMaster connection.",
        "",
        "| round | expegit run --profile ssh (executions/s) | GNU parallel -S (jobs/s) | ratio |",
        "|---|---|---|---|",
        *[f"| {i + 1} | {o:.1f} | {t:.1f} | {o / t:.2f}x |" for i, (o, t) in enumerate(rates)],
        f"| median | {statistics.median(o for o, _ in rates):.1f} | {statistics.median(t for _, t in rates):.1f} | "
        f"{statistics.median(ratios):.2f}x |",
        "",
        "Goal: at least 4x GNU parallel's rate.",
    ])
    print(body)
    if args.write:
        write_section(args.write, "SSH throughput (bench/ssh_throughput.py)", body)


if __name__ == "__main__":
    main()
