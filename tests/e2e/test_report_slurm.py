"""On the Slurm dev cluster: export and the report name the node each execution ran on, not the login host.

The campaign runs through `expegit run` in a subprocess, as a user runs it; only the cluster's presence is
checked here (no gevent in this process: the CLI does its own patching). Skipped when the dev cluster is
not up, except under CI=true where that is an error (as in tests/integration/conftest.py).
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from expegit.report import load_report_payload
from tests.helpers import cli, make_campaign

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("ORCHESTRA_DEVCLUSTER_DIR", "/tmp/orchestra-devcluster"))

TRAIN_PY = """\
import json, os, sys
lr = float(sys.argv[1])
with open("metrics.json", "w") as f:
    json.dump({"val_loss": (lr - 0.3) ** 2, "val_acc": 1 - lr / 2, "node": os.environ.get("SLURMD_NODENAME")}, f)
"""


@pytest.fixture(scope="module")
def ssh_config() -> str:
    status = subprocess.run(["bash", str(ROOT / "tests" / "cluster" / "devcluster.sh"), "status"],
                            capture_output=True, text=True)
    if status.returncode != 0:
        reason = "the dev cluster is not up (`bash tests/cluster/devcluster.sh status`)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI=true: cluster tests must not be skipped)")
        pytest.skip(reason)
    return str(CLUSTER_DIR / "ssh" / "ssh_config")


def test_slurm_executions_show_their_node_in_export_and_report(tmp_path: Path, ssh_config: str) -> None:
    name = f"slurm{uuid.uuid4().hex[:8]}"
    manifest = f"""\
    name: nodes
    command: python3 train.py {{lr}}
    parameters:
      lr: {{type: float, low: 0.0, high: 1.0}}
    outputs: [metrics.json]
    objective: {{metric: val_loss, from: metrics.json, goal: minimize}}
    profiles:
      {name}: {{kind: slurm, host: devcluster, ssh_config: {ssh_config}, slots_per_node: 2, launcher: srun,
               workdir: /tmp/orchestra-test-work/{name}, poll_interval: 0.3, squeue_interval: 1, idle_release: 1,
               allocation: {{nodes: 2, walltime: '00:10:00'}}}}
    """
    root = make_campaign(tmp_path / "campaign", manifest, {"train.py": TRAIN_PY})
    cli(root, "expegit", "run", "--profile", name, "-q", *[f"-plr={v}" for v in ("0.0", "0.5", "1.0", "0.25")],
        check=True)

    rows = list(csv.DictReader(io.StringIO(cli(root, "expegit", "export", check=True).stdout)))
    assert len(rows) == 4
    for row in rows:
        assert row["state"] == "finished" and row["profile"] == name
        assert row["node"].startswith("node") and row["node"] != row["host"]  # the node, beside the login host
        assert row["host"] and float(row["metric.val_acc"]) == pytest.approx(1 - float(row["param.lr"]) / 2)

    payload = load_report_payload(Path(cli(root, "expegit", "report", check=True).stdout.strip()))
    assert payload["metrics"] == ["val_loss", "val_acc"]
    recorded = {e["record"]["id"]: e["record"]["node"] for e in payload["executions"]}
    assert recorded == {row["id"]: row["node"] for row in rows}
    site = Path(cli(root, "expegit", "report", check=True).stdout.strip()).parent
    plots = (site / "plots.html").read_text()
    for node in set(recorded.values()):
        assert f"{node} · slot" in plots  # timeline lanes are nodes
    assert f'{rows[0]["host"]} · slot' not in plots
    shards = "".join(p.read_text() for p in (site / "details").glob("*.js"))
    assert '"types":{"lr":"float"}' in shards  # lr=0.0 and 1.0 are whole floats, still labelled float
    assert json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)[0]["node"]
