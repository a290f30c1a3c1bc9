"""N trivial executions through `expegit run` on the local profile, beside GNU parallel and HyperQueue.

All three run the same N commands (`true <i>`) with the same concurrency on the same machine, in the same
run, rounds alternating: for expegit that includes creating N execution branches and committing N
results; for GNU parallel it is only running them; HyperQueue (the meta-scheduler a cluster user would
choose instead; PyPI `hyperqueue`, the `bench` extra) runs its server and one worker with that many
cores inside this process, and is timed from submitting the N tasks to all finished, keeping no output
(its cluster's start-up is printed apart). Rates are executions per second; the ratios are what to quote.

    python bench/local_throughput.py [-n 1000] [-j 4] [--rounds 3] [--write BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import scratch, expegit, machine, make_campaign, now, precompile, timed, write_section


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


def hyperqueue_rate(n: int, jobs: int, workdir: Path) -> tuple[float, float]:
    """(tasks/s from submit to all finished, seconds the in-process server and worker took to start)."""
    from hyperqueue import Job  # the bench extra; only this function needs it
    from hyperqueue.cluster import LocalCluster, WorkerConfig

    server_dir = Path(tempfile.mkdtemp(prefix="hq-", dir=workdir))
    log = server_dir / "hq.log"
    with _output_to(log):  # its server prints a table and the client a progress bar: keep them apart
        start = time.perf_counter()
        with LocalCluster(str(server_dir), WorkerConfig(cores=jobs)) as cluster:  # type: ignore[arg-type]
            client = cluster.client()
            started = time.perf_counter() - start
            job = Job(str(server_dir))
            for i in range(1, n + 1):
                job.program(["true", str(i)], stdout=None, stderr=None)
            os.sync()  # as _common.timed does before each measured run
            begin = time.perf_counter()
            submitted = client.submit(job)
            ok = client.wait_for_jobs([submitted], raise_on_error=False)
            elapsed = time.perf_counter() - begin
    if not ok:
        raise SystemExit(f"HyperQueue did not finish the {n} tasks:\n{log.read_text()[-2000:]}")
    return n / elapsed, started


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so a Rust extension's too) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


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
    try:
        import hyperqueue  # noqa: F401
    except ImportError:
        raise SystemExit("HyperQueue is not installed: pip install -e '.[bench]'") from None
    header = machine()
    rates = []
    # The same campaign on a RAM filesystem too: every execution creates and deletes a run directory and
    # writes packs, so the disk's state moves expegit's figure while GNU parallel touches no disk.
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with scratch() as tmp, \
            scratch(dir=shm) as ram:
        for index in range(args.rounds):
            ours = expegit_rate(args.n, args.jobs, Path(tmp), f"campaign{index}")
            in_ram = expegit_rate(args.n, args.jobs, Path(ram), f"campaign{index}") if shm else float("nan")
            theirs = parallel_rate(args.n, args.jobs, Path(tmp))
            hq, hq_start = hyperqueue_rate(args.n, args.jobs, Path(tmp))
            rates.append((ours, theirs, in_ram, hq))
            print(f"round {index + 1}: expegit {ours:.0f}/s (tmpfs {in_ram:.0f}/s), GNU parallel {theirs:.0f}/s, "
                  f"HyperQueue {hq:.0f}/s (started in {hq_start:.2f}s), ratio {ours / theirs:.2f}x to GNU "
                  f"parallel (tmpfs {in_ram / theirs:.2f}x), {ours / hq:.2f}x to HyperQueue")
    ratios = [o / t for o, t, _, _ in rates]
    ram_ratios = [r / t for _, t, r, _ in rates]
    hq_ratios = [o / h for o, _, _, h in rates]
    body = "\n".join([
        f"{now()}, {header}.",
        "",
        f"{args.n} trivial executions (`true <i>`), {args.jobs} at once, {args.rounds} rounds alternating the three tools.",
        "expegit's figure is end to end: process start-up, creating the execution branches, running, committing",
        "every result to its branch. GNU parallel only runs the commands. HyperQueue runs them from submit to",
        f"all finished, on an in-process server and one worker with {args.jobs} cores, keeping no output.",
        "",
        "| round | expegit run (executions/s) | GNU parallel -j (jobs/s) | ratio | HyperQueue (tasks/s) | ratio "
        "| expegit, campaign on tmpfs | ratio |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {i + 1} | {o:.0f} | {t:.0f} | {o / t:.2f}x | {h:.0f} | {o / h:.2f}x | {r:.0f} | {r / t:.2f}x |"
          for i, (o, t, r, h) in enumerate(rates)],
        f"| median | {statistics.median(o for o, _, _, _ in rates):.0f} | "
        f"{statistics.median(t for _, t, _, _ in rates):.0f} | {statistics.median(ratios):.2f}x | "
        f"{statistics.median(h for _, _, _, h in rates):.0f} | {statistics.median(hq_ratios):.2f}x | "
        f"{statistics.median(r for _, _, r, _ in rates):.0f} | {statistics.median(ram_ratios):.2f}x |",
        "",
        "Goal: at least 1.0x GNU parallel's rate at N=1000 (the disk column is the one that counts: campaigns",
        "live on disk). The tmpfs column shows how much of the gap is the disk. The ratio to HyperQueue is",
        "expegit's end-to-end rate over HyperQueue's submit-to-finished one.",
    ])
    print(body)
    if args.write:
        write_section(args.write, "Local throughput (bench/local_throughput.py)", body)


if __name__ == "__main__":
    main()
