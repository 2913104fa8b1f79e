"""Turn stored law records back into laws, and measure how far a target lies from a fit.

Every law's ``to_record()`` is a JSON-safe dict with at least: ``kind`` ("hyper", "loss",
"trajectory", "critical_batch"), ``form``, ``coefficients``, ``intervals`` (coefficient ->
[lo, hi] or None), ``fit_range``, ``warnings`` and ``runs_used``; laws with bootstrap
intervals on predictions also carry ``coefficient_samples``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Union

from hpscale.fitting.errors import InvalidLawRecordError
from hpscale.fitting.hyper import HyperLaw

if TYPE_CHECKING:
    from hpscale.fitting.critical import CriticalBatchLaw
    from hpscale.fitting.loss import LossLaw
    from hpscale.fitting.trajectory import MomentumLaw, MultiPowerLaw

Law = Union[HyperLaw, "LossLaw", "MultiPowerLaw", "MomentumLaw", "CriticalBatchLaw"]
KINDS: tuple[str, ...] = ("hyper", "loss", "trajectory", "critical_batch")


def law_from_record(record: dict[str, Any]) -> Law:
    """The law a record describes (inverse of ``law.to_record()``)."""
    if not isinstance(record, dict):
        raise InvalidLawRecordError("a law record must be a dict")
    kind = record.get("kind")
    if kind == "hyper":
        return HyperLaw.from_record(record)
    # The other laws import scipy: loaded on demand so that importing the registry (the
    # recommend path of the CLI and API) stays numpy-only and quick.
    from hpscale.fitting.critical import CriticalBatchLaw
    from hpscale.fitting.loss import LossLaw
    from hpscale.fitting.trajectory import TRAJECTORY_LAWS

    if kind == "loss":
        return LossLaw.from_record(record)
    if kind == "critical_batch":
        return CriticalBatchLaw.from_record(record)
    if kind == "trajectory":
        form = record.get("form")
        if form not in TRAJECTORY_LAWS:
            raise InvalidLawRecordError(f"unknown trajectory law form {form!r}; expected one of {tuple(TRAJECTORY_LAWS)}")
        return TRAJECTORY_LAWS[form].from_record(record)
    raise InvalidLawRecordError(f"unknown law kind {kind!r}; expected one of {KINDS}")


def extrapolation_factor(fit_range: dict[str, list[float]] | None, n_params: float, tokens: float,
                         compute: float | None = None) -> float:
    """How far (N, D) lies outside the fitted data: the largest ratio by which N, D or C
    (``compute`` FLOPs when the answer is for a given C, else 6 N D) exceeds the fitted
    [min, max] on either side; 1.0 inside the range (or when the law has no fit range)."""
    if not fit_range:
        return 1.0
    values = {"n_params": n_params, "tokens": tokens, "compute": compute if compute else 6.0 * n_params * tokens}
    factor = 1.0
    for key, value in values.items():
        if key not in fit_range or value <= 0:
            continue
        lo, hi = fit_range[key]
        factor = max(factor, value / hi if value > hi else 1.0, lo / value if value < lo else 1.0)
    return float(factor) if math.isfinite(factor) else math.inf
