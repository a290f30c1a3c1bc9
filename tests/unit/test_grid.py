"""One grid expansion: `expegit run --grid` (orchestra.parameters) and parasearch's grid search agree,
and neither confuses ``True`` with ``1`` (Python's ``True == 1``)."""
from __future__ import annotations

import pytest

from orchestra.manifest import parse_manifest
from orchestra.parameters import ParameterSpec, expand_grid, expand_points, parse_assignments
from parasearch.space import Space

HEAD = "name: g\ncommand: run {a} {b}\n"


def _both(parameters: str, search: str = "") -> tuple[list[dict], list[dict]]:
    manifest, errors = parse_manifest(HEAD + "parameters:\n" + parameters + search)
    assert not errors, errors
    assert manifest is not None
    return list(expand_points(manifest.parameters, {}, grid=True)), Space.from_parameters(manifest.declarations()).grid()


def test_true_is_not_1_in_a_when_condition() -> None:
    core, space = _both("  a: {choices: [1, true]}\n  b: {choices: [x, y], when: {a: 1}}\n")
    expected = [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": True}]
    assert core == expected  # before: b was active for a = true too (True in (1,)), five points
    assert space == expected
    assert [type(p["a"]) for p in core] == [int, int, bool]


def test_a_child_of_an_inactive_parent_is_inactive() -> None:
    core, space = _both("  a: {choices: [x, y]}\n  b: {choices: [1, 2], when: {a: x}}\n"
                        "  c: {choices: [p, q], when: {b: 1}}\n")
    assert core == space == [{"a": "x", "b": 1, "c": "p"}, {"a": "x", "b": 1, "c": "q"}, {"a": "x", "b": 2},
                             {"a": "y"}]


def test_order_is_declaration_order_with_a_child_declared_before_its_parent() -> None:
    core, space = _both("  b: {choices: [1, 2], when: {a: y}}\n  a: {choices: [y, x]}\n")
    assert core == space == [{"a": "x"}, {"b": 1, "a": "y"}, {"b": 2, "a": "y"}]


def test_ranges_expand_the_same_in_both() -> None:
    core, space = _both("  a: {type: float, low: 0.001, high: 0.1, log: true, steps: 3}\n"
                        "  b: {type: int, low: 1, high: 10, steps: 4}\n")
    assert core == space and len(core) == 12
    assert {p["a"] for p in core} == {0.001, 0.01, 0.1}


def test_command_line_values_true_and_1_are_two_values() -> None:
    specs = {"a": ParameterSpec("a", "choice", choices=(1, True)), "b": ParameterSpec("b", "fixed", value=0)}
    given = parse_assignments(["a=1", "a=1.0"], {**specs, "a": ParameterSpec("a", "float", low=0, high=2)})
    assert given == {"a": [1.0]}  # 1 and 1.0 are one value
    given = parse_assignments(["a=1", "a=true"], specs)
    assert given["a"] == [1, True] and [type(v) for v in given["a"]] == [int, bool]
    assert list(expand_points(specs, given, grid=False)) == [{"a": 1, "b": 0}, {"a": True, "b": 0}]


def test_manifest_choices_compare_canonically() -> None:
    _m, errors = parse_manifest(HEAD.replace(" {b}", "") + "parameters:\n  a: {choices: [1, 1.0]}\n")
    assert errors and "appears twice" in str(errors[0])  # parasearch refused these; now the manifest does
    manifest, errors = parse_manifest(HEAD.replace(" {b}", "") + "parameters:\n  a: {choices: [1, true]}\n")
    assert not errors and manifest is not None


def test_a_when_cycle_is_a_manifest_error_for_a_search() -> None:
    _m, errors = parse_manifest(HEAD + "parameters:\n  a: {choices: [1, 2], when: {b: 1}}\n"
                                "  b: {choices: [1, 2], when: {a: 1}}\nsearch: {algorithm: grid, budget: 4}\n")
    assert errors and "form a cycle" in str(errors[0]) and errors[0].line is not None


def test_expand_grid_is_lazy_and_rejects_unknown_parents() -> None:
    points = expand_grid([("a", range(10**4)), ("b", range(10**4))], {})  # 10**8 points
    assert next(points) == {"a": 0, "b": 0}  # nothing enumerated up front
    with pytest.raises(ValueError, match="unknown parameter 'z'"):
        list(expand_grid([("a", [1])], {"a": {"z": (1,)}}))
