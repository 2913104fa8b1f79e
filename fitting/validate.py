"""Extrapolation check: hold out the largest scale, refit on the rest, score the held-out data.

Scaling laws exist to extrapolate, so in-sample fit says little; every stored fit carries
this report. What is held out: for runs, the groups of the largest N (``holdout="n_params"``)
or, for each N, its largest D (``holdout="tokens"``); for loss curves, the longest curve; for
critical batch data, the largest model size. The report is a JSON-safe dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from hpscale.fitting.critical import CriticalBatchLaw
from hpscale.fitting.errors import FittingError, InsufficientDataError
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.loss import LossLaw
from hpscale.fitting.noise import repeat_noise
from hpscale.fitting.optimum import group_optima
from hpscale.fitting.runs import RunSet
from hpscale.fitting.trajectory import LossCurve, _TrajectoryLaw

HOLDOUTS: tuple[str, ...] = ("n_params", "tokens")
# The local landscape's quadratic is fitted on the configurations within this much (relative) of
# the best: its basin, not the diverging lrs beyond it.
LANDSCAPE_BAND = 0.05


def _holdout_mask(runs: RunSet, holdout: str) -> np.ndarray:
    if holdout not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")
    if holdout == "n_params":
        return runs.n_params == runs.n_params.max()
    mask = np.zeros(len(runs), bool)
    for n in np.unique(runs.n_params):
        sizes = runs.n_params == n
        if np.unique(runs.tokens[sizes]).size >= 2:
            mask |= sizes & (runs.tokens == runs.tokens[sizes].max())
    return mask


def _split(runs: RunSet, holdout: str) -> tuple[RunSet, RunSet]:
    """(the runs the refit gets, the held-out configurations). The refit gets the kept runs as
    they are, seeds and diverged runs too, so that it measures noise and grid edges as the fit
    did; the held-out part is scored on configuration means (a lucky seed is no optimum), its
    diverged configurations kept (they bracket an optimum; their loss is NaN)."""
    mask = _holdout_mask(runs, holdout)
    fit_runs, held = runs.subset(~mask), runs.subset(mask).average_repeats()
    if not fit_runs.usable.any() or not held.usable.any():
        raise InsufficientDataError(f"holding out the largest {holdout} leaves nothing to fit or nothing to test")
    return fit_runs, held


def _refit(law: Any, part: str, *args: Any, **kwargs: Any) -> Any:
    """``law.fit`` on the data without the held-out ``part``. Its refusal speaks of the data it
    was given ("every group has n_params=..." of a fit over two sizes), so it is said to be that."""
    try:
        return law.fit(*args, **kwargs)
    except InsufficientDataError as exc:
        raise InsufficientDataError(f"without the held-out {part}, {exc}") from None


HELD_OUT = {"n_params": "largest model size", "tokens": "largest token budget of each size"}
# A held-out group whose best run is at one of these says nothing about where its lr* lies.
LR_EDGE_WORDS = {"lr_low": "lowest lr searched", "lr_high": "highest lr searched", "lr_unsearched": "only lr searched"}


def _hyper_report(law: HyperLaw, runs: RunSet, holdout: str) -> dict[str, Any]:
    fit_runs, test_runs = _split(runs, holdout)
    refit = _refit(replace(law, n_bootstrap=0), HELD_OUT[holdout], fit_runs)
    rows = []
    for g in group_optima(test_runs, law.eps):
        pred = refit.predict(g.n_params, g.tokens)
        in_group = (test_runs.n_params == g.n_params) & (test_runs.tokens == g.tokens) & test_runs.usable
        if test_runs.arch is not None:  # two architectures of one (N, D) are two groups
            in_group &= np.array([a == g.arch for a in test_runs.arch])
        lr, bt, loss = test_runs.lr[in_group], test_runs.batch_tokens[in_group], test_runs.final_loss[in_group]
        # The grid run a user would pick: nearest to the recommendation in (log lr, log B).
        dist = (np.log(lr) - np.log(pred.lr)) ** 2 + (np.log(bt) - np.log(pred.batch_tokens)) ** 2
        nearest = int(np.argmin(dist))
        # Regret needs a grid to choose from; a lone run says nothing about the recommendation.
        has_grid = np.unique(np.round(np.column_stack([np.log(lr), np.log(bt)]), 3), axis=0).shape[0] >= 2
        rows.append({
            "n_params": g.n_params, "tokens": g.tokens,
            "lr_pred": pred.lr, "lr_opt": g.lr, "lr_log_error": float(np.log(pred.lr / g.lr)),
            "batch_tokens_pred": pred.batch_tokens, "batch_tokens_opt": g.batch_tokens,
            "batch_log_error": float(np.log(pred.batch_tokens / g.batch_tokens)),
            "nearest_lr": float(lr[nearest]), "nearest_batch_tokens": float(bt[nearest]),
            "loss_regret": float(loss[nearest] / loss.min() - 1.0) if has_grid else None,
            "lr_edge": [e for e in g.edges if e in LR_EDGE_WORDS],
        })
    # A held-out group whose best run is its grid's lowest or highest lr does not know its own
    # optimum: a recommendation beyond that edge scores the edge run, i.e. no regret at all, so
    # such a group can only make a law look good. The scores are over the bracketed groups; with
    # none, the check is inconclusive (and does not pass).
    scored = [r for r in rows if not r["lr_edge"]]
    where = " or ".join(LR_EDGE_WORDS[e] for e in LR_EDGE_WORDS if any(e in r["lr_edge"] for r in rows))
    inconclusive = None if scored else (
        f"all {len(rows)} held-out groups have their best run at the {where} of their lr grid, so their optimum, "
        "and the law's error there, is not known")
    use = scored or rows  # the lr and batch errors are shown either way; a regret only where it means something
    regrets = [r["loss_regret"] for r in scored if r["loss_regret"] is not None]
    return {
        "n_fit_runs": len(fit_runs), "n_held_out_runs": len(test_runs), "groups": rows,
        "groups_on_lr_edge": len(rows) - len(scored), "inconclusive": inconclusive,
        "mean_abs_lr_log_error": float(np.mean([abs(r["lr_log_error"]) for r in use])),
        "mean_abs_batch_log_error": float(np.mean([abs(r["batch_log_error"]) for r in use])),
        "mean_loss_regret": float(np.mean(regrets)) if regrets else None,
        "max_loss_regret": float(np.max(regrets)) if regrets else None,
    }


def regret(lr: np.ndarray, batch: np.ndarray, loss: np.ndarray, lr_rec: float, batch_rec: float) -> dict[str, Any]:
    """How much worse a recommendation (``lr_rec``, ``batch_rec`` tokens) is than the best of a
    held-out grid (``lr``, ``batch``, ``loss`` of its configurations, seeds averaged by the caller).

    ``nearest``: the loss of the grid configuration nearest the recommendation in (log lr, log B)
    over the grid's best, minus 1 (what a user who rounds to the grid gets). ``smooth``: the same
    read off a quadratic in (log lr, log B) fitted to the configurations within LANDSCAPE_BAND of
    the best, evaluated at the recommendation (clipped to the grid's box) against the surface's own
    minimum in that box: less at the mercy of one run's noise. None when there is no grid, or no
    convex surface (``smooth``)."""
    lr, batch, loss = (np.asarray(a, float) for a in (lr, batch, loss))
    x, y = np.log(lr), np.log(batch)
    points = np.unique(np.round(np.column_stack([x, y]), 3), axis=0).shape[0]
    if points < 2:
        return {"nearest": None, "smooth": None}
    xr, yr = np.log(lr_rec), np.log(batch_rec)
    nearest = int(np.argmin((x - xr) ** 2 + (y - yr) ** 2))
    out: dict[str, Any] = {"nearest": float(loss[nearest] / loss.min() - 1.0), "smooth": None,
                           "nearest_lr": float(lr[nearest]), "nearest_batch_tokens": float(batch[nearest])}
    use = loss <= loss.min() * (1.0 + LANDSCAPE_BAND)
    two_d = np.unique(np.round(y[use], 3)).size >= 2
    cols = [np.ones(use.sum()), x[use], x[use] ** 2] + ([y[use], y[use] ** 2, x[use] * y[use]] if two_d else [])
    if use.sum() <= len(cols):
        return out
    coef, *_ = np.linalg.lstsq(np.column_stack(cols), np.log(loss[use]), rcond=None)

    def surface(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        terms = [np.ones_like(px), px, px**2] + ([py, py**2, px * py] if two_d else [])
        return np.exp(sum(c * t for c, t in zip(coef, terms)))

    gx = np.linspace(x.min(), x.max(), 121)
    gy = np.linspace(y.min(), y.max(), 121) if two_d else np.array([yr])
    mx, my = np.meshgrid(gx, gy)
    best = surface(mx, my).min()
    at = float(surface(np.clip(np.array([xr]), x.min(), x.max()), np.clip(np.array([yr]), y.min(), y.max()))[0])
    if coef[2] > 0:  # convex along lr at least: a basin to read regret off
        out["smooth"] = float(max(at / best - 1.0, 0.0))
    return out


def seed_regret(runs: RunSet, lr_rec: float, batch_rec: float, n_bootstrap: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """Regret of a recommendation on a held-out grid of one (N, D) trained with several seeds.

    Runs of one (lr, batch tokens) are seeds of one configuration. The best configuration is the
    finite one with the lowest seed-mean final loss; ``regret`` is the seed-mean loss of the
    configuration nearest the recommendation (``lr_rec``, ``batch_rec`` tokens) in (log lr, log B)
    over that best, minus 1 (None, and so are the interval, p_best, nearest and smooth, when that
    configuration diverged or no other configuration is finite: nothing to compare). ``interval`` is its 95%
    interval from a parametric bootstrap of the seed means with the pooled within-configuration
    noise (:func:`fitting.noise.repeat_noise`: the basin bottom's, where the contest for the best
    is, so a recommendation far up a wall, whose seeds spread more, gets a narrower interval than
    its own spread would give; its own uncertainty drawn too) that chooses the
    best again in every sample; ``p_best`` is the share of samples in which the recommended
    configuration is the best. Both are None without enough repeats to measure the noise.
    In synthetic held-out lines (8 configurations, 3 seeds, 0.2-1% noise, 300 trials each;
    ``benchmarks/seed_regret_coverage.py``, BENCHMARKS.md) it covered the true regret in 88-100%
    of trials, least at 0.5-1% noise, where picking the best of noisy means biases the estimate;
    resampling each configuration's own seeds instead covered it in 74-98%. ``smooth`` and
    ``nearest`` are :func:`regret` on the seed means; ``config`` is the recommended
    configuration (with its seed-mean loss ``mean``, nats), ``configs`` lists every
    configuration (lr, batch_tokens, n, mean, sd) by mean loss."""
    if len(runs) == 0 or not runs.usable.any():
        raise InsufficientDataError("a seed regret needs finished held-out runs")
    if len(set(zip(runs.n_params.tolist(), runs.tokens.tolist()))) > 1:
        raise FittingError("a seed regret compares configurations of one model size and token budget")
    if not (np.isfinite(runs.lr).all() and np.isfinite(runs.batch_tokens).all()):
        raise FittingError("a seed regret needs the lr and batch of every held-out run")
    if not (lr_rec > 0 and batch_rec > 0 and math.isfinite(lr_rec) and math.isfinite(batch_rec)):
        raise FittingError(f"a recommendation needs a positive lr and batch, got {lr_rec!r} and {batch_rec!r}")
    if n_bootstrap < 1:
        raise FittingError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    configs = runs.average_repeats()
    members = configs.members or [(name,) for name in configs.names]
    n = np.array([len(m) for m in members])
    finite = configs.usable
    log_mean = np.where(finite, np.log(np.where(finite, configs.final_loss, 1.0)), np.inf)
    rec = int(np.argmin(np.log(configs.lr / lr_rec) ** 2 + np.log(configs.batch_tokens / batch_rec) ** 2))
    best = int(np.argmin(log_mean))
    # A regret needs a finite recommended configuration and something to compare it with.
    scored = bool(finite[rec]) and int(finite.sum()) >= 2
    noise = repeat_noise(runs)
    out: dict[str, Any] = {
        "regret": float(np.exp(log_mean[rec] - log_mean[best]) - 1.0) if scored else None,
        "interval": None, "p_best": None, "nearest": None, "smooth": None,
        "noise": None if noise is None else {"rel_std": noise.rel_std, "dof": noise.dof},
        "config": {"lr": float(configs.lr[rec]), "batch_tokens": float(configs.batch_tokens[rec]),
                   "n": int(n[rec]), "diverged": bool(not finite[rec]),
                   "mean": float(configs.final_loss[rec]) if finite[rec] else None},
        "best": None if not finite.any() else {
            "lr": float(configs.lr[best]), "batch_tokens": float(configs.batch_tokens[best]),
            "loss": float(configs.final_loss[best]), "n": int(n[best])},
        "configs": [],
    }
    names = {name: i for i, name in enumerate(runs.names)}
    for c in np.argsort(np.where(finite, configs.final_loss, np.inf), kind="stable"):
        losses = runs.final_loss[[names[m] for m in members[c]]]
        out["configs"].append({  # mean and sd of the seeds' final loss, nats
            "lr": float(configs.lr[c]), "batch_tokens": float(configs.batch_tokens[c]), "n": int(n[c]),
            "mean": float(configs.final_loss[c]) if finite[c] else None,
            "sd": float(np.std(losses, ddof=1)) if finite[c] and n[c] > 1 else None})
    if not scored:
        return out
    if noise is not None:
        rng = np.random.default_rng(seed)
        # sigma ~ s * sqrt(dof / chi2(dof)): the noise is itself measured from few seeds.
        sigma = noise.rel_std * np.sqrt(noise.dof / rng.chisquare(noise.dof, size=(n_bootstrap, 1)))
        boot = log_mean[finite] + sigma * rng.standard_normal((n_bootstrap, int(finite.sum()))) / np.sqrt(n[finite])
        at = int(np.flatnonzero(finite).tolist().index(rec))
        samples = np.exp(boot[:, at] - boot.min(axis=1)) - 1.0
        out["interval"] = [float(v) for v in np.percentile(samples, [2.5, 97.5])]
        out["p_best"] = float(np.mean(np.argmin(boot, axis=1) == at))
    # The recommendation is finite here, so the nearest finite configuration is the same one.
    out.update({k: v for k, v in regret(configs.lr[finite], configs.batch_tokens[finite],
                                        configs.final_loss[finite], lr_rec, batch_rec).items()
                if k in ("nearest", "smooth")})
    return out


def _loss_report(law: LossLaw, runs: RunSet, holdout: str) -> dict[str, Any]:
    fit_runs, test_runs = _split(runs, holdout)
    refit = _refit(replace(law, n_bootstrap=0), HELD_OUT[holdout], fit_runs)
    test_runs = test_runs.subset(test_runs.usable)
    gid, keys = test_runs.group_keys()
    rows = []
    for g, (n, d) in enumerate(keys):
        best = float(test_runs.final_loss[gid == g].min())
        pred = refit.predict(n, d).loss
        rows.append({"n_params": n, "tokens": d, "loss": best, "loss_pred": pred, "rel_error": pred / best - 1.0})
    errs = np.abs([r["rel_error"] for r in rows])
    return {"n_fit_runs": len(fit_runs), "n_held_out_runs": len(test_runs), "groups": rows,
            "mean_abs_rel_error": float(errs.mean()), "max_abs_rel_error": float(errs.max())}


def _trajectory_report(law: _TrajectoryLaw, curves: Sequence[LossCurve]) -> dict[str, Any]:
    longest = max(range(len(curves)), key=lambda i: int(np.max(curves[i].steps)))
    rest = [c for i, c in enumerate(curves) if i != longest]
    refit = _refit(replace(law), "longest curve", rest)
    score = refit.score([curves[longest]])
    return {"held_out_curve": curves[longest].name, "fit_curves": [c.name for c in rest],
            "mean_rel_error": score["mean"], "max_rel_error": score["worst"]}


def _critical_report(law: CriticalBatchLaw, data: dict[str, Any]) -> dict[str, Any]:
    n = np.asarray(data["n_params"], float)
    keep = n < n.max()
    fit_data = {k: np.asarray(v)[keep] for k, v in data.items() if k != "names"}
    test_data = {k: np.asarray(v)[~keep] for k, v in data.items() if k != "names"}
    refit = _refit(replace(law, n_bootstrap=0), "largest model size", **fit_data)
    full = replace(law, n_bootstrap=0).fit(**{k: np.asarray(v) for k, v in data.items() if k != "names"})
    assert full.targets_ is not None
    rows = []
    for t in full.targets_:
        if t.n_params != test_data["n_params"].max():
            continue
        x = {"n_params": t.n_params, "tokens": t.e_min, "target_loss": t.target_loss}[law.by]
        pred = refit.predict(x)
        rows.append({"n_params": t.n_params, "target_loss": t.target_loss, "b_crit": t.b_crit,
                     "b_crit_pred": pred, "log_error": float(np.log(pred / t.b_crit))})
    return {"targets": rows, "mean_abs_log_error": float(np.mean([abs(r["log_error"]) for r in rows]))}


def extrapolation_check(law: Any, data: Any, holdout: str = "n_params") -> dict[str, Any]:
    """Refit ``law``'s settings without the largest scale of ``data`` and score the held-out
    part. ``data``: a RunSet for hyper and loss laws, a list of LossCurve for trajectory laws,
    the dict of arrays ``CriticalBatchLaw.fit`` takes for critical batch laws. Bootstrap is
    switched off in the refit (the check scores the point estimate)."""
    if isinstance(law, _TrajectoryLaw) and len(data) < 2:
        raise InsufficientDataError("a trajectory extrapolation check needs at least two curves")
    if isinstance(law, HyperLaw):
        report = _hyper_report(law, data, holdout)
    elif isinstance(law, LossLaw):
        report = _loss_report(law, data, holdout)
    elif isinstance(law, _TrajectoryLaw):
        report = _trajectory_report(law, data)
        holdout = "steps"
    elif isinstance(law, CriticalBatchLaw):
        report = _critical_report(law, data)
        holdout = "n_params"
    else:
        raise FittingError(f"no extrapolation check for {type(law).__name__}")
    return {"kind": law.kind, "form": law.form, "holdout": holdout, **report}
