"""``POST /predict/curve``: a trajectory law's loss curve for a schedule."""

from __future__ import annotations

import numpy as np

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.fitting.errors import FittingError
from hpscale.fitting.schedules import lr_schedule
from hpscale.service import fits
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.common import law_ref
from hpscale.service.errors import InputError


def schedule_array(schedule: s.NamedSchedule | s.TableSchedule) -> np.ndarray:
    """The per-step learning rates of a requested schedule (element i: the lr of step i + 1)."""
    try:
        if isinstance(schedule, s.TableSchedule):
            table = [(e.step, e.lr) for e in schedule.table]
            total = schedule.total_steps or max(step for step, _ in table)
            peak = max(lr for _, lr in table)
            if peak <= 0:
                raise InputError("schedule.table: at least one lr must be > 0")
            return lr_schedule("table", total, peak, table=table)
        return lr_schedule(
            schedule.kind, schedule.total_steps, schedule.peak_lr, warmup_steps=schedule.warmup_steps,
            final_lr_ratio=schedule.final_lr_ratio, cooldown_fraction=schedule.cooldown_fraction, decay=schedule.decay,
        )
    except ValueError as exc:  # lr_schedule's refusals are the request's fault
        raise InputError(f"schedule: {exc}") from None


def predict_curve(db: Database, body: s.CurvePredictionRequest, max_points: int | None = None) -> s.CurvePrediction:
    """A trajectory law's predicted loss curve for a schedule (at most ``max_points`` steps)."""
    row = storage.get_law(db, body.law)  # for the answer's law identity; predict checks the kind
    result = fits.predict_curve(db, row.id, schedule_array(body.schedule), body.tokens_per_step, max_points=max_points)
    loss = np.asarray(result["loss"], float)
    if not np.all(np.isfinite(loss)):
        raise FittingError(f"law {row.name} predicts a non-finite loss for this schedule")
    tokens = result.get("tokens")
    return s.CurvePrediction(
        law=law_ref(row), steps=[int(v) for v in result["steps"]], lr=[float(v) for v in result["lr"]],
        loss=loss.tolist(), tokens=[float(v) for v in tokens] if tokens is not None else None,
    )
