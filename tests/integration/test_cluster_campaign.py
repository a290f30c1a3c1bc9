"""`expegit run` end to end on the dev cluster: a campaign over real SSH and real Slurm.

Each test builds a campaign whose executions write their parameter, slot and node into an output, runs it
with `expegit run --profile P` in a subprocess (as a user does), and checks every execution branch: one
`finished` commit, its output committed, its record naming the host/node and slot it really ran on, and
no two executions on one slot at the same time. The helpers are shared with test_faults.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, cli, git, make_campaign

WORK_PY = """\
import os, sys, time
time.sleep(float(os.environ.get("NAP", "0.3")))
with open("out.txt", "w") as f:
    f.write(f"{sys.argv[1]} {os.environ.get('ORCHESTRA_SLOT')} {os.environ.get('ORCHESTRA_NODE', '-')} "
            f"{os.environ.get('SLURMD_NODENAME', '-')}\\n")
print("done", sys.argv[1])
"""


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def cluster_campaign(root: Path, devcluster, *, n: int = 20, nap: float = 0.3, kind: str = "ssh",
                     launcher: str = "srun", slots: int = 4, nodes: int = 4, extra_profile: str = "") -> tuple[Path, str]:
    """A campaign of ``n`` executions and one remote profile (unique name and workdir); returns (dir, profile)."""
    name = unique(kind)
    workdir = f"/tmp/orchestra-test-work/{name}"
    if kind == "ssh":
        profile = (f"{{kind: ssh, host: devcluster, slots: {slots}, ssh_config: {devcluster.ssh_config}, "
                   f"workdir: {workdir}, poll_interval: 0.3{extra_profile}}}")
    else:
        profile = (f"{{kind: slurm, host: devcluster, ssh_config: {devcluster.ssh_config}, slots_per_node: 4, "
                   f"launcher: {launcher}, workdir: {workdir}, poll_interval: 0.3, squeue_interval: 1, "
                   f"idle_release: 1, allocation: {{nodes: {nodes}, walltime: '00:15:00'}}{extra_profile}}}")
    manifest = f"""\
name: cluster-campaign
command: python3 work.py {{i}}
parameters:
  i: {{type: int, low: 1, high: {n}}}
env: {{NAP: "{nap}"}}
outputs: [out.txt]
retries: {{max: 2, on: [node-failure, walltime]}}
profiles:
  {name}: {profile}
