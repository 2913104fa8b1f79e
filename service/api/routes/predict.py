"""``POST /api/v1/predict/curve``: a trajectory law's loss curve for a learning-rate schedule."""

from __future__ import annotations

from fastapi import APIRouter

from hpscale.service.api.glue import predict as glue
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep, SettingsDep
from hpscale.service.api.limits import check_schedule
from hpscale.service.api.problems import problem_responses

router = APIRouter(prefix="/predict", tags=["predict"])


@router.post("/curve", response_model=s.CurvePrediction, responses=problem_responses(400, 404, 413, 422, rules=(
    "law: a trajectory law",
    "warmup_steps at most total_steps",
    "a table schedule needs an lr > 0",
    "at most HPSCALE_MAX_CURVE_STEPS schedule steps and HPSCALE_MAX_CURVE_POINTS predicted points",
    "the law must predict a finite loss for the schedule",
)))
def predict_curve(db: DbDep, settings: SettingsDep, body: s.CurvePredictionRequest) -> s.CurvePrediction:
    """The predicted loss at every ``every``-th step after warmup (and the last) of a named
    schedule (constant, cosine, linear, wsd; with warmup) or of a step-wise table. Schedules
    longer than HPSCALE_MAX_CURVE_STEPS steps (default 2,000,000), or answers of more than
    HPSCALE_MAX_CURVE_POINTS points (ask for a larger ``every``), are a 422 problem. A read: no
    API key needed."""
    check_schedule(body, settings)
    return glue.predict_curve(db, body, settings.max_curve_steps)
