"""`expegit resume` after a controller killed on Slurm, on the dev cluster: the dead controller's
allocation holds every node, its executions are re-attached, and the rest of the campaign must run in
that allocation's free slots as they free up. It used to submit a new allocation that waited in the
queue for those very nodes until every re-attached execution had ended (issue 10: ~26 s with nothing new
running). Killing a controller touches no daemon: this is not a fault test of the cluster.
"""
from __future__ import annotations

import signal
import time

from .test_cluster_campaign import (cancel_ours, check_campaign, cluster_campaign, count_commits, finish,
                                    our_jobs, run_log, start_run, wait_until)


def test_resume_runs_the_rest_in_the_dead_controllers_allocation(devcluster, tmp_path):
    # 4 nodes x 4 slots, all of the cluster: 16 run when the controller dies, 8 never started.
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher="agent", n=24,
                                         nap=5.0, nodes=4)
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    try:
        assert wait_until(lambda: count_commits(campaign, "running") >= 12, 120), run_log(campaign)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        (held,) = our_jobs(devcluster, profile)
        resume = start_run(campaign, "resume")
        seen = set()
        deadline = time.monotonic() + 240
        while resume.poll() is None and time.monotonic() < deadline:
            seen.update(our_jobs(devcluster, profile))
            time.sleep(0.3)
        assert finish(resume, campaign, 30) == 0, run_log(campaign)
        log = run_log(campaign)
        assert "re-attached" in log and "Traceback" not in log, log
        assert seen <= {held}, f"the resume asked for another allocation {sorted(seen - {held})}:\n{log}"
        assert wait_until(lambda: not our_jobs(devcluster, profile), 30), our_jobs(devcluster, profile)
        ledger = campaign / ".git" / "orchestra" / "allocations"
        assert not ledger.exists() or not list(ledger.iterdir()), list(ledger.iterdir())
        check_campaign(campaign, 24, kind="slurm")  # nothing ran twice, no slot held by two at once
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_ours(devcluster, profile)
