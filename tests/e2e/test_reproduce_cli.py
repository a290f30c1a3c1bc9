"""Issue 15 as a user meets it: `expegit rerun`, `compare`, `status` configurations, `export --format
ro-crate` and the notebook API, on real git repositories with real local executions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from expegit.gitstore import GitStore
from orchestra.environment import PIP_FREEZE_PATH, Environment, Gpu
from orchestra.execution import RECORD_PATH, parse_record, render_record
from tests.helpers import cli, git, make_campaign

MANIFEST = """\
name: repro
command: python3 train.py {x}
parameters:
  x: {type: int, low: 1, high: 5, default: 1}
outputs: [metrics.json, model.txt]
objective: {metric: loss, from: metrics.json, goal: minimize}
profile: local
profiles:
  local: {kind: local}
"""
TRAIN = """\
import json, os, sys
x = int(sys.argv[1])
if x == 3 and not os.path.exists("fixed"):
    sys.exit("x=3 is broken before the fix")
offset = float(open("offset.txt").read())
json.dump({"loss": x * 2 + offset, "acc": 1.0 / x}, open("metrics.json", "w"))
open("model.txt", "w").write(f"model {x} {offset}\\n")
"""


def records(root: Path) -> list[dict]:
    return json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)


def branch_tip(root: Path, execution_id: str) -> str:
    return git(root, "rev-parse", f"executions/{execution_id}").stdout.strip()


def add_environment(root: Path, execution_id: str, freeze: str, driver: str) -> None:
    """What the launchers' capture will commit: the environment section and the pip-freeze blob."""
    store = GitStore.discover(root)
    ref = f"refs/heads/executions/{execution_id}"
    tip = store.ref(ref)
    assert tip is not None
    record = parse_record(store.read_path(tip, RECORD_PATH) or b"")
    blob = store.write_blob(freeze.encode())
    record.environment = Environment(os="Debian 13", python="3.11.7 /usr/bin/python3", gpus=(Gpu("H200"),),
                                     driver=driver, packages_blob=blob).to_dict()
    tree = store.tree_with(store.tree_of(tip), {RECORD_PATH: (0o100644, store.write_blob(render_record(record).encode())),
                                                PIP_FREEZE_PATH: (0o100644, blob)})
    assert store.update_ref(ref, tip, store.write_commit(tree, [tip], "environment captured"))


@pytest.fixture()
def campaign(tmp_path: Path) -> Path:
    return make_campaign(tmp_path / "c", MANIFEST, {"train.py": TRAIN, "offset.txt": "0.5\n"})


