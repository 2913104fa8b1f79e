"""``GET /api/v1/recommend``: the peak learning rate and batch size for a target run.

This route is the API's hot path, so it parses its query itself: FastAPI's per-field query
parsing cost about 0.5 ms of CPU per request here (two thirds of the route), one pydantic
validation of ``RecommendQuery`` costs a few microseconds. The OpenAPI parameters are generated
from the same model, so documentation and validation cannot drift apart; errors are the same
422 problems as everywhere else.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from hpscale.service.api.glue import recommend as glue
from hpscale.service.api import schemas as s
from hpscale.service.api.deps import DbDep, LawCacheDep, SettingsDep
from hpscale.service.api.problems import problem_responses

router = APIRouter(tags=["recommend"])


def query_parameters(model: type[s.BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters of a flat pydantic model, one per field."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        # An optional parameter is simply left out of a query string: "null" is no query value.
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
        params.append({"name": name, "in": "query", "required": name in required, "description": description, "schema": prop})
    return params


def parse_query(request: Request, model: type[s.RecommendQuery]) -> s.RecommendQuery:
    """Validate the query string against ``model``; a bad value is a 422 problem naming it."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("query", *err["loc"])} for err in exc.errors(include_url=False, include_context=False)]
        ) from None


@router.get(
    "/recommend", response_model=s.Recommendation,
    responses=problem_responses(404, 422, rules=(
        "N: give n_params, or d_model with n_layers, not both",
        "vocab_size only with d_model",
        "D: give tokens or compute (or both)",
        "law: a hyper law",
    )),
    openapi_extra={"parameters": query_parameters(s.RecommendQuery)},
)
async def recommend(request: Request, db: DbDep, settings: SettingsDep, laws: LawCacheDep) -> s.Recommendation:
    """Recommended lr and batch (tokens and sequences) with intervals, the near-optimal region,
    the predicted loss where a loss law exists, and how far the target lies outside the law's
    data. N: ``n_params``, or ``d_model`` and ``n_layers``; D: ``tokens``, or ``compute``.

    ``async``: it never blocks (a law lookup that misses the cache runs in a worker thread)."""
    target = parse_query(request, s.RecommendQuery)
    return await glue.recommend(db, laws, target, settings.extrapolation_warning)
