"""Critical batch size from steps-to-target measurements.

For each target (a model size trained to a fixed loss), the steps S needed at batch B follow
McCandlish et al. / Kaplan et al.: S = S_min (1 + B_crit / B), so E = S B = E_min (1 + B / B_crit)
with E_min = S_min B_crit the fewest tokens. Fitted in log space (relative errors, since
steps span orders of magnitude). Across targets B_crit is fitted as a power law
B_crit = k x^p of x = model size N, tokens E_min (Zhang et al. 2024 find growth with data, not
size) or target loss. ``b_overhead20`` is Zhang et al.'s measure: the batch where the fitted
steps carry 20% overhead over linear scaling from the smallest batch measured.

Units: batch in tokens, steps in optimizer steps, N non-embedding parameters, loss nats/token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import least_squares

from hpscale.fitting.errors import FittingError, InsufficientDataError, InvalidLawRecordError, NotFittedError
from hpscale.fitting.forms import CRITICAL_BY
from hpscale.fitting.records import restore_fitted


@dataclass(frozen=True)
class TargetFit:
    """S = S_min (1 + B_crit / B) fitted on one (model size, target loss)."""

    n_params: float
    target_loss: float
    s_min: float
    b_crit: float
    e_min: float
    b_overhead20: float
    rel_error: float  # mean |S_pred / S - 1| over the target's batches


def steps_to_target(steps: np.ndarray, loss: np.ndarray, target: float) -> float | None:
    """First step at which a loss curve reaches ``target`` (nats/token), linearly interpolated
    between the last evaluation above it and the first at or below it; None if never reached."""
    steps, loss = np.asarray(steps, dtype=float), np.asarray(loss, dtype=float)
    ok = np.isfinite(loss)
    steps, loss = steps[ok], loss[ok]
    hit = np.flatnonzero(loss <= target)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    s0, s1, l0, l1 = steps[i - 1], steps[i], loss[i - 1], loss[i]
    return float(s0 + (s1 - s0) * (l0 - target) / (l0 - l1))


def _fit_targets_batched(batch: np.ndarray, steps: np.ndarray, around: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """S_min and B_crit of K resamples of one target at once ((K, points) arrays).

    For fixed B_crit the best log S_min is a mean, so the fit is a 1-D profile over
    u = log B_crit: evaluated on a grid for all K, then refined by a parabola through the best
    grid point and its neighbours (grid step 0.02 in log, far below bootstrap spread). The grid
    spans the measured batches and ``around`` (the point fit's B_crit) by a factor e^6 each side.
    """
    lb, ls = np.log(batch), np.log(steps)
    lo, hi = lb.min(), lb.max()
    if around is not None and np.isfinite(around) and around > 0:
        lo, hi = min(lo, np.log(around)), max(hi, np.log(around))
    grid = np.arange(lo - 6.0, hi + 6.0, 0.02)
    # (K, grid, points): residual of log S after profiling out log S_min.
    r = ls[:, None, :] - np.log1p(np.exp(grid[None, :, None] - lb[:, None, :]))
    sse = ((r - r.mean(axis=2, keepdims=True)) ** 2).sum(axis=2)
    j = np.clip(np.argmin(sse, axis=1), 1, grid.size - 2)
    rows = np.arange(sse.shape[0])
    f0, f1, f2 = sse[rows, j - 1], sse[rows, j], sse[rows, j + 1]
    denom = f0 - 2 * f1 + f2
    shift = np.where(denom > 0, 0.5 * (f0 - f2) / np.where(denom > 0, denom, 1.0), 0.0)
    u = grid[j] + np.clip(shift, -1, 1) * 0.02
    log_s_min = (ls - np.log1p(np.exp(u[:, None] - lb))).mean(axis=1)
    return np.exp(log_s_min), np.exp(u)


def fit_target(batch_tokens: np.ndarray, steps: np.ndarray) -> tuple[float, float, float]:
    """(S_min, B_crit, mean relative error) for one target."""
    # Linear start: S = S_min + (S_min B_crit) / B is linear in 1 / B.
    slope, intercept = np.polyfit(1.0 / batch_tokens, steps, 1)
    s0 = max(intercept, steps.min() * 0.5)
    b0 = max(slope / s0, batch_tokens.min() * 0.1)

    def resid(z: np.ndarray) -> np.ndarray:
        return z[0] + np.log1p(np.exp(z[1]) / batch_tokens) - np.log(steps)

    res = least_squares(resid, [np.log(s0), np.log(b0)])
    s_min, b_crit = float(np.exp(res.x[0])), float(np.exp(res.x[1]))
    pred = s_min * (1 + b_crit / batch_tokens)
    return s_min, b_crit, float(np.mean(np.abs(pred / steps - 1)))


@dataclass
class CriticalBatchLaw:
    """B_crit(x) = k x^p over targets (see the module doc). Parameters: ``by``, the variable x,
    one of "n_params", "tokens" (E_min), "target_loss"; ``n_bootstrap`` resamples (of targets,
    and of the log-steps residuals within each), ``seed``, ``level``.

    Fitted: ``targets_`` (TargetFit per target), ``coef_`` ({"k", "p"} for ``by``),
    ``exponents_`` (p for every variable the data allow), ``coef_samples_``, ``intervals_``,
    ``fit_range_``, ``warnings_``.
    """

    by: str = "n_params"
    n_bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    coef_samples_: list[dict[str, float]] | None = field(default=None, init=False)
    intervals_: dict[str, list[float]] | None = field(default=None, init=False)
    coef_: dict[str, float] | None = field(default=None, init=False)
    exponents_: dict[str, float] | None = field(default=None, init=False)
    targets_: list[TargetFit] | None = field(default=None, init=False)
    fit_range_: dict[str, list[float]] | None = field(default=None, init=False)
    runs_used_: list[str] | None = field(default=None, init=False)
    warnings_: list[str] = field(default_factory=list, init=False)

    kind: ClassVar[str] = "critical_batch"
    form: ClassVar[str] = "power"

    def fit(self, n_params: np.ndarray, target_loss: np.ndarray, batch_tokens: np.ndarray, steps: np.ndarray,
            names: list[str] | None = None) -> "CriticalBatchLaw":
        """Fit from measurements: one row per (model size, target loss, batch) with the steps
        it took to reach the target. Returns self."""
        if self.by not in CRITICAL_BY:
            raise ValueError(f"by must be one of {CRITICAL_BY}, got {self.by!r}")
        n, tl, b, s = (np.asarray(a, dtype=float).reshape(-1) for a in (n_params, target_loss, batch_tokens, steps))
        if not (n.size == tl.size == b.size == s.size) or n.size == 0:
            raise FittingError("n_params, target_loss, batch_tokens and steps must be equal-length, non-empty")
        ok = np.isfinite(s) & (s > 0) & np.isfinite(b) & (b > 0)
        if not ok.any():
            raise InsufficientDataError("no measurement reached its target (all steps missing or infinite)")
        self.warnings_ = []
        targets: list[TargetFit] = []
        members: list[np.ndarray] = []
        for key in sorted(set(zip(n[ok].tolist(), tl[ok].tolist()))):
            m = ok & (n == key[0]) & (tl == key[1])
            if len(set(b[m].tolist())) < 3:
                self.warnings_.append(f"target N={key[0]:.4g}, loss={key[1]}: fewer than 3 batch sizes, skipped")
                continue
            s_min, b_crit, err = fit_target(b[m], s[m])
            b0 = float(b[m].min())
            if not b0 / 10 <= b_crit <= 10 * float(b[m].max()):
                # Steps still halve with every doubling at the largest batch (or never fall):
                # the data bound B_crit on one side only.
                self.warnings_.append(
                    f"target N={key[0]:.4g}, loss={key[1]}: B_crit {b_crit:.3g} lies more than 10x outside the batches "
                    f"measured ({b0:.3g}..{float(b[m].max()):.3g} tokens): they bound it, they do not locate it")
            targets.append(TargetFit(key[0], key[1], s_min, b_crit, s_min * b_crit, b0 + 0.2 * (b0 + b_crit), err))
            members.append(np.flatnonzero(m))
        if len(targets) < 2:
            raise InsufficientDataError(f"a B_crit power law needs at least 2 targets with >= 3 batch sizes; got {len(targets)}")
        xs = {
            "n_params": np.array([t.n_params for t in targets]),
            "tokens": np.array([t.e_min for t in targets]),
            "target_loss": np.array([t.target_loss for t in targets]),
        }
        bc = np.log([t.b_crit for t in targets])
        self.exponents_ = {}
        for name, x in xs.items():
            if len(set(x.tolist())) >= 2:
                self.exponents_[name] = float(np.polyfit(np.log(x), bc, 1)[0])
        if self.by not in self.exponents_:
            raise InsufficientDataError(f"every target has the same {self.by}: cannot fit B_crit against it")
        p, logk = np.polyfit(np.log(xs[self.by]), bc, 1)
        self.coef_ = {"k": float(np.exp(logk)), "p": float(p)}
        self.targets_ = targets
        self.coef_samples_ = self.intervals_ = None
        if self.n_bootstrap > 0:
            self._bootstrap(members, b, s, targets)
        x = xs[self.by]
        self.fit_range_ = {self.by: [float(x.min()), float(x.max())]}
        self.runs_used_ = [names[i] for i in np.flatnonzero(ok)] if names is not None else None
        return self

    def _bootstrap(self, members: list[np.ndarray], b: np.ndarray, s: np.ndarray, targets: list[TargetFit]) -> None:
        """Resample targets, and the residuals of each target's fit; refit B_crit per target
        and the power law across them."""
        rng = np.random.default_rng(self.seed)
        k = self.n_bootstrap
        # Per-target resampled fits: (targets, K) arrays of S_min and B_crit.
        s_min = np.empty((len(members), k))
        b_crit = np.empty((len(members), k))
        for t, (m, fit) in enumerate(zip(members, targets)):
            # Residual bootstrap within a target: its batch sizes stay as measured (a case
            # resample of 3-4 batches often repeats one and leaves B_crit undetermined, its
            # profile running to the grid's edge); the log-steps residuals are redrawn,
            # inflated by sqrt(n / (n - 2)) for the two fitted parameters.
            fitted = np.log(fit.s_min) + np.log1p(fit.b_crit / b[m])
            resid = np.log(s[m]) - fitted
            inflate = np.sqrt(m.size / (m.size - 2)) if m.size > 2 else 1.0
            draws = fitted + inflate * resid[rng.integers(0, m.size, (k, m.size))]
            s_min[t], b_crit[t] = _fit_targets_batched(np.broadcast_to(b[m], draws.shape), np.exp(draws), fit.b_crit)
        base = {"n_params": np.array([t.n_params for t in targets]), "target_loss": np.array([t.target_loss for t in targets])}
        samples = []
        for i in range(k):
            draw = rng.integers(0, len(members), len(members))
            x = {"tokens": (s_min[:, i] * b_crit[:, i])[draw], **{n: v[draw] for n, v in base.items()}}[self.by]
            if np.unique(x).size < 2:
                continue  # one distinct target drawn: no slope to fit
            p, logk = np.polyfit(np.log(x), np.log(b_crit[draw, i]), 1)
            samples.append({"k": float(np.exp(logk)), "p": float(p)})
        if len(samples) < 0.9 * k:
            self.warnings_.append(f"only {len(samples)} of {k} bootstrap resamples had two distinct targets")
        if not samples:
            return
        self.coef_samples_ = samples
        lo, hi = (1 - self.level) / 2, (1 + self.level) / 2
        self.intervals_ = {
            name: [float(v) for v in np.quantile([smp[name] for smp in samples], [lo, hi])] for name in ("k", "p")
        }

    def predict(self, x: float) -> float:
        """B_crit (tokens) at x (units of ``by``)."""
        if self.coef_ is None:
            raise NotFittedError("this CriticalBatchLaw is not fitted: call fit() first")
        return float(self.coef_["k"] * x ** self.coef_["p"])

    def prediction_interval(self, x: float, level: float | None = None) -> tuple[float, float] | None:
        """Bootstrap percentile interval of B_crit (tokens) at x; None without samples."""
        self.predict(x)
        if not self.coef_samples_:
            return None
        level = self.level if level is None else level
        vals = np.log([smp["k"] * x ** smp["p"] for smp in self.coef_samples_])
        lo, hi = np.exp(np.quantile(vals, [(1 - level) / 2, (1 + level) / 2]))
        return float(lo), float(hi)

    def to_record(self) -> dict[str, Any]:
        if self.coef_ is None:
            raise NotFittedError("this CriticalBatchLaw is not fitted: call fit() first")
        return {
            "kind": self.kind, "form": self.form, "coefficients": dict(self.coef_), "intervals": self.intervals_,
            "coefficient_samples": self.coef_samples_,
            "exponents": self.exponents_, "fit_range": self.fit_range_, "warnings": list(self.warnings_),
            "runs_used": self.runs_used_,
            "settings": {"by": self.by, "n_bootstrap": self.n_bootstrap, "seed": self.seed, "level": self.level},
            "targets": [t.__dict__ for t in self.targets_ or []],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "CriticalBatchLaw":
        try:
            law = cls(**(record.get("settings") or {}))
            law.coef_ = {"k": float(record["coefficients"]["k"]), "p": float(record["coefficients"]["p"])}
            law.targets_ = [TargetFit(**t) for t in record.get("targets") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLawRecordError(f"malformed critical batch law record: {exc}") from exc
        law.exponents_ = record.get("exponents")
        return restore_fitted(law, record)
