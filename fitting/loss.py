"""The loss law L(N, D) = E + A / N^alpha + B / D^beta (Chinchilla approach 3).

Fitted by Epoch AI's replication method: parameters e = log E, a = log A, b = log B, alpha,
beta; the prediction of log L is LSE(a - alpha log N, b - beta log D, e) (log-sum-exp keeps
every term positive and the fit well conditioned); the objective is the SUM (not the mean:
the mean makes L-BFGS stop early) of Huber(delta = 1e-3) over log-loss residuals, minimised
by L-BFGS-B from the best points of a grid of starts.

Units: N non-embedding parameters, D tokens, C = 6 N D FLOPs, losses in nats/token.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize

from hpscale.fitting.errors import InsufficientDataError, InvalidLawRecordError, NotFittedError
from hpscale.fitting.noise import NoiseEstimate, estimate_noise
from hpscale.fitting.records import percentile_interval, restore_fitted
from hpscale.fitting.runs import RunSet, fit_range

# Epoch AI's grid of starting points (e, a, b, alpha, beta).
START_GRID = {
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}


# A law residual beyond this many robust standard deviations is a gross error (a blown-up run
# recorded as done), left out of the noise estimate (see LossLaw._noise).
GROSS = 12.0
# Points all within this factor of one line D = c N^k do not tell N's term from D's: the
# data of a single tokens-per-parameter ratio (e.g. every model at 20 tokens a parameter).
ON_ONE_LINE = 1.1


def loss_design(n: np.ndarray, d: np.ndarray) -> dict[str, float | int]:
    """How the (N, D) points of a loss fit spread: counts of points, sizes and token counts, and
    ``off_line``, the largest factor by which a point's D departs from the least-squares line
    log D = log c + k log N (1.0: every point on one line, so the N and D terms trade freely)."""
    ln, ld = np.log(n), np.log(d)
    if np.ptp(ln) > 0:
        k, c = np.polyfit(ln, ld, 1)
        off = float(np.exp(np.max(np.abs(ld - (c + k * ln)))))
    else:
        off = 1.0  # one size: D alone varies, every point lies on the line N = const
    return {"points": int(n.size), "sizes": int(np.unique(n).size), "token_counts": int(np.unique(d).size),
            "off_line": off}


@dataclass(frozen=True)
class LossPrediction:
    """Predicted final loss (nats/token) with a 95% interval for one run's measured final loss:
    the law's bootstrap uncertainty and the run-to-run noise together (None without samples)."""

    loss: float
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class ComputeOptimal:
    """Compute-optimal allocation for a budget of C FLOPs: N* params and D* tokens, with
    bootstrap intervals."""

    compute: float
    n_params: float
    tokens: float
    n_params_interval: tuple[float, float] | None = None
    tokens_interval: tuple[float, float] | None = None


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative."""
    a = np.abs(r)
    small = a <= delta
    return np.where(small, 0.5 * r * r, delta * (a - 0.5 * delta)), np.where(small, r, delta * np.sign(r))


def _predict_log(theta: np.ndarray, ln: np.ndarray, ld: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L predicted by the log-sum-exp form, and its Jacobian (last axis: e, a, b, alpha,
    beta). ``theta`` is (K, 5) and ln, ld are (K, points) for K fits at once."""
    e, a, b, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    t1, t2 = a - alpha * ln, b - beta * ld
    m = np.maximum(np.maximum(t1, t2), e)
    x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    total = x1 + x2 + x3
    w1, w2, w3 = x1 / total, x2 / total, x3 / total
    return m + np.log(total), np.stack([w3, w1, w2, -w1 * ln, -w2 * ld], axis=-1)


