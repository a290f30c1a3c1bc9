"""Runs that outlive an allocation, on the dev cluster's real Slurm: a walltime shorter than the run, a
preemption by a job of the `urgent` partition, a lost allocation, and a controller killed with kill -9.

The execution (CKPT_PY) counts STEPS steps of STEP seconds, saving its state to ORCHESTRA_CHECKPOINT_DIR
after each, and on SIGUSR1 saves and exits. Its result (the sum of the steps) is right only if no step
was lost or counted twice, and it writes down the step each attempt started from, so a test sees which
attempt resumed from what. Only this test's own jobs are cancelled (by id).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import cli, make_campaign

from .test_cluster_campaign import (cancel_ours, finish, journal, our_jobs, records, run_log, start_run, unique,
                                    wait_until)

CKPT_PY = """\
import json, os, signal, sys, time
steps, step_time = int(os.environ["STEPS"]), float(os.environ["STEP"])
directory = os.environ["ORCHESTRA_CHECKPOINT_DIR"]
path = os.path.join(directory, "state.json")
state = {"step": 0, "acc": 0, "starts": []}
if os.path.exists(path):
    with open(path) as f:
        state = json.load(f)
state["starts"].append(state["step"])
warned = []
signal.signal(signal.SIGUSR1, lambda *_: warned.append(1))


