"""Bayesian optimization: a Gaussian process on the finished trials, log expected improvement, batches.

How one ask works, and why:

1. **Initial design.** The first ``n_init`` points come from the same scrambled Sobol sequence the sobol
   sampler uses (space-filling beats random for the handful of points a GP first learns from).
2. **Model.** Finished, successful trials are encoded into the unit cube (log-warped ranges, integers by
   cell, categoricals one-hot, inactive conditional coordinates imputed to a constant outside the cube),
   values oriented for minimization, standardized, then Gaussianized by a Yeo-Johnson power transform so
   that a few huge values (a diverged training run, Rosenbrock's walls) do not flatten the model where it
   matters. A Matérn 5/2 ARD GP is fitted by MAP (see :mod:`parasearch.gp`).
3. **Batch.** Pending points (launched elsewhere, or chosen earlier in this ask) are added as fantasies at
   the model's own mean ("kriging believer"): their uncertainty collapses, so the next point goes elsewhere.
   Failed trials are added as fantasies at the worst observed value: the search steers away from regions
   that crash without treating a crash as a measurement.
4. **Acquisition.** Log expected improvement (finite and with useful gradients even where plain EI
   underflows to 0) is scored on ~1000 random points plus perturbations of the best trials, and the best
   few are polished with one batched L-BFGS-B over the continuous coordinates. Candidates are snapped to
   valid points (rounded ints, argmax categoricals) and re-scored after snapping; points already tried or
   pending are never returned.

Everything is a function of (seed, history, pending): no state is kept between asks.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from parasearch import trust_region
from parasearch.gp import GaussianProcess
from parasearch.samplers import QMCSampler, Sampler
from parasearch.space import Key, Param, Point, Space, Trial, canonical_value, seen_keys

#: Coordinate given to an inactive conditional float/int: outside [0, 1], so "absent" never looks like a value.
INACTIVE = -0.5
#: Hyperparameters are fitted on at most this many trials (the best ones plus a seeded random rest):
#: the fit is O(n^3) per step while conditioning on all trials afterwards is a single Cholesky.
MAX_FIT_POINTS = 100
#: The model is conditioned on at most this many trials (the best third plus a space-filling rest, see
#: :func:`model_subset`): an exact GP on 2,000 trials costs seconds per ask (a 2000² Cholesky and a
#: triangular solve per scored candidate), one on 300 a tenth of that. Searches of up to this many trials
#: (every row of bench/search_quality.py) keep the exact model on all of them.
MAX_MODEL_POINTS = 300
#: Failed trials added as fantasies at the worst value, at most: enough to steer away from crashing regions.
MAX_FAILED_FANTASIES = 64
N_RANDOM_CANDIDATES = 1024
N_LOCAL_PER_POINT = 40
N_STARTS = 6


class Encoder:
    """Vectorized map from unit-cube coordinates (one per searched parameter) to GP inputs.

    ``snap`` is the projection onto valid points: it rounds, bins and decides activity exactly like
    :meth:`Space.from_unit`, so a GP input always corresponds to a point a sampler could hand out.
    """

    def __init__(self, space: Space) -> None:
        self.space = space
        self.column: dict[str, tuple[int, int]] = {}  # name -> (first GP column, width)
        self.unit_index = {p.name: i for i, p in enumerate(space.searched)}
        start = 0
        for p in space.searched:
            width = len(p.choices) if p.kind == "choice" else 1
            self.column[p.name] = (start, width)
            start += width
        self.dim = start
        self.continuous = np.array([self.column[p.name][0] for p in space.searched if p.kind in ("float", "int")],
                                   dtype=int)

    def snap(self, U: np.ndarray) -> np.ndarray:
        """Unit coordinates (m, space.dim) -> GP inputs (m, self.dim) of the valid points they decode to."""
        U = np.clip(np.atleast_2d(np.asarray(U, dtype=float)), 0.0, 1.0)
        m = len(U)
        E = np.zeros((m, self.dim))
        values: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (active mask, comparable value)
        for p in self.space.order:
            active = np.ones(m, dtype=bool)
            for parent, allowed in p.when:
                pactive, pvalue = values[parent]
                match = np.zeros(m, dtype=bool)
                for a in allowed:
                    match |= pvalue == self._comparable(self.space.by_name[parent], a)
                active &= pactive & match
            if p.kind == "fixed":
                values[p.name] = (active, np.zeros(m))
                continue
            u = U[:, self.unit_index[p.name]]
            start, width = self.column[p.name]
            if p.kind == "choice":
                idx = np.minimum((u * width).astype(int), width - 1)
                E[np.flatnonzero(active), start + idx[active]] = 1.0
                values[p.name] = (active, idx.astype(float))
            else:
                x, unit = _numeric_snap(p, u)
                E[:, start] = np.where(active, unit, INACTIVE)
                values[p.name] = (active, x)
        return E

    def _comparable(self, parent: Param, allowed: Any) -> float:
        """The number ``snap`` stores for a parent's value: choice index, the value itself, or 0 for fixed."""
        if parent.kind == "choice":
            idx = parent.index_of(allowed)
            return float(idx) if idx is not None else math.nan
        if parent.kind == "fixed":
            return 0.0 if canonical_value(allowed) == canonical_value(parent.value) else math.nan
        try:
            return float(allowed)
        except (TypeError, ValueError):
            return math.nan

    def unit_of(self, E: np.ndarray) -> np.ndarray:
        """GP inputs -> unit coordinates (argmax for one-hot blocks; inactive coordinates -> 0.5)."""
        E = np.atleast_2d(E)
        U = np.full((len(E), self.space.dim), 0.5)
        for i, p in enumerate(self.space.searched):
            start, width = self.column[p.name]
            if p.kind == "choice":
                U[:, i] = (np.argmax(E[:, start:start + width], axis=1) + 0.5) / width
            else:
                U[:, i] = np.where(E[:, start] >= 0.0, np.clip(E[:, start], 0.0, 1.0), 0.5)
        return U

    def encode(self, points: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not points:
            return np.zeros((0, self.dim))
        return self.snap(np.array([self.space.to_unit(pt) for pt in points]).reshape(len(points), -1))


def _numeric_snap(p: Param, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized ``Param.from_unit`` then ``to_unit``: the value and its (rounded) unit coordinate."""
    lo, hi = p.low, p.high
    if p.kind == "int":
        lo, hi = lo - 0.5, hi + 0.5
    a, b = (math.log(lo), math.log(hi)) if p.log else (lo, hi)
    x = a + u * (b - a)
    if p.log:
        x = np.exp(x)
    x = np.clip(np.round(x) if p.kind == "int" else x, p.low, p.high)
    w = np.log(x) if p.log else x
    return x, np.clip((w - a) / (b - a), 0.0, 1.0)


def log_h(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(z Φ(z) + φ(z)) and its derivative Φ(z)/h(z), stable far into the left tail.

    For z < -1 we use h(z) = φ(z) (1 + z √(π/2) erfcx(-z/√2)), which avoids the underflow that makes
    plain EI exactly zero (and its gradient useless) away from the incumbent.
    """
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    deriv = np.empty_like(z)
    hi = z > -1.0
    zh = z[hi]
    cdf = special.ndtr(zh)
    h = zh * cdf + np.exp(-0.5 * zh * zh) / math.sqrt(2 * math.pi)
    out[hi] = np.log(h)
    deriv[hi] = cdf / h
    zl = np.maximum(z[~hi], -1e6)
    ratio = math.sqrt(math.pi / 2) * special.erfcx(-zl / math.sqrt(2))  # Φ(z)/φ(z)
    inner = np.maximum(1.0 + zl * ratio, 1e-300)
    out[~hi] = -0.5 * zl * zl - 0.5 * math.log(2 * math.pi) + np.log(inner)
    deriv[~hi] = ratio / inner
    return out, deriv


def log_ei(gp: GaussianProcess, E: np.ndarray, best: float, grad: bool = False) -> tuple[np.ndarray, ...]:
    """Log expected improvement below ``best`` (minimization), optionally with its gradient in E."""
    if not grad:
        mean, var = gp.predict(E)
        sigma = np.sqrt(var)
        return (np.log(sigma) + log_h((best - mean) / sigma)[0],)
    mean, var, dmean, dvar = gp.predict(E, grad=True)
    sigma = np.sqrt(var)
    z = (best - mean) / sigma
    lh, dlh = log_h(z)
    dsigma = dvar / (2.0 * sigma[:, None])
    dz = (-dmean - z[:, None] * dsigma) / sigma[:, None]
    return np.log(sigma) + lh, dsigma / sigma[:, None] + dlh[:, None] * dz


def transform_values(y: np.ndarray) -> np.ndarray:
    """Standardize, Yeo-Johnson to near-Gaussian, standardize again (monotone: argmin is preserved)."""
    y = np.asarray(y, dtype=float)
    std = y.std()
    if len(y) < 2 or std <= 1e-12 * max(1.0, abs(y.mean())):
        return np.zeros_like(y)
    z = (y - y.mean()) / std
    if len(y) >= 5:
        try:
            _, lmbda = stats.yeojohnson(z)
            warped = stats.yeojohnson(z, lmbda=float(np.clip(lmbda, -2.0, 4.0)))
            if np.all(np.isfinite(warped)):
                z = warped
        except (ValueError, FloatingPointError, OverflowError):
            pass
        s = z.std()
        z = (z - z.mean()) / s if s > 1e-12 else np.zeros_like(z)
    return z


def model_subset(X: np.ndarray, y: np.ndarray, limit: int) -> np.ndarray:
    """Indices (sorted) of at most ``limit`` trials to condition the GP on: a subset-of-data GP.

    Why this subset: the acquisition needs the surface precisely where the optimum may be (the best third,
    by value) and the model's uncertainty right everywhere else, which a space-filling rest gives (greedy
    max-min distance in the GP's input space, seeded by the best ones). A random rest would leave holes
    that look unexplored and pull the search back to regions already known to be bad. Deterministic: a
    function of (X, y) only, like every ask.
    """
    n = len(X)
    if n <= limit:
        return np.arange(n)
    order = np.argsort(y, kind="stable")
    chosen = list(order[:limit // 3])
    rest = order[limit // 3:]
    R = X[rest]
    # Squared distance from each remaining trial to its nearest chosen one, updated as points are added.
    nearest = np.full(len(rest), np.inf)
    for i in chosen:
        nearest = np.minimum(nearest, ((R - X[i]) ** 2).sum(1))
    taken = np.zeros(len(rest), dtype=bool)
    while len(chosen) < limit:
        j = int(np.argmax(np.where(taken, -1.0, nearest)))
        taken[j] = True
        chosen.append(int(rest[j]))
        nearest = np.minimum(nearest, ((R - R[j]) ** 2).sum(1))
    return np.sort(np.array(chosen))


def initial_design_size(dim: int, budget: int) -> int:
    """Sobol points before the first model: ~2d+1 (at least 5, at most 10), never over a third of the budget."""
    return max(2, min(min(max(2 * dim + 1, 5), 10), max(budget // 3, 2)))


class BayesSampler(Sampler):
    """GP + log-EI Bayesian optimization with kriging-believer batches (see the module docstring)."""

    def __init__(self, space: Space, *, seed: int, budget: int, goal: str = "minimize") -> None:
        super().__init__(space, seed=seed, budget=budget, goal=goal)
        self.encoder = Encoder(space)
        self.n_init = initial_design_size(space.dim, budget)
        self.initial = QMCSampler(space, seed=seed, budget=budget, goal=goal, kind="sobol")

    def ask(self, n: int, history: Sequence[Trial], pending: Sequence[Mapping[str, Any]]) -> list[Point]:
        pending = list(pending)
        seen = seen_keys(self.space, history, pending)
        ok = [t for t in history if t.usable]
        out: list[Point] = []
        while len(out) < n:
            if self.space.dim == 0 or len(seen) < self.n_init or len(ok) < 2:
                more = self.initial.ask(1, history, pending + out)
                if not more:
                    break
                out.extend(more)
                seen.add(self.space.key(more[0]))
                continue
            out.extend(self._model_ask(n - len(out), ok, history, pending + out, seen))
            break
        return out

    # -- model stage ----------------------------------------------------------------------------
    def _model_ask(self, q: int, ok: Sequence[Trial], history: Sequence[Trial],
                   pending: Sequence[Mapping[str, Any]], seen: set[Key]) -> list[Point]:
        enc = self.encoder
        rng = self._rng(len(seen), 3)
        sign = -1.0 if self.goal == "maximize" else 1.0
        X = enc.encode([t.params for t in ok])
        y = transform_values(sign * np.array([float(t.value) for t in ok]))  # type: ignore[arg-type]
        # Transformed on all trials (the warp sees every value), modelled on a bounded subset of them.
        keep = model_subset(X, y, MAX_MODEL_POINTS)
        X, y = X[keep], y[keep]
        gp = self._fit(X, y, rng)
        failed = [t.params for t in history if not t.usable]
        if len(failed) > MAX_FAILED_FANTASIES:
            failed = [failed[i] for i in np.sort(rng.choice(len(failed), MAX_FAILED_FANTASIES, replace=False))]
        X_failed = enc.encode(failed)
        X_pending = enc.encode(pending)
        incumbent = float(np.min(gp.train_mean()))

        box = self._trust_region(history, gp)
        candidates = self._candidates(X, y, rng)
        if box is not None:  # after the global candidates, so that small spaces draw exactly as before
            local = enc.snap(box.candidates(rng, 1024, 1024))
            candidates = local if trust_region.CONFINE else np.vstack([candidates, local])
            box = box if trust_region.CONFINE else None
        out: list[Point] = []
        for _ in range(q):
            fant_X = np.vstack([X_failed, X_pending])
            fant_y = np.concatenate([np.full(len(X_failed), float(y.max())),
                                     gp.predict(X_pending)[0] if len(X_pending) else np.zeros(0)])
            model = gp.condition(fant_X, fant_y)
            best = min(incumbent, float(fant_y[len(X_failed):].min())) if len(X_pending) else incumbent
            point, e = self._maximize(model, best, candidates, X, y, seen, rng, box)
            if point is None:
                break
            out.append(point)
            seen.add(self.space.key(point))
            X_pending = np.vstack([X_pending, e[None, :]])
        return out

    def _trust_region(self, history: Sequence[Trial], gp: GaussianProcess) -> trust_region.Region | None:
        """In many dimensions, the trust region that adds local candidates (see :mod:`parasearch.trust_region`)."""
        if not trust_region.applies(self.space):
            return None
        ls = gp.hyper.lengthscales
        per_param = np.array([float(np.mean(ls[s:s + w])) for s, w in
                              (self.encoder.column[p.name] for p in self.space.searched)])
        return trust_region.region(self.space, history, self.goal, self.n_init, per_param)

    def _fit(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> GaussianProcess:
        """MAP hyperparameters on at most MAX_FIT_POINTS trials, then condition on all of them."""
        if len(X) > MAX_FIT_POINTS:
            order = np.argsort(y, kind="stable")
            keep = list(order[:MAX_FIT_POINTS // 3])
            rest = order[MAX_FIT_POINTS // 3:]
            keep += list(rng.choice(rest, MAX_FIT_POINTS - len(keep), replace=False))
            sub = np.sort(np.array(keep))
            fitted = GaussianProcess.fit(X[sub], y[sub], rng=rng, restarts=2)
            return GaussianProcess(X, y, fitted.hyper)
        return GaussianProcess.fit(X, y, rng=rng, restarts=3 if len(X) <= 50 else 2)

    def _candidates(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random points plus Gaussian perturbations (two scales) of the best trials, snapped to valid points."""
        dim = self.space.dim
        parts = [rng.random((N_RANDOM_CANDIDATES, dim))]
        U_obs = self.encoder.unit_of(X)
        for i in np.argsort(y, kind="stable")[:5]:
            scale = np.where(np.arange(N_LOCAL_PER_POINT)[:, None] % 2 == 0, 0.02, 0.1)
            local = U_obs[i] + scale * rng.standard_normal((N_LOCAL_PER_POINT, dim))
            # Categorical bins barely move under small noise: resample some of them outright.
            for j, p in enumerate(self.space.searched):
                if p.kind == "choice":
                    flip = rng.random(N_LOCAL_PER_POINT) < 0.2
                    local[flip, j] = rng.random(int(flip.sum()))
            parts.append(local)
        return self.encoder.snap(np.vstack(parts))

    def _maximize(self, gp: GaussianProcess, best: float, candidates: np.ndarray, X: np.ndarray, y: np.ndarray,
                  seen: set[Key], rng: np.random.Generator,
                  box: trust_region.Region | None = None) -> tuple[Point | None, np.ndarray]:
        """The unseen valid point of highest log-EI: score candidates, polish the best with L-BFGS-B, snap."""
        enc = self.encoder
        scores = log_ei(gp, candidates, best)[0]
        order = np.argsort(-scores, kind="stable")
        starts = [candidates[i] for i in order[:N_STARTS - 1]]
        starts.append(X[int(np.argmin(y))])
        polished = self._polish(gp, best, np.array(starts), box)
        pool = np.vstack([polished, candidates[order[:64]]])
        pool_scores = log_ei(gp, pool, best)[0]
        for i in np.argsort(-pool_scores, kind="stable"):
            point = self.space.from_unit(enc.unit_of(pool[i])[0])
            if self.space.key(point) not in seen:
                return point, pool[i]
        # Everything near the optimum is taken: fall back to any unseen candidate, best score first.
        for i in order[64:]:
            point = self.space.from_unit(enc.unit_of(candidates[i])[0])
            if self.space.key(point) not in seen:
                return point, candidates[i]
        for _ in range(100):
            point = self.space.from_unit(rng.random(self.space.dim))
            if self.space.key(point) not in seen:
                return point, enc.encode([point])[0]
        return None, np.zeros(enc.dim)

    def _polish(self, gp: GaussianProcess, best: float, starts: np.ndarray,
                box: trust_region.Region | None = None) -> np.ndarray:
        """One L-BFGS-B over all starts at once (the objective is a sum of independent terms), then snap."""
        cont = self.encoder.continuous
        if len(cont) == 0:
            return starts
        base = starts.copy()
        z0 = base[:, cont]
        # Inactive coordinates stay put (lower == upper); active ones move inside the cube.
        lo = np.where(z0 < 0.0, z0, 0.0 if box is None else self._box_columns(box.low))
        hi = np.where(z0 < 0.0, z0, 1.0 if box is None else self._box_columns(box.high))
        z0 = np.clip(z0, lo, hi)

        def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
            E = base.copy()
            E[:, cont] = z.reshape(z0.shape)
            val, dval = log_ei(gp, E, best, grad=True)
            return -float(val.sum()), -dval[:, cont].ravel()

        res = optimize.minimize(objective, z0.ravel(), jac=True, method="L-BFGS-B",
                                bounds=list(zip(lo.ravel(), hi.ravel())), options={"maxiter": 60})
        base[:, cont] = res.x.reshape(z0.shape)
        return self.encoder.snap(self.encoder.unit_of(base))

    def _box_columns(self, unit: np.ndarray) -> np.ndarray:
        """A per-parameter unit-cube bound as one entry per continuous GP column (floats and ints)."""
        idx = [self.encoder.unit_index[p.name] for p in self.space.searched if p.kind in ("float", "int")]
        return np.asarray(unit, dtype=float)[idx][None, :]


__all__ = ["BayesSampler", "Encoder", "log_ei", "log_h", "transform_values", "initial_design_size",
           "model_subset", "MAX_MODEL_POINTS"]
