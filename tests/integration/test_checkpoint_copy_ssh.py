"""A node killed mid-run loses at most the time since its last checkpoint copy (issue 13), on real sshd.

One campaign, one SSH profile of two hosts on the dev cluster's loopback sshd: ``devcluster`` and
``devcluster-peer`` are two users, so the workdir ``~/.orchestra-test-...`` is a different directory on
each and nothing is shared (the profile's default ``shared: false``). The execution (CKPT_PY of
test_checkpoint_slurm.py) counts steps of one second and saves its state after each; ``checkpoint:
{every: 2s}`` copies its checkpoint directory back to the campaign's ``.git/orchestra/checkpoints/<id>/``.
Mid-run, once the first host is ahead of its last copy, everything it runs for the campaign (the
execution's process group, and the agent) is killed with SIGKILL and its checkpoint directory moved out
of reach, as a node that died would leave it: no exit code, no last copy. The retry runs on
the other host, whose workdir never saw the checkpoint: it resumes from the controller's last copy,
counted in steps (no timed assertion), and the result is right.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers import cli, make_campaign

from .test_checkpoint_slurm import CKPT_PY
from .test_cluster_campaign import finish, journal, records, run_log, start_run, unique, wait_until

EVERY = 2  # seconds between copies back
STEP = 1  # seconds per step of the execution
SLACK_STEPS = 3  # the step in progress, a copy in flight, a poll


def _home(alias: str) -> str:
    user = {"devcluster": os.environ.get("ORCHESTRA_DEVCLUSTER_USER", "orchestra"),
            "devcluster-peer": os.environ.get("ORCHESTRA_DEVCLUSTER_PEER", "orchestra-peer")}[alias]
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        pytest.fail(f"the dev cluster's user {user} is missing (tests/cluster/devcluster.sh up makes it)")


def _step(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _ours(workdir: str) -> list[int]:
    """Processes of this test's campaign on one host: their command line or directory is in its workdir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if workdir in cmdline or cwd.startswith(workdir + "/"):
            found.append(int(entry.name))
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _kill_node(workdir: str, execution_id: str) -> None:
    """What a dead node leaves: its executions and its agent gone at once, no exit code written. All are
    frozen first (SIGSTOP), so the agent never sees the execution die; then killed, the agent first."""
    text = Path(workdir, "runs", execution_id, ".orchestra", "pid").read_text().strip()
    group = int(text) if text.isdigit() else None
    pids = _ours(workdir)
    if group is not None:
        os.killpg(group, signal.SIGSTOP)
    _signal(pids, signal.SIGSTOP)
    _signal([p for p in pids if group is None or _group(p) != group], signal.SIGKILL)
    if group is not None:
        os.killpg(group, signal.SIGKILL)
    _signal(pids, signal.SIGKILL)


@pytest.mark.parametrize("launcher", ["agent", "shell"])
def test_a_node_killed_mid_run_loses_at_most_the_time_since_its_last_checkpoint_copy(devcluster, tmp_path, request,
                                                                                        launcher) -> None:
    steps = 22
    name = unique("ckcopy")
    hosts = ["devcluster", "devcluster-peer"]
    workdirs = {h: f"{_home(h)}/.orchestra-test-{name}" for h in hosts}

    def clean() -> None:
        for workdir in workdirs.values():
            for pid in _ours(workdir):  # the agents the run (re)started for this campaign
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(workdir, ignore_errors=True)

    request.addfinalizer(clean)
    manifest = f"""\
name: checkpoint-copies
command: python3 ckpt.py
env: {{STEPS: "{steps}", STEP: "{STEP}"}}
outputs: [out.txt]
timeout: 5m
checkpoint: {{signal: USR1, grace: 20s, every: {EVERY}s}}
retries: {{max: 2, on: [node-failure], backoff: 0}}
profiles:
  {name}: {{kind: ssh, hosts: [devcluster, devcluster-peer], slots: 1, ssh_config: {devcluster.ssh_config},
           launcher: {launcher}, workdir: '~/.orchestra-test-{name}', poll_interval: 0.3}}
"""
    campaign = make_campaign(tmp_path / "c", manifest, {"ckpt.py": CKPT_PY})
    copies = campaign / ".git" / "orchestra" / "checkpoints"
    proc = start_run(campaign, "run", "--profile", name)
    try:
        # Running on the first host, and copied back at least twice past the start (a schedule, not the
        # copy between attempts: there is none for a lost node).
        assert wait_until(lambda: any(_step(p) >= 4 for p in copies.glob("*/state.json")), 120), run_log(campaign)
        (copy,) = copies.glob("*/state.json")
        execution_id = copy.parent.name
        first = next(h for h in hosts if Path(workdirs[h], "checkpoints", execution_id, "state.json").exists())
        other = next(h for h in hosts if h != first)
        assert not Path(workdirs[other], "checkpoints", execution_id).exists()  # nothing shared
        there = Path(workdirs[first], "checkpoints", execution_id, "state.json")
        shown = cli(campaign, "expegit", "show", execution_id, check=True).stdout
        assert f"checkpoint: copied back from {first} at " in shown, shown
        status = cli(campaign, "expegit", "status", check=True).stdout
        assert re.search(rf"running {execution_id} on {first} slot 0 .*checkpoint copied \d+s ago", status), status
        # Killed while the node is ahead of its last copy: that is the work a lost node loses.
        assert wait_until(lambda: _step(there) > _step(copy), 60), run_log(campaign)
        copied_before = _step(copy)
        _kill_node(workdirs[first], execution_id)
        reached = _step(there)  # where the lost node had got to: what a shared disk would have kept
        # Its disk goes with it: while the controller notices the loss, its copies find nothing there
        # (as they would find no host), so the next attempt can only have what was copied before.
        there.parent.rename(Path(workdirs[first], f"lost-{execution_id}"))
        code = finish(proc, campaign, 300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = run_log(campaign)
    assert code == 0, log
    assert "Traceback" not in log, log
    (rec,) = records(campaign)
    out = json.loads(cli(campaign, "git", "show", f"executions/{rec['id']}:out.txt", check=True).stdout)
    subjects = journal(campaign, rec["id"])
    assert rec["state"] == "finished" and rec["attempt"] == 2, (rec, subjects)
    assert out["step"] == steps and out["acc"] == sum(range(steps)), out  # no step lost or counted twice
    resumed = out["starts"][1]
    assert out["starts"][0] == 0 and len(out["starts"]) == 2, out
    # The second attempt, on a host that never had the directory, started from the controller's copy:
    # at least the copy seen before the kill, at most what the lost node had reached, and it lost no
    # more than the steps of one copy period plus slack.
    print(f"copied before the kill: step {copied_before}; the lost node reached {reached}; resumed at {resumed}")
    assert copied_before <= resumed <= reached, (copied_before, resumed, reached, out)
    assert reached - resumed <= EVERY // STEP + SLACK_STEPS, (reached, resumed)
    assert re.match(rf"attempt 2 on {other} slot 0, resumed from checkpoint of \d\d:\d\d$", subjects[1]), subjects
    assert any(s.startswith("failed:") and "retrying (attempt 2)" in s for s in subjects), subjects
    assert any(s.startswith(f"running on {first}") for s in subjects), subjects
    # Finished: the copy and both hosts' directories are gone (no --leave).
    assert not list(copies.glob(f"{execution_id}*")), list(copies.iterdir())
    for workdir in workdirs.values():
        assert not Path(workdir, "checkpoints", execution_id).exists(), workdir
