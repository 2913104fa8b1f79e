"""What every fitted law's record carries besides its coefficients, restored in one place."""

from __future__ import annotations

from typing import Any

import numpy as np


def restore_fitted(law: Any, record: dict[str, Any]) -> Any:
    """Set the fitted attributes every law shares (samples, intervals, fit range, warnings,
    runs used) from a record written by the law's ``to_record``. Returns the law."""
    law.coef_samples_ = record.get("coefficient_samples")
    law.intervals_ = record.get("intervals")
    law.fit_range_ = record.get("fit_range")
    law.warnings_ = list(record.get("warnings") or [])
    law.runs_used_ = record.get("runs_used")
    return law


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` percentile interval of bootstrap ``samples`` along axis 0 (each
    column a coefficient, or one prediction per sample). A sample that overflowed to inf (a
    loosely determined law's scale) would make interpolation give NaN and a numpy warning, so
    then the bounds are sample values: inf where the tail is unbounded."""
    method = "linear" if np.isfinite(samples).all() else "inverted_cdf"
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0, method=method)
    return lo, hi
