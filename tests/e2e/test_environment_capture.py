"""Issue 15's done-when, as a user meets it: two real executions whose python (found on PATH, as the command
finds it) has one package at another version; the environment is captured on the node by the probe, kept
as a blob on each branch, and `expegit compare` names that package."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from expegit.gitstore import GitStore
from orchestra.environment import PIP_FREEZE_PATH
from tests.helpers import cli, git, make_campaign

MANIFEST = """\
name: envcap
command: python3 train.py {x}
parameters:
  x: {type: int, low: 1, high: 5, default: 1}
outputs: [metrics.json]
objective: {metric: loss, from: metrics.json, goal: minimize}
record_env: [ORCHESTRA_EXECUTION_ID, ENVCAP_TAG, ENVCAP_UNSET]
profile: local
profiles:
  local: {kind: local}
"""
TRAIN = "import json, sys\njson.dump({'loss': float(sys.argv[1])}, open('metrics.json', 'w'))\n"


def make_venv(where: Path, version: str) -> Path:
    """A real venv (system site-packages visible, so pip is there) holding `envcap-probe-pkg` at ``version``."""
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(where)
    python = where / "bin" / "python3"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    info = Path(site) / f"envcap_probe_pkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: envcap-probe-pkg\nVersion: {version}\n")
    (info / "RECORD").write_text("")
    (info / "INSTALLER").write_text("pip\n")
    return where / "bin"


def records(root: Path) -> list[dict]:
    return json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)


@pytest.fixture()
def campaign(tmp_path: Path) -> Path:
    return make_campaign(tmp_path / "c", MANIFEST, {"train.py": TRAIN})


def test_compare_names_the_package_whose_version_differs(campaign: Path, tmp_path: Path) -> None:
    old, new = make_venv(tmp_path / "old", "1.0"), make_venv(tmp_path / "new", "2.0")
    cache = tmp_path / "cache"
    base = {"XDG_CACHE_HOME": str(cache), "ENVCAP_TAG": "a b\nc"}
    cli(campaign, "expegit", "run", "-p", "x=1", "-p", "x=2", check=True,
        env={**base, "PATH": f"{old}{os.pathsep}{os.environ['PATH']}"})
    cli(campaign, "expegit", "run", "-p", "x=3", check=True,
        env={**base, "PATH": f"{new}{os.pathsep}{os.environ['PATH']}"})
    by_x = {r["parameters"]["x"]: r for r in records(campaign)}
    a, a2, b = by_x[1], by_x[2], by_x[3]
    env_a, env_b = a["environment"], b["environment"]
    # captured on the node, by the python on PATH
    assert env_a["python"].split()[1] == str(old / "python3")
    assert env_b["python"].split()[1] == str(new / "python3")
    assert env_a["cores"] == os.cpu_count() and env_a["memory"] > 0 and env_a["kernel"] == os.uname().release
    # record_env: per execution, after binding; unset variables are left out; a newline survives
    assert env_a["vars"]["ENVCAP_TAG"] == "a b\nc" and "ENVCAP_UNSET" not in env_a["vars"]
    assert env_a["vars"]["ORCHESTRA_EXECUTION_ID"] == a["id"]
    # one blob, shared by the executions of one environment (git deduplicates it)
    assert env_a["packages_blob"] == a2["environment"]["packages_blob"] != env_b["packages_blob"]
    store = GitStore.discover(campaign)
    tip = git(campaign, "rev-parse", f"executions/{a['id']}").stdout.strip()
    freeze = (store.read_path(tip, PIP_FREEZE_PATH) or b"").decode()
    assert "envcap-probe-pkg==1.0" in freeze
    assert git(campaign, "rev-parse", f"{tip}:{PIP_FREEZE_PATH}").stdout.strip() == env_a["packages_blob"]
    # the record's documented shape (schemas/execution.schema.json)
    import jsonschema
    from orchestra.execution import RECORD_PATH, parse_record
    schema = json.loads((Path(__file__).parents[2] / "schemas" / "execution.schema.json").read_text())
    jsonschema.validate(parse_record(store.read_path(tip, RECORD_PATH) or b"").to_dict(), schema)
    # the probe left nothing in the execution's stdout or outputs
    assert a["outputs"] == ["metrics.json"]
    assert (store.read_path(tip, ".orchestra/stdout") or b"") == b""
    # the node's capture is cached per commit, node and python
    assert len(list((cache / "orchestra" / "environment").glob("*.json"))) == 2

    # the notebook API: environment columns beside the parameters
    pandas = pytest.importorskip("pandas")
    from expegit import open_campaign

    frame = open_campaign(campaign).dataframe()
    assert frame.loc[a["id"], "env.python_path"] == str(old / "python3")
    assert frame.loc[a["id"], "env.packages"] == frame.loc[a2["id"], "env.packages"] != frame.loc[b["id"], "env.packages"]
    assert frame.loc[b["id"], "env.var.ENVCAP_TAG"] == "a b\nc" and frame.loc[b["id"], "env.cores"] == os.cpu_count()
    assert pandas.api.types.is_string_dtype(frame["env.kernel"])

    text = cli(campaign, "expegit", "compare", a["id"], b["id"], check=True).stdout
    env_part = text.split("environment:")[1].split("metrics:")[0]
    assert "envcap-probe-pkg 1.0 -> 2.0" in env_part
    data = json.loads(cli(campaign, "expegit", "compare", a["id"], b["id"], "--json", check=True).stdout)
    assert data["environment"]["packages"]["changed"] == {"envcap-probe-pkg": ["1.0", "2.0"]}
    same = json.loads(cli(campaign, "expegit", "compare", a["id"], a2["id"], "--json", check=True).stdout)
    assert same["environment"]["packages"] == {"added": {}, "removed": {}, "changed": {}}

    # the report's compare view gets each distinct list once, parsed, named by the records' blob ids
    from expegit.report.packagesfile import parse_packages_js
    from expegit.report_build import package_lists
    from orchestra.execution import parse_record

    cli(campaign, "expegit", "report", "-o", str(tmp_path / "site"), check=True)
    lists, left_out = parse_packages_js((tmp_path / "site" / "packages.js").read_text())
    assert left_out == 0 and set(lists) == {env_a["packages_blob"], env_b["packages_blob"]}
    assert lists[env_a["packages_blob"]]["envcap-probe-pkg"] == "1.0"
    assert lists[env_b["packages_blob"]]["envcap-probe-pkg"] == "2.0"
    tips = {r["id"]: git(campaign, "rev-parse", f"executions/{r['id']}").stdout.strip() for r in (a, a2, b)}
    recs = [parse_record(store.read_path(tips[r["id"]], RECORD_PATH) or b"") for r in (a, a2, b)]
    capped, over = package_lists(store, recs, tips, limit=1)
    assert list(capped) == [env_a["packages_blob"]] and over == 1


def test_record_env_with_a_bad_name_is_refused_with_its_place(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "bad", MANIFEST.replace("ENVCAP_UNSET]", "NOT-A-NAME]"), {"train.py": TRAIN})
    check = cli(root, "expegit", "check")
    assert check.returncode != 0 and "Traceback" not in check.stderr
    line = next(i for i, text in enumerate(MANIFEST.splitlines(), 1) if text.startswith("record_env"))
    assert f"orchestra.yaml:{line}:" in check.stderr and "NOT-A-NAME" in check.stderr, check.stderr
    assert sys.executable  # the venvs above are built from this interpreter's stdlib


GPU_MANIFEST = """\
name: envcap-gpus
command: python3 seen.py {i}
parameters:
  i: {type: int, low: 1, high: 4}
