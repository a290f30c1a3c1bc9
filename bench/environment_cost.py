"""What the environment capture costs `expegit run`: this tree against a checkout of the commit before it.

Both run the same N trivial executions (`true <i>`, the local throughput benchmark's campaign) with the same
slots, rounds alternating (the machine is shared: alternating spreads its load over both), medians quoted.
This tree runs twice per round: `cached` (the node already captured at this code commit: the steady state,
every run after the first at a commit) and `cold` (an empty node cache: the run pays one capture).

    python bench/environment_cost.py --base-python /tmp/base-venv/bin/python [--base-path DIR]
        [-n 500] [-j 4] [--rounds 5] [--write BENCHMARKS.md]

``--base-path``: a PYTHONPATH entry for the base checkout (where its `orchestra` package must shadow an
installed one). ``--base-off`` instead of a base commit: this tree with `capture_environment: false`, which
isolates the capture from whatever else changed since the commit before it.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import GIT_ENV, machine, make_campaign, now, scratch, write_section

SSH_CONFIG = Path(os.environ.get("ORCHESTRA_DEVCLUSTER_DIR", "/tmp/orchestra-devcluster")) / "ssh" / "ssh_config"
SSH = False  # --ssh: through the dev cluster's SSH host (its node cache is the remote user's: no `cold` run)


def rate(python: str, n: int, jobs: int, root: Path, env: dict[str, str], extra: str = "") -> tuple[float, float]:
    """(executions per second, CPU milliseconds per execution of expegit and what it waited for).

    Why CPU too: on a machine whose load average is 13 on 2 cores, wall-clock rates of one tree swing by
    30% from one minute to the next; the CPU an execution costs the controller moves far less."""
    manifest = f'name: throughput\ncommand: "true {{i}}"\nparameters:\n  i: {{type: int, low: 1, high: {n}}}\n{extra}'
    where = ["--slots", str(jobs)]
    if SSH:  # the dev cluster's loopback SSH host, as bench/ssh_throughput.py runs it
        manifest += (f"profiles:\n  dev: {{kind: ssh, host: devcluster, slots: {jobs}, ssh_config: {SSH_CONFIG}, "
                     f"workdir: /tmp/orchestra-bench/env-{root.name}-{os.getpid()}}}\n")
        where = ["--profile", "dev"]
    campaign = make_campaign(root, manifest)
    full = dict(os.environ, **GIT_ENV, **env)
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([python, "-m", "expegit", "run", "--grid", "-q", *where], cwd=campaign,
                            env=full, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if f"{n} finished" not in result.stderr:
        raise SystemExit(f"{python}: expegit did not finish {n} executions:\n{result.stderr[-1000:]}")
    return n / elapsed, cpu * 1000 / n


def commit_of(python: str, path: str) -> str:
    """The short commit of the checkout whose expegit ``python`` imports (the figures name what they compare)."""
    env = dict(os.environ, PYTHONPATH=path) if path else None
    where = subprocess.run([python, "-c", "import expegit, os; print(os.path.dirname(expegit.__file__))"],
                           capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()).stdout.strip()
    got = subprocess.run(["git", "-C", where or ".", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return got.stdout.strip() or "unknown commit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-python", help="the commit before, installed in a venv")
    parser.add_argument("--base-off", action="store_true",
                        help="instead of another commit: this tree with `capture_environment: false`")
    parser.add_argument("--base-path", default="")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("-j", "--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ssh", action="store_true", help="on the dev cluster's SSH host instead of locally")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    global SSH
    SSH = args.ssh
    if not args.base_python and not args.base_off:
        parser.error("say what to compare with: --base-python P, or --base-off")
    rates: dict[str, list[float]] = {"before": [], "cached": [], "cold": []}
    cpus: dict[str, list[float]] = {"before": [], "cached": [], "cold": []}
    with scratch() as work:
        shared_cache = Path(work) / "cache"
        for k in range(args.rounds):
            base_env = {"PYTHONPATH": args.base_path} if args.base_path else {}
            base = ("before", sys.executable, {}, "capture_environment: false\n") if args.base_off else \
                ("before", args.base_python, base_env, "")
            runs = [base,
                    ("cached", sys.executable, {"XDG_CACHE_HOME": str(shared_cache)}, ""),
                    ("cold", sys.executable, {"XDG_CACHE_HOME": tempfile.mkdtemp(dir=work)}, "")][:2 if SSH else 3]
            if k % 2:
                runs.reverse()
            for name, python, env, extra in runs:
                got, cpu = rate(python, args.n, args.jobs, Path(work) / f"{name}{k}", env, extra)
                rates[name].append(got)
                cpus[name].append(cpu)
                print(f"round {k + 1} {name}: {got:.1f}/s, {cpu:.2f} ms CPU per execution", flush=True)
    med = {name: statistics.median(values) for name, values in rates.items() if values}
    cmed = {name: statistics.median(values) for name, values in cpus.items() if values}
    lines = [f"{now()} on {machine()}, load average {os.getloadavg()[0]:.1f} at the end; `python "
             f"bench/environment_cost.py -n {args.n} -j {args.jobs} --rounds {args.rounds}{' --ssh' if SSH else ''}`, rounds alternating; "
             "medians.", "",
             "| run | executions/s (median) | rounds | rate ratio | CPU ms/execution (median) | CPU ratio |",
             "|---|---|---|---|---|---|"]
    for name in [name for name in ("before", "cached", "cold") if rates[name]]:
        lines.append(f"| {name} | {med[name]:.1f} | {', '.join(f'{r:.0f}' for r in rates[name])} | "
                     f"{med[name] / med['before']:.3f} | {cmed[name]:.2f} | {cmed[name] / cmed['before']:.3f} |")
    before = ("this tree with `capture_environment: false`" if args.base_off else
              f"{commit_of(args.base_python, args.base_path)} (the commit before the capture)")
    lines += ["", f"before: {before}; cached: "
              f"{commit_of(sys.executable, '')}, the node already "
              "captured at this commit; cold: this tree with an empty node cache (one capture in the run)."]
    body = "\n".join(lines) + "\n"
    print(body)
    if args.write:
        write_section(args.write, "Environment capture cost (local)", body)


if __name__ == "__main__":
    main()
