"""``GET /api/v1/runs``, ``/runs/{id}``, ``/runs/{id}/curve``, ``POST /api/v1/runs`` and ``DELETE /api/v1/runs``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from hpscale.service.api.glue import runs as glue
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep, LawCacheDep, SettingsDep, WriteAccess
from hpscale.service.api.limits import check_runs_import
from hpscale.service.api.problems import problem_responses
from hpscale.service.inputs import TEXT

router = APIRouter(prefix="/runs", tags=["runs"])

RunId = Annotated[int, Path(ge=1, description="The run's id.")]


@router.get("", response_model=s.RunPage, responses=problem_responses(422))
def list_runs(
    db: DbDep,
    source: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=200), TEXT]] | None,
        Query(max_length=100, description="Only runs of these sources (repeat the parameter for several)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Runs per page.")] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Runs to skip.")] = 0,
) -> s.RunPage:
    """Stored runs ordered by (source, id), one page at a time."""
    return glue.run_page(db, source, limit, offset)


@router.get("/{run_id}", response_model=s.RunDetail, responses=problem_responses(404, 422))
def get_run(db: DbDep, run_id: RunId) -> s.RunDetail:
    """One run with its configuration, outcome and provenance."""
    return glue.run_detail(db, run_id)


@router.get("/{run_id}/curve", response_model=s.RunCurve, responses=problem_responses(404, 422))
def get_run_curve(db: DbDep, run_id: RunId) -> s.RunCurve:
    """A run's logged loss curve (step, tokens, lr, train and validation loss)."""
    return glue.run_curve(db, run_id)


@router.post(
    "", response_model=s.ImportResult, dependencies=[WriteAccess],
    responses=problem_responses(400, 401, 403, 409, 413, 422, rules=(
        "batch_tokens, when given with batch_size and seq_len, equals batch_size x seq_len",
        "run names unique within the request",
        "a curve's steps unique within the run",
        "at most HPSCALE_MAX_CURVE_POINTS curve points in all",
        "tags nested at most 8 levels deep, at most 16 KiB as JSON, finite numbers only",
    )),
)
def import_runs(db: DbDep, settings: SettingsDep, body: s.RunsImport) -> s.ImportResult:
    """Store runs in hpscale's import format (all or nothing); runs whose (source, name) is
    already stored are skipped, also when sent by several clients at once, so re-sending a batch
    adds nothing. At most HPSCALE_MAX_RUNS_PER_REQUEST runs and HPSCALE_MAX_CURVE_POINTS curve
    points a request. Needs X-API-Key."""
    check_runs_import(body, settings)
    return glue.import_runs(db, body)


@router.delete(
    "", response_model=s.RunsDeleted, dependencies=[WriteAccess], responses=problem_responses(401, 403, 404, 409, 422),
)
def delete_runs(
    db: DbDep,
    laws: LawCacheDep,
    source: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=200), TEXT]],
        Query(min_length=1, max_length=100, description="Delete the runs of these sources (repeat the parameter for "
              "several); with name, only those runs of them."),
    ],
    name: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=300), TEXT]] | None,
        Query(max_length=1000, description="Only the runs of these names (repeat the parameter for several)."),
    ] = None,
    force: Annotated[bool, Query(description="Also delete the fitted laws that used these runs.")] = False,
) -> s.RunsDeleted:
    """Delete runs with their curves, all or nothing: 404 when a source or name matches no run,
    409 for a run of a sweep, and 409 naming the fitted laws that used a run unless
    ``force=true``, which deletes those laws too. Needs X-API-Key."""
    deleted = glue.delete_runs(db, source, name, force)
    if deleted.laws:
        laws.clear()  # a deleted law may have been the default for recommendations
    return deleted
