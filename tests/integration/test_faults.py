"""Faults on the real dev cluster, mid-campaign: every execution still ends committed exactly once.

- sshd restarted (every connection dropped) while executions run over ssh;
- the Slurm allocation cancelled (`scancel`): its executions are lost and retried under
  `retries: {on: [node-failure, walltime]}` in a new allocation;
- one slurmd (and the job steps it runs) killed: that node's executions are lost and retried elsewhere;
- the controller killed with SIGKILL: `expegit resume` re-attaches to what still runs remotely, collects
  what finished while no controller watched, and runs what never started; nothing runs twice.

All waits are bounded. These tests need root (they restart daemons): without it they skip, except under
CI=true where the session fixture brings the cluster up as root.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CLUSTER_DIR, SCRIPT
from .test_cluster_campaign import (cancel_ours, check_campaign, cluster_campaign, count_commits, finish,
                                    journal, our_jobs, records, run_log, start_run, wait_until)


@pytest.fixture(autouse=True)
def _root(devcluster):
    if os.geteuid() != 0:
        pytest.skip("fault tests restart daemons of the dev cluster: run them as root")
    yield
    # Whatever a test broke, the cluster is whole again for the next one.
    subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=120)


def _running_at_least(campaign: Path, n: int) -> bool:
    return count_commits(campaign, "running") >= n


def test_sshd_restart_mid_campaign(devcluster, tmp_path):
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="ssh", n=20, nap=2.5)
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    try:
        assert wait_until(lambda: _running_at_least(campaign, 3), 60), run_log(campaign)
        restart = subprocess.run(["bash", str(SCRIPT), "restart-sshd"], capture_output=True, text=True, timeout=60)
        assert restart.returncode == 0, restart.stderr
        code = finish(proc, campaign, 240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, run_log(campaign)
    check_campaign(campaign, 20, kind="ssh", allow_retries=True)


def test_allocation_cancelled_mid_run(devcluster, tmp_path):
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", n=20, nap=2.0)
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    try:
        assert wait_until(lambda: _running_at_least(campaign, 4) and our_jobs(devcluster, profile), 90), \
            run_log(campaign)
        first = our_jobs(devcluster, profile)
        devcluster.slurm("scancel " + " ".join(first))
        code = finish(proc, campaign, 240)
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_ours(devcluster, profile)
    assert code == 0, run_log(campaign)
    recs = check_campaign(campaign, 20, kind="slurm", allow_retries=True)
    retried = [r for r in recs if r["attempt"] > 1]
    assert retried, "the cancelled allocation's executions should have been retried"
    for rec in retried:  # the lost attempt is journaled as failed + retrying, then one result
        subjects = journal(campaign, rec["id"])
        assert any(s.startswith("failed") for s in subjects), subjects


def _slurm_pids(node: str) -> list[int]:
    """slurmd of ``node`` and the job steps it runs (their processes carry SLURMD_NODENAME=node)."""
    pids = []
    pidfile = CLUSTER_DIR / "slurm" / f"slurmd-{node}.pid"
    if pidfile.exists():
        pids.append(int(pidfile.read_text().strip()))
    needle = f"SLURMD_NODENAME={node}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if (Path("/proc") / str(ppid) / "comm").read_text().strip() == "slurmstepd":
                    pids.append(ppid)
        except (OSError, ValueError, IndexError):
            continue
    return sorted(set(pids))


def test_slurmd_killed_mid_run(devcluster, tmp_path):
    # 3 of the 4 nodes: once Slurm declares the victim down (SlurmdTimeout=10 in the dev cluster), the
    # allocation fails (NODE_FAIL) and the retries run in a new allocation of the 3 nodes still up.
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", n=20, nap=2.0, nodes=3)
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    victim = None
    try:
        def node_busy() -> bool:
            nonlocal victim
            running = [r for r in records(campaign) if r["state"] == "running"]
            nodes = sorted({r.get("node") for r in running if r.get("node")})
            victim = nodes[-1] if nodes else None
            return len(running) >= 4 and victim is not None

        assert wait_until(node_busy, 90, interval=0.5), run_log(campaign)
        for pid in _slurm_pids(victim):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = finish(proc, campaign, 240)
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_ours(devcluster, profile)
    assert code == 0, run_log(campaign)
    recs = check_campaign(campaign, 20, kind="slurm", allow_retries=True)
    retried = [r for r in recs if r["attempt"] > 1]
    assert retried, f"executions on {victim} should have been lost and retried"
    for rec in retried:
        assert rec["node"] != victim, rec  # retried elsewhere


def _kill_mid_run_then_resume(campaign: Path, profile: str, kind: str, within: float) -> tuple[dict, list, dict]:
    """`expegit run` killed with SIGKILL once 4 executions finished and 2 run, then `expegit resume`:
    it re-attaches, nothing runs twice, and the re-attached keep their run directories.
    Returns (records before the resume, ids running at the kill, records after by id)."""
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    try:
        assert wait_until(lambda: count_commits(campaign, "finished") >= 4 and _running_at_least(campaign, 2),
                          within), run_log(campaign)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {r["id"]: r for r in records(campaign)}
    running = [i for i, r in before.items() if r["state"] == "running"]
    assert running, before
    time.sleep(0.5)  # some of them end while no controller watches
    resume = start_run(campaign, "resume")
    assert finish(resume, campaign, 2 * within) == 0, run_log(campaign)
    assert "re-attached" in run_log(campaign)
    recs = check_campaign(campaign, 12, kind=kind)  # attempt 1 everywhere: nothing ran twice
    by_id = {r["id"]: r for r in recs}
    for execution_id in running:  # re-attached: the same run directory as before the kill
        assert by_id[execution_id]["remote_dir"] == before[execution_id]["remote_dir"]
    return before, running, by_id


def test_controller_killed_then_resume_reattaches(devcluster, tmp_path):
    # Executions of 3 s on 4 slots: at the kill some have finished, 4 run, the rest never started.
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="ssh", n=12, nap=3.0)
    before, running, after = _kill_mid_run_then_resume(campaign, profile, "ssh", 90)
    for execution_id in running:  # and the same slot
        assert after[execution_id]["slot"] == before[execution_id]["slot"]


@pytest.mark.parametrize("launcher", ["agent", "srun"])
def test_controller_killed_on_slurm_then_resume_reattaches(devcluster, tmp_path, launcher):
    """The same on Slurm: the executions outlive the controller inside its allocation; the resume
    re-attaches to them, runs the rest, and no allocation of the campaign is left holding nodes."""
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher=launcher, n=12,
                                         nap=3.0, nodes=2)
    try:
        _kill_mid_run_then_resume(campaign, profile, "slurm", 120)
        assert wait_until(lambda: not our_jobs(devcluster, profile), 30), our_jobs(devcluster, profile)
        ledger = campaign / ".git" / "orchestra" / "allocations"
        assert not ledger.exists() or not list(ledger.iterdir()), list(ledger.iterdir())  # no record left
    finally:
        cancel_ours(devcluster, profile)


def test_sshd_restart_mid_run_on_slurm_prints_no_traceback(devcluster, tmp_path):
    """Every connection to the frontend drops (the agents' srun links, the squeue poll, what collects):
    the run goes on, finishes every execution, gives its allocation back, and prints no traceback and no
    failed scheduler command; a drop it recovers from within seconds is not worth a line."""
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher="agent", n=16,
                                         nap=2.5, nodes=2)
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    try:
        assert wait_until(lambda: _running_at_least(campaign, 4) and our_jobs(devcluster, profile), 90), \
            run_log(campaign)
        restart = subprocess.run(["bash", str(SCRIPT), "restart-sshd"], capture_output=True, text=True, timeout=60)
        assert restart.returncode == 0, restart.stderr
        code = finish(proc, campaign, 240)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = run_log(campaign)
    try:
        assert code == 0, log
        assert "Traceback" not in log and "greenlet" not in log.lower(), log
        assert "failed:" not in log and "re-attaching to the agent failed" not in log, log
        assert wait_until(lambda: not our_jobs(devcluster, profile), 30), our_jobs(devcluster, profile)
    finally:
        cancel_ours(devcluster, profile)
    check_campaign(campaign, 16, kind="slurm", allow_retries=True)