def test_rerun_same_commit_then_failed_at_a_fix(campaign: Path) -> None:
    run = cli(campaign, "expegit", "run", "-p", "x=1", "-p", "x=3", "--slots", "2")
    assert run.returncode == 1, run.stderr
    first = {r["parameters"]["x"]: r for r in records(campaign)}
    ok, broken = first[1], first[3]
    assert broken["state"] == "failed"

    again = cli(campaign, "expegit", "rerun", ok["id"][:7], check=True)
    original, new = again.stdout.split(" -> ")
    new = new.strip()
    assert original == ok["id"]
    rerun = next(r for r in records(campaign) if r["id"] == new)
    assert rerun["rerun_of"] == ok["id"] and rerun["state"] == "finished"
    assert (rerun["commit"], rerun["parameters"], rerun["command"]) == (ok["commit"], ok["parameters"], ok["command"])
    assert rerun["objective"] == ok["objective"]
    # the original's branch is untouched: a rerun never rewrites results
    assert "rerun_of" not in git(campaign, "show", f"executions/{ok['id']}:{RECORD_PATH}").stdout

    (campaign / "fixed").write_text("yes\n")
    (campaign / "offset.txt").write_text("0.25\n")
    git(campaign, "add", "-A")
    git(campaign, "commit", "-q", "-m", "fix x=3, new offset")
    head = git(campaign, "rev-parse", "HEAD").stdout.strip()
    fixed = cli(campaign, "expegit", "rerun", "--failed", "--at", "HEAD", check=True)
    assert fixed.stdout.startswith(broken["id"] + " -> ")
    now = {r["id"]: r for r in records(campaign)}
    retried = now[fixed.stdout.split(" -> ")[1].strip()]
    assert retried["commit"] == head and retried["state"] == "finished" and retried["rerun_of"] == broken["id"]
    assert retried["objective"] == pytest.approx(3 * 2 + 0.25)
    nothing = cli(campaign, "expegit", "rerun", "--failed", check=True)
    assert "nothing to rerun" in nothing.stderr and len(records(campaign)) == 4

    compared = cli(campaign, "expegit", "compare", ok["id"], retried["id"], check=True).stdout
    assert "x" in compared.split("parameters:")[1].split("code:")[0]
    assert "offset.txt" in compared and "fixed" in compared  # git diff --stat between the two commits
    assert "loss (objective)" in compared and "acc" in compared
    assert "model.txt" in compared and "metrics.json" in compared
    data = json.loads(cli(campaign, "expegit", "compare", ok["id"], retried["id"], "--json", check=True).stdout)
    assert data["parameters"] == {"x": {"a": 1, "b": 3}}
    assert data["metrics"]["loss"]["difference"] == pytest.approx(6.25 - 2.5)
    assert set(data["outputs"]) == {"metrics.json", "model.txt"}
    assert "offset.txt" in data["code"]["diffstat"]


def test_rerun_refuses_bad_input_and_creates_nothing(campaign: Path) -> None:
    cli(campaign, "expegit", "run", check=True)
    [only] = records(campaign)
    for args, message in ((["rerun", only["id"], "--at", "no-such-rev"], "--at no-such-rev: names no commit"),
                          (["rerun", "ffffffff"], "no execution matches"),
                          (["rerun"], "rerun needs execution ids or --failed"),
                          (["rerun", only["id"], "--profile", "nowhere"], "nowhere")):
        result = cli(campaign, "expegit", *args)
        assert result.returncode == 2 or result.returncode == 4, (args, result.returncode, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2
    assert len(records(campaign)) == 1


def test_compare_names_the_package_that_changed(campaign: Path) -> None:
    cli(campaign, "expegit", "run", "-p", "x=1", "-p", "x=2", check=True)
    a, b = sorted(records(campaign), key=lambda r: r["parameters"]["x"])
    add_environment(campaign, a["id"], "numpy==1.26.4\ntorch==2.1.0\n", "550.54")
    add_environment(campaign, b["id"], "numpy==1.26.4\ntorch==2.2.0\n", "550.54")
    text = cli(campaign, "expegit", "compare", a["id"], b["id"], check=True).stdout
    env_part = text.split("environment:")[1].split("metrics:")[0]
    assert "torch 2.1.0 -> 2.2.0" in env_part and "numpy" not in env_part
    data = json.loads(cli(campaign, "expegit", "compare", a["id"], b["id"], "--json", check=True).stdout)
    assert data["environment"]["packages"] == {"added": {}, "removed": {}, "changed": {"torch": ["2.1.0", "2.2.0"]}}
    assert data["environment"]["fields"] == {}
    assert PIP_FREEZE_PATH not in data["outputs"]  # compared package by package, not as a file
    unknown = cli(campaign, "expegit", "compare", a["id"], "fffffff")
    assert unknown.returncode == 2 and "no execution matches 'fffffff'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    # `expegit list` reads the environment section back through its cache
    assert records(campaign)[0]["environment"]["driver"] == "550.54"


def test_status_shows_configurations_over_repeats(campaign: Path) -> None:
    cli(campaign, "expegit", "run", "-p", "x=1", "-p", "x=2", "--repeat", "2", "--slots", "2", check=True)
    status = cli(campaign, "expegit", "status", check=True).stdout
    lines = status.splitlines()
    at = next(i for i, line in enumerate(lines) if "configurations" in line)
    assert lines[at + 1].lstrip().startswith("*") and "n=2" in lines[at + 1] and "x=1" in lines[at + 1]
    assert "x=2" in lines[at + 2] and "n=2" in lines[at + 2]


def test_notebook_api_reads_what_list_reads(campaign: Path) -> None:
    pandas = pytest.importorskip("pandas")
    cli(campaign, "expegit", "run", "-p", "x=1", "-p", "x=2", "-p", "x=3", "--slots", "2")
    from expegit import open_campaign

    c = open_campaign(campaign)
    listed = records(campaign)
    finished = c.executions(state="finished")
    assert {r.id for r in finished} == {r["id"] for r in listed if r["state"] == "finished"} and len(finished) == 2
    frame = c.dataframe()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 3
    assert {"param.x", "objective", "metric.loss", "metric.acc", "duration", "host", "node", "commit",
            "environment", "rerun_of"} <= set(frame.columns)
    best = frame.sort_values("objective").iloc[0]
    assert best["param.x"] == 1 and best["metric.acc"] == pytest.approx(1.0)
    assert str(frame["started"].dtype).startswith("datetime64")
    one = finished[0].id
    assert c.metrics(one) == []
    store = GitStore.discover(campaign)
    ref = f"refs/heads/executions/{one}"
    tip = store.ref(ref)
    assert tip is not None
    stream = b'{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n'
    tree = store.tree_with(store.tree_of(tip), {".orchestra/metrics.jsonl": (0o100644, store.write_blob(stream))})
    assert store.update_ref(ref, tip, store.write_commit(tree, [tip], "metrics"))
    assert c.metrics(one[:8]) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]
    with pytest.raises(Exception, match="not one of"):
        c.executions(state="done")


