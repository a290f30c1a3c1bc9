"""A campaign with 10,000 finished executions: how fast `expegit list --json` and `expegit status` answer,
beside `git for-each-ref` over the same branches (what a user would script instead), and the controller's
peak memory with 10,000 executions queued in one `expegit run`.

    python bench/large_campaign.py [-n 10000] [--queue 10000] [--write BENCHMARKS.md]
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

from _common import GIT_ENV, expegit, machine, make_campaign, now, timed, write_section

MANIFEST = """\
name: large
command: python3 t.py --lr {lr} --layers {layers}
parameters:
  lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
  layers: {type: int, low: 1, high: 100000}
outputs: [metrics.json]
objective: {metric: loss, from: metrics.json}
"""


def generate(root: Path, n: int) -> None:
    """n finished executions written through the same journal code a run uses, without running processes."""
    os.environ.update(GIT_ENV)
    from expegit.campaign import open_campaign
    from expegit.journal import Journal
    from expegit.runner import create_executions
    from orchestra.execution import ExecutionSpec

    campaign = open_campaign(root)
    head = campaign.store.head_commit()
    specs = (ExecutionSpec(commit=head, parameters={"lr": 10 ** (-5 + 4 * (i % 97) / 97), "layers": i + 1},
                           profile="local") for i in range(n))
    journal = Journal(campaign.store)
    created = list(create_executions(campaign, campaign.manifest, specs))
    moves = []
    with campaign.store.batch():
        for i, (record, tip) in enumerate(created):
            record.state, record.exit_code, record.host, record.slot = "finished", 0, "localhost", i % 4
            record.started, record.ended, record.duration = record.created, record.created, 1.0
            record.objective = (i * 7919 % 1000) / 1000
            record.outputs = ["metrics.json"]
            files = {"metrics.json": f'{{"loss": {record.objective}}}'.encode(), ".orchestra/stdout": b"ok\n",
                     ".orchestra/stderr": b""}
            moves.append((record.id, tip, journal.append_commit(tip, record, files)))
    moved = campaign.store.swap_refs([(f"refs/heads/executions/{i}", old, new) for i, old, new in moves])
    assert all(moved)


def best_of(command: list[str], cwd: Path, runs: int = 5) -> tuple[float, float]:
    times = [timed(command, cwd)[0] for _ in range(runs)]
    return min(times), statistics.median(times)


def peak_memory_of_queued_run(workdir: Path, queued: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `expegit run` with ``queued`` executions, stopped once all are queued."""
    manifest = f'name: queue\ncommand: "sleep 0.05"\nparameters:\n  i: {{type: int, low: 1, high: {queued}}}\n'
    root = make_campaign(workdir / "queue", manifest)
    env = dict(os.environ, **GIT_ENV)
    start = time.perf_counter()
    proc = subprocess.Popen(expegit("run", "--grid", "-q", "--slots", "4"), cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Peak memory is reached once every execution exists and the queue is full; sample VmHWM until a few
    # hundred have finished, then stop the run (Ctrl-C), which also exercises a clean stop at that size.
    peak_kb = 0
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            break
        done = subprocess.run(["git", "for-each-ref", "refs/heads/executions"], cwd=root, capture_output=True,
                              text=True).stdout.count("\n")
        if done >= queued and time.perf_counter() - start > 5:
            break
        # Executions are created in batches as slots take them (expegit/runner.py run_specs): the peak is
        # reached with the first batch, long before all exist. large_campaign_write.py measures it at 1M.
        if done >= min(queued, 2000) and time.perf_counter() - start > 30:
            break
        time.sleep(0.5)
    proc.send_signal(2)
    proc.wait(timeout=120)
    elapsed = time.perf_counter() - start
    return peak_kb / 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--queue", type=int, default=10000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    header = machine()
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        root = make_campaign(Path(tmp) / "large", MANIFEST, {"t.py": "print('hi')\n"})
        t0 = time.perf_counter()
        generate(root, args.n)
        generated = time.perf_counter() - t0
        cold, _ = timed(expegit("list", "--json"), root)
        list_best, list_median = best_of(expegit("list", "--json"), root)
        status_best, status_median = best_of(expegit("status"), root)
        refs_best, refs_median = best_of(["git", "for-each-ref", "--format=%(refname) %(objectname)",
                                          "refs/heads/executions"], root)
        count = len(__import__("json").loads(timed(expegit("list", "--json"), root)[1].stdout))
        assert count == args.n, f"list returned {count} records"
        peak_mb, queue_seconds = peak_memory_of_queued_run(Path(tmp), args.queue)
    body = "\n".join([
        f"{now()}, {header}.",
        "",
        f"A campaign of {args.n} finished executions (generated through the journal in {generated:.1f} s).",
        "Times are whole commands, Python start-up included; best and median of 5.",
        "",
        "| command | best | median | goal |",
        "|---|---|---|---|",
        f"| `expegit list --json` (first run: builds the record cache) | {cold:.2f} s | | |",
        f"| `expegit list --json` | {list_best:.2f} s | {list_median:.2f} s | < 1 s |",
        f"| `expegit status` | {status_best:.2f} s | {status_median:.2f} s | < 0.5 s |",
        f"| `git for-each-ref` over the same branches (names and tips only) | {refs_best:.2f} s | {refs_median:.2f} s | |",
        "",
        f"Peak memory (VmHWM) of the controller of `expegit run` with {args.queue} executions queued: "
        f"**{peak_mb:.0f} MB** (goal < 300 MB); measured over {queue_seconds:.0f} s, then stopped with Ctrl-C.",
    ])
    print(body)
    if args.write:
        write_section(args.write, "Large campaign (bench/large_campaign.py)", body)


if __name__ == "__main__":
    main()
