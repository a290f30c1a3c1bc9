"""Manifest loading: how long `expegit check` takes, and how much memory, on big and hostile manifests.

Why: a manifest is the one file every command reads first, and anyone who can push to a campaign can
write it. `expegit check` must answer any manifest up to 50 MB in seconds and bounded memory, or refuse
it. Each case is a fresh campaign; `expegit check` runs as a subprocess under a 2 GiB address-space cap
and a time limit, so an unbounded loader shows as "killed" or "timed out" instead of taking the machine.

    python bench/manifest_load.py                  # every case
    python bench/manifest_load.py --only choices-300k --timeout 300
    python bench/manifest_load.py --write BENCHMARKS.md

Cases: 300,000 `choices` (4.7 MB), 40,000 and 110,000 parameters of four keys each (2.9 and 8 MB), an
`env:` of 450,000 variables (7.5 MB), a 50 MB manifest (a 50 MB description), and a 500-byte "billion
laughs" of nested aliases. To measure another tree (the code
before a change), put it first on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GIT_ENV, machine, make_campaign, now, write_section  # noqa: E402

SECTION = "Manifest loading (bench/manifest_load.py)"
MEMORY_CAP = 2 * 2**30


def choices(n: int) -> str:
    return ("name: big\ncommand: echo {c}\nparameters:\n  c:\n    choices:\n"
            + "".join(f"      - c{i}\n" for i in range(n)))


def parameters(n: int) -> str:
    lines = ["name: wide\ncommand: echo {p0}\nparameters:\n"]
    lines += [f"  p{i}:\n    type: float\n    low: 0.001\n    high: {i + 1}.5\n    log: true\n" for i in range(n)]
    return "".join(lines)


def env(n: int) -> str:
    return "name: env\ncommand: echo hi\nenv:\n" + "".join(f"  V{i}: {i}\n" for i in range(n))


def huge(size: int) -> str:
    return "name: huge\ncommand: echo hi\ndescription: " + "x" * size + "\n"


def laughs() -> str:
    # Nine levels of nine aliases each: 9**9 (387 million) strings once expanded, in about 500 bytes.
    lines = ["name: lol", "command: echo {x}", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("parameters: {x: {choices: *a8}}")
    return "\n".join(lines) + "\n"


CASES = {
    "choices-300k": lambda: choices(300_000),
    "parameters-40k": lambda: parameters(40_000),
    "parameters-110k": lambda: parameters(110_000),  # just under the 8 MiB limit, the slowest shape found
    "env-450k": lambda: env(450_000),
    "description-50MB": lambda: huge(50 * 2**20),
    "billion-laughs": laughs,
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_check(root: Path, timeout: float) -> tuple[str, float, float, float, str]:
    """(outcome, seconds, CPU seconds, peak RSS in MB, first line of stderr) of one `expegit check`.

    CPU time is the figure to compare on a shared machine: wall time there includes waiting for a core."""
    env = dict(os.environ, **GIT_ENV)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "expegit", "check"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_limit_memory)
    deadline = start + timeout
    status = usage = None
    while time.perf_counter() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = -9
        elapsed = time.perf_counter() - start
        return "timed out", elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, ""
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    first = err.strip().splitlines()[0] if err.strip() else ""
    if "MemoryError" in err or code < 0:
        outcome = f"killed ({'memory' if 'MemoryError' in err else code})"
    else:
        outcome = {0: "ok", 3: "refused (exit 3)"}.get(code, f"exit {code}")
    return outcome, elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, first[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(CASES))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a check is killed")
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of a markdown file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="manifest-bench-") as tmp:
        for name in args.only or CASES:
            text = CASES[name]()
            root = make_campaign(Path(tmp) / name, text)
            outcome, seconds, cpu, rss, first = run_check(root, args.timeout)
            rows.append(f"| {name} | {len(text.encode()) / 1e6:.1f} MB | {outcome} | {seconds:.2f} s | {cpu:.2f} s | "
                        f"{rss:.0f} MB | {first[:100].replace('|', '/')} |")
            print(rows[-1], flush=True)
    body = "\n".join([
        f"{now()}; {machine()}; `expegit check` under a {MEMORY_CAP // 2**30} GiB address-space cap, "
        f"killed after {args.timeout:g} s.", "",
        "| case | size | outcome | wall time | CPU time | peak RSS | first line |", "|---|---|---|---|---|---|---|",
        *rows])
    print(body)
    if args.write:
        write_section(args.write, SECTION, body)


if __name__ == "__main__":
    main()
