"""``GET /healthz``: the process is up and its database answers (for HEALTHCHECK and probes)."""

from __future__ import annotations

from fastapi import APIRouter

from hpscale.db.provenance import code_version
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep
from hpscale.service.api.problems import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=s.Health, responses=problem_responses())
def healthz(db: DbDep) -> s.Health:
    """Liveness and database reachability; 503 problem when the database does not answer."""
    # current_revision() opens a connection: a dead database raises StorageError -> 503.
    return s.Health(status="ok", version=code_version(), database=db.safe_url, schema_revision=db.current_revision())
