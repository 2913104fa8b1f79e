"""``GET /api/v1/sweeps``, ``/sweeps/{sweep}`` and ``/sweeps/{sweep}/groups``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from hpscale.service.api.glue import sweeps as glue
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep
from hpscale.service.api.problems import problem_responses
from hpscale.service.inputs import TEXT

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

SweepRef = Annotated[str, Path(min_length=1, max_length=200, description="The sweep's id or name."), TEXT]


@router.get("", response_model=list[s.SweepSummary], responses=problem_responses())
def list_sweeps(db: DbDep) -> list[s.SweepSummary]:
    """Every sweep with its progress (runs by status)."""
    return glue.list_sweeps(db)


@router.get("/{sweep}", response_model=s.SweepDetail, responses=problem_responses(404, 422))
def get_sweep(db: DbDep, sweep: SweepRef) -> s.SweepDetail:
    """One sweep with its spec and progress."""
    return glue.sweep_detail(db, sweep)


@router.get("/{sweep}/groups", response_model=list[s.Group], responses=problem_responses(404, 422))
def sweep_groups(db: DbDep, sweep: SweepRef) -> list[s.Group]:
    """Per (N, D) group: the runs with lr, batch, final loss and status, the best run, the
    near-optimal set (within 0.25% of the best final loss) and the smooth optimum."""
    return glue.sweep_groups(db, sweep)
