"""Impossible resource requests are refused before anything starts, wherever a campaign can start: one
line naming the profile, its node size, the request and the parameter values that ask for it; exit 11
(ResourceError); no branch, no run directory."""
from __future__ import annotations

from pathlib import Path

from tests.helpers import cli, git, make_campaign

MANIFEST = """\
name: too-big
command: python3 -c pass {n_gpus} {lr}
parameters:
  n_gpus: {choices: [1, 2, 4]}
  lr: {type: float, low: 0.001, high: 0.1}
resources:
  gpus: "{n_gpus}"
objective: {metric: loss, from: m.json, goal: minimize}
search: {algorithm: random, budget: 4, parallel: 2, seed: 1}
profile: two
profiles:
  two: {kind: local, gpus: [0, 1]}
"""


def _nothing_created(root: Path) -> None:
    assert git(root, "branch", "--list", "executions/*").stdout == ""
    assert not (root / ".orchestra" / "runs").exists() or not any((root / ".orchestra" / "runs").iterdir())


def test_a_grid_names_the_values_that_cannot_fit(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "camp", MANIFEST.replace("{type: float, low: 0.001, high: 0.1}",
                                                             "{choices: [0.01]}"))
    run = cli(root, "expegit", "run", "--grid")
    assert run.returncode == 11, run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("expegit: error: resources {cpus: 1, gpus: 4} fit no node of profile 'two' "
                           "(nodes: ") and "2 GPUs" in line
    assert line.endswith("asked for by n_gpus=4")
    _nothing_created(root)


def test_a_single_run_is_refused_too(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "camp", MANIFEST)
    run = cli(root, "expegit", "run", "-p", "n_gpus=4", "-p", "lr=0.01")
    assert run.returncode == 11 and "gpus: 4} fit no node of profile 'two'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    _nothing_created(root)


def test_a_study_whose_space_can_ask_too_much_is_refused_up_front(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "camp", MANIFEST)
    run = cli(root, "parasearch", "run")
    assert run.returncode == 11, run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "resources {cpus: 1, gpus: 4} fit no node of profile 'two'" in line and "2 GPUs" in line
    assert line.endswith("asked for by n_gpus=4")
    _nothing_created(root)


def test_a_study_whose_int_range_ends_past_the_node_names_its_bound(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "camp", MANIFEST.replace("{choices: [1, 2, 4]}", "{type: int, low: 1, high: 3}"))
    run = cli(root, "parasearch", "run")
    assert run.returncode == 11 and run.stderr.strip().endswith("asked for by n_gpus=3"), run.stderr
    _nothing_created(root)


def test_a_study_that_fits_is_not_refused(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "camp", MANIFEST.replace("[1, 2, 4]", "[1, 2]").replace("budget: 4", "budget: 2"),
                         {"m.json": '{"loss": 1}'})
    run = cli(root, "parasearch", "run", "-q")
    assert run.returncode in (0, 1), run.stderr  # it ran (whatever its executions did), not refused
    assert "fit no node" not in run.stderr
    assert git(root, "branch", "--list", "executions/*").stdout != ""


def test_runaway_batch_refuses_before_creating_results(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "dir", 'name: x\ncommand: "true"\nprofiles:\n  two: {kind: local, gpus: [0, 1]}\n')
    (root / "p.txt").write_text("n=1\nn=3\n")
    run = cli(root, "runaway", "batch", "two", "--params", "p.txt", "--gpus", "{n}", "--", "echo {n}")
    assert run.returncode == 11 and "gpus: 3} fit no node of profile 'two'" in run.stderr, run.stderr
    assert not (root / "runaway-results").exists()