def _objective(theta: np.ndarray, ln: np.ndarray, ld: np.ndarray, log_y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Sum of Huber losses of the log-sum-exp prediction, and its gradient (one fit)."""
    pred, jac = _predict_log(theta[None, :], ln[None, :], ld[None, :])
    h, dh = _huber(pred[0] - log_y, delta)
    return float(h.sum()), dh @ jac[0]


def _refit_many(theta0: np.ndarray, ln: np.ndarray, ld: np.ndarray, log_y: np.ndarray, delta: float,
                max_iter: int = 200) -> np.ndarray:
    """Minimise the objective for K problems at once: K data sets ((K, points) arrays) and
    ``theta0`` of shape (5,) (one start for all) or (K, 5): Levenberg-Marquardt on the Huber loss by iteratively reweighted least
    squares (weight 1 inside delta, delta / |r| outside), batched over K with 5 x 5 solves.

    Used for the bootstrap (1,000 separate L-BFGS-B runs would cost seconds of Python
    overhead; IRLS converges to the same minimum from the nearby full-data optimum) and to
    polish the grid starts before L-BFGS-B.
    """
    k = ln.shape[0]
    theta = np.array(np.broadcast_to(theta0, (k, 5)), dtype=float)

    def cost(th: np.ndarray) -> np.ndarray:
        return _huber(_predict_log(th, ln, ld)[0] - log_y, delta)[0].sum(axis=1)

    f = cost(theta)
    lam = np.full(k, 1e-3)
    eye = np.eye(5)
    for _ in range(max_iter):
        pred, jac = _predict_log(theta, ln, ld)
        r = pred - log_y
        w = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), 1e-300))
        grad = np.einsum("kp,kpi->ki", w * r, jac)
        hess = np.einsum("kp,kpi,kpj->kij", w, jac, jac)
        damped = hess + lam[:, None, None] * (hess * eye + 1e-12 * eye)
        step, singular = _solve_each(damped, -grad)
        if singular.any():  # a degenerate data set (a bootstrap resample of a few distinct points): no fit
            theta[singular] = np.nan
            f[singular] = np.nan
            lam[singular] = np.inf
            step[singular] = 0.0
        f_new = cost(theta + step)
        better = f_new < f
        theta[better] += step[better]
        lam = np.where(better, lam * 0.3, lam * 10.0)
        converged = (f - np.where(better, f_new, f)) <= 1e-15 * np.maximum(f, 1e-300)
        f = np.where(better, f_new, f)
        if np.all(converged & (np.abs(step).max(axis=1) < 1e-9) | (lam > 1e12)):
            break
    return theta


def _solve_each(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve a[k] x = b[k] for each k ((K, 5, 5), (K, 5)); returns x and a mask of the singular
    systems (their x is 0). One batched solve unless a system is singular, then one at a time."""
    try:
        return np.linalg.solve(a, b[:, :, None])[:, :, 0], np.zeros(len(a), dtype=bool)
    except np.linalg.LinAlgError:
        x, singular = np.zeros_like(b), np.zeros(len(a), dtype=bool)
        for i in range(len(a)):
            try:
                x[i] = np.linalg.solve(a[i], b[i])
            except np.linalg.LinAlgError:
                singular[i] = True
        return x, singular


def _fit_once(starts: np.ndarray, ln: np.ndarray, ld: np.ndarray, log_y: np.ndarray, delta: float) -> np.ndarray:
    best_x, best_f = None, np.inf
    for x0 in starts:
        res = minimize(_objective, x0, args=(ln, ld, log_y, delta), jac=True, method="L-BFGS-B",
                       options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-10})
        if res.fun < best_f:
            best_x, best_f = res.x, res.fun
    assert best_x is not None
    return best_x


