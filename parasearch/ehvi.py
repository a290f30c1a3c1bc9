"""`bayes` on two or three objectives: log expected hypervolume improvement (log-EHVI) on our own GPs.

How one ask works, and why:

1. **Initial design.** The first points come from the Sobol design of the single-objective GP sampler
   (:class:`parasearch.bayes.BayesSampler`), so both multi-objective methods start alike.
2. **Models.** One Matérn 5/2 GP (:mod:`parasearch.gp`) per objective, each on its values oriented for
   minimisation and warped by :func:`parasearch.bayes.transform_values` (standardise, Yeo-Johnson): the
   warp is monotone per objective, so it keeps who dominates whom, and a diverged run's huge value does
   not flatten a model. Objectives are modelled independently, as Optuna's GPSampler and BoTorch's
   default do. Their lengthscales take the dimension-scaled log-normal prior
   (:func:`parasearch.gp.dimension_scaled`, BoTorch's default), not the single-objective sampler's
   Gamma(3, 6), because EHVI pays a model's doubt along inputs an objective ignores at full weight: the
   region beyond the front's end in one objective (say f1 < its best) spans the whole range of the
   other, so an f1 model unsure whether the inputs f1 ignores could lower it keeps proposing points at
   that end long after it is reached. Measured on ZDT (bench/multiobjective.py): under Gamma(3, 6) the
   first 50 points of ZDT2 piled up at f1 = 0; under this prior the search spreads along the front.
3. **Improvement region.** The front (the model's means at the non-dominated trials) and a reference point
   (the rule of :func:`orchestra.pareto.reference_point`, in the warped space) bound the region a new
   point can add hypervolume to. :func:`cells` cuts it exactly into boxes: a grid over every objective but
   the last, where each grid cell's box runs in the last objective up to the lowest value of the points
   that dominate the cell's corner. For two objectives that is the usual staircase; for three, (k+1)²
   boxes for k front points, a few thousand at a study's sizes.
4. **Acquisition.** With independent Gaussian objectives the EHVI of a point is a sum over boxes of a
   product over objectives of one-dimensional expectations, each ``σ (h(z_u) - h(z_l))`` with
   ``h(z) = z Φ(z) + φ(z)`` (:func:`log_ehvi`). It is computed in log space (log-EHVI, Ament et al. 2023,
   as BoTorch and Optuna do): plain EHVI is exactly 0 away from the front, which leaves the optimiser no
   slope to climb. It is scored on random points plus perturbations of the front's points (clipped to the
   box, so bounds where fronts often lie are reached), and the best few are polished with L-BFGS-B.
5. **Pending points** (4 in flight, or earlier points of one ask) are fantasised at each model's mean:
   the GPs are conditioned on them and their mean vectors join the front, so the next point goes where
   hypervolume is still to gain. Failed trials are fantasised at each objective's worst value.

Everything is a function of (seed, history, pending), so a resumed or cloned study proposes what the first
run proposed. ``bayes`` uses this sampler for two objectives; :func:`multi_objective_sampler` hands three or
more to ParEGO (:mod:`parasearch.parego`): measured better on three-objective DTLZ2, and the boxes here grow
as k^(m-1).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize, special

from parasearch.bayes import MAX_FIT_POINTS, BayesSampler, log_h, transform_values
from parasearch.gp import GaussianProcess, LengthscalePrior, dimension_scaled
from orchestra.pareto import oriented, pareto_front, reference_point
from parasearch.samplers import Sampler
from parasearch.space import Key, Point, Space, Trial, seen_keys

#: EHVI's exact boxes number k^(m-1): up to three objectives they stay a few thousand.
MAX_EHVI_OBJECTIVES = 3
#: ``bayes`` picks log-EHVI up to this many objectives and ParEGO beyond (see multi_objective_sampler).
EHVI_AUTOMATIC_OBJECTIVES = 2
#: Front points the boxes are built from, at most (the ones spread farthest apart are kept).
MAX_FRONT = 60
N_RANDOM = 1024
N_LOCAL = 40
N_CENTRES = 12
N_POLISH = 4
_STREAM = 11  # keeps this sampler's generators apart from the others' (see Sampler._rng)


def cells(front: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint boxes (lower (C, m), upper (C, m)) whose union is the part of the reference box that no point
    of ``front`` (minimisation vectors) dominates. Lower bounds may be -inf.

    Why exact and this way: a point's hypervolume improvement is the volume of its dominated box inside
    this region, i.e. a sum over the boxes of per-objective overlaps, which is what makes EHVI a sum of
    products of one-dimensional Gaussian integrals.
    """
    front = np.asarray(front, dtype=float).reshape(-1, len(ref))
    front = front[np.all(front < ref, axis=1)]
    m = len(ref)
    if len(front) == 0:
        return np.full((1, m), -np.inf), ref[None, :].copy()
    grids = []
    for j in range(m - 1):
        v = np.unique(front[:, j])
        grids.append((np.concatenate([[-np.inf], v]), np.concatenate([v, [ref[j]]])))
    mesh_lo = np.meshgrid(*[g[0] for g in grids], indexing="ij")
    mesh_hi = np.meshgrid(*[g[1] for g in grids], indexing="ij")
    lo = np.stack([a.ravel() for a in mesh_lo], axis=1)
    hi = np.stack([a.ravel() for a in mesh_hi], axis=1)
    # A point at the cell's lower corner or below it in the first m-1 objectives dominates the cell's
    # interior down to its own last value: the box ends there in the last objective.
    covers = np.all(front[None, :, :-1] <= lo[:, None, :], axis=2)  # (C, k)
    top = np.where(covers, front[None, :, -1], ref[-1]).min(axis=1)
    top = np.minimum(top, ref[-1])
    keep = top > -np.inf
    lower = np.concatenate([lo, np.full((len(lo), 1), -np.inf)], axis=1)[keep]
    upper = np.concatenate([hi, top[:, None]], axis=1)[keep]
    nonempty = np.all(upper > lower, axis=1)
    return lower[nonempty], upper[nonempty]


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - e^x) for x <= 0, accurate at both ends (Mächler 2012)."""
    x = np.minimum(x, -1e-300)
    with np.errstate(divide="ignore"):  # np.where evaluates both branches; the unused one may be -inf
        return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


Intervals = list[tuple[np.ndarray, np.ndarray]]  # per objective: distinct (l, u) pairs, each box's pair


def intervals(lower: np.ndarray, upper: np.ndarray) -> Intervals:
    """Each objective's distinct (lower, upper) box intervals and which one each box has: computed once per
    set of boxes, since every score of an ask reuses them."""
    out = []
    for j in range(lower.shape[1]):
        pairs, inverse = np.unique(np.column_stack([lower[:, j], upper[:, j]]), axis=0, return_inverse=True)
        out.append((pairs, np.ravel(inverse)))
    return out


def log_ehvi(mean: np.ndarray, sigma: np.ndarray, lower: np.ndarray, upper: np.ndarray,
             shared: Intervals | None = None) -> np.ndarray:
    """log EHVI of independent Gaussians (means and sds (M, m)) over the boxes (C, m): shape (M,).

    For one box and objective the expected overlap is E[(u - max(l, Y))^+] = σ (h(z_u) - h(z_l)); its log
    is log σ + log h(z_u) + log(1 - h(z_l)/h(z_u)), finite however deep in the tail z lies. Each objective's
    boxes share few distinct (l, u) intervals (k + 1 for k front points), so the Gaussian terms are computed
    per interval and gathered: the cost is in the (M, C) sum, not in C special functions per candidate.
    """
    total = np.zeros((len(mean), len(lower)))
    for j, (pairs, inverse) in enumerate(shared if shared is not None else intervals(lower, upper)):
        mu, sd = mean[:, j:j + 1], sigma[:, j:j + 1]
        lhu = log_h(((pairs[None, :, 1] - mu) / sd).ravel())[0].reshape(len(mean), len(pairs))
        term = np.log(sd) + lhu
        finite = np.isfinite(pairs[:, 0])
        if finite.any():
            zl = (np.where(finite, pairs[:, 0], 0.0)[None, :] - mu) / sd
            lhl = log_h(zl.ravel())[0].reshape(zl.shape)
            term = term + np.where(finite[None, :], _log1mexp(np.minimum(lhl - lhu, 0.0)), 0.0)
        total += term[:, inverse]
    return special.logsumexp(total, axis=1)


Boxes = tuple[np.ndarray, np.ndarray, Intervals]  # (lower, upper, their intervals)


class EHVISampler(Sampler):
    """Proposes points for a two- or three-objective study; trials carry their raw vectors in ``values``."""

    def __init__(self, space: Space, *, seed: int, budget: int, goals: Sequence[str]) -> None:
        super().__init__(space, seed=seed, budget=budget, goal="minimize")
        self.goals = tuple(goals)
        if not 2 <= len(self.goals) <= MAX_EHVI_OBJECTIVES:
            raise ValueError(f"EHVI takes 2 to {MAX_EHVI_OBJECTIVES} objectives, not {len(self.goals)}")
        self.inner = BayesSampler(space, seed=seed, budget=budget, goal="minimize")
        self.encoder = self.inner.encoder
        self.prior: LengthscalePrior = dimension_scaled(self.encoder.dim)

    def ask(self, n: int, history: Sequence[Trial], pending: Sequence[Mapping[str, Any]]) -> list[Point]:
        pending = list(pending)
        seen = seen_keys(self.space, history, pending)
        ok = [t for t in history if _vector(t) is not None]
        if self.space.dim == 0 or len(seen) < self.inner.n_init or len(ok) < 2:
            # The initial design (the GP sampler hands it out while too little is known to model).
            return self.inner.initial.ask(n, history, pending)
        return self._model_ask(n, ok, history, pending, seen)

    def _model_ask(self, q: int, ok: Sequence[Trial], history: Sequence[Trial],
                   pending: Sequence[Mapping[str, Any]], seen: set[Key]) -> list[Point]:
        enc = self.encoder
        rng = self._rng(len(seen), _STREAM)
        X = enc.encode([t.params for t in ok])
        Yraw = oriented([_vector(t) for t in ok], self.goals)  # type: ignore[misc]
        Y = np.column_stack([transform_values(Yraw[:, j]) for j in range(Yraw.shape[1])])
        gps = [self._fit(X, Y[:, j], rng) for j in range(Y.shape[1])]
        failed = [t.params for t in history if _vector(t) is None]
        X_failed = enc.encode(failed[:64])
        X_pending = enc.encode(pending)
        observed = np.column_stack([gp.train_mean() for gp in gps])
        ref = reference_point(Y)
        out: list[Point] = []
        for _ in range(q):
            fant_mean = (np.column_stack([gp.predict(X_pending)[0] for gp in gps]) if len(X_pending)
                         else np.zeros((0, len(gps))))
            models = [gp.condition(np.vstack([X_failed, X_pending]),
                                   np.concatenate([np.full(len(X_failed), float(Y[:, j].max())), fant_mean[:, j]]))
                      for j, gp in enumerate(gps)]
            known = np.vstack([observed, fant_mean])
            front = _spread(known[pareto_front(known)], MAX_FRONT)
            boxes = cells(front, ref)
            centres = X[pareto_front(observed)]
            point, e = self._maximize(models, (*boxes, intervals(*boxes)), centres, seen, rng)
            if point is None:
                break
            out.append(point)
            seen.add(self.space.key(point))
            X_pending = np.vstack([X_pending, e[None, :]])
        return out

    def _fit(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> GaussianProcess:
        """One objective's GP, MAP under the dimension-scaled lengthscale prior (see the module docstring,
        step 2); hyperparameters from at most MAX_FIT_POINTS trials (the best third and a random rest, as
        the single-objective sampler does), then conditioned on all of them."""
        if len(X) > MAX_FIT_POINTS:
            order = np.argsort(y, kind="stable")
            keep = list(order[:MAX_FIT_POINTS // 3])
            keep += list(rng.choice(order[MAX_FIT_POINTS // 3:], MAX_FIT_POINTS - len(keep), replace=False))
            sub = np.sort(np.array(keep))
            fitted = GaussianProcess.fit(X[sub], y[sub], rng=rng, restarts=2, prior=self.prior)
            return GaussianProcess(X, y, fitted.hyper)
        return GaussianProcess.fit(X, y, rng=rng, restarts=3 if len(X) <= 50 else 2, prior=self.prior)

    def _score(self, models: Sequence[GaussianProcess], E: np.ndarray, boxes: Boxes) -> np.ndarray:
        preds = [gp.predict(E) for gp in models]
        mean = np.column_stack([p[0] for p in preds])
        sigma = np.sqrt(np.column_stack([p[1] for p in preds]))
        return log_ehvi(mean, sigma, *boxes)

    def _maximize(self, models: Sequence[GaussianProcess], boxes: Boxes,
                  centres: np.ndarray, seen: set[Key], rng: np.random.Generator) -> tuple[Point | None, np.ndarray]:
        """The unseen valid point of highest log-EHVI: candidates, then L-BFGS-B on the best few."""
        enc = self.encoder
        dim = self.space.dim
        parts = [rng.random((N_RANDOM, dim))]
        U_front = enc.unit_of(centres)
        if len(U_front) > N_CENTRES:
            U_front = U_front[np.sort(rng.choice(len(U_front), N_CENTRES, replace=False))]
        for u in U_front:
            scale = np.where(np.arange(N_LOCAL)[:, None] % 2 == 0, 0.02, 0.1)
            parts.append(u + scale * rng.standard_normal((N_LOCAL, dim)))
        candidates = enc.snap(np.vstack(parts))
        scores = self._score(models, candidates, boxes)
        order = np.argsort(-scores, kind="stable")
        polished = [self._polish(models, boxes, candidates[i]) for i in order[:N_POLISH]]
        pool = np.vstack([*polished, candidates[order[:64]]])
        pool_scores = self._score(models, pool, boxes)
        for i in np.argsort(-pool_scores, kind="stable"):
            point = self.space.from_unit(enc.unit_of(pool[i])[0])
            if self.space.key(point) not in seen:
                return point, pool[i]
        for i in order[64:]:
            point = self.space.from_unit(enc.unit_of(candidates[i])[0])
            if self.space.key(point) not in seen:
                return point, candidates[i]
        for _ in range(100):
            point = self.space.from_unit(rng.random(dim).tolist())
            if self.space.key(point) not in seen:
                return point, enc.encode([point])[0]
        return None, np.zeros(enc.dim)

    def _polish(self, models: Sequence[GaussianProcess], boxes: Boxes, start: np.ndarray) -> np.ndarray:
        """L-BFGS-B over the continuous coordinates. The gradient is a forward difference scored in one
        batch with the point itself (d + 1 rows, one call): a few dimensions, and no analytic gradient of
        the box sums to keep right."""
        cont = self.encoder.continuous
        if len(cont) == 0:
            return start
        base = start.copy()
        z0 = base[cont]
        bounds = [(v, v) if v < 0.0 else (0.0, 1.0) for v in z0]  # inactive coordinates stay put
        step = 1e-6

        def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
            E = np.repeat(base[None, :], len(cont) + 1, axis=0)
            E[:, cont] = z
            free = np.array([lo < hi for lo, hi in bounds])
            # Step inwards at an upper bound, so every probe stays inside the box.
            h = np.where(z + step <= 1.0, step, -step) * free
            E[1 + np.arange(len(cont)), cont] += h
            values = self._score(models, E, boxes)
            values = np.where(np.isfinite(values), values, -1e300)
            grad = np.where(free, (values[1:] - values[0]) / np.where(h != 0, h, 1.0), 0.0)
            return -float(values[0]), -grad

        res = optimize.minimize(objective, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": 40})
        base[cont] = res.x
        return self.encoder.snap(self.encoder.unit_of(base[None, :]))[0]


def _spread(front: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` front points, chosen greedily far apart (the extremes first), deterministically."""
    if len(front) <= limit:
        return front
    span = np.where(np.ptp(front, axis=0) > 0, np.ptp(front, axis=0), 1.0)
    F = (front - front.min(axis=0)) / span
    chosen = [int(np.argmin(F[:, j])) for j in range(F.shape[1])]
    chosen = list(dict.fromkeys(chosen))
    nearest = np.min(((F[:, None, :] - F[None, chosen, :]) ** 2).sum(2), axis=1)
    while len(chosen) < limit:
        j = int(np.argmax(nearest))
        chosen.append(j)
        nearest = np.minimum(nearest, ((F - F[j]) ** 2).sum(1))
    return front[np.sort(chosen)]


