"""Parameter spaces: parsing, types, log warps, conditionals, canonical keys and grids."""
from __future__ import annotations

import math

import numpy as np
import pytest

from orchestra.errors import SearchError
from parasearch.space import Space, canonical_value

MIXED = {
    "lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
    "layers": {"type": "int", "low": 1, "high": 8},
    "opt": {"choices": ["sgd", "adam"]},
    "seed": {"value": 0},
}

CONDITIONAL = {
    "opt": {"choices": ["sgd", "adam", "rmsprop"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}},
    "beta2": {"type": "float", "low": 0.9, "high": 0.9999, "steps": 3, "when": {"opt": ["adam", "rmsprop"]}},
    "nesterov": {"choices": [True, False], "when": {"opt": "sgd"}},
}


def test_from_unit_gives_python_types_within_ranges() -> None:
    space = Space.from_parameters(MIXED)
    rng = np.random.default_rng(0)
    for u in rng.random((200, space.dim)):
        point = space.from_unit(u)
        assert list(point) == ["lr", "layers", "opt", "seed"]
        assert type(point["lr"]) is float and 1e-5 <= point["lr"] <= 0.1
        assert type(point["layers"]) is int and 1 <= point["layers"] <= 8
        assert point["opt"] in ("sgd", "adam")
        assert point["seed"] == 0


def test_log_range_is_warped_and_int_cells_are_equal() -> None:
    space = Space.from_parameters(MIXED)
    assert space.from_unit([0.5, 0.0, 0.0])["lr"] == pytest.approx(10 ** -3, rel=1e-9)
    # Every integer of 1..8 owns 1/8 of the unit interval.
    hits = [space.from_unit([0.0, (i + 0.5) / 8, 0.0])["layers"] for i in range(8)]
    assert hits == list(range(1, 9))
    assert space.from_unit([0.0, 1.0, 1.0])["layers"] == 8 and space.from_unit([0, 1, 1])["opt"] == "adam"


def test_to_unit_inverts_from_unit() -> None:
    space = Space.from_parameters(MIXED)
    for u in np.random.default_rng(1).random((50, space.dim)):
        point = space.from_unit(u)
        assert space.key(space.from_unit(space.to_unit(point))) == space.key(point)


def test_choice_values_keep_their_own_type() -> None:
    space = Space.from_parameters({"flag": {"choices": [True, 1, "1", 2.5]}})
    values = [space.from_unit([(i + 0.5) / 4])["flag"] for i in range(4)]
    assert [type(v) for v in values] == [bool, int, str, float]
    assert len({space.key({"flag": v}) for v in values}) == 4  # True is not 1, 1 is not "1"


def test_canonical_key_survives_yaml_round_trips() -> None:
    space = Space.from_parameters(MIXED)
    a = {"lr": 0.1 + 0.2, "layers": 3, "opt": "adam", "seed": 0}
    b = {"lr": 0.3, "layers": 3.0, "opt": "adam", "seed": 0, "unrelated": "ignored"}
    assert space.key(a) == space.key(b)
    assert space.key(a) != space.key({**b, "lr": 0.3001})
    assert canonical_value(True) != canonical_value(1)


def test_conditionals_absent_when_inactive() -> None:
    space = Space.from_parameters(CONDITIONAL)
    rng = np.random.default_rng(2)
    seen_opts = set()
    for u in rng.random((300, space.dim)):
        point = space.from_unit(u)
        seen_opts.add(point["opt"])
        if point["opt"] == "sgd":
            assert set(point) == {"opt", "momentum", "nesterov"}
            assert type(point["nesterov"]) is bool
        else:
            assert set(point) == {"opt", "beta2"}
            assert 0.9 <= point["beta2"] <= 0.9999
    assert seen_opts == {"sgd", "adam", "rmsprop"}


def test_conditional_grid_multiplies_only_active_branches() -> None:
    space = Space.from_parameters({
        "opt": {"choices": ["sgd", "adam"]},
        "momentum": {"type": "float", "low": 0.0, "high": 0.9, "steps": 4, "when": {"opt": "sgd"}},
        "beta": {"type": "int", "low": 1, "high": 3, "when": {"opt": "adam"}},
    })
    grid = space.grid()
    assert len(grid) == 4 + 3
    assert len({space.key(p) for p in grid}) == len(grid)
    assert all(("momentum" in p) == (p["opt"] == "sgd") and ("beta" in p) == (p["opt"] == "adam") for p in grid)
    assert grid[0] == {"opt": "sgd", "momentum": 0.0}  # declaration order, last parameter fastest


