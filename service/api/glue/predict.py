"""``POST /predict/curve``: a trajectory law's loss curve for a schedule."""

from __future__ import annotations

import numpy as np

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.fitting.errors import FittingError
from hpscale.service import fits
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.common import law_ref
from hpscale.service.runformat import schedule_lrs


def predict_curve(db: Database, body: s.CurvePredictionRequest, max_steps: int) -> s.CurvePrediction:
    """A trajectory law's predicted loss curve for a schedule of at most ``max_steps`` steps."""
    row = storage.get_law(db, body.law)  # for the answer's law identity; predict checks the kind
    lr = schedule_lrs(body.schedule, max_steps=max_steps)
    result = fits.predict_curve(db, row.id, lr, body.tokens_per_step, every=body.every, max_steps=max_steps)
    loss = np.asarray(result["loss"], float)
    if not np.all(np.isfinite(loss)):
        raise FittingError(f"law {row.name} predicts a non-finite loss for this schedule")
    tokens = result.get("tokens")
    return s.CurvePrediction(
        law=law_ref(row), steps=[int(v) for v in result["steps"]], lr=[float(v) for v in result["lr"]],
        loss=loss.tolist(), tokens=[float(v) for v in tokens] if tokens is not None else None,
    )
