"""Pure render/parse functions of the Slurm and command providers: no cluster, no network."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.errors import ProfileError, SchedulerError
from runaway.profiles import AllocationSpec
from runaway.launchers.srun import srun_prefix
from runaway.providers import JobState
from runaway.providers.command import parse_list_nodes_output, render_template
from runaway.providers.slurm import (parse_nodelist, parse_ready_file, parse_sbatch_output, parse_slurm_time,
                                     parse_squeue_output, render_sbatch_script)

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("text, nodes", [
    ("node1", ["node1"]),
    ("node[1-3,5]", ["node1", "node2", "node3", "node5"]),
    ("gpu[01-03]", ["gpu01", "gpu02", "gpu03"]),
    ("node[8-11]", ["node8", "node9", "node10", "node11"]),
    ("a[1-2],b,c[07,10]", ["a1", "a2", "b", "c07", "c10"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("node[1-6:2]", ["node1", "node3", "node5"]),
    ("login-1.cluster", ["login-1.cluster"]),
    ("", []),
    ("(null)", []),
])
def test_parse_nodelist(text, nodes):
    assert parse_nodelist(text) == nodes


@pytest.mark.parametrize("bad", ["node[1-3", "node1-3]", "node[3-1]", "node[a-b]", "node[]"])
def test_parse_nodelist_rejects_garbage(bad):
    with pytest.raises(SchedulerError):
        parse_nodelist(bad)


@pytest.mark.parametrize("text, seconds", [
    ("1-02:03:04", 93784.0), ("02:03:04", 7384.0), ("03:04", 184.0), ("5", 300.0), ("2-03", 183600.0),
    ("1-02:03", 93780.0), ("UNLIMITED", None), ("NOT_SET", None), ("INVALID", None), ("", None),
])
def test_parse_slurm_time(text, seconds):
    assert parse_slurm_time(text) == seconds


def test_parse_slurm_time_rejects_garbage():
    with pytest.raises(SchedulerError):
        parse_slurm_time("soon")


def test_parse_squeue_output():
    text = ("101|RUNNING|3:58:12|node[1-2]|None\n"
            "102|PENDING|4:00:00||Resources\n"
            "103_4|COMPLETING|0:00|node3|None\n")
    jobs = parse_squeue_output(text)
    assert jobs["101"] == JobState("101", "RUNNING", 14292.0, ("node1", "node2"), "None")
    assert jobs["101"].running and jobs["102"].pending and jobs["102"].nodes == ()
    assert jobs["103_4"].state == "COMPLETING"
    assert parse_squeue_output("") == {}
    with pytest.raises(SchedulerError):
        parse_squeue_output("slurm_load_jobs error: Unable to contact slurm controller")


@pytest.mark.parametrize("text, job", [
    ("12345\n", "12345"), ("12345;cluster2\n", "12345"), ("Submitted batch job 77\n", "77"),
    ("sbatch: warning: something\n88\n", "88"),
])
def test_parse_sbatch_output(text, job):
    assert parse_sbatch_output(text) == job


def test_parse_sbatch_output_without_id():
    with pytest.raises(SchedulerError):
        parse_sbatch_output("sbatch: error: Batch job submission failed: Invalid account")


def test_render_sbatch_script_golden():
    full = AllocationSpec(nodes=2, walltime=4 * 3600, partition="cpu", account="proj-42", qos="normal",
                          extra=("--constraint=haswell", "--mem=0"))
    assert render_sbatch_script(full, job_name="orchestra-cluster") == (GOLDEN / "sbatch_full.sh").read_text()
    minimal = AllocationSpec(nodes=1, walltime=90)
    assert render_sbatch_script(minimal, job_name="orchestra") == (GOLDEN / "sbatch_minimal.sh").read_text()


def test_sbatch_script_with_a_ready_file_runs_and_writes_what_parse_ready_file_reads(tmp_path):
    """The placeholder job tells the controller it started (time and nodes) through a file: the script
    is run here by a real sh with the variables Slurm would set, and its file parsed back."""
    import subprocess

    ready = tmp_path / "it's ready"
    ready.mkdir()
    script = render_sbatch_script(AllocationSpec(nodes=2, walltime=60), ready_dir=str(ready))
    assert "exec sleep 120" in script
    runnable = script.replace("exec sleep 120", "exit 0")
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[1-2]", "PATH": "/usr/bin:/bin"}
    subprocess.run(["sh", "-c", runnable], env=env, check=True)
    start, nodes = parse_ready_file((ready / "4242").read_text())
    assert nodes == ["node1", "node2"] and start > 1e9
    assert not (ready / "4242.tmp").exists()


@pytest.mark.parametrize("text", ["", "12", "12 node[1-2] extra", "soon node1", "12 node[2-1"])
def test_parse_ready_file_refuses_partial_or_garbled_content(text):
    assert parse_ready_file(text) is None


@pytest.mark.parametrize("spec", [
    AllocationSpec(partition="cpu\n#SBATCH --uid=0"),
    AllocationSpec(account="a b"),
    AllocationSpec(extra=("--mem=1\n#SBATCH --x",)),
    AllocationSpec(extra=("constraint=x",)),
])
def test_render_sbatch_script_refuses_injection(spec):
    with pytest.raises(ProfileError):
        render_sbatch_script(spec)


def test_render_template_quotes_values_and_keeps_other_braces():
    out = render_template("qstat -f {job_id} | awk '{print $1}' {missing}", {"job_id": "1; rm -rf /"})
    assert out == "qstat -f '1; rm -rf /' | awk '{print $1}' {missing}"


def test_srun_prefix():
    assert srun_prefix("12", "node[1]") == \
        "srun --jobid=12 --nodelist='node[1]' -N1 -n1 --overlap --quiet --kill-on-bad-exit=0 "


def test_parse_list_nodes_output():
    text = ("@@orchestra-job 5\nnode1\nnode2 node3\n@@orchestra-job-rc 0\n"
            "@@orchestra-job 6\n@@orchestra-job-rc 0\n"
            "@@orchestra-job 7\n@@orchestra-job-rc 1\n"
            "@@orchestra-job 8\nn[1-2],n4\n@@orchestra-job-rc 0\n")
    assert parse_list_nodes_output(text) == {
        "5": (0, ["node1", "node2", "node3"]), "6": (0, []), "7": (1, []), "8": (0, ["n1", "n2", "n4"])}


# ------------------------------------------------------------------------------- resources (issue 12)
from fractions import Fraction  # noqa: E402

from orchestra.resources import Request  # noqa: E402
from runaway.slurm_resources import (NodeRequest, NodeSize, derive_node_request, executions_per_node,  # noqa: E402
                                     grant_devices, node_capacities, parse_gres_gpus, parse_gres_indices,
                                     parse_min_memory, parse_scontrol_job, parse_sinfo_nodes, render_probe,
                                     render_sinfo)

G = 2**30


def test_render_sbatch_script_with_resources_golden():
    """With `resources:` the placeholder job asks for what each node must hold, not whole nodes."""
    spec = AllocationSpec(nodes=2, walltime=2 * 3600, partition="gpu")
    per_node = NodeRequest(cpus=8, gpus=4, memory=64 * G)
    assert render_sbatch_script(spec, job_name="orchestra-gpus", per_node=per_node) == \
        (GOLDEN / "sbatch_gpus.sh").read_text()
    # The profile says otherwise: --gpus-per-node, and whole nodes all the same.
    spec = AllocationSpec(nodes=1, walltime=600, exclusive=True, gpu_option="gpus-per-node")
    per_node = NodeRequest(cpus=2, gpus=1, gpu_option="gpus-per-node")
    assert render_sbatch_script(spec, job_name="orchestra-gpus", per_node=per_node) == \
        (GOLDEN / "sbatch_gpus_per_node_exclusive.sh").read_text()
    # No GPUs needed: no GPU line; no memory asked: no --mem.
    script = render_sbatch_script(AllocationSpec(), per_node=NodeRequest(cpus=3))
    assert "--cpus-per-task=3" in script and "gpu" not in script and "--mem" not in script
    assert "--exclusive" not in script
    # Without resources the script is exactly what it always was.
    assert "--exclusive" in render_sbatch_script(AllocationSpec()) and "cpus-per-task" not in \
        render_sbatch_script(AllocationSpec())


@pytest.mark.parametrize("text, count", [("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:2,nic:1", 2),
                                         ("gpu:a100:2,gpu:v100:1", 3), ("(null)", 0), ("", 0),
                                         ("nic:1", 0), ("gpu:a100:4(S:0-1),mps:400", 4)])
def test_parse_gres_gpus(text, count):
    assert parse_gres_gpus(text) == count


def test_parse_sinfo_nodes_counts_a_node_of_several_partitions_once():
    text = ("node1|4|4096|gpu:2\nnode2|4|4096|gpu:2\nnode4|4|4096|gpu:2\nnode4|4|4096|gpu:2\n"
            "big1|64|515000|gpu:a100:8(S:0-1)\ncpu1|32|1|(null)\n")
    sizes = parse_sinfo_nodes(text)
    assert NodeSize(4, 2, 4096 * 2**20, ("node1", "node2", "node4")) in sizes
    assert NodeSize(64, 8, 515000 * 2**20, ("big1",)) in sizes
    assert NodeSize(32, 0, None, ("cpu1",)) in sizes  # RealMemory=1: not configured
    assert render_sinfo("gpu") == "sinfo -N -h -p gpu -o '%N|%c|%m|%G'"
    with pytest.raises(SchedulerError, match="unexpected sinfo line"):
        parse_sinfo_nodes("garbage")


def test_parse_scontrol_show_job_d_per_node_grants():
    text = (GOLDEN / "scontrol_show_job_d.txt").read_text()
    grants = parse_scontrol_job(text)
    assert set(grants) == {"node1", "node2", "node3"}  # node[1-2] expanded
    assert grants["node1"].cpu_ids == (1, 2, 3) and grants["node1"].gpus == ("0", "1")
    assert grants["node1"].memory is None  # Mem=0: not a consumable
    assert grants["node3"].cpu_ids == (0, 2) and grants["node3"].gpus == ("3",)
    assert grants["node3"].memory == 1000 * 2**20
    assert parse_min_memory(text) == 1000 * 2**20
    assert grant_devices(text)["node2"] == ("0", "1")
    assert parse_gres_indices("gpu(IDX:0,2-3)") == ("0", "2", "3")
    assert parse_gres_indices("gpu:0(IDX:N/A)") == ()
    assert parse_scontrol_job("JobId=1 JobState=PENDING\n") == {}


def probe_output(head: str, lines: list[str]) -> str:
    return head + "--- probe\n" + "".join(f"probe|{line}\n" for line in lines)


def test_node_capacities_from_slurms_grant_and_what_a_step_sees():
    head = (GOLDEN / "scontrol_show_job_d.txt").read_text()
    # A real node: the step may run on the granted cores (task/affinity bound it), and sees the devices.
    caps = {c.name: c for c in node_capacities(
        probe_output(head, ["node1|1-3|0,1", "node2|0-7|0,1", "node3|0,2|0"]), "17184")}
    assert caps["17184/node1"].cores == (1, 2, 3) and caps["17184/node1"].gpus == ("0", "1")
    # task/none: the step may run anywhere on the machine: bound to what Slurm granted.
    assert caps["17184/node2"].cores == (1, 2, 3)
    # ConstrainDevices: the step sees its one device as 0 (CUDA renumbers): that is what executions get.
    assert caps["17184/node3"].gpus == ("0",) and caps["17184/node3"].memory == 1000 * 2**20
    # Memory not tracked: what the allocation asked for per node.
    assert caps["17184/node1"].memory == 1000 * 2**20
    # A node that claims more CPUs than its machine has (a test cluster): as many cores as exist.
    fake = node_capacities(probe_output(head, ["node1|0-1|unset", "node2|0-1|0,1", "node3|0-1|0"]), "9")
    assert fake[0].cores == (0, 1) and fake[0].gpus == ("0", "1")  # unset: Slurm's indices
    with pytest.raises(SchedulerError, match="node node3 did not answer"):
        node_capacities(probe_output(head, ["node1|1-3|0,1", "node2|0-7|0,1"]), "17184")
    assert "srun --jobid=17184 --overlap --whole -N3 --ntasks-per-node=1" in render_probe("17184", 3)


NODE = NodeSize(cpus=4, gpus=2, memory=4096 * 2**20)


@pytest.mark.parametrize("request_, count", [
    (Request(gpus=Fraction(1)), 2), (Request(gpus=Fraction(1, 2)), 4), (Request(gpus=Fraction(1, 4)), 4),
    (Request(cpus=3), 1), (Request(gpus=Fraction(3)), 0), (Request(memory=3 * G), 1), (Request(cpus=5), 0)])
def test_executions_per_node(request_, count):
    assert executions_per_node(request_, NODE) == count


def test_the_allocation_request_is_derived_from_what_the_executions_need():
    one = Request(gpus=Fraction(1))
    assert derive_node_request([one], NODE) == NodeRequest(cpus=2, gpus=2)
    # Fractions: four halves on one node need 2 devices and 4 cores; a node of 2 cores holds two.
    half = Request(gpus=Fraction(1, 2))
    assert derive_node_request([half], NODE) == NodeRequest(cpus=4, gpus=2)
    assert derive_node_request([half], NodeSize(2, 2, None)) == NodeRequest(cpus=2, gpus=1)
    # A mixed grid: the widest kind decides each resource, so every mix fits.
    two = Request(cpus=1, gpus=Fraction(2))
    assert derive_node_request([one, two], NODE) == NodeRequest(cpus=2, gpus=2)
    # A campaign smaller than a node asks for what it can use at once.
    assert derive_node_request([one], NODE, per_node=1) == NodeRequest(cpus=1, gpus=1)
    # Memory per execution becomes memory per node; no GPU request, no GPUs asked.
    assert derive_node_request([Request(cpus=2, memory=G)], NODE) == NodeRequest(cpus=4, gpus=0, memory=2 * G)
    assert derive_node_request([one], NODE, gpu_option="gpus-per-node").gpu_option == "gpus-per-node"


def test_parse_squeue_output_with_start_times_and_preemption_states():
    text = ("201|RUNNING|0:55|node4|None|2026-12-01T13:37:48\n"
            "202|PENDING|15:00||BeginTime|2026-12-01T13:40:00\n"
            "203|PREEMPTED|0:00|node4|None|N/A\n"
            "204|REQUEUE_HOLD|1:00||JobHeldAdmin|Unknown\n")
    jobs = parse_squeue_output(text)
    assert jobs["201"] == JobState("201", "RUNNING", 55.0, ("node4",), "None", "2026-12-01T13:37:48")
    assert jobs["202"].pending and jobs["202"].reason == "BeginTime"
    assert jobs["203"].state == "PREEMPTED" and jobs["203"].started == ""
    assert jobs["204"].pending and not jobs["204"].running
    from runaway.providers import ENDED_STATES
    assert "PREEMPTED" in ENDED_STATES
    from runaway.providers.slurm import SQUEUE_FORMAT
    assert SQUEUE_FORMAT.endswith("|%S")
