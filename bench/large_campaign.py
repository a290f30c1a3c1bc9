"""A campaign with 10,000 (or -n 100,000) finished executions: how fast the reading commands answer
(`expegit status`, `list`, `list --json`, the first command after a clone, the notebook API), beside
`git for-each-ref` over the same branches (what a user would script instead, and the floor), and the
controller's peak memory with 10,000 executions queued in one `expegit run`.

    python bench/large_campaign.py [-n 10000] [--campaign DIR] [--queue 10000] [--no-queue] [--write BENCHMARKS.md]

--campaign DIR reuses a campaign generated before (say /work/bench-data/large100k): it is copied first
(`cp -a`), since the commands measured write their caches into it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import GIT_ENV, expegit, machine, make_campaign, now, precompile, timed, write_section

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
    """n finished executions written through the same journal code a run uses, without running processes.

    They are created and finished in batches of CREATE_BATCH, as `expegit run` creates them when slots take
    them: the commits' dates then interleave as a real campaign's do. Creating all n first and finishing
    them after made every "created" commit older than every finished tip, and git's revision walk (which
    inserts each parent into a list sorted by date) then costs O(n^2): at 100,000 that alone kept `git push
    --mirror` and its receiver's connectivity check busy for 20 minutes each, a cost no campaign run by
    Orchestra has.
    """
    os.environ.update(GIT_ENV)
    from expegit.campaign import open_campaign
    from expegit.journal import Journal
    from expegit.runner import CREATE_BATCH, create_executions
    from orchestra.execution import ExecutionSpec

    campaign = open_campaign(root)
    head = campaign.store.head_commit()
    journal = Journal(campaign.store)
    for start in range(0, n, CREATE_BATCH):
        specs = (ExecutionSpec(commit=head, parameters={"lr": 10 ** (-5 + 4 * (i % 97) / 97), "layers": i + 1},
                               profile="local") for i in range(start, min(n, start + CREATE_BATCH)))
        created = list(create_executions(campaign, campaign.manifest, specs))
        moves = []
        with campaign.store.batch():
            for i, (record, tip) in enumerate(created, start):
                record.state, record.exit_code, record.host, record.slot = "finished", 0, "localhost", i % 4
                record.started, record.ended, record.duration = record.created, record.created, 1.0
                record.objective = (i * 7919 % 1000) / 1000
                record.outputs = ["metrics.json"]
                files = {"metrics.json": f'{{"loss": {record.objective}}}'.encode(),
                         ".orchestra/stdout": b"ok\n", ".orchestra/stderr": b""}
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


READ_RUNS = 5
API_SNIPPET = "from expegit import open_campaign; print(len(open_campaign('.').executions()))"


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(command: list[str], cwd: Path, runs: int = READ_RUNS, before=None) -> tuple[float, float, float]:
    """(best, median wall time, median CPU time) of ``runs`` runs; ``before`` runs ahead of each, untimed.

    CPU time (user + system, the command's and its git children's) beside wall time: on a shared machine
    the wall time is mostly other people's load, the CPU time is what the command itself costs."""
    walls, cpus = [], []
    for _ in range(runs):
        if before is not None:
            before()
        cpu = _cpu_of_children()
        walls.append(timed(command, cwd)[0])
        cpus.append(_cpu_of_children() - cpu)
    return min(walls), statistics.median(walls), statistics.median(cpus)


def drop_record_cache(root: Path) -> None:
    """What a clone lacks: the record cache lives in .git/orchestra, which git does not carry."""
    for name in ("records.tsv", "records.list", "records.json"):
        (root / ".git" / "orchestra" / name).unlink(missing_ok=True)


def ship_index(root: Path) -> None:
    """What `expegit clone` brings besides the branches: the remote's record index, as `expegit push`
    writes it, in refs/orchestra/remotes/origin/index (the bench's copy has no remote to clone from;
    tests/integration/test_shipped_index.py clones for real)."""
    code = ("from expegit.gitstore import GitStore; from expegit.records import RecordIndex, FIELDS; "
            "from expegit import shipped_index as s; g = GitStore('.'); "
            "rows = s.rows_of_cache([l.split(chr(9), FIELDS - 1) for l in RecordIndex(g).lines()]); "
            "c = s.write_index(g, rows, None); g.swap_refs([(s.tracking_ref('origin'), None, c)]); print(c)")
    subprocess.run([sys.executable, "-c", code], cwd=root, env=dict(os.environ, **GIT_ENV), check=True,
                   stdout=subprocess.DEVNULL)


