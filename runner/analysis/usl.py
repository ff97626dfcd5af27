"""Universal Scalability Law (Gunther) and Amdahl fits with bootstrap intervals.

    X(N) = gamma N / (1 + sigma (N - 1) + kappa N (N - 1))

sigma (alias alpha) is contention, kappa (alias beta) coherency, gamma the throughput scale (fitted, not X(1)).
kappa = 0 is Amdahl's law. The fit is bounded non-linear least squares on all measured points (every
repetition), as the R package `usl` (Stefan Moeding) does with its default/nlxb solvers; it reproduces that
package's published coefficients and standard errors (tests/test_analysis_usl.py, tests/data/usl/).

Bounds: 0 <= sigma <= 1 (sigma > 1 has no physical meaning and makes the peak formula undefined), kappa >= 0,
gamma >= 0. Intervals are percentile bootstrap intervals: repetitions are resampled within each N when some N
has two or more repetitions; with one value per N (as in the R data sets) the residuals are resampled instead.
The bootstrap refits all replicates at once with a vectorised projected Levenberg-Marquardt started from the
point estimate, so 1000 replicates cost milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from runner.analysis.stats import iter_slices, load_totals, percentile_interval, resample, resample_within
from runner.errors import DatasetError

_LO = np.array([0.0, 0.0, 0.0])
_HI = np.array([1.0, np.inf, np.inf])
MIN_R2 = 0.9  # below this a fit is flagged poor
MAX_REL_RESIDUAL = 0.25  # a level median missed by more than this fraction of the peak flags the fit poor


@dataclass(frozen=True)
class UslFit:
    """A fitted scalability law. Intervals are (low, high) at `level`; NaN when they could not be estimated."""

    model: str  # "usl" or "amdahl"
    sigma: float
    kappa: float
    gamma: float
    sigma_ci: tuple[float, float]
    kappa_ci: tuple[float, float]
    gamma_ci: tuple[float, float]
    sigma_se: float  # asymptotic standard errors from the Jacobian (what R's usl prints)
    kappa_se: float
    gamma_se: float
    peak_n: float  # N* = sqrt((1 - sigma) / kappa); inf when kappa == 0
    peak_n_ci: tuple[float, float]
    peak_x: float  # X(N*); gamma / sigma (the ceiling) when N* is inf
    r2: float
    residual_se: float  # sqrt(residual sum of squares / degrees of freedom)
    max_rel_residual: float  # largest |fit - median| over the distinct N, relative to the largest median
    n_points: int
    n_levels: int
    bootstrap: int  # replicates that converged
    ci_method: str  # "repetitions", "residuals" or "none"
    level: float
    poor_fit: bool
    reason: str  # why the fit is poor, "" if it is not
    n_range: tuple[float, float] = field(default=(math.nan, math.nan))

    @property
    def alpha(self) -> float:
        return self.sigma

    @property
    def beta(self) -> float:
        return self.kappa

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        """Throughput the fitted law predicts at load n."""
        return usl_curve(np.asarray(n, dtype=float), self.sigma, self.kappa, self.gamma)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-friendly dict (infinities as None)."""
        def clean(v: object) -> object:
            if isinstance(v, tuple):
                return [clean(x) for x in v]
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        names = [f for f in self.__dataclass_fields__]
        return {k: clean(getattr(self, k)) for k in names}


def usl_curve(n: np.ndarray, sigma: float, kappa: float, gamma: float) -> np.ndarray:
    """X(N) of the USL."""
    return gamma * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


def peak(sigma: float, kappa: float, gamma: float) -> tuple[float, float]:
    """(N*, X(N*)) of a USL; (inf, gamma/sigma) without coherency cost."""
    if kappa <= 0:
        return math.inf, (gamma / sigma if sigma > 0 else math.inf)
    n_star = math.sqrt(max(1.0 - sigma, 0.0) / kappa)
    with np.errstate(divide="ignore", invalid="ignore"):  # sigma = 1: N* = 0 and X(0) = 0/0 (no peak: NaN)
        return n_star, float(usl_curve(np.array(n_star), sigma, kappa, gamma))


def initial_guess(n: np.ndarray, x: np.ndarray, fix_kappa: bool) -> np.ndarray:
    """Starting point: with C = X/X(1), x = N-1, y = N/C - 1, fit y = p x^2 + q x through the origin; kappa = p,
    sigma = q - p. X(1) is the median at N = 1, or extrapolated linearly from the smallest N when N = 1 is missing."""
    levels = np.unique(n)
    med = np.array([np.median(x[n == lv]) for lv in levels])
    x1 = med[0] / levels[0]
    xx = levels - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero throughput: handled below
        c = med / x1
        y = levels / c - 1.0
    keep = xx > 0
    p = q = 0.0
    if keep.sum() >= 2 and not fix_kappa:
        design = np.column_stack([xx[keep] ** 2, xx[keep]])
        (p, q), *_ = np.linalg.lstsq(design, y[keep], rcond=None)
    elif keep.sum() >= 1:
        q = float(np.dot(xx[keep], y[keep]) / np.dot(xx[keep], xx[keep]))
    if not (np.isfinite(p) and np.isfinite(q)):  # a zero throughput makes y infinite: start from linear scaling
        p = q = 0.0
    kappa = 0.0 if fix_kappa else max(p, 0.0)
    sigma = min(max(q - (0.0 if fix_kappa else p), 0.0), 1.0)
    return np.array([sigma, kappa, max(x1, 1e-12) if np.isfinite(x1) else 1e-12])


