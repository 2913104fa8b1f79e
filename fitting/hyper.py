"""Hyperparameter laws: the optimal peak learning rate and batch size as power laws.

Forms (all power laws, fitted by least squares in log space):

- ``steplaw``: lr* = a_lr N^alpha_lr D^beta_lr ; B*_tokens = a_b D^beta_b  (Step Law, 2025)
- ``full``:    lr* = a_lr N^alpha_lr D^beta_lr ; B*_tokens = a_b N^alpha_b D^beta_b
- ``compute``: lr* = a_lr C^gamma_lr ; B*_tokens = a_b C^gamma_b  (DeepSeek LLM, 2024), C in FLOPs

N is non-embedding parameters (count), D training tokens, C = 6 N D FLOPs unless given.

Methods (how the runs become the law):

- ``near_optimal`` (Step Law's procedure): OLS on every near-optimal configuration of every
  (N, D) group. The near-optimal band comes from the run-to-run noise (``fitting.noise``:
  configurations not distinguishable from the group's best), never narrower than ``eps``.
- ``smooth``: OLS on one smooth optimum per group (a quadratic surface's argmin).
- ``joint``: one model of the loss over every run near its group's basin (``fitting.joint``).

Any method can take a published law as a prior on its exponents (``fitting.priors``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hpscale.fitting import joint as joint_fit
from hpscale.fitting.errors import EdgeOptimumError, InsufficientDataError, InvalidLawRecordError, NotFittedError
from hpscale.fitting.forms import HYPER_FORMS, HYPER_METHODS
from hpscale.fitting.noise import NO_NOISE, NoiseEstimate, estimate_noise, near_optimal_band
from hpscale.fitting.optimum import (
    EDGE_NOTE, GroupOptimum, describe_edges, distinct_values, group_optima, near_optimal_mask, seed_counts,
    smooth_optima,
)
from hpscale.fitting.priors import Combiner, Prior, combiner, prior_for
from hpscale.fitting.records import percentile_interval, restore_fitted
from hpscale.fitting.runs import RunSet, fit_range
from hpscale.fitting.sanity import design_notes

HyperForm = Literal["steplaw", "full", "compute"]
FORMS = HYPER_FORMS  # names in fitting.forms (no numpy there: the CLI's help lists them)
METHODS = HYPER_METHODS
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
    """Evaluate a form's power laws: returns (lr*, B*_tokens). Units as in the module doc.

    Evaluated in log space: a law with absurd coefficients gives inf or 0 (which the callers
    refuse to recommend), never an OverflowError."""
    if form in ("steplaw", "full"):
        ln, ld = math.log(n_params), math.log(tokens)
        log_lr = coef["alpha_lr"] * ln + coef["beta_lr"] * ld
        log_bt = coef["beta_b"] * ld if form == "steplaw" else coef["alpha_b"] * ln + coef["beta_b"] * ld
    elif form == "compute":
        lc = math.log(compute if compute is not None else compute_flops(n_params, tokens))
        log_lr, log_bt = coef["gamma_lr"] * lc, coef["gamma_b"] * lc
    else:
        raise InvalidLawRecordError(f"unknown hyperparameter law form {form!r}; expected one of {FORMS}")
    return _scaled(coef["a_lr"], log_lr), _scaled(coef["a_b"], log_bt)


def _scaled(a: float, log_x: float) -> float:
    """a * exp(log_x) without overflow errors: inf beyond double precision, nan for a bad a."""
    if not (math.isfinite(a) and a > 0 and math.isfinite(log_x)):
        return math.nan if not (a > 0) else (math.inf if log_x > 0 else 0.0)
    total = math.log(a) + log_x
    return math.inf if total > 709.0 else math.exp(total)


def _design(form: str, n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-space design matrices (lr equation, batch equation) of a form, columns in
    COEFFICIENTS order after the intercept."""
    ln, ld = np.log(n), np.log(d)
    one = np.ones_like(ln)
    if form == "steplaw":
        return np.column_stack([one, ln, ld]), np.column_stack([one, ld])
    # Two arrays, never one twice: callers centre each equation's design in place.
    if form == "full":
        x = np.column_stack([one, ln, ld])
        return x, x.copy()
    lc = np.log(6.0) + ln + ld
    x = np.column_stack([one, lc])
    return x, x.copy()


