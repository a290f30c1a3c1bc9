"""A small exact Gaussian process (Matérn 5/2, ARD) on numpy/scipy, with analytic gradients.

Why our own: the searches Orchestra runs are small (tens to a few hundred executions, each minutes to
hours), so an exact GP with a Cholesky factor is cheap and precise, and it avoids a heavy dependency
(torch). Analytic gradients matter for speed: hyperparameters and the acquisition are both optimized
with L-BFGS-B, and finite differences would cost (d + 1) times more Python calls.

Conventions: inputs live in the unit cube (the caller warps them); outputs are already standardized by
the caller, so the prior mean is 0. Hyperparameters are fitted in log space by maximizing the log
marginal likelihood plus weak log-priors (MAP), which keeps lengthscales sane with ten points.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import linalg, optimize

_SQRT5 = math.sqrt(5.0)
_JITTER = 1e-9

#: Box bounds on log-hyperparameters (unit-cube inputs, standardized outputs).
LOG_LS_BOUNDS = (math.log(0.01), math.log(20.0))
LOG_SIGNAL_BOUNDS = (math.log(0.05), math.log(20.0))
LOG_NOISE_BOUNDS = (math.log(1e-6), math.log(1.0))

#: Gamma(3, 6) prior on lengthscales (mean 0.5): functions worth optimizing vary on the scale of the box.
_LS_ALPHA, _LS_BETA = 3.0, 6.0
#: Log-normal prior on the signal variance around 1 (outputs are standardized).
_SIGNAL_LOG_SD = 1.5


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Kernel hyperparameters: ARD lengthscales, signal variance, noise variance."""

    lengthscales: np.ndarray
    signal: float
    noise: float

    def to_theta(self) -> np.ndarray:
        return np.concatenate([np.log(self.lengthscales), [math.log(self.signal), math.log(self.noise)]])

    @staticmethod
    def from_theta(theta: np.ndarray) -> Hyper:
        return Hyper(np.exp(theta[:-2]), float(math.exp(theta[-2])), float(math.exp(theta[-1])))


def _scaled_dist(X1: np.ndarray, X2: np.ndarray, ls: np.ndarray) -> np.ndarray:
    """Euclidean distances after dividing each coordinate by its lengthscale."""
    A, B = X1 / ls, X2 / ls
    sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.sqrt(np.maximum(sq, 0.0))


def matern52(X1: np.ndarray, X2: np.ndarray, ls: np.ndarray, signal: float) -> np.ndarray:
    """k(r) = s² (1 + √5 r + 5r²/3) exp(-√5 r): twice differentiable, the usual choice for tuning surfaces."""
    r = _scaled_dist(X1, X2, ls)
    return signal * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r * r) * np.exp(-_SQRT5 * r)


def _dk_factor(r: np.ndarray, signal: float) -> np.ndarray:
    """-(1/r) dk/dr = (5/3) s² (1 + √5 r) exp(-√5 r); no singularity at r = 0."""
    return (5.0 / 3.0) * signal * (1.0 + _SQRT5 * r) * np.exp(-_SQRT5 * r)


@dataclasses.dataclass(frozen=True)
class LengthscalePrior:
    """The prior on each lengthscale: ``gamma`` (shape a, rate b) or ``lognormal`` (log-mean a, log-sd b).

    Why a choice: the default Gamma(3, 6) keeps every input relevant on the box's scale, which suits one
    objective's EI. A model whose residual uncertainty along inputs that do not matter is paid for at full
    weight (log-EHVI's columns beyond the front's ends, :mod:`parasearch.ehvi`) needs a prior under which a
    lengthscale can grow long and switch its input off: :func:`dimension_scaled`.
    """

    kind: str
    a: float
    b: float

    def log_density(self, log_ls: np.ndarray) -> tuple[float, np.ndarray]:
        """Log density of the lengthscales in log parametrization (Jacobian included) and its gradient."""
        if self.kind == "lognormal":  # log ls ~ N(a, b^2): already a density in log space
            z = (log_ls - self.a) / self.b
            return float(-0.5 * np.sum(z * z)), -z / self.b
        ls = np.exp(log_ls)
        return float(np.sum(self.a * log_ls - self.b * ls)), self.a - self.b * ls

    def typical(self) -> float:
        """A lengthscale the prior finds typical (where the optimiser starts): its mode in log space."""
        return math.exp(self.a) if self.kind == "lognormal" else self.a / self.b


