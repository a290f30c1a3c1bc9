"""Packing by resources on an SSH host (the dev cluster's real sshd), with fake GPUs declared by the profile:
capacity probed over SSH, executions bound by the host's agent (devices, cores), impossible requests refused."""
from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import pytest

from orchestra.errors import ProfileError
from orchestra.resources import Request
from runaway.backend import Job
from runaway.factory import make_backend
from runaway.profiles import build_profile

pytestmark = pytest.mark.usefixtures("remote_workdir_cleanup")

COMMIT = "c0ffee" + "1" * 34
PROBE = """\
import json, os, time
start = time.time()
time.sleep(1.0)
json.dump({"cuda": os.environ["CUDA_VISIBLE_DEVICES"], "affinity": sorted(os.sched_getaffinity(0)),
           "omp": os.environ["OMP_NUM_THREADS"], "start": start, "end": time.time()}, open("probe.json", "w"))
"""


def _backend(devcluster, tmp_path: Path, **extra):
    data = {"kind": "ssh", "host": "devcluster", "ssh_config": devcluster.ssh_config, "gpus": [0, 1, 2, 3],
            "workdir": f"~/.orchestra-test-{tmp_path.name}", "poll_interval": 0.3, **extra}
    return make_backend(build_profile("gpus", data))


def test_ssh_host_packs_and_binds_by_resources(devcluster, tmp_path, archive):
    backend = _backend(devcluster, tmp_path)
    two = Request(cpus=1, gpus=Fraction(2))
    try:
        backend.check_requests([two])
        backend.start()
        code = archive({"probe.py": PROBE})
        handles = []
        for n in range(2):
            index, slot = backend.acquire_for([two])
            job = Job(f"{n + 0xabc:012x}", COMMIT, "python3 probe.py", outputs=("probe.json",), resources=two)
            handles.append((backend.launch(slot, job, code), job, slot))
        assert backend.acquire_for([Request(gpus=Fraction(1))], wait=False) is None  # all four are taken
        seen = []
        for handle, job, slot in handles:
            assert backend.wait(handle, 60).exit_code == 0
            collected = backend.collect(handle, job, tmp_path / job.execution_id).materialized()
            seen.append(json.loads((collected.directory / "probe.json").read_text()))
            assert handle.binding is not None and ",".join(handle.binding.gpus) == seen[-1]["cuda"]
            assert list(handle.binding.cores) == seen[-1]["affinity"]
            backend.discard(handle)
            backend.release(slot)
        a, b = seen
        assert a["start"] < b["end"] and b["start"] < a["end"]  # they ran at the same time...
        assert set(a["cuda"].split(",")).isdisjoint(b["cuda"].split(","))  # ...on their own devices
        assert set(a["cuda"].split(",")) | set(b["cuda"].split(",")) == {"0", "1", "2", "3"}
        cores = backend.capacities()[0].cores
        if len(cores) > 1:
            assert set(a["affinity"]).isdisjoint(b["affinity"])
        assert a["omp"] == b["omp"] == "1"
    finally:
        backend.close()


def test_ssh_refuses_what_no_host_can_run(devcluster, tmp_path):
    for launcher in ("agent", "shell"):
        backend = _backend(devcluster, tmp_path, launcher=launcher)
        try:
            with pytest.raises(ProfileError,
                               match=r"gpus: 8\} fit no node of profile 'gpus' \(nodes: \d+ cores, 4 GPUs"):
                backend.check_requests([Request(gpus=Fraction(8))])
        finally:
            backend.close()


SHELL_PROBE = """\
import json, os, resource, time
start = time.time()
time.sleep(0.6)
json.dump({"cuda": os.environ["CUDA_VISIBLE_DEVICES"], "affinity": sorted(os.sched_getaffinity(0)),
           "omp": os.environ["OMP_NUM_THREADS"], "as": resource.getrlimit(resource.RLIMIT_AS)[0],
           "start": start, "end": time.time()}, open("probe.json", "w"))
"""


def test_ssh_shell_launcher_packs_and_binds_devices_cores_and_memory(devcluster, tmp_path, archive):
    """launcher: shell binds too (no agent): devices in the environment, affinity set by its wrapper shell,
    the memory limit by ulimit -v, the binding line kept for a resume. Mixed requests on fake GPUs."""
    backend = _backend(devcluster, tmp_path, launcher="shell", limit_memory=True)
    wanted = [Fraction(2), Fraction(2), Fraction(1), Fraction(1), *[Fraction(1, 2)] * 4]
    pending = [Request(cpus=1, gpus=g, memory=2**30) for g in wanted]
    seen: list[tuple[dict, tuple[str, ...], Fraction, str]] = []
    try:
        backend.check_requests(pending)
        backend.start()
        code = archive({"probe.py": SHELL_PROBE})
        running: list = []
        n = 0
        while pending or running:
            chosen = backend.acquire_for(pending, wait=False) if pending else None
            if chosen is not None:
                index, slot = chosen
                request = pending.pop(index)
                job = Job(f"{n + 0x5e11:012x}", COMMIT, "python3 probe.py", outputs=("probe.json",),
                          resources=request)
                n += 1
                running.append((backend.launch(slot, job, code), job, slot))
                continue
            handle, job, slot = running.pop(0)  # nothing fits now: wait for the oldest to end
            assert backend.wait(handle, 60).exit_code == 0
            kept = backend.transports()[0].run(f"cat {handle.remote_dir}/.orchestra/binding", warn=True)
            collected = backend.collect(handle, job, tmp_path / job.execution_id).materialized()
            probe = json.loads((collected.directory / "probe.json").read_text())
            binding = handle.binding
            assert binding is not None and ",".join(binding.gpus) == probe["cuda"]
            assert list(binding.cores) == probe["affinity"]  # the wrapper shell's affinity, inherited
            assert probe["as"] == 2**30 and probe["omp"] == "1"
            assert kept.stdout.startswith(f"cores={','.join(map(str, binding.cores))} gpus={probe['cuda']} ")
            seen.append((probe, binding.gpus, binding.gpu_share, probe["cuda"]))
            backend.discard(handle)
            backend.release(slot)
    finally:
        backend.close()
    assert len(seen) == 8
    assert {d for _p, devices, _s, _c in seen for d in devices} == {"0", "1", "2", "3"}  # every device used
    for (a, da, sa, _), (b, db, sb, _) in itertools.combinations(seen, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:  # they ran at the same time
            assert not set(a["affinity"]) & set(b["affinity"]), (a, b)
            for _device in set(da) & set(db):
                assert sa + sb <= 1, (a, b)  # only fractions share a device, up to 1 in total