def _span_message(form: str, n: np.ndarray, d: np.ndarray) -> str:
    """Why the groups' (N, D) cannot determine ``form``, in words a user can act on."""
    sizes, budgets = np.unique(n).size, np.unique(d).size
    text = f"the groups do not span the variables form {form!r} needs ({sizes} model sizes, {budgets} token counts"
    if form != "compute" and sizes > 1 and budgets > 1:
        # Both vary, yet the design is singular: D is a power of N (one tokens-per-parameter rule).
        return (text + "; every group lies on one line D = c N^k, so N's effect and D's cannot be told apart): "
                "fit --form compute, or add groups at a second token budget")
    return text + ")"


def _solve(form: str, n: np.ndarray, d: np.ndarray, lr: np.ndarray, bt: np.ndarray) -> np.ndarray | None:
    """OLS in log space; the log-space coefficient vector (each equation's intercept as a log)
    in COEFFICIENTS order, or None when the design is rank-deficient (e.g. a bootstrap draw
    that picked a single model size)."""
    x_lr, x_b = _design(form, n, d)
    out = []
    for x, y in ((x_lr, np.log(lr)), (x_b, np.log(bt))):
        sol, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
        if rank < x.shape[1]:
            return None
        out.extend(map(float, sol))
    return np.array(out)


def grid_design(runs: RunSet) -> dict[str, int]:
    """How many (N, D) groups were searched over more than one learning rate, and over more than
    one batch size (finite runs; values within ``optimum.LOG_TOL`` in log count as one, as on the
    grid's edges). A group trained at one lr among several runs says nothing about where lr*
    lies: its "optimum" is whatever was run. A
    group of a single configuration is a given optimum (published optima, imported as one run
    each): it counts for both, and ``given_optima`` says how many there are."""
    gid, keys = runs.group_keys()
    ok = runs.usable

    def choices(values: np.ndarray) -> int:
        finite = values[np.isfinite(values) & (values > 0)]
        return int(distinct_values(finite).size) if finite.size else 0

    lr = batch = given = 0
    live = [keys[g] for g in range(len(keys)) if ((gid == g) & ok).any()]  # groups not all diverged
    for g in range(len(keys)):
        n_lr, n_b = choices(runs.lr[(gid == g) & ok]), choices(runs.batch_tokens[(gid == g) & ok])
        one = int(((gid == g) & ok).sum()) == 1
        given += one
        lr += one or n_lr >= 2
        batch += one or n_b >= 2
    return {"groups": len(keys), "groups_with_lr_choice": int(lr), "groups_with_batch_choice": int(batch),
            "given_optima": int(given), "sizes": len({n for n, _ in live}), "token_counts": len({d for _, d in live})}


def _split(form: str) -> int:
    """How many of the form's coefficients belong to the lr equation."""
    return 3 if form in ("steplaw", "full") else 2


def _to_coef(form: str, vec: np.ndarray) -> dict[str, float]:
    """Log-space coefficient vector -> the law's coefficients (intercepts exponentiated)."""
    names = COEFFICIENTS[form]
    k = _split(form)
    out = dict(zip(names, map(float, vec)))
    # A bootstrap refit on data that do not determine an exponent can put an intercept beyond
    # exp's range: inf is the honest coefficient there (the sanity checks fail such a fit).
    with np.errstate(over="ignore"):
        out[names[0]] = float(np.exp(vec[0]))
        out[names[k]] = float(np.exp(vec[k]))
    return out


