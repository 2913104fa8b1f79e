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

Cost. S1 and S2 are running sums (S2 a first-order filter): linear in the steps. LD is a sum
over every earlier lr drop at every evaluated step, quadratic if done term by term; here
(1 + C x)^-beta is written as a sum of a few dozen exponentials (``_Kernel``, relative error
< 1e-7), which turns LD into as many first-order recurrences over the evaluated steps
(``_annealing``). Time is O((drops + evaluations) x exponentials), memory O(steps) plus fixed
work chunks: a 1,000,000-step schedule predicted at every step takes seconds and a few
hundred MB (benchmarks/trajectory_scale.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import least_squares, minimize, nnls
from scipy.sparse import csr_matrix
from scipy.signal import lfilter
from scipy.special import digamma, gammaln

from hpscale.fitting.errors import FittingError, InsufficientDataError, InvalidLawRecordError, NotFittedError
from hpscale.fitting.schedules import infer_warmup


@dataclass(frozen=True)
class LossCurve:
    """One training run's loss curve with the lr of every step.

    ``lr[i]`` is the lr of step i + 1 (see fitting.schedules); ``steps`` are the (1-indexed)
    steps at which ``loss`` (nats/token) was measured; ``warmup_steps`` None means inferred
    from ``lr`` (the steps before it first peaks). ``lr_interpolated``: ``lr`` was rebuilt by
    interpolating the lr logged at a few steps, not from the schedule that ran; a law fitted
    on such a curve says so in its warnings.
    """

    name: str
    lr: np.ndarray
    steps: np.ndarray
    loss: np.ndarray
    warmup_steps: int | None = None
    lr_interpolated: bool = False

    def warmup(self) -> int:
        return infer_warmup(self.lr) if self.warmup_steps is None else int(self.warmup_steps)


@dataclass(frozen=True)
class _Prepared:
    """What the laws need of one schedule at its evaluation steps (post-warmup quantities)."""

    area: np.ndarray  # S1(t) + S_W at each evaluated step
    post_lr: np.ndarray  # eta_1 .. eta_T
    delta: np.ndarray  # eta_{k-1} - eta_k, k = 1 .. T (eta_0 = the warmup's peak)
    t: np.ndarray  # post-warmup step index of each evaluation
    cum: np.ndarray  # S1 after k post-warmup steps, k = 0 .. T
    peak: float  # the schedule's largest lr


def _prepare(lr: np.ndarray, steps: np.ndarray, warmup: int) -> _Prepared:
    lr = np.asarray(lr, dtype=float)
    steps = np.asarray(steps, dtype=int)
    if lr.ndim != 1 or lr.size == 0 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
        raise FittingError("the lr schedule must be a non-empty 1-D array of finite values >= 0")
    if lr.max() <= 0:
        raise FittingError("the lr schedule is 0 at every step: the laws describe training with a learning rate > 0")
    if steps.size == 0 or steps.max() > lr.size:
        raise FittingError(f"evaluation steps must lie within the schedule's {lr.size} steps")
    if steps.min() < warmup:
        raise FittingError(f"trajectory laws model the curve after warmup (step {warmup}); got step {steps.min()}")
    post = lr[warmup:]
    eta0 = lr[warmup - 1] if warmup > 0 else lr[0]
    cum = np.concatenate([[0.0], np.cumsum(post)])
    t = steps - warmup
    delta = np.empty_like(post)
    if post.size:
        delta[0] = eta0 - post[0]
        np.subtract(post[:-1], post[1:], out=delta[1:])
    return _Prepared(area=cum[t] + lr[:warmup].sum(), post_lr=post, delta=delta, t=t, cum=cum, peak=float(lr.max()))


# Learning rates at or below this fraction of the schedule's peak count as zero in the LD sum:
# a drop to zero saturates at once (G = 1 as soon as any lr follows it), as eta^-gamma -> inf.
_ZERO_LR = 1e-12


@dataclass(frozen=True)
class _Bins:
    """The multi-power law's lr drops, merged into bins, against the sorted distinct evaluations.

    Consecutive drops are merged into bins of at most ``width`` steps that never straddle an
    evaluation step; a bin's drop acts at its drop-weighted mean step (width 16 changes
    predictions by < 1e-6 relative on the MPL curves; width 1 is the exact sum). A bin enters
    the sum at every evaluation from ``seg`` on (the first evaluation at or after its last drop).
    """

    te: np.ndarray  # distinct post-warmup evaluation steps, sorted
    inverse: np.ndarray  # p.t == te[inverse]
    s_eval: np.ndarray  # S1 at each distinct evaluation
    delta: np.ndarray  # (bins,) summed drop of each bin
    eta: np.ndarray  # (bins,) lr at the bin's representative step
    u: np.ndarray  # (bins,) S1 before that step
    seg: np.ndarray  # (bins,) index into te of the first evaluation the bin enters
    zero: np.ndarray  # (bins,) bool: a drop to a zero lr (see _ZERO_LR)


def _bins(p: _Prepared, width: int) -> _Bins:
    te, inverse = np.unique(p.t, return_inverse=True)
    k = np.flatnonzero(p.delta != 0) + 1  # 1-indexed steps whose lr differs from the previous
    k = k[k <= te[-1]]  # drops after the last evaluation never count
    first = np.searchsorted(te, k, side="left")  # the first evaluation at or after each drop
    zero_k = p.post_lr[k - 1] <= _ZERO_LR * p.peak
    d = p.delta[k - 1]
    # A bin starts at a new block of ``width`` steps, after an evaluation, and where the drops
    # change sign (rises merged with falls cancel their sums and amplify the error). Steep drops
    # (more than 1% of the lr over a bin's width) stay alone, since a bin takes one lr for all
    # of its drops; so do drops to zero, whose G is a step function, summed exactly (_annealing).
    alone = zero_k | (np.abs(d) * width > 0.01 * p.post_lr[k - 1])
    starts = np.ones(k.size, bool)
    if k.size > 1:
        starts[1:] = (((k[1:] - 1) // width != (k[:-1] - 1) // width) | (first[1:] != first[:-1])
                      | ((d[1:] > 0) != (d[:-1] > 0)) | alone[1:] | alone[:-1])
    inv = np.cumsum(starts) - 1
    start = np.flatnonzero(starts)
    w, n = np.abs(d), start.size
    delta = np.bincount(inv, weights=d, minlength=n)
    rep = np.rint(np.bincount(inv, weights=w * k, minlength=n) / np.bincount(inv, weights=w, minlength=n)).astype(int)
    return _Bins(te=te, inverse=inverse, s_eval=p.cum[te], delta=delta, eta=p.post_lr[rep - 1],
                 u=p.cum[rep - 1], seg=first[start], zero=zero_k[start])


def _scan(a: np.ndarray, b: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """x_j = a_j x_{j-1} + b_j along axis 0, x_{-1} = x0 (``a`` broadcasts against ``b``).

    The J steps are cut into about sqrt(J) rows that run side by side from zero; then each row
    gets what the rows before it hand on: 2 sqrt(J) vector operations instead of J. With
    0 <= a <= 1 every step only shrinks what it carries, so the scan is stable."""
    n = b.shape[0]
    if n <= 64:
        out = np.empty_like(b)
        x = x0
        for j in range(n):
            x = a[j] * x + b[j]
            out[j] = x
        return out
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    pad = rows * cols - n

    def columns(v: np.ndarray, fill: float) -> np.ndarray:  # (cols, rows, ...), contiguous
        v = np.concatenate([v, np.full((pad,) + v.shape[1:], fill)])
        return np.ascontiguousarray(v.reshape((rows, cols) + v.shape[1:]).swapaxes(0, 1))

    a_c, y = columns(a, 1.0), columns(b, 0.0)
    prod = np.empty_like(a_c)
    prod[0] = a_c[0]
    for c in range(1, cols):  # every row on its own, from zero
        y[c] += a_c[c] * y[c - 1]
        np.multiply(a_c[c], prod[c - 1], out=prod[c])
    carry = np.empty((rows,) + y.shape[2:])
    x = x0
    for r in range(rows):  # what each row inherits from the rows before it
        carry[r] = x
        x = y[-1, r] + prod[-1, r] * x
    y += prod * carry
    return y.swapaxes(0, 1).reshape((rows * cols,) + b.shape[1:])[:n]


@dataclass(frozen=True)
class _Kernel:
    """r^-p on (0, inf) as a sum of exponentials, for every r in [r_lo, r_hi]:

        Gamma(p) r^-p = int exp(p s - e^s r) ds  ~=  h sum_m exp(p s_m - e^{s_m} r)

    (the trapezoid rule on the lattice s_m = m h, exponentially accurate for this analytic
    integrand: relative error < 1e-7 for p <= 6 with the steps below). Lattice points below
    s_0 (where e^{s_m} r < 1e-3) are summed in closed form with exp(-x) ~ 1 - x, leaving
    ``t0 - t1 r``; points with e^{s_m} r_lo > 50 are negligible.
    """

    tau: np.ndarray  # e^{s_m}, the decay rates
    s: np.ndarray  # s_m
    h: float
    s0: float

    @classmethod
    def cover(cls, r_lo: float, r_hi: float, p_max: float) -> "_Kernel":
        h = 0.45 / max(1.0, p_max / 1.5) ** 0.45
        m_lo = int(np.floor(np.log(1e-3 / r_hi) / h))
        m_hi = int(np.ceil(np.log(50.0 / r_lo) / h))
        s = np.arange(m_lo + 1, m_hi + 1) * h
        return cls(tau=np.exp(s), s=s, h=h, s0=m_lo * h)

    def weights(self, p: float, log_derivative: bool = False) -> tuple[np.ndarray, float, float]:
        """(w, t0, t1) with r^-p ~= sum_m w_m e^{-tau_m r} + t0 - t1 r; with ``log_derivative``,
        the same for ln(r) r^-p = -d/dp r^-p."""
        h, s0 = self.h, self.s0
        lg = gammaln(p)
        w = h * np.exp(p * self.s - lg)
        t0 = h * np.exp(p * s0 - lg) / -np.expm1(-p * h)
        t1 = h * np.exp((p + 1) * s0 - lg) / -np.expm1(-(p + 1) * h)
        if not log_derivative:
            return w, t0, t1
        psi = digamma(p)
        return (-(self.s - psi) * w,
                -t0 * (s0 - h / np.expm1(p * h) - psi),
                -t1 * (s0 - h / np.expm1((p + 1) * h) - psi))


# Work arrays of the LD sum hold at most this many numbers (8 bytes each): memory stays
# O(steps + chunk), whatever the schedule's length and the number of evaluations.
_CHUNK = 1 << 21


def _annealing(p: _Prepared, q: _Bins, c: float, beta: float, gamma: float, jac: bool) -> dict[str, np.ndarray]:
    """The multi-power law's sum LD(t) / B = sum_{k<=t} delta_k G(eta_k^-gamma S_k(t)) at every
    evaluation of ``p`` (in its order), and with ``jac`` its derivatives in log C, log beta and
    log gamma. Time O((bins + evaluations) x nodes), memory O(steps + _CHUNK).

    With y = C a (S(t) - u), a = eta^-gamma, u = S1 before the drop: 1 + y = C a r where
    r = S(t) - v, v = u - 1 / (C a). So (1 + y)^-beta = (C a)^-beta r^-beta, and r^-beta, a
    sum of exponentials in r (``_Kernel``), makes each node's sum over drops one first-order
    linear recurrence over the evaluations (``_scan``): no (evaluations x drops) matrix.
    """
    n_eval = q.te.size
    live = q.seg < n_eval
    nz = live & ~q.zero
    # Drops to zero: G = 1 once any lr follows (S_k(t) > 0), else 0; no parameter moves it.
    zs = np.flatnonzero(live & q.zero)
    zero_sum = np.zeros(n_eval)
    if zs.size:
        # S_k(t) > 0 <=> u_k < S(t): a prefix of the zero drops (u is non-decreasing).
        reach = np.searchsorted(q.u[zs], q.s_eval, side="left")
        entered = np.searchsorted(q.seg[zs], np.arange(n_eval), side="right")
        zero_sum = np.concatenate([[0.0], np.cumsum(q.delta[zs])])[np.minimum(reach, entered)]
    sums = {"sum": zero_sum}
    if jac:
        sums.update(dc=np.zeros(n_eval), dbeta=np.zeros(n_eval), dgamma=np.zeros(n_eval))
    idx = np.flatnonzero(nz)
    if idx.size:
        delta, seg, log_eta = q.delta[idx], q.seg[idx], np.log(q.eta[idx])
        log_ca = np.log(c) - gamma * log_eta
        with np.errstate(over="ignore"):  # an absurd C overflows here; refused just below
            v = q.u[idx] - np.exp(-log_ca)
        r_first = q.s_eval[seg] - v  # > 0: r at the first evaluation each drop enters
        r_lo, r_hi = float(r_first.min()), float(q.s_eval[-1] - v.min())
        if not (np.isfinite(r_hi) and r_lo > 0 and np.isfinite(beta) and beta > 0):
            raise FittingError(f"the annealing term cannot be evaluated (C = {c:g}, beta = {beta:g}, gamma = {gamma:g})")
        kernel = _Kernel.cover(r_lo, r_hi, beta + (1.0 if jac else 0.0))
        entered = np.searchsorted(seg, np.arange(n_eval), side="right")  # drops in the sum at each evaluation

        def prefix(x: np.ndarray) -> np.ndarray:
            return np.concatenate([[0.0], np.cumsum(x)])[entered]

        # E = (1 + y)^-beta and F = (1 + y)^-(beta + 1) summed over drops with source weights:
        # G = 1 - E; dG/dlog C = beta (E - F); dG/dlog gamma = -gamma beta ln(eta) (E - F);
        # dG/dlog beta = beta ln(1 + y) E, with ln(1 + y) = ln(C a) + ln(r).
        q_e = delta * np.exp(-beta * log_ca)  # delta (C a)^-beta: E = q_e r^-beta
        kern_e = kernel.weights(beta)
        terms: list[tuple[str, np.ndarray, tuple[np.ndarray, float, float]]] = [("E", q_e, kern_e)]
        if jac:
            q_f = q_e * np.exp(-log_ca)  # F = q_f r^-(beta + 1)
            kern_f = kernel.weights(beta + 1.0)
            terms += [("F", q_f, kern_f), ("ln_eta E", q_e * log_eta, kern_e), ("ln_eta F", q_f * log_eta, kern_f),
                      ("ln_ca E", q_e * log_ca, kern_e), ("ln_r E", q_e, kernel.weights(beta, log_derivative=True))]
        node_sums = _exp_sums(q.s_eval, seg, v, kernel.tau, np.column_stack([t[1] for t in terms]),
                              np.column_stack([t[2][0] for t in terms]))
        out = {}
        for i, (name, weight, (_, t0, t1)) in enumerate(terms):
            # plus the closed-form tail: sum_{k<=t} q_k (t0 - t1 r_k(t)), r_k(t) = S(t) - v_k
            q0 = prefix(weight)
            out[name] = node_sums[:, i] + t0 * q0 - t1 * (q.s_eval * q0 - prefix(weight * v))
        sums["sum"] = sums["sum"] + prefix(delta) - out["E"]
        if jac:
            sums["dc"] = beta * (out["E"] - out["F"])
            sums["dgamma"] = -gamma * beta * (out["ln_eta E"] - out["ln_eta F"])
            sums["dbeta"] = beta * (out["ln_ca E"] + out["ln_r E"])
    return {k: v[q.inverse] for k, v in sums.items()}


def _exp_sums(s_eval: np.ndarray, seg: np.ndarray, v: np.ndarray, tau: np.ndarray, src: np.ndarray,
              weights: np.ndarray) -> np.ndarray:
    """(evaluations, columns): sum_m weights[m, i] H_im(j) for every evaluation j and column i,
    where H_im(j) = sum_{k: seg_k <= j} src[k, i] exp(-tau_m (S_j - v_k)).

    Evaluations go in chunks, each chunk's drops (those entering at it) in sub-chunks, and the
    node sums H are carried from chunk to chunk: memory is bounded by _CHUNK numbers."""
    n_eval, n_src, n_nodes = s_eval.size, src.shape[1], tau.size
    res = np.empty((n_eval, n_src))
    e_chunk = max(1, _CHUNK // (4 * n_src * n_nodes))
    d_chunk = max(1, _CHUNK // (2 * n_nodes))
    carry = np.zeros((n_src, n_nodes))
    bounds = np.searchsorted(seg, np.arange(0, n_eval + e_chunk, e_chunk), side="left")
    for ci, j0 in enumerate(range(0, n_eval, e_chunk)):
        j1 = min(j0 + e_chunk, n_eval)
        b = np.zeros((j1 - j0, n_src, n_nodes))
        for d0 in range(bounds[ci], bounds[ci + 1], d_chunk):
            d1 = min(d0 + d_chunk, bounds[ci + 1])
            s = seg[d0:d1]
            x = np.multiply.outer(v[d0:d1] - s_eval[s], tau)  # (drops, nodes): -tau r <= 0
            np.exp(x, out=x)
            if s[-1] - s[0] == s.size - 1:  # one drop per evaluation (dense curves)
                b[s - j0] += src[d0:d1, :, None] * x[:, None, :]
                continue
            # Each evaluation's new drops, summed by one sparse product: row (j, i) of the
            # ((evaluations x columns) x drops) matrix holds column i's weights of the drops entering at j.
            n_d = d1 - d0
            row = ((s - j0)[:, None] * n_src + np.arange(n_src)[None, :]).ravel()
            mat = csr_matrix((src[d0:d1].ravel(), (row, np.repeat(np.arange(n_d), n_src))),
                             shape=((j1 - j0) * n_src, n_d))
            b += (mat @ x).reshape(j1 - j0, n_src, n_nodes)
        prev = s_eval[j0 - 1] if j0 > 0 else s_eval[0]
        gaps = np.diff(np.concatenate([[prev], s_eval[j0:j1]]))
        a = np.exp(-np.multiply.outer(gaps, tau))[:, None, :]  # (evaluations, 1, nodes)
        h = _scan(a, b, carry)
        carry = h[-1].copy()
        res[j0:j1] = np.einsum("jim,im->ji", h, weights.T)
    return res


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
            lr = np.asarray(c.lr, dtype=float)
            if lr.size == 0 or not np.nanmax(lr) > 0:
                raise InsufficientDataError(
                    f"curve {c.name!r}: its learning rate is 0 at every step (a logged lr of 0? import the run with "
                    "its lr_schedule)")
        n_points = sum(np.asarray(c.steps).size for c in curves)
        if n_points < 2 * len(self.COEFFICIENTS):
            raise InsufficientDataError(
                f"{type(self).__name__} has {len(self.COEFFICIENTS)} coefficients but the curves hold {n_points} points"
            )
        if not any(np.any(_prepare(c.lr, c.steps, c.warmup()).delta != 0) for c in curves):
            self.warnings_.append("no curve anneals its lr: the annealing term is not identified")
        guessed = [c.name for c in curves if c.lr_interpolated]
        if guessed:
            shown = ", ".join(guessed[:5]) + (f" and {len(guessed) - 5} more" if len(guessed) > 5 else "")
            self.warnings_.append(
                f"no schedule recorded for {len(guessed)} of {len(curves)} curves ({shown}): their lr at every step was "
                "interpolated between the lr logged at their points, which loses the warmup and any change between "
                "points, so the law is fitted to a schedule that never ran; import the runs with their schedule "
                "(lr_schedule) to fit on the real one")

    def _finish(self, curves: Sequence[LossCurve], coef: np.ndarray, at_bounds: Sequence[str] = ()) -> None:
        """Store the coefficients and what the fit covered (steps, and the peak lr of the curves:
        the laws describe one peak lr's family of schedules); warn where the curves leave the
        law undetermined (``at_bounds``: coefficients on the edge of their search range)."""
        self.coef_ = dict(zip(self.COEFFICIENTS, map(float, coef)))
        self.curves_used_ = [c.name for c in curves]
        self.train_error_ = self.score(curves)["mean"]
        peaks = [float(np.max(c.lr)) for c in curves]
        self.fit_range_ = {"steps": [float(min(np.min(c.steps) for c in curves)), float(max(np.max(c.steps) for c in curves))],
                           "peak_lr": [min(peaks), max(peaks)]}
        if at_bounds:
            self.warnings_.append(
                f"{', '.join(at_bounds)} fitted to the edge of {'its' if len(at_bounds) == 1 else 'their'} search range: "
                "the curves do not determine the law's shape there, so schedules unlike the fitted ones are predicted "
                "less reliably (add curves that anneal differently, or longer ones)")
        floor = self.floor(max(peaks))
        if floor <= 0:
            self.warnings_.append(
                f"annealed all the way (from {max(peaks):.3g} to a negligible lr, every drop saturated), this law would predict a loss of "
                f"{floor:.3g}, at or below 0: its annealing term is not determined by these curves, and predictions "
                "for schedules that anneal more than the fitted ones are not to be trusted")

    @abstractmethod
    def floor(self, peak_lr: float) -> float:
        """The lowest loss the law can give a schedule of this peak lr: everything annealed, the
        power term spent (nats/token). Below 0 the law is unphysical somewhere."""

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


def _decays(lr: np.ndarray, warmup: int, last_step: int) -> bool:
    """Whether the lr falls below 99% of its peak after warmup, up to ``last_step`` (1-indexed)."""
    after = np.asarray(lr, float)[warmup:last_step]
    return after.size > 0 and float(after.min()) < 0.99 * float(np.max(lr))


@dataclass
class MultiPowerLaw(_TrajectoryLaw):
    """The multi-power law (see the module doc). Coefficients: L0, A, alpha, B, C, beta, gamma.

    Parameters: ``bin_width`` (steps merged per lr-drop bin, see _Bins), ``n_starts`` (best
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
        decays = [c for c in curves if _decays(c.lr, c.warmup(), int(np.max(c.steps)))]
        if not decays:
            raise InsufficientDataError(
                "the multi-power law's annealing term (B) is measured where the learning rate decays: every curve "
                "here keeps its peak lr from warmup to its last measured step; add a curve measured while its lr "
                "decays (cosine, WSD, steps)")
        prepared = [_prepare(c.lr, c.steps, c.warmup()) for c in curves]
        bins = [_bins(p, self.bin_width) for p in prepared]
        y = np.concatenate([np.asarray(c.loss, float) for c in curves])
        log_y = np.log(y)
        prior_centre = np.log(0.5)

        def parts(theta: np.ndarray, jac: bool) -> tuple[np.ndarray, np.ndarray | None]:
            # theta = L0, log A, alpha, log B, log C, log beta, log gamma
            l0, log_a, alpha, log_b, log_c = theta[:5]
            beta, gamma, b = np.exp(theta[5]), np.exp(theta[6]), np.exp(log_b)
            preds, jacs = [], []
            for p, q in zip(prepared, bins):
                power = np.exp(log_a - alpha * np.log(p.area))
                an = _annealing(p, q, float(np.exp(log_c)), float(beta), float(gamma), jac)
                ld = b * an["sum"]
                preds.append(l0 + power - ld)
                if jac:
                    jacs.append(np.column_stack([
                        np.ones_like(power), power, -power * np.log(p.area), -ld,
                        -b * an["dc"], -b * an["dbeta"], -b * an["dgamma"],
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
        for theta0 in self._starts(y, parts):
            theta0 = np.clip(theta0, lower + 1e-9, upper - 1e-9)
            res = least_squares(resid, theta0, jac=jacobian, bounds=(lower, upper), x_scale="jac",
                                loss="huber", f_scale=self.huber_delta, max_nfev=500)
            if best is None or res.cost < best.cost:
                best = res
        assert best is not None
        l0, log_a, alpha, log_b, log_c, log_beta, log_gamma = best.x
        edge = np.isclose(best.x, lower, rtol=0, atol=1e-6) | np.isclose(best.x, upper, rtol=0, atol=1e-6)
        self._finish(curves, np.array([l0, np.exp(log_a), alpha, np.exp(log_b), np.exp(log_c),
                                       np.exp(log_beta), np.exp(log_gamma)]),
                     at_bounds=[name for name, e in zip(self.COEFFICIENTS, edge) if e])
        return self

    def floor(self, peak_lr: float) -> float:
        """L0 - B x peak: every drop saturated (G = 1) and the drops summing to the peak."""
        c = self._check_fitted()
        return c["L0"] - c["B"] * peak_lr

    def _starts(self, y: np.ndarray, parts: Any) -> list[np.ndarray]:
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
        an = _annealing(p, _bins(p, self.bin_width), c["C"], c["beta"], c["gamma"], jac=False)
        return c["L0"] + c["A"] * p.area ** -c["alpha"] - c["B"] * an["sum"]


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
        # Edges of the search: alpha in (0, 3); lam in (0, 1), where lam near 0 means no momentum
        # at all (the paper finds ~0.999) and L0 = 0 is nnls's bound.
        edges = {"alpha": not 1e-3 < alpha < 3 - 1e-3, "lam": not 1e-3 < lam < 1 - 1e-9, "L0": l0_ <= 0}
        self._finish(curves, np.array([l0_, a_, alpha, c_, lam]), at_bounds=[k for k, e in edges.items() if e])
        return self

    def floor(self, peak_lr: float) -> float:
        """L0 - C peak / (1 - lam): the momentum of drops summing to the peak, fully accumulated."""
        c = self._check_fitted()
        return c["L0"] - c["C"] * peak_lr / max(1.0 - c["lam"], 1e-12)

    def _predict_prepared(self, p: _Prepared) -> np.ndarray:
        c = self._check_fitted()
        return c["L0"] + c["A"] * p.area ** -c["alpha"] - c["C"] * self._s2(p, c["lam"])


TRAJECTORY_LAWS: dict[str, type[_TrajectoryLaw]] = {"multi_power": MultiPowerLaw, "momentum": MomentumLaw}

