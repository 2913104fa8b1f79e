"""Conversions every resource's answers share: finite floats, intervals, law identities."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hpscale.db.models import Law
from hpscale.service.api import schemas as s

NEAR_OPTIMAL_EPS = 0.0025  # Step Law's and DeepSeek's "optimal": within 0.25% of the best loss


def finite(value: float | None) -> float | None:
    """A float if it is finite, else None (JSON has no NaN or infinity)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def interval(pair: Sequence[float] | None) -> s.Interval | None:
    """A (low, high) pair as an Interval, or None when absent or not finite."""
    if not pair or len(pair) != 2:
        return None
    lo, hi = finite(pair[0]), finite(pair[1])
    return None if lo is None or hi is None else s.Interval(low=lo, high=hi)


def law_ref(row: Law) -> s.LawRef:
    """The identity and provenance of a stored law."""
    return s.LawRef(
        id=row.id, name=row.name, title=row.title, kind=row.kind, form=row.form, origin=row.origin, source=row.source,
        optimizer=row.optimizer,
    )
