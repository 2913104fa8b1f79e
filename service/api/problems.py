"""RFC 9457 problem details: every error the API answers is ``application/problem+json``.

One table decides the status of an error: ``service.errors.status_for`` for the error roots of
the packages (not found 404, conflict 409, bad input and impossible fits 422, storage 503),
``ProblemError`` for the API's own refusals (401, 403, 413), FastAPI's request validation for
malformed requests (422), Starlette's HTTP errors for unknown routes and methods (404, 405).
Anything else is a bug: it is logged with its traceback and answered with a generic 500 whose
body reveals nothing of the server.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hpscale.service.errors import EXPECTED_ERRORS, ServiceError, status_for

logger = logging.getLogger("hpscale.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Problem types are URNs: stable identifiers a client can switch on, not pages to fetch.
TYPE_PREFIX = "urn:hpscale:problem:"
TYPES: dict[int, str] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "content-too-large",
    422: "unprocessable",
    500: "internal",
    503: "unavailable",
}


class FieldError(BaseModel):
    """One invalid request field."""

    loc: list[str | int] = Field(description="Where: ('query' | 'path' | 'body' | 'header', then the field path).")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="Pydantic's error type, e.g. 'greater_than' or 'missing'.")


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(description="A URN naming the kind of problem, e.g. urn:hpscale:problem:not-found.")
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong, for a person to read.")
    instance: str | None = Field(default=None, description="The request path the problem occurred on.")
    errors: list[FieldError] | None = Field(default=None, description="Invalid fields (validation problems only).")


class ProblemError(ServiceError):
    """A refusal by the API itself (auth, size limits), with its HTTP status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def problem_body(status: int, detail: str, instance: str | None = None, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON body of a problem (no None fields, as RFC 9457 members are optional)."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + TYPES.get(status, str(status)),
        "title": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error",
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(
    status: int, detail: str, instance: str | None = None, errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem as an HTTP response."""
    return JSONResponse(
        problem_body(status, detail, instance, errors), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [x if isinstance(x, int) else str(x) for x in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", "invalid")).removeprefix("Value error, "), "type": str(err.get("type", "value_error"))})
    return out


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    """One readable line: the first invalid field and how many more there are."""
    if not errors:
        return "the request is invalid"
    first = errors[0]
    if first["type"] == "json_invalid":  # loc is ["body", position]: say it in words
        return f"the request body is not valid JSON ({first['msg']} at character {first['loc'][-1]})"
    # "query.n_params" reads better than ['query', 'n_params']; a whole-body error has loc ['body'].
    where = ".".join(str(x) for x in first["loc"]) or "request"
    more = f" (and {len(errors) - 1} more invalid field{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _field_errors(exc)
    return problem_response(422, _describe_validation(errors), request.url.path, errors)


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such resource: {request.url.path} (the API lives under /api/v1; see /docs)"
    return problem_response(exc.status_code, detail, request.url.path, headers=getattr(exc, "headers", None))


async def _on_problem(request: Request, exc: ProblemError) -> JSONResponse:
    return problem_response(exc.status, exc.detail, request.url.path, headers=exc.headers)


async def _on_expected(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc) or 500
    # A storage error that wraps the driver names the database URL and quotes the driver: that
    # is for the operator (the log), the caller reads its ``public`` line (db.errors).
    detail = getattr(exc, "public", None) or str(exc)
    if status >= 500 or detail != str(exc):
        logger.log(logging.ERROR if status >= 500 else logging.WARNING,
                   "request %s %s failed: %s", request.method, request.url.path, exc)
    return problem_response(status, detail or HTTPStatus(status).phrase, request.url.path)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal server error: the error was logged on the server", request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error as a problem (see the module doc)."""
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(ProblemError, _on_problem)  # type: ignore[arg-type]
    for root in EXPECTED_ERRORS + _sweep_errors():
        app.add_exception_handler(root, _on_expected)
    app.add_exception_handler(Exception, _on_unexpected)


def _sweep_errors() -> tuple[type[BaseException], ...]:
    try:
        from hpscale.sweeps.errors import SweepError  # no torch behind this import
    except ImportError:  # pragma: no cover - a slim install without sweeps
        return ()
    return (SweepError,)


_DESCRIPTIONS = {
    400: "The request body cannot be read (not UTF-8 text, or a malformed Content-Length).",
    401: "Missing or wrong X-API-Key.",
    403: "Writes are disabled: no API key is configured on the server (HPSCALE_API_KEY).",
    404: "No such resource.",
    409: "The write conflicts with stored data.",
    413: "The request body is larger than the server accepts (HPSCALE_MAX_BODY_BYTES).",
    422: "Invalid request, or a request that cannot be carried out (e.g. a fit the data cannot support).",
    500: "Unexpected server error (logged on the server).",
    503: "The database is unavailable or its schema is refused.",
}


def problem_responses(*statuses: int, rules: tuple[str, ...] = ()) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring problems for the given statuses, plus 500 and 503 that any
    route may answer. ``use_problem_media_type`` later moves their schema to problem+json.

    ``rules``: what a request must also satisfy beyond what the request schema states (rules
    across fields, or on stored data): a request that keeps the schema but breaks one is a 422.
    They are listed in the 422 response's description and, for tools, as ``x-rules``."""
    codes = sorted(set(statuses) | {500, 503} | ({422} if rules else set()))
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "description": _DESCRIPTIONS.get(code, HTTPStatus(code).phrase)} for code in codes
    }
    if rules:
        out[422]["description"] += " Beyond the schema: " + "; ".join(rules) + "."
        out[422]["x-rules"] = list(rules)
    return out


def use_problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare every error response of an OpenAPI document as ``application/problem+json``
    (FastAPI files additional responses under the route's own media type, application/json)."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for code, response in operation.get("responses", {}).items():
                content = response.get("content")
                if str(code)[:1] in ("4", "5") and content and "application/json" in content:
                    response["content"] = {PROBLEM_MEDIA_TYPE: content["application/json"]}
    return schema

