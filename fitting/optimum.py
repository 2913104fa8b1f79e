"""Per-(N, D) group optimum of a learning-rate x batch grid.

For each group (the runs sharing n_params and tokens) this module finds:

- the near-optimal set: configurations whose mean final loss is not distinguishable from the
  group's best given the run-to-run noise and their seed counts (``fitting.noise``), never a
  narrower band than ``eps`` (relative, default 0.25%: Step Law's and DeepSeek's definition of
  "optimal", which is what the band is without a noise estimate);
- a smooth optimum: the argmin of a quadratic surface in (log lr, log batch_tokens) fitted to
  the best runs, which is less jumpy than the single best run on a coarse grid;
- whether the best run sits on the edge of the searched grid, and which edge: the sweep must
  then widen, because the true optimum may lie outside it.

Units: lr is the peak learning rate, batch in tokens, losses in nats/token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpscale.fitting.errors import InsufficientDataError
from hpscale.fitting.noise import NoiseEstimate, near_optimal_band
from hpscale.fitting.runs import RunSet

# Two grid values closer than this in log space are the same grid point (published grids
# round lrs differently from one group to the next: 3.453e-4 vs 3.45e-4).
LOG_TOL = 0.01
# The quadratic surface is fitted on the runs within this relative band of the best loss,
# widened to the best MIN_SURFACE_POINTS runs when the band holds too few.
SURFACE_BAND = 0.01
MIN_SURFACE_POINTS = 8


@dataclass(frozen=True)
class GroupOptimum:
    """The optimum of one (N, D) group.

    ``near_optimal`` indexes the RunSet the optimum was computed from; ``lr`` and
    ``batch_tokens`` are the smooth optimum, ``method`` says how it was found
    ("quadratic2d", "quadratic1d" or "near_optimal_mean" when no convex surface fits);
    ``edges`` lists "lr_low", "lr_high", "batch_low", "batch_high" or "lr_unsearched"
    where the best run touches the searched grid's boundary; ``band`` is the relative
    near-optimal band a configuration with as many seeds as the best one had to fall within;
    ``arch`` the architecture label of its runs ("" without labels: two groups may share an
    (N, D) when their architectures differ).
    """

    n_params: float
    tokens: float
    best_loss: float
    best_lr: float
    best_batch_tokens: float
    near_optimal: np.ndarray
    lr: float
    batch_tokens: float
    method: str
    edges: tuple[str, ...]
    band: float = 0.0025
    arch: str = ""

    @property
    def at_edge(self) -> bool:
        return bool(self.edges)

    def describe(self) -> str:
        return f"group N={self.n_params:.4g}, D={self.tokens:.4g}"


EDGE_WORDS = {
    "lr_low": "at the lowest learning rate searched",
    "lr_high": "at the highest learning rate searched",
    "batch_low": "at the smallest batch searched",
    "batch_high": "at the largest batch searched",
    "lr_unsearched": "at the only learning rate searched for its batch",
}
"""``grid_edges``' names in words, for messages people read."""
EDGE_NOTE = "the true optimum may lie outside the searched grid"
"""How a fit's warning about a group on its grid's edge ends (recommendations count them by it)."""


def describe_edges(edges: tuple[str, ...] | list[str]) -> str:
    """Where a group's best run lies on its grid, in words ("at the highest learning rate
    searched and at the smallest batch searched")."""
    return " and ".join(EDGE_WORDS.get(e, e) for e in edges)


def near_optimal_mask(loss: np.ndarray, eps: float, noise: NoiseEstimate | None = None,
                      n_seeds: np.ndarray | None = None) -> np.ndarray:
    """Configurations whose (mean) loss lies within the near-optimal band of the best one: ``eps``
    (relative) without a noise estimate, else the band ``fitting.noise.near_optimal_band`` gives
    for each configuration's seed count (``n_seeds``, default 1 each)."""
    n = np.ones(loss.size) if n_seeds is None else np.asarray(n_seeds, float)
    best = int(np.argmin(loss))
    band = near_optimal_band(noise, eps, n, int(n[best]))
    return loss <= loss[best] * (1.0 + band)


def seed_counts(runs: RunSet) -> np.ndarray:
    """How many runs each row of ``runs`` averages (1 per row without ``members``)."""
    if runs.members is None:
        return np.ones(len(runs))
    return np.array([len(m) for m in runs.members], float)


