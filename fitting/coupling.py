"""The lr-batch coupling: how the optimal learning rate grows with the batch at fixed (N, D).

Theory (Granziol et al., "Learning Rates as a Function of Batch Size: A Random Matrix Theory
Approach to Neural Network Training"): the largest stable lr grows linearly with the batch for
SGD and as its square root for Adam-type (adaptive, normalised) updates. This module measures
the exponent ``k`` of lr*(B) ~ B^k from a sweep's runs, for one optimizer, with a bootstrap
interval, so that it can be read beside the theory's value (``THEORY``).

The exponent is the tilt of the loss basin in (log lr, log B), fitted over every run near its
group's best (every seed): the joint model of ``fitting.joint`` with each (N, D) group's own
optimum (lr*_g, B*_g) in place of a law, and the basin's shape (the tilt ``k``, curvatures along
lr and batch, each side its own) shared by the groups:

    log L_r = f_g + A(w) w^2 + C(v) v^2,  u = log lr_r - log lr*_g,  v = log B_r - log B*_g,
    w = u - k v.

Per-group optima make ``k`` a within-group quantity, free of every effect of N and D. A group
searched at one batch size has no tilt to show and is left out. Cells whose best lr is on their
lr grid's edge still count: their runs lie on one wall of the basin, which the shared curvature
places. (An earlier estimate took each (N, D, batch) cell's parabola-vertex optimum and regressed
log lr* on log B; leaving out the cells whose optimum was on the edge biased it toward 0 on
grids that do not follow the optimum: 0.32 for a true 0.5, see BENCHMARKS.md.) The cell optima
remain, per group, as the descriptive table (``group_slopes_``): which lr each batch preferred.

The interval resamples groups with replacement, then the runs within each drawn group, and
refits the model from the full fit (``fitting.joint.bootstrap_weights``). Units: lr is the peak
learning rate, batch in tokens, losses in nats/token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpscale.fitting import joint as joint_fit
from hpscale.fitting.errors import InsufficientDataError
from hpscale.fitting.noise import estimate_noise
from hpscale.fitting.optimum import LOG_TOL
from hpscale.fitting.runs import RunSet

# The theory's exponent per optimizer kind, with the reason it applies. Kinds not listed (an
# imported run's "adafactor", say) get no theory value.
THEORY: dict[str, tuple[float, str]] = {
    "sgd": (1.0, "SGD: linear scaling (random-matrix theory)"),
    "sgd_sai": (1.0, "SGD-type: SGD with momentum and a fixed per-tensor lr scale: linear scaling"),
    "adamw": (0.5, "Adam-type: square-root scaling (random-matrix theory)"),
    "lamb": (0.5, "Adam-type: Adam's update with per-tensor trust ratios: square-root scaling"),
    "lion": (0.5, "Adam-type: a sign-based (normalised) update: square-root scaling"),
    "muon": (0.5, "Adam-type by analogy: a normalised update (orthogonalised momentum); the theory "
                  "itself covers SGD and Adam"),
}


# Above this fraction of cells with their best lr on the lr grid's edge the exponent carries a
# warning: there the tilt rests on one wall of the basin and on the basin's shape shared across
# groups, not on bracketed optima. On one grid of 5 lrs per group over 5 batches at k = 0.5 (40% of
# cells on the edge) it measured 0.48 with its interval covering the truth in every one of 50
# grids (the cell-optimum regression it replaced: 0.32 and 22%; benchmarks/interval_coverage.py,
# BENCHMARKS.md); Step Law's released grid has 8% of its cells there.
EXCLUDED_WARN = 0.15

# Beyond these the runs do not determine the exponent, and none is reported: a tilt above 3 in
# magnitude (lr* growing as the cube of the batch) or an interval wider than 5 is what a basin
# fitted to too few or too flat runs gives, not a measurement.
MAX_ABS_EXPONENT = 3.0
MAX_INTERVAL_WIDTH = 5.0
# Each resample refits a model with 3 parameters per group (minutes at thousands of resamples on
# a large sweep): the coupling's interval uses at most this many, whatever a law's bootstrap.
MAX_BOOTSTRAP = 2000


@dataclass(frozen=True)
class CellOptimum:
    """The optimal lr of one (N, D, batch) cell."""

    n_params: float
    tokens: float
    batch_tokens: float
    lr: float
    method: str  # "parabola" (vertex of three grid points) or "grid" (a neighbour diverged)


def _vertex(x: np.ndarray, y: np.ndarray) -> float | None:
    """The x of the vertex of the parabola through three points, None when it opens downwards."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    if not a > 0:
        return None
    return float(-b / (2 * a))