#: What every model of :mod:`parasearch.bayes` uses.
GAMMA_PRIOR = LengthscalePrior("gamma", _LS_ALPHA, _LS_BETA)


def dimension_scaled(d: int) -> LengthscalePrior:
    """LogNormal(√2 + log(d)/2, √3) on unit-cube inputs: the dimension-scaled prior of Hvarfner, Hellsten and
    Nardi (ICML 2024), BoTorch's default since 0.12. Median lengthscale ~ 4√d: an input matters only where
    the data say so, and the prior widens with the dimension so that the model's complexity does not grow
    with it."""
    return LengthscalePrior("lognormal", math.sqrt(2.0) + 0.5 * math.log(max(d, 1)), math.sqrt(3.0))


def _log_prior(theta: np.ndarray, prior: LengthscalePrior = GAMMA_PRIOR) -> tuple[float, np.ndarray]:
    """Weak MAP priors in log parametrization (Jacobian included) and their gradient."""
    d = len(theta) - 2
    grad = np.zeros_like(theta)
    lp, grad[:d] = prior.log_density(theta[:d])
    lp += -0.5 * theta[d] ** 2 / _SIGNAL_LOG_SD ** 2
    grad[d] = -theta[d] / _SIGNAL_LOG_SD ** 2
    return lp, grad


