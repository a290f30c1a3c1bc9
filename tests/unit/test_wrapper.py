"""The execution wrapper (runaway/rundir.py WRAPPER), run by /bin/sh as every launcher runs it."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runaway.rundir import MARKER, WRAPPER


def launch(run_dir: Path, command: str) -> subprocess.Popen:
    (run_dir / ".orchestra").mkdir(parents=True, exist_ok=True)
    # Its own session, as the launchers start it (setsid): stop signals the whole group.
    return subprocess.Popen(["/bin/sh", "-c", WRAPPER, MARKER, command], cwd=run_dir, start_new_session=True)


def meta(run_dir: Path, name: str) -> str:
    try:
        return (run_dir / ".orchestra" / name).read_text().strip()
    except FileNotFoundError:  # not written yet
        return ""


@pytest.mark.parametrize("command, code", [
    ("exec sh -c 'exit 3'", 3),
    ("cd / && exec sh -c 'exit 4'", 4),
    (". ./ends_in_exec.sh", 5),  # a sourced script's exec would replace the wrapper just the same
    ("exit 6", 6),
    ("echo exec is only a word here; exit 7", 7),
])
def test_the_exit_code_is_written_whatever_the_command_ends_with(tmp_path: Path, command: str, code: int) -> None:
    (tmp_path / "ends_in_exec.sh").write_text("exec sh -c 'exit 5'\n")
    assert launch(tmp_path, command).wait(timeout=60) == code
    assert meta(tmp_path, "exit_code") == str(code)


def test_an_exec_d_program_leaves_the_wrapper_in_place_for_stop_to_find(tmp_path: Path) -> None:
    """stop and kill signal the pid file's process only while it still carries the marker."""
    proc = launch(tmp_path, "exec sleep 30")
    try:
        deadline = time.monotonic() + 30
        while not meta(tmp_path, "pid") or not _has_child(int(meta(tmp_path, "pid"))):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pid = int(meta(tmp_path, "pid"))
        assert pid == proc.pid
        assert MARKER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_a_plain_command_runs_without_an_extra_shell(tmp_path: Path) -> None:
    """Short executions pay for every process: a command that does not exec is the wrapper's own child."""
    (tmp_path / "ppid.py").write_text("import os; print(os.getppid())\n")
    assert launch(tmp_path, "python3 ppid.py").wait(timeout=60) == 0
    assert meta(tmp_path, "stdout") == meta(tmp_path, "pid")


def _has_child(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False