def read_rows(root: Path, n: int, cold_runs: int = 2) -> list[str]:
    """The rows of reading a campaign of ``n`` executions, as markdown table rows."""
    rows = []

    def row(label: str, times: tuple[float, float, float], goal: str = "", runs: int = READ_RUNS) -> None:
        of = "" if runs == READ_RUNS else f" (of {runs})"
        rows.append(f"| {label}{of} | {times[0]:.2f} s | {times[1]:.2f} s | {times[2]:.2f} s | {goal} |")
        print(rows[-1], flush=True)

    if cold_runs:
        row("`expegit status` after a plain `git clone` (no shipped index: every record read)",
            measure(expegit("status"), root, runs=cold_runs, before=lambda: drop_record_cache(root)), "",
            runs=cold_runs)
    ship_index(root)
    row("`expegit status`, first command after `expegit clone` (cache built from the shipped index)",
        measure(expegit("status"), root, before=lambda: drop_record_cache(root)), "< 15 s")
    count = len(json.loads(timed(expegit("list", "--json"), root)[1].stdout))
    assert count == n, f"list returned {count} records"
    row("`expegit status`", measure(expegit("status"), root), "< 0.5 s")
    row(f"`expegit list` (text, all {n} lines to a pipe)", measure(expegit("list"), root), "< 1 s")
    row("`expegit list --limit 50`", measure(expegit("list", "--limit", "50"), root), "< 1 s")
    row("`expegit list --limit 50 --sort objective`",
        measure(expegit("list", "--limit", "50", "--sort", "objective"), root), "< 1 s")
    row("`expegit list --json`", measure(expegit("list", "--json"), root), "< 3 s")
    row("notebook API: `open_campaign('.').executions()` (Python start-up included)",
        measure([sys.executable, "-c", API_SNIPPET], root), "")
    row("`python -c 'import expegit.cli'` (start-up and imports alone)",
        measure([sys.executable, "-c", "import expegit.cli"], root), "")
    row("`git for-each-ref` over the same branches (names and tips only: the floor)",
        measure(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/executions"], root))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--campaign", type=Path, help="reuse this generated campaign (copied first) instead of "
                                                      "generating one; -n must match its size")
    parser.add_argument("--queue", type=int, default=10000)
    parser.add_argument("--no-queue", action="store_true", help="skip the controller's peak-memory run")
    parser.add_argument("--cold-runs", type=int, default=2, help="runs of the first command without a shipped "
                                                                  "index (20 s of CPU each at 100,000; 0: skip)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    precompile()
    header = machine()
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        if args.campaign is not None:
            root = Path(tmp) / "large"
            subprocess.run(["cp", "-a", str(args.campaign), str(root)], check=True)
            origin = f"reused from {args.campaign}"
        else:
            root = make_campaign(Path(tmp) / "large", MANIFEST, {"t.py": "print('hi')\n"})
            t0 = time.perf_counter()
            generate(root, args.n)
            origin = f"generated through the journal in {time.perf_counter() - t0:.1f} s"
        rows = read_rows(root, args.n, args.cold_runs)
        shutil.rmtree(root, ignore_errors=True)
        peak = None if args.no_queue else peak_memory_of_queued_run(Path(tmp), args.queue)
    lines = [
        f"{now()}, {header}.",
        "",
        f"A campaign of {args.n} finished executions ({origin}).",
        "Times are whole commands, Python start-up included; best and median of 5 wall times, and the median",
        "CPU time (user + system, git's included): on a shared machine the wall time carries the others' load.",
        "",
        "| command | best | median | CPU | goal |",
        "|---|---|---|---|---|",
        *rows,
    ]
    if peak is not None:
        lines += ["", f"Peak memory (VmHWM) of the controller of `expegit run` with {args.queue} executions queued: "
                      f"**{peak[0]:.0f} MB** (goal < 300 MB); measured over {peak[1]:.0f} s, then stopped with Ctrl-C."]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(args.write, f"Large campaign, reading (bench/large_campaign.py -n {args.n})", body)


if __name__ == "__main__":
    main()
