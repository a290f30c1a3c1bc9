"""A two-objective study as a user runs it: real CLI processes, real git, local executions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, make_campaign

# A two-objective trade-off (Schaffer-like): loss falls as x rises, seconds rise with it; y only hurts.
# One corner fails, so the front must be built from the finished executions only.
OBJECTIVES = """\
import json, sys
x, y = float(sys.argv[1]), float(sys.argv[2])
if x <= 0.05 and y >= 0.9:
    sys.exit(3)
with open("m.json", "w") as f:
    json.dump({"loss": (1 - x) ** 2 + y, "seconds": x ** 2 + 0.5 * y, "acc": 1 - x}, f)
"""


def manifest(algorithm: str, budget: int) -> str:
    return f"""\
name: two
command: python3 f.py {{x}} {{y}}
parameters:
  x: {{type: float, low: 0, high: 1}}
  y: {{type: float, low: 0, high: 1}}
outputs: [m.json]
objective:
  - {{metric: loss, from: m.json, goal: minimize}}
  - {{metric: seconds, from: m.json, goal: minimize}}
search: {{algorithm: {algorithm}, budget: {budget}, parallel: 2, seed: 3}}
profile: local
profiles:
  local: {{kind: local, slots: 2}}
"""


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_bayes_two_objectives_gives_a_non_dominated_front(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("bayes", 14), {"f.py": OBJECTIVES})
    cli(root, "expegit", "check", check=True)
    run = cli(root, "parasearch", "run", "-q")
    assert run.returncode in (0, 1), run.stderr
    assert "Pareto front of" in run.stderr and "14/14 of the budget used" in run.stderr, run.stderr
    recs = json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)
    finished = [r for r in recs if r["state"] == "finished"]
    assert len(recs) == 14 and finished
    # Every finished record holds both values, and `objective` is the primary (first) one.
    vectors = {}
    for r in finished:
        record = cli(root, "git", "show", f"executions/{r['id']}:.orchestra/execution.yaml", check=True).stdout
        assert "objectives: {" in record
    data = json.loads(cli(root, "parasearch", "best", "--json", check=True).stdout)
    assert [o["metric"] for o in data["objectives"]] == ["loss", "seconds"]
    front = data["front"]
    assert front and data["front_size"] == len(front) and data["hypervolume"] > 0
    for p in front:
        x, y = p["parameters"]["x"], p["parameters"]["y"]
        assert p["objectives"]["loss"] == pytest.approx((1 - x) ** 2 + y)
        assert p["objectives"]["seconds"] == pytest.approx(x ** 2 + 0.5 * y)
        vectors[p["executions"][0]] = [p["objectives"]["loss"], p["objectives"]["seconds"]]
    # Non-dominated among themselves and against every finished execution of the study.
    all_vectors = []
    for r in finished:
        got = json.loads(cli(root, "git", "show", f"executions/{r['id']}:m.json", check=True).stdout)
        all_vectors.append([got["loss"], got["seconds"]])
    for v in vectors.values():
        assert not any(_dominates(w, v) for w in all_vectors)
    missing = [w for w in all_vectors if not any(_dominates(u, w) for u in all_vectors) and w not in vectors.values()]
    assert missing == []  # and every non-dominated execution is on it
    losses = [p["objectives"]["loss"] for p in front]
    assert losses == sorted(losses)  # sorted by the first objective
    table = cli(root, "parasearch", "best", check=True).stdout
    assert "loss (min)" in table and "seconds (min)" in table and f"Pareto front of {len(front)} point(s)" in table
    status = cli(root, "parasearch", "status", check=True).stdout
    assert f"Pareto front: {len(front)} point(s)" in status


def test_random_search_on_two_objectives_and_a_stop_target_is_refused(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", manifest("random", 4), {"f.py": OBJECTIVES})
    run = cli(root, "parasearch", "run", "-q")
    assert run.returncode in (0, 1), run.stderr
    data = json.loads(cli(root, "parasearch", "best", "--json", "--top", "1", check=True).stdout)
    assert len(data["front"]) == 1 and data["front_size"] >= 1
    text = (root / "orchestra.yaml").read_text().replace("seed: 3}", "seed: 3, stop: {target: 0.1}}")
    (root / "orchestra.yaml").write_text(text)
    check = cli(root, "expegit", "check")
    assert check.returncode != 0 and "search.stop needs a single objective" in check.stderr, check.stderr


def test_a_second_metric_missing_stops_the_study_and_names_it(tmp_path: Path) -> None:
    text = manifest("random", 6).replace("metric: seconds", "metric: secs")
    root = make_campaign(tmp_path / "c", text, {"f.py": OBJECTIVES})
    run = cli(root, "parasearch", "run", "-q")
    assert run.returncode == 1, run.stderr
    assert "not every objective was read (objective secs is missing from m.json)" in run.stderr, run.stderr
    data = json.loads(cli(root, "parasearch", "best", "--json", check=True).stdout)
    assert data["front"] == [] and data["hypervolume"] is None
    assert "no finished point with every objective yet" in cli(root, "parasearch", "best", check=True).stdout
