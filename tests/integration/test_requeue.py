"""A Slurm requeue mid-run, on the dev cluster: ``scontrol requeue`` kills everything running in the
allocation and puts it back in the queue under the same job id. The run must say so in one line (not a
stream of re-attach retries), journal the lost attempt as failed and retrying, and finish every execution
(in the allocation once it runs again, or in a new one).

``scontrol requeue`` needs the Slurm operator (root here); it touches only this test's own allocation.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from .test_cluster_campaign import (cancel_ours, check_campaign, cluster_campaign, count_commits, finish,
                                    journal, our_jobs, records, run_log, start_run, wait_until)


@pytest.mark.parametrize("launcher", ["agent", "srun"])
def test_requeued_allocation_is_one_line_and_each_attempt_is_journaled(devcluster, tmp_path, launcher):
    if os.geteuid() != 0:
        pytest.skip("scontrol requeue needs the Slurm operator: run as root")
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher=launcher, n=8,
                                         nap=4.0, nodes=2)
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    try:
        assert wait_until(lambda: count_commits(campaign, "running") >= 3 and our_jobs(devcluster, profile), 90), \
            run_log(campaign)
        running = {r["id"] for r in records(campaign) if r["state"] == "running"}
        (job,) = our_jobs(devcluster, profile)
        out = subprocess.run(["scontrol", "requeue", job], env=dict(os.environ, SLURM_CONF=devcluster.slurm_conf),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        code = finish(proc, campaign, 240)
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_ours(devcluster, profile)
    log = run_log(campaign)
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "re-attaching to the agent failed" not in log, log
    assert sum(f"allocation {job} was requeued" in line for line in log.splitlines()) == 1, log
    recs = check_campaign(campaign, 8, kind="slurm", allow_retries=True)
    lost = [r for r in recs if r["id"] in running]
    assert lost and all(r["attempt"] == 2 for r in lost), lost
    for rec in lost:  # newest first: finished (attempt 2), running, failed ... retrying (attempt 2), running
        subjects = journal(campaign, rec["id"])
        failed = [i for i, s in enumerate(subjects) if s.startswith("failed")]
        assert len(failed) == 1 and "retrying (attempt 2)" in subjects[failed[0]], subjects
        assert any(s.startswith("running") for s in subjects[:failed[0]]), subjects  # the second attempt ran
        assert any(s.startswith("running") for s in subjects[failed[0] + 1:]), subjects  # and so did the first