_QUIET = np.errstate(over="ignore", divide="ignore", invalid="ignore")  # huge kappa, loads at a pole: inf/NaN, judged after


@_QUIET
def _jacobian(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    sigma, kappa, gamma = p
    d = 1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0)
    return np.column_stack([-gamma * n * (n - 1.0) / d**2, -gamma * n * n * (n - 1.0) / d**2, n / d])


def _solve(n: np.ndarray, x: np.ndarray, fix_kappa: bool) -> tuple[np.ndarray, bool]:
    """Point estimate with scipy's bounded trust-region least squares. Returns (sigma, kappa, gamma), converged."""
    p0 = initial_guess(n, x, fix_kappa)
    if fix_kappa:
        def res2(q: np.ndarray) -> np.ndarray:
            return usl_curve(n, q[0], 0.0, q[1]) - x

        def jac2(q: np.ndarray) -> np.ndarray:
            return _jacobian(np.array([q[0], 0.0, q[1]]), n)[:, [0, 2]]

        sol = least_squares(res2, p0[[0, 2]], jac=jac2, bounds=(_LO[[0, 2]], _HI[[0, 2]]), x_scale="jac",
                            xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=2000)
        return _at_bounds(np.array([sol.x[0], 0.0, sol.x[1]]), n), sol.status > 0
    sol = least_squares(lambda q: usl_curve(n, *q) - x, p0, jac=lambda q: _jacobian(q, n), bounds=(_LO, _HI),
                        x_scale="jac", xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=2000)
    return _at_bounds(sol.x.copy(), n), sol.status > 0