def neg_log_posterior(theta: np.ndarray, X: np.ndarray, y: np.ndarray, sqdiff: np.ndarray,
                      prior: LengthscalePrior = GAMMA_PRIOR) -> tuple[float, np.ndarray]:
    """Negative (log marginal likelihood + log prior) and its gradient with respect to theta.

    ``sqdiff`` holds the per-coordinate squared differences flattened to (d, n*n), computed once per fit,
    so each evaluation is a few matrix-vector products plus one Cholesky and one inverse.
    """
    n, d = X.shape
    inv_ls2 = np.exp(-2.0 * theta[:d])
    signal, noise = math.exp(theta[d]), math.exp(theta[d + 1])
    r = np.sqrt(np.maximum(inv_ls2 @ sqdiff, 0.0)).reshape(n, n)
    e = np.exp(-_SQRT5 * r)
    Kf = signal * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r * r) * e
    K = Kf + (noise + _JITTER) * np.eye(n)
    try:
        L = linalg.cholesky(K, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return 1e10, np.zeros_like(theta)
    alpha = linalg.cho_solve((L, True), y, check_finite=False)
    lml = -0.5 * float(y @ alpha) - float(np.log(np.diag(L)).sum()) - 0.5 * n * math.log(2 * math.pi)
    Linv_low, info = linalg.lapack.dpotri(L, lower=1)
    if info != 0:
        return 1e10, np.zeros_like(theta)
    Kinv = np.tril(Linv_low) + np.tril(Linv_low, -1).T
    W = np.outer(alpha, alpha) - Kinv
    grad = np.empty_like(theta)
    C = (5.0 / 3.0) * signal * (1.0 + _SQRT5 * r) * e  # dK/dlog(l_j) = C * sqdiff_j / l_j^2
    grad[:d] = 0.5 * (sqdiff @ (W * C).ravel()) * inv_ls2
    grad[d] = 0.5 * float(np.sum(W * Kf))
    grad[d + 1] = 0.5 * noise * float(np.trace(W))
    lp, glp = _log_prior(theta, prior)
    return -(lml + lp), -(grad + glp)


class GaussianProcess:
    """A GP conditioned on (X, y) with fixed hyperparameters; cheap to re-condition on fantasies."""

    def __init__(self, X: np.ndarray, y: np.ndarray, hyper: Hyper) -> None:
        self.X = np.asarray(X, dtype=float)
        self.y = np.asarray(y, dtype=float)
        self.hyper = hyper
        K = matern52(self.X, self.X, hyper.lengthscales, hyper.signal)
        jitter = hyper.noise + _JITTER
        for _ in range(6):  # duplicates with tiny noise: grow the jitter until positive definite
            try:
                self.L = linalg.cholesky(K + jitter * np.eye(len(self.X)), lower=True, check_finite=False)
                break
            except linalg.LinAlgError:
                jitter *= 10.0
        else:
            raise np.linalg.LinAlgError("kernel matrix is not positive definite")
        self.alpha = linalg.cho_solve((self.L, True), self.y, check_finite=False)

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, *, rng: np.random.Generator, restarts: int = 3,
            maxiter: int = 200, init: Sequence[Hyper] = (),
            prior: LengthscalePrior = GAMMA_PRIOR) -> GaussianProcess:
        """Fit hyperparameters by MAP with L-BFGS-B from a default, ``init`` guesses and random restarts
        (and, under another ``prior``, from its typical lengthscale too)."""
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        n, d = X.shape
        sqdiff = ((X.T[:, :, None] - X.T[:, None, :]) ** 2).reshape(d, n * n)
        bounds = [LOG_LS_BOUNDS] * d + [LOG_SIGNAL_BOUNDS, LOG_NOISE_BOUNDS]
        starts = [np.concatenate([np.full(d, math.log(0.4)), [0.0, math.log(1e-3)]])]
        starts += [h.to_theta() for h in init]
        if prior != GAMMA_PRIOR:
            starts.append(np.concatenate([np.full(d, math.log(min(prior.typical(), 15.0))), [0.0, math.log(1e-3)]]))
        for _ in range(max(restarts - 1, 0)):
            starts.append(np.concatenate([rng.uniform(math.log(0.05), math.log(2.0), d),
                                          [rng.uniform(-1.0, 1.0), rng.uniform(math.log(1e-5), math.log(0.1))]]))
        lo = np.array([b[0] for b in bounds])
        hi = np.array([b[1] for b in bounds])
        best_theta, best_val = starts[0], math.inf
        for theta0 in starts:
            res = optimize.minimize(neg_log_posterior, np.clip(theta0, lo, hi), args=(X, y, sqdiff, prior), jac=True,
                                    method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter})
            if res.fun < best_val:
                best_theta, best_val = res.x, float(res.fun)
        return cls(X, y, Hyper.from_theta(best_theta))

    def condition(self, X_new: np.ndarray, y_new: np.ndarray) -> GaussianProcess:
        """The same GP with extra observations (fantasies), hyperparameters unchanged."""
        if len(X_new) == 0:
            return self
        return GaussianProcess(np.vstack([self.X, X_new]), np.concatenate([self.y, y_new]), self.hyper)

    def train_mean(self) -> np.ndarray:
        """Posterior mean at the training inputs (y minus the noise share), without a new solve."""
        return self.y - (self.hyper.noise + _JITTER) * self.alpha

    def predict(self, Xs: np.ndarray, grad: bool = False) -> tuple[np.ndarray, ...]:
        """Posterior mean and latent variance at ``Xs`` (m, d); with ``grad`` also their gradients (m, d)."""
        h = self.hyper
        Xs = np.atleast_2d(Xs)
        r = _scaled_dist(Xs, self.X, h.lengthscales)
        e = np.exp(-_SQRT5 * r)
        k = h.signal * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r * r) * e  # (m, n)
        mean = k @ self.alpha
        v = linalg.solve_triangular(self.L, k.T, lower=True, check_finite=False)  # (n, m)
        var = np.maximum(h.signal - np.sum(v * v, axis=0), 1e-12)
        if not grad:
            return mean, var
        # dk/dx = -(5/3) s² (1 + √5 r) e^{-√5 r} (x - x') / l²
        F = -_dk_factor(r, h.signal)  # (m, n)
        diff = (Xs[:, None, :] - self.X[None, :, :]) / (h.lengthscales ** 2)  # (m, n, d)
        w = linalg.solve_triangular(self.L.T, v, lower=False, check_finite=False)  # K^-1 k, (n, m)
        dmean = np.einsum("mn,mnd->md", F * self.alpha[None, :], diff)
        dvar = -2.0 * np.einsum("mn,mnd->md", F * w.T, diff)
        return mean, var, dmean, dvar


__all__ = ["GaussianProcess", "Hyper", "LengthscalePrior", "GAMMA_PRIOR", "dimension_scaled", "matern52",
           "neg_log_posterior"]
