"""The joint fit: one model of the final loss over the runs of every group at once.

The other hyper methods reduce each (N, D) group to its optimum first (the near-optimal runs, or
a smooth optimum) and then fit the law to those points, so each group's answer rests on a few
runs that are, at 0.5% run-to-run noise, largely luck. Here every run near its group's basin
informs the law directly:

    log L_r = f_g + A(w) w^2 + C(v) v^2
    u = log lr_r - log lr*(N_g, D_g),  v = log B_r - log B*(N_g, D_g),  w = u - k v

``lr*`` and ``B*`` are the hyper law in its form (``fitting.hyper``: steplaw, full or compute),
``f_g`` a floor per group, and the basin's shape is shared by all groups: ``k`` is how the best
lr moves with the batch at fixed (N, D) (the valley's tilt in log-log), ``A`` and ``C`` its
curvatures along lr and batch, each with its own value on the low and the high side (the
high-lr side is steeper on every sweep we have seen). The fit minimises the soft-L1 robust loss
of the residuals in units of the run-to-run noise, on the runs within ``band`` (log loss) of
their group's best run: a quadratic describes a basin's bottom, not its far walls or the
diverging lrs beyond them.

The solver is a Levenberg-Marquardt Gauss-Newton with robust (IRLS) weights, batched over many
weightings of the same runs at once, so that a 1,000-fold bootstrap (runs resampled within
groups, groups resampled too) costs a few seconds. The per-group floors are eliminated by a
Schur complement: each touches one group's runs only. Where lr* and B* are each group's own
(``JointData.local``: the lr-batch coupling's basin), they are eliminated with the floors, group
by group, so a step costs time linear in the groups, not cubic.

Units: lr the peak learning rate, B batch in tokens, losses in nats/token (the model is in log
loss, so curvatures are relative loss per squared log-step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpscale.fitting.errors import InsufficientDataError

SHAPE = ("k", "A_lo", "A_hi", "C_lo", "C_hi")
DEFAULT_BAND = 0.03
MIN_RUNS_IN_BAND = 3


@dataclass(frozen=True)
class JointData:
    """The runs of a joint fit, as arrays (M runs, G groups): log-space lr-law and batch-law
    design rows (centred, first column 1), log lr, log B, log loss, and the group of each run."""

    x_lr: np.ndarray  # (M, p_lr)
    x_b: np.ndarray  # (M, p_b)
    log_lr: np.ndarray
    log_b: np.ndarray
    log_loss: np.ndarray
    group: np.ndarray  # (M,) int in 0..G-1
    n_groups: int
    # x_lr and x_b are each group's own column (one-hot): lr* and B* per group, not a law (the
    # lr-batch coupling's basin). The solver then eliminates them with the floors, group by group.
    local: bool = False

    @property
    def n_law(self) -> int:
        return self.x_lr.shape[1] + self.x_b.shape[1]


def window(band: float, noise: float | None) -> float:
    """The log-loss window above a group's best run that the model is fitted in: ``band`` plus
    two run-to-run noise standard deviations (relative; None: unknown, 0), so that a noisy
    group's near-best runs are not cut off by its luckiest one."""
    return band + 2.0 * (noise or 0.0)


def select(log_loss: np.ndarray, group: np.ndarray, band: float) -> np.ndarray:
    """Runs within ``band`` (log loss) of their group's best run."""
    best = np.full(group.max() + 1, np.inf)
    np.minimum.at(best, group, log_loss)
    return log_loss <= best[group] + band


def _unpack(theta: np.ndarray, data: JointData) -> tuple[np.ndarray, ...]:
    """Split (K, P) parameters: lr-law, batch-law, k, log curvatures (4), floors (G)."""
    p_lr, p_b = data.x_lr.shape[1], data.x_b.shape[1]
    q = p_lr + p_b
    return theta[:, :p_lr], theta[:, p_lr:q], theta[:, q], theta[:, q + 1 : q + 5], theta[:, q + 5 :]


