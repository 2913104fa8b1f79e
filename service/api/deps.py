"""``Annotated`` dependencies of the routes: the database, the settings, the write key.

They are ``async def`` although they never await: FastAPI runs a sync dependency in the thread
pool, and a thread hop per dependency was most of a recommendation's cost.

The app factory puts one ``Database``, one ``Settings`` and one ``LawCache`` on ``app.state``;
routes receive them through ``DbDep``, ``SettingsDep`` and ``LawCacheDep`` (tests build an app on their own database with
``create_app(Settings(database_url=...))``, so nothing is read from module globals).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from hpscale.db.engine import Database
from hpscale.service.api.glue.recommend import LawCache
from hpscale.service.api.problems import ProblemError
from hpscale.service.settings import Settings

API_KEY_HEADER = "X-API-Key"

# auto_error=False: a missing key is ours to answer (401 problem), not FastAPI's plain 403.
_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="Writes need the key configured as HPSCALE_API_KEY."
)


async def get_db(request: Request) -> Database:
    """The app's database."""
    return request.app.state.db  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_law_cache(request: Request) -> LawCache:
    """The app's cache of resolved laws (the recommend hot path)."""
    return request.app.state.laws  # type: ignore[no-any-return]


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
LawCacheDep = Annotated[LawCache, Depends(get_law_cache)]


async def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(_api_key_scheme)] = None) -> None:
    """Allow a write only with the configured key. No key configured: writes are refused (an
    open write endpoint by omission would be worse than none); a missing or wrong key: 401."""
    configured = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    if not configured:
        raise ProblemError(
            403,
            "writes are disabled on this server: set HPSCALE_API_KEY in the server's environment "
            f"and send it in the {API_KEY_HEADER} header",
        )
    if key is None:
        raise ProblemError(401, f"this write needs the {API_KEY_HEADER} header")
    # Constant-time comparison: the time taken must not tell how much of a guess was right.
    if not hmac.compare_digest(key.encode("utf-8"), configured.encode("utf-8")):
        raise ProblemError(401, f"wrong {API_KEY_HEADER}")


WriteAccess = Depends(require_api_key)
