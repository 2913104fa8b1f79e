"""``GET /api/v1/laws`` and ``/laws/{law}``: published and fitted laws."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from hpscale.service.api.glue import laws as glue
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep
from hpscale.service.api.problems import problem_responses
from hpscale.service.inputs import TEXT
from hpscale.service.runformat import OPTIMIZER_RE

router = APIRouter(prefix="/laws", tags=["laws"])

LawKind = Literal["hyper", "loss", "trajectory", "critical_batch"]


@router.get("", response_model=list[s.LawSummary], responses=problem_responses(422))
def list_laws(
    db: DbDep,
    kind: Annotated[LawKind | None, Query(description="Only laws of this kind.")] = None,
    origin: Annotated[Literal["published", "fitted"] | None, Query(description="Only published or fitted laws.")] = None,
    optimizer: Annotated[
        str | None, Query(pattern=OPTIMIZER_RE, description="Only laws fitted on this optimizer (published: adamw).")
    ] = None,
) -> list[s.LawSummary]:
    """Every stored law, by id (the published laws come first)."""
    return glue.list_laws(db, kind, origin, optimizer)


@router.get("/{law}", response_model=s.LawDetail, responses=problem_responses(404, 422, rules=(
    "n_min must not exceed n_max",
)))
def get_law(
    db: DbDep,
    law: Annotated[str, Path(min_length=1, max_length=200, description="The law's id or name."), TEXT],
    n_min: Annotated[float | None, Query(ge=1, le=s.MAX_N_PARAMS, description="Curve: smallest N (default: the data's / 10).")] = None,
    n_max: Annotated[float | None, Query(ge=1, le=s.MAX_N_PARAMS, description="Curve: largest N (default: the data's x 10).")] = None,
    points: Annotated[int, Query(ge=2, le=500, description="Curve: number of log-spaced N.")] = 50,
    tokens: Annotated[
        float | None, Query(ge=1, le=s.MAX_TOKENS, description="Curve: fixed D (default: the middle of the law's data).")
    ] = None,
    tokens_per_param: Annotated[
        float, Query(gt=0, le=1e6, description="Curve: D = this x N for a law without data and no fixed D.")
    ] = 20.0,
) -> s.LawDetail:
    """A law's parameters, intervals, extrapolation report, the runs it was fitted on and curve
    points along N: lr* and B* for a hyper law, the final loss for a loss law (with bootstrap
    bands when the law has samples)."""
    return glue.law_detail(
        db, law, n_min=n_min, n_max=n_max, points=points, tokens=tokens, tokens_per_param=tokens_per_param
    )