def save():
    with open(path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(path + ".tmp", path)


save()
while state["step"] < steps:
    time.sleep(step_time)
    state["acc"] += state["step"]
    state["step"] += 1
    save()
    if warned:
        print("warned at step", state["step"], flush=True)
        sys.exit(0)
with open("out.txt", "w") as f:
    json.dump(state, f)
print("done", state["acc"], flush=True)
"""


def ckpt_campaign(root: Path, devcluster, *, steps: int, walltime: str, partition: str | None = None,
                  grace: str = "20s") -> tuple[Path, str, str]:
    """A one-execution checkpointing campaign on a one-node, one-slot Slurm profile: (dir, profile, workdir)."""
    name = unique("ckpt")
    workdir = f"/tmp/orchestra-test-work/{name}"
    part = f", partition: {partition}" if partition else ""
    manifest = f"""\
name: checkpointing
command: python3 ckpt.py
env: {{STEPS: "{steps}", STEP: "1"}}
outputs: [out.txt]
timeout: 3m
checkpoint: {{signal: USR1, grace: {grace}}}
retries: {{max: 3, on: [walltime, preempted, node-failure], backoff: 0}}
profiles:
  {name}: {{kind: slurm, host: devcluster, ssh_config: {devcluster.ssh_config}, slots_per_node: 1,
           launcher: agent, workdir: {workdir}, poll_interval: 0.3, squeue_interval: 1, idle_release: 1,
           allocation: {{nodes: 1, walltime: '{walltime}'{part}}}}}
"""
    return make_campaign(root, manifest, {"ckpt.py": CKPT_PY}), name, workdir


def state_of(workdir: str) -> dict:
    """The checkpoint of the campaign's one execution, read where the nodes share it ({} before any)."""
    for path in Path(workdir, "checkpoints").glob("*/state.json"):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
    return {}


def result_of(campaign: Path) -> tuple[dict, dict, list[str]]:
    (rec,) = records(campaign)
    out = json.loads(cli(campaign, "git", "show", f"executions/{rec['id']}:out.txt", check=True).stdout)
    return rec, out, journal(campaign, rec["id"])


def check_resumed(campaign: Path, workdir: str, steps: int, failure: str) -> tuple[dict, dict]:
    rec, out, subjects = result_of(campaign)
    assert rec["state"] == "finished" and rec["attempt"] >= 2, (rec, subjects)
    assert out["acc"] == sum(range(steps)) and out["step"] == steps, out  # no step lost or counted twice
    assert out["starts"][0] == 0 and all(s > 0 for s in out["starts"][1:]), out  # later ones resumed
    assert len(out["starts"]) == rec["attempt"], (out, rec)
    assert re.match(r"attempt \d+ on \S+ slot \d+, resumed from checkpoint of \d\d:\d\d$", subjects[1]), subjects
    assert any(s.startswith("failed:") and failure in s and "retrying (attempt 2)" in s for s in subjects), subjects
    assert any(s.startswith("running on") for s in subjects), subjects  # the first attempt
    assert not list(Path(workdir, "checkpoints").glob("*/state.json")), "checkpoint left after finishing"
    return rec, out


def test_an_execution_longer_than_the_walltime_is_warned_requeued_and_resumed(devcluster, tmp_path) -> None:
    steps = 45  # ~45 s of work; a 1-minute allocation warns it at ~35 s (grace 20 s + 5 s slack)
    campaign, profile, workdir = ckpt_campaign(tmp_path / "c", devcluster, steps=steps, walltime="00:01:00")
    proc = start_run(campaign, "run", "--profile", profile)
    try:
        code = finish(proc, campaign, 400)
    finally:
        cancel_ours(devcluster, profile)
    log = run_log(campaign)
    assert code == 0, log
    assert "Traceback" not in log, log
    rec, out = check_resumed(campaign, workdir, steps, "walltime")
    stdout = cli(campaign, "expegit", "show", rec["id"], check=True).stdout
    assert "done" in stdout, stdout


def _submit_urgent(devcluster) -> str:
    """A job of the `urgent` partition that takes every CPU of node4: it preempts what runs there."""
    out = devcluster.slurm("sbatch --parsable -p urgent -N1 --exclusive -t 2 -J orchestra-test-urgent "
                           "-o /dev/null --wrap 'sleep 10'")
    job = out.strip().split(";")[0]
    assert job.isdigit(), out
    return job


def test_a_preempted_allocation_resumes_its_execution_from_its_checkpoint(devcluster, tmp_path) -> None:
    steps = 30
    campaign, profile, workdir = ckpt_campaign(tmp_path / "c", devcluster, steps=steps, walltime="00:15:00",
                                               partition="preemptible")
    proc = start_run(campaign, "run", "--profile", profile)
    urgent = None
    try:
        assert wait_until(lambda: state_of(workdir).get("step", 0) >= 5, 180), run_log(campaign)
        urgent = _submit_urgent(devcluster)
        code = finish(proc, campaign, 400)
    finally:
        if proc.poll() is None:
            proc.kill()
        if urgent is not None:
            devcluster.slurm(f"scancel {urgent}")
        cancel_ours(devcluster, profile)
    log = run_log(campaign)
    assert code == 0, log
    assert "Traceback" not in log, log
    _, out = check_resumed(campaign, workdir, steps, "requeued")
    assert out["starts"][1] >= 5, out  # resumed from where the checkpoint was when it was preempted


def test_a_lost_allocation_loses_at_most_the_time_since_the_last_checkpoint(devcluster, tmp_path) -> None:
    steps = 25
    campaign, profile, workdir = ckpt_campaign(tmp_path / "c", devcluster, steps=steps, walltime="00:15:00")
    proc = start_run(campaign, "run", "--profile", profile)
    try:
        assert wait_until(lambda: state_of(workdir).get("step", 0) >= 5, 180), run_log(campaign)
        (job,) = our_jobs(devcluster, profile)
        saved = state_of(workdir)["step"]
        devcluster.slurm(f"scancel {job}")  # the allocation (its node, for the execution) is gone
        code = finish(proc, campaign, 400)
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_ours(devcluster, profile)
    log = run_log(campaign)
    assert code == 0, log
    _, out = check_resumed(campaign, workdir, steps, "ended under the execution")
    assert out["starts"][1] >= saved, (out, saved)  # at most the step in progress was lost


def _killed_at_step_3_then_resumed(campaign: Path, devcluster, profile: str, workdir: str, within: float) -> int:
    """`expegit run` killed with kill -9 once the execution saved step 3, then `expegit resume`: its exit code."""
    proc = start_run(campaign, "run", "--profile", profile)
    try:
        assert wait_until(lambda: state_of(workdir).get("step", 0) >= 3, 180), run_log(campaign)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return finish(start_run(campaign, "resume"), campaign, within)
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_ours(devcluster, profile)


def test_a_controller_killed_while_a_checkpointing_execution_runs_is_resumed_without_rerunning(
        devcluster, tmp_path) -> None:
    steps = 20
    campaign, profile, workdir = ckpt_campaign(tmp_path / "c", devcluster, steps=steps, walltime="00:15:00")
    code = _killed_at_step_3_then_resumed(campaign, devcluster, profile, workdir, 300)
    assert code == 0, run_log(campaign)
    rec, out, subjects = result_of(campaign)
    assert rec["state"] == "finished" and rec["attempt"] == 1, (rec, subjects)
    assert out["starts"] == [0] and out["acc"] == sum(range(steps)), out  # re-attached: ran once
    assert not any(s.startswith("failed") for s in subjects), subjects
    assert not list(Path(workdir, "checkpoints").glob("*/state.json"))


def test_a_resumed_controller_still_warns_a_reattached_execution_before_the_walltime(devcluster, tmp_path) -> None:
    """kill -9 of the controller, then `expegit resume`: the execution keeps running in the dead
    controller's allocation, which the resume adopts; it must still be signalled before that allocation's
    walltime (its end read from the adopted allocation), requeued and resumed from its checkpoint."""
    steps = 60  # ~60 s of work in a 1-minute allocation: the warning (grace 20 s) must come after the resume
    campaign, profile, workdir = ckpt_campaign(tmp_path / "c", devcluster, steps=steps, walltime="00:01:00")
    code = _killed_at_step_3_then_resumed(campaign, devcluster, profile, workdir, 400)
    log = run_log(campaign)
    assert code == 0, log
    assert "Traceback" not in log, log
    rec, out = check_resumed(campaign, workdir, steps, "walltime")
    assert out["starts"][1] >= 3, out  # the second attempt resumed where the warned one saved