def test_api_names_the_extra_when_pandas_is_missing(campaign: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from expegit import open_campaign

    monkeypatch.setitem(sys.modules, "pandas", None)  # what an install without the extra sees: no pandas
    with pytest.raises(ModuleNotFoundError, match=r"orchestra-campaigns\[analysis\]"):
        open_campaign(campaign).dataframe()
    assert open_campaign(campaign).executions() == []  # the rest of the API needs no pandas


def test_export_ro_crate_validates(campaign: Path, tmp_path: Path) -> None:
    rocrate = pytest.importorskip("rocrate.rocrate")
    cli(campaign, "expegit", "run", "-p", "x=1", "-p", "x=3", "--slots", "2")
    out = tmp_path / "crate"
    result = cli(campaign, "expegit", "export", "--format", "ro-crate", "-o", str(out), check=True)
    assert "RO-Crate of 2 executions" in result.stderr
    crate = rocrate.ROCrate(out)  # the rocrate library parses and checks the crate's structure
    actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
    assert len(actions) == 2
    # actionStatus names a schema.org term, no entity of the crate: the library returns its id as a string
    by_state = {a["actionStatus"] if isinstance(a["actionStatus"], str) else a["actionStatus"].id: a
                for a in actions}
    done = by_state["http://schema.org/CompletedActionStatus"]
    assert done["instrument"].type == "SoftwareApplication"
    assert [o["name"] for o in done["object"]] == ["x"]
    results = done["result"]
    assert {Path(r.id).name for r in results} == {"metrics.json", "model.txt"}
    for r in results:
        assert (out / r.id).is_file()
    assert done["startTime"] and done["endTime"] and done["agent"].type == "Person"
    assert "http://schema.org/FailedActionStatus" in by_state
    assert "https://w3id.org/ro/wfrun/process/0.5" in json.dumps(crate.root_dataset.properties())
    # a second export replaces its own crate; a directory that is no crate is refused, untouched
    cli(campaign, "expegit", "export", "--format", "ro-crate", "-o", str(out), check=True)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    refused = cli(campaign, "expegit", "export", "--format", "ro-crate", "-o", str(other))
    assert refused.returncode == 2 and "no RO-Crate" in refused.stderr
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
