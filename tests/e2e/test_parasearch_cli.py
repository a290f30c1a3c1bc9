"""parasearch as a user runs it: real CLI processes, real git, executions as real local processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, cli, git, make_campaign

# A quadratic with a failing corner (non-zero exit) and a NaN corner (no usable objective).
OBJECTIVE = """\
import json, math, sys, time
x, y = float(sys.argv[1]), float(sys.argv[2])
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
if x >= 2 and y <= 0:
    sys.exit(3)
loss = math.nan if (x <= -2 and y <= 0) else (x - 0.7) ** 2 + (y - 1.3) ** 2
with open("m.json", "w") as f:
    json.dump({"loss": loss}, f)
"""


def manifest(search: str, *, x: str = "{type: float, low: -2, high: 2, steps: 5}",
             y: str = "{type: int, low: 0, high: 2}", sleep: str = "") -> str:
    return f"""\
name: quad
command: python3 f.py {{x}} {{y}}{sleep}
parameters:
  x: {x}
  y: {y}
outputs: [m.json]
objective: {{metric: loss, from: m.json, goal: minimize}}
search: {search}
profile: local
profiles:
  local: {{kind: local, slots: 3}}
"""


def records(root: Path) -> list[dict]:
    return json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)


def points(recs: list[dict]) -> list[tuple]:
    return sorted((r["parameters"]["x"], r["parameters"]["y"]) for r in recs)


def test_grid_budget_failures_status_and_best(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("{algorithm: grid, budget: 10, parallel: 3}"), {"f.py": OBJECTIVE})
    cli(root, "expegit", "check", check=True)
    run = cli(root, "parasearch", "run")
    assert run.returncode == 0, run.stderr  # a NaN objective is recorded, not an execution failure
    assert "10/10 of the budget used" in run.stderr and "best loss" in run.stderr
    recs = records(root)
    assert len(recs) == 10 and len(set(points(recs))) == 10  # the budget exactly, no point twice
    study = {r["search"] for r in recs}
    assert len(study) == 1 and None not in study
    nan = [r for r in recs if r["parameters"]["x"] == -2.0 and r["parameters"]["y"] == 0]
    assert nan and nan[0]["objective"] is None  # NaN is no objective, yet the study went on
    status = cli(root, "parasearch", "status", check=True).stdout
    assert study.pop() in status and "10/10 executions" in status and "best loss" in status
    # raising the budget continues the same study where the grid left off, and the failures cost nothing
    more = cli(root, "parasearch", "run", "--budget", "15", "-q")
    assert more.returncode == 1  # some executions failed: the exit status of `expegit run`
    assert "1 failed" in more.stderr and "5 executions this run" in more.stderr and "15/15" in more.stderr, more.stderr
    recs = records(root)
    assert len(recs) == 15 and len(set(points(recs))) == 15
    assert [(r["parameters"]["x"], r["parameters"]["y"]) for r in recs
            if r["state"] == "failed" and r["exit_code"] == 3] == [(2.0, 0)]
    best = json.loads(cli(root, "parasearch", "best", "--top", "2", "--json", check=True).stdout)
    assert [b["rank"] for b in best] == [1, 2]
    assert best[0]["parameters"] == {"x": 1.0, "y": 1} and best[0]["objective"] == pytest.approx(0.09 + 0.09)
    assert best[0]["executions"][0] in {r["id"] for r in recs}
    assert git(root, "status", "--porcelain").stdout == ""


def test_bad_search_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("{algorithm: random, budget: 10, parallel: 2}",
                                                  x="{type: float, low: -2, high: 2}"), {"f.py": OBJECTIVE})
    grid = cli(root, "parasearch", "run", "--algorithm", "grid")
    assert grid.returncode == 9 and "steps" in grid.stderr, grid.stderr
    unknown = cli(root, "parasearch", "run", "--algorithm", "annealing")
    assert unknown.returncode == 9 and "bayes" in unknown.stderr
    low = cli(root, "parasearch", "run", "--budget", "1")
    assert low.returncode == 9 and "below parallel" in low.stderr
    (root / "orchestra.yaml").write_text(manifest("{algorithm: grid, budget: 10}", x="{type: float, low: -2, high: 2}"))
    check = cli(root, "expegit", "check")
    assert check.returncode == 3 and "orchestra.yaml:4:" in check.stderr and "steps" in check.stderr
    big = manifest("{algorithm: grid, budget: 10}", x="{type: int, low: 0, high: 2000}",
                   y="{type: int, low: 0, high: 2000}")
    (root / "orchestra.yaml").write_text(big)
    check = cli(root, "expegit", "check")
    assert check.returncode == 3 and "orchestra.yaml:8:" in check.stderr and "grid has up to" in check.stderr
    git(root, "commit", "-qam", "big grid")
    run = cli(root, "parasearch", "run")
    assert run.returncode == 3 and "grid has up to" in run.stderr
    assert git(root, "for-each-ref", "refs/heads/executions").stdout == ""


def test_kill9_then_rerun_and_a_collaborator_cover_the_grid_exactly_once(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("{algorithm: grid, budget: 9, parallel: 3}",
                                                  x="{type: float, low: -1, high: 1, steps: 3}",
                                                  y="{type: int, low: 0, high: 3}", sleep=" 1.0"), {"f.py": OBJECTIVE})
    env = dict(os.environ, **GIT_ENV)
    proc = subprocess.Popen([sys.executable, "-m", "parasearch", "run", "-q"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            finished = [r for r in records(root) if r["state"] == "finished"]
            if len(finished) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the study did not get going")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = records(root)
    assert 2 <= len(partial) < 9
    assert any(r["state"] != "finished" for r in partial)  # the dead controller left executions in flight
    rerun = cli(root, "parasearch", "run")
    assert rerun.returncode == 0, rerun.stderr
    assert "re-attached" in rerun.stderr
    recs = records(root)
    assert len(recs) == 9 and len(set(points(recs))) == 9, points(recs)
    assert {r["state"] for r in recs} == {"finished"}
    assert {r["id"] for r in partial} <= {r["id"] for r in recs}  # nothing lost: the orphans were resumed

    # A collaborator clones the campaign, fetches the results and raises the budget: the grid goes on
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    git(clone, "fetch", "-q", "origin", "refs/heads/executions/*:refs/heads/executions/*")
    status = cli(clone, "parasearch", "status", check=True).stdout
    assert "9/9 executions" in status
    more = cli(clone, "parasearch", "run", "--budget", "14", "-q")
    assert more.returncode == 0, more.stderr
    recs = records(clone)
    assert len(recs) == 12 and len(set(points(recs))) == 12  # 3 x 4 grid: exhausted, never repeated
    assert "exhausted" in more.stderr


def test_bayes_finds_the_good_region_with_repeats_and_stops_at_its_target(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest(
        "{algorithm: bayes, budget: 24, parallel: 2, seed: 3, repeats: 2, stop: {target: 0.003}}",
        x="{type: float, low: -2, high: 2}", y="{type: float, low: 0.5, high: 3}"), {"f.py": OBJECTIVE})
    run = cli(root, "parasearch", "run")  # 3 slots, but parallel: 2
    assert run.returncode == 0, run.stderr
    best = json.loads(cli(root, "parasearch", "best", "--json", check=True).stdout)[0]
    assert best["objective"] < 0.05, best
    assert len(best["executions"]) == 2 and len(best["values"]) == 2
    recs = records(root)
    assert len(recs) <= 24 and len(recs) % 2 == 0
    by_point: dict[tuple, int] = {}
    for r in recs:
        by_point[(r["parameters"]["x"], r["parameters"]["y"])] = by_point.get((r["parameters"]["x"], r["parameters"]["y"]), 0) + 1
    assert set(by_point.values()) == {2}  # every point exactly its repeats
    if len(recs) < 24:
        assert "target" in run.stderr
    spans = [(r["started"], r["ended"]) for r in recs]
    assert max(sum(1 for a, b in spans if a < start < b) for start, _ in spans) <= 1  # never over 2 at once


def test_two_controllers_on_one_clone_share_the_budget_without_duplicates(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("{algorithm: grid, budget: 10, parallel: 2}",
                                                  x="{type: float, low: -1, high: 1, steps: 3}",
                                                  y="{type: int, low: 0, high: 3}", sleep=" 0.2"),
                         {"f.py": OBJECTIVE})
    env = dict(os.environ, **GIT_ENV)
    first = subprocess.Popen([sys.executable, "-m", "parasearch", "run", "-q"], cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    second = cli(root, "parasearch", "run", "-q")
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    recs = records(root)
    assert len(recs) == 10 and len(set(points(recs))) == 10
    assert {r["state"] for r in recs} == {"finished"}


# -- tried as a new user would (issue 10, "Search, tried as a new user would") --------------------------
WRONG_KEY = """\
import json, sys
with open("m.json", "w") as f:
    json.dump({"val_acc": float(sys.argv[1])}, f)
