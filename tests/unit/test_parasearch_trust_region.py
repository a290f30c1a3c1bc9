"""Trust regions for bayes in many dimensions: the replayed state, the box, and the asks confined to it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from parasearch import Space, Trial, make_sampler
from parasearch import trust_region as tr
from parasearch.bayes import BayesSampler

DIM = 12


def _floats(dim: int = DIM) -> dict:
    return {f"x{i}": {"type": "float", "low": -5.0, "high": 10.0} for i in range(dim)}


def _mixed() -> dict:
    params = {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(8)}
    params["n"] = {"type": "int", "low": 1, "high": 6}
    params["lr"] = {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    params["opt"] = {"choices": ["sgd", "adam", "rmsprop"]}
    params["batch"] = {"type": "int", "low": 16, "high": 512, "log": True}
    return params


def _sphere(p: dict) -> float:
    return float(sum((v - 1.0) ** 2 for k, v in p.items() if k.startswith("x")))


def _history(space: Space, n: int, seed: int = 0) -> list[Trial]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = space.from_unit(rng.random(space.dim))
        out.append(Trial(p, _sphere(p) + (0.1 * p["n"] if "n" in p else 0.0)))
    return out


# -- replay --------------------------------------------------------------------------------------------

def test_successes_double_and_failures_halve_the_side() -> None:
    tol = tr.failure_tolerance(DIM)
    improving = [10.0 - i for i in range(3 + tr.SUCCESS_TOLERANCE)]
    assert tr.replay(improving, 3, DIM).length == pytest.approx(2 * tr.INIT_LENGTH)
    stuck = [1.0] + [2.0] * (2 + tol)
    assert tr.replay(stuck, 3, DIM).length == pytest.approx(tr.INIT_LENGTH / 2)
    assert tr.replay(stuck[:-1], 3, DIM).length == pytest.approx(tr.INIT_LENGTH)  # one failure short
    # A crashed trial (None) is a failure; a tiny improvement under the margin is one too.
    assert tr.replay([1.0, 1.0, 1.0] + [None] * tol, 3, DIM).length == pytest.approx(tr.INIT_LENGTH / 2)
    assert tr.replay([1.0, 1.0, 1.0] + [1.0 - 1e-6] * tol, 3, DIM).length == pytest.approx(tr.INIT_LENGTH / 2)


def test_the_initial_design_only_sets_the_best_value() -> None:
    tol = tr.failure_tolerance(DIM)
    assert tr.replay([5.0] * (tol + 4), tol + 4, DIM) == tr.State(tr.INIT_LENGTH, 0, 0, 0)


def test_a_region_that_shrank_too_far_restarts() -> None:
    tol = tr.failure_tolerance(DIM)
    halvings = math.ceil(math.log2(tr.INIT_LENGTH / tr.MIN_LENGTH))
    state = tr.replay([0.0] + [1.0] * (tol * halvings), 1, DIM)
    assert state.restarts == 1 and state.length == tr.INIT_LENGTH
    assert tr.replay([0.0] + [1.0] * (tol * halvings - 1), 1, DIM).restarts == 0


def test_the_side_never_exceeds_its_maximum() -> None:
    state = tr.replay([100.0 - i for i in range(60)], 1, DIM)
    assert state.length == tr.MAX_LENGTH


# -- the region ----------------------------------------------------------------------------------------

def test_region_is_centred_on_the_best_trial_and_stays_in_the_cube() -> None:
    space = Space.from_parameters(_floats())
    history = _history(space, 30)
    best = min(history, key=lambda t: t.value)
    ls = np.geomspace(0.05, 5.0, DIM)
    box = tr.region(space, history, "minimize", 10, ls)
    np.testing.assert_allclose(box.centre, space.to_unit(best.params))
    assert np.all(box.low >= 0) and np.all(box.high <= 1) and np.all(box.low <= box.centre)
    assert np.all(box.centre <= box.high)
    # Longer lengthscale, wider side (where not clipped by the cube).
    width = box.high - box.low
    inside = (box.centre - 0.5 * width > 0) & (box.centre + 0.5 * width < 1)
    assert inside.sum() >= 2
    w = width[inside]
    assert np.all(np.diff(w) >= -1e-12)


def test_maximize_centres_on_the_largest_value() -> None:
    space = Space.from_parameters(_floats())
    history = _history(space, 20)
    top = max(history, key=lambda t: t.value)
    box = tr.region(space, history, "maximize", 10, np.ones(DIM))
    np.testing.assert_allclose(box.centre, space.to_unit(top.params))


def test_categorical_coordinates_are_never_boxed() -> None:
    space = Space.from_parameters(_mixed())
    box = tr.region(space, _history(space, 30), "minimize", 10, np.full(space.dim, 0.01))
    j = [p.name for p in space.searched].index("opt")
    assert box.low[j] == 0.0 and box.high[j] == 1.0 and not box.boxed[j]
    U = box.candidates(np.random.default_rng(0), 200, 200)
    assert box.contains(U).all()
    assert len({int(u * 3) for u in U[:, j]}) == 3  # every choice is reachable


def test_small_spaces_keep_the_global_acquisition() -> None:
    assert not tr.applies(Space.from_parameters(_floats(tr.MIN_DIM - 1)))
    assert tr.applies(Space.from_parameters(_floats(tr.MIN_DIM)))


# -- asks ----------------------------------------------------------------------------------------------

def _box_for(sampler: BayesSampler, history: list[Trial]) -> tr.Region:
    """The region the sampler's ask uses, rebuilt the way the ask does."""
    ok = [t for t in history if t.usable]
    from parasearch.bayes import transform_values
    X = sampler.encoder.encode([t.params for t in ok])
    y = transform_values(np.array([t.value for t in ok]))
    seen = {sampler.space.key(t.params) for t in history}
    gp = sampler._fit(X, y, sampler._rng(len(seen), 3))
    box = sampler._trust_region(history, gp)
    assert box is not None
    return box


