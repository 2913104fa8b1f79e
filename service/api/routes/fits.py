"""``POST /api/v1/fits``: fit a law from stored runs and store it."""

from __future__ import annotations

from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Response

from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep, LawCacheDep, SettingsDep, WriteAccess
from hpscale.service.api.glue import fits as glue
from hpscale.service.api.limits import check_fit, fit_slots
from hpscale.service.api.problems import problem_responses

router = APIRouter(prefix="/fits", tags=["fits"])


@router.post(
    "", status_code=201, response_model=s.LawDetail, dependencies=[WriteAccess],
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, rules=(
        "form: one of the forms of the kind",
        "runs: names of stored finished runs (within sources when given)",
        "the runs selected must support a fit of the kind (else the problem says what is missing)",
        "without sources or runs, the finished runs stored must be of one source, unless mix",
        "the runs selected must share one corpus, unless mix",
        "the runs selected must share one optimizer (or optimizer names it)",
        "hyper laws on a sweep's runs: no group's best run on the edge of the searched grid, unless allow_edge",
    )),
)
async def create_fit(db: DbDep, laws: LawCacheDep, settings: SettingsDep, body: s.FitRequest, response: Response,
                     slots: Annotated[anyio.CapacityLimiter, Depends(fit_slots)]) -> s.LawDetail:
    """Fit a law (kind, form, runs chosen by source and/or name, bootstrap resamples up to
    HPSCALE_MAX_FIT_BOOTSTRAP), store it with its extrapolation report and the exact runs used,
    and return it. A fit the data cannot support is a 422 problem saying what is missing.
    Fits run in worker threads, at most HPSCALE_MAX_CONCURRENT_FITS at once (others wait), so
    the server keeps answering meanwhile. Needs X-API-Key."""
    check_fit(body, settings)
    # Its own limiter: waiting fits hold no thread, and running ones never take the threads
    # every other route needs.
    law = await anyio.to_thread.run_sync(glue.fit_law, db, body, limiter=slots)
    laws.clear()  # the new law may be the default for recommendations from now on
    response.headers["Location"] = f"/api/v1/laws/{law.id}"
    return law
