"""Executions placed by resources on a local profile with fake GPUs (`gpus: [0, 1, 2, 3]` on a machine
that may have none): each records the devices and cores it saw, and the test checks that executions running
at the same time never shared a core or a whole device, shares never passed one device, every device was used."""
from __future__ import annotations

import itertools
import json
import os
from fractions import Fraction
from pathlib import Path

from tests.helpers import cli, git, make_campaign

PROBE = """\
import json, os, time
start = time.time()
time.sleep(0.4)
json.dump({"cuda": os.environ["CUDA_VISIBLE_DEVICES"], "rocr": os.environ["ROCR_VISIBLE_DEVICES"],
           "orchestra_gpus": os.environ["ORCHESTRA_GPUS"], "omp": os.environ["OMP_NUM_THREADS"],
           "affinity": sorted(os.sched_getaffinity(0)), "start": start, "end": time.time()},
          open("probe.json", "w"))
"""

MANIFEST = """\
name: fake-gpus
command: python3 probe.py {n_gpus} {i}
parameters:
  n_gpus: {choices: [0.5, 1, 2]}
  i: {choices: [0, 1, 2, 3]}
resources:
  gpus: "{n_gpus}"
outputs: [probe.json]
profile: fake
profiles:
  fake: {kind: local, gpus: [0, 1, 2, 3]}
"""


def _records(root: Path) -> list[dict]:
    return json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)


