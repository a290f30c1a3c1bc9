"""Bayesian optimization: the GP, log-EI, and the sampler's behaviour on real problems."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, special

from parasearch import Space, Trial, make_sampler
from parasearch.bayes import Encoder, log_ei, log_h, transform_values
from parasearch.gp import GaussianProcess, neg_log_posterior

BRANIN = {"x1": {"type": "float", "low": -5.0, "high": 10.0}, "x2": {"type": "float", "low": 0.0, "high": 15.0}}
BRANIN_MIN = 0.397887357729739


def branin(p: dict) -> float:
    x1, x2 = p["x1"], p["x2"]
    return ((x2 - 5.1 / (4 * math.pi ** 2) * x1 ** 2 + 5 / math.pi * x1 - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


def _run(algorithm: str, params: dict, f, budget: int, seed: int, batch: int = 1, goal: str = "minimize") -> list[Trial]:
    space = Space.from_parameters(params)
    sampler = make_sampler(algorithm, space, seed=seed, budget=budget, goal=goal)
    history: list[Trial] = []
    while len(history) < budget:
        points = sampler.ask(min(batch, budget - len(history)), history, [])
        assert points
        history += [Trial(p, f(p)) for p in points]
    return history


def test_log_marginal_likelihood_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((25, 3))
    y = np.sin(5 * X[:, 0]) + X[:, 1] ** 2
    y = (y - y.mean()) / y.std()
    sq = ((X.T[:, :, None] - X.T[:, None, :]) ** 2).reshape(3, -1)
    theta = np.log([0.3, 0.6, 1.5, 0.8, 1e-2])
    analytic = neg_log_posterior(theta, X, y, sq)[1]
    numeric = optimize.approx_fprime(theta, lambda t: neg_log_posterior(t, X, y, sq)[0], 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-4)


def test_gp_interpolates_and_is_uncertain_far_away() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((30, 2))
    y = np.sin(6 * X[:, 0]) * np.cos(4 * X[:, 1])
    gp = GaussianProcess.fit(X, (y - y.mean()) / y.std(), rng=rng)
    mean, var = gp.predict(X)
    np.testing.assert_allclose(mean, (y - y.mean()) / y.std(), atol=0.05)
    far = gp.predict(np.array([[3.0, 3.0]]))[1]
    assert far[0] > 10 * var.max()


def test_log_ei_is_stable_and_its_gradient_is_right() -> None:
    z = np.array([-40.0, -8.0, -1.5, -0.5, 0.0, 2.0, 8.0])
    moderate = z[2:]
    direct = np.log(moderate * special.ndtr(moderate) + np.exp(-moderate ** 2 / 2) / math.sqrt(2 * math.pi))
    values, derivs = log_h(z)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(derivs))
    np.testing.assert_allclose(values[2:], direct, rtol=1e-8)
    assert values[0] < values[1] < values[2]  # plain EI underflows to -inf at z = -40; log-EI stays ordered
    rng = np.random.default_rng(2)
    X = rng.random((15, 2))
    gp = GaussianProcess.fit(X, rng.standard_normal(15), rng=rng)
    E = rng.random((3, 2))
    _, grad = log_ei(gp, E, -0.5, grad=True)
    for j in range(2):
        step = np.zeros_like(E)
        step[:, j] = 1e-6
        numeric = (log_ei(gp, E + step, -0.5)[0] - log_ei(gp, E - step, -0.5)[0]) / 2e-6
        np.testing.assert_allclose(grad[:, j], numeric, rtol=1e-4, atol=1e-6)


def test_value_transform_is_monotone_and_tames_outliers() -> None:
    y = np.array([0.1, 0.2, 0.3, 0.5, 1.0, 3.0, 1e4])
    z = transform_values(y)
    assert np.all(np.diff(z) > 0)
    assert abs(z.mean()) < 1e-9 and z.max() - np.sort(z)[-2] < 3.0  # the outlier no longer dwarfs the rest
    assert np.all(transform_values(np.full(4, 2.0)) == 0)


def test_encoder_one_hot_and_inactive_imputation() -> None:
    space = Space.from_parameters({"opt": {"choices": ["sgd", "adam"]},
                                   "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "sgd"}},
                                   "n": {"type": "int", "low": 1, "high": 4}})
    enc = Encoder(space)
    E = enc.encode([{"opt": "sgd", "m": 0.25, "n": 4}, {"opt": "adam", "n": 1}])
    np.testing.assert_allclose(E, [[1, 0, 0.25, 0.875], [0, 1, -0.5, 0.125]])
    assert [space.from_unit(u) for u in enc.unit_of(E)] == [{"opt": "sgd", "m": 0.25, "n": 4}, {"opt": "adam", "n": 1}]


def test_bayes_beats_random_on_branin_at_40_evaluations() -> None:
    bayes = [min(t.value for t in _run("bayes", BRANIN, branin, 40, s)) - BRANIN_MIN for s in range(3)]
    rand = [min(t.value for t in _run("random", BRANIN, branin, 40, s)) - BRANIN_MIN for s in range(3)]
    assert np.median(bayes) < 0.1 * np.median(rand), (bayes, rand)
    assert np.median(bayes) < 0.01


def test_bayes_maximizes_when_asked() -> None:
    params = {"x": {"type": "float", "low": -2.0, "high": 2.0}}
    history = _run("bayes", params, lambda p: -(p["x"] - 0.7) ** 2, 14, seed=0, goal="maximize")
    best = max(history, key=lambda t: t.value)
    assert abs(best.params["x"] - 0.7) < 0.02


def test_batch_points_are_distinct_and_avoid_pending() -> None:
    space = Space.from_parameters(BRANIN)
    history = _run("bayes", BRANIN, branin, 12, seed=4)
    pending = make_sampler("bayes", space, seed=4, budget=40).ask(3, history, [])
    batch = make_sampler("bayes", space, seed=4, budget=40).ask(4, history, pending)
    keys = [space.key(p) for p in pending + batch]
    assert len(set(keys)) == 7
    # Kriging believer spreads the batch: no two points nearly on top of each other.
    unit = np.array([space.to_unit(p) for p in pending + batch])
    dists = np.linalg.norm(unit[:, None] - unit[None], axis=-1) + np.eye(7)
    assert dists.min() > 1e-3


def test_failed_trials_are_not_reproposed_and_steer_away() -> None:
    """A small discrete space: failures count as tried, and every proposal is new until exhaustion."""
    params = {"n": {"type": "int", "low": 0, "high": 5}, "c": {"choices": ["a", "b"]}}
    space = Space.from_parameters(params)
    sampler = make_sampler("bayes", space, seed=0, budget=12)
    history: list[Trial] = []
    for _ in range(12):
        (p,) = sampler.ask(1, history, [])
        fails = p["c"] == "b" and p["n"] >= 3
        history.append(Trial(p, None if fails else float((p["n"] - 4) ** 2), failed=fails))
    keys = [space.key(t.params) for t in history]
    assert len(set(keys)) == 12
    assert sampler.ask(2, history, []) == []


def test_noisy_repeats_and_all_failed_histories_are_handled() -> None:
    space = Space.from_parameters(BRANIN)
    sampler = make_sampler("bayes", space, seed=1, budget=30)
    base = make_sampler("sobol", space, seed=1, budget=30).ask(8, [], [])
    rng = np.random.default_rng(0)
    noisy = [Trial(p, branin(p) + rng.normal()) for p in base for _ in range(3)]
    points = sampler.ask(2, noisy, [])
    assert len(points) == 2 and not {space.key(p) for p in points} & {space.key(p) for p in base}
    failed = [Trial(p, None, failed=True) for p in base]
    points = sampler.ask(3, failed, [])
    assert len(points) == 3 and not {space.key(p) for p in points} & {space.key(p) for p in base}


@pytest.mark.parametrize("batch", [1, 3])
def test_bayes_handles_mixed_conditional_spaces(batch: int) -> None:
    params = {"opt": {"choices": ["sgd", "adam"]},
              "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
              "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}},
              "layers": {"type": "int", "low": 1, "high": 6}}

    def f(p: dict) -> float:
        return (math.log10(p["lr"]) + 2) ** 2 + 0.1 * (p["layers"] - 3) ** 2 + (
            (p["momentum"] - 0.9) ** 2 if p["opt"] == "sgd" else 0.3)

    history = _run("bayes", params, f, 24, seed=0, batch=batch)
    for t in history:
        assert ("momentum" in t.params) == (t.params["opt"] == "sgd")
        assert type(t.params["layers"]) is int and type(t.params["lr"]) is float
    assert min(t.value for t in history) < min(t.value for t in history[:10])  # the model improved on the design


def test_model_subset_keeps_the_best_and_fills_the_space() -> None:
    """Why a subset: an exact GP on 2,000 trials costs seconds per ask; the subset must keep the best ones
    (where the optimum is) and spread the rest (so no region looks unexplored)."""
    import numpy as np

    from parasearch.bayes import model_subset

    rng = np.random.default_rng(0)
    X = rng.random((2000, 3))
    y = ((X - 0.3) ** 2).sum(1)
    keep = model_subset(X, y, 300)
    assert len(keep) == 300 == len(set(keep.tolist())) and list(keep) == sorted(keep)
    assert set(np.argsort(y)[:100].tolist()) <= set(keep.tolist())
    assert np.array_equal(keep, model_subset(X, y, 300))  # a function of (X, y): asks stay reproducible
    # Space-filling: every trial left out has a kept one nearby (no hole bigger than a random subset leaves).
    left = np.setdiff1d(np.arange(2000), keep)
    gap = max(float(np.min(((X[keep] - X[i]) ** 2).sum(1))) for i in left) ** 0.5
    random_keep = rng.choice(2000, 300, replace=False)
    random_gap = max(float(np.min(((X[random_keep] - X[i]) ** 2).sum(1)))
                     for i in np.setdiff1d(np.arange(2000), random_keep)) ** 0.5
    assert gap < random_gap
    assert np.array_equal(model_subset(X[:50], y[:50], 300), np.arange(50))


def test_bayes_asks_from_thousands_of_observations() -> None:
    import numpy as np

    from parasearch import Space, Trial, make_sampler

    space = Space.from_parameters({"x": {"type": "float", "low": 0.0, "high": 1.0},
                                   "y": {"type": "float", "low": 0.0, "high": 1.0}})
    rng = np.random.default_rng(1)
    points = [space.from_unit(u) for u in rng.random((1500, 2))]
    history = [Trial(p, (p["x"] - 0.2) ** 2 + (p["y"] - 0.7) ** 2) for p in points]
    history += [Trial(space.from_unit(u), None, failed=True) for u in rng.random((100, 2))]
    sampler = make_sampler("bayes", space, seed=3, budget=2000, goal="minimize")
    asked = sampler.ask(2, history, [])
    assert len(asked) == 2 and all(space.key(p) not in space.keys(t.params for t in history) for p in asked)
    best = min(float(t.value) for t in history if t.value is not None)
    assert min((p["x"] - 0.2) ** 2 + (p["y"] - 0.7) ** 2 for p in asked) < 50 * best + 1e-3
