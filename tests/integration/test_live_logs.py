"""`expegit logs -f`, `status` and intermediate metrics while executions run on the dev cluster (issue 13):
over SSH (agent and shell launchers) and on Slurm allocations (agent steps and srun), each read from a
separate process while `expegit run` is the controller."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.live_scenario import check_live_result, gate_dir, live_campaign, run_live_scenario


def _profile(devcluster, kind: str, launcher: str) -> tuple[str, str, str]:
    name = f"{kind}{uuid.uuid4().hex[:8]}"
    workdir = f"/tmp/orchestra-test-work/{name}"
    if kind == "ssh":
        body = (f"{{kind: ssh, host: devcluster, slots: 1, ssh_config: {devcluster.ssh_config}, "
                f"workdir: {workdir}, poll_interval: 0.3, launcher: {launcher}}}")
    else:
        body = (f"{{kind: slurm, host: devcluster, ssh_config: {devcluster.ssh_config}, slots_per_node: 1, "
                f"launcher: {launcher}, workdir: {workdir}, poll_interval: 0.3, squeue_interval: 1, "
                f"idle_release: 1, allocation: {{nodes: 1, walltime: '00:10:00'}}}}")
    return name, f"profiles:\n  {name}: {body}\n", workdir


@pytest.mark.parametrize("kind, launcher", [("ssh", "agent"), ("ssh", "shell"), ("slurm", "agent"),
                                            ("slurm", "srun")])
def test_logs_follow_and_metrics_while_running_on_the_cluster(devcluster, tmp_path: Path, kind: str,
                                                               launcher: str) -> None:
    gates = gate_dir()
    name, profiles, workdir = _profile(devcluster, kind, launcher)
    try:
        root = live_campaign(tmp_path / "camp", gates, profiles, profile=name)
        seen = run_live_scenario(root, gates)
        check_live_result(seen)
    finally:
        shutil.rmtree(gates, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)  # the dev cluster is this machine
