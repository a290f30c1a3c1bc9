"""Samplers other than bayes: the stateless ask contract (resumes, pending, determinism) and designs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import qmc

from orchestra.errors import SearchError
from parasearch import ALGORITHMS, Space, Trial, make_sampler

CONTINUOUS = {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(3)}
MIXED = {
    "lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": True, "steps": 3},
    "layers": {"type": "int", "low": 1, "high": 4},
    "opt": {"choices": ["sgd", "adam"]},
    "seed": {"value": 0},
}
CONDITIONAL = {
    "opt": {"choices": ["sgd", "adam"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.9, "steps": 3, "when": {"opt": "sgd"}},
    "beta": {"type": "int", "low": 1, "high": 3, "when": {"opt": ["adam"]}},
}


def _simulate(algorithm: str, params: dict, *, total: int, chunks: list[int], seed: int = 0,
              budget: int | None = None) -> list[dict]:
    """Ask in chunks, keeping the previous chunk in flight (pending) and finishing the one before it.

    This is what a resumed, parallel campaign does: every ask sees history + pending, nothing else.
    """
    space = Space.from_parameters(params)
    sampler = make_sampler(algorithm, space, seed=seed, budget=budget or total)
    history: list[Trial] = []
    pending: list[dict] = []
    proposed: list[dict] = []
    i = 0
    while len(proposed) < total:
        n = chunks[i % len(chunks)]
        i += 1
        new = sampler.ask(n, history, pending)
        if not new and not pending:
            break
        proposed += new
        # The oldest half of the pending points finish (one of them fails); the rest stay in flight.
        pending = pending + new
        done, pending = pending[: max(1, len(pending) // 2)], pending[max(1, len(pending) // 2):]
        history += [Trial(p, value=None if j == 0 else float(j), failed=j == 0) for j, p in enumerate(done)]
        # A fresh sampler each time: nothing may survive between asks except what git would store.
        sampler = make_sampler(algorithm, space, seed=seed, budget=budget or total)
    return proposed


def test_grid_covers_every_point_exactly_once_across_resumes() -> None:
    space = Space.from_parameters(MIXED)
    full = space.grid()
    assert len(full) == 3 * 4 * 2
    proposed = _simulate("grid", MIXED, total=100, chunks=[5, 1, 7, 3])
    keys = [space.key(p) for p in proposed]
    assert len(keys) == len(set(keys)) == len(full)
    assert set(keys) == {space.key(p) for p in full}
    assert make_sampler("grid", space, seed=0, budget=10).ask(3, [Trial(p, 1.0) for p in full], []) == []


def test_grid_recognizes_history_after_a_yaml_round_trip() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0.0, "high": 1.0, "steps": 4}})
    grid = space.grid()
    assert grid[1]["x"] == pytest.approx(1 / 3)
    stored = [Trial({"x": float(f"{grid[1]['x']:.12g}")}, 1.0), Trial({"x": 0}, 2.0)]  # 0 came back as an int
    left = make_sampler("grid", space, seed=0, budget=4).ask(10, stored, [])
    assert [p["x"] for p in left] == pytest.approx([2 / 3, 1.0])


@pytest.mark.parametrize("algorithm", ["random", "sobol", "halton", "lhs"])
def test_continuous_samplers_never_repeat_across_resumes(algorithm: str) -> None:
    space = Space.from_parameters(CONTINUOUS)
    proposed = _simulate(algorithm, CONTINUOUS, total=40, chunks=[4, 1, 3])
    assert len(proposed) >= 40
    assert len({space.key(p) for p in proposed}) == len(proposed)


@pytest.mark.parametrize("algorithm", ["sobol", "halton", "lhs"])
def test_qmc_resumes_continue_the_same_design(algorithm: str) -> None:
    """Chunked asks with pending points hand out exactly the design a single ask of the budget gives."""
    space = Space.from_parameters(CONTINUOUS)
    one_go = make_sampler(algorithm, space, seed=3, budget=24).ask(24, [], [])
    chunked = _simulate(algorithm, CONTINUOUS, total=24, chunks=[5, 2, 4], seed=3, budget=24)[:24]
    assert [space.key(p) for p in chunked] == [space.key(p) for p in one_go]


@pytest.mark.parametrize("algorithm", ["random", "sobol", "halton", "lhs", "grid"])
def test_small_discrete_space_is_exhausted_without_duplicates(algorithm: str) -> None:
    params = {"a": {"type": "int", "low": 0, "high": 2}, "b": {"choices": ["x", "y"]}}
    space = Space.from_parameters(params)
    sampler = make_sampler(algorithm, space, seed=1, budget=6)
    history: list[Trial] = []
    for _ in range(10):
        history += [Trial(p, 0.0) for p in sampler.ask(2, history, [])]
    keys = [space.key(t.params) for t in history]
    assert len(keys) == len(set(keys))
    if algorithm in ("random", "grid"):
        assert len(keys) == 6  # these search the whole space; designs may cover fewer distinct cells


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_ask_is_deterministic_and_avoids_pending(algorithm: str) -> None:
    space = Space.from_parameters(MIXED)
    history = [Trial(p, float(i)) for i, p in enumerate(space.grid()[::5])]
    pending = space.grid()[1:4]
    a = make_sampler(algorithm, space, seed=7, budget=30).ask(4, history, pending)
    b = make_sampler(algorithm, space, seed=7, budget=30).ask(4, history, pending)
    assert a == b and len(a) == 4
    taken = {space.key(p) for p in pending} | {space.key(t.params) for t in history}
    assert not taken & {space.key(p) for p in a}
    assert len({space.key(p) for p in a}) == 4


@pytest.mark.parametrize("algorithm", ["random", "sobol", "halton", "lhs"])
def test_seed_changes_the_points(algorithm: str) -> None:
    space = Space.from_parameters(CONTINUOUS)
    a = make_sampler(algorithm, space, seed=1, budget=8).ask(8, [], [])
    b = make_sampler(algorithm, space, seed=2, budget=8).ask(8, [], [])
    assert a != b


def test_random_is_log_uniform_on_log_ranges_and_hits_int_bounds() -> None:
    space = Space.from_parameters({"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
                                   "n": {"type": "int", "low": 1, "high": 4}, "opt": {"choices": ["a", "b", "c"]}})
    points = make_sampler("random", space, seed=0, budget=2000).ask(2000, [], [])
    lrs = np.array([p["lr"] for p in points])
    assert all(type(p["lr"]) is float and type(p["n"]) is int for p in points)
    assert 1e-5 <= lrs.min() and lrs.max() <= 1e-1
    # Log-uniform: half the mass below the geometric midpoint 1e-3 (linear would put ~1 % there).
    assert 0.45 < np.mean(lrs < 1e-3) < 0.55
    counts = np.bincount([p["n"] for p in points], minlength=5)[1:]
    assert counts.min() > 400  # 1 and 4 as likely as 2 and 3
    assert {p["opt"] for p in points} == {"a", "b", "c"}


def test_sobol_and_halton_fill_the_cube_better_than_random() -> None:
    space = Space.from_parameters(CONTINUOUS)

    def disc(algorithm: str, seed: int) -> float:
        points = make_sampler(algorithm, space, seed=seed, budget=64).ask(64, [], [])
        return float(qmc.discrepancy(np.array([space.to_unit(p) for p in points])))

    random_disc = np.median([disc("random", s) for s in range(5)])
    for algorithm in ("sobol", "halton", "lhs"):
        assert np.median([disc(algorithm, s) for s in range(5)]) < random_disc, algorithm


def test_lhs_hits_every_one_dimensional_stratum_once() -> None:
    space = Space.from_parameters({**CONTINUOUS, "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}})
    n = 20
    points = make_sampler("lhs", space, seed=5, budget=n).ask(n, [], [])
    unit = np.array([space.to_unit(p) for p in points])
    for j in range(unit.shape[1]):
        strata = np.minimum((unit[:, j] * n).astype(int), n - 1)
        assert sorted(strata) == list(range(n)), j


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conditionals_are_absent_when_inactive(algorithm: str) -> None:
    proposed = _simulate(algorithm, CONDITIONAL, total=7 if algorithm == "grid" else 20, chunks=[3], seed=2)
    assert proposed
    for p in proposed:
        if p["opt"] == "sgd":
            assert set(p) == {"opt", "momentum"} and type(p["momentum"]) is float
        else:
            assert set(p) == {"opt", "beta"} and type(p["beta"]) is int and 1 <= p["beta"] <= 3
    assert {p["opt"] for p in proposed} == {"sgd", "adam"}


def test_fixed_values_are_included_and_never_searched() -> None:
    space = Space.from_parameters({"seed": {"value": 42}, "x": {"type": "float", "low": 0, "high": 1}})
    for algorithm in ALGORITHMS[1:]:
        points = make_sampler(algorithm, space, seed=0, budget=5).ask(3, [], [])
        assert all(p["seed"] == 42 for p in points), algorithm
    only_fixed = Space.from_parameters({"seed": {"value": 42}})
    sampler = make_sampler("random", only_fixed, seed=0, budget=5)
    assert sampler.ask(3, [], []) == [{"seed": 42}]
    assert sampler.ask(3, [Trial({"seed": 42}, 1.0)], []) == []


def test_make_sampler_rejects_bad_arguments() -> None:
    space = Space.from_parameters(CONTINUOUS)
    with pytest.raises(SearchError, match="goal"):
        make_sampler("random", space, seed=0, budget=5, goal="minimise")
    with pytest.raises(SearchError, match="x0.*steps"):
        make_sampler("grid", space, seed=0, budget=5)
    with pytest.raises(SearchError, match="budget"):
        make_sampler("sobol", space, seed=0, budget=0)
