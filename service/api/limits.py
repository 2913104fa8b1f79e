"""Bounded work per request: the caps of ``service.settings`` (``HPSCALE_MAX_*``), checked at
the routes and stated in the OpenAPI document, so that a client reads the limits in force.

- ``max_body_bytes``: every request body (413, ``BodySizeLimit``).
- ``max_runs_per_request``, ``max_curve_points``: ``POST /runs`` (runs, curve points in all).
- ``max_curve_steps``, ``max_curve_points``: ``POST /predict/curve``'s schedule length, and the
  points of its answer (one every ``every`` steps).
- ``max_fit_bootstrap``: ``POST /fits``' bootstrap resamples; ``max_concurrent_fits``: fits
  running at once, in worker threads off the event loop (``fit_slots``).

A request over a cap is a 422 problem naming the field and the setting.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import Request
from fastapi.exceptions import RequestValidationError

from hpscale.service.api import schemas as s
from hpscale.service.settings import Settings

def _refuse(loc: tuple[str | int, ...], msg: str, kind: str = "less_than_equal") -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": kind}])


def check_runs_import(body: s.RunsImport, settings: Settings) -> None:
    """At most ``max_runs_per_request`` runs and ``max_curve_points`` curve points in all."""
    if len(body.runs) > settings.max_runs_per_request:
        raise _refuse(("body", "runs"), f"{len(body.runs)} runs: at most {settings.max_runs_per_request} per request on "
                      "this server (HPSCALE_MAX_RUNS_PER_REQUEST); send them in several requests", "too_long")
    points = sum(len(r.curve or ()) for r in body.runs)
    if points > settings.max_curve_points:
        raise _refuse(("body", "runs"), f"{points} curve points: at most {settings.max_curve_points} per request on "
                      "this server (HPSCALE_MAX_CURVE_POINTS); send the runs in several requests", "too_long")


def check_fit(body: s.FitRequest, settings: Settings) -> None:
    """At most ``max_fit_bootstrap`` bootstrap resamples; a request that asks for none gets the
    default or the cap, whichever is fewer."""
    if "bootstrap" not in body.model_fields_set:
        body.bootstrap = min(body.bootstrap, settings.max_fit_bootstrap)
    if body.bootstrap > settings.max_fit_bootstrap:
        raise _refuse(("body", "bootstrap"), f"at most {settings.max_fit_bootstrap} resamples on this server "
                      "(HPSCALE_MAX_FIT_BOOTSTRAP)")


def check_schedule(body: s.CurvePredictionRequest, settings: Settings) -> None:
    """A schedule of at most ``max_curve_steps`` steps, predicted at most ``max_curve_points``
    times (its length over ``every``)."""
    steps = body.schedule.length
    # Rules the OpenAPI document states in x-rules (a run's lr_schedule may be longer), so their
    # refusals are value errors, not a field's own bound.
    if steps > settings.max_curve_steps:
        raise _refuse(("body", "schedule", "total_steps"), f"{steps:,} steps exceed the limit of "
                      f"{settings.max_curve_steps:,} on this server (set HPSCALE_MAX_CURVE_STEPS to raise it)",
                      "value_error")
    points = -(-steps // body.every)
    if points > settings.max_curve_points:
        least = -(-steps // settings.max_curve_points)
        raise _refuse(("body", "every"), f"{points} predicted points: at most {settings.max_curve_points} per answer on "
                      f"this server (HPSCALE_MAX_CURVE_POINTS); ask for every >= {least}", "value_error")


async def fit_slots(request: Request) -> anyio.CapacityLimiter:
    """The app's limiter of concurrent fits (made on first use, inside the event loop)."""
    state = request.app.state
    if getattr(state, "fit_slots", None) is None:
        state.fit_slots = anyio.CapacityLimiter(state.settings.max_concurrent_fits)
    return state.fit_slots  # type: ignore[no-any-return]


def document_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The OpenAPI document with the caps in force as maxima of the fields they bound."""
    components = schema.get("components", {}).get("schemas", {})

    def cap(model: str, field: str, key: str, value: int) -> None:
        for name, comp in components.items():
            if name == model or name.startswith(model + "-"):  # pydantic may suffix -Input / -Output
                prop = comp.get("properties", {}).get(field)
                if prop is None:
                    continue
                for target in [prop, *prop.get("anyOf", ())]:
                    if key in target or (key == "maxItems" and target.get("type") == "array") or (
                            key == "maximum" and target.get("type") == "integer"):
                        target[key] = min(int(target.get(key, value)), value)
                if isinstance(prop.get("default"), int) and key == "maximum":
                    prop["default"] = min(prop["default"], value)  # as check_fit applies it

    cap("RunsImport", "runs", "maxItems", settings.max_runs_per_request)
    cap("RunIn", "curve", "maxItems", settings.max_curve_points)
    cap("FitRequest", "bootstrap", "maximum", settings.max_fit_bootstrap)
    # Schedules are not capped here: a run's lr_schedule (POST /runs) may be longer than what one
    # prediction builds; POST /predict/curve's 422 for HPSCALE_MAX_CURVE_STEPS is a stated rule.
    return schema
