"""The shell launcher's binding lines, run by the real wrapper shell (/bin/sh) here: affinity through
taskset or python3, a clear failure where neither can, binding files written byte for byte."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runaway.launchers.shell import AFFINITY_FAILED, bound_command, meta_lines
from runaway.rundir import MARKER, WRAPPER

AFFINITY = "python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))'"
CORES = sorted(os.sched_getaffinity(0))


def run(tmp_path: Path, command: str, path: str | None = None) -> tuple[int, str, str]:
    run_dir = tmp_path / "run"
    (run_dir / ".orchestra").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=path) if path is not None else None
    subprocess.run(["/bin/sh", "-c", WRAPPER, MARKER, command], cwd=run_dir, env=env, check=False, timeout=60)
    meta = run_dir / ".orchestra"
    return (int((meta / "exit_code").read_text()), (meta / "stdout").read_text(), (meta / "stderr").read_text())


def only(path: Path, *programs: str) -> str:
    """A PATH holding only these programs (to take taskset away, or python3 too)."""
    path.mkdir(exist_ok=True)
    for name in programs:
        target = name if os.path.isabs(name) else (sys.executable if name == "python3" else f"/usr/bin/{name}")
        (path / Path(name).name).symlink_to(target)
    return str(path)


def test_the_command_runs_on_its_cores_and_its_children_inherit_them(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, bound_command(AFFINITY, [CORES[-1]], None))
    assert (code, out.strip(), err) == (0, str([CORES[-1]]), "")


def test_without_taskset_python3_sets_the_affinity(tmp_path: Path) -> None:
    code, out, _err = run(tmp_path, bound_command(AFFINITY, [CORES[0]], None), only(tmp_path / "bin", "python3"))
    assert (code, out.strip()) == (0, str([CORES[0]]))


def test_where_nothing_can_bind_the_execution_fails_at_once_and_says_why(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, bound_command("echo ran", [CORES[0]], None), str(tmp_path / "empty"))
    assert code == AFFINITY_FAILED and out == ""
    assert err.strip() == f"orchestra: could not bind to cores {CORES[0]} (no taskset, and python3 could not set the affinity)"


def test_binding_files_are_written_byte_for_byte_whatever_they_hold(tmp_path: Path) -> None:
    hostile = "cores=0 gpus=$(touch pwned) share='1/4' memory=`id`\n\"; exit 3\n"
    code, out, _err = run(tmp_path, bound_command("echo ran", None, {"binding": hostile}))
    assert (code, out) == (0, "ran\n")
    assert (tmp_path / "run" / ".orchestra" / "binding").read_text() == hostile
    assert not (tmp_path / "run" / "pwned").exists()


def test_a_binding_file_name_cannot_leave_the_run_directory() -> None:
    with pytest.raises(ValueError, match="not a run file name"):
        meta_lines({"../x": ""})


def test_no_binding_leaves_the_command_as_it_was() -> None:
    assert bound_command("echo hi", None, None) == "echo hi"
    assert bound_command("echo hi", (), {}) == "echo hi"
