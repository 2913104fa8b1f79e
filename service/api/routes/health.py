"""``GET /healthz``: the process is up, its database answers and holds hpscale's current schema
(for HEALTHCHECK and probes)."""

from __future__ import annotations

from fastapi import APIRouter

from hpscale.db.errors import SchemaError
from hpscale.db.provenance import code_version
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep
from hpscale.service.api.problems import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=s.Health, responses=problem_responses())
def healthz(db: DbDep) -> s.Health:
    """Liveness, database reachability and schema: a 503 problem when the database does not
    answer, or when it does not hold hpscale's schema at the revision this code expects (every
    other route would fail then). The body names no URL; the server log has the details."""
    # current_revision() opens a connection: a dead database raises StorageError -> 503.
    revision, head = db.current_revision(), db.head_revision()
    if revision != head:
        found = f"at schema revision {revision}" if revision else "without hpscale's schema"
        raise SchemaError(f"{db.safe_url} is {found}; this hpscale expects revision {head}",
                          public=f"the database is {found}; this hpscale expects revision {head}")
    return s.Health(status="ok", version=code_version(), database=db.engine.dialect.name, schema_revision=revision)
