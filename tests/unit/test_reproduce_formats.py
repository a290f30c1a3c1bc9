"""Pure parts of issue 15: the environment section and package diffs, rerun_of in records, configurations
with their intervals, the compare render and parse, the metrics stream, the RO-Crate document."""
from __future__ import annotations

import json

import pytest
from scipy import stats

from expegit.aggregate import configurations, render_configurations, summarize
from expegit.api import parse_metrics_lines, render_metrics_lines
from expegit.compare import Comparison, Side, comparison_to_dict, parse_json, render_json, render_text
from expegit.provenance import PROCESS_RUN, parse_crate, render_crate, render_metadata
from expegit.rerun import failed_without_rerun, rerun_specs
from orchestra.environment import Environment, Gpu, PackageDiff, diff_environments, diff_packages, parse_pip_freeze
from orchestra.errors import ExecutionError
from orchestra.execution import ExecutionRecord, parse_record, parse_rendered_record, render_record
from orchestra.yamlio import load_plain


def rec(n: int, *, objective: float | None = None, state: str = "finished", **fields) -> ExecutionRecord:
    params = fields.pop("parameters", {"lr": 0.1})
    return ExecutionRecord(id=f"{n:012x}", campaign="c", commit="a" * 40, command="python t.py",
                           parameters=params, profile="local", state=state, objective=objective, **fields)


FREEZE_A = """\
# comment
numpy==1.26.4
Torch==2.1.0
-e git+https://example.org/x.git#egg=x
scipy==1.11.0
my_pkg @ file:///tmp/my_pkg
"""
FREEZE_B = """\
numpy==1.26.4
torch==2.2.0
pandas==2.2.1
my-pkg @ file:///tmp/my_pkg
"""


def test_pip_freeze_parse_normalises_names_and_skips_options() -> None:
    assert parse_pip_freeze(FREEZE_A) == {"numpy": "1.26.4", "torch": "2.1.0", "scipy": "1.11.0",
                                          "my-pkg": "file:///tmp/my_pkg"}
    assert parse_pip_freeze("python=3.11.7=h955ad1f_0\nlibgcc-ng=11.2.0=h1234567_1\n") == {
        "python": "3.11.7", "libgcc-ng": "11.2.0"}  # conda list --export


def test_package_diff_names_added_removed_changed() -> None:
    diff = diff_packages(FREEZE_A, FREEZE_B)
    assert diff.added == {"pandas": "2.2.1"}
    assert diff.removed == {"scipy": "1.11.0"}
    assert diff.changed == {"torch": ("2.1.0", "2.2.0")}
    assert not diff_packages(FREEZE_A, FREEZE_A)


def test_environment_round_trip_and_diff() -> None:
    env = Environment(os="Ubuntu 22.04", kernel="5.15", cpu="EPYC", cores=64, memory=2**38,
                      gpus=(Gpu("H100", 81559), Gpu("H100", 81559)), driver="550.54", cuda="12.4",
                      python="3.11.7 /usr/bin/python3", packages_blob="b" * 40, modules=("gcc/12",),
                      vars={"SLURM_JOB_ID": "7"})
    assert Environment.from_dict(json.loads(json.dumps(env.to_dict()))) == env
    assert Environment().to_dict() == {}
    other = Environment.from_dict({**env.to_dict(), "driver": "535.1", "packages_blob": "c" * 40})
    assert diff_environments(env, other) == {"driver": ("550.54", "535.1")}  # blobs are compared by content
    assert env.summary() == "Ubuntu 22.04, python 3.11.7, 2x H100, driver 550.54"


def test_record_with_rerun_of_and_environment_round_trips_on_both_parsers() -> None:
    env = Environment(os="Debian", gpus=(Gpu('A"100\n'),), vars={"X": "é\u2028"}).to_dict()
    record = rec(1, objective=0.5, rerun_of="f" * 12, environment=env)
    text = render_record(record)
    assert parse_record(text) == record
    assert parse_rendered_record(text)["environment"] == env  # the fast path reads it (no YAML fallback)
    assert ExecutionRecord.from_dict(load_plain(text)) == record  # and a YAML library reads the same


def test_records_without_the_new_fields_are_unchanged() -> None:
    text = render_record(rec(2))
    assert "rerun_of" not in text and "environment" not in text
    assert parse_record(text).rerun_of is None and parse_record(text).environment is None


@pytest.mark.parametrize("line, problem", [("rerun_of: \"nope\"", "rerun_of"), ("environment: \"x\"", "environment")])
def test_bad_new_fields_are_refused(line: str, problem: str) -> None:
    with pytest.raises(ExecutionError, match=problem):
        parse_record(render_record(rec(3)) + line + "\n")


def test_rerun_specs_keep_command_parameters_and_name_the_original() -> None:
    original = rec(4, parameters={"lr": 0.5, "opt": "sgd"}, repeat=2, search="bayes")
    [spec] = rerun_specs([original])
    assert (spec.commit, spec.parameters, spec.profile, spec.repeat, spec.rerun_of, spec.command, spec.search) == \
        (original.commit, original.parameters, "local", 2, original.id, "python t.py", None)
    [spec] = rerun_specs([original], at="b" * 40, profile="cluster")
    assert (spec.commit, spec.profile) == ("b" * 40, "cluster")


def test_failed_without_rerun_retries_each_failure_chain_once() -> None:
    first, ok = rec(5, state="failed"), rec(6)
    assert failed_without_rerun([first, ok]) == [first]
    again = rec(7, state="failed", rerun_of=first.id)
    assert failed_without_rerun([first, ok, again]) == [again]


