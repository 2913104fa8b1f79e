"""Hyperparameter laws: the optimal peak learning rate and batch size as power laws.

Forms (all power laws, fitted by least squares in log space):

- ``steplaw``: lr* = a_lr N^alpha_lr D^beta_lr ; B*_tokens = a_b D^beta_b  (Step Law, 2025)
- ``full``:    lr* = a_lr N^alpha_lr D^beta_lr ; B*_tokens = a_b N^alpha_b D^beta_b
- ``compute``: lr* = a_lr C^gamma_lr ; B*_tokens = a_b C^gamma_b  (DeepSeek LLM, 2024), C in FLOPs

N is non-embedding parameters (count), D training tokens, C = 6 N D FLOPs unless given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hpscale.fitting.errors import InsufficientDataError, InvalidLawRecordError, NotFittedError
from hpscale.fitting.records import restore_fitted
from hpscale.fitting.optimum import GroupOptimum, group_optima, near_optimal_mask, smooth_optima
from hpscale.fitting.runs import RunSet, fit_range

HyperForm = Literal["steplaw", "full", "compute"]
FORMS: tuple[str, ...] = ("steplaw", "full", "compute")
METHODS: tuple[str, ...] = ("near_optimal", "smooth")
ON_EDGE: tuple[str, ...] = ("error", "warn")

# Names of the coefficients each form carries, in the order the log-space design matrix uses.
COEFFICIENTS: dict[str, tuple[str, ...]] = {
    "steplaw": ("a_lr", "alpha_lr", "beta_lr", "a_b", "beta_b"),
    "full": ("a_lr", "alpha_lr", "beta_lr", "a_b", "alpha_b", "beta_b"),
    "compute": ("a_lr", "gamma_lr", "a_b", "gamma_b"),
}


def compute_flops(n_params: float, tokens: float) -> float:
    """Training compute C = 6 N D, in FLOPs (N non-embedding parameters, D tokens)."""
    return 6.0 * n_params * tokens


@dataclass(frozen=True)
class HyperPrediction:
    """A recommended peak learning rate and batch size (tokens), with optional intervals.

    Intervals are (low, high) pairs at the law's confidence level (default 95%) or None
    when the law carries no uncertainty (published laws).
    """

    lr: float
    batch_tokens: float
    lr_interval: tuple[float, float] | None = None
    batch_tokens_interval: tuple[float, float] | None = None


def predict_from_coefficients(
    form: str, coef: dict[str, float], n_params: float, tokens: float, compute: float | None = None
) -> tuple[float, float]:
    """Evaluate a form's power laws: returns (lr*, B*_tokens). Units as in the module doc."""
    if form == "steplaw":
        lr = coef["a_lr"] * n_params ** coef["alpha_lr"] * tokens ** coef["beta_lr"]
        bt = coef["a_b"] * tokens ** coef["beta_b"]
    elif form == "full":
        lr = coef["a_lr"] * n_params ** coef["alpha_lr"] * tokens ** coef["beta_lr"]
        bt = coef["a_b"] * n_params ** coef["alpha_b"] * tokens ** coef["beta_b"]
    elif form == "compute":
        c = compute if compute is not None else compute_flops(n_params, tokens)
        lr = coef["a_lr"] * c ** coef["gamma_lr"]
        bt = coef["a_b"] * c ** coef["gamma_b"]
    else:
        raise InvalidLawRecordError(f"unknown hyperparameter law form {form!r}; expected one of {FORMS}")
    return float(lr), float(bt)


