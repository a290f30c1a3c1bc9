"""Early stopping as a user meets it: `parasearch run` on the local profile, real git, real processes
that write a learning curve per epoch; bad points are stopped, recorded `pruned` with their step, and the
decisions can be re-derived from the branches alone (so a resumed or cloned study makes the same ones)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestra.search import EarlyStoppingSpec
from parasearch.early_stopping import curve_points, decide, make_curve
from parasearch.pruning import trial_numbers
from tests.helpers import GIT_ENV, cli, git, make_campaign

# A curve known from the parameter: val_loss(epoch) = x + 1/epoch. Lower x is better at every epoch.
TRAIN = """\
import json, os, sys, time
x = float(sys.argv[1])
with open(os.environ["ORCHESTRA_METRICS"], "a") as metrics, open("log.txt", "a") as log:
    for epoch in range(1, 10):
        time.sleep(0.25)
        loss = x + 1.0 / epoch
        metrics.write(json.dumps({"epoch": epoch, "val_loss": loss}) + "\\n"); metrics.flush()
        log.write(f"epoch {epoch}\\n"); log.flush()
with open("m.json", "w") as f:
    json.dump({"val_loss": loss}, f)
"""

MANIFEST = """\
name: es
command: python3 train.py {x}
parameters:
  x: {type: float, low: 0, high: 1, steps: 6}
outputs: [m.json, log.txt]
objective: {metric: val_loss, from: m.json, goal: minimize}
metrics: {every: 0.1s}
search: {algorithm: grid, budget: 6, parallel: PARALLEL,
         early_stopping: {rule: asha, metric: val_loss, step: epoch, min_step: 1, max_step: 9, reduction: 3,
                          grace: 5s}}
profile: local
profiles:
  local: {kind: local, slots: 2}
"""

SPEC = EarlyStoppingSpec(rule="asha", metric="val_loss", step="epoch", min_step=1, max_step=9, reduction=3,
                         n_startup=1, grace=5)


def records(root: Path) -> list[dict]:
    return json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)


def branch_points(root: Path, execution_id: str) -> list[dict]:
    shown = git(root, "show", f"executions/{execution_id}:.orchestra/metrics.jsonl", check=False)
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def rederived(root: Path, recs: list[dict]) -> dict[str, float | None]:
    """The rule's decision for every execution, from what the branches hold (as a clone would see it)."""
    from orchestra.execution import ExecutionRecord

    objs = [ExecutionRecord.from_dict(r) for r in recs]
    numbers = trial_numbers(objs)
    curves = {r.id: make_curve(numbers[r.id], curve_points(branch_points(root, r.id), "val_loss", "epoch"),
                               created=r.created or "", ended=r.ended, state=r.state, pruned_step=r.pruned_step)
              for r in objs}
    out: dict[str, float | None] = {}
    for r in objs:
        stop = decide(SPEC, curves[r.id], curves.values())
        out[r.id] = None if stop is None else stop.step
    return out


def test_asha_prunes_bad_points_and_records_them(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", MANIFEST.replace("PARALLEL", "2"), {"train.py": TRAIN})
    cli(root, "expegit", "check", check=True)
    run = cli(root, "parasearch", "run")
    assert run.returncode == 0, run.stderr  # pruned is no failure
    recs = records(root)
    assert len(recs) == 6
    pruned = [r for r in recs if r["state"] == "pruned"]
    finished = [r for r in recs if r["state"] == "finished"]
    assert pruned and finished and len(pruned) + len(finished) == 6, [r["state"] for r in recs]
    assert f"{len(pruned)} pruned" in run.stderr and "0 failed" in run.stderr
    # The grid walks x upward: the best point (x=0) runs to the end; every pruned one is worse than it.
    assert 0.0 in {r["parameters"]["x"] for r in finished}
    for r in pruned:
        assert r["pruned_step"] in (1.0, 3.0) and r["error"].startswith(f"at epoch {r['pruned_step']:g} by asha")
        assert r["objective"] is None and r["ended"]
        points = branch_points(root, r["id"])
        # Committed with what it wrote so far: its metrics up to (at least) the decision, and its outputs.
        assert points and points[-1]["epoch"] >= r["pruned_step"] and points[-1]["epoch"] < 9
        assert "log.txt" in r["outputs"]
        log = git(root, "show", f"executions/{r['id']}:log.txt").stdout
        assert log.startswith("epoch 1\n")
        subject = git(root, "log", "-1", "--format=%s", f"executions/{r['id']}").stdout
        assert subject.startswith("pruned: at epoch"), subject
    # The decisions are the rule's on the branches alone: a clone or a resume derives the same ones.
    assert rederived(root, recs) == {r["id"]: r.get("pruned_step") for r in recs}
    status = cli(root, "parasearch", "status", check=True).stdout
    assert f"{len(pruned)} pruned" in status and "0 failed" in status
    listed = json.loads(cli(root, "expegit", "list", "--json", "--state", "pruned", check=True).stdout)
    assert {r["id"] for r in listed} == {r["id"] for r in pruned}
    assert git(root, "status", "--porcelain").stdout == ""


def test_an_interrupted_study_resumes_with_the_same_decisions(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", MANIFEST.replace("PARALLEL", "1").replace("budget: 6", "budget: 5"),
                         {"train.py": TRAIN})
    env = dict(os.environ, **GIT_ENV)
    first = subprocess.Popen([sys.executable, "-m", "parasearch", "run"], cwd=root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # bounded: interrupt once two executions have ended
        done = [r for r in records(root) if r["state"] in ("finished", "pruned")]
        if len(done) >= 2:
            break
        time.sleep(0.3)
    first.send_signal(signal.SIGINT)
    _out, err = first.communicate(timeout=120)
    assert "interrupted" in err, err
    again = cli(root, "parasearch", "run")
    assert again.returncode == 0, again.stderr
    recs = records(root)
    # The execution the interrupt stopped was run again, not lost: the whole budget ended, none failed.
    assert len(recs) == 5 and all(r["state"] in ("finished", "pruned") for r in recs), [r["state"] for r in recs]
    assert any(r["state"] == "pruned" for r in recs)
    # Sequential (parallel 1): each execution is judged against all those before it, exactly as Optuna
    # would; the resumed run's decisions and the first run's are the rule's on the branches.
    assert rederived(root, recs) == {r["id"]: r.get("pruned_step") for r in recs}
