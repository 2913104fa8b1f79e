"""The lr-batch coupling: how the optimal learning rate grows with the batch at fixed (N, D).

Theory (Granziol et al., "Learning Rates as a Function of Batch Size: A Random Matrix Theory
Approach to Neural Network Training"): the largest stable lr grows linearly with the batch for
SGD and as its square root for Adam-type (adaptive, normalised) updates. This module measures
the exponent ``k`` of lr*(B) ~ B^k from a sweep's runs, for one optimizer, with a bootstrap
interval, so that it can be read beside the theory's value (``THEORY``).

The estimate, in three steps:

1. Per (N, D, batch) cell, the optimal lr: the vertex of the parabola through the best lr and
   its two grid neighbours, in (log lr, loss), clipped to the neighbours (the grid point itself
   when a neighbour diverged: it brackets the optimum but has no loss). A cell whose best lr is
   the smallest or largest it searched has no bracketed optimum and is left out (``excluded``);
   so is a cell with fewer than 3 learning rates. Seeds count by their mean loss
   (``RunSet.average_repeats``), diverged runs as an infinite loss.
2. Per (N, D) group, the cells' (log B, log lr*) points, centred on the group's means: what is
   left is the within-group variation, free of every effect of N and D.
3. The exponent: the pooled least-squares slope over all groups of the centred log lr* on the
   centred log B (a fixed-effects regression). Groups with one bracketed cell add nothing.

The interval resamples groups with replacement, then the cells within each drawn group, and
redoes step 3 (the cells' optima are not refitted: their grid noise is what the cell resampling
carries). Units: lr is the peak learning rate, batch in tokens, losses in nats/token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpscale.fitting.errors import InsufficientDataError
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


# Above this fraction of cells left out (optimum on the lr grid's edge) the exponent carries a
# warning: one grid of 5 lrs per group over 5 batches at k = 0.5 leaves out 40% and measures 0.32,
# its interval covering the truth in 22% of 50 grids (benchmarks/interval_coverage.py,
# BENCHMARKS.md); Step Law's released grid leaves out 8%.
EXCLUDED_WARN = 0.15


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


def _slope(sxy: np.ndarray, sxx: np.ndarray) -> np.ndarray:
    """Pooled within-group slope from the groups' centred cross and square sums (NaN: no spread)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 1e-12, sxy / np.where(sxx > 1e-12, sxx, 1.0), np.nan)


def _centred_sums(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum over the last axis of (x - mean)(y - mean) and (x - mean)^2."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    return (xc * yc).sum(axis=-1), (xc * xc).sum(axis=-1)


@dataclass
class LrBatchCoupling:
    """The measured exponent of lr* on the batch at fixed (N, D), for one optimizer.

    Parameters (stored by ``__init__``): ``optimizer`` (the kind the runs trained with; picks
    the theory value), ``n_bootstrap`` (0: no interval), ``seed``, ``level``.

    Fitted attributes: ``exponent_`` (None when no group has two bracketed batch sizes),
    ``interval_``, ``cells_`` (the cell optima used), ``excluded_``, ``groups_`` (groups that
    inform the slope), ``group_slopes_``, ``note_`` (why there is no exponent or interval),
    ``warning_`` (the exponent is biased: too many cells left out).
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
        informative = {k: v for k, v in by_group.items() if len({c.batch_tokens for c in v}) >= 2}
        self.groups_ = len(informative)
        self.group_slopes_ = []
        xs = [np.log([c.batch_tokens for c in v]) for v in informative.values()]
        ys = [np.log([c.lr for c in v]) for v in informative.values()]
        for (n, d), x, y in zip(informative, xs, ys):
            sxy, sxx = _centred_sums(x, y)
            self.group_slopes_.append({"n_params": n, "tokens": d, "batch_tokens": np.exp(x).tolist(),
                                       "lr": np.exp(y).tolist(), "slope": float(sxy / sxx)})
        self.exponent_, self.interval_ = None, None
        if not informative:
            self.note_ = (f"no (N, D) group has a bracketed lr optimum at two or more batch sizes "
                          f"({len(self.cells_)} cells bracketed, {self.excluded_} not)")
            return self
        sums = [_centred_sums(x, y) for x, y in zip(xs, ys)]
        self.exponent_ = float(_slope(np.array(sum(s[0] for s in sums)), np.array(sum(s[1] for s in sums))))
        self.note_ = ""
        total = len(self.cells_) + self.excluded_
        self.warning_ = "" if on_edge <= EXCLUDED_WARN * total else (
            f"{on_edge} of {total} cells left out with their best lr on the lr grid's edge: the exponent is biased "
            "toward 0, since at the smallest and largest batches only the cells whose noise pulled the optimum "
            "inward are kept; widen the lr grid there")
        if self.n_bootstrap > 0:
            self.interval_ = self._bootstrap(xs, ys)
            if self.interval_ is None:
                self.note_ = "too few groups and batch sizes for a bootstrap interval"
        return self

    def _bootstrap(self, xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[float, float] | None:
        """Percentile interval: groups drawn with replacement, then each drawn group's cells."""
        rng = np.random.default_rng(self.seed)
        k, g = self.n_bootstrap, len(xs)
        # Every group's centred sums under k resamples of its cells: [g, k] each.
        sxy, sxx = np.empty((g, k)), np.empty((g, k))
        for j, (x, y) in enumerate(zip(xs, ys)):
            pick = rng.integers(0, x.size, (k, x.size))
            sxy[j], sxx[j] = _centred_sums(x[pick], y[pick])
        drawn = rng.integers(0, g, (k, g))
        # Position j of draw i takes resample (i + j) % k of its group: a group drawn twice in
        # one draw gets two independent resamples of its cells.
        rows = (np.arange(k)[:, None] + np.arange(g)[None, :]) % k
        slopes = _slope(sxy[drawn, rows].sum(axis=1), sxx[drawn, rows].sum(axis=1))
        slopes = slopes[np.isfinite(slopes)]
        if slopes.size < max(20, k // 2):  # mostly degenerate draws: no honest interval
            return None
        lo, hi = np.quantile(slopes, [(1 - self.level) / 2, (1 + self.level) / 2])
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
            "cells": len(self.cells_),
            "cells_excluded": self.excluded_,
            "per_group": self.group_slopes_,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "method": "per-batch lr optimum (parabola in log lr through the best grid point and its neighbours), "
                      "pooled within-group least squares of log lr* on log batch",
            "note": self.note_,
            "warning": self.warning_ or None,
        }