@dataclass
class LossLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (see the module doc).

    Parameters: ``huber_delta``; ``n_refine`` (grid starts, best by objective, refined by
    L-BFGS-B: the grid holds 4,500 points and the objective is cheap to evaluate on all, so
    only the promising ones are refined); ``n_bootstrap`` (resamples of the (N, D) points,
    each refitted from the full fit's optimum, batched, see _refit_many), ``seed``, ``level``.

    Fitted: ``coef_`` (E, A, B, alpha, beta), ``coef_samples_``, ``intervals_``,
    ``fit_range_``, ``runs_used_`` (the best run of each (N, D) group), ``warnings_``,
    ``noise_`` (the run-to-run noise of one run's final loss: from seeds when there are repeats,
    from the groups' residuals around their smooth surfaces when there are lr grids, else from the
    law's own residuals; it widens prediction intervals to what one run will measure).
    """

    huber_delta: float = 1e-3
    n_refine: int = 64
    n_bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    coef_: dict[str, float] | None = field(default=None, init=False)
    coef_samples_: list[dict[str, float]] | None = field(default=None, init=False)
    intervals_: dict[str, list[float]] | None = field(default=None, init=False)
    fit_range_: dict[str, list[float]] | None = field(default=None, init=False)
    runs_used_: list[str] | None = field(default=None, init=False)
    warnings_: list[str] = field(default_factory=list, init=False)
    noise_: NoiseEstimate | None = field(default=None, init=False)
    design_: dict[str, float | int] | None = field(default=None, init=False)

    kind: ClassVar[str] = "loss"
    form: ClassVar[str] = "chinchilla"
    COEFFICIENTS: ClassVar[tuple[str, ...]] = ("E", "A", "B", "alpha", "beta")

    def fit(self, runs: RunSet) -> "LossLaw":
        """Fit on the best finite loss of every (N, D) group of ``runs`` (a group swept over
        lr and batch contributes its optimum; a single run per group contributes itself).
        Repeats of a configuration (seeds) count as one with their mean loss."""
        usable = runs.average_repeats().require_usable()
        gid, keys = usable.group_keys()
        best = np.array([np.flatnonzero(gid == g)[np.argmin(usable.final_loss[gid == g])] for g in range(len(keys))])
        n, d, y = usable.n_params[best], usable.tokens[best], usable.final_loss[best]
        if np.any(y <= 0):
            raise InsufficientDataError("the loss law needs positive losses")
        if len(keys) < 6:
            raise InsufficientDataError(f"the loss law has 5 coefficients and needs at least 6 (N, D) points; got {len(keys)}")
        if len(set(n.tolist())) < 2 or len(set(d.tolist())) < 2:
            raise InsufficientDataError("the loss law needs at least two model sizes and two token counts")
        ln, ld, log_y = np.log(n), np.log(d), np.log(y)
        grid = np.array(list(itertools.product(*START_GRID.values())))
        scores = self._grid_scores(grid, ln, ld, log_y)
        starts = grid[np.argsort(scores)[: self.n_refine]]
        # Polish every start at once (batched IRLS), then let L-BFGS-B finish the best few:
        # the grid-started L-BFGS-B of Epoch AI without paying its Python overhead 64 times.
        k = starts.shape[0]
        polished = _refit_many(starts, np.tile(ln, (k, 1)), np.tile(ld, (k, 1)), np.tile(log_y, (k, 1)),
                               self.huber_delta, max_iter=100)
        polished = polished[np.isfinite(polished).all(axis=1)]
        if not len(polished):
            raise InsufficientDataError("the loss law cannot be fitted on these values (singular at every start)")
        costs = np.array([_objective(t, ln, ld, log_y, self.huber_delta)[0] for t in polished])
        theta = _fit_once(polished[np.argsort(costs)[:3]], ln, ld, log_y, self.huber_delta)
        self.coef_ = self._coef(theta)
        self.noise_ = self._noise(runs, theta, ln, ld, log_y)
        self.design_ = loss_design(n, d)
        self.warnings_ = []
        if self.design_["off_line"] < ON_ONE_LINE:
            self.warnings_.append(
                f"every (N, D) point lies within {100 * (ON_ONE_LINE - 1):.0f}% of one line D = c N^k: the law cannot tell "
                "N's term from D's, and predicts nothing off that line (train some sizes at a second token budget)")
        if theta[3] < 1e-3 or theta[4] < 1e-3:
            self.warnings_.append("an exponent fitted to ~0: the data do not constrain that term")
        if self.coef_["E"] < 1e-3 * float(np.exp(log_y).min()):
            # Seen on a 7-group GPU sweep: E -> 0 with a small beta fits the data, and then
            # under-predicted a 4x larger model's loss by 4.4% (VALIDATION.md).
            self.warnings_.append("the irreducible loss E fitted to ~0: the data do not determine it, "
                                  "so predictions far beyond them are unreliable (add sizes or token budgets)")
        self.coef_samples_ = self.intervals_ = None
        if self.n_bootstrap > 0:
            rng = np.random.default_rng(self.seed)
            idx = rng.integers(0, y.size, (self.n_bootstrap, y.size))
            refits = _refit_many(theta, ln[idx], ld[idx], log_y[idx], self.huber_delta)
            # A resample can be degenerate (too few distinct points for five coefficients): it
            # has no fit, and is left out of the intervals rather than failing the whole law.
            samples = [self._coef(t) for t in refits[np.isfinite(refits).all(axis=1)]]
            if len(samples) < max(1, self.n_bootstrap // 2):
                raise InsufficientDataError(
                    f"only {len(samples)} of {self.n_bootstrap} bootstrap resamples could be fitted: "
                    "too few distinct (N, D) points for an interval")
            self.coef_samples_ = samples
            arr = np.array([[s[k] for k in self.COEFFICIENTS] for s in samples])
            lo, hi = percentile_interval(arr, self.level)
            self.intervals_ = {k: [float(a), float(b)] for k, a, b in zip(self.COEFFICIENTS, lo, hi)}
            if self.intervals_["E"][0] < 1e-3 * float(np.exp(log_y).min()) and not any("E fitted" in w for w in self.warnings_):
                self.warnings_.append(
                    f"the irreducible loss E ({self.coef_['E']:.3g}) has a 95% interval reaching 0: the data do not "
                    "determine it, so predictions far beyond them are unreliable (add sizes or token budgets)")
        self.fit_range_ = fit_range(n, d)
        self.runs_used_ = usable.run_names(best)
        return self

    @staticmethod
    def _noise(runs: RunSet, theta: np.ndarray, ln: np.ndarray, ld: np.ndarray, log_y: np.ndarray) -> NoiseEstimate:
        """Seeds or lr-grid residuals when the runs have them (``fitting.noise``), else the RMS of
        the law's own log residuals (5 coefficients; it includes any misfit, so it errs wide)."""
        measured = estimate_noise(runs.require_usable())
        if measured.rel_std is not None:
            return measured
        dof = log_y.size - 5
        if dof < 1:
            return measured
        resid = _predict_log(theta[None, :], ln[None, :], ld[None, :])[0][0] - log_y
        # The fit is robust (Huber) to a few blown-up runs recorded as done; the noise must be
        # too, or three outliers in 240 points widen every interval 8x. So the RMS leaves out
        # residuals beyond GROSS robust standard deviations (1.4826 x the median absolute
        # residual): gross errors only, since real residuals have heavy tails (Chinchilla's
        # reach 10.5; clipping those too would narrow its noise from 0.76% to 0.50%).
        robust_sd = 1.4826 * float(np.median(np.abs(resid)))
        inside = np.abs(resid) <= GROSS * robust_sd if robust_sd > 0 else np.ones(resid.size, bool)
        dof = int(inside.sum()) - 5
        if dof < 1:
            inside, dof = np.ones(resid.size, bool), log_y.size - 5
        kept = resid[inside]
        return NoiseEstimate(rel_std=float(np.sqrt(kept @ kept / dof)), source="law residuals", dof=int(dof),
                             configurations=int(log_y.size))

    def _grid_scores(self, grid: np.ndarray, ln: np.ndarray, ld: np.ndarray, log_y: np.ndarray) -> np.ndarray:
        """Objective at every grid point at once (4,500 x points)."""
        e, a, b, alpha, beta = (grid[:, i : i + 1] for i in range(5))
        pred = np.logaddexp(np.logaddexp(a - alpha * ln, b - beta * ld), e)
        return _huber(pred - log_y, self.huber_delta)[0].sum(axis=1)

    @staticmethod
    def _coef(theta: np.ndarray) -> dict[str, float]:
        e, a, b, alpha, beta = map(float, theta)
        with np.errstate(over="ignore"):  # a bootstrap sample's scale beyond exp's range is inf
            return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": alpha,
                    "beta": beta}

    def _check_fitted(self) -> dict[str, float]:
        if self.coef_ is None:
            raise NotFittedError("this LossLaw is not fitted: call fit() first")
        return self.coef_

    @staticmethod
    def _eval(c: dict[str, float], n: np.ndarray, d: np.ndarray) -> np.ndarray:
        # A bootstrap sample of a loosely determined law can have a huge A with a large alpha:
        # its term overflows to inf, which is the honest value (and lands in the interval's
        # tail); numpy's overflow warning would only reach the user's terminal.
        # An inf scale over an inf power is NaN: such a sample predicts without bound, so inf.
        with np.errstate(over="ignore", invalid="ignore"):
            value = c["E"] + c["A"] / n ** c["alpha"] + c["B"] / d ** c["beta"]
        return np.where(np.isnan(value), np.inf, value)

    def predict(self, n_params: float, tokens: float, level: float | None = None) -> LossPrediction:
        """Final loss for N params trained on D tokens, with an interval for the loss one run will
        measure: each bootstrap sample's prediction times a draw of the run-to-run noise."""
        c = self._check_fitted()
        loss = float(self._eval(c, np.float64(n_params), np.float64(tokens)))
        interval = None
        if self.coef_samples_:
            level = self.level if level is None else level
            vals = np.array([self._eval(s, np.float64(n_params), np.float64(tokens)) for s in self.coef_samples_])
            if self.noise_ is not None and self.noise_.rel_std:
                draws = np.random.default_rng([self.seed, 2]).standard_normal(vals.size)
                with np.errstate(over="ignore", invalid="ignore"):
                    vals = vals * np.exp(self.noise_.rel_std * draws)
            lo, hi = percentile_interval(vals, level)  # an inf sample (see _eval): an inf bound
            interval = (float(lo), float(hi))
        return LossPrediction(loss=loss, interval=interval)

    @staticmethod
    def _optimal(c: dict[str, float], compute: float) -> tuple[float, float]:
        """argmin over N of L(N, C / 6N): N* = G (C/6)^(beta/(alpha+beta)),
        G = (alpha A / (beta B))^(1/(alpha+beta))."""
        a, b = c["alpha"], c["beta"]
        g = (a * c["A"] / (b * c["B"])) ** (1.0 / (a + b))
        n = g * (compute / 6.0) ** (b / (a + b))
        return float(n), float(compute / (6.0 * n))

    def compute_optimal(self, compute: float, level: float | None = None) -> ComputeOptimal:
        """N*(C) and D*(C) = C / (6 N*) minimising the loss at C FLOPs, with intervals."""
        c = self._check_fitted()
        if c["alpha"] <= 0 or c["beta"] <= 0:
            raise InsufficientDataError("compute-optimal allocation needs alpha > 0 and beta > 0")
        n, d = self._optimal(c, compute)
        n_iv = d_iv = None
        if self.coef_samples_:
            level = self.level if level is None else level
            ok = [s for s in self.coef_samples_ if s["alpha"] > 0 and s["beta"] > 0]
            vals = np.log([self._optimal(s, compute) for s in ok])
            q = np.exp(np.quantile(vals, [(1 - level) / 2, (1 + level) / 2], axis=0))
            n_iv, d_iv = (float(q[0, 0]), float(q[1, 0])), (float(q[0, 1]), float(q[1, 1]))
        return ComputeOptimal(compute=float(compute), n_params=n, tokens=d, n_params_interval=n_iv, tokens_interval=d_iv)

    def to_record(self) -> dict[str, Any]:
        c = self._check_fitted()
        return {
            "kind": self.kind, "form": self.form, "coefficients": dict(c), "intervals": self.intervals_,
            "coefficient_samples": self.coef_samples_, "fit_range": self.fit_range_,
            "warnings": list(self.warnings_), "runs_used": self.runs_used_,
            "noise": self.noise_.to_record() if self.noise_ is not None else None,
            "design": self.design_,
            "settings": {"huber_delta": self.huber_delta, "n_refine": self.n_refine,
                         "n_bootstrap": self.n_bootstrap, "seed": self.seed, "level": self.level},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "LossLaw":
        try:
            law = cls(**(record.get("settings") or {}))
            law.coef_ = {k: float(record["coefficients"][k]) for k in cls.COEFFICIENTS}
            law.noise_ = NoiseEstimate.from_record(record.get("noise"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLawRecordError(f"malformed loss law record: {exc}") from exc
        return restore_fitted(law, record)