def _vector(trial: Trial) -> tuple[float, ...] | None:
    values = getattr(trial, "values", None)
    if trial.failed or values is None or not all(np.isfinite(values)):
        return None
    return tuple(float(v) for v in values)


def multi_objective_sampler(space: Space, *, seed: int, budget: int, goals: Sequence[str]) -> Sampler:
    """`bayes` for several objectives: log-EHVI for two, ParEGO for three or more.

    Why the split, measured (bench/multiobjective.py, BENCHMARKS.md): on the two-objective ZDT problems
    log-EHVI reached lower regret than ParEGO, while on three-objective DTLZ2 it did worse than ParEGO
    (and than random at 100 points): its reference point, from the observed nadir, leaves most of the
    box to gain far from the front, where a third objective spreads the points thin.
    """
    if len(goals) <= EHVI_AUTOMATIC_OBJECTIVES:
        return EHVISampler(space, seed=seed, budget=budget, goals=goals)
    from parasearch.parego import ParEGOSampler

    return ParEGOSampler(space, seed=seed, budget=budget, goals=goals)


__all__ = ["EHVISampler", "cells", "intervals", "log_ehvi", "multi_objective_sampler", "MAX_EHVI_OBJECTIVES",
           "EHVI_AUTOMATIC_OBJECTIVES"]