def _to_vec(form: str, coef: dict[str, float]) -> np.ndarray:
    """Inverse of _to_coef."""
    names = COEFFICIENTS[form]
    k = _split(form)
    vec = np.array([coef[n] for n in names], float)
    vec[0], vec[k] = np.log(vec[0]), np.log(vec[k])
    return vec


@dataclass
class HyperLaw:
    """lr*(N, D) and B*(N, D) as power laws (see the module doc for the forms and methods).

    Parameters (stored by ``__init__``, scikit-learn style):
        form: "steplaw", "full" or "compute".
        eps: the narrowest near-optimal band, relative to a group's best final loss (0.0025 =
            0.25%, Step Law's); with ``noise_band`` the band widens to what the measured
            run-to-run noise cannot resolve.
        n_bootstrap: resamples for intervals (0: none); each resamples whole groups, then the
            runs within each drawn group, and redoes the whole procedure.
        seed: seed of the bootstrap generator (a fit is reproducible).
        method: "near_optimal", "smooth" or "joint" (see the module doc).
        on_edge: "error" refuses groups whose best run touches the searched grid's edge,
            "warn" fits anyway and records the warning in ``warnings_``.
        level: confidence level of the reported intervals.
        noise_band: estimate the run-to-run noise and widen the near-optimal band by it.
        prior: None, "steplaw" or "deepseek": a published law's exponents as a Gaussian prior
            of standard deviation ``prior_width`` on each exponent (``fitting.priors``).
        band: the joint method's window: runs within this much log loss of their group's best
            (plus twice the noise) inform the basin model.

    Fitted attributes: ``coef_``, ``coef_samples_``, ``intervals_`` (coefficient -> [lo, hi]),
    ``fit_range_``, ``groups_`` (GroupOptimum list), ``runs_used_`` (names of the runs whose
    loss informed the law), ``warnings_``, ``noise_`` (NoiseEstimate), ``band_`` (the
    near-optimal band of a single-seed configuration against a single-seed best),
    ``prior_`` (the prior, the data-only coefficients and how far the prior moved each
    exponent; None without a prior), ``landscape_`` (joint: the basin's shape).
    """

    form: str = "steplaw"
    eps: float = 0.0025
    n_bootstrap: int = 1000
    seed: int = 0
    method: str = "near_optimal"
    on_edge: str = "error"
    level: float = 0.95
    noise_band: bool = True
    prior: str | None = None
    prior_width: float = 0.1
    band: float = joint_fit.DEFAULT_BAND
    coef_: dict[str, float] | None = field(default=None, init=False)
    coef_samples_: list[dict[str, float]] | None = field(default=None, init=False)
    fit_range_: dict[str, list[float]] | None = field(default=None, init=False)
    intervals_: dict[str, list[float]] | None = field(default=None, init=False)
    groups_: list[GroupOptimum] | None = field(default=None, init=False)
    runs_used_: list[str] | None = field(default=None, init=False)
    warnings_: list[str] = field(default_factory=list, init=False)
    noise_: NoiseEstimate | None = field(default=None, init=False)
    band_: float | None = field(default=None, init=False)
    prior_: dict[str, Any] | None = field(default=None, init=False)
    landscape_: dict[str, float] | None = field(default=None, init=False)
    design_: dict[str, int] | None = field(default=None, init=False)

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
        prior = prior_for(self.prior, self.form, self.prior_width)
        # The noise is measured on the runs themselves (seeds of one configuration are its
        # repeats); everything after works on configurations: seeds of one are one point (their
        # mean), weighted once in the regressions and drawn once in the bootstrap.
        noise = estimate_noise(runs.require_usable()) if self.noise_band else NO_NOISE
        raw = runs
        runs = runs.average_repeats()
        groups = group_optima(runs, self.eps, noise)
        usable = runs.usable
        if np.isnan(runs.batch_tokens[usable]).any():
            raise InsufficientDataError("every usable run needs batch_tokens to fit a batch-size law")
        self._check_groups(groups)
        warnings = [
            f"{g.describe()}: the best run (lr {g.best_lr:.4g}, batch {g.best_batch_tokens:.4g} tokens) is "
            f"{describe_edges(g.edges)}; {EDGE_NOTE}"
            for g in groups if g.at_edge
        ]
        if warnings and self.on_edge == "error":
            raise EdgeOptimumError(
                f"in {len(warnings)} of {len(groups)} groups the best run lies on the edge of the searched grid: "
                + "; ".join(warnings)
            )
        self.noise_, self.groups_ = noise, groups
        self.design_ = grid_design(runs)
        self.band_ = float(near_optimal_band(noise, self.eps, 1, 1))
        self.landscape_ = None
        if self.method == "joint":
            data, in_band = self._joint_data(raw, noise)
            point, landscape = self._joint_point(data, groups, noise)
            self.landscape_ = landscape
            used = raw.subset(raw.usable).names
            used = [used[i] for i in np.flatnonzero(in_band)]
        else:
            pts = [np.concatenate(a) for a in zip(*[self._group_points(runs, g) for g in groups])]
            point = _solve(self.form, *pts)
            if point is None:
                raise InsufficientDataError(_span_message(self.form, pts[0], pts[1]))
            used = runs.run_names(usable)
        combine = self._combiners(prior, groups, runs, point) if prior is not None else None
        posterior = self._posterior(combine, point) if combine else point
        self.coef_ = _to_coef(self.form, posterior)
        self.prior_ = None
        if prior is not None:
            data_coef = _to_coef(self.form, point)
            self.prior_ = {**prior.to_record(), "data_coefficients": data_coef,
                           "shift": {k: self.coef_[k] - data_coef[k] for k in prior.centres}}
        self.coef_samples_ = None
        if self.n_bootstrap > 0:
            vectors = (self._bootstrap_joint(raw, data, point, noise) if self.method == "joint"
                       else self._bootstrap(runs, groups, noise))
            if combine:
                rng = np.random.default_rng([self.seed, 1])
                vectors = [self._posterior(combine, v, rng) for v in vectors]
            self.coef_samples_ = [_to_coef(self.form, v) for v in vectors]
        self.intervals_ = None
        if self.coef_samples_:
            names = COEFFICIENTS[self.form]
            arr = np.array([[smp[k] for k in names] for smp in self.coef_samples_])
            lo, hi = percentile_interval(arr, self.level)  # an inf intercept: the sanity checks fail the law
            self.intervals_ = {k: [float(a), float(b)] for k, a, b in zip(names, lo, hi)}
        self.fit_range_ = fit_range(runs.n_params[usable], runs.tokens[usable])
        self.runs_used_ = used
        self.warnings_ = warnings + design_notes({"kind": "hyper", "form": self.form, "coefficients": self.coef_,
                                                  "design": self.design_})[1]
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
                "train at least two model sizes (the compute form fits on C = 6ND, but with one size it only says "
                "how lr* moves with D at that size)"
            )
        if self.form in ("steplaw", "full") and len({g.tokens for g in groups}) < 2:
            raise InsufficientDataError(f"form {self.form!r} fits on D but every group has the same token count")

    def _group_points(self, runs: RunSet, g: GroupOptimum) -> tuple[np.ndarray, ...]:
        """(N, D, lr, batch) rows one group contributes to the regression."""
        if self.method == "smooth":
            return (np.array([g.n_params]), np.array([g.tokens]), np.array([g.lr]), np.array([g.batch_tokens]))
        i = g.near_optimal
        return runs.n_params[i], runs.tokens[i], runs.lr[i], runs.batch_tokens[i]

    # -- priors ---------------------------------------------------------------------------------
    def _combiners(self, prior: Prior, groups: list[GroupOptimum], runs: RunSet,
                   point: np.ndarray) -> tuple[Combiner, Combiner]:
        """The posterior maps of the lr and batch equations (see ``fitting.priors``); the data's
        precision is that of the groups' own optima around the law."""
        n = np.array([g.n_params for g in groups])
        d = np.array([g.tokens for g in groups])
        if self.method == "near_optimal":
            # The group's own point is the mean of the rows it gave the regression.
            lr = np.array([np.exp(np.mean(np.log(runs.lr[g.near_optimal]))) for g in groups])
            bt = np.array([np.exp(np.mean(np.log(runs.batch_tokens[g.near_optimal]))) for g in groups])
        else:
            lr = np.array([g.lr for g in groups])
            bt = np.array([g.batch_tokens if np.isfinite(g.batch_tokens) else g.best_batch_tokens for g in groups])
        x_lr, x_b = _design(self.form, n, d)
        k = _split(self.form)
        names = COEFFICIENTS[self.form]
        return (combiner(prior, names[:k], x_lr, np.log(lr), point[:k]),
                combiner(prior, names[k:], x_b, np.log(bt), point[k:]))

    def _posterior(self, combine: tuple[Combiner, Combiner], vec: np.ndarray,
                   rng: np.random.Generator | None = None) -> np.ndarray:
        """A data-only log-space coefficient vector combined with the prior; with ``rng``, with a
        draw of the prior's centre (a bootstrap sample of the posterior)."""
        k = _split(self.form)
        parts = []
        for comb, beta in zip(combine, (vec[:k], vec[k:])):
            centre = comb.centre
            if rng is not None:
                has = np.diag(comb.prior_precision) > 0
                centre = centre + np.where(has, rng.standard_normal(centre.size) * self.prior_width, 0.0)
            parts.append(comb.apply(beta, centre))
        return np.concatenate(parts)

    # -- joint --------------------------------------------------------------------------------------
    def _joint_data(self, raw: RunSet, noise: NoiseEstimate) -> tuple[joint_fit.JointData, np.ndarray]:
        """The runs (every seed) near their group's best, as the joint model's arrays, and
        which of the usable runs they are."""
        usable = raw.require_usable()
        if np.isnan(usable.batch_tokens).any() or np.isnan(usable.lr).any():
            raise InsufficientDataError("the joint fit needs the lr and batch of every usable run")
        gid, _ = usable.group_keys()
        log_loss = np.log(usable.final_loss)
        window = joint_fit.window(self.band, noise.rel_std)
        keep = joint_fit.select(log_loss, gid, window)
        n, d = usable.n_params[keep], usable.tokens[keep]
        x_lr, x_b = _design(self.form, n, d)
        # Centre the design (better conditioned); _joint_point converts back.
        self._centre = (x_lr[:, 1:].mean(axis=0), x_b[:, 1:].mean(axis=0))
        x_lr[:, 1:] -= self._centre[0]
        x_b[:, 1:] -= self._centre[1]
        groups, group = np.unique(gid[keep], return_inverse=True)
        data = joint_fit.JointData(x_lr=x_lr, x_b=x_b, log_lr=np.log(usable.lr[keep]),
                                   log_b=np.log(usable.batch_tokens[keep]), log_loss=log_loss[keep],
                                   group=group, n_groups=groups.size)
        joint_fit.check(data)
        self._joint_scale = max(noise.rel_std or 0.0, 1e-4)
        return data, keep

    def _uncentre(self, theta: np.ndarray) -> np.ndarray:
        """The law's log-space coefficient vector from joint parameters on the centred design."""
        p_lr = 1 + self._centre[0].size
        c_lr, c_b = theta[:p_lr].copy(), theta[p_lr : p_lr + 1 + self._centre[1].size].copy()
        c_lr[0] -= c_lr[1:] @ self._centre[0]
        c_b[0] -= c_b[1:] @ self._centre[1]
        return np.concatenate([c_lr, c_b])

    def _joint_point(self, data: joint_fit.JointData, groups: list[GroupOptimum],
                     noise: NoiseEstimate) -> tuple[np.ndarray, dict[str, float]]:
        """The joint model's fit, started from the smooth optima's law and a small shape grid."""
        n, d = np.array([g.n_params for g in groups]), np.array([g.tokens for g in groups])
        start = _solve(self.form, n, d, np.array([g.lr for g in groups]),
                       np.array([g.batch_tokens if np.isfinite(g.batch_tokens) else g.best_batch_tokens for g in groups]))
        if start is None:
            raise InsufficientDataError(_span_message(self.form, n, d))
        k = _split(self.form)
        law_lr, law_b = start[:k].copy(), start[k:].copy()
        law_lr[0] += law_lr[1:] @ self._centre[0]
        law_b[0] += law_b[1:] @ self._centre[1]
        starts = joint_fit.starts(data, law_lr, law_b)
        weights = np.ones((starts.shape[0], data.log_loss.size))
        theta, cost = joint_fit.solve(starts, data, weights, self._joint_scale)
        best = theta[int(np.nanargmin(np.where(np.isfinite(cost), cost, np.inf)))]
        self._joint_theta = best
        q = data.n_law
        shape = dict(zip(joint_fit.SHAPE, [float(best[q]), *map(float, np.exp(best[q + 1 : q + 5]))]))
        return self._uncentre(best), {**shape, "runs_in_band": int(data.log_loss.size),
                                      "window": joint_fit.window(self.band, noise.rel_std)}

    def _bootstrap_joint(self, raw: RunSet, data: joint_fit.JointData, point: np.ndarray,
                         noise: NoiseEstimate) -> list[np.ndarray]:
        """Resample groups, then runs (seeds) within each drawn group, as weights on the runs, and
        refit the joint model from the full fit (batched)."""
        rng = np.random.default_rng(self.seed)
        g = data.n_groups
        grp_n, grp_d = self._group_nd(data)
        out: list[np.ndarray] = []
        attempts = 0
        while len(out) < self.n_bootstrap and attempts < 5:
            attempts += 1
            weights, counts = joint_fit.bootstrap_weights(data.group, g, self.n_bootstrap - len(out), rng)
            ok = np.array([self._spans(grp_n[c > 0], grp_d[c > 0]) for c in counts])
            for lo in range(0, int(ok.sum()), 250):
                rows = np.flatnonzero(ok)[lo : lo + 250]
                # Started at the full fit's optimum, a resample's optimum is near: a looser
                # tolerance than the full fit's is far below the spread of the samples.
                theta, cost = joint_fit.solve(self._joint_theta, data, weights[rows], self._joint_scale, tol=1e-7)
                out.extend(self._uncentre(t) for t, c in zip(theta, cost) if np.isfinite(c))
        if len(out) < self.n_bootstrap:
            raise InsufficientDataError(
                f"only {len(out)} of {self.n_bootstrap} bootstrap resamples spanned the variables of "
                f"form {self.form!r}: too few groups for intervals")
        return out[: self.n_bootstrap]

    def _group_nd(self, data: joint_fit.JointData) -> tuple[np.ndarray, np.ndarray]:
        """Each joint group's log N and log D (or log C twice for the compute form)."""
        first = np.array([np.flatnonzero(data.group == i)[0] for i in range(data.n_groups)])
        x = data.x_lr[first, 1:] + self._centre[0]
        if self.form == "compute":
            return x[:, 0], x[:, 0]
        return x[:, 0], x[:, 1]

    def _spans(self, log_n: np.ndarray, log_d: np.ndarray) -> bool:
        """Whether drawn groups can identify the form: two sizes and two budgets (or computes)."""
        if self.form == "compute":
            return np.unique(np.round(log_n, 6)).size >= 2
        design = np.column_stack([np.ones_like(log_n), log_n, log_d])
        return np.linalg.matrix_rank(design) == 3

    # -- bootstrap of the two-step methods ----------------------------------------------------------
    def _bootstrap(self, runs: RunSet, groups: list[GroupOptimum], noise: NoiseEstimate) -> list[np.ndarray]:
        """Seeded resamples of whole groups, then of configurations within each drawn group;
        each redoes the group optima (with the fit's noise band) and the regression."""
        rng = np.random.default_rng(self.seed)
        ok = runs.usable
        gid, keys = runs.subset(ok).group_keys()
        idx_all = np.flatnonzero(ok)
        members = [idx_all[gid == g] for g in range(len(keys))]
        seeds = seed_counts(runs)
        samples: list[np.ndarray] = []
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
                        sel = pick[near_optimal_mask(runs.final_loss[pick], self.eps, noise, seeds[pick])]
                        rows = (runs.n_params[sel], runs.tokens[sel], runs.lr[sel], runs.batch_tokens[sel])
                    for c, r in zip(cols, rows):
                        c.append(r)
                sol = _solve(self.form, *(np.concatenate(c) for c in cols))
                if sol is not None:
                    samples.append(sol)
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
        bootstrap percentile intervals at ``level`` (default: the law's) when the law has samples.
        A law with absurd coefficients can answer inf, 0 or nan: callers check before showing."""
        coef = self._check_fitted()
        level = self.level if level is None else level
        lr, bt = predict_from_coefficients(self.form, coef, n_params, tokens, compute)
        lr_iv = bt_iv = None
        if self.coef_samples_:
            lrs, bts = [], []
            for sample in self.coef_samples_:
                s_lr, s_bt = predict_from_coefficients(self.form, sample, n_params, tokens, compute)
                lrs.append(_log(s_lr))
                bts.append(_log(s_bt))
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
            "noise": self.noise_.to_record() if self.noise_ is not None else None,
            "near_optimal_band": self.band_,
            "prior": self.prior_,
            "landscape": self.landscape_,
            "design": self.design_,
            "settings": {
                "eps": self.eps, "n_bootstrap": self.n_bootstrap, "seed": self.seed,
                "method": self.method, "on_edge": self.on_edge, "level": self.level,
                "noise_band": self.noise_band, "prior": self.prior, "prior_width": self.prior_width,
                "band": self.band,
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
            # Laws stored before noise bands and priors existed used the fixed band, no prior.
            law.noise_band = bool(settings.get("noise_band", False))
            law.prior = settings.get("prior")
            law.prior_width = float(settings.get("prior_width", law.prior_width))
            law.band = float(settings.get("band", law.band))
            law.design_ = record.get("design") if isinstance(record.get("design"), dict) else None
            law.noise_ = NoiseEstimate.from_record(record.get("noise"))
            band = record.get("near_optimal_band")
            law.band_ = None if band is None else float(band)
            law.prior_ = record.get("prior")
            law.landscape_ = record.get("landscape")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidLawRecordError(f"malformed hyperparameter law record: {exc}") from exc
        return restore_fitted(law, record)


def _log(x: float) -> float:
    """log of a prediction; non-positive or nan values (an absurd sample) become nan."""
    return math.log(x) if x > 0 else math.nan


def _interval(log_values: list[float], level: float) -> tuple[float, float]:
    """Percentile interval of log-space samples, returned in linear space (nan samples, from
    absurd coefficient draws, count as infinitely far: the interval says so with inf or 0)."""
    xs = sorted(math.inf if math.isnan(v) else v for v in log_values)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    def q(p: float) -> float:
        pos = p * (len(xs) - 1)
        i = int(math.floor(pos))
        j = min(i + 1, len(xs) - 1)
        if not (math.isfinite(xs[i]) and math.isfinite(xs[j])):  # inf - inf would be nan: no interpolation
            return xs[j] if pos > i else xs[i]
        return xs[i] + (xs[j] - xs[i]) * (pos - i)
    def exp(v: float) -> float:
        return math.inf if v > 709.0 else (0.0 if v == -math.inf or math.isnan(v) else math.exp(v))
    return (exp(q(lo_q)), exp(q(hi_q)))
