"""Run-to-run noise of the final loss, and the near-optimal band it implies.

Two runs of one configuration (N, D, lr, batch) do not reach the same final loss: seeds change
the initialisation and the batch order, and GPU kernels are not deterministic. Measured on an
H200 with hpscale's trainer, the relative standard deviation is 0.2-0.8% at 1.8M-7.4M parameters:
as large as the differences a near-optimal band of 0.25% claims to resolve. Every hyper and loss
fit therefore estimates this noise, and says how:

- ``repeats``: the pooled within-configuration standard deviation of log loss, over the
  configurations trained with several seeds (one degree of freedom per extra seed) whose seed
  mean loss lies within ``NOISE_BASIN`` (in log loss) of their group's best. This is the measurement, and is used
  whenever it has ``MIN_DOF`` degrees of freedom. Only the basin's bottom counts because that is
  where the noise is used (near-optimal bands, fitting windows, regrets), and the noise grows up
  the basin's walls: in validation run 4 (624 runs, 2 seeds each) the configurations within 2%
  of their group's best spread by 0.97%, all of them by 2.88%, those near divergence by 5%. Seed
  means are independent of the seeds' spread (for normal noise), so choosing configurations by
  their mean does not bias the estimate.
- ``residuals``: without repeats, the scatter of each group's runs around a smooth surface
  (a quadratic in log lr and log batch fitted to the runs nearest the group's best), pooled
  over groups. A quadratic describes the bottom of the basin well but not its sides, so only
  the runs within ``SURFACE_BAND`` of the best are used; the estimate still includes some
  misfit, so it errs on the wide side.

Units: noise is the standard deviation of log(final loss), i.e. relative (0.005 = 0.5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpscale.fitting.runs import RunSet

MIN_DOF = 3
# Repeated configurations whose log seed-mean loss lies within this of their group's best measure
# the noise (the module doc says why); with fewer than MIN_DOF degrees of freedom there, all do.
NOISE_BASIN = 0.02
# Runs within this band of log loss above a group's best describe the basin's bottom.
SURFACE_BAND = 0.01
SURFACE_MIN_POINTS = 12
SURFACE_COEFFICIENTS = 6  # 1, x, y, x^2, y^2, xy
# One-sided 95%: a configuration leaves the near-optimal set only when its mean loss is worse
# than the best one's by more than the noise can explain at that level.
BAND_Z = 1.645


@dataclass(frozen=True)
class NoiseEstimate:
    """Relative run-to-run noise of one run's final loss (std of log loss).

    ``source`` is "repeats", "residuals" or "none" (too little data: the band falls back to
    the fixed eps); ``dof`` the degrees of freedom behind it; ``configurations`` how many
    configurations (repeated ones for "repeats", fitted groups for "residuals") it pools.
    """

    rel_std: float | None
    source: str
    dof: int
    configurations: int

    def to_record(self) -> dict[str, Any]:
        return {"rel_std": None if self.rel_std is None else float(self.rel_std), "source": self.source,
                "dof": int(self.dof), "configurations": int(self.configurations)}

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> "NoiseEstimate | None":
        if not isinstance(record, dict):
            return None
        rel = record.get("rel_std")
        return cls(rel_std=None if rel is None else float(rel), source=str(record.get("source", "none")),
                   dof=int(record.get("dof", 0)), configurations=int(record.get("configurations", 0)))

    def describe(self) -> str:
        """One line for people: '0.52% (from 40 repeated configurations, 40 dof)'."""
        if self.rel_std is None:
            return "not estimated (too few runs); the fixed near-optimal band is used"
        how = "repeated configurations" if self.source == "repeats" else "groups' residuals around a smooth surface"
        return f"{100 * self.rel_std:.2f}% (from {self.configurations} {how}, {self.dof} dof)"


NO_NOISE = NoiseEstimate(rel_std=None, source="none", dof=0, configurations=0)


def repeat_noise(runs: RunSet, basin: float | None = NOISE_BASIN) -> NoiseEstimate | None:
    """Pooled within-configuration std of log loss over configurations with several finite runs
    (the repeats ``RunSet.average_repeats`` merges: one configuration and architecture, a
    duplicated row counted once) whose log seed-mean loss is within ``basin`` of the best of
    their (N, D) group; over every repeated configuration when those have fewer than MIN_DOF
    degrees of freedom, or when ``basin`` is None. None when fewer than MIN_DOF degrees of
    freedom exist at all. Diverged runs are left out."""
    usable = runs.subset(runs.usable)
    configs = usable.average_repeats()
    # Nothing repeats. (A set averaged before comes back as itself: its members name the seeds it
    # no longer holds, so there is no spread to measure.)
    if configs is usable or configs.members is None:
        return None
    row = {name: i for i, name in enumerate(usable.names)}
    gid, keys = configs.group_keys()
    log_mean = np.log(configs.final_loss)
    above = log_mean - np.array([log_mean[gid == g].min() for g in range(len(keys))])[gid]
    # Per repeated configuration: its distance above its group's best, squares, dof.
    spread = []
    for c, members in enumerate(configs.members):
        if len(members) >= 2:
            arr = np.log(usable.final_loss[[row[m] for m in members]])
            spread.append((float(above[c]), float(np.sum((arr - arr.mean()) ** 2)), arr.size - 1))
    for limit in ((basin, math.inf) if basin is not None else (math.inf,)):
        near = [(ss, dof) for a, ss, dof in spread if a <= limit]
        dof = sum(d for _, d in near)
        if dof >= MIN_DOF:
            return NoiseEstimate(rel_std=math.sqrt(sum(ss for ss, _ in near) / dof), source="repeats",
                                 dof=dof, configurations=len(near))
    return None


def residual_noise(runs: RunSet) -> NoiseEstimate | None:
    """Pooled residual std of log loss around each group's local quadratic surface (see the
    module doc), over configuration means; None with fewer than MIN_DOF degrees of freedom."""
    configs = runs.average_repeats()
    ok = configs.usable & np.isfinite(configs.lr) & np.isfinite(configs.batch_tokens)
    if not ok.any():
        return None
    usable = configs.subset(ok)
    gid, keys = usable.group_keys()
    ss, dof, groups = 0.0, 0, 0
    for g in range(len(keys)):
        idx = np.flatnonzero(gid == g)
        x, y, z = np.log(usable.lr[idx]), np.log(usable.batch_tokens[idx]), np.log(usable.final_loss[idx])
        use = z <= z.min() + SURFACE_BAND
        if use.sum() < SURFACE_MIN_POINTS:
            use = np.argsort(np.argsort(z, kind="stable")) < SURFACE_MIN_POINTS
        x, y, z = x[use], y[use], z[use]
        cols = [np.ones_like(x), x - x.mean(), x ** 2 - (x ** 2).mean()]
        if np.ptp(y) > 1e-9:
            cols += [y - y.mean(), (y - y.mean()) ** 2, (x - x.mean()) * (y - y.mean())]
        design = np.column_stack(cols)
        rank = np.linalg.matrix_rank(design)
        if z.size - rank < 1:
            continue
        coef, *_ = np.linalg.lstsq(design, z, rcond=None)
        resid = z - design @ coef
        ss += float(resid @ resid)
        dof += int(z.size - rank)
        groups += 1
    if dof < MIN_DOF:
        return None
    return NoiseEstimate(rel_std=math.sqrt(ss / dof), source="residuals", dof=dof, configurations=groups)


def estimate_noise(runs: RunSet) -> NoiseEstimate:
    """The noise of one run's final loss: from repeats when there are enough, else from the
    residuals around each group's smooth surface, else NO_NOISE."""
    return repeat_noise(runs) or residual_noise(runs) or NO_NOISE


def near_optimal_band(noise: NoiseEstimate | None, eps: float, n_seeds: np.ndarray | int = 1,
                      n_best: int = 1) -> np.ndarray:
    """Relative band above a group's best mean loss within which a configuration counts as
    near-optimal: ``max(eps, z * noise * sqrt(1/n + 1/n_best))`` for a configuration averaged
    over ``n`` seeds against a best averaged over ``n_best`` (a difference of two means).
    Never narrower than ``eps`` (Step Law's 0.25%)."""
    n = np.asarray(n_seeds, dtype=float)
    if noise is None or noise.rel_std is None:
        return np.full(n.shape, float(eps))
    # Bands are relative in loss; the noise is in log loss: exp(z s) - 1 ~ z s for small s.
    return np.maximum(eps, np.expm1(BAND_Z * noise.rel_std * np.sqrt(1.0 / n + 1.0 / max(n_best, 1))))
