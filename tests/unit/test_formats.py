"""Pure render/parse pairs: execution records, branch names, commands, durations, parameters."""
from __future__ import annotations

import math
import shlex

import pytest

from orchestra.durations import parse_duration, render_slurm_time
from orchestra.errors import ExecutionError, UsageError
from orchestra.execution import (ExecutionRecord, is_execution_id, new_execution_id, parse_branch_name,
                                 parse_record, render_branch_name, render_record)
from orchestra.parameters import ParameterSpec, expand_points, parse_assignments
from orchestra.quoting import placeholders, render_command

HOSTILE = ["; rm -rf x", "$(id)", "`id`", "it's", 'say "hi"', "line1\nline2", "tab\there", "ünïcødé 😀",
           "back\\slash", "\x00nul", "\x85nel", "\u2028sep", "#comment", "key: value", "- item", "{braces}",
           "   spaces   ", "", "null", "true", "1e5", "0x1F", "~"]


def make_record(**overrides) -> ExecutionRecord:
    values = dict(id="0123456789ab", campaign="demo", commit="a" * 40, command="python t.py", profile="local",
                  parameters={"lr": 0.001, "layers": 3, "opt": "adam", "flag": True})
    values.update(overrides)
    return ExecutionRecord(**values)


def test_record_round_trip_keeps_types() -> None:
    record = make_record(state="finished", exit_code=0, objective=0.25, duration=1.5, outputs=["m.json", "a b.png"],
                         started="2026-01-01T00:00:00.000Z", host="node1", slot=3)
    assert parse_record(render_record(record)) == record


@pytest.mark.parametrize("text", HOSTILE)
def test_record_round_trip_hostile_strings(text: str) -> None:
    record = make_record(parameters={"msg": text, "weird key: x": text}, error=text, command=text)
    assert parse_record(render_record(record)) == record


@pytest.mark.parametrize("value", [1e-5, 1e22, -0.0, 3.0, 1.7976931348623157e308, 5e-324, float("inf")])
def test_record_round_trip_floats(value: float) -> None:
    record = make_record(parameters={"x": value}, objective=value)
    back = parse_record(render_record(record))
    assert back.parameters["x"] == value and isinstance(back.parameters["x"], float)


def test_record_nan_objective() -> None:
    back = parse_record(render_record(make_record(objective=float("nan"))))
    assert back.objective is not None and math.isnan(back.objective)


@pytest.mark.parametrize("text,problem", [
    ("id: 1\n", "lacks"),
    ("[1, 2]\n", "not a mapping"),
    (": : :\n", "not valid YAML"),
    (render_record(make_record()).replace("state: \"created\"", "state: \"exploded\""), "state"),
    (render_record(make_record()).replace("a" * 40, "abc"), "full commit id"),
    (render_record(make_record()) + "surprise: 1\n", "unknown keys surprise"),
])
def test_malformed_records_are_execution_errors(text: str, problem: str) -> None:
    with pytest.raises(ExecutionError, match=problem):
        parse_record(text)


def test_branch_names() -> None:
    execution_id = new_execution_id()
    assert is_execution_id(execution_id)
    name = render_branch_name(execution_id)
    assert name == f"executions/{execution_id}"
    assert parse_branch_name(name) == execution_id
    assert parse_branch_name("refs/heads/" + name) == execution_id
    for bad in ("main", "executions/xyz", "executions/0123456789ABCDEF", "executions/0123456789ab/x"):
        assert parse_branch_name(bad) is None


@pytest.mark.parametrize("text", [t for t in HOSTILE if "\x00" not in t])  # NUL cannot be in an argv
def test_command_quotes_every_value(text: str) -> None:
    rendered = render_command("prog --msg {msg} --n {n}", {"msg": text, "n": 3})
    assert shlex.split(rendered) == ["prog", "--msg", text, "--n", "3"]


def test_command_format_spec_and_braces() -> None:
    assert render_command("p {lr:.2e} {{x}}", {"lr": 0.000123}) == "p 1.23e-04 {x}"
    assert placeholders("a {x} {y:.3f} {{z}}") == [("x", ""), ("y", ".3f")]
    with pytest.raises(ValueError):
        placeholders("a {0}")


