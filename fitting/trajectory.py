"""Trajectory laws: the whole loss curve L(step) of one model under any learning-rate schedule.

- ``MultiPowerLaw`` (Luo et al., ICLR 2025):
  L(t) = L0 + A (S1(t) + S_W)^-alpha - LD(t),
  LD(t) = B sum_{k<=t} (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)),  G(x) = 1 - (C x + 1)^-beta,
  S1(t) = sum_{tau<=t} eta_tau, S_k(t) = sum_{k<=tau<=t} eta_tau, S_W the warmup's lr sum.
- ``MomentumLaw`` (Tissue et al., 2024): L(t) = L0 + A (S1(t) + S_W)^-alpha - C S2(t),
  S2(t) = sum_{tau<=t} m_tau, m_tau = lambda m_{tau-1} + (eta_{tau-1} - eta_tau).

Time t counts the steps after warmup (the laws model the post-warmup curve; eta_0 is the lr
that warmup reaches). Both are fitted jointly on several curves of one model by least squares
on the relative error L_pred / L - 1, the quantity the MPL paper scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import least_squares, minimize, nnls
from scipy.signal import lfilter

from hpscale.fitting.errors import FittingError, InsufficientDataError, InvalidLawRecordError, NotFittedError
from hpscale.fitting.schedules import infer_warmup


@dataclass(frozen=True)
class LossCurve:
    """One training run's loss curve with the lr of every step.

    ``lr[i]`` is the lr of step i + 1 (see fitting.schedules); ``steps`` are the (1-indexed)
    steps at which ``loss`` (nats/token) was measured; ``warmup_steps`` None means inferred
    from ``lr`` (the steps before it first peaks).
    """

    name: str
    lr: np.ndarray
    steps: np.ndarray
    loss: np.ndarray
    warmup_steps: int | None = None

    def warmup(self) -> int:
        return infer_warmup(self.lr) if self.warmup_steps is None else int(self.warmup_steps)


@dataclass(frozen=True)
class _Prepared:
    """What the laws need of one schedule at its evaluation steps (post-warmup quantities)."""

    area: np.ndarray  # S1(t) + S_W at each evaluated step
    post_lr: np.ndarray  # eta_1 .. eta_T
    delta: np.ndarray  # eta_{k-1} - eta_k, k = 1 .. T (eta_0 = the warmup's peak)
    t: np.ndarray  # post-warmup step index of each evaluation


def _prepare(lr: np.ndarray, steps: np.ndarray, warmup: int) -> _Prepared:
    lr = np.asarray(lr, dtype=float)
    steps = np.asarray(steps, dtype=int)
    if lr.ndim != 1 or lr.size == 0 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
        raise FittingError("the lr schedule must be a non-empty 1-D array of finite values >= 0")
    if steps.size == 0 or steps.max() > lr.size:
        raise FittingError(f"evaluation steps must lie within the schedule's {lr.size} steps")
    if steps.min() < warmup:
        raise FittingError(f"trajectory laws model the curve after warmup (step {warmup}); got step {steps.min()}")
    post = lr[warmup:]
    eta0 = lr[warmup - 1] if warmup > 0 else lr[0]
    cum = np.concatenate([[0.0], np.cumsum(post)])
    t = steps - warmup
    prev = np.concatenate([[eta0], post[:-1]])
    return _Prepared(area=cum[t] + lr[:warmup].sum(), post_lr=post, delta=prev - post, t=t)


@dataclass(frozen=True)
class _Pairs:
    """The (evaluation, lr-drop bin) pairs of the multi-power law's LD sum, as dense matrices.

    Consecutive lr drops are merged into bins of at most ``width`` steps that never straddle
    an evaluation step; a bin's drop acts at its drop-weighted mean step. This turns the
    O(evaluations x steps) sum into O(evaluations x steps / width) with an error far below
    the loss noise (width 16 changes predictions by < 1e-6 relative on the MPL curves).
    """

    delta: np.ndarray  # (bins,)
    log_eta: np.ndarray  # (bins,)
    s: np.ndarray  # (evals, bins): S_k(t), 0 where the bin lies after t
    mask: np.ndarray  # (evals, bins) bool


def _pairs(p: _Prepared, width: int) -> _Pairs:
    k = np.flatnonzero(p.delta != 0) + 1  # 1-indexed steps whose lr differs from the previous
    order = np.argsort(p.t)
    t_sorted = p.t[order]
    if k.size == 0:
        return _Pairs(np.zeros(0), np.zeros(0), np.zeros((p.t.size, 0)), np.zeros((p.t.size, 0), bool))
    key = ((k - 1) // width) * (t_sorted.size + 1) + np.searchsorted(t_sorted, k, side="left")
    _, inv = np.unique(key, return_inverse=True)
    d = p.delta[k - 1]
    w = np.abs(d)
    delta = np.bincount(inv, weights=d)
    rep = np.rint(np.bincount(inv, weights=w * k) / np.bincount(inv, weights=w)).astype(int)
    kmax = np.zeros(delta.size, int)
    np.maximum.at(kmax, inv, k)
    cum = np.concatenate([[0.0], np.cumsum(p.post_lr)])
    mask = kmax[None, :] <= p.t[:, None]
    s = np.where(mask, cum[p.t][:, None] - cum[rep - 1][None, :], 0.0)
    return _Pairs(delta=delta, log_eta=np.log(np.maximum(p.post_lr[rep - 1], 1e-300)), s=s, mask=mask)


def _relative_errors(pred: np.ndarray, loss: np.ndarray) -> np.ndarray:
    return np.abs(pred - loss) / loss


@dataclass
class _TrajectoryLaw(ABC):
    """Shared fitting scaffold: a law's curves in, coefficients out, curves predicted."""

    coef_: dict[str, float] | None = field(default=None, init=False)
    curves_used_: list[str] | None = field(default=None, init=False)
    train_error_: dict[str, float] | None = field(default=None, init=False)
    fit_range_: dict[str, list[float]] | None = field(default=None, init=False)
    warnings_: list[str] = field(default_factory=list, init=False)

    kind = "trajectory"
    form = ""
    COEFFICIENTS: ClassVar[tuple[str, ...]] = ()

    def _check_fitted(self) -> dict[str, float]:
        if self.coef_ is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() first")
        return self.coef_

    def _validate_curves(self, curves: Sequence[LossCurve]) -> None:
        if len(curves) < 1:
            raise InsufficientDataError("a trajectory law needs at least one loss curve")
        for c in curves:
            loss = np.asarray(c.loss, dtype=float)
            if loss.size != np.asarray(c.steps).size:
                raise FittingError(f"curve {c.name!r}: {loss.size} losses for {np.asarray(c.steps).size} steps")
            if not np.all(np.isfinite(loss)) or np.any(loss <= 0):
                raise InsufficientDataError(f"curve {c.name!r} has non-finite or non-positive losses (diverged?)")
        n_points = sum(np.asarray(c.steps).size for c in curves)
        if n_points < 2 * len(self.COEFFICIENTS):
            raise InsufficientDataError(
                f"{type(self).__name__} has {len(self.COEFFICIENTS)} coefficients but the curves hold {n_points} points"
            )
        if not any(np.any(_prepare(c.lr, c.steps, c.warmup()).delta != 0) for c in curves):
            self.warnings_.append("no curve anneals its lr: the annealing term is not identified")

    def _finish(self, curves: Sequence[LossCurve], coef: np.ndarray) -> None:
        self.coef_ = dict(zip(self.COEFFICIENTS, map(float, coef)))
        self.curves_used_ = [c.name for c in curves]
        self.train_error_ = self.score(curves)["mean"]
        self.fit_range_ = {"steps": [float(min(np.min(c.steps) for c in curves)), float(max(np.max(c.steps) for c in curves))]}

    def predict(self, lr: np.ndarray, steps: np.ndarray | None = None, warmup_steps: int | None = None) -> np.ndarray:
        """Loss (nats/token) at ``steps`` (default: every step after warmup) of a run whose
        step i + 1 uses ``lr[i]``; warmup is inferred from ``lr`` unless given."""
        self._check_fitted()
        lr = np.asarray(lr, dtype=float)
        warmup = infer_warmup(lr) if warmup_steps is None else int(warmup_steps)
        steps = np.arange(max(warmup, 1), lr.size + 1) if steps is None else np.asarray(steps, dtype=int)
        return self._predict_prepared(_prepare(lr, steps, warmup))

    @abstractmethod
    def _predict_prepared(self, p: _Prepared) -> np.ndarray:
        """The law's loss at the evaluation steps of one prepared schedule (each law's formula)."""

    def score(self, curves: Sequence[LossCurve]) -> dict[str, Any]:
        """Relative errors |pred / loss - 1| on curves: per curve mean and max, and their means
        over the curves ("mean" is the MPL paper's PredE, "worst" its WorstE)."""
        per: dict[str, dict[str, float]] = {}
        for c in curves:
            err = _relative_errors(self.predict(c.lr, c.steps, c.warmup()), np.asarray(c.loss, float))
            per[c.name] = {"mean": float(err.mean()), "max": float(err.max())}
        return {
            "per_curve": per,
            "mean": float(np.mean([v["mean"] for v in per.values()])),
            "worst": float(np.mean([v["max"] for v in per.values()])),
        }

    def to_record(self) -> dict[str, Any]:
        coef = self._check_fitted()
        return {
            "kind": self.kind, "form": self.form, "coefficients": dict(coef), "intervals": None,
            "fit_range": self.fit_range_, "warnings": list(self.warnings_),
            "runs_used": self.curves_used_, "train_error": self.train_error_,
            "settings": {f.name: getattr(self, f.name) for f in fields(self) if f.init},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "_TrajectoryLaw":
        try:
            coef = {k: float(record["coefficients"][k]) for k in cls.COEFFICIENTS}
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLawRecordError(f"malformed {cls.form} trajectory law record: {exc}") from exc
        try:
            settings = {k: tuple(v) if isinstance(v, list) else v for k, v in (record.get("settings") or {}).items()}
            law = cls(**settings)
        except TypeError as exc:
            raise InvalidLawRecordError(f"malformed {cls.form} trajectory law settings: {exc}") from exc
        law.coef_ = coef
        law.fit_range_ = record.get("fit_range")
        law.warnings_ = list(record.get("warnings") or [])
        law.curves_used_ = record.get("runs_used")
        law.train_error_ = record.get("train_error")
        return law


@dataclass
class MultiPowerLaw(_TrajectoryLaw):
    """The multi-power law (see the module doc). Coefficients: L0, A, alpha, B, C, beta, gamma.

    Parameters: ``bin_width`` (steps merged per lr-drop bin, see _Pairs), ``n_starts`` (best
    grid starts refined by least squares), ``huber_delta`` (Huber threshold on log-loss
    residuals), ``prior_weight`` (strength of the prior on beta and gamma, see ``fit``).
    """

    bin_width: int = 16
    n_starts: int = 3
    huber_delta: float = 1e-3
    prior_weight: float = 0.1

    form = "multi_power"
    COEFFICIENTS = ("L0", "A", "alpha", "B", "C", "beta", "gamma")

    def fit(self, curves: Sequence[LossCurve]) -> "MultiPowerLaw":
        """Fit jointly on ``curves`` (one model, several schedules). Returns self.

        Objective: the sum of Huber(huber_delta) losses of log(pred) - log(loss), the MPL
        authors' choice, plus a Gaussian prior of weight ``prior_weight`` on log beta and
        log gamma centred on 0.5. The prior is there because three training schedules barely
        identify the annealing term's saturation: left free, beta runs to 0 with B to
        infinity (a log-shaped drop) and the long-horizon predictions get worse; the
        reference implementation regularises the same way implicitly, by a short Adam run
        from beta = gamma = 0.5.
        """
        self.warnings_ = []
        self._validate_curves(curves)
        prepared = [_prepare(c.lr, c.steps, c.warmup()) for c in curves]
        pairs = [_pairs(p, self.bin_width) for p in prepared]
        y = np.concatenate([np.asarray(c.loss, float) for c in curves])
        log_y = np.log(y)
        prior_centre = np.log(0.5)

        def parts(theta: np.ndarray, jac: bool) -> tuple[np.ndarray, np.ndarray | None]:
            # theta = L0, log A, alpha, log B, log C, log beta, log gamma
            l0, log_a, alpha, log_b, log_c = theta[:5]
            beta, gamma = np.exp(theta[5]), np.exp(theta[6])
            preds, jacs = [], []
            for p, q in zip(prepared, pairs):
                power = np.exp(log_a - alpha * np.log(p.area))
                x = np.exp(-gamma * q.log_eta)[None, :] * q.s
                v = 1.0 + np.exp(log_c) * x
                vb = v ** -beta
                g = np.where(q.mask, 1.0 - vb, 0.0)
                ld = np.exp(log_b) * (g @ q.delta)
                preds.append(l0 + power - ld)
                if jac:
                    dc = np.where(q.mask, beta * vb / v * np.exp(log_c) * x, 0.0)  # dG / dlog C
                    dbeta = np.where(q.mask, vb * np.log(v), 0.0) * beta  # dG / dlog beta
                    dgamma = -dc * q.log_eta[None, :] * gamma  # dG / dlog gamma
                    b = np.exp(log_b)
                    jacs.append(np.column_stack([
                        np.ones_like(power), power, -power * np.log(p.area), -ld,
                        -b * (dc @ q.delta), -b * (dbeta @ q.delta), -b * (dgamma @ q.delta),
                    ]))
            return np.concatenate(preds), (np.vstack(jacs) if jac else None)

        def resid(theta: np.ndarray) -> np.ndarray:
            pred = np.maximum(parts(theta, False)[0], 1e-6)
            return np.concatenate([np.log(pred) - log_y, self.prior_weight * (theta[5:7] - prior_centre)])

        def jacobian(theta: np.ndarray) -> np.ndarray:
            pred, jac = parts(theta, True)
            assert jac is not None
            prior = np.zeros((2, 7))
            prior[0, 5] = prior[1, 6] = self.prior_weight
            return np.vstack([jac / np.maximum(pred, 1e-6)[:, None], prior])

        lower = np.array([0.0, -10.0, 1e-3, -10.0, -12.0, np.log(1e-3), np.log(1e-3)])
        upper = np.array([float(y.max()), 10.0, 3.0, 15.0, 12.0, np.log(5.0), np.log(3.0)])
        best = None
        for theta0 in self._starts(prepared, pairs, y, parts):
            theta0 = np.clip(theta0, lower + 1e-9, upper - 1e-9)
            res = least_squares(resid, theta0, jac=jacobian, bounds=(lower, upper), x_scale="jac",
                                loss="huber", f_scale=self.huber_delta, max_nfev=500)
            if best is None or res.cost < best.cost:
                best = res
        assert best is not None
        l0, log_a, alpha, log_b, log_c, log_beta, log_gamma = best.x
        self._finish(curves, np.array([l0, np.exp(log_a), alpha, np.exp(log_b), np.exp(log_c),
                                       np.exp(log_beta), np.exp(log_gamma)]))
        return self

    def _starts(self, prepared: list[_Prepared], pairs: list[_Pairs], y: np.ndarray, parts: Any) -> list[np.ndarray]:
        """Grid over the nonlinear exponents; L0, A, B solved linearly at each (variable
        projection), so every start is already the best it can be along the linear ones."""
        scored = []
        for alpha in (0.3, 0.5, 0.8):
            for log_c in (np.log(0.5), np.log(2.0), np.log(8.0)):
                for beta in (0.3, 0.5, 0.8):
                    for gamma in (0.5,):
                        theta = np.array([0.0, 0.0, alpha, 0.0, log_c, np.log(beta), np.log(gamma)])
                        # With L0 = 0, log A = 0, log B = 0: columns are 1, power, -LD.
                        _, jac = parts(theta, True)
                        design = jac[:, :2].copy()
                        design = np.column_stack([design, jac[:, 3]])
                        coef, *_ = np.linalg.lstsq(design / y[:, None], np.ones_like(y), rcond=None)
                        if coef[1] <= 0 or coef[2] <= 0:
                            continue
                        cost = float(np.sum((design @ coef / y - 1) ** 2))
                        scored.append((cost, np.array([coef[0], np.log(coef[1]), alpha, np.log(coef[2]), log_c,
                                                       np.log(beta), np.log(gamma)])))
        if not scored:
            raise InsufficientDataError("no starting point gives a decreasing loss curve: are the curves loss curves?")
        scored.sort(key=lambda s: s[0])
        return [s[1] for s in scored[: self.n_starts]]

    def _predict_prepared(self, p: _Prepared) -> np.ndarray:
        c = self._check_fitted()
        q = _pairs(p, self.bin_width)
        x = np.exp(-c["gamma"] * q.log_eta)[None, :] * q.s
        g = np.where(q.mask, 1.0 - (1.0 + c["C"] * x) ** -c["beta"], 0.0)
        return c["L0"] + c["A"] * p.area ** -c["alpha"] - c["B"] * (g @ q.delta)


@dataclass
class MomentumLaw(_TrajectoryLaw):
    """The momentum (annealing) law (see the module doc). Coefficients: L0, A, alpha, C, lam.

    ``lam`` (the momentum decay, ~0.999 in the paper) is fitted, started from ``lam_grid``.
    """

    lam_grid: tuple[float, ...] = (0.99, 0.995, 0.999, 0.9995)

    form = "momentum"
    COEFFICIENTS = ("L0", "A", "alpha", "C", "lam")

    @staticmethod
    def _s2(p: _Prepared, lam: float) -> np.ndarray:
        m = lfilter([1.0], [1.0, -lam], p.delta)
        s2 = np.concatenate([[0.0], np.cumsum(m)])
        return s2[p.t]

    def _linear(self, prepared: list[_Prepared], y: np.ndarray, alpha: float, lam: float) -> tuple[float, np.ndarray]:
        """Best (L0, A, C) >= 0 for fixed (alpha, lam), and its cost (variable projection).

        Non-negative because a negative irreducible loss, a rising power term or an anneal that
        raises the loss means nothing; left free, alpha -> 0 lets L0 and A cancel at +-5e7 (a
        log-shaped curve, seen on a GPU sweep), which then extrapolates badly.
        """
        area = np.concatenate([p.area for p in prepared])
        s2 = np.concatenate([self._s2(p, lam) for p in prepared])
        design = np.column_stack([np.ones_like(y), area ** -alpha, -s2]) / y[:, None]
        coef, _ = nnls(design, np.ones_like(y))
        return float(np.sum((design @ coef - 1) ** 2)), coef

    def fit(self, curves: Sequence[LossCurve]) -> "MomentumLaw":
        """Fit jointly on ``curves`` (one model, several schedules). Returns self."""
        self.warnings_ = []
        self._validate_curves(curves)
        prepared = [_prepare(c.lr, c.steps, c.warmup()) for c in curves]
        y = np.concatenate([np.asarray(c.loss, float) for c in curves])

        def cost(z: np.ndarray) -> float:
            alpha, lam = z[0], 1.0 - np.exp(z[1])
            if not (0 < alpha < 3 and 0 < lam < 1):
                return 1e30
            return self._linear(prepared, y, alpha, lam)[0]

        grid = [(cost(np.array([a, np.log(1 - l)])), a, l) for a in (0.2, 0.4, 0.6, 0.9) for l in self.lam_grid]
        _, a0, l0 = min(grid)
        res = minimize(cost, np.array([a0, np.log(1 - l0)]), method="Nelder-Mead",
                       options={"xatol": 1e-6, "fatol": 1e-14, "maxiter": 2000})
        alpha, lam = float(res.x[0]), float(1.0 - np.exp(res.x[1]))
        _, (l0_, a_, c_) = self._linear(prepared, y, alpha, lam)
        self._finish(curves, np.array([l0_, a_, alpha, c_, lam]))
        return self

    def _predict_prepared(self, p: _Prepared) -> np.ndarray:
        c = self._check_fitted()
        return c["L0"] + c["A"] * p.area ** -c["alpha"] - c["C"] * self._s2(p, c["lam"])


TRAJECTORY_LAWS: dict[str, type[_TrajectoryLaw]] = {"multi_power": MultiPowerLaw, "momentum": MomentumLaw}

