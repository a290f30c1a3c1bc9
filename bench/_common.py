"""What every benchmark shares: campaign set-up, timing helpers, and writing figures into BENCHMARKS.md."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org"}


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (f"{platform.node() or 'host'}: {os.cpu_count()} cores {cpu}, Python {platform.python_version()}, "
            f"load average {load:.1f} at start")


def precompile() -> None:
    """Byte-compile the project like `pip install .` does: this environment may set
    PYTHONDONTWRITEBYTECODE, and an editable install would then recompile every module at every start,
    a cost a user's installation does not pay."""
    import compileall

    for name in ("core", "expegit", "runaway", "parasearch", "hooks"):
        compileall.compile_dir(str(ROOT / name), quiet=1)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def make_campaign(root: Path, manifest: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **GIT_ENV)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True, env=env)
    (root / "orchestra.yaml").write_text(manifest)
    for name, content in (files or {}).items():
        (root / name).write_text(content)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "bench campaign"], cwd=root, check=True, env=env)
    return root


def timed(command: list[str], cwd: Path, **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, **GIT_ENV)
    # Each measured run starts with the disk's write-back of earlier rounds done: back-to-back rounds
    # otherwise pay for each other's dirty pages (seen here: the same run at 300/s or 430/s).
    os.sync()
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{command} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed, result


@contextlib.contextmanager
def scratch(prefix: str = "orchestra-bench-", dir: Path | None = None) -> Iterator[str]:
    """A temporary directory for campaigns, removed once the `git gc --auto` they started is done.

    Why: expegit runs `git gc --auto` at the end of a big run, and git detaches it (gc.autoDetach), so it
    still writes into the campaign's .git when expegit has exited; TemporaryDirectory's removal then
    failed with "Directory not empty: '.git'" and the script died before writing its figures (the Slurm
    one did so in most rounds of 2026-12-01). Waiting here keeps gc out of the measured time, as a
    user's run has it. Bounded: after a minute whatever is left is removed best-effort.
    """
    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    try:
        yield path
    finally:
        root = Path(path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                any(root.glob(pattern)) for pattern in ("*/.git/gc.pid", "*/*/.git/gc.pid")):
            time.sleep(0.2)
        shutil.rmtree(path, ignore_errors=True)


def expegit(*args: str) -> list[str]:
    return [sys.executable, "-m", "expegit", *args]


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section ``## name`` of a markdown file, keeping the others."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures written by the scripts in bench/; " \
        "quote ratios, absolute times drift on shared machines.\n"
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def site_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``: how big a generated report site is, for the report benchmarks."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, name))
    return files, size