@pytest.mark.parametrize("text,seconds", [("90", 90), (45, 45), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                          ("1h30m", 5400), ("1d", 86400), ("04:00:00", 14400),
                                          ("1-00:00:00", 86400), ("10:30", 630)])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 parsecs", "-3", "0", "1h and then"])
def test_bad_durations(text) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_slurm_time_render() -> None:
    assert render_slurm_time(5400) == "01:30:00"
    assert render_slurm_time(90061) == "1-01:01:01"


SPECS = {
    "lr": ParameterSpec("lr", "float", low=0.001, high=0.1, log=True, steps=3),
    "layers": ParameterSpec("layers", "int", low=1, high=3),
    "opt": ParameterSpec("opt", "choice", choices=("sgd", "adam")),
    "momentum": ParameterSpec("momentum", "float", low=0.0, high=0.9, steps=2, when={"opt": ("sgd",)}),
    "seed": ParameterSpec("seed", "fixed", value=0),
}


def test_grid_is_the_product_with_conditionals_collapsed() -> None:
    points = list(expand_points(SPECS, {}, grid=True))
    # lr 3 x layers 3 x (sgd with 2 momenta + adam without momentum) = 27
    assert len(points) == 27
    assert len({tuple(sorted(p.items())) for p in points}) == 27
    assert all(("momentum" in p) == (p["opt"] == "sgd") for p in points)
    assert {p["lr"] for p in points} == {0.001, 0.01, 0.1}


def test_assignments_are_typed_and_checked() -> None:
    given = parse_assignments(["lr=0.01", "lr=0.05", "layers=2", "opt=adam"], SPECS)
    assert given == {"lr": [0.01, 0.05], "layers": [2], "opt": ["adam"]}
    for bad, message in [("lr=abc", "not a number"), ("layers=1.5", "not an integer"), ("opt=rmsprop", "choices"),
                         ("nope=1", "no parameter 'nope'"), ("lr", "expected name=value"), ("lr=5", "outside"),
                         ("seed=1", "fixed")]:
        with pytest.raises(UsageError, match=message):
            parse_assignments([bad], SPECS)


def test_missing_value_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="parameter lr has no value"):
        list(expand_points(SPECS, {}, grid=False))


@pytest.mark.parametrize("text", HOSTILE)
def test_fast_record_parser_agrees_with_yaml(text: str) -> None:
    """The fast parser must read everything render_record writes, exactly as a YAML library does."""
    from orchestra.execution import parse_rendered_record
    from orchestra.yamlio import load_plain

    record = make_record(parameters={"msg": text, f"k{text}": 1.5e-7, "n": -3, "b": False, "none": None},
                         error=text, outputs=[text or "x", "b"], objective=float("inf"))
    rendered = render_record(record)
    fast = parse_rendered_record(rendered)
    slow = load_plain(rendered)
    assert fast == slow
    assert ExecutionRecord.from_dict(fast) == record


def test_hand_edited_record_still_parses() -> None:
    """Valid YAML in another layout (key order, flow style, comments) falls back to the YAML library."""
    text = ("# edited by hand\nstate: finished\nid: '0123456789ab'\ncampaign: demo\ncommit: " + "a" * 40 +
            "\ncommand: python t.py\nprofile: local\nparameters: {lr: 0.1, opt: adam}\nobjective: 1.5\n")
    record = parse_record(text)
    assert record.parameters == {"lr": 0.1, "opt": "adam"} and record.objective == 1.5


def test_packed_refs_parse() -> None:
    from expegit.gitstore import parse_packed_refs

    text = ("# pack-refs with: peeled fully-peeled sorted \n"
            f"{'a' * 40} refs/heads/executions/0123456789ab\n"
            f"{'b' * 40} refs/tags/v1\n^{'c' * 40}\n")
    assert parse_packed_refs(text) == {"refs/heads/executions/0123456789ab": "a" * 40, "refs/tags/v1": "b" * 40}