def test_grid_values_and_size() -> None:
    space = Space.from_parameters({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "steps": 4},
        "n": {"type": "int", "low": 2, "high": 4},
        "k": {"type": "int", "low": 1, "high": 100, "log": True, "steps": 3},
        "c": {"value": "x"},
    })
    grid = space.grid()
    assert len(grid) == 4 * 3 * 3
    assert sorted({p["lr"] for p in grid}) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert sorted({p["k"] for p in grid}) == [1, 10, 100]
    assert all(type(p["n"]) is int and p["c"] == "x" for p in grid)


@pytest.mark.parametrize("params, algorithm, words", [
    ({"lr": {"type": "float", "low": 0.0, "high": 1.0}}, "grid", ["lr", "steps"]),
    ({"lr": {"type": "float", "low": 0.0, "high": 1.0}}, "annealing", ["annealing", "bayes"]),
    ({"a": {"type": "int", "low": 1, "high": 10 ** 4}, "b": {"type": "int", "low": 1, "high": 10 ** 4}},
     "grid", ["grid", "points"]),
])
def test_check_rejects_what_an_algorithm_cannot_search(params: dict, algorithm: str, words: list[str]) -> None:
    space = Space.from_parameters(params)
    with pytest.raises(SearchError) as err:
        space.check(algorithm)
    message = str(err.value)
    assert "\n" not in message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("params, words", [
    ({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, ["lr", "log"]),
    ({"c": {"choices": []}}, ["c", "empty"]),
    ({"x": {"type": "float", "low": 2.0, "high": 1.0}}, ["x", "low"]),
    ({"x": {"type": "float", "low": 0, "high": 1, "when": {"y": 1}}}, ["x", "unknown", "y"]),
    ({"a": {"choices": [1, 2], "when": {"b": 1}}, "b": {"choices": [1, 2], "when": {"a": 1}}}, ["cycle"]),
    ({"a": {"choices": [1, 2]}, "b": {"value": 0, "when": {"a": 3}}}, ["b", "3", "not a choice"]),
    ({"s": {"type": "str"}}, ["s", "string"]),
])
def test_bad_declarations_raise_search_error(params: dict, words: list[str]) -> None:
    with pytest.raises(SearchError) as err:
        Space.from_parameters(params)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_degenerate_range_and_string_default_are_constants() -> None:
    space = Space.from_parameters({"x": {"type": "int", "low": 3, "high": 3}, "s": {"type": "str", "default": "a"},
                                   "y": {"type": "float", "low": 0, "high": 1}})
    assert space.dim == 1
    point = space.from_unit([0.25])
    assert point["x"] == 3 and type(point["x"]) is int and point["s"] == "a" and math.isclose(point["y"], 0.25)


def test_log_bounds_come_back_exactly_as_declared() -> None:
    from parasearch.space import Param

    p = Param("lr", "float", low=1e-3, high=1000.0, log=True)
    assert p.from_unit(1.0) == 1000.0 and p.from_unit(0.0) == 0.001  # not 999.9999999999989
    assert p.from_unit(0.5) == 1.0


def test_a_best_value_on_a_bound_is_pointed_out() -> None:
    from parasearch.space import Param, Space
    from parasearch.study import bound_notes

    space = Space([Param("lr", "float", low=1e-4, high=0.1, log=True), Param("n", "int", low=1, high=8),
                   Param("opt", "choice", choices=("a", "b"))])
    notes = bound_notes(space, {"lr": 0.1, "n": 4, "opt": "a"})
    assert len(notes) == 1 and "upper bound 0.1" in notes[0] and "widen parameters.lr" in notes[0]
    assert bound_notes(space, {"lr": 0.003, "n": 1, "opt": "b"})[0].startswith("the best n (1) is at its lower")
    assert bound_notes(space, {"lr": 0.003, "n": 4, "opt": "b"}) == []
