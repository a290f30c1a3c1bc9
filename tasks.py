"""Developer tasks, run with invoke (`pip install -e '.[test]'`; `invoke --list`).

    invoke test [-a "-k resume"]           the whole suite, as CI runs it: bash tests/run_all.sh
    invoke static                          import contracts and mypy only (tests/unit/test_static_checks.py)
    invoke bench [-w local] [-n 1000] [--write]   a benchmark in bench/, e.g. local, ssh, slurm throughput
    invoke cluster.up | cluster.down | cluster.status   the loopback dev cluster (sshd + Slurm)

Each task is the command the README documents, so a task never does what that command would not.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from invoke import Collection, Context, task

ROOT = Path(__file__).resolve().parent
DEVCLUSTER = "bash tests/cluster/devcluster.sh"


@task(help={"args": "extra arguments for pytest, e.g. \"-k resume\""})
def test(c: Context, args: str = "") -> None:
    """The whole test suite (the README's single test command)."""
    with c.cd(str(ROOT)):
        c.run(f"bash tests/run_all.sh {args}".rstrip(), pty=False)


@task
def static(c: Context) -> None:
    """Import contracts (import-linter) and mypy, as the suite runs them."""
    with c.cd(str(ROOT)):
        c.run("python3 -m pytest -q tests/unit/test_static_checks.py")


@task(help={"which": "the benchmark: local, ssh or slurm (bench/WHICH_throughput.py), or a script name "
                     "in bench/ such as search_quality", "n": "executions (the throughput benchmarks)",
            "write": "update BENCHMARKS.md's section"})
def bench(c: Context, which: str = "local", n: int = 1000, write: bool = False) -> None:
    """A benchmark from bench/ (pip install -e '.[bench]' for its peers)."""
    script = f"{which}_throughput.py" if (ROOT / "bench" / f"{which}_throughput.py").exists() else f"{which}.py"
    if not (ROOT / "bench" / script).exists():
        raise SystemExit(f"no benchmark bench/{script}: see `ls bench/`")
    args = ["python3", script]
    if script.endswith("_throughput.py"):
        args += ["-n", str(n)]
    if write:
        args += ["--write", str(ROOT / "BENCHMARKS.md")]
    with c.cd(str(ROOT / "bench")):
        c.run(shlex.join(args))


@task
def up(c: Context) -> None:
    """Bring the dev cluster up (needs root; see tests/cluster/README.md)."""
    with c.cd(str(ROOT)):
        c.run(f"{DEVCLUSTER} up", pty=False)


@task
def down(c: Context) -> None:
    """Take the dev cluster down."""
    with c.cd(str(ROOT)):
        c.run(f"{DEVCLUSTER} down", pty=False)


@task
def status(c: Context) -> None:
    """Whether the dev cluster's daemons and nodes are up."""
    with c.cd(str(ROOT)):
        c.run(f"{DEVCLUSTER} status", pty=False)


cluster = Collection("cluster", up, down, status)
namespace = Collection(test, static, bench, cluster)
