"""``POST /predict/curve``: a trajectory law's loss curve for a schedule."""

from __future__ import annotations

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.service import fits
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.common import law_ref
from hpscale.service.runformat import schedule_lrs


def predict_curve(db: Database, body: s.CurvePredictionRequest, max_steps: int) -> s.CurvePrediction:
    """A trajectory law's predicted loss curve for a schedule of at most ``max_steps`` steps."""
    row = storage.get_law(db, body.law)  # for the answer's law identity; predict checks the kind
    lr = schedule_lrs(body.schedule, max_steps=max_steps)
    # A stated warmup is the schedule's own (0, the default, leaves it to inference: a table may
    # hold its own ramp); the fits read recorded schedules the same way (fits.declared_warmup).
    stated = body.schedule.warmup_steps or None
    result = fits.predict_curve(db, row.id, lr, body.tokens_per_step, every=body.every, max_steps=max_steps,
                                warmup_steps=stated)
    tokens = result.get("tokens")
    return s.CurvePrediction(
        law=law_ref(row), steps=[int(v) for v in result["steps"]], lr=[float(v) for v in result["lr"]],
        loss=[float(v) for v in result["loss"]], tokens=[float(v) for v in tokens] if tokens is not None else None,
        warmup_steps=int(result["warmup_steps"]), warnings=list(result["warnings"]),
        held_out=s.HeldOutCurveError(**result["held_out"]) if result["held_out"] else None,
    )
