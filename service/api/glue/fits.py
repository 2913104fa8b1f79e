"""``POST /fits``: fit a law on stored runs (the fitting glue itself is ``service.fits``)."""

from __future__ import annotations

from hpscale.db.engine import Database
from hpscale.service import fits
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.laws import law_detail


def fit_law(db: Database, body: s.FitRequest) -> s.LawDetail:
    """Fit a law from stored runs, store it with its provenance, and describe it."""
    row = fits.fit_and_store(
        db, kind=body.kind, form=body.form, sources=body.sources, run_names=body.runs, n_bootstrap=body.bootstrap,
        seed=body.seed, method=body.method, prior=body.prior, prior_width=body.prior_width,
        on_edge="warn" if body.allow_edge else None, mix=body.mix, optimizer=body.optimizer, by=body.by,
    )
    return law_detail(db, str(row.id))
