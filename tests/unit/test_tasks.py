"""tasks.py (invoke) runs the documented commands: checked with invoke's --dry, which prints each command
instead of running it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dry(*args: str) -> str:
    pytest.importorskip("invoke")
    result = subprocess.run([sys.executable, "-m", "invoke", "--dry", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # invoke colours what it echoes
    return plain.replace(f"cd {ROOT / 'bench'} && ", "").replace(f"cd {ROOT} && ", "")


def test_test_task_is_the_readme_command() -> None:
    assert _dry("test").strip() == "bash tests/run_all.sh"
    assert _dry("test", "-a", "-k resume").strip() == "bash tests/run_all.sh -k resume"
    assert "bash tests/run_all.sh" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("action", ["up", "down", "status"])
def test_cluster_tasks_call_devcluster(action: str) -> None:
    assert _dry(f"cluster.{action}").strip() == f"bash tests/cluster/devcluster.sh {action}"


def test_bench_task_runs_the_script_with_n() -> None:
    out = _dry("bench", "-w", "local", "-n", "50", "--write").strip()
    assert out == f"python3 local_throughput.py -n 50 --write {ROOT / 'BENCHMARKS.md'}"
    assert _dry("bench", "-w", "search_quality").strip() == "python3 search_quality.py"