def test_fake_gpu_campaign_never_shares_a_device_or_a_core(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "camp", MANIFEST, {"probe.py": PROBE})
    run = cli(root, "expegit", "run", "--grid")
    assert run.returncode == 0, run.stderr
    seen = []
    for record in _records(root):
        assert record["state"] == "finished", record
        probe = json.loads(git(root, "show", f"executions/{record['id']}:probe.json").stdout)
        want = Fraction(str(record["parameters"]["n_gpus"]))
        devices = probe["cuda"].split(",")
        assert len(devices) == max(1, int(want))
        assert probe["rocr"] == probe["orchestra_gpus"] == probe["cuda"]
        assert probe["omp"] == str(len(probe["affinity"])) == "1"
        shown = git(root, "show", f"executions/{record['id']}:.orchestra/execution.yaml").stdout
        assert f'gpus: "{probe["cuda"]}"' in shown  # the record says what the execution saw
        assert f'cores: "{probe["affinity"][0]}"' in shown
        seen.append((probe, devices, want if want < 1 else Fraction(1)))
    assert len(seen) == 12
    assert {d for _, devices, _ in seen for d in devices} == {"0", "1", "2", "3"}
    for (a, da, sa), (b, db, sb) in itertools.combinations(seen, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:  # they ran at the same time
            assert not set(a["affinity"]) & set(b["affinity"]), (a, b)
            for device in set(da) & set(db):
                assert sa + sb <= 1, (device, a, b)
    # At any instant, the shares on one device sum to at most 1 (three halves never overlap on one).
    for probe, devices, _share in seen:
        instant = probe["start"]
        for device in "0123":
            load = sum(share for p, ds, share in seen if device in ds and p["start"] <= instant < p["end"])
            assert load <= 1


def test_an_impossible_request_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    manifest = MANIFEST.replace("[0.5, 1, 2]", "[1, 3]").replace("gpus: [0, 1, 2, 3]", "gpus: [0, 1]")
    root = make_campaign(tmp_path / "camp", manifest, {"probe.py": PROBE})
    run = cli(root, "expegit", "run", "--grid")
    assert run.returncode == 11, run.stderr
    assert "resources {cpus: 1, gpus: 3} fit no node of profile 'fake'" in run.stderr
    assert "2 GPUs" in run.stderr and "Traceback" not in run.stderr
    assert git(root, "branch", "--list", "executions/*").stdout == ""


def test_bad_resources_are_reported_with_their_position(tmp_path: Path) -> None:
    manifest = MANIFEST.replace('gpus: "{n_gpus}"', 'gpus: "{n_gpus}"\n  memory: 12Q\n  cpus: 0')
    manifest = manifest.replace("[0.5, 1, 2]", "[0.5, 1.5]")
    root = make_campaign(tmp_path / "camp", manifest, {"probe.py": PROBE})
    check = cli(root, "expegit", "check")
    assert check.returncode == 3
    lines = check.stderr.splitlines()
    assert any(line.startswith("orchestra.yaml:7:9: resources.gpus from parameter n_gpus=1.5") for line in lines)
    assert any(line.startswith("orchestra.yaml:8:11: resources.memory: '12Q' is not a size") for line in lines)
    assert any(line.startswith("orchestra.yaml:9:9: resources.cpus: 0") for line in lines)


def test_memory_becomes_an_address_space_limit_and_show_lists_the_binding(tmp_path: Path) -> None:
    manifest = """\
    name: limited
    command: ulimit -v > limit.txt
    resources: {cpus: 1, memory: 256M}
    outputs: [limit.txt]
    """
    root = make_campaign(tmp_path / "camp", manifest)
    cli(root, "expegit", "run", check=True)
    [record] = _records(root)
    assert git(root, "show", f"executions/{record['id']}:limit.txt").stdout.strip() == str(256 * 1024)
    show = cli(root, "expegit", "show", record["id"], check=True).stdout
    assert "memory_limit: 268435456" in show
    assert "got: cores " in show and "no GPU, memory limit 256M" in show


def test_runaway_exec_and_batch_take_the_same_requests(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "dir", 'name: x\ncommand: "true"\nprofiles:\n  fake: {kind: local, gpus: [0, 1]}\n')
    done = cli(root, "runaway", "exec", "fake", "--gpus", "1", "--cpus", "1", "--",
               "echo gpus=$CUDA_VISIBLE_DEVICES omp=$OMP_NUM_THREADS")
    assert done.returncode == 0, done.stderr
    assert "gpus=0 omp=1" in done.stdout
    refused = cli(root, "runaway", "exec", "fake", "--gpus", "3", "--", "echo")
    assert refused.returncode == 11 and "gpus: 3} fit no node of profile 'fake'" in refused.stderr
    bad = cli(root, "runaway", "exec", "fake", "--gpus", "1.5", "--", "echo")
    assert bad.returncode == 2 and "--gpus: '1.5': above 1 a GPU request must be whole" in bad.stderr
    (root / "p.txt").write_text("n=1\nn=2\n")
    batch = cli(root, "runaway", "batch", "fake", "--params", "p.txt", "--gpus", "{n}", "--",
                "echo {n} $CUDA_VISIBLE_DEVICES > got.txt")
    assert batch.returncode == 0, batch.stderr
    got = sorted((root / "runaway-results" / d / "got.txt").read_text().split()[1]
                 for d in ("001-n=1", "002-n=2"))
    assert sorted(len(g.split(",")) for g in got) == [1, 2]


def test_no_resources_keeps_records_and_environment_as_before(tmp_path: Path) -> None:
    manifest = """\
    name: plain
    command: echo cuda=${{CUDA_VISIBLE_DEVICES-unset}} omp=${{OMP_NUM_THREADS-unset}}
    """
    root = make_campaign(tmp_path / "camp", manifest)
    cli(root, "expegit", "run", check=True)
    [record] = _records(root)
    inherited = (os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), os.environ.get("OMP_NUM_THREADS", "unset"))
    assert git(root, "show", f"executions/{record['id']}:.orchestra/stdout").stdout.strip() == \
        "cuda=%s omp=%s" % inherited  # nothing set or hidden without `resources:`
    shown = git(root, "show", f"executions/{record['id']}:.orchestra/execution.yaml").stdout
    assert "cores:" not in shown and "gpus:" not in shown and "memory_limit" not in shown
