"""``/runs``: stored runs, their curves, imports and deletes through the API."""

from __future__ import annotations

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.models import Run
from hpscale.fitting.hyper import compute_flops
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.common import finite
from hpscale.service.jsonsafe import json_safe
from hpscale.service.runformat import validate_runs


def run_out(r: Run) -> s.Run:
    """A stored run as the API shows it."""
    return s.Run(
        id=r.id, source=r.source, name=r.name, sweep_id=r.sweep_id, n_params=r.n_params, tokens=r.tokens,
        compute=finite(compute_flops(r.n_params, r.tokens)), lr=r.lr, batch_tokens=r.batch_tokens, batch_size=r.batch_size,
        seq_len=r.seq_len, schedule=r.schedule, optimizer=r.optimizer, status=r.status, final_loss=finite(r.final_loss),
        final_loss_status=r.final_loss_status, tags=json_safe(r.tags), seed=r.seed, corpus_hash=r.corpus_hash,
        code_version=r.code_version, created_at=r.created_at, finished_at=r.finished_at,
    )


def run_detail(db: Database, run_id: int) -> s.RunDetail:
    """One run with its configuration and spec."""
    r = storage.get_run(db, run_id)
    return s.RunDetail(**run_out(r).model_dump(), config=json_safe(r.config), spec=json_safe(r.spec),
                       trunk_key=r.trunk_key)


def run_page(db: Database, sources: list[str] | None, limit: int, offset: int) -> s.RunPage:
    """A page of runs ordered by (source, id)."""
    items = storage.list_runs(db, sources=sources, limit=limit, offset=offset)
    return s.RunPage(
        items=[run_out(r) for r in items], total=storage.count_runs(db, sources=sources), limit=limit, offset=offset
    )


def run_curve(db: Database, run_id: int) -> s.RunCurve:
    """A run's loss curve."""
    points = storage.get_curve(db, run_id)
    return s.RunCurve(
        run_id=run_id,
        points=[
            s.CurvePoint(step=p.step, tokens=finite(p.tokens), lr=finite(p.lr), train_loss=p.train_loss,
                         val_loss=p.val_loss, nonfinite=p.nonfinite)
            for p in points
        ],
    )


def import_runs(db: Database, body: s.RunsImport) -> s.ImportResult:
    """Store runs sent in the import format; known (source, name) keys are skipped."""
    # Re-validated through the import format's one validator: it also refuses repeated names.
    runs = validate_runs([r.model_dump(exclude_unset=True) for r in body.runs])
    result = storage.add_runs(db, [r.to_storage(body.source) for r in runs])
    return s.ImportResult(source=body.source, added=result.added, skipped=result.skipped)


def delete_runs(db: Database, sources: list[str], names: list[str] | None, force: bool) -> s.RunsDeleted:
    """Delete the runs of ``sources`` (only ``names`` of them when given), all or nothing; the
    fitted laws that used them only with ``force`` (else a 409 naming them)."""
    done = storage.delete_runs(db, sources=sources, names=names, with_laws=force)
    return s.RunsDeleted(runs=sum(done.runs.values()), by_source=done.runs,
                         laws=[s.DeletedLaw(id=i, name=n) for i, n in done.laws])