def test_asks_are_reproducible_from_the_observations_alone() -> None:
    space = Space.from_parameters(_mixed())
    history = _history(space, 40)
    pending = [space.from_unit(u) for u in np.random.default_rng(9).random((3, space.dim))]
    a = make_sampler("bayes", space, seed=3, budget=100).ask(4, history, pending)
    # A resumed study: a new sampler, the same trials re-read from git (copies), in the same order.
    b = make_sampler("bayes", space, seed=3, budget=100).ask(4, [Trial(dict(t.params), t.value) for t in history],
                                                              [dict(p) for p in pending])
    assert a == b and len(a) == 4
    keys = {space.key(p) for p in a}
    assert len(keys) == 4 and not keys & {space.key(p) for p in pending}


def test_confined_asks_stay_in_the_region_and_respect_the_space(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tr, "CONFINE", True)
    space = Space.from_parameters(_mixed())
    # Shrink the region first: many non-improving trials after a good one.
    history = _history(space, 20)
    best = min(history, key=lambda t: t.value)
    rng = np.random.default_rng(5)
    for _ in range(3 * tr.failure_tolerance(space.dim)):
        u = np.clip(np.asarray(space.to_unit(best.params)) + 0.3 * rng.standard_normal(space.dim), 0, 1)
        p = space.from_unit(u)
        history.append(Trial(p, best.value + 1.0 + float(rng.random())))
    sampler = make_sampler("bayes", space, seed=1, budget=200)
    assert isinstance(sampler, BayesSampler)
    box = _box_for(sampler, history)
    assert box.state.length < tr.INIT_LENGTH
    points = sampler.ask(4, history, [])
    assert len(points) == 4
    idx = {p.name: i for i, p in enumerate(space.searched)}
    for point in points:
        assert isinstance(point["n"], int) and 1 <= point["n"] <= 6
        assert isinstance(point["batch"], int) and 16 <= point["batch"] <= 512
        assert point["opt"] in ("sgd", "adam", "rmsprop")
        assert 1e-4 <= point["lr"] <= 1e-1
        u = np.asarray(space.to_unit(point))
        for name in [f"x{i}" for i in range(8)] + ["lr"]:
            j = idx[name]
            assert box.low[j] - 1e-9 <= u[j] <= box.high[j] + 1e-9, name
        for name in ("n", "batch"):  # rounding to an integer may step at most one cell past the box
            j = idx[name]
            p = space.by_name[name]
            cells = p.high - p.low + 1 if not p.log else 1 / 0.05
            assert box.low[j] - 1.0 / cells - 1e-9 <= u[j] <= box.high[j] + 1.0 / cells + 1e-9, name


def test_the_region_adds_candidates_near_the_incumbent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unconfined (the default), the asks still see the box: without it they differ."""
    space = Space.from_parameters(_floats())
    history = _history(space, 40)
    with_box = make_sampler("bayes", space, seed=2, budget=100).ask(2, history, [])
    monkeypatch.setattr(tr, "MIN_DIM", 1000)
    without = make_sampler("bayes", space, seed=2, budget=100).ask(2, history, [])
    assert with_box != without
    for p in with_box:
        assert all(-5.0 <= p[f"x{i}"] <= 10.0 for i in range(DIM))


def test_a_20d_search_improves_on_its_initial_design() -> None:
    space = Space.from_parameters(_floats(20))
    sampler = make_sampler("bayes", space, seed=0, budget=60)
    history: list[Trial] = []
    while len(history) < 50:
        history += [Trial(p, _sphere(p)) for p in sampler.ask(4, history, [])]
    init = min(t.value for t in history[:10])
    assert min(t.value for t in history) < 0.5 * init