"""


def test_a_metric_missing_from_its_file_stops_the_search_and_says_which(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("{algorithm: random, budget: 12, parallel: 1, seed: 3}"),
                         {"f.py": WRONG_KEY})
    run = cli(root, "parasearch", "run")
    assert run.returncode == 1, run.stderr  # not "all good": the search learnt nothing
    assert "m.json has no 'loss'" in run.stderr and "fix objective:" in run.stderr, run.stderr
    assert "3 finished (3 without a loss value, failed for the search)" in run.stderr, run.stderr
    assert len(records(root)) == 3  # stopped after the first few, not the whole budget
    status = cli(root, "parasearch", "status", check=True).stdout
    assert "3/12 executions: 0 done, 3 failed" in status
    again = cli(root, "parasearch", "run")  # earlier runs count: nothing more is burnt
    assert again.returncode == 1 and len(records(root)) == 3, again.stderr


def test_budget_from_the_command_line_is_remembered_and_explained(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("{algorithm: random, budget: 2, parallel: 1, seed: 3}"),
                         {"f.py": OBJECTIVE})
    before = cli(root, "parasearch", "status", check=True).stdout
    assert "none yet; `parasearch run` starts the study" in before and "running or not run yet" not in before
    cli(root, "parasearch", "run", "--budget", "3", check=True)
    status = cli(root, "parasearch", "status", check=True).stdout
    assert "3/3 executions (budget from the last `run --budget`)" in status, status
    assert "budget spent: give `parasearch run --budget N` with N above 3" in status
    spent = cli(root, "parasearch", "run")
    assert spent.returncode == 0 and len(records(root)) == 3
    assert "the budget is spent (3/3)" in spent.stderr, spent.stderr
    below = cli(root, "parasearch", "run", "--budget", "2")
    assert "already has 3 executions, more than the budget of 2: nothing new was run" in below.stderr, below.stderr
    # An edit of the manifest's budget is the newer decision: it wins over the remembered one.
    (root / "orchestra.yaml").write_text(manifest("{algorithm: random, budget: 4, parallel: 1, seed: 3}"))
    git(root, "commit", "-qam", "budget 4")
    assert "3/4 executions:" in cli(root, "parasearch", "status", check=True).stdout


def test_run_snapshot_runs_a_dirty_tree_and_slots_below_parallel_are_said(tmp_path: Path) -> None:
    text = manifest("{algorithm: random, budget: 2, parallel: 2, seed: 3}").replace("slots: 3", "slots: 1")
    root = make_campaign(tmp_path / "c", text, {"f.py": OBJECTIVE})
    (root / "f.py").write_text(OBJECTIVE + "\n# edited\n")
    refused = cli(root, "parasearch", "run")
    assert refused.returncode != 0 and "--snapshot" in refused.stderr
    run = cli(root, "parasearch", "run", "--snapshot")
    assert run.returncode == 0, run.stderr
    assert "at most 1 executions in flight, not 2: profile local has 1 slot(s)" in run.stderr, run.stderr
    recs = records(root)
    assert len(recs) == 2 and all(r["commit"] != git(root, "rev-parse", "HEAD").stdout.strip() for r in recs)
    assert "at most 1 executions in flight" in cli(root, "parasearch", "status", check=True).stdout


def test_a_failed_execution_line_shows_its_stderr_tail(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", "name: t\ncommand: python3 fail.py\n",
                         {"fail.py": "import sys\nprint('loading', file=sys.stderr)\nsys.exit('no such dataset: x.csv')\n"})
    run = cli(root, "expegit", "run")
    assert run.returncode == 1
    assert "stderr: no such dataset: x.csv" in run.stderr, run.stderr


def test_a_bad_range_is_one_error_not_also_no_parameters(tmp_path: Path) -> None:
    text = manifest("{algorithm: bayes, budget: 8}", x="{type: float, low: 0, high: 1, log: true}")
    text = text.replace("{x} {y}", "{x}").replace("  y: {type: int, low: 0, high: 2}\n", "")
    root = make_campaign(tmp_path / "c", text, {"f.py": OBJECTIVE})
    check = cli(root, "expegit", "check")
    assert check.returncode == 3
    assert "log scale needs low > 0" in check.stderr + check.stdout
    assert "no parameters to search over" not in check.stderr + check.stdout


def test_a_misspelt_algorithm_on_the_command_line_gets_a_did_you_mean(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("{algorithm: grid, budget: 4}"), {"f.py": OBJECTIVE})
    run = cli(root, "parasearch", "run", "--algorithm", "sobl")
    assert run.returncode == 9 and "did you mean 'sobol'?" in run.stderr, run.stderr
    assert git(root, "for-each-ref", "refs/heads/executions").stdout == ""
