"""`expegit report` on a real campaign, as a user runs it: the site opens from its file path."""
from __future__ import annotations

import json
from pathlib import Path

from expegit.gitstore import GitStore
from expegit.report import load_report_payload, parse_report_data
from expegit.report_build import build_report_data, manifest_summary, tail
from tests.helpers import cli, git


def test_report_cli_on_a_real_campaign(tmp_path: Path) -> None:
    root = tmp_path / "campaign"
    cli(tmp_path, "expegit", "init", "--example", "quadratic", str(root), check=True)
    cli(root, "expegit", "run", "-p", "lr=0.01", "-p", "lr=0.02", "-p", "lr=0.05", "-q", check=True)
    listed = {r["id"] for r in json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)}

    result = cli(root, "expegit", "report", check=True)
    index = Path(result.stdout.strip())
    assert index == root / ".git" / "orchestra" / "report" / "index.html" and index.is_file()
    assert "report of 3 executions" in result.stderr
    records = parse_report_data(index)
    assert {r["id"] for r in records} == listed

    out = tmp_path / "site"
    index2 = Path(cli(root, "expegit", "report", "-o", str(out), check=True).stdout.strip())
    assert index2 == out / "index.html"
    payload = load_report_payload(index2)
    assert len(payload["executions"]) == 3
    assert index2.as_uri().startswith("file://")
    # outputs were read from the branches (lazily) into the site: small text ones inline in the details shards
    assert any('"path":"metrics.json"' in p.read_text() and '"inline":true' in p.read_text()
               for p in (out / "details").glob("*.js"))

    # the same on a bare repository (what the post-receive hook renders)
    bare = tmp_path / "shared.git"
    git(tmp_path, "clone", "-q", "--bare", str(root), str(bare))
    git(root, "push", "-q", str(bare), "refs/heads/executions/*:refs/heads/executions/*")
    index3 = Path(cli(tmp_path, "expegit", "-C", str(bare), "report", "-o", str(tmp_path / "bare-site"),
                      check=True).stdout.strip())
    assert len(parse_report_data(index3)) == 3


def test_report_data_from_branches(tmp_path: Path) -> None:
    root = tmp_path / "campaign"
    cli(tmp_path, "expegit", "init", "--example", "quadratic", str(root), check=True)
    cli(root, "expegit", "run", "-p", "lr=0.01", "-q", check=True)
    data, load_outputs, problems = build_report_data(GitStore(root))
    assert problems == {} and len(data.executions) == 1
    view = data.executions[0]
    assert data.campaign and data.objective is not None
    assert view.record.commit in data.commits and data.commits[view.record.commit].subject
    paths = {path for path, _size in view.diffstat}
    assert "metrics.json" in paths and ".orchestra/execution.yaml" not in paths
    assert "metrics.json" in load_outputs(view.record.id)
    assert tail(b"a\nb\nc\n", lines=2) == "b\nc"
    assert manifest_summary(b"name: x\nobjective: {metric: m, goal: maximize}\n") == \
        ("x", {"metric": "m", "goal": "maximize"})
    assert manifest_summary(b": bad: [") == (None, None)


def test_every_metric_reaches_export_and_report(tmp_path: Path) -> None:
    """The example's metrics.json holds train_loss beside the objective val_loss: both are exported and shown."""
    root = tmp_path / "campaign"
    cli(tmp_path, "expegit", "init", "--example", "quadratic", str(root), check=True)
    cli(root, "expegit", "run", "-p", "lr=0.01", "-p", "lr=0.1", "-q", check=True)

    rows = [json.loads(line) for line in cli(root, "expegit", "export", "--format", "jsonl", check=True)
            .stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert isinstance(row["metric.train_loss"], float) and row["metric.val_loss"] == row["objective"]
        assert row["profile"] == "local" and "node" in row
    header = cli(root, "expegit", "export", check=True).stdout.splitlines()[0].split(",")
    assert {"node", "profile", "metric.train_loss", "metric.val_loss"} <= set(header)
    assert header.index("node") == header.index("host") + 1
    cache = root / ".git" / "orchestra" / "metrics.json"
    assert cache.is_file()  # the next export or report reads no metrics blob for unmoved branches

    payload = load_report_payload(Path(cli(root, "expegit", "report", check=True).stdout.strip()))
    assert payload["metrics"] == ["val_loss", "train_loss"]
    assert all(isinstance(e["metrics"]["train_loss"], float) for e in payload["executions"])
    data, _load, _problems = build_report_data(GitStore(root))
    assert data.parameter_types == {"lr": "float", "layers": "int"}

    listing = cli(root, "expegit", "list", check=True).stdout.splitlines()
    assert listing[0].split() == ["id", "state", "objective", "duration", "commit", "parameters"]
    assert len(listing) == 3
    assert json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)[0]["id"]  # no header in JSON
