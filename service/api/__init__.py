"""The REST API: ``create_app(settings)`` builds the FastAPI application.

Layout (after fastapi/full-stack-fastapi-template's backend/app): one router per resource under
``/api/v1`` (``routes/``), ``Annotated`` dependencies (``deps``), request and response schemas
separate from the table models (``schemas``), RFC 9457 problems for every error
(``problems``), and the glue that builds answers from ``db`` and ``fitting`` (``glue``, one
module per resource).
``/healthz`` answers at the root; OpenAPI at ``/docs``; the static web UI at ``/``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hpscale.db.engine import Database
from hpscale.db.provenance import code_version
from hpscale.service.api.glue.recommend import LawCache
from hpscale.service.api.limits import document_limits
from hpscale.service.api.problems import install_problem_handlers, problem_response, use_problem_media_type
from hpscale.service.api.routes import fits, health, laws, predict, recommend, runs, sweeps
from hpscale.service.api.static import VENDORED, HeadAsGet, WebFiles, file_response
from hpscale.service.laws import ensure_published_laws
from hpscale.service.settings import Settings, get_settings

API_PREFIX = "/api/v1"
SWAGGER_UI = "/static/swagger-ui"  # Swagger UI 5.35.0 (swagger-ui-dist, Apache-2.0), under web/static
logger = logging.getLogger("hpscale.api")


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with a 413 problem: at once when Content-Length
    says so, else while the body streams in (chunked uploads carry no length). The body is
    buffered here up to the limit, then replayed to the app, so the app never sees a partial body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(scope, send, 400, "invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await self._too_large(scope, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await self._refuse(
            scope, send, 413, f"request body larger than {self.max_bytes} bytes (the server's HPSCALE_MAX_BODY_BYTES)"
        )

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
        response = problem_response(status, detail, scope.get("path"))
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a problem response never reads the body
    return {"type": "http.disconnect"}


def route_methods(app: FastAPI) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """(path pattern, methods) of every route: the OpenAPI document's operations (its path
    templates, ``{name}`` matching one segment) and the app's own routes outside it (/docs)."""
    table: dict[str, set[str]] = {}
    for template, item in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
        table.setdefault(pattern, set()).update(m.upper() for m in item if m.upper() in HTTP_METHODS)
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            table.setdefault(route.path_regex.pattern, set()).update(route.methods)
    return [(re.compile(p), frozenset(m)) for p, m in table.items()]


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class WebPages:
    """What answers a request that no route took: the static web UI (``web/``), mounted at "/"
    after every route. A path that routes do serve, asked with another method (OPTIONS or GET on
    a POST-only path, PUT anywhere), is a 405 problem whose Allow header names those routes'
    methods: the static files would say "GET, HEAD", or 404 for a path they do not hold."""

    def __init__(self, app: FastAPI, pages: Path | None) -> None:
        self.app = app
        self.files = WebFiles(directory=pages) if pages is not None else None
        self._routes: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    def allowed(self, path: str) -> list[str]:
        """The methods routes answer on ``path``, sorted; [] when no route serves it."""
        if self._routes is None:  # on first use: every route is registered by then
            self._routes = route_methods(self.app)
        methods = set().union(*(m for p, m in self._routes if p.match(path)))
        # HEAD answers wherever GET does (``HeadAsGet``), though routes declare GET alone.
        return sorted(methods | ({"HEAD"} if "GET" in methods else set()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = self.allowed(scope["path"])
            if allowed:
                response = problem_response(
                    405, f"{scope['method']} is not allowed on {scope['path']}: use {', '.join(allowed)}",
                    scope["path"], headers={"Allow": ", ".join(allowed)},
                )
                await response(scope, receive, send)
                return
            if self.files is None:
                await problem_response(404, f"no such resource: {scope['path']} (the API lives under /api/v1; see /docs)",
                                       scope["path"])(scope, receive, send)
                return
        assert self.files is not None
        await self.files(scope, receive, send)


def web_dir() -> Path:
    """The folder of the static web UI: the ``hpscale.web`` package (HTML, CSS, JS only)."""
    import hpscale.web

    return Path(hpscale.web.__file__).resolve().parent


def plotly_js() -> Path:
    """Plotly's bundled JS file from the installed plotly package (no CDN: works offline)."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application on ``settings`` (default: from ``HPSCALE_`` environment variables).
    The database's schema and the published laws are ensured once at startup, not per request."""
    settings = settings or get_settings()
    db = Database(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.ensure_schema()
        ensure_published_laws(db)
        yield
        db.dispose()

    app = FastAPI(
        title="hpscale",
        version=code_version(),
        summary="Hyperparameter scaling laws: recommended learning rate and batch size, fitted laws, sweeps.",
        description="Units: n_params non-embedding parameters, tokens, compute FLOPs, batch_tokens tokens, "
        "batch_size sequences of seq_len tokens, losses nats/token. Errors are RFC 9457 "
        "application/problem+json. Writes need the X-API-Key header.",
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI / ReDoc from a CDN; ours serves a vendored copy of
        # Swagger UI (web/static/swagger-ui), so /docs works with no network.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.laws = LawCache()
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeadAsGet)

    app.include_router(health.router)
    for module in (recommend, laws, sweeps, runs, predict, fits):
        app.include_router(module.router, prefix=API_PREFIX)

    plotly_file = plotly_js()

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly(request: Request) -> Response:
        """Plotly.js for the web UI's charts (gzipped, cached for a day)."""
        return file_response(plotly_file, plotly_file.stat(), request.headers, VENDORED)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_limits(use_problem_media_type(
                get_openapi(
                    title=app.title, version=app.version, summary=app.summary, description=app.description,
                    routes=app.routes,
                )
            ), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI for the OpenAPI document, from the package's own copy."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="hpscale API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js", swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        )

    # Last: a mount at "/" matches every path, so /api, /docs and /healthz must come before it.
    pages: Path | None = web_dir()
    if not pages.is_dir():  # a broken install: serve the API anyway
        logger.warning("web UI folder %s not found: serving the API only", pages)
        pages = None
    app.mount("/", WebPages(app, pages), name="web")
    return app
