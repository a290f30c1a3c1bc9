"""A newcomer's first hour: `expegit init` beside an existing script, and the silent cases that now say one
line (issue 10)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.helpers import cli, git, make_campaign

TRAIN = """\
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01, help="learning rate")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--opt", choices=["sgd", "adam"], default="adam")
parser.add_argument("--verbose", action="store_true")
args = parser.parse_args()
with open("metrics.json", "w") as f:
    json.dump({"loss": args.lr * args.batch_size, "opt": args.opt}, f)
"""


def test_init_beside_a_script_writes_a_manifest_that_runs_it(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    (project / "notes.txt").write_text("todo\n")
    init = cli(tmp_path, "expegit", "init", "proj", check=True)
    assert "python3 train.py --lr {lr} --batch-size {batch_size} --opt {opt}" in init.stdout, init.stdout
    assert "not committed, so executions will not see them: notes.txt, train.py" in init.stderr, init.stderr
    cli(project, "expegit", "check", check=True)
    refused = cli(project, "expegit", "run")
    assert refused.returncode != 0 and "train.py, which is not committed" in refused.stderr, refused.stderr
    assert "git add train.py" in refused.stderr
    assert git(project, "for-each-ref", "refs/heads/executions").stdout == ""  # nothing was created
    git(project, "add", "train.py")
    git(project, "commit", "-qm", "the script")
    run = cli(project, "expegit", "run")
    assert run.returncode == 0, run.stderr
    (record,) = json.loads(cli(project, "expegit", "list", "--json", check=True).stdout)
    assert record["parameters"] == {"lr": 0.01, "batch_size": 32, "opt": "adam"}
    assert record["state"] == "finished"


def test_run_missing_runs_only_the_points_without_an_execution(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", textwrap.dedent("""\
        name: m
        command: "test {i} != 2 || test -e ok && echo {i} > out.txt"
        parameters:
          i: {type: int, low: 1, high: 3}
        outputs: [out.txt]
        """))
    first = cli(root, "expegit", "run", "--grid")
    assert first.returncode == 1  # point 2 fails
    again = cli(root, "expegit", "run", "--grid", "--missing")
    assert "2 of the 3 points already have an execution" in again.stderr, again.stderr
    assert "1 executions:" in again.stderr  # only the failed point ran again
    states = sorted(r["state"] for r in json.loads(cli(root, "expegit", "list", "--json", check=True).stdout))
    assert states == ["failed", "failed", "finished", "finished"]
    (root / "ok").write_text("")  # untracked: not in the code, so point 2 fails again, as it should
    third = cli(root, "expegit", "run", "--grid", "--missing")
    assert "running the 1 missing" in third.stderr


def test_an_output_glob_matching_nothing_and_a_missing_identity_are_said(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", "name: g\ncommand: echo hi > out.txt\noutputs: [out.txt, \"plots/*.png\"]\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "", "GIT_AUTHOR_EMAIL": "", "GIT_COMMITTER_NAME": "", "GIT_COMMITTER_EMAIL": ""}
    run = cli(root, "expegit", "run", env=env)
    assert run.returncode == 0, run.stderr
    assert "output 'plots/*.png' matched no file" in run.stderr, run.stderr
    assert "output 'out.txt'" not in run.stderr
    assert "no git identity is configured" in run.stderr and "git config --global user.email" in run.stderr
    quiet = cli(root, "expegit", "run")  # an identity (tests/helpers GIT_ENV): no identity line
    assert "no git identity" not in quiet.stderr
