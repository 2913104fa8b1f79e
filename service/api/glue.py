"""What the routes answer, built from ``db`` and ``fitting``: the routes only parse and return.

Every function here takes the database (and plain arguments), raises the packages' own
errors for bad input (``InputError`` 422, ``NotFoundError`` 404, ``FittingError`` 422) and
returns the response schemas of ``service.api.schemas``. Units as in that module.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from db import storage
from db.engine import Database
from db.models import Law, Run, Sweep
from fitting.errors import FittingError
from fitting.hyper import HyperLaw, compute_flops
from fitting.optimum import GroupOptimum as FitGroupOptimum
from fitting.optimum import group_optima
from fitting.presets import DEFAULT_PRESET
from fitting.runs import RunSet
from fitting.schedules import lr_schedule
from service import fits
from service import laws as law_service
from service.api import schemas as s
from service.errors import InputError
from service.jsonsafe import json_safe
from service.runformat import validate_runs
from sweeps.status import sweep_state

logger = logging.getLogger("hpscale.api")

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
        id=row.id, name=row.name, title=row.title, kind=row.kind, form=row.form, origin=row.origin, source=row.source
    )


# -- recommend -------------------------------------------------------------------------------
def model_size(
    n_params: float | None, d_model: int | None, n_layers: int | None, vocab_size: int | None
) -> tuple[float, str, float | None]:
    """N from the request: given, or 12 n_layers d_model^2 (a standard GPT block's non-embedding
    weights: 4 d^2 attention + 8 d^2 MLP). Returns (N, how it was obtained, embedding params)."""
    shape_given = d_model is not None or n_layers is not None
    if n_params is not None and shape_given:
        raise InputError("give n_params, or d_model and n_layers, not both")
    if vocab_size is not None and d_model is None:
        raise InputError("vocab_size needs d_model (it only adds the embedding size, vocab_size * d_model)")
    if n_params is not None:
        return float(n_params), "given", None
    if d_model is None or n_layers is None:
        raise InputError("give n_params, or both d_model and n_layers")
    embedding = float(vocab_size) * d_model if vocab_size is not None else None
    return 12.0 * n_layers * float(d_model) ** 2, "12 * n_layers * d_model^2", embedding


LAW_CACHE_SECONDS = 1.0
"""How often the law cache asks whether the stored laws changed. Recommendations are the API's
hot path: resolving a law costs several queries (milliseconds), using a resolved one none, and
asking whether anything changed one cheap query. A law fitted by another process (the CLI,
another worker) is picked up within this time; a fit through this process clears it at once."""


@dataclass(frozen=True)
class ResolvedLaw:
    """A hyper law ready to recommend from: its row, its fitting object, and the near-optimal
    spread of its data ((lr low, lr high, batch low, batch high) ratios; None without data)."""

    row: Law
    law: HyperLaw
    eps: float
    spread: tuple[float, float, float, float] | None


ResolvedLoss = law_service.LossLawChoice


_UNRESOLVED = object()


class LawCache:
    """Resolved laws, kept until the stored laws change (``storage.law_stamp``, checked at most
    every ``ttl`` seconds): hyper laws by the ``law`` argument of a request, and the loss law.
    The near-optimal spread of a fitted law is kept for good (a stored law's runs never change).
    Thread-safe: sync routes and lookups run in worker threads."""

    MAX_ENTRIES = 256  # law ids can be spelt many ways ("1", "01"): bound the memory

    def __init__(self, ttl: float = LAW_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._resolved: dict[str | None, ResolvedLaw] = {}
        self._defaults: list[Any] | None = None  # law_service.default_candidates, newest first
        self._loss: Any = _UNRESOLVED
        self._spreads: dict[tuple[int, str], tuple[float, float, float, float] | None] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()

    def _due(self) -> bool:
        return time.monotonic() - self._checked_at >= self.ttl

    def _check(self, db: Database) -> None:
        """Forget resolved laws if the stored laws changed since the last check."""
        stamp = storage.law_stamp(db)
        with self._lock:
            if stamp != self._stamp:
                self._resolved.clear()
                self._defaults = None
                self._loss = _UNRESOLVED
                self._stamp = stamp
            self._checked_at = time.monotonic()

    def hyper(self, db: Database, law: str | None, target: tuple[float, float], warn_factor: float) -> ResolvedLaw:
        """The hyper law ``law`` names (id or name; None: the default for ``target``, N params
        and D tokens, as ``resolve_law``)."""
        if self._due():
            self._check(db)
        if law is None:
            law = self._default_key(db, target, warn_factor)
        with self._lock:
            hit = self._resolved.get(law)
        if hit is not None:
            return hit
        row = law_service.resolve_law(db, law, target, warn_factor)
        # Keyed by (id, creation time): SQLite may reuse the id of a deleted law.
        key = (row.id, str(row.created_at))
        with self._lock:
            known = key in self._spreads
            spread = self._spreads.get(key)
        if not known:
            spread = _near_optimal_spread(db, row)
        resolved = ResolvedLaw(row=row, law=law_service.law_object(row), eps=_eps(row), spread=spread)
        with self._lock:
            if len(self._resolved) >= self.MAX_ENTRIES:
                self._resolved.clear()
            self._resolved[law] = resolved
            self._spreads[key] = spread
        return resolved

    def loss(self, db: Database) -> ResolvedLoss | None:
        """The newest fitted loss law whose extrapolation check passed, else the newest fitted
        loss law (flagged), else None."""
        if self._due():
            self._check(db)
        with self._lock:
            hit = self._loss
        if hit is not _UNRESOLVED:
            return hit  # type: ignore[no-any-return]
        resolved = law_service.resolve_loss_law(db)
        with self._lock:
            self._loss = resolved
        return resolved

    def _default_key(self, db: Database, target: tuple[float, float], warn_factor: float) -> str:
        """The id (as a key of ``_resolved``) of the default law for ``target``: the candidates
        are looked up once per change of the stored laws, the choice is made per request."""
        with self._lock:
            candidates = self._defaults
        if candidates is None:
            candidates = law_service.default_candidates(db, "hyper")
            with self._lock:
                self._defaults = candidates
        chosen = law_service.choose_default(candidates, *target, warn_factor)
        if chosen is None:
            return DEFAULT_PRESET
        return str(chosen.id)

    async def hyper_async(self, db: Database, law: str | None, target: tuple[float, float],
                          warn_factor: float) -> ResolvedLaw:
        """``hyper`` for async routes: a cached law at once, else looked up in a worker thread
        (queries must not block the event loop)."""
        if not self._due():
            with self._lock:
                defaults_known = self._defaults is not None
            if law is not None or defaults_known:  # then finding the key needs no query
                key = law if law is not None else self._default_key(db, target, warn_factor)
                with self._lock:
                    hit = self._resolved.get(key)
                if hit is not None:
                    return hit
        return await anyio.to_thread.run_sync(self.hyper, db, law, target, warn_factor)

    async def loss_async(self, db: Database) -> ResolvedLoss | None:
        """``loss`` for async routes (a lookup runs in a worker thread)."""
        if not self._due():
            with self._lock:
                hit = self._loss
            if hit is not _UNRESOLVED:
                return hit  # type: ignore[no-any-return]
        return await anyio.to_thread.run_sync(self.loss, db)

    def clear(self) -> None:
        """Forget resolved laws now (after a fit through this process)."""
        with self._lock:
            self._resolved.clear()
            self._defaults = None
            self._loss = _UNRESOLVED
            self._checked_at = -math.inf


def _eps(row: Law) -> float:
    """The near-optimal band a law was fitted with (its settings), else Step Law's 0.25%."""
    settings = (row.record or {}).get("settings") or {}
    try:
        return float(settings.get("eps", NEAR_OPTIMAL_EPS))
    except (TypeError, ValueError):
        return NEAR_OPTIMAL_EPS


def _near_optimal_spread(db: Database, row: Law) -> tuple[float, float, float, float] | None:
    """Median over the law's groups of the near-optimal runs' lr and batch extent relative to the
    group's smooth optimum; None when the law has no grid data (published laws)."""
    if row.origin != "fitted" or row.kind != "hyper":
        return None
    runs = storage.get_runs(db, storage.law_run_ids(db, row.id))
    runs = [r for r in runs if r.lr is not None and r.batch_tokens is not None]
    if not runs:
        return None
    try:
        run_set = _run_set(runs)
        groups = group_optima(run_set, _eps(row))
    except FittingError:
        return None
    spreads = []
    for g in groups:
        lr_opt = g.lr
        bt_opt = g.batch_tokens if math.isfinite(g.batch_tokens) else g.best_batch_tokens
        lrs, bts = run_set.lr[g.near_optimal], run_set.batch_tokens[g.near_optimal]
        spreads.append((min(lrs.min() / lr_opt, 1.0), max(lrs.max() / lr_opt, 1.0),
                        min(bts.min() / bt_opt, 1.0), max(bts.max() / bt_opt, 1.0)))
    if not spreads:
        return None
    arr = np.median(np.array(spreads), axis=0)
    return (float(arr[0]), float(arr[1]), float(arr[2]), float(arr[3]))


def _near_optimal(
    spread: tuple[float, float, float, float] | None, rec: law_service.Recommendation, eps: float
) -> s.NearOptimalRegion | None:
    seq = rec.seq_len
    if spread is not None:
        lr_lo, lr_hi, b_lo, b_hi = spread
        bt = s.Interval(low=rec.batch_tokens * b_lo, high=rec.batch_tokens * b_hi)
        return s.NearOptimalRegion(
            lr=s.Interval(low=rec.lr * lr_lo, high=rec.lr * lr_hi), batch_tokens=bt,
            batch_size=s.Interval(low=bt.low / seq, high=bt.high / seq), eps=eps, basis="law_data",
        )
    lr_iv, bt_iv = interval(rec.lr_interval), interval(rec.batch_tokens_interval)
    if lr_iv is None or bt_iv is None:
        return None
    return s.NearOptimalRegion(
        lr=lr_iv, batch_tokens=bt_iv, batch_size=s.Interval(low=bt_iv.low / seq, high=bt_iv.high / seq),
        eps=None, basis="interval",
    )


async def recommend(db: Database, laws: LawCache, q: s.RecommendQuery, warn_factor: float) -> s.Recommendation:
    """``service.laws``' recommendation with how N, D and C were obtained, the near-optimal
    region and the law's identity. No query and no thread hop once the law is cached (see
    ``LawCache``): this is the API's hot path."""
    n_params, d_model, n_layers, vocab_size = q.n_params, q.d_model, q.n_layers, q.vocab_size
    tokens, compute, seq_len = q.tokens, q.compute, q.seq_len
    n, n_basis, embedding = model_size(n_params, d_model, n_layers, vocab_size)
    d, c = law_service.check_target(n, tokens, compute, seq_len)
    resolved = await laws.hyper_async(db, q.law, (n, d), warn_factor)
    rec = law_service.recommend_with_law(resolved.row, resolved.law, n, d, c, seq_len, warn_factor)
    loss = await laws.loss_async(db)
    if loss is not None:
        law_service.add_loss_prediction(rec, loss, warn_factor)
    return s.Recommendation(
        n_params=rec.n_params, n_params_basis=n_basis, d_model=d_model, n_layers=n_layers, vocab_size=vocab_size,
        embedding_params=embedding, tokens=rec.tokens, compute=rec.compute,
        compute_basis="given" if compute is not None else "6 * n_params * tokens",
        tokens_basis="given" if tokens is not None else "compute / (6 * n_params)",
        seq_len=rec.seq_len,
        lr=rec.lr, lr_interval=interval(rec.lr_interval),
        batch_tokens=rec.batch_tokens, batch_tokens_interval=interval(rec.batch_tokens_interval),
        batch_size=rec.batch_size, batch_size_interval=interval(rec.batch_size_interval),
        near_optimal=_near_optimal(resolved.spread, rec, resolved.eps),
        final_loss=finite(rec.final_loss), final_loss_interval=interval(rec.final_loss_interval),
        loss_law=law_ref(loss.row) if loss is not None else None,
        extrapolation_factor=finite(rec.extrapolation_factor), extrapolation_warning_factor=warn_factor,
        warnings=list(rec.warnings), law=law_ref(resolved.row),
    )


# -- laws --------------------------------------------------------------------------------------
def law_summary(row: Law) -> s.LawSummary:
    """A law as listed."""
    return s.LawSummary(
        **law_ref(row).model_dump(), extrapolation_passed=law_service.check_passed(row), code_version=row.code_version,
        created_at=row.created_at,
    )


def list_laws(db: Database, kind: str | None, origin: str | None) -> list[s.LawSummary]:
    """Stored laws (published ones are stored on startup), by id."""
    return [law_summary(r) for r in storage.list_laws(db, kind=kind, origin=origin)]


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
    fr = s.FitRange(
        n_params=interval(raw.get("n_params")), tokens=interval(raw.get("tokens")), compute=interval(raw.get("compute"))
    )
    return fr if (fr.n_params or fr.tokens or fr.compute) else None


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
        lo_default, hi_default = fit_range.n_params.low / 10, fit_range.n_params.high * 10
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
        )
        for r in law_runs
    ]
    return s.LawDetail(
        **law_summary(row).model_dump(),
        parameters=_float_dict(record.get("coefficients")),
        intervals=intervals,
        fit_range=fit_range,
        extrapolation=json_safe(row.extrapolation) if isinstance(row.extrapolation, dict) else None,
        settings=json_safe(row.settings or record.get("settings")) or None,
        warnings=warnings,
        data=data,
        curve=curve,
        fitted_curves=fitted_curves,
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


# -- runs --------------------------------------------------------------------------------------
def run_out(r: Run) -> s.Run:
    """A stored run as the API shows it."""
    return s.Run(
        id=r.id, source=r.source, name=r.name, sweep_id=r.sweep_id, n_params=r.n_params, tokens=r.tokens,
        compute=finite(compute_flops(r.n_params, r.tokens)), lr=r.lr, batch_tokens=r.batch_tokens, batch_size=r.batch_size,
        seq_len=r.seq_len, schedule=r.schedule, status=r.status, final_loss=finite(r.final_loss),
        final_loss_status=r.final_loss_status, tags=json_safe(r.tags), seed=r.seed, corpus_hash=r.corpus_hash,
        code_version=r.code_version, created_at=r.created_at, finished_at=r.finished_at,
    )


def run_detail(db: Database, run_id: int) -> s.RunDetail:
    """One run with its configuration and spec."""
    r = storage.get_run(db, run_id)
    return s.RunDetail(**run_out(r).model_dump(), config=json_safe(r.config), spec=json_safe(r.spec))


def run_page(db: Database, sources: list[str] | None, limit: int, offset: int) -> s.RunPage:
    """A page of runs ordered by (source, id)."""
    items = storage.list_runs(db, sources=sources, limit=limit, offset=offset)
    return s.RunPage(
        items=[run_out(r) for r in items], total=storage.count_runs(db, sources=sources), limit=limit, offset=offset
    )


def run_curve(db: Database, run_id: int) -> s.RunCurve:
    """A run's loss curve."""
    points = storage.get_curve(db, run_id)
    return s.RunCurve(
        run_id=run_id,
        points=[
            s.CurvePoint(step=p.step, tokens=finite(p.tokens), lr=finite(p.lr), train_loss=p.train_loss,
                         val_loss=p.val_loss, nonfinite=p.nonfinite)
            for p in points
        ],
    )


def import_runs(db: Database, body: s.RunsImport) -> s.ImportResult:
    """Store runs sent in the import format; known (source, name) keys are skipped."""
    # Re-validated through the import format's one validator: it also refuses repeated names.
    runs = validate_runs([r.model_dump(exclude_unset=True) for r in body.runs])
    result = storage.add_runs(db, [r.to_storage(body.source) for r in runs])
    return s.ImportResult(source=body.source, added=result.added, skipped=result.skipped)


# -- sweeps ------------------------------------------------------------------------------------
def _sweep_summary(row: Sweep, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "status": sweep_state(counts), "corpus_hash": row.corpus_hash,
        "code_version": row.code_version, "created_at": row.created_at, "n_runs": sum(counts.values()),
        "runs_by_status": counts,
    }


def list_sweeps(db: Database) -> list[s.SweepSummary]:
    """Every sweep with its progress."""
    counts = storage.sweep_run_counts(db)
    return [s.SweepSummary(**_sweep_summary(r, counts.get(r.id, {}))) for r in storage.list_sweeps(db)]


def sweep_detail(db: Database, sweep: str) -> s.SweepDetail:
    """One sweep (by id or name) with its spec and progress."""
    row = storage.get_sweep(db, sweep)
    counts = storage.sweep_run_counts(db).get(row.id, {})
    return s.SweepDetail(**_sweep_summary(row, counts), spec=json_safe(row.spec) or {})


def _run_set(runs: Sequence[Run]) -> RunSet:
    return RunSet(
        n_params=np.array([r.n_params for r in runs], float), tokens=np.array([r.tokens for r in runs], float),
        lr=np.array([np.nan if r.lr is None else r.lr for r in runs], float),
        batch_tokens=np.array([np.nan if r.batch_tokens is None else r.batch_tokens for r in runs], float),
        final_loss=np.array([np.nan if r.final_loss is None else r.final_loss for r in runs], float),
        diverged=np.array([r.status == "diverged" or r.final_loss is None for r in runs], bool),
        names=[str(r.id) for r in runs],
    )


def sweep_groups(db: Database, sweep: str, eps: float = NEAR_OPTIMAL_EPS) -> list[s.Group]:
    """Per (N, D) group of a sweep: its runs, the best, the near-optimal set (within ``eps`` of
    the best final loss) and the smooth optimum when the group's finished runs allow one."""
    row = storage.get_sweep(db, sweep)
    runs = storage.list_runs(db, sweep_id=row.id)
    by_group: dict[tuple[float, float], list[Run]] = {}
    for r in runs:
        by_group.setdefault((r.n_params, r.tokens), []).append(r)
    out = []
    for (n, d), members in sorted(by_group.items()):
        # The fitting engine's optimum, so that the page shows what a fit uses: a diverged run is
        # never near-optimal, and seeds of one configuration count by their mean loss.
        judged = [r for r in members if r.status in ("done", "diverged") and r.lr is not None and r.batch_tokens is not None]
        opt = _fit_group(judged, eps)
        near = {judged[int(i)].id for i in opt.near_optimal} if opt else set()
        best = min((r for r in judged if r.id in near and r.lr == opt.best_lr and r.batch_tokens == opt.best_batch_tokens),
                   key=lambda r: r.final_loss) if opt else None  # type: ignore[union-attr]
        out.append(
            s.Group(
                n_params=n, tokens=d, compute=finite(compute_flops(n, d)),
                runs=[
                    s.GroupRun(
                        id=r.id, name=r.name, lr=r.lr, batch_tokens=r.batch_tokens, batch_size=r.batch_size,
                        final_loss=finite(r.final_loss), final_loss_status=r.final_loss_status, status=r.status,
                        near_optimal=r.id in near,
                    )
                    for r in members
                ],
                best_run_id=best.id if best else None, best_loss=finite(opt.best_loss) if opt else None,
                near_optimal_run_ids=sorted(near), eps=eps, optimum=_smooth_optimum(opt, judged),
            )
        )
    return out


def _fit_group(judged: list[Run], eps: float) -> FitGroupOptimum | None:
    """The optimum of one group's finished runs (lr and batch known), or None when none finished."""
    try:
        groups = group_optima(_run_set(judged), eps) if judged else []
    except FittingError:  # every run diverged
        return None
    return groups[0] if len(groups) == 1 else None


def _smooth_optimum(opt: FitGroupOptimum | None, judged: list[Run]) -> s.GroupOptimum | None:
    """The group's smooth optimum, or None with fewer than three finished runs (no surface to fit)."""
    if opt is None or sum(r.status == "done" for r in judged) < 3 or finite(opt.lr) is None:
        return None
    return s.GroupOptimum(lr=opt.lr, batch_tokens=finite(opt.batch_tokens), method=opt.method, edges=list(opt.edges))


# -- fits and predictions (the fitting glue lives in service.fits) ---------------------------
def schedule_array(schedule: s.NamedSchedule | s.TableSchedule) -> np.ndarray:
    """The per-step learning rates of a requested schedule (element i: the lr of step i + 1)."""
    try:
        if isinstance(schedule, s.TableSchedule):
            table = [(e.step, e.lr) for e in schedule.table]
            total = schedule.total_steps or max(step for step, _ in table)
            peak = max(lr for _, lr in table)
            if peak <= 0:
                raise InputError("schedule.table: at least one lr must be > 0")
            return lr_schedule("table", total, peak, table=table)
        return lr_schedule(
            schedule.kind, schedule.total_steps, schedule.peak_lr, warmup_steps=schedule.warmup_steps,
            final_lr_ratio=schedule.final_lr_ratio, cooldown_fraction=schedule.cooldown_fraction, decay=schedule.decay,
        )
    except ValueError as exc:  # lr_schedule's refusals are the request's fault
        raise InputError(f"schedule: {exc}") from None


def predict_curve(db: Database, body: s.CurvePredictionRequest) -> s.CurvePrediction:
    """A trajectory law's predicted loss curve for a schedule."""
    row = storage.get_law(db, body.law)  # for the answer's law identity; predict checks the kind
    result = fits.predict_curve(db, row.id, schedule_array(body.schedule), body.tokens_per_step)
    loss = np.asarray(result["loss"], float)
    if not np.all(np.isfinite(loss)):
        raise FittingError(f"law {row.name} predicts a non-finite loss for this schedule")
    tokens = result.get("tokens")
    return s.CurvePrediction(
        law=law_ref(row), steps=[int(v) for v in result["steps"]], lr=[float(v) for v in result["lr"]],
        loss=loss.tolist(), tokens=[float(v) for v in tokens] if tokens is not None else None,
    )


def fit_law(db: Database, body: s.FitRequest) -> s.LawDetail:
    """Fit a law from stored runs, store it with its provenance, and describe it."""
    row = fits.fit_and_store(
        db, kind=body.kind, form=body.form, sources=body.sources, run_names=body.runs, n_bootstrap=body.bootstrap,
        seed=body.seed,
    )
    return law_detail(db, str(row.id))
