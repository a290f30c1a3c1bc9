"""log-EHVI's pieces against brute force: the boxes against exact hypervolume, the expectation against
Monte Carlo, and the sampler's determinism and pending-point handling."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from parasearch.bayes import transform_values
from parasearch.ehvi import EHVISampler, cells, log_ehvi, multi_objective_sampler
from parasearch.gp import GAMMA_PRIOR, GaussianProcess, dimension_scaled, neg_log_posterior
from parasearch.parego import ParEGOSampler
from orchestra.pareto import hypervolume, pareto_front
from parasearch.space import Space
from parasearch.study import VectorTrial


def _overlap(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.prod(np.clip(upper - np.maximum(lower, y), 0.0, None), axis=1).sum())


@pytest.mark.parametrize("m", [2, 3])
def test_boxes_give_the_exact_hypervolume_improvement(m: int) -> None:
    rng = np.random.default_rng(m)
    Y = rng.random((25, m))
    front = Y[pareto_front(Y)]
    ref = np.full(m, 1.2)
    lower, upper = cells(front, ref)
    # The boxes are the undominated part of the reference box: a point at the origin gains all of it.
    assert _overlap(np.zeros(m), lower, upper) == pytest.approx(1.2 ** m - hypervolume(front, ref))
    for y in rng.random((30, m)) * 1.3 - 0.1:
        gain = hypervolume(np.vstack([front, y]), ref) - hypervolume(front, ref)
        assert _overlap(y, lower, upper) == pytest.approx(gain, abs=1e-12)


@pytest.mark.parametrize("m", [2, 3])
def test_log_ehvi_matches_monte_carlo(m: int) -> None:
    rng = np.random.default_rng(10 + m)
    Y = rng.random((12, m))
    front = Y[pareto_front(Y)]
    lower, upper = cells(front, np.full(m, 1.1))
    mean, sigma = np.full((1, m), 0.4), np.full((1, m), 0.2)
    draws = mean + sigma * rng.standard_normal((100_000, m))
    mc = np.mean([_overlap(y, lower, upper) for y in draws[:20_000]])
    assert math.exp(log_ehvi(mean, sigma, lower, upper)[0]) == pytest.approx(mc, rel=0.05)


def test_log_ehvi_is_finite_far_from_the_front() -> None:
    lower, upper = cells(np.array([[0.0, 0.0]]), np.array([1.0, 1.0]))
    value = log_ehvi(np.array([[40.0, 40.0]]), np.array([[0.1, 0.1]]), lower, upper)
    assert np.isfinite(value).all() and value[0] < -1000  # EHVI itself would be 0.0: no slope at all


def _history(space: Space, sampler: EHVISampler, n: int) -> list[VectorTrial]:
    history: list[VectorTrial] = []
    while len(history) < n:
        point = sampler.ask(1, history, [])[0]
        x = float(point["x"]), float(point["y"])
        history.append(VectorTrial(point, x[0], values=(x[0], (1 - x[0]) ** 2 + x[1])))
    return history


def test_ehvi_is_reproducible_and_spreads_a_batch_with_pending_points() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0.0, "high": 1.0},
                                   "y": {"type": "float", "low": 0.0, "high": 1.0}})
    a = EHVISampler(space, seed=3, budget=30, goals=["minimize", "minimize"])
    history = _history(space, a, 12)
    b = EHVISampler(space, seed=3, budget=30, goals=["minimize", "minimize"])
    assert b.ask(4, history, []) == a.ask(4, history, [])
    batch = a.ask(4, history, [])
    assert len({(p["x"], p["y"]) for p in batch}) == 4
    # With the first three in flight, the fourth is chosen knowing them: not one of them again.
    later = a.ask(1, history, batch[:3])
    assert later and later[0] not in batch[:3]


def test_automatic_choice_by_number_of_objectives() -> None:
    space = Space.from_parameters({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    assert isinstance(multi_objective_sampler(space, seed=0, budget=10, goals=["minimize"] * 2), EHVISampler)
    assert isinstance(multi_objective_sampler(space, seed=0, budget=10, goals=["minimize"] * 3), ParEGOSampler)


def test_the_dimension_scaled_prior_has_the_right_gradient_and_leaves_the_default_alone() -> None:
    rng = np.random.default_rng(4)
    X = rng.random((20, 4))
    y = np.sin(4 * X[:, 0])
    y = (y - y.mean()) / y.std()
    sq = ((X.T[:, :, None] - X.T[:, None, :]) ** 2).reshape(4, -1)
    theta = np.log([0.3, 2.0, 5.0, 9.0, 0.8, 1e-3])
    prior = dimension_scaled(4)
    analytic = neg_log_posterior(theta, X, y, sq, prior)[1]
    numeric = optimize.approx_fprime(theta, lambda t: neg_log_posterior(t, X, y, sq, prior)[0], 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-4)
    # The default is the Gamma(3, 6) every single-objective model had: same value as spelled out.
    ls = np.exp(theta[:4])
    gamma = float(np.sum(3.0 * theta[:4] - 6.0 * ls)) - 0.5 * theta[4] ** 2 / 1.5 ** 2
    lognormal = float(np.sum(-0.5 * ((theta[:4] - prior.a) / prior.b) ** 2)) - 0.5 * theta[4] ** 2 / 1.5 ** 2
    base = neg_log_posterior(theta, X, y, sq, GAMMA_PRIOR)[0]
    assert neg_log_posterior(theta, X, y, sq)[0] == base
    assert base - neg_log_posterior(theta, X, y, sq, prior)[0] == pytest.approx(lognormal - gamma)


def _corner_history() -> tuple[Space, list[VectorTrial]]:
    """f1 = x0 only; f2 needs the other inputs. Half the trials sit at the f1 minimum (x0 = 0) with all sorts
    of other inputs, as a search does after it finds one end of a front."""
    names = [f"x{i}" for i in range(5)]
    space = Space.from_parameters({n: {"type": "float", "low": 0.0, "high": 1.0} for n in names})
    rng = np.random.default_rng(7)
    history: list[VectorTrial] = []
    for i in range(30):
        u = rng.random(5)
        if i % 2:
            u[0] = 0.0
        point = dict(zip(names, u.tolist()))
        history.append(VectorTrial(point, float(u[0]), values=(float(u[0]), float(1.0 + 3.0 * u[1:].mean() - u[0]))))
    return space, history


def test_an_objective_of_one_input_is_certain_along_the_others() -> None:
    """Why the multi-objective models take the dimension-scaled prior: under the single-objective Gamma(3, 6)
    the f1 model stays unsure along the four inputs f1 ignores, and log-EHVI pays that doubt at the full
    height of the column beyond the front's f1 end, so it kept proposing more x0 = 0 points."""
    space, history = _corner_history()
    sampler = EHVISampler(space, seed=0, budget=60, goals=["minimize", "minimize"])
    X = sampler.encoder.encode([t.params for t in history])
    y = transform_values(np.array([t.value for t in history], dtype=float))  # each trial's value is its f1
    unseen = sampler.encoder.encode([{"x0": 0.0, "x1": 0.95, "x2": 0.05, "x3": 0.9, "x4": 0.1}])
    ours = sampler._fit(X, y, np.random.default_rng(0))
    single = GaussianProcess.fit(X, y, rng=np.random.default_rng(0))
    sd_ours, sd_single = (math.sqrt(g.predict(unseen)[1][0]) for g in (ours, single))
    assert sd_ours < 0.5 * sd_single
    assert min(ours.hyper.lengthscales[1:]) > 3 * ours.hyper.lengthscales[0]


def test_ehvi_leaves_an_end_of_the_front_it_has_already_reached() -> None:
    space, history = _corner_history()
    corner: dict[str, float | int | str | bool] = {f"x{i}": 0.0 for i in range(5)}
    history.append(VectorTrial(corner, 0.0, values=(0.0, 1.0)))  # the f1 end of the front, found
    sampler = EHVISampler(space, seed=0, budget=60, goals=["minimize", "minimize"])
    batch = sampler.ask(2, history, [])
    # Another x0 = 0 point can lower neither f1 nor (dominated by the corner) f2: the points must go
    # where the front can still grow.
    assert all(float(p["x0"]) > 0.02 for p in batch), batch