def cell_optima(runs: RunSet) -> tuple[list[CellOptimum], int, int]:
    """Every cell's bracketed lr optimum, how many cells had none (optimum on the lr grid's edge,
    fewer than 3 lrs, or every run diverged), and how many of those were on the edge. Runs of
    unknown lr or batch are ignored."""
    runs = runs.average_repeats()
    known = np.isfinite(runs.lr) & np.isfinite(runs.batch_tokens)
    loss = np.where(runs.diverged | ~np.isfinite(runs.final_loss), np.inf, runs.final_loss)
    cells: dict[tuple[float, float, float], list[int]] = {}
    for i in np.flatnonzero(known):
        cells.setdefault((runs.n_params[i], runs.tokens[i], runs.batch_tokens[i]), []).append(int(i))
    out: list[CellOptimum] = []
    excluded = on_edge = 0
    for (n, d, b), idx in sorted(cells.items()):
        order = np.argsort(runs.lr[idx])
        x, y = np.log(runs.lr[idx][order]), loss[idx][order]
        # Two lrs within LOG_TOL are one grid point: keep the better of them.
        keep = np.concatenate([[True], np.diff(x) > LOG_TOL])
        groups = np.cumsum(keep) - 1
        gx = np.array([x[groups == g][0] for g in range(groups[-1] + 1)])
        gy = np.array([y[groups == g].min() for g in range(groups[-1] + 1)])
        if gx.size < 3 or not np.isfinite(gy).any():
            excluded += 1
            continue
        best = int(np.argmin(gy))
        if best == 0 or best == gx.size - 1:
            excluded += 1
            on_edge += 1
            continue
        three_x, three_y = gx[best - 1:best + 2], gy[best - 1:best + 2]
        vertex = _vertex(three_x, three_y) if np.isfinite(three_y).all() else None
        if vertex is None:
            out.append(CellOptimum(n, d, b, float(runs.lr[idx][order][keep][best]), "grid"))
        else:
            out.append(CellOptimum(n, d, b, float(math.exp(np.clip(vertex, three_x[0], three_x[2]))), "parabola"))
    return out, excluded, on_edge


