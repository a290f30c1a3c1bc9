"""Packing by resources on real Slurm (the dev cluster: 4 nodes x 4 CPUs x gpu:2 as GRES with fake device
files), end to end with `expegit run` as a user runs it.

Each execution records what it saw (CUDA_VISIBLE_DEVICES, os.sched_getaffinity, its node, start and end
times) and what Slurm says its allocation holds (`scontrol show job -d`, run from inside the execution
while the allocation is alive). The tests assert that executions running at the same time on one node
never shared a core or a whole device (fractions sum to at most 1 per device), that every device the
allocation was given was used, and that Slurm and Orchestra agree on the devices.
"""
from __future__ import annotations

import json
import uuid
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

from runaway.slurm_resources import grant_devices
from tests.helpers import cli, git, make_campaign
from tests.integration.test_cluster_campaign import cancel_ours, our_jobs, records, wait_until

PROBE_PY = """\
import json, os, subprocess, sys, time
start = time.time()
time.sleep(float(os.environ.get("NAP", "1.5")))
slurm = subprocess.run(["scontrol", "show", "job", "-d", os.environ["ORCHESTRA_ALLOCATION"]],
                       capture_output=True, text=True).stdout
json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": os.environ.get("ORCHESTRA_GPUS"),
           "share": os.environ.get("ORCHESTRA_GPU_SHARE", "1"), "affinity": sorted(os.sched_getaffinity(0)),
           "omp": os.environ.get("OMP_NUM_THREADS"), "node": os.environ.get("SLURMD_NODENAME"),
           "start": start, "end": time.time(), "scontrol": slurm}, open("probe.json", "w"))
print("done", sys.argv[1])
"""


def gpu_campaign(root: Path, devcluster, resources: str, *, n: int, parameters: str = "",
                 allocation: str = "") -> tuple[Path, str]:
    name = f"gpus{uuid.uuid4().hex[:8]}"
    profile = (f"{{kind: slurm, host: devcluster, ssh_config: {devcluster.ssh_config}, launcher: agent, "
               f"workdir: /tmp/orchestra-test-work/{name}, poll_interval: 0.3, squeue_interval: 1, "
               f"idle_release: 1, allocation: {{nodes: 2, walltime: '00:15:00'{allocation}}}}}")
    manifest = f"""\
name: slurm-gpus
command: python3 probe.py {{i}}
parameters:
  i: {{type: int, low: 1, high: {n}}}
{parameters}resources: {resources}
outputs: [probe.json]
profiles:
  {name}: {profile}
"""
    return make_campaign(root, manifest, {"probe.py": PROBE_PY}), name