def _design(form: str, n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-space design matrices (lr equation, batch equation) of a form, columns in
    COEFFICIENTS order after the intercept."""
    ln, ld = np.log(n), np.log(d)
    one = np.ones_like(ln)
    if form == "steplaw":
        return np.column_stack([one, ln, ld]), np.column_stack([one, ld])
    if form == "full":
        x = np.column_stack([one, ln, ld])
        return x, x
    lc = np.log(6.0) + ln + ld
    x = np.column_stack([one, lc])
    return x, x


def _solve(form: str, n: np.ndarray, d: np.ndarray, lr: np.ndarray, bt: np.ndarray) -> np.ndarray | None:
    """OLS in log space; the coefficient vector in COEFFICIENTS order, or None when the
    design is rank-deficient (e.g. a bootstrap draw that picked a single model size)."""
    x_lr, x_b = _design(form, n, d)
    out = []
    for x, y in ((x_lr, np.log(lr)), (x_b, np.log(bt))):
        sol, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
        if rank < x.shape[1]:
            return None
        out.extend([float(np.exp(sol[0])), *map(float, sol[1:])])
    return np.array(out)


@dataclass
class HyperLaw:
    """lr*(N, D) and B*(N, D) as power laws (see the module doc for the forms).

    Parameters (stored by ``__init__``, scikit-learn style):
        form: "steplaw", "full" or "compute".
        eps: near-optimal band, relative to a group's best final loss (0.0025 = 0.25%).
        n_bootstrap: resamples for intervals (0: none); each resamples whole groups, then the
            runs within each drawn group, and redoes the whole procedure.
        seed: seed of the bootstrap generator (a fit is reproducible).
        method: "near_optimal" (Step Law: OLS on every near-optimal run of every group) or
            "smooth" (OLS on one smooth optimum per group).
        on_edge: "error" refuses groups whose best run touches the searched grid's edge,
            "warn" fits anyway and records the warning in ``warnings_``.
        level: confidence level of the reported intervals.

    Fitted attributes: ``coef_``, ``coef_samples_``, ``intervals_`` (coefficient -> [lo, hi]),
    ``fit_range_``, ``groups_`` (GroupOptimum list), ``runs_used_`` (names of the runs whose
    loss defined the optima), ``warnings_``.
    """

    form: str = "steplaw"
    eps: float = 0.0025
    n_bootstrap: int = 1000
    seed: int = 0
    method: str = "near_optimal"
    on_edge: str = "error"
    level: float = 0.95
    coef_: dict[str, float] | None = field(default=None, init=False)
    coef_samples_: list[dict[str, float]] | None = field(default=None, init=False)
    fit_range_: dict[str, list[float]] | None = field(default=None, init=False)
    intervals_: dict[str, list[float]] | None = field(default=None, init=False)
    groups_: list[GroupOptimum] | None = field(default=None, init=False)
    runs_used_: list[str] | None = field(default=None, init=False)
    warnings_: list[str] = field(default_factory=list, init=False)

    kind = "hyper"

    def fit(self, runs: RunSet) -> "HyperLaw":
        """Fit the form's power laws on a grid of runs (several (N, D) groups, each a grid
        over lr and batch_tokens). Returns self."""
        if self.form not in COEFFICIENTS:
            raise InvalidLawRecordError(f"unknown hyperparameter law form {self.form!r}; expected one of {FORMS}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.on_edge not in ON_EDGE:
            raise ValueError(f"on_edge must be one of {ON_EDGE}, got {self.on_edge!r}")
        # Seeds of one configuration are one point (their mean): near_optimal then indexes
        # configurations, each weighted once in the regression and drawn once in the bootstrap.
        runs = runs.average_repeats()
        groups = group_optima(runs, self.eps)
        usable = runs.usable
        if np.isnan(runs.batch_tokens[usable]).any():
            raise InsufficientDataError("every usable run needs batch_tokens to fit a batch-size law")
        self._check_groups(groups)
        warnings = [
            f"{g.describe()}: best run (lr={g.best_lr:.4g}, batch_tokens={g.best_batch_tokens:.4g}) is on the "
            f"grid edge {'/'.join(g.edges)}; the true optimum may lie outside the searched grid"
            for g in groups if g.at_edge
        ]
        if warnings and self.on_edge == "error":
            raise InsufficientDataError(
                "optimum at a grid edge, widen the sweep (or fit anyway: on_edge='warn', the CLI's --allow-edge): " + "; ".join(warnings)
            )
        per_group = [self._group_points(runs, g) for g in groups]
        point = _solve(self.form, *map(np.concatenate, zip(*per_group)))
        if point is None:
            raise InsufficientDataError(f"the groups do not span the variables form {self.form!r} needs")
        names = COEFFICIENTS[self.form]
        self.coef_ = dict(zip(names, map(float, point)))
        self.coef_samples_ = self._bootstrap(runs, groups) if self.n_bootstrap > 0 else None
        self.intervals_ = None
        if self.coef_samples_:
            arr = np.array([[s[k] for k in names] for s in self.coef_samples_])
            lo, hi = np.quantile(arr, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
            self.intervals_ = {k: [float(a), float(b)] for k, a, b in zip(names, lo, hi)}
        ok = runs.usable
        self.fit_range_ = fit_range(runs.n_params[ok], runs.tokens[ok])
        self.groups_ = groups
        self.runs_used_ = runs.run_names(ok)
        self.warnings_ = warnings
        return self

    def _check_groups(self, groups: list[GroupOptimum]) -> None:
        n_coef = 3 if self.form in ("steplaw", "full") else 2
        if len(groups) < n_coef + 1:
            raise InsufficientDataError(
                f"form {self.form!r} needs at least {n_coef + 1} (N, D) groups with finite losses; got {len(groups)}"
            )
        sizes = {g.n_params for g in groups}
        if self.form in ("steplaw", "full") and len(sizes) < 2:
            raise InsufficientDataError(
                f"form {self.form!r} fits lr* on N but every group has n_params={next(iter(sizes)):.4g}: "
                "train at least two model sizes, or use form='compute'"
            )
        if self.form in ("steplaw", "full") and len({g.tokens for g in groups}) < 2:
            raise InsufficientDataError(f"form {self.form!r} fits on D but every group has the same token count")

    def _group_points(self, runs: RunSet, g: GroupOptimum) -> tuple[np.ndarray, ...]:
        """(N, D, lr, batch) rows one group contributes to the regression."""
        if self.method == "smooth":
            return (np.array([g.n_params]), np.array([g.tokens]), np.array([g.lr]), np.array([g.batch_tokens]))
        i = g.near_optimal
        return runs.n_params[i], runs.tokens[i], runs.lr[i], runs.batch_tokens[i]

    def _bootstrap(self, runs: RunSet, groups: list[GroupOptimum]) -> list[dict[str, float]]:
        """Seeded resamples of whole groups, then of runs within each drawn group."""
        rng = np.random.default_rng(self.seed)
        ok = runs.usable
        gid, keys = runs.subset(ok).group_keys()
        idx_all = np.flatnonzero(ok)
        members = [idx_all[gid == g] for g in range(len(keys))]
        names = COEFFICIENTS[self.form]
        samples: list[dict[str, float]] = []
        attempts = 0
        # Draws are made in rounds of n_bootstrap; degenerate draws (one model size) are
        # redrawn, with a cap so that data that almost always degenerate fail loudly.
        while len(samples) < self.n_bootstrap and attempts < 5:
            attempts += 1
            k = self.n_bootstrap
            groups_drawn = rng.integers(0, len(members), (k, len(members)))
            picks = [members[g][rng.integers(0, members[g].size, (k, members[g].size))] for g in range(len(members))]
            if self.method == "smooth":
                # Every group's smooth optimum under each of the k run resamples, batched.
                opt = [smooth_optima(runs.lr[m], runs.batch_tokens[m], runs.final_loss[m], self.eps,
                                     np.searchsorted(m, p))[:2]
                       for m, p in zip(members, picks)]
            for i in range(k):
                cols: list[list[np.ndarray]] = [[], [], [], []]
                for j, g in enumerate(groups_drawn[i]):
                    # Position j of draw i takes run resample row (i + j) % k: a group drawn
                    # twice in one draw gets two independent resamples of its runs.
                    row = (i + j) % k
                    if self.method == "smooth":
                        rows = (runs.n_params[members[g][:1]], runs.tokens[members[g][:1]],
                                opt[g][0][row : row + 1], opt[g][1][row : row + 1])
                    else:
                        pick = picks[g][row]
                        sel = pick[near_optimal_mask(runs.final_loss[pick], self.eps)]
                        rows = (runs.n_params[sel], runs.tokens[sel], runs.lr[sel], runs.batch_tokens[sel])
                    for c, r in zip(cols, rows):
                        c.append(r)
                sol = _solve(self.form, *(np.concatenate(c) for c in cols))
                if sol is not None:
                    samples.append(dict(zip(names, map(float, sol))))
                if len(samples) == self.n_bootstrap:
                    break
        if len(samples) < self.n_bootstrap:
            raise InsufficientDataError(
                f"only {len(samples)} of {self.n_bootstrap} bootstrap resamples spanned the variables of "
                f"form {self.form!r}: too few groups for intervals"
            )
        return samples

    @classmethod
    def from_coefficients(cls, form: str, coef: dict[str, float]) -> "HyperLaw":
        """A law with fixed coefficients (a published law); no intervals."""
        if form not in COEFFICIENTS:
            raise InvalidLawRecordError(f"unknown hyperparameter law form {form!r}; expected one of {FORMS}")
        missing = set(COEFFICIENTS[form]) - set(coef)
        if missing:
            raise InvalidLawRecordError(f"form {form!r} needs coefficients {sorted(missing)}")
        law = cls(form=form)
        law.coef_ = {k: float(coef[k]) for k in COEFFICIENTS[form]}
        return law

    def _check_fitted(self) -> dict[str, float]:
        if self.coef_ is None:
            raise NotFittedError("this HyperLaw is not fitted: call fit() or build it from coefficients")
        return self.coef_

    def predict(
        self, n_params: float, tokens: float, compute: float | None = None, level: float | None = None
    ) -> HyperPrediction:
        """Recommended peak lr and batch (tokens) for N params and D tokens (or C FLOPs), with
        bootstrap percentile intervals at ``level`` (default: the law's) when the law has samples."""
        coef = self._check_fitted()
        level = self.level if level is None else level
        lr, bt = predict_from_coefficients(self.form, coef, n_params, tokens, compute)
        lr_iv = bt_iv = None
        if self.coef_samples_:
            lrs, bts = [], []
            for sample in self.coef_samples_:
                s_lr, s_bt = predict_from_coefficients(self.form, sample, n_params, tokens, compute)
                lrs.append(math.log(s_lr))
                bts.append(math.log(s_bt))
            lr_iv = _interval(lrs, level)
            bt_iv = _interval(bts, level)
        return HyperPrediction(lr=lr, batch_tokens=bt, lr_interval=lr_iv, batch_tokens_interval=bt_iv)

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe description of the law that ``law_from_record`` turns back into it."""
        coef = self._check_fitted()
        return {
            "kind": self.kind,
            "form": self.form,
            "coefficients": dict(coef),
            "intervals": self.intervals_,
            "coefficient_samples": self.coef_samples_,
            "fit_range": self.fit_range_,
            "warnings": list(self.warnings_),
            "runs_used": self.runs_used_,
            "settings": {
                "eps": self.eps, "n_bootstrap": self.n_bootstrap, "seed": self.seed,
                "method": self.method, "on_edge": self.on_edge, "level": self.level,
            },
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "HyperLaw":
        """Inverse of ``to_record``."""
        try:
            law = cls.from_coefficients(record["form"], record["coefficients"])
            settings = record.get("settings") or {}
            law.eps = float(settings.get("eps", law.eps))
            law.n_bootstrap = int(settings.get("n_bootstrap", law.n_bootstrap))
            law.seed = int(settings.get("seed", law.seed))
            law.method = str(settings.get("method", law.method))
            law.on_edge = str(settings.get("on_edge", law.on_edge))
            law.level = float(settings.get("level", law.level))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidLawRecordError(f"malformed hyperparameter law record: {exc}") from exc
        return restore_fitted(law, record)


def _interval(log_values: list[float], level: float) -> tuple[float, float]:
    """Percentile interval of log-space samples, returned in linear space."""
    xs = sorted(log_values)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    def q(p: float) -> float:
        pos = p * (len(xs) - 1)
        i = int(math.floor(pos))
        j = min(i + 1, len(xs) - 1)
        return xs[i] + (xs[j] - xs[i]) * (pos - i)
    return (math.exp(q(lo_q)), math.exp(q(hi_q)))
