"""The environment is captured on the node where an execution ran, for every launcher: SSH (agent and
shell-and-files), Slurm (agent as one srun step per node, and one srun step per execution)."""
from __future__ import annotations

import pytest

from tests.helpers import git
from tests.integration.test_cluster_campaign import cancel_ours, check_campaign, cluster_campaign, records
from tests.helpers import cli

PIP_FREEZE = ".orchestra/pip-freeze.txt"


def with_record_env(campaign, names: str) -> None:
    manifest = campaign / "orchestra.yaml"
    manifest.write_text(manifest.read_text().replace("outputs: [out.txt]", f"outputs: [out.txt]\nrecord_env: [{names}]"))
    git(campaign, "commit", "-qam", "record_env")


def check_environments(campaign, recs: list[dict], *, slurm: bool) -> None:
    blobs = set()
    for rec in recs:
        env = rec.get("environment")
        assert env, rec
        assert env["python"].split()[0].count(".") == 2 and env["cores"] >= 1 and env["memory"] > 0, env
        assert env["os"] and env["kernel"], env
        assert env["vars"]["ORCHESTRA_EXECUTION_ID"] == rec["id"], env
        if slurm:
            assert env["vars"]["SLURM_JOB_ID"].isdigit(), env  # the execution's own environment
        blob = git(campaign, "rev-parse", f"executions/{rec['id']}:{PIP_FREEZE}").stdout.strip()
        assert blob == env["packages_blob"], (rec["id"], blob)
        blobs.add(blob)
    assert len(blobs) == 1  # one environment on these nodes: one blob for all


@pytest.mark.parametrize("launcher", ["agent", "shell"])
def test_environment_over_ssh(devcluster, tmp_path, launcher):
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="ssh", n=6, nap=0.1,
                                         extra_profile=f", launcher: {launcher}")
    with_record_env(campaign, "ORCHESTRA_EXECUTION_ID")
    result = cli(campaign, "expegit", "run", "--grid", "--profile", profile, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    check_environments(campaign, check_campaign(campaign, 6, kind="ssh"), slurm=False)


@pytest.mark.parametrize("launcher", ["agent", "srun"])
def test_environment_over_slurm(devcluster, tmp_path, launcher):
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher=launcher, n=6,
                                         nap=0.1, nodes=2)
    with_record_env(campaign, "ORCHESTRA_EXECUTION_ID, SLURM_JOB_ID")
    try:
        result = cli(campaign, "expegit", "run", "--grid", "--profile", profile, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        recs = check_campaign(campaign, 6, kind="slurm")
        check_environments(campaign, recs, slurm=True)
        assert records(campaign)
    finally:
        cancel_ours(devcluster, profile)
