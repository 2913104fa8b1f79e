"""Turn a stored law record back into a law object, and measure how far a target lies
outside a law's data."""

from __future__ import annotations

import math
from typing import Any

from fitting.errors import InvalidLawRecordError
from fitting.hyper import HyperLaw, compute_flops


def law_from_record(record: dict[str, Any]) -> Any:
    """The law a record (from ``to_record``) describes, dispatching on ``record["kind"]``."""
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind == "hyper":
        return HyperLaw.from_record(record)
    raise InvalidLawRecordError(f"unknown law kind {kind!r}")


def extrapolation_factor(fit_range: dict[str, list[float]], n_params: float, tokens: float) -> float:
    """How far (N, D, C = 6ND) lies outside the fitted ranges: the largest ratio past an edge
    over every axis the range gives; 1.0 when the target lies inside."""
    target = {"n_params": n_params, "tokens": tokens, "compute": compute_flops(n_params, tokens)}
    factor = 1.0
    for axis, value in target.items():
        bounds = fit_range.get(axis)
        if not bounds:
            continue
        lo, hi = float(bounds[0]), float(bounds[1])
        if value > hi > 0:
            factor = max(factor, value / hi)
        elif 0 < value < lo:
            factor = max(factor, lo / value)
    return factor if math.isfinite(factor) else float("inf")
