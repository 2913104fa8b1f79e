"""What every fitted law's record carries besides its coefficients, restored in one place."""

from __future__ import annotations

from typing import Any


def restore_fitted(law: Any, record: dict[str, Any]) -> Any:
    """Set the fitted attributes every law shares (samples, intervals, fit range, warnings,
    runs used) from a record written by the law's ``to_record``. Returns the law."""
    law.coef_samples_ = record.get("coefficient_samples")
    law.intervals_ = record.get("intervals")
    law.fit_range_ = record.get("fit_range")
    law.warnings_ = list(record.get("warnings") or [])
    law.runs_used_ = record.get("runs_used")
    return law
