"""Writing to a large campaign and sharing it (issue 16): the rows beside bench/large_campaign.py's reads.

- the rate of a run adding N trivial executions (local, 4 slots) to a campaign of 100,000 against the same
  run on an empty campaign, optionally beside another checkout's code (``--compare-python``, rounds
  alternating): the goal is >= 90%;
- the controller's peak memory (VmHWM) with 100,000 executions queued and with a grid of 1,000,000
  points, and how long the first execution waited;
- `expegit push` / `clone` / `pull` of 100,000 execution branches to and from a bare remote over the
  loopback sshd (hooks installed on the remote, as `expegit` sets a shared remote up), beside
  `git push --mirror` / `git clone` / `git fetch` doing the same transfer.

    python bench/large_campaign_write.py --campaign DIR [--rounds 5] [--rate-n 1000] [--only rate,memory,share]
        [--compare-python OLD_VENV/bin/python] [--write BENCHMARKS.md]

``--campaign`` is a campaign of finished executions (bench/large_campaign.py's generate()); it is only
read: every measured run works on a `cp -a` of it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import GIT_ENV, machine, make_campaign, now, precompile, scratch, write_section

RATE_MANIFEST = 'name: large\ncommand: "true {{i}}"\nparameters:\n  i: {{type: int, low: 1, high: {n}}}\n'


def _env() -> dict[str, str]:
    return dict(os.environ, **GIT_ENV)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=_env(), check=True, capture_output=True, text=True).stdout


def _settled(root: Path, limit: float = 120) -> None:
    """Wait (bounded) for the `git pack-refs` / `git gc --auto` a run detached, so the next round does not
    share the CPU with it."""
    deadline = time.time() + limit
    while time.time() < deadline:
        busy = [p for p in (root / ".git" / "packed-refs.lock", root / ".git" / "gc.pid") if p.exists()]
        if not busy:
            return
        time.sleep(0.2)


def run_rate(python: str, base: Path | None, n: int, workdir: Path, name: str) -> float:
    """Executions per second of `expegit run --grid` adding ``n`` trivial executions to a copy of ``base``
    (or to an empty campaign), whole command timed."""
    root = workdir / name
    if base is None:
        make_campaign(root, RATE_MANIFEST.format(n=n))
    else:
        subprocess.run(["cp", "-a", str(base), str(root)], check=True)
        (root / "orchestra.yaml").write_text(RATE_MANIFEST.format(n=n))
        # The generated campaign has ~50 packs: any `git gc --auto` (the commit's below, the run's closing
        # one) would start a detached repack of all 100,000 executions that takes 15 minutes of CPU from the
        # next rounds. So gc.auto=0 first: set after the commit (as until 2026-12-01 evening), the commit's
        # own gc had already detached, and every earlier 100k-behind figure ran beside such repacks.
        _git(root, "config", "gc.auto", "0")
        _git(root, "commit", "-qam", "rate bench")
    os.sync()
    start = time.perf_counter()
    result = subprocess.run([python, "-m", "expegit", "run", "--grid", "-q", "--slots", "4"], cwd=root,
                            env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if f"{n} finished" not in result.stderr:
        raise SystemExit(f"{python}: expegit did not finish {n} executions:\n{result.stderr[-1500:]}")
    _settled(root)
    # Not removed here but after the last round (rate_rows): on ext4 without a journal (this VM) the inode
    # allocator skips every inode freed in the last minutes, and the next round's copy lands in the same
    # block groups, so removing a round's thousands of files taxed the next round's every new file
    # (0.5-1 ms each) and the figures fell round after round (180/s to 130/s over six).
    return n / elapsed


def rate_rows(base: Path, n: int, rounds: int, compare: str | None, workdir: Path) -> list[str]:
    pythons = [("this tree", sys.executable)] + ([("before (--compare-python)", compare)] if compare else [])
    rates: dict[tuple[str, str], list[float]] = {}
    for index in range(rounds):
        for label, python in pythons if index % 2 == 0 else list(reversed(pythons)):
            for where, campaign in (("empty", None), ("100k", base)):
                # A name per code as well: a detached agent may still be tidying the previous copy when
                # rmtree gives up on it, and `cp -a` into a leftover directory nests the copy inside it.
                tag = "this" if python == sys.executable else "other"
                rate = run_rate(python, campaign, n, workdir, f"rate{index}-{tag}-{where}")
                rates.setdefault((label, where), []).append(rate)
                print(f"round {index + 1}: {label:26} {where:6} {rate:6.0f}/s", flush=True)
    for leftover in sorted(workdir.glob("rate*")):
        shutil.rmtree(leftover, ignore_errors=True)  # a detached agent may still be tidying its run directories
    behind = _git(base, "for-each-ref", "--format=x", "refs/heads/executions").count("x")
    lines = [f"A run adding {n} trivial executions (`true {{i}}`, local, 4 slots) to an empty campaign and to a "
             f"copy of one with {behind} finished executions; executions per second of the whole command, "
             f"best and median of {rounds} alternating rounds (`gc.auto=0` in the copies: see run_rate).", "",
             "| code | empty: best | empty: median | 100k behind: best | 100k behind: median | 100k / empty (medians) |",
             "|---|---|---|---|---|---|"]
    for label, _python in pythons:
        empty, full = rates[(label, "empty")], rates[(label, "100k")]
        lines.append(f"| {label} | {max(empty):.0f}/s | {statistics.median(empty):.0f}/s | {max(full):.0f}/s | "
                     f"{statistics.median(full):.0f}/s | **{statistics.median(full) / statistics.median(empty):.0%}** |")
    return lines


def queued_memory(python: str, points: int, workdir: Path, window: float) -> tuple[float, float, int]:
    """(peak RSS MB, seconds to the first finished execution, executions created) of `expegit run --grid`
    over ``points`` points of `sleep 0.05`, watched for ``window`` seconds after the first one finished,
    then stopped with Ctrl-C."""
    manifest = f'name: queue\ncommand: "sleep 0.05 {{i}}"\nparameters:\n  i: {{type: int, low: 1, high: {points}}}\n'
    root = make_campaign(workdir / f"queue{points}", manifest)
    start = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "expegit", "run", "--grid", "-q", "--slots", "4"], cwd=root, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_kb = 0
    first: float | None = None
    deadline = start + 900
    while proc.poll() is None and time.perf_counter() < deadline:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            break
        if first is None and _git(root, "log", "--all", "-n1", "--format=%s", "--grep=^finished").strip():
            first = time.perf_counter() - start
        if first is not None and time.perf_counter() - start > first + window:
            break
        time.sleep(0.5)
    proc.send_signal(2)
    proc.communicate(timeout=300)
    created = _git(root, "for-each-ref", "--format=x", "refs/heads/executions").count("x")
    _settled(root)
    shutil.rmtree(root, ignore_errors=True)  # a detached agent may still be tidying its run directories
    return peak_kb / 1024, first if first is not None else float("nan"), created


def memory_rows(workdir: Path, window: float) -> list[str]:
    lines = ["", f"Controller of `expegit run --grid` (`sleep 0.05`, 4 slots), watched for {window:.0f} s after "
                 "its first execution finished, then stopped with Ctrl-C (one run each):", "",
             "| queued | peak memory (VmHWM) | goal | first execution finished after | branches created when stopped |",
             "|---|---|---|---|---|"]
    for points, goal in ((100_000, "< 300 MB"), (1_000_000, "< 1 GB")):
        peak, first, created = queued_memory(sys.executable, points, workdir, window)
        print(f"{points} queued: {peak:.0f} MB, first finished after {first:.1f} s, {created} created", flush=True)
        lines.append(f"| {points:,} | **{peak:.0f} MB** | {goal} | {first:.1f} s | {created:,} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign", type=Path, required=True, help="a campaign of finished executions (read only)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate-n", type=int, default=1000)
    parser.add_argument("--compare-python", help="the python of another checkout's venv, run beside this tree")
    parser.add_argument("--only", default="rate,memory,share")
    parser.add_argument("--memory-window", type=float, default=20.0)
    parser.add_argument("--share-rounds", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    precompile()
    only = set(args.only.split(","))
    header = machine()
    body = [f"{now()}, {header} (shared by eight developers: figures move with their load).", ""]
    with scratch() as tmp:
        workdir = Path(tmp)
        if "rate" in only:
            body += rate_rows(args.campaign.resolve(), args.rate_n, args.rounds, args.compare_python, workdir)
        if "memory" in only:
            body += memory_rows(workdir, args.memory_window)
        if "share" in only:
            from large_campaign_share import share_rows

            body += share_rows(args.campaign.resolve(), args.share_rounds, workdir)
    text = "\n".join(body)
    print(text)
    if args.write:
        write_section(args.write, "Large campaign: writing and sharing (bench/large_campaign_write.py)", text)


if __name__ == "__main__":
    main()