resources: {gpus: 1}
record_env: [CUDA_VISIBLE_DEVICES]
outputs: [seen.txt]
profile: fake
profiles:
  fake: {kind: local, gpus: [0, 1]}
"""
SEEN = "import os\nopen('seen.txt', 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])\n"


def test_record_env_holds_the_value_after_binding(tmp_path: Path) -> None:
    """CUDA_VISIBLE_DEVICES is the execution's own (its binding), not the node's or the controller's."""
    root = make_campaign(tmp_path / "g", GPU_MANIFEST, {"seen.py": SEEN})
    cli(root, "expegit", "run", "--grid", check=True, env={"XDG_CACHE_HOME": str(tmp_path / "cache"),
                                                           "CUDA_VISIBLE_DEVICES": "7"})
    got = set()
    for rec in records(root):
        seen = git(root, "show", f"executions/{rec['id']}:seen.txt").stdout
        assert rec["environment"]["vars"]["CUDA_VISIBLE_DEVICES"] == seen == rec["gpus"], rec
        got.add(seen)
    assert got == {"0", "1"}


def test_capture_environment_false_runs_no_probe_and_keeps_record_env(tmp_path: Path) -> None:
    """The switch off: no probe runs (nothing cached on the node, no package blob on the branch), the
    record has no captured section, and record_env's values are still read."""
    root = make_campaign(tmp_path / "off", MANIFEST.replace("profile: local\n", "capture_environment: false\nprofile: local\n"),
                         {"train.py": TRAIN})
    cache = tmp_path / "cache"
    cli(root, "expegit", "run", "-p", "x=1", check=True, env={"XDG_CACHE_HOME": str(cache), "ENVCAP_TAG": "t"})
    (rec,) = records(root)
    assert rec["environment"] == {"vars": {"ORCHESTRA_EXECUTION_ID": rec["id"], "ENVCAP_TAG": "t"}}, rec
    assert not (cache / "orchestra" / "environment").exists()
    tree = git(root, "ls-tree", "-r", "--name-only", f"executions/{rec['id']}").stdout.split()
    assert PIP_FREEZE_PATH not in tree


def test_capture_environment_must_be_a_boolean(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "bad", MANIFEST.replace("profile: local\n", "capture_environment: maybe\nprofile: local\n"),
                         {"train.py": TRAIN})
    check = cli(root, "expegit", "check")
    assert check.returncode != 0 and "Traceback" not in check.stderr
    line = next(i for i, text in enumerate(MANIFEST.splitlines(), 1) if text.startswith("profile:"))
    assert f"orchestra.yaml:{line}:" in check.stderr and "capture_environment" in check.stderr, check.stderr
