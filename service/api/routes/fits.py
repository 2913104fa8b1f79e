"""``POST /api/v1/fits``: fit a law from stored runs and store it."""

from __future__ import annotations

from fastapi import APIRouter, Response

from hpscale.service.api.glue import fits as glue
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep, LawCacheDep, WriteAccess
from hpscale.service.api.problems import problem_responses

router = APIRouter(prefix="/fits", tags=["fits"])


@router.post(
    "", status_code=201, response_model=s.LawDetail, dependencies=[WriteAccess],
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
def create_fit(db: DbDep, laws: LawCacheDep, body: s.FitRequest, response: Response) -> s.LawDetail:
    """Fit a law (kind, form, runs chosen by source and/or name, bootstrap resamples), store it
    with its extrapolation report and the exact runs used, and return it. A fit the data cannot
    support is a 422 problem saying what is missing. Needs X-API-Key."""
    law = glue.fit_law(db, body)
    laws.clear()  # the new law may be the default for recommendations from now on
    response.headers["Location"] = f"/api/v1/laws/{law.id}"
    return law