"""
    return make_campaign(root, manifest, {"work.py": WORK_PY}), name


def records(campaign: Path) -> list[dict]:
    result = cli(campaign, "expegit", "list", "--json", check=True)
    return json.loads(result.stdout)


def journal(campaign: Path, execution_id: str) -> list[str]:
    return git(campaign, "log", "--format=%s", f"executions/{execution_id}").stdout.splitlines()


def check_campaign(campaign: Path, n: int, *, kind: str, slots: int = 4, allow_retries: bool = False) -> list[dict]:
    """Every execution finished and committed exactly once with its output; host/slot/node recorded right."""
    recs = records(campaign)
    assert len(recs) == n, f"{len(recs)} executions for {n}"
    seen = []
    for rec in recs:
        subjects = journal(campaign, rec["id"])
        finished = [s for s in subjects if s.startswith("finished")]
        assert rec["state"] == "finished", (rec, subjects)
        assert len(finished) == 1, (rec["id"], subjects)
        assert subjects[0].startswith("finished"), subjects  # nothing committed after the result
        if not allow_retries:
            assert rec["attempt"] == 1, (rec, subjects)
        assert rec["outputs"] == ["out.txt"], rec
        out = git(campaign, "show", f"executions/{rec['id']}:out.txt").stdout.split()
        stdout = git(campaign, "show", f"executions/{rec['id']}:.orchestra/stdout").stdout
        i = rec["parameters"]["i"]
        assert out[0] == str(i) and stdout == f"done {i}\n", (rec, out, stdout)
        assert out[1] == str(rec["slot"]), (rec, out)
        if kind == "ssh":
            assert rec["host"] == "devcluster" and 0 <= rec["slot"] < slots, rec
        else:
            # The record names the frontend reached by SSH as host and the Slurm node it ran on as node.
            node = rec.get("node") or rec["host"]
            assert node in {f"node{k}" for k in range(1, 5)}, rec
            assert rec["host"] in ("devcluster", node), rec
            assert out[2] == node and out[3] == node, (rec, out)  # ORCHESTRA_NODE, SLURMD_NODENAME
        seen.append(i)
    assert sorted(seen) == list(range(1, n + 1))
    # No two executions on one slot at once (same allocation numbering: slot indexes are unique per run).
    by_slot: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for rec in recs:
        by_slot.setdefault((rec.get("node") or rec["host"], rec["slot"]), []).append((rec["started"], rec["ended"]))
    for key, spans in by_slot.items():
        spans.sort()
        for (_s1, e1), (s2, _e2) in zip(spans, spans[1:]):
            assert e1 <= s2, f"slot {key} ran two executions at once: {spans}"
    return recs


def our_jobs(devcluster, profile: str) -> list[str]:
    return devcluster.slurm(f"squeue -h --name=orchestra-{profile} -o %i").split()


def cancel_ours(devcluster, profile: str) -> None:
    jobs = our_jobs(devcluster, profile)
    if jobs:
        devcluster.slurm("scancel " + " ".join(jobs))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def start_run(campaign: Path, *args: str) -> subprocess.Popen:
    """`expegit run` in the background, its output in files (no pipe to fill up)."""
    env = dict(os.environ, **GIT_ENV)
    out = open(campaign.parent / f"{campaign.name}.run.log", "w")
    return subprocess.Popen([sys.executable, "-m", "expegit", *args], cwd=campaign, env=env, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def run_log(campaign: Path) -> str:
    path = campaign.parent / f"{campaign.name}.run.log"
    return path.read_text() if path.exists() else ""


def finish(proc: subprocess.Popen, campaign: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"expegit did not finish within {timeout}s:\n{run_log(campaign)[-3000:]}")


def count_commits(campaign: Path, prefix: str) -> int:
    """Executions whose branch tip subject starts with ``prefix`` (e.g. 'running', 'finished')."""
    out = git(campaign, "for-each-ref", "--format=%(subject)", "refs/heads/executions").stdout
    return sum(1 for line in out.splitlines() if line.startswith(prefix))


# --------------------------------------------------------------------------------------------- tests
def test_campaign_over_ssh(devcluster, tmp_path):
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="ssh", n=20)
    result = cli(campaign, "expegit", "run", "--grid", "--profile", profile, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 finished, 0 failed" in result.stderr
    recs = check_campaign(campaign, 20, kind="ssh")
    assert len({r["slot"] for r in recs}) == 4  # spread over every slot
    # Run directories are removed once committed (the agent keeps a few hidden spares to recycle);
    # the code cache stays.
    workdir = f"/tmp/orchestra-test-work/{profile}"
    assert [name for name in os.listdir(f"{workdir}/runs") if not name.startswith(".spare-")] == []


def test_leave_all_keeps_every_remote_run_directory_after_its_commit(devcluster, tmp_path):
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="ssh", n=6)
    result = cli(campaign, "expegit", "run", "--grid", "--profile", profile, "--leave", "all", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    recs = check_campaign(campaign, 6, kind="ssh")
    workdir = f"/tmp/orchestra-test-work/{profile}"
    assert sorted(n for n in os.listdir(f"{workdir}/runs") if not n.startswith(".")) == sorted(r["id"] for r in recs)
    for rec in recs:  # the record says where it is, and it holds what the execution left
        assert rec["remote_dir"] == f"{workdir}/runs/{rec['id']}"
        assert open(f"{rec['remote_dir']}/out.txt").read().split()[0] == str(rec["parameters"]["i"])


@pytest.mark.parametrize("launcher", ["srun", "agent"])
def test_campaign_over_slurm(devcluster, tmp_path, launcher):
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher=launcher, n=20)
    try:
        result = cli(campaign, "expegit", "run", "--grid", "--profile", profile, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        recs = check_campaign(campaign, 20, kind="slurm")
        assert len({r.get("node") or r["host"] for r in recs}) >= 2, recs  # placed over several nodes
        # The allocation is given back when the run ends.
        assert wait_until(lambda: not our_jobs(devcluster, profile), 20)
    finally:
        cancel_ours(devcluster, profile)


def test_an_allocation_a_dead_controller_held_is_given_back_by_resume(devcluster, tmp_path):
    """Its record says whose it was: `run` leaves it alone and says so, `resume` cancels it even with
    no execution left to resume; allocations of other campaigns with the same job name are not touched."""
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher="agent", n=2,
                                         nodes=1)

    def hold_a_node() -> str:
        submit = subprocess.run(["ssh", "-F", devcluster.ssh_config, "devcluster",
                                 f"sbatch --parsable -J orchestra-{profile} -N1 --exclusive -t 10 -o /dev/null "
                                 "--wrap 'sleep 600'"], capture_output=True, text=True, timeout=60)
        assert submit.returncode == 0, submit.stderr
        return submit.stdout.strip().split(";")[0]

    orphan, someone_elses = hold_a_node(), hold_a_node()
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        ledger = campaign / ".git" / "orchestra" / "allocations"
        ledger.mkdir(parents=True, exist_ok=True)
        (ledger / str(dead.pid)).write_text(f"{profile}\t{orphan}\n")
        run = cli(campaign, "expegit", "run", "--grid", "--profile", profile)
        assert run.returncode == 0, run.stderr
        assert orphan in run.stderr and "expegit resume" in run.stderr, run.stderr
        assert orphan in our_jobs(devcluster, profile)
        # The run gave its own allocation back at its end: only the dead controller's record is left.
        assert [p.name for p in ledger.iterdir()] == [str(dead.pid)]
        resume = cli(campaign, "expegit", "resume")
        assert resume.returncode == 0, resume.stderr
        assert f"released allocation(s) {orphan}" in resume.stderr, resume.stderr
        assert wait_until(lambda: orphan not in our_jobs(devcluster, profile), 30)
        assert someone_elses in our_jobs(devcluster, profile)
        assert not list(ledger.iterdir())
    finally:
        cancel_ours(devcluster, profile)


def test_a_run_waiting_for_its_allocation_says_why(devcluster, tmp_path):
    """A held placeholder stays pending: the run says which allocation it waits on and the scheduler's
    reason, instead of sitting silent at 0 running; Ctrl-C then ends it at once (it used to wait for a
    slot forever), gives the allocation back and leaves the executions to resume."""
    campaign, profile = cluster_campaign(tmp_path / "c", devcluster, kind="slurm", launcher="agent", n=2,
                                         nodes=1)
    manifest = campaign / "orchestra.yaml"
    manifest.write_text(manifest.read_text().replace("walltime: '00:15:00'}", "walltime: '00:15:00', extra: [--hold]}"))
    git(campaign, "commit", "-qam", "hold the allocation")
    proc = start_run(campaign, "run", "--grid", "--profile", profile)
    try:
        assert wait_until(lambda: "pending (JobHeldUser)" in run_log(campaign), 30), run_log(campaign)
        line = next(l for l in run_log(campaign).splitlines() if "JobHeldUser" in l)
        assert line.startswith("waiting: allocation ") and our_jobs(devcluster, profile)[0] in line, line
        proc.send_signal(signal.SIGINT)
        assert finish(proc, campaign, 30) == 130, run_log(campaign)
        assert {r["state"] for r in records(campaign)} == {"created"}
        assert wait_until(lambda: not our_jobs(devcluster, profile), 30), our_jobs(devcluster, profile)
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_ours(devcluster, profile)