def test_interval_matches_scipy_student_t() -> None:
    values = [1.0, 1.4, 0.9, 1.2, 1.1]
    mean, std, low, high = summarize(values)
    ref_low, ref_high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    assert mean == pytest.approx(1.12) and std == pytest.approx(stats.tstd(values))
    assert (low, high) == (pytest.approx(ref_low), pytest.approx(ref_high))
    assert summarize([3.0])[1:] == (None, None, None)


def test_configurations_sorted_by_goal_and_overlap_marked() -> None:
    rs = [rec(i, objective=v, parameters={"lr": lr}) for i, (lr, v) in enumerate(
        [(0.1, 1.0), (0.1, 1.2), (0.1, 1.1), (0.2, 1.15), (0.2, 1.25), (0.2, 1.2), (0.3, 5.0), (0.3, 5.1)])]
    rs.append(rec(99, objective=0.0, parameters={"lr": 0.1}, state="failed"))  # failed ones do not count
    low = configurations(rs, "minimize")
    assert [c.parameters["lr"] for c in low] == [0.1, 0.2, 0.3] and [c.n for c in low] == [3, 3, 2]
    assert [(c.best, c.overlaps_best) for c in low] == [(True, True), (False, True), (False, False)]
    high = configurations(rs, "maximize")
    assert high[0].parameters["lr"] == 0.3 and not high[1].overlaps_best
    lines = render_configurations(low, "loss")
    assert lines[1].lstrip().startswith("*") and lines[2].lstrip().startswith("~") and "n=3" in lines[1]
    ignored = configurations([rec(1, objective=1.0, parameters={"lr": 1, "seed": 0}),
                              rec(2, objective=2.0, parameters={"lr": 1, "seed": 1})], ignore=["seed"])
    assert len(ignored) == 1 and ignored[0].n == 2 and ignored[0].parameters == {"lr": 1}
    seeds = [rec(i, objective=float(i), parameters={"lr": 1, "random_seed": i}) for i in range(3)]
    assert [c.n for c in configurations(seeds)] == [3]  # seed parameters are repeats by default
    assert [c.n for c in configurations(seeds, ignore=())] == [1, 1, 1]


def _comparison() -> Comparison:
    side = Side(id="a" * 12, state="finished", commit="1" * 40, host="n1", profile="local", duration=2.0,
                objective=0.5)
    return Comparison(
        a=side, b=Side(**{**side.__dict__, "id": "b" * 12, "commit": "2" * 40, "objective": 0.25}),
        parameters={"lr": (0.1, 0.2)}, diffstat=" train.py | 2 +-\n 1 file changed", environment={"driver": ("1", "2")},
        environment_note=None, packages=PackageDiff({"pandas": "2.2"}, {}, {"torch": ("2.1.0", "2.2.0")}),
        conda=None, metrics={"loss": (0.5, 0.25), "acc": (0.9, None)}, objective_metric="loss",
        outputs={"model.pt": ("c" * 40, "d" * 40), "extra.txt": (None, "e" * 40)})


def test_compare_text_names_what_differs() -> None:
    text = render_text(_comparison())
    assert "lr" in text and "0.1" in text and "0.2" in text
    assert "train.py | 2 +-" in text
    assert "~ torch 2.1.0 -> 2.2.0" in text and "+ pandas==2.2" in text
    assert "loss (objective)" in text and "-0.25 (-50.0%)" in text
    assert "extra.txt  only in B" in text and "model.pt  cccccccc -> dddddddd" in text


def test_compare_json_round_trips() -> None:
    c = _comparison()
    data = json.loads(render_json(c))
    assert data["metrics"]["loss"] == {"a": 0.5, "b": 0.25, "difference": -0.25}
    assert data["environment"]["packages"]["changed"] == {"torch": ["2.1.0", "2.2.0"]}
    assert parse_json(render_json(c)) == c


def test_metrics_stream_parse_skips_partial_lines() -> None:
    points = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.5}]
    text = render_metrics_lines(points)
    assert parse_metrics_lines(text) == points
    assert parse_metrics_lines(text + '{"step": 3, "lo') == points
    assert parse_metrics_lines("") == []


def test_ro_crate_document_parses_back() -> None:
    done = rec(8, objective=0.1, author="Ada L <ada@example.org>", started="2026-01-01T00:00:00Z",
               ended="2026-01-01T00:01:00Z", parameters={"lr": 0.1, "opt": "adam"})
    failed = rec(9, state="failed", error="exit 1", rerun_of=done.id, created="2026-01-01T00:02:00Z")
    doc = render_crate("camp", "python t.py {lr}", [done, failed], {done.id: [f"executions/{done.id}/m.json"]})
    root = next(e for e in doc["@graph"] if e["@id"] == "./")
    assert root["conformsTo"] == {"@id": PROCESS_RUN} and len(root["mentions"]) == 2
    back = {e["id"]: e for e in parse_crate(render_metadata(doc))}
    assert back[done.id] == {"id": done.id, "state": "finished", "commit": "a" * 40,
                             "parameters": {"lr": 0.1, "opt": "adam"}, "results": [f"executions/{done.id}/m.json"],
                             "startTime": done.started, "endTime": done.ended, "agent": "Ada L"}
    assert back[failed.id]["state"] == "failed" and back[failed.id]["startTime"] == failed.created


def test_status_skips_grouping_without_repeats_or_seeds() -> None:
    from expegit.aggregate import may_have_repeats

    plain = [rec(i, objective=1.0, parameters={"lr": i}) for i in range(3)]
    assert not may_have_repeats(plain, ["lr"])
    assert may_have_repeats(plain, ["lr", "seed"])
    assert may_have_repeats(plain + [rec(9, objective=1.0, repeat=1)], ["lr"])
