"""The web UI's files over HTTP: gzip for text assets, Cache-Control, and HEAD wherever GET is.

- ``WebFiles``: Starlette's ``StaticFiles`` whose text files (HTML, JS, CSS, JSON, SVG) go out
  gzipped to clients that accept it (compressed once per file version, in a worker thread, and
  kept in memory), with an ETag per encoding and a ``Cache-Control`` header: our own pages and
  modules are revalidated on every use (``no-cache``: a 304 when unchanged, so a new hpscale
  version shows at once), vendored libraries (Plotly, Swagger UI) are kept for a day.
- ``file_response``: the same for one file outside the mount (Plotly's bundle, 4.8 MB, 1.4 MB
  gzipped).
- ``HeadAsGet``: HEAD on any GET route or file answers as GET would, without the body (monitors
  and caches use HEAD; FastAPI routes declare GET only, so HEAD fell through to the web UI's
  mount and answered 404).
"""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COMPRESSIBLE = frozenset({".html", ".js", ".mjs", ".css", ".json", ".svg", ".map", ".txt"})
MIN_GZIP_BYTES = 1024  # below this, gzip's header costs more than it saves
REVALIDATE = "no-cache"  # stored, but checked with the server (ETag) before each use
VENDORED = "public, max-age=86400"  # third-party bundles change only with their package

_gzipped: dict[tuple[str, int, int], bytes] = {}
_gzip_lock = threading.Lock()


def _gzip_file(path: str, key: tuple[str, int, int]) -> bytes:
    """The file gzipped, from the cache when this version of it was compressed before."""
    with _gzip_lock:
        hit = _gzipped.get(key)
    if hit is not None:
        return hit
    body = gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)
    with _gzip_lock:
        for old in [k for k in _gzipped if k[0] == key[0]]:  # an older version of the same file
            del _gzipped[old]
        _gzipped[key] = body
    return body


class _GzipFileResponse(Response):
    """A file's gzipped bytes, compressed (or fetched from the cache) when the response is sent:
    in a worker thread, so that the first request for a large file does not stall the server."""

    def __init__(self, path: str, key: tuple[str, int, int], status_code: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=status_code, headers=headers)
        self.path, self.key = path, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await anyio.to_thread.run_sync(_gzip_file, self.path, self.key)
        headers = {k: v for k, v in self.headers.items() if k != "content-length"}
        await Response(body, status_code=self.status_code, headers=headers)(scope, receive, send)


def _accepts_gzip(request: Headers) -> bool:
    for part in request.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def file_response(path: str | os.PathLike[str], stat_result: os.stat_result, request: Headers,
                  cache_control: str, status_code: int = 200) -> Response:
    """One file as a response: gzipped when the client accepts it and it is text, with its
    ETag, Last-Modified and ``cache_control``; 304 when the client's copy is current."""
    plain = FileResponse(path, status_code=status_code, stat_result=stat_result)
    plain.headers["cache-control"] = cache_control
    suffix = Path(path).suffix.lower()
    if suffix not in COMPRESSIBLE or stat_result.st_size < MIN_GZIP_BYTES:
        return NotModifiedResponse(plain.headers) if _not_modified(plain.headers, request) else plain
    # Caches must keep the plain and the gzipped body apart: Vary, and an ETag per encoding.
    plain.headers["vary"] = "Accept-Encoding"
    if not _accepts_gzip(request):
        return NotModifiedResponse(plain.headers) if _not_modified(plain.headers, request) else plain
    headers = {k: v for k, v in plain.headers.items() if k not in ("content-length", "etag")}
    headers["etag"] = plain.headers["etag"][:-1] + '-gzip"'
    headers["content-encoding"] = "gzip"
    if _not_modified(Headers(headers), request):
        return NotModifiedResponse(Headers(headers))
    key = (str(path), stat_result.st_mtime_ns, stat_result.st_size)
    return _GzipFileResponse(str(path), key, status_code, headers)


_conditional = StaticFiles()  # its is_not_modified: Starlette's reading of If-None-Match / If-Modified-Since


def _not_modified(response: Headers, request: Headers) -> bool:
    return _conditional.is_not_modified(response, request)


class WebFiles(StaticFiles):
    """``StaticFiles`` with gzip and Cache-Control (see the module doc); files under
    ``vendored`` (a path prefix inside the folder) are cached for a day."""

    def __init__(self, *, directory: str | os.PathLike[str], vendored: str = "static/", html: bool = True) -> None:
        super().__init__(directory=directory, html=html)
        self.vendored = vendored

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        relative = Path(full_path).resolve().relative_to(Path(str(self.directory)).resolve()).as_posix()
        cache = VENDORED if relative.startswith(self.vendored) else REVALIDATE
        return file_response(full_path, stat_result, Headers(scope=scope), cache, status_code)


class HeadAsGet:
    """Answer HEAD as GET, without the body (RFC 9110 section 9.3.2), on every route and file."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of a streamed body: nothing of it goes out
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
