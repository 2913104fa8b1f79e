"""``/sweeps``: sweeps, their progress, and the optimum of each (N, D) group."""

from __future__ import annotations

from typing import Any


from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.models import Run, Sweep
from hpscale.fitting.errors import FittingError
from hpscale.fitting.hyper import compute_flops
from hpscale.fitting.noise import NO_NOISE, NoiseEstimate, estimate_noise
from hpscale.fitting.optimum import GroupOptimum as FitGroupOptimum
from hpscale.fitting.optimum import describe_edges, group_optima
from hpscale.service import fits
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.common import NEAR_OPTIMAL_EPS, finite
from hpscale.service.jsonsafe import json_safe
from hpscale.sweeps.status import sweep_state


def _sweep_summary(row: Sweep, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "status": sweep_state(counts), "corpus_hash": row.corpus_hash,
        "code_version": row.code_version, "created_at": row.created_at, "n_runs": sum(counts.values()),
        "runs_by_status": counts,
    }


def list_sweeps(db: Database) -> list[s.SweepSummary]:
    """Every sweep with its progress."""
    counts = storage.sweep_run_counts(db)
    return [s.SweepSummary(**_sweep_summary(r, counts.get(r.id, {}))) for r in storage.list_sweeps(db)]


def sweep_detail(db: Database, sweep: str) -> s.SweepDetail:
    """One sweep (by id or name) with its spec and progress."""
    row = storage.get_sweep(db, sweep)
    counts = storage.sweep_run_counts(db).get(row.id, {})
    return s.SweepDetail(**_sweep_summary(row, counts), spec=json_safe(row.spec) or {})


def sweep_groups(db: Database, sweep: str, eps: float = NEAR_OPTIMAL_EPS) -> list[s.Group]:
    """Per (optimizer, N, D) group of a sweep: its runs, the best, the near-optimal set and the
    smooth optimum when the group's finished runs allow one. The near-optimal band is a fit's:
    the sweep's run-to-run noise (measured on all its finished runs), never narrower than
    ``eps``; each group reports the band it used."""
    row = storage.get_sweep(db, sweep)
    runs = storage.list_runs(db, sweep_id=row.id)
    finished = [r for r in runs if r.status in ("done", "diverged") and r.lr is not None and r.batch_tokens is not None]
    try:
        noise = estimate_noise(fits.runset(finished).require_usable()) if finished else NO_NOISE
    except FittingError:  # nothing finished with a loss yet
        noise = NO_NOISE
    by_group: dict[tuple[str, float, float], list[Run]] = {}
    for r in runs:
        by_group.setdefault((r.optimizer, r.n_params, r.tokens), []).append(r)
    out = []
    # AdamW's groups first (the published laws' optimizer), then the others by name.
    for (optimizer, n, d), members in sorted(by_group.items(), key=lambda kv: (kv[0][0] != "adamw", kv[0])):
        # The fitting engine's optimum, so that the page shows what a fit uses: a diverged run is
        # never near-optimal, and seeds of one configuration count by their mean loss.
        judged = [r for r in members if r.status in ("done", "diverged") and r.lr is not None and r.batch_tokens is not None]
        opt = _fit_group(judged, eps, noise)
        near = {judged[int(i)].id for i in opt.near_optimal} if opt else set()
        best = min((r for r in judged if r.id in near and r.lr == opt.best_lr and r.batch_tokens == opt.best_batch_tokens),
                   key=lambda r: r.final_loss) if opt else None  # type: ignore[union-attr]
        out.append(
            s.Group(
                optimizer=optimizer, n_params=n, tokens=d, compute=finite(compute_flops(n, d)),
                runs=[
                    s.GroupRun(
                        id=r.id, name=r.name, lr=r.lr, batch_tokens=r.batch_tokens, batch_size=r.batch_size,
                        final_loss=finite(r.final_loss), final_loss_status=r.final_loss_status, status=r.status,
                        near_optimal=r.id in near,
                    )
                    for r in members
                ],
                best_run_id=best.id if best else None, best_loss=finite(opt.best_loss) if opt else None,
                near_optimal_run_ids=sorted(near), eps=opt.band if opt else eps, optimum=_smooth_optimum(opt, judged),
            )
        )
    return out


def _fit_group(judged: list[Run], eps: float, noise: NoiseEstimate) -> FitGroupOptimum | None:
    """The optimum of one group's finished runs (lr and batch known), or None when none finished."""
    try:
        groups = group_optima(fits.runset(judged), eps, noise) if judged else []
    except FittingError:  # every run diverged
        return None
    return groups[0] if len(groups) == 1 else None


def _smooth_optimum(opt: FitGroupOptimum | None, judged: list[Run]) -> s.GroupOptimum | None:
    """The group's smooth optimum, or None with fewer than three finished runs (no surface to fit)."""
    if opt is None or sum(r.status == "done" for r in judged) < 3 or finite(opt.lr) is None:
        return None
    return s.GroupOptimum(lr=opt.lr, batch_tokens=finite(opt.batch_tokens), method=opt.method, edges=list(opt.edges),
                          edges_text=describe_edges(opt.edges) or None)
