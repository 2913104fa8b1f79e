"""``GET /laws`` and ``GET /laws/{law}``: stored laws, their data, checks and curves."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.models import Law, Run
from hpscale.fitting.errors import FittingError
from hpscale.fitting.hyper import compute_flops
from hpscale.fitting.noise import NoiseEstimate
from hpscale.service import fits
from hpscale.service import laws as law_service
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.common import finite, interval, law_ref
from hpscale.service.errors import InputError
from hpscale.service.jsonsafe import json_safe

logger = logging.getLogger("hpscale.api")


def law_summary(row: Law) -> s.LawSummary:
    """A law as listed."""
    return s.LawSummary(
        **law_ref(row).model_dump(), extrapolation_passed=law_service.check_passed(row), code_version=row.code_version,
        created_at=row.created_at,
    )


def list_laws(db: Database, kind: str | None, origin: str | None, optimizer: str | None = None) -> list[s.LawSummary]:
    """Stored laws (published ones are stored on startup), by id; ``optimizer``: only its laws."""
    return [law_summary(r) for r in storage.list_laws(db, kind=kind, origin=origin)
            if optimizer is None or r.optimizer == optimizer]


def coupling(record: dict[str, Any]) -> s.LrBatchCoupling | None:
    """The lr-batch coupling a hyper law's record carries (``fitting.coupling``); None when it
    has none, or one this code cannot read (shown as absent rather than failing the page)."""
    raw = record.get("lr_batch_coupling")
    if not isinstance(raw, dict):
        return None
    try:
        return s.LrBatchCoupling.model_validate({**json_safe(raw), "interval": interval(raw.get("interval"))})
    except ValueError as exc:
        logger.warning("lr-batch coupling record unreadable: %s", exc)
        return None


def critical_batch(record: dict[str, Any]) -> s.CriticalBatchInfo | None:
    """A critical-batch law's targets and exponents (``fitting.critical``); None for other
    laws, or a record this code cannot read."""
    targets = record.get("targets")
    if not isinstance(targets, list):
        return None
    try:
        return s.CriticalBatchInfo(by=(record.get("settings") or {}).get("by", "n_params"),
                                   targets=[s.CriticalTarget.model_validate(t) for t in targets],
                                   exponents=_float_dict(record.get("exponents")))
    except ValueError as exc:
        logger.warning("critical batch record unreadable: %s", exc)
        return None


def _float_dict(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    out = {}
    for k, v in raw.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = float(v)
    return out


def _fit_range(raw: Any) -> s.FitRange | None:
    if not isinstance(raw, dict):
        return None
    fr = s.FitRange(**{k: interval(raw.get(k)) for k in s.FitRange.model_fields})
    return fr if any(getattr(fr, k) for k in s.FitRange.model_fields) else None


def law_curve(
    row: Law,
    law: Any,
    fit_range: s.FitRange | None,
    *,
    n_min: float | None,
    n_max: float | None,
    points: int,
    tokens: float | None,
    tokens_per_param: float,
) -> s.HyperCurve | s.LossLawCurve | None:
    """A hyper law's lr* and B*, or a loss law's final loss, at ``points`` log-spaced N in
    [n_min, n_max] (default: the law's data range widened 10x each way, else 1e7..1e11). D:
    ``tokens`` if given, else the geometric middle of the law's data, else ``tokens_per_param``
    x N (a law with no data). None for other kinds."""
    if row.kind not in ("hyper", "loss"):
        return None
    if fit_range is not None and fit_range.n_params is not None:
        # Within the N a query may ask for: data of absurd sizes (a run of 1e-300 parameters
        # is schema-valid) must not make the range empty or infinite.
        lo_default = min(max(fit_range.n_params.low / 10, 1.0), s.MAX_N_PARAMS)
        hi_default = min(max(fit_range.n_params.high * 10, lo_default), s.MAX_N_PARAMS)
    else:
        lo_default, hi_default = 1e7, 1e11
    lo = n_min if n_min is not None else lo_default
    hi = n_max if n_max is not None else hi_default
    if lo > hi:
        raise InputError(f"n_min ({lo:g}) exceeds n_max ({hi:g})")
    if tokens is not None:
        mid, rule = tokens, f"fixed D = {tokens:.6g} (given)"
    elif fit_range is not None and fit_range.tokens is not None:
        mid = math.sqrt(fit_range.tokens.low * fit_range.tokens.high)
        rule = f"fixed D = {mid:.6g} (geometric middle of the law's data)"
    else:
        mid, rule = None, f"D = {tokens_per_param:g} N"
    hyper_points: list[s.HyperCurvePoint] = []
    loss_points: list[s.LossCurvePoint] = []
    for n in map(float, np.geomspace(lo, hi, points)):
        d = mid if mid is not None else tokens_per_param * n
        c = finite(compute_flops(n, d))
        if row.kind == "hyper":
            p = law.predict(n, d)
            if c is None or finite(p.lr) is None or finite(p.batch_tokens) is None:
                continue  # past double precision at an extreme of the range: leave the point out
            hyper_points.append(s.HyperCurvePoint(
                n_params=n, tokens=d, compute=c, lr=p.lr, batch_tokens=p.batch_tokens,
                lr_interval=interval(p.lr_interval), batch_tokens_interval=interval(p.batch_tokens_interval),
            ))
        else:
            q = law.predict(n, d)
            if c is None or finite(q.loss) is None:
                continue
            loss_points.append(s.LossCurvePoint(
                n_params=n, tokens=d, compute=c, final_loss=q.loss, final_loss_interval=interval(q.interval)
            ))
    if row.kind == "hyper":
        return s.HyperCurve(tokens_rule=rule, points=hyper_points)
    return s.LossLawCurve(tokens_rule=rule, points=loss_points)


def law_detail(
    db: Database,
    law: str,
    *,
    n_min: float | None = None,
    n_max: float | None = None,
    points: int = 50,
    tokens: float | None = None,
    tokens_per_param: float = 20.0,
) -> s.LawDetail:
    """A law with its parameters, intervals, data, extrapolation report and plotting curve."""
    row = storage.get_law(db, law)
    record = row.record if isinstance(row.record, dict) else {}
    fit_range = _fit_range(record.get("fit_range"))
    warnings = [str(w) for w in record.get("warnings") or []]
    law_runs = storage.get_runs(db, storage.law_run_ids(db, row.id))
    curve = fitted_curves = None
    try:
        law = law_service.law_object(row)
    except FittingError as exc:  # show what is stored even when this code cannot use it
        warnings.append(f"this law's stored record cannot be used: {exc}")
    else:
        curve = law_curve(
            row, law, fit_range, n_min=n_min, n_max=n_max, points=points, tokens=tokens,
            tokens_per_param=tokens_per_param,
        )
        fitted_curves = _trajectory_fits(db, law_runs, law) if row.kind == "trajectory" else None
    raw_intervals = record.get("intervals")
    intervals = None
    if isinstance(raw_intervals, dict):
        intervals = {str(k): iv for k, v in raw_intervals.items() if (iv := interval(v)) is not None}
    data = [
        s.LawDataPoint(
            run_id=r.id, name=r.name, source=r.source, n_params=r.n_params, tokens=r.tokens, lr=r.lr,
            batch_tokens=r.batch_tokens, batch_size=r.batch_size, final_loss=finite(r.final_loss), status=r.status,
            schedule=r.schedule,
        )
        for r in law_runs
    ]
    noise = NoiseEstimate.from_record(record.get("noise"))
    prior = record.get("prior")
    landscape = record.get("landscape")
    return s.LawDetail(
        **law_summary(row).model_dump(),
        noise=s.NoiseInfo(**noise.to_record(), description=noise.describe()) if noise is not None else None,
        near_optimal_band=finite(record.get("near_optimal_band")),
        prior=s.PriorInfo(**{k: prior[k] for k in ("name", "width", "centres", "shift", "data_coefficients")})
        if isinstance(prior, dict) else None,
        landscape=_float_dict(landscape) if isinstance(landscape, dict) else None,
        failure=law_service.failure(row),
        parameters=_float_dict(record.get("coefficients")),
        intervals=intervals,
        fit_range=fit_range,
        extrapolation=json_safe(row.extrapolation) if isinstance(row.extrapolation, dict) else None,
        settings=json_safe(row.settings or record.get("settings")) or None,
        warnings=warnings,
        data=data,
        curve=curve,
        fitted_curves=fitted_curves,
        lr_batch_coupling=coupling(record),
        critical_batch=critical_batch(record) if row.kind == "critical_batch" else None,
    )


def _trajectory_fits(db: Database, runs: Sequence[Run], law: Any) -> list[s.TrajectoryFit]:
    """Observed against predicted loss for every curve a trajectory law was fitted on (the same
    curves, rebuilt from the stored runs by ``service.fits.loss_curves``)."""
    if not runs:
        return []
    try:
        curves = fits.loss_curves(db, runs)
    except (FittingError, InputError) as exc:  # the runs lost their curves: nothing to show
        logger.warning("trajectory law curves cannot be rebuilt: %s", exc)
        return []
    ids = {f"{r.source}/{r.name}": r.id for r in runs}
    out = []
    for c in curves:
        warmup = c.warmup()
        steps, observed = np.asarray(c.steps), np.asarray(c.loss, float)
        after = steps >= max(warmup, 1)  # the laws model the curve after warmup only
        if not after.any():
            continue
        predicted = np.asarray(law.predict(c.lr, steps[after], warmup), float)
        keep = np.isfinite(predicted)
        out.append(s.TrajectoryFit(
            run_id=ids[c.name], name=c.name, steps=[int(v) for v in steps[after][keep]],
            observed=observed[after][keep].tolist(), predicted=predicted[keep].tolist(),
        ))
    return out