def residuals(theta: np.ndarray, data: JointData, jac: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Residuals log L - model, (K, M), and their Jacobian with respect to the non-floor
    parameters, (K, M, P - G) (d residual / d floor is -1 on the run's own group)."""
    c_lr, c_b, k, logc, floors = _unpack(theta, data)
    # A trial step can propose an absurd curvature: it overflows to inf, its cost is not finite,
    # and the solver rejects the step; numpy's warning would only reach the user's terminal.
    with np.errstate(over="ignore", invalid="ignore"):
        return _residuals(data, c_lr, c_b, k, np.exp(logc), floors, jac)


def _residuals(data: JointData, c_lr: np.ndarray, c_b: np.ndarray, k: np.ndarray, curv: np.ndarray,
               floors: np.ndarray, jac: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """As ``residuals``; for ``data.local`` the Jacobian's lr-law and batch-law columns are
    the run's own group's two (K, M, 2 + 5): the rest of their columns are 0."""
    if data.local:  # one-hot designs: each run reads its own group's lr* and B*
        u = data.log_lr[None, :] - np.take(c_lr, data.group, axis=1)
        v = data.log_b[None, :] - np.take(c_b, data.group, axis=1)
    else:
        u = data.log_lr[None, :] - c_lr @ data.x_lr.T
        v = data.log_b[None, :] - c_b @ data.x_b.T
    w = u - k[:, None] * v
    a = np.where(w < 0, curv[:, 0:1], curv[:, 1:2])
    c = np.where(v < 0, curv[:, 2:3], curv[:, 3:4])
    r = data.log_loss[None, :] - np.take(floors, data.group, axis=1) - a * w * w - c * v * v
    if not jac:
        return r, None
    aw, cv = 2 * a * w, 2 * c * v
    x_lr, x_b = (np.ones((data.log_lr.size, 1)),) * 2 if data.local else (data.x_lr, data.x_b)
    cols = [
        aw[:, :, None] * x_lr[None, :, :],  # d r / d lr-law
        -(aw * k[:, None] - cv)[:, :, None] * x_b[None, :, :],  # d r / d batch-law
        (aw * v)[:, :, None],  # d r / d k
        np.where(w < 0, -a * w * w, 0.0)[:, :, None],
        np.where(w >= 0, -a * w * w, 0.0)[:, :, None],
        np.where(v < 0, -c * v * v, 0.0)[:, :, None],
        np.where(v >= 0, -c * v * v, 0.0)[:, :, None],
    ]
    return r, np.concatenate(cols, axis=2)


def _cost(r: np.ndarray, weights: np.ndarray, scale: float) -> np.ndarray:
    """Soft-L1 robust cost per row: sum of weights * 2 (sqrt(1 + (r/s)^2) - 1) (inf for a trial
    step that overflowed)."""
    with np.errstate(over="ignore", invalid="ignore"):
        cost = np.sum(weights * 2.0 * (np.sqrt(1.0 + (r / scale) ** 2) - 1.0), axis=1)
    return np.where(np.isnan(cost), np.inf, cost)


def solve(theta0: np.ndarray, data: JointData, weights: np.ndarray, scale: float,
          max_iter: int = 200, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the soft-L1 cost for K weightings of the runs at once.

    ``theta0`` (P,) or (K, P) start(s); ``weights`` (K, M) run weights (bootstrap counts; 0
    leaves a run out). Returns the parameters (K, P) and the costs (K,). A floor whose group has
    no weight stays where it started (it affects nothing).
    """
    k_rows, m = weights.shape
    g = data.n_groups
    theta = np.array(np.broadcast_to(theta0, (k_rows, theta0.shape[-1])), dtype=float)
    onehot = np.zeros((m, g))
    onehot[np.arange(m), data.group] = 1.0
    if data.local:  # the runs by group, for the local step's sums
        if np.bincount(data.group, minlength=g).min() == 0:
            raise ValueError("a local joint model needs runs in every group")
        order = np.argsort(data.group, kind="stable")
        segments = np.searchsorted(data.group[order], np.arange(g))
    r, _ = residuals(theta, data)
    cost = _cost(r, weights, scale)
    lam = np.full(k_rows, 1e-3)
    done = np.zeros(k_rows, bool)
    for _ in range(max_iter):
        active = ~done
        if not active.any():
            break
        th = theta[active]
        r, jac = residuals(th, data, jac=True)
        assert jac is not None
        # Newton in the residuals, Gauss-Newton in the model: for the soft-L1 cost the gradient
        # weights are (1 + z)^-1/2 and the curvature weights (1 + z)^-3/2 (z = (r/s)^2); the
        # curvature's own weights, not IRLS's, make it converge in a few steps, not dozens.
        # A run a resample leaves out (weight 0) can sit far off the model: its z overflows to
        # inf and its weights go to 0, as they should; numpy's warning would reach the terminal.
        with np.errstate(over="ignore"):
            z1 = 1.0 + (r / scale) ** 2
            w_grad = weights[active] / np.sqrt(z1)
            w_curv = weights[active] / (z1 * np.sqrt(z1))
        la = lam[active]
        if data.local:
            step_j, step_f = _local_step(jac, r, w_curv, w_grad, segments, order, la)
        else:
            step_j, step_f = _law_step(jac, r, w_curv, w_grad, onehot, la)
        candidate = th + np.concatenate([step_j, step_f], axis=1)
        r_new, _ = residuals(candidate, data)
        new_cost = _cost(r_new, weights[active], scale)
        better = np.isfinite(new_cost) & (new_cost < cost[active])
        idx = np.flatnonzero(active)
        gain = np.where(better, cost[active] - new_cost, 0.0)
        theta[idx[better]] = candidate[better]
        cost[idx[better]] = new_cost[better]
        lam[idx] = np.where(better, np.maximum(la * 0.3, 1e-9), la * 10.0)
        # Converged: an accepted step gained (relatively) nothing, or steps keep failing even
        # when damped to short gradient steps (the minimum, to rounding).
        tiny_step = np.abs(step_j).max(axis=1) < 1e-6
        small = better & ((gain <= tol * np.maximum(cost[idx], 1e-300)) | tiny_step)
        done[idx] = small | (lam[idx] > 1e4)
    return theta, cost


def _solve_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with a[k] x[k] = b[k] for every row k ((K, P, P), (K, P)); least squares for a row
    whose matrix is singular."""
    try:
        return np.linalg.solve(a, b[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(a_, b_, rcond=None)[0] for a_, b_ in zip(a, b)])


def _law_step(jac: np.ndarray, r: np.ndarray, w_curv: np.ndarray, w_grad: np.ndarray, onehot: np.ndarray,
              la: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One damped Gauss-Newton step (K rows): the non-floor parameters (K, P - G) by the Schur
    complement of the floors, then the floors (K, G). Marquardt damping ``la`` (K,)."""
    jw_t = (jac * w_curv[:, :, None]).transpose(0, 2, 1)  # batched BLAS products below
    h_jj = jw_t @ jac
    h_jf = -(jw_t @ onehot)  # d r / d floor = -1
    d_ff = w_curv @ onehot + 1e-12
    g_j = ((jac * w_grad[:, :, None]).transpose(0, 2, 1) @ r[:, :, None])[:, :, 0]
    g_f = -(w_grad * r) @ onehot
    eye = np.eye(h_jj.shape[1])
    h_jj = h_jj + la[:, None, None] * (h_jj * eye + 1e-12 * eye)
    d_damped = d_ff * (1.0 + la[:, None])
    scaled = h_jf / d_damped[:, None, :]
    schur = h_jj - scaled @ h_jf.transpose(0, 2, 1)
    rhs = g_j - (scaled @ g_f[:, :, None])[:, :, 0]
    step_j = _solve_rows(schur, -rhs)
    step_f = -(g_f + (step_j[:, None, :] @ h_jf)[:, 0, :]) / d_damped
    return step_j, step_f


def _local_step(jac: np.ndarray, r: np.ndarray, w_curv: np.ndarray, w_grad: np.ndarray, segments: np.ndarray,
                order: np.ndarray, la: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_law_step`` for ``JointData.local``: each group's lr*, B* and floor touch its own runs
    only, so they are eliminated group by group (3 x 3 blocks, one batched solve) and the
    shared shape (5) is solved on their Schur complement: linear in the groups, where the dense
    step is cubic. The same damped system, so the same step to rounding. ``jac`` (K, M, 2 + 5)
    as ``_residuals`` gives it; ``order`` sorts the runs by group and ``segments`` are where each
    group's runs start in that order (every group has runs). Returns the non-floor step
    (K, 2G + 5: lr*, B*, shape) and the floors' (K, G)."""
    k_rows, m, _ = jac.shape
    jac, r, w_curv, w_grad = jac[:, order], r[:, order], w_curv[:, order], w_grad[:, order]
    local = np.concatenate([jac[:, :, :2], -np.ones((k_rows, m, 1))], axis=2)  # (K, M, 3): lr*, B*, floor
    shared = jac[:, :, 2:]  # (K, M, 5)
    lw = local * w_curv[:, :, None]

    def by_group(x: np.ndarray) -> np.ndarray:  # (K, M, ...) summed over each group's runs: (K, G, ...)
        return np.add.reduceat(x, segments, axis=1)

    h_ll = by_group((lw[:, :, :, None] * local[:, :, None, :]).reshape(k_rows, m, 9)).reshape(k_rows, -1, 3, 3)
    h_ls = by_group((lw[:, :, :, None] * shared[:, :, None, :]).reshape(k_rows, m, 15)).reshape(k_rows, -1, 3, 5)
    h_ss = np.einsum("kma,kmb->kab", shared * w_curv[:, :, None], shared, optimize=True)  # (K, 5, 5)
    wr = (w_grad * r)[:, :, None]
    g_l = by_group(local * wr)  # (K, G, 3)
    g_s = (shared * wr).sum(axis=1)  # (K, 5)
    # The damping of ``_law_step``: lr*, B* and the shape as h + la (h + 1e-12) on the diagonal,
    # the floors as (h + 1e-12)(1 + la).
    idx = np.arange(3)
    diag = h_ll[:, :, idx, idx]  # (K, G, 3), a copy
    damped = diag + la[:, None, None] * (diag + 1e-12)
    damped[:, :, 2] = (diag[:, :, 2] + 1e-12) * (1.0 + la[:, None])
    h_ll[:, :, idx, idx] = damped
    d_ss = np.diagonal(h_ss, axis1=1, axis2=2)
    h_ss = h_ss + np.eye(5)[None] * (la[:, None] * (d_ss + 1e-12))[:, :, None]
    # One batched solve for both right-hand sides. (Not a closed-form inverse: a group a resample
    # draws as copies of one run has a nearly rank-1 block, whose determinant loses every digit.)
    rhs_l = np.concatenate([h_ls, g_l[..., None]], axis=-1)  # (K, G, 3, 6)
    try:
        solved = np.linalg.solve(h_ll, rhs_l)
    except np.linalg.LinAlgError:
        solved = np.linalg.pinv(h_ll) @ rhs_l
    inv_ls, inv_gl = solved[..., :5], solved[..., 5]  # (K, G, 3, 5), (K, G, 3)
    schur = h_ss - np.einsum("kgab,kgac->kbc", h_ls, inv_ls, optimize=True)
    rhs = g_s - np.einsum("kgab,kga->kb", h_ls, inv_gl, optimize=True)
    step_s = _solve_rows(schur, -rhs)
    step_l = -(inv_gl + (inv_ls @ step_s[:, None, :, None])[..., 0])  # (K, G, 3)
    return np.concatenate([step_l[:, :, 0], step_l[:, :, 1], step_s], axis=1), step_l[:, :, 2]


def starts(data: JointData, law_lr: np.ndarray, law_b: np.ndarray) -> np.ndarray:
    """Starting points (S, P): the given law coefficients, each group's best loss as its floor,
    and a small grid over the shape (tilt k, curvatures)."""
    floors = np.full(data.n_groups, np.inf)
    np.minimum.at(floors, data.group, data.log_loss)
    rows = []
    for k in (0.0, 0.5, 1.0):
        for curv in (0.003, 0.03):
            shape = [k, *np.log([curv, 3 * curv, curv, curv])]
            rows.append(np.concatenate([law_lr, law_b, shape, floors]))
    return np.array(rows)


def bootstrap_weights(group: np.ndarray, n_groups: int, count: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` bootstrap resamples of runs in groups, as weights: groups drawn with
    replacement, then the runs (seeds) within each drawn copy of a group. Returns the run weights
    (count, M) and how often each group was drawn (count, G)."""
    weights = np.zeros((count, group.size))
    drawn = rng.integers(0, n_groups, (count, n_groups))
    counts = np.stack([np.bincount(row, minlength=n_groups) for row in drawn]) if count else np.zeros((0, n_groups), int)
    for i in range(n_groups):
        m = np.flatnonzero(group == i)
        # c copies of the group, each with its runs resampled: Multinomial(c * m, 1/m).
        for row in np.flatnonzero(counts[:, i]):
            weights[row, m] = rng.multinomial(counts[row, i] * m.size, np.full(m.size, 1.0 / m.size))
    return weights, counts


def check(data: JointData) -> None:
    """Refuse data that cannot identify the model: a basin needs several runs per group and the
    batch law needs groups searched over more than one batch size."""
    counts = np.bincount(data.group, minlength=data.n_groups)
    if (counts >= MIN_RUNS_IN_BAND).sum() < 2:
        raise InsufficientDataError(
            f"the joint fit needs at least two groups with {MIN_RUNS_IN_BAND}+ runs near their best loss")
    batches_per_group = [np.unique(np.round(data.log_b[data.group == g], 3)).size for g in range(data.n_groups)]
    if max(batches_per_group) < 2:
        raise InsufficientDataError(
            "the joint fit needs groups searched over at least two batch sizes (it models the basin in lr and batch)")