def run_and_read(campaign: Path, devcluster, profile: str, n: int) -> list[dict]:
    try:
        result = cli(campaign, "expegit", "run", "--grid", "--profile", profile, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        recs = records(campaign)
        assert len(recs) == n and all(r["state"] == "finished" for r in recs), recs
        seen = []
        for rec in recs:
            probe = json.loads(git(campaign, "show", f"executions/{rec['id']}:probe.json").stdout)
            probe["record"] = rec
            seen.append(probe)
        assert wait_until(lambda: not our_jobs(devcluster, profile), 20)  # given back at the end
        return seen
    finally:
        cancel_ours(devcluster, profile)


def check_binding(seen: list[dict], want_gpus: dict[str, Fraction] | None = None) -> None:
    """The invariants: per node, overlapping executions share no core, no whole device, no device past
    1.0; every device Slurm gave is used; Slurm and Orchestra agree on the devices; the record says it."""
    by_node: dict[str, list[dict]] = defaultdict(list)
    overlapped = False
    for probe in seen:
        rec = probe["record"]
        assert probe["node"] == rec["node"], (probe, rec)
        # What the execution saw is what its record says it got.
        assert probe["cuda"] == probe["gpus"] == (rec.get("gpus") or ""), (probe["cuda"], rec)
        assert probe["affinity"] and rec["cores"], rec
        from runaway.capacity import parse_cpu_list
        assert list(parse_cpu_list(rec["cores"])) == probe["affinity"], (rec["cores"], probe["affinity"])
        assert probe["omp"] == str(len(probe["affinity"]))
        if want_gpus is not None:
            wanted = want_gpus[rec["id"]]
            devices = [d for d in probe["cuda"].split(",") if d]
            assert (len(devices) == wanted) if wanted >= 1 else (len(devices) == 1), (rec, devices)
        by_node[probe["node"]].append(probe)
    for node, probes in by_node.items():
        slurm = {dev for p in probes for dev in grant_devices(p["scontrol"]).get(node, ())}
        used = {d for p in probes for d in p["cuda"].split(",") if d}
        # Slurm and Orchestra agree: executions used exactly the devices Slurm gave this node, all of them.
        assert used == slurm, f"{node}: Orchestra used {sorted(used)}, Slurm gave {sorted(slurm)}"
        moments = sorted({p["start"] for p in probes})
        for moment in moments:
            live = [p for p in probes if p["start"] <= moment < p["end"]]
            overlapped = overlapped or len(live) > 1
            cores = [c for p in live for c in p["affinity"]]
            assert len(cores) == len(set(cores)), f"{node}: cores shared at {moment}: {live}"
            load: dict[str, Fraction] = defaultdict(Fraction)
            for p in live:
                for dev in p["cuda"].split(","):
                    if dev:
                        load[dev] += Fraction(p["share"])
            assert all(v <= 1 for v in load.values()), f"{node}: a device over-shared at {moment}: {dict(load)}"
    # (A node may run only 2-GPU executions one after the other; somewhere two must have shared a node.)
    assert overlapped, "executions never ran at the same time on a node: packing was not exercised"


def test_whole_gpus_are_packed_and_bound_on_slurm(devcluster, tmp_path):
    campaign, profile = gpu_campaign(tmp_path / "c", devcluster, "{gpus: 1}", n=8)
    seen = run_and_read(campaign, devcluster, profile, 8)
    check_binding(seen)
    # The allocation asked for GPUs and got them: 2 nodes x gpu:2, all four devices used.
    assert len({(p["node"], p["cuda"]) for p in seen}) == 4, [(p["node"], p["cuda"]) for p in seen]
    assert "TresPerNode=gres:gpu:2" in seen[0]["scontrol"], seen[0]["scontrol"]


def test_half_gpus_share_one_device_up_to_one_on_slurm(devcluster, tmp_path):
    # The dev cluster's nodes claim 4 CPUs on a 2-core machine: the profile says so, and the request
    # derived from it is 2 executions of 0.5 per node, so 1 GPU per node, shared by two at once.
    campaign, profile = gpu_campaign(tmp_path / "c", devcluster, "{gpus: 0.5}", n=8,
                                     allocation=", cpus_per_node: 2")
    seen = run_and_read(campaign, devcluster, profile, 8)
    check_binding(seen)
    assert all(p["share"] == "0.5" and len(p["cuda"].split(",")) == 1 for p in seen), seen
    assert "TresPerNode=gres:gpu:1" in seen[0]["scontrol"], seen[0]["scontrol"]


def test_a_mixed_grid_of_one_and_two_gpus_on_slurm(devcluster, tmp_path):
    campaign, profile = gpu_campaign(tmp_path / "c", devcluster, '{gpus: "{n_gpus}"}', n=3,
                                     parameters="  n_gpus: {choices: [1, 2]}\n")
    seen = run_and_read(campaign, devcluster, profile, 6)
    wanted = {p["record"]["id"]: Fraction(p["record"]["parameters"]["n_gpus"]) for p in seen}
    check_binding(seen, wanted)


def test_a_request_no_node_can_hold_is_refused_before_anything_is_created(devcluster, tmp_path):
    campaign, profile = gpu_campaign(tmp_path / "c", devcluster, "{gpus: 3}", n=2)
    try:
        result = cli(campaign, "expegit", "run", "--grid", "--profile", profile, timeout=120)
        assert result.returncode == 11, result.stdout + result.stderr
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert f"fit no node of profile {profile!r}" in line and "4 cores, 2 GPUs, 4G memory" in line, line
        assert "gpus: 3" in line, line
        assert git(campaign, "for-each-ref", "refs/heads/executions").stdout == ""  # nothing created
        assert not our_jobs(devcluster, profile)
    finally:
        cancel_ours(devcluster, profile)
