"""``hpscale serve``: the REST API and the web UI over HTTP (uvicorn)."""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated

import typer

from hpscale.service.cli.common import database_url, err_console, open_db


class LogLevel(str, Enum):
    """uvicorn's log levels."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (each with its own database pool).")] = 1,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = True,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn's log level.")] = LogLevel.info,
) -> None:
    """Serve the API (/api/v1, OpenAPI at /docs) and the web UI (/) until interrupted.

    A new empty database gets its schema and the published laws before the server starts.
    Writes need HPSCALE_API_KEY to be set (and sent as X-API-Key); without it they are refused."""
    # Imported here: `hpscale --help` and the other commands must not pay for a web server.
    import uvicorn

    from hpscale.service.demo import is_empty, load_demo
    from hpscale.service.laws import ensure_published_laws
    from hpscale.service.server import WORKER_HEALTHCHECK_S, NoDelayHTTPProtocol
    from hpscale.service.settings import get_settings

    # Prepare the database here, once: several workers starting on a new database would
    # otherwise race to create its schema. A bad URL fails now, as one line.
    db = open_db()
    ensure_published_laws(db)
    if get_settings().load_demo and is_empty(db):
        # A new user sees real sweeps, curves and laws at once (HPSCALE_LOAD_DEMO=false: not).
        counts = load_demo(db)
        err_console.print(f"hpscale: empty database, loaded the demo dataset ({counts['runs']} runs, "
                          f"{counts['laws']} laws); `hpscale demo load` does the same on request")
    db.dispose()
    # Workers build the app from the environment: hand them the database in force (the root
    # --database option included) through it.
    os.environ["HPSCALE_DATABASE_URL"] = database_url()
    err_console.print(f"hpscale: serving on http://{host}:{port} (API docs at /docs)", highlight=False)
    uvicorn.run(
        "hpscale.service.api:create_app", factory=True, host=host, port=port, workers=workers,
        access_log=access_log, log_level=log_level.value, http=NoDelayHTTPProtocol,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