def distinct_values(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a positive array, merging values within LOG_TOL in log space."""
    logs = np.sort(np.log(values))
    keep = np.concatenate([[True], np.diff(logs) > LOG_TOL])
    return np.exp(logs[keep])


def grid_edges(lr: np.ndarray, batch: np.ndarray, best: int) -> tuple[str, ...]:
    """Which edges of the searched grid the best run touches.

    The lr edge is judged along the best run's batch size (the grid line it was searched on),
    the batch edge over the whole group; a batch searched at one value only is no edge (the
    user fixed it), an lr searched at one value is ("lr_unsearched").
    """
    edges: list[str] = []
    same_batch = np.abs(np.log(batch) - np.log(batch[best])) <= LOG_TOL if np.isfinite(batch[best]) else np.ones(lr.size, bool)
    lrs = distinct_values(lr[same_batch])
    if lrs.size < 2:
        edges.append("lr_unsearched")
    else:
        if np.log(lr[best]) - np.log(lrs[0]) <= LOG_TOL:
            edges.append("lr_low")
        if np.log(lrs[-1]) - np.log(lr[best]) <= LOG_TOL:
            edges.append("lr_high")
    if np.isfinite(batch[best]):
        bss = distinct_values(batch[np.isfinite(batch)])
        if bss.size >= 2:
            if np.log(batch[best]) - np.log(bss[0]) <= LOG_TOL:
                edges.append("batch_low")
            if np.log(bss[-1]) - np.log(batch[best]) <= LOG_TOL:
                edges.append("batch_high")
    return tuple(edges)


def _lattice_ids(values: np.ndarray) -> np.ndarray:
    """Index of each value's grid point (values within LOG_TOL in log share one); NaN -> 0."""
    finite = np.isfinite(values) & (values > 0)
    if not finite.any():
        return np.zeros(values.size, int)
    grid = np.log(distinct_values(values[finite]))
    logs = np.log(np.where(finite, values, 1.0))
    return np.where(finite, np.argmin(np.abs(logs[:, None] - grid[None, :]), axis=1), 0)


def smooth_optima(
    lr: np.ndarray, batch: np.ndarray, loss: np.ndarray, eps: float, pick: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth optima of K resamples of one group at once: (lr, batch_tokens, method) arrays.

    ``pick`` (K, m) indexes the group's runs (a bootstrap draw per row); None means the group
    itself (K = 1). Per row: fit loss as a quadratic in (log lr, log batch) to the runs within
    SURFACE_BAND of the row's best (at least its MIN_SURFACE_POINTS best), and take its argmin,
    clipped to the box of the runs used (a quadratic extrapolated outside them means nothing).
    Falls back to a 1-D quadratic in log lr when fewer than 3 batch sizes are near the best,
    and to the geometric mean of the near-optimal runs when no convex fit exists (a saddle or
    a ridge has no minimum to trust). Batched so that a 1,000-fold bootstrap costs a few
    array operations per group instead of 1,000 small fits.
    """
    pick = np.arange(loss.size)[None, :] if pick is None else pick
    k, m = pick.shape
    x_all, y_all = np.log(lr), np.log(np.where(np.isfinite(batch), batch, np.nan))
    x, y, z = x_all[pick], y_all[pick], loss[pick]
    zmin = z.min(axis=1, keepdims=True)
    near = z <= zmin * (1.0 + eps)
    band = z <= zmin * (1.0 + max(SURFACE_BAND, eps))
    rank = np.argsort(np.argsort(z, axis=1, kind="stable"), axis=1)
    use = np.where(band.sum(axis=1, keepdims=True) >= MIN_SURFACE_POINTS, band, rank < MIN_SURFACE_POINTS)
    w = use.astype(float)

    def n_distinct(ids: np.ndarray) -> np.ndarray:
        onehot = np.zeros((k, m, int(ids.max()) + 1))
        np.put_along_axis(onehot, ids[pick][:, :, None], 1.0, axis=2)
        return ((onehot * w[:, :, None]).sum(axis=1) > 0).sum(axis=1)

    nx = n_distinct(_lattice_ids(lr))
    y_known = np.isfinite(y).all(axis=1)
    ny = np.where(y_known, n_distinct(_lattice_ids(batch)), 1)
    # Centre on each row's best run: better conditioned normal equations.
    best = np.argmin(z, axis=1)
    x0 = np.take_along_axis(x, best[:, None], axis=1)
    y0 = np.where(y_known[:, None], np.take_along_axis(np.nan_to_num(y), best[:, None], axis=1), 0.0)
    xc, yc = x - x0, np.where(y_known[:, None], y - y0, 0.0)
    big = np.where(use, 0.0, np.inf)
    xlo, xhi = (xc + big).min(axis=1), (xc - big).max(axis=1)
    ylo, yhi = (yc + big).min(axis=1), (yc - big).max(axis=1)

    out_x = (np.where(near, xc, 0.0).sum(axis=1)) / near.sum(axis=1)
    out_y = (np.where(near, yc, 0.0).sum(axis=1)) / near.sum(axis=1)
    method = np.full(k, "near_optimal_mean", dtype=object)

    design = np.stack([np.ones_like(xc), xc, yc, xc * xc, yc * yc, xc * yc], axis=2)
    a = np.einsum("km,kmi,kmj->kij", w, design, design)
    rhs = np.einsum("km,kmi,km->ki", w, design, z)
    c = np.einsum("kij,kj->ki", np.linalg.pinv(a), rhs)
    det = 4 * c[:, 3] * c[:, 4] - c[:, 5] ** 2
    two_d = (nx >= 3) & (ny >= 3) & (use.sum(axis=1) >= 6) & (c[:, 3] > 0) & (det > 0)
    safe = np.where(det > 0, det, 1.0)
    ox = (-2 * c[:, 4] * c[:, 1] + c[:, 5] * c[:, 2]) / safe
    oy = (-2 * c[:, 3] * c[:, 2] + c[:, 5] * c[:, 1]) / safe
    out_x = np.where(two_d, np.clip(ox, xlo, xhi), out_x)
    out_y = np.where(two_d, np.clip(oy, ylo, yhi), out_y)
    method[two_d] = "quadratic2d"

    # One batch size near the optimum: loss against log lr only, batch from the near set.
    d1 = design[:, :, [0, 1, 3]]
    c1 = np.einsum("kij,kj->ki", np.linalg.pinv(np.einsum("km,kmi,kmj->kij", w, d1, d1)),
                   np.einsum("km,kmi,km->ki", w, d1, z))
    one_d = ~two_d & (nx >= 3) & (ny < 3) & (c1[:, 2] > 0)
    ox1 = -c1[:, 1] / (2 * np.where(c1[:, 2] > 0, c1[:, 2], 1.0))
    out_x = np.where(one_d, np.clip(ox1, xlo, xhi), out_x)
    method[one_d] = "quadratic1d"
    lr_opt = np.exp(out_x + x0[:, 0])
    bt_opt = np.where(y_known, np.exp(out_y + y0[:, 0]), np.nan)
    return lr_opt, bt_opt, method


def smooth_optimum(lr: np.ndarray, batch: np.ndarray, loss: np.ndarray, eps: float) -> tuple[float, float, str]:
    """The smooth optimum of one group's runs: (lr, batch_tokens, method); see smooth_optima."""
    a, b, m = smooth_optima(lr, batch, loss, eps)
    return float(a[0]), float(b[0]), str(m[0])


def group_optima(runs: RunSet, eps: float = 0.0025, noise: NoiseEstimate | None = None) -> list[GroupOptimum]:
    """The optimum of every (N, D) group of the usable runs (finite loss, not diverged).

    Repeats of a configuration (seeds) count as one point with their mean loss
    (``RunSet.average_repeats``); ``near_optimal`` then lists every run of each near-optimal
    configuration, as indices into ``runs``. The near-optimal band is ``eps`` without a
    ``noise`` estimate, else the noise band for each configuration's seed count (see
    ``near_optimal_mask``). Groups whose runs all diverged are skipped (they say nothing about
    the optimum); raises InsufficientDataError when no run is usable or when lr is unknown for
    a usable run.
    """
    configs = runs.average_repeats()
    usable = configs.require_usable()
    seeds = seed_counts(usable)
    row_of = {name: i for i in range(len(runs)) for name in runs.run_names([i])}
    if np.isnan(usable.lr).any():
        missing = usable.names[int(np.argmax(np.isnan(usable.lr)))]
        raise InsufficientDataError(f"run {missing!r} has no learning rate: an optimum needs the lr of every run")
    gid, keys = usable.group_keys()
    arch, usable_arch = configs.arch or [""] * len(configs), usable.arch or [""] * len(usable)
    out: list[GroupOptimum] = []
    for g, (n, d) in enumerate(keys):
        idx = np.flatnonzero(gid == g)
        lr, bt, loss = usable.lr[idx], usable.batch_tokens[idx], usable.final_loss[idx]
        best = int(np.argmin(loss))
        s_lr, s_bt, method = smooth_optimum(lr, bt, loss, eps)
        # Indices refer back to the caller's RunSet (each of its rows may itself average runs).
        near = near_optimal_mask(loss, eps, noise, seeds[idx])
        near_rows = np.unique([row_of[name] for name in usable.run_names(idx[near])])
        band = float(near_optimal_band(noise, eps, seeds[idx][best], int(seeds[idx][best])))
        # The grid's edges count the diverged configurations too: a best run whose higher lrs all
        # diverged is bracketed (they are worse), not on the edge of what was searched.
        group_arch = usable_arch[idx[0]]
        every = np.flatnonzero((configs.n_params == n) & (configs.tokens == d) & np.isfinite(configs.lr)
                               & np.array([a == group_arch for a in arch]))
        best_all = [configs.names[i] for i in every].index(usable.names[idx[best]])
        lr_all, bt_all = configs.lr[every], configs.batch_tokens[every]
        out.append(
            GroupOptimum(
                n_params=n, tokens=d, best_loss=float(loss[best]), best_lr=float(lr[best]),
                best_batch_tokens=float(bt[best]), near_optimal=near_rows,
                lr=s_lr, batch_tokens=s_bt, method=method, edges=grid_edges(lr_all, bt_all, best_all), band=band,
                arch=group_arch,
            )
        )
    return out