def _at_bounds(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Put sigma and kappa (one parameter set, or B x 3) on their bounds (sigma 0 or 1, kappa 0) where the distance
    changes the denominator over the measured loads by less than 1e-12: the solvers stop a rounding error away from
    a bound (1.7e-16, 4.9e-324), which reads as a result but is the bound."""
    p = np.array(p, dtype=float)
    top = float(n.max())
    span = max(top - 1.0, 1.0)
    p[..., 0] = np.where(p[..., 0] * span < 1e-12, 0.0, np.where((1.0 - p[..., 0]) * span < 1e-12, 1.0, p[..., 0]))
    p[..., 1] = np.where(p[..., 1] * top * top < 1e-12, 0.0, p[..., 1])
    return p


@_QUIET
def _batch_lm(n: np.ndarray, xb: np.ndarray, p0: np.ndarray, fix_kappa: bool, iters: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Fit every row of xb (B x m) at once: projected Levenberg-Marquardt with an active set for the bounds.

    Returns (params B x 3, converged B)."""
    b = xb.shape[0]
    p = np.tile(p0, (b, 1))
    lam = np.full(b, 1e-3)
    nm1 = n - 1.0
    nn1 = n * nm1

    def resid(q: np.ndarray) -> np.ndarray:
        d = 1.0 + q[:, :1] * nm1 + q[:, 1:2] * nn1
        return q[:, 2:3] * n / d - xb

    r = resid(p)
    cost = np.sum(r * r, axis=1)
    done = np.zeros(b, dtype=bool)
    eye = np.eye(3)
    for _ in range(iters):
        d = 1.0 + p[:, :1] * nm1 + p[:, 1:2] * nn1
        g_n = p[:, 2:3] * n / d**2
        jac = np.stack([-g_n * nm1, -g_n * nn1, n / d], axis=2)  # B x m x 3
        jac_t = jac.transpose(0, 2, 1)
        grad = (jac_t @ r[:, :, None])[:, :, 0]
        hess = jac_t @ jac
        active = ((p <= _LO) & (grad > 0)) | ((p >= _HI) & (grad < 0))
        if fix_kappa:
            active[:, 1] = True
        diag = np.diagonal(hess, axis1=1, axis2=2)
        a = hess + (lam[:, None] * np.maximum(diag, 1e-30))[:, :, None] * eye
        keep = ~active
        a = a * keep[:, :, None] * keep[:, None, :] + eye * active[:, :, None]
        rhs = (-grad * keep)[:, :, None]
        finite = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(rhs).all(axis=(1, 2))  # a diverged replicate: no step
        a, rhs = np.where(finite[:, None, None], a, eye), np.where(finite[:, None, None], rhs, 0.0)
        try:
            step = np.linalg.solve(a, rhs)[:, :, 0]
        except np.linalg.LinAlgError:  # singular in some replicate (e.g. all throughputs 0): least-norm steps
            step = (np.linalg.pinv(a) @ rhs)[:, :, 0]
        trial = np.clip(p + step, _LO, _HI)
        r_new = resid(trial)
        cost_new = np.sum(r_new * r_new, axis=1)
        better = (cost_new < cost) & ~done
        small = np.all(np.abs(step) <= 1e-10 * (np.abs(p) + 1e-12), axis=1) | (
            better & (cost - cost_new <= 1e-14 * np.maximum(cost, 1e-300)))
        p = np.where(better[:, None], trial, p)
        r = np.where(better[:, None], r_new, r)
        cost = np.where(better, cost_new, cost)
        lam = np.where(better, lam * 0.3, np.minimum(lam * 10.0, 1e12))
        done |= small
        if done.all():
            break
    return _at_bounds(p, n), np.isfinite(cost)


@_QUIET
def _standard_errors(n: np.ndarray, p: np.ndarray, rss: float, n_params: int, fix_kappa: bool) -> np.ndarray:
    """Asymptotic standard errors sqrt(diag((J'J)^-1) * rss/dof); kappa counts as free even at its bound
    (the conservative choice), except in Amdahl's law where it is not a parameter."""
    jac = _jacobian(p, n)
    free = np.array([True, not fix_kappa, True])
    dof = n.size - n_params
    se = np.full(3, np.nan)
    if dof <= 0:
        return se
    jf = jac[:, free]
    try:
        cov = np.linalg.inv(jf.T @ jf) * (rss / dof)
    except np.linalg.LinAlgError:
        return se
    se[free] = np.sqrt(np.clip(np.diag(cov), 0, None))
    return se


# The most bootstrap values (replicates x points) resampled and refitted at once; each is a float64 in a few
# arrays of the batch solver, so this bounds the fit's memory at some hundreds of MB whatever the input.
BOOTSTRAP_CELLS = 2_000_000


def fit_usl(n, x, *, bootstrap: int = 1000, seed: int = 0, level: float = 0.95, model: str = "usl") -> UslFit:
    """Fit the USL (or Amdahl with model="amdahl") to loads `n` and throughputs `x` (one entry per repetition).

    `bootstrap` replicates give the intervals (0 disables them); `seed` seeds numpy's Generator.
    """
    if model not in ("usl", "amdahl"):
        raise DatasetError(f"unknown scalability model {model!r}; known: amdahl, usl")
    n_arr = np.asarray(n, dtype=float).ravel()
    x_arr = np.asarray(x, dtype=float).ravel()
    if n_arr.size != x_arr.size:
        raise DatasetError(f"fit_usl: {n_arr.size} loads but {x_arr.size} throughputs")
    ok = np.isfinite(n_arr) & np.isfinite(x_arr)
    n_arr, x_arr = n_arr[ok], x_arr[ok]
    if n_arr.size and (n_arr <= 0).any():
        raise DatasetError(f"fit_usl: loads must be positive, got {n_arr[n_arr <= 0][0]:g}")
    if (x_arr < 0).any():
        raise DatasetError(f"fit_usl: throughputs must not be negative, got {x_arr[x_arr < 0][0]:g}")
    fix_kappa = model == "amdahl"
    n_params = 2 if fix_kappa else 3
    levels = np.unique(n_arr)
    if levels.size < 2 or n_arr.size < n_params:
        raise DatasetError(f"fit_usl: need at least 2 distinct loads and {n_params} points, got {levels.size} loads and {n_arr.size} points")

    # Loads below 1 give the curve a pole, throughputs near the smallest floats overflow its squares: the solver
    # steps around them; what it cannot fit is refused below, never a warning or a numpy error.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        try:
            p, converged = _solve(n_arr, x_arr, fix_kappa)
        except ValueError as exc:  # scipy: residuals not finite at the starting point
            raise DatasetError(f"fit_usl: cannot fit these points: {exc}") from None
        sigma, kappa, gamma = (float(v) for v in p)
        fitted = usl_curve(n_arr, sigma, kappa, gamma)
    if not np.all(np.isfinite(fitted)):
        raise DatasetError("fit_usl: the fitted curve is not finite at the measured loads (a load below 1 at its pole?)")
    fitted = usl_curve(n_arr, sigma, kappa, gamma)
    rss = float(np.sum((x_arr - fitted) ** 2))
    tss = float(np.sum((x_arr - x_arr.mean()) ** 2))
    r2 = 1.0 - rss / tss if tss > 0 else (1.0 if rss == 0 else 0.0)
    dof = n_arr.size - n_params
    residual_se = math.sqrt(rss / dof) if dof > 0 else math.nan
    se = _standard_errors(n_arr, p, rss, n_params, fix_kappa)
    medians = np.array([np.median(x_arr[n_arr == lv]) for lv in levels])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(usl_curve(levels, sigma, kappa, gamma) - medians) / np.max(np.abs(medians))
    worst = int(np.nanargmax(rel)) if np.isfinite(rel).any() else 0
    max_rel = float(rel[worst]) if np.isfinite(rel).any() else math.nan
    n_star, x_star = peak(sigma, kappa, gamma)

    nan2 = (math.nan, math.nan)
    cis = [nan2, nan2, nan2, nan2]
    used, method = 0, "none"
    counts = np.array([np.sum(n_arr == lv) for lv in levels])
    if bootstrap > 0 and ((counts >= 2).any() or dof > 0):  # an exact fit (no repetitions, dof 0) has no residuals to resample
        rng = np.random.default_rng(seed)
        method = "repetitions" if (counts >= 2).any() else "residuals"
        resid = x_arr - fitted
        # Replicates in chunks of at most BOOTSTRAP_CELLS values: a large CSV never allocates replicates x rows at
        # once (a small fit is one chunk, so its intervals are as they always were for a seed).
        chunk = max(1, min(bootstrap, BOOTSTRAP_CELLS // max(1, n_arr.size)))
        kept = []
        for start in range(0, bootstrap, chunk):
            k = min(chunk, bootstrap - start)
            if method == "repetitions":
                xb = x_arr[resample_within(n_arr, k, rng)]
            else:
                xb = fitted + resample(resid, k, rng)
            pb, good = _batch_lm(n_arr, xb, p, fix_kappa)
            kept.append(pb[good])
        pb = np.concatenate(kept)
        used = int(pb.shape[0])
        if used:
            with np.errstate(divide="ignore", invalid="ignore"):
                nb = np.where(pb[:, 1] > 0, np.sqrt(np.clip(1 - pb[:, 0], 0, None) / pb[:, 1]), np.inf)
            cols = [pb[:, 0], pb[:, 1], pb[:, 2], np.minimum(nb, 1e300)]
            cis = [tuple(float(v) if v < 1e299 else math.inf for v in percentile_interval(c, level)) for c in cols]

    reasons = []
    if not converged:
        reasons.append("least squares did not converge")
    if levels.size < n_params + 1:
        reasons.append(f"only {levels.size} distinct loads; {model} needs at least {n_params + 1}")
    if r2 < MIN_R2:
        reasons.append(f"R^2 = {r2:.2f} < {MIN_R2:.2f}")
    if max_rel > MAX_REL_RESIDUAL:
        reasons.append(f"curve misses the median at N={levels[worst]:g} by {100 * max_rel:.0f}% of the peak (a collapse is not USL-shaped)")
    return UslFit(
        model=model, sigma=sigma, kappa=kappa, gamma=gamma,
        sigma_ci=cis[0], kappa_ci=cis[1], gamma_ci=cis[2],
        sigma_se=float(se[0]), kappa_se=float(se[1]), gamma_se=float(se[2]),
        peak_n=n_star, peak_n_ci=cis[3], peak_x=x_star, r2=r2, residual_se=residual_se, max_rel_residual=max_rel,
        n_points=int(n_arr.size), n_levels=int(levels.size), bootstrap=used, ci_method=method, level=level,
        poor_fit=bool(reasons), reason="; ".join(reasons), n_range=(float(levels[0]), float(levels[-1])),
    )


def fit_amdahl(n, x, *, bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> UslFit:
    """Amdahl's law, the USL with kappa = 0: X(N) = gamma N / (1 + sigma (N - 1))."""
    return fit_usl(n, x, bootstrap=bootstrap, seed=seed, level=level, model="amdahl")


def usl_table(metrics, *, axis: str | None = None, metric: str | None = "throughput", bootstrap: int = 1000,
              seed: int = 0, model: str = "usl") -> pd.DataFrame:
    """fit_usl on every slice of the totals along `axis` (auto-detected when None); one row per slice with its
    parameters, the fit's fields and the fit object itself in column `fit`. Slices with fewer than 2 loads are
    left out."""
    axis, tot = load_totals(metrics, axis, metric)
    rows = []
    for params, df in iter_slices(tot, axis):
        n, x = df[axis].to_numpy(dtype=float), df["value"].to_numpy(dtype=float)
        if np.unique(n).size < 2 or n.size < (2 if model == "amdahl" else 3):
            continue
        fit = fit_usl(n, x, bootstrap=bootstrap, seed=seed, model=model)
        rows.append({**params, "axis": axis, **fit.as_dict(), "fit": fit})
    return pd.DataFrame(rows)