def _centred_sums(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum over the last axis of (x - mean)(y - mean) and (x - mean)^2."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    return (xc * yc).sum(axis=-1), (xc * xc).sum(axis=-1)


def basin_data(runs: RunSet, noise: float) -> joint_fit.JointData | None:
    """The runs (every seed) within the joint model's window of their group's best, restricted
    to groups with such runs at two or more batch sizes, with one design column per group for
    lr* and for B* (each group its own optimum). ``noise``: one run's relative loss noise (it
    widens the window). None when no group qualifies."""
    ok = runs.usable & np.isfinite(runs.lr) & np.isfinite(runs.batch_tokens)
    if not ok.any():
        return None
    kept = runs.subset(ok)
    gid, _ = kept.group_keys()
    log_loss = np.log(kept.final_loss)
    near = joint_fit.select(log_loss, gid, joint_fit.window(joint_fit.DEFAULT_BAND, noise))
    log_b = np.log(kept.batch_tokens)
    informative = [g for g in np.unique(gid[near])
                   if np.unique(np.round(log_b[near & (gid == g)], 3)).size >= 2
                   and (near & (gid == g)).sum() >= joint_fit.MIN_RUNS_IN_BAND]
    if not informative:
        return None
    keep = near & np.isin(gid, informative)
    _, group = np.unique(gid[keep], return_inverse=True)
    onehot = np.eye(len(informative))[group]
    return joint_fit.JointData(x_lr=onehot, x_b=onehot.copy(), log_lr=np.log(kept.lr[keep]), log_b=log_b[keep],
                               log_loss=log_loss[keep], group=group, n_groups=len(informative), local=True)


def basin_starts(data: joint_fit.JointData) -> np.ndarray:
    """The joint model's starting points with each group's optimum at its best run."""
    best = np.full(data.n_groups, np.inf)
    np.minimum.at(best, data.group, data.log_loss)
    first = np.array([np.flatnonzero((data.group == g) & (data.log_loss == best[g]))[0] for g in range(data.n_groups)])
    return joint_fit.starts(data, data.log_lr[first], data.log_b[first])


def undetermined(theta: np.ndarray, data: joint_fit.JointData, scale: float) -> str:
    """Why a fitted basin does not determine its tilt, or "" when it does: the tilt is absurd
    (beyond ``MAX_ABS_EXPONENT``), or the loss does not rise along lr, on either side of the
    optimum, by more than the noise (``scale``, log loss) within the runs: a flat lr direction
    leaves the tilt free."""
    q = data.n_law
    k, curv = float(theta[q]), np.exp(theta[q + 1 : q + 5])
    if not abs(k) <= MAX_ABS_EXPONENT:
        return f"the fitted tilt {k:.3g} is beyond +-{MAX_ABS_EXPONENT:g}: the runs do not determine it"
    p_lr = data.x_lr.shape[1]
    w = data.log_lr - data.x_lr @ theta[:p_lr] - k * (data.log_b - data.x_b @ theta[p_lr:q])
    for mask, a in ((w < 0, curv[0]), (w > 0, curv[1])):
        if mask.any() and a * np.max(w[mask] ** 2) > 3 * scale:
            return ""
    return ("the loss does not rise away from the best lr by more than the noise within these runs (the basin is "
            "flat along lr), which leaves the tilt free; widen the lr grids")


@dataclass
class LrBatchCoupling:
    """The measured exponent of lr* on the batch at fixed (N, D), for one optimizer.

    Parameters (stored by ``__init__``): ``optimizer`` (the kind the runs trained with; picks
    the theory value), ``n_bootstrap`` (0: no interval), ``seed``, ``level``.

    Fitted attributes: ``exponent_`` (None when the runs cannot determine it: see ``note_``),
    ``interval_``, ``runs_`` (runs in the basin fit), ``cells_`` (the cells' bracketed optima,
    for the per-group table), ``excluded_``, ``groups_`` (groups that
    inform the slope), ``group_slopes_``, ``note_`` (why there is no exponent or interval),
    ``warning_`` (many cells' best lr on the lr grid's edge: the tilt rests on extrapolation).
    """

    optimizer: str = "adamw"
    n_bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    exponent_: float | None = field(default=None, init=False)
    interval_: tuple[float, float] | None = field(default=None, init=False)
    cells_: list[CellOptimum] = field(default_factory=list, init=False)
    excluded_: int = field(default=0, init=False)
    groups_: int = field(default=0, init=False)
    runs_: int = field(default=0, init=False)
    group_slopes_: list[dict[str, Any]] = field(default_factory=list, init=False)
    note_: str = field(default="", init=False)
    warning_: str = field(default="", init=False)

    def fit(self, runs: RunSet) -> "LrBatchCoupling":
        """Measure the exponent on ``runs`` (one optimizer's grid over lr and batch). Returns self;
        data too thin for an exponent give ``exponent_`` None and a ``note_`` saying why."""
        if len(runs) == 0:
            raise InsufficientDataError("no runs given")
        self.cells_, self.excluded_, on_edge = cell_optima(runs)
        by_group: dict[tuple[float, float], list[CellOptimum]] = {}
        for c in self.cells_:
            by_group.setdefault((c.n_params, c.tokens), []).append(c)
        self.group_slopes_ = []
        for (n, d), cells in by_group.items():
            if len({c.batch_tokens for c in cells}) < 2:
                continue
            x, y = np.log([c.batch_tokens for c in cells]), np.log([c.lr for c in cells])
            sxy, sxx = _centred_sums(x, y)
            self.group_slopes_.append({"n_params": n, "tokens": d, "batch_tokens": np.exp(x).tolist(),
                                       "lr": np.exp(y).tolist(), "slope": float(sxy / sxx)})
        self.exponent_, self.interval_, self.warning_ = None, None, ""
        usable = runs.subset(runs.usable)
        noise = (estimate_noise(usable).rel_std or 0.0) if len(usable) else 0.0
        data = basin_data(runs, noise)
        self.groups_ = data.n_groups if data is not None else 0
        self.runs_ = data.log_loss.size if data is not None else 0
        if data is None:
            self.note_ = ("no (N, D) group has runs near its best loss at two or more batch sizes "
                          f"({len(self.cells_)} cells with a bracketed lr optimum, {self.excluded_} without)")
            return self
        n_par = 3 * data.n_groups + len(joint_fit.SHAPE)  # lr*, B*, floor per group; the shared shape
        if self.runs_ < 2 * n_par:
            self.note_ = (f"{self.runs_} runs near their group's best in {data.n_groups} groups: too few for the "
                          f"basin's {n_par} parameters (3 per group and 5 shared); search more lrs and batches")
            return self
        # The robust loss's residual scale, in log loss; below 0.1% (noiseless synthetic grids) the
        # soft-L1 cost is nearly L1, which the Gauss-Newton steps do not converge on.
        self._scale = max(noise, 1e-3)
        starts = basin_starts(data)
        theta, cost = joint_fit.solve(starts, data, np.ones((len(starts), data.log_loss.size)), self._scale)
        self._theta = theta[int(np.argmin(np.where(np.isfinite(cost), cost, np.inf)))]
        k = float(self._theta[data.n_law])
        why = undetermined(self._theta, data, self._scale)
        if why:
            self.note_ = why
            return self
        self.exponent_, self.note_ = k, ""
        total = len(self.cells_) + self.excluded_
        if on_edge > EXCLUDED_WARN * total:
            self.warning_ = (
                f"{on_edge} of {total} cells have their best lr on the lr grid's edge: there the basin's tilt "
                "rests on one wall of the basin and the shared curvature; widen the lr grid there")
        if self.n_bootstrap > 0:
            self.interval_ = self._bootstrap(data)
            if self.interval_ is None:
                self.note_ = "most bootstrap refits failed: no interval"
            elif self.interval_[1] - self.interval_[0] > MAX_INTERVAL_WIDTH:
                self.note_ = (f"the bootstrap interval [{self.interval_[0]:.3g}, {self.interval_[1]:.3g}] is wider "
                              f"than {MAX_INTERVAL_WIDTH:g}: the runs do not determine the exponent")
                self.exponent_, self.interval_, self.warning_ = None, None, ""
        return self

    def _bootstrap(self, data: joint_fit.JointData) -> tuple[float, float] | None:
        """Percentile interval: groups drawn with replacement, then each drawn group's runs."""
        rng = np.random.default_rng(self.seed)
        count = min(self.n_bootstrap, MAX_BOOTSTRAP)
        # The solver's Jacobian is (rows, runs, parameters): resamples are drawn and refitted in
        # chunks, which bounds memory. (The chunks fix the random stream: sized as they were before
        # the solver went group by group, so that a seed gives the interval it gave then.)
        chunk = max(1, int(2e7 // (data.log_loss.size * (data.n_law + 5))))
        tilts = []
        for lo in range(0, count, chunk):
            weights, _ = joint_fit.bootstrap_weights(data.group, data.n_groups, min(chunk, count - lo), rng)
            theta, cost = joint_fit.solve(self._theta, data, weights, self._scale, tol=1e-7)
            tilts.append(theta[np.isfinite(cost), data.n_law])
        k = np.concatenate(tilts)
        if k.size < max(min(20, count), count // 2):  # mostly failed refits: no honest interval
            return None
        lo, hi = np.quantile(k, [(1 - self.level) / 2, (1 + self.level) / 2])
        return float(lo), float(hi)

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe description, stored in a hyper law's record as ``lr_batch_coupling``."""
        theory = THEORY.get(self.optimizer)
        return {
            "optimizer": self.optimizer,
            "exponent": self.exponent_,
            "interval": list(self.interval_) if self.interval_ else None,
            "level": self.level,
            "theory": theory[0] if theory else None,
            "theory_basis": theory[1] if theory else f"no theory value for optimizer {self.optimizer!r}",
            "groups": self.groups_,
            "runs": self.runs_,
            "cells": len(self.cells_),
            "cells_excluded": self.excluded_,
            "per_group": self.group_slopes_,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "method": "tilt of the loss basin in (log lr, log batch), fitted over every run near its group's best "
                      "with per-group optima and a shared basin shape (fitting.joint); per_group: each batch's "
                      "parabola-vertex lr optimum and their slope",
            "note": self.note_,
            "warning": self.warning_ or None,
        }
