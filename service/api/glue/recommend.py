"""``GET /recommend``: the recommendation, and the cache of resolved laws behind it."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.models import Law
from hpscale.fitting.errors import FittingError
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.optimum import group_optima
from hpscale.fitting.presets import DEFAULT_PRESET
from hpscale.service import fits
from hpscale.service import laws as law_service
from hpscale.service.api import schemas as s
from hpscale.service.api.glue.common import NEAR_OPTIMAL_EPS, finite, interval, law_ref
from hpscale.service.errors import InputError

logger = logging.getLogger("hpscale.api")


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


LossCandidates = list[law_service.LossLawChoice]


class LawCache:
    """Resolved laws, kept until the stored laws change (``storage.law_stamp``, checked at most
    every ``ttl`` seconds): hyper laws by the ``law`` argument of a request, the default
    candidates and the loss law per optimizer, and the answers given (by their query: an answer
    depends on the query and the stored laws only, and a loss law's bootstrap interval alone
    costs milliseconds to compute). The near-optimal spread of a fitted law is kept for good (a
    stored law's runs never change). Thread-safe: sync routes and lookups run in worker threads."""

    MAX_ENTRIES = 256  # law ids can be spelt many ways ("1", "01"): bound the memory
    MAX_ANSWERS = 4096  # about 2 KB each

    def __init__(self, ttl: float = LAW_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._resolved: dict[str, ResolvedLaw] = {}
        self._defaults: dict[str, list[Any]] = {}  # optimizer -> law_service.default_candidates, newest first
        self._loss: dict[str, Any] = {}  # optimizer -> its loss law (or None)
        self._spreads: dict[tuple[int, str], tuple[float, float, float, float] | None] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked_at = -math.inf
        self._answers: dict[tuple[Any, ...], s.Recommendation] = {}
        self._generation = 0  # counts the times the laws changed: an answer of older laws is not kept
        self._lock = threading.Lock()

    def _due(self) -> bool:
        return time.monotonic() - self._checked_at >= self.ttl

    def _check(self, db: Database) -> None:
        """Forget resolved laws if the stored laws changed since the last check."""
        stamp = storage.law_stamp(db)
        with self._lock:
            if stamp != self._stamp:
                if self._stamp is not None:  # (the first check finds nothing resolved yet)
                    self._forget()
                self._stamp = stamp
            self._checked_at = time.monotonic()

    def _forget(self) -> None:
        """Drop what depends on the stored laws (the caller holds the lock)."""
        self._resolved.clear()
        self._defaults.clear()
        self._loss.clear()
        self._answers.clear()
        self._generation += 1

    def answer(self, key: tuple[Any, ...]) -> tuple[s.Recommendation | None, int]:
        """The answer given before to the query ``key`` (None when there is none, or when the
        stored laws are due to be checked for a change), and the generation of the laws in
        force, to hand to ``remember``."""
        with self._lock:
            hit = None if self._due() else self._answers.get(key)
            return hit, self._generation

    def remember(self, key: tuple[Any, ...], answer: s.Recommendation, generation: int) -> None:
        """Keep ``answer`` for the query ``key``, unless the laws changed while it was computed."""
        with self._lock:
            if generation != self._generation:
                return
            if len(self._answers) >= self.MAX_ANSWERS:
                self._answers.clear()
            self._answers[key] = answer

    def hyper(self, db: Database, law: str | None, target: tuple[float, ...], warn_factor: float,
              optimizer: str | None = None) -> ResolvedLaw:
        """The hyper law ``law`` names (id or name; it must be ``optimizer``'s when that is given),
        or with ``law`` None the default for ``target`` (N params and D tokens) and ``optimizer``
        (default AdamW), as ``resolve_law``."""
        if self._due():
            self._check(db)
        key = law if law is not None else self._default_key(db, target, warn_factor, optimizer)
        with self._lock:
            hit = self._resolved.get(key)
        if hit is None:
            hit = self._resolve(db, key, target, warn_factor)
        if law is not None:
            law_service.check_optimizer(hit.row, optimizer)
        return hit

    def _resolve(self, db: Database, key: str, target: tuple[float, ...], warn_factor: float) -> ResolvedLaw:
        row = law_service.resolve_law(db, key, target, warn_factor)
        # Keyed by (id, creation time): SQLite may reuse the id of a deleted law.
        spread_key = (row.id, str(row.created_at))
        with self._lock:
            known = spread_key in self._spreads
            spread = self._spreads.get(spread_key)
        if not known:
            spread = _near_optimal_spread(db, row)
        resolved = ResolvedLaw(row=row, law=law_service.law_object(row), eps=_eps(row), spread=spread)
        with self._lock:
            if len(self._resolved) >= self.MAX_ENTRIES:
                self._resolved.clear()
            self._resolved[key] = resolved
            self._spreads[spread_key] = spread
        return resolved

    def loss(self, db: Database, optimizer: str = law_service.DEFAULT_OPTIMIZER) -> LossCandidates:
        """The loss laws of ``optimizer`` a recommendation may predict with
        (``law_service.loss_candidates``); which one answers is chosen per target
        (``law_service.choose_loss_law``)."""
        if self._due():
            self._check(db)
        with self._lock:
            if optimizer in self._loss:
                return self._loss[optimizer]  # type: ignore[no-any-return]
        resolved = law_service.loss_candidates(db, optimizer)
        with self._lock:
            self._loss[optimizer] = resolved
        return resolved

    def _default_key(self, db: Database, target: tuple[float, ...], warn_factor: float,
                     optimizer: str | None) -> str:
        """The id (as a key of ``_resolved``) of the default law for ``target`` and ``optimizer``:
        the candidates are looked up once per change of the stored laws, the choice is made per
        request (``NotFoundError`` for an optimizer with no law, see ``default_law``)."""
        optimizer = optimizer or law_service.DEFAULT_OPTIMIZER
        with self._lock:
            candidates = self._defaults.get(optimizer)
        if candidates is None:
            candidates = law_service.default_candidates(db, "hyper", optimizer)
            with self._lock:
                self._defaults[optimizer] = candidates
        chosen = law_service.default_law(candidates, target, warn_factor, optimizer)
        if chosen is None:
            return DEFAULT_PRESET
        return str(chosen.id)

    async def hyper_async(self, db: Database, law: str | None, target: tuple[float, ...],
                          warn_factor: float, optimizer: str | None = None) -> ResolvedLaw:
        """``hyper`` for async routes: a cached law at once, else looked up in a worker thread
        (queries must not block the event loop)."""
        if not self._due():
            with self._lock:
                defaults_known = (optimizer or law_service.DEFAULT_OPTIMIZER) in self._defaults
            if law is not None or defaults_known:  # then finding the key needs no query
                key = law if law is not None else self._default_key(db, target, warn_factor, optimizer)
                with self._lock:
                    hit = self._resolved.get(key)
                if hit is not None:
                    if law is not None:
                        law_service.check_optimizer(hit.row, optimizer)
                    return hit
        return await anyio.to_thread.run_sync(self.hyper, db, law, target, warn_factor, optimizer)

    async def loss_async(self, db: Database, optimizer: str = law_service.DEFAULT_OPTIMIZER) -> LossCandidates:
        """``loss`` for async routes (a lookup runs in a worker thread)."""
        if not self._due():
            with self._lock:
                if optimizer in self._loss:
                    return self._loss[optimizer]  # type: ignore[no-any-return]
        return await anyio.to_thread.run_sync(self.loss, db, optimizer)

    def clear(self) -> None:
        """Forget resolved laws and answers now (after a fit through this process)."""
        with self._lock:
            self._forget()
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
        run_set = fits.runset(runs)
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


def _sequences(tokens: s.Interval, seq_len: int) -> s.Interval:
    """A batch range in tokens as whole sequences, rounded outward."""
    low, high = law_service.sequence_interval(tokens.low, tokens.high, seq_len)
    return s.Interval(low=low, high=high)


def _near_optimal(
    spread: tuple[float, float, float, float] | None, rec: law_service.Recommendation, eps: float
) -> s.NearOptimalRegion | None:
    seq = rec.seq_len
    if spread is not None:
        lr_lo, lr_hi, b_lo, b_hi = spread
        bt = s.Interval(low=rec.batch_tokens * b_lo, high=rec.batch_tokens * b_hi)
        return s.NearOptimalRegion(
            lr=s.Interval(low=rec.lr * lr_lo, high=rec.lr * lr_hi), batch_tokens=bt,
            batch_size=_sequences(bt, seq), eps=eps, basis="law_data",
        )
    lr_iv, bt_iv = interval(rec.lr_interval), interval(rec.batch_tokens_interval)
    if lr_iv is None or bt_iv is None:
        return None
    return s.NearOptimalRegion(
        lr=lr_iv, batch_tokens=bt_iv, batch_size=_sequences(bt_iv, seq),
        eps=None, basis="interval",
    )


async def recommend(db: Database, laws: LawCache, q: s.RecommendQuery, warn_factor: float) -> s.Recommendation:
    """``service.laws``' recommendation with how N, D and C were obtained, the near-optimal
    region and the law's identity. No query and no thread hop once the law is cached, and no
    computing once the same query was answered (see ``LawCache``): this is the API's hot path."""
    key = (*(getattr(q, f) for f in s.RecommendQuery.model_fields), warn_factor)
    cached, generation = laws.answer(key)
    if cached is not None:
        return cached
    answer = await _recommend(db, laws, q, warn_factor)
    laws.remember(key, answer, generation)
    return answer


async def _recommend(db: Database, laws: LawCache, q: s.RecommendQuery, warn_factor: float) -> s.Recommendation:
    """The answer to ``q``, computed (``recommend`` caches it)."""
    n_params, d_model, n_layers, vocab_size = q.n_params, q.d_model, q.n_layers, q.vocab_size
    tokens, compute, seq_len = q.tokens, q.compute, q.seq_len
    n, n_basis, embedding = model_size(n_params, d_model, n_layers, vocab_size)
    d, c = law_service.check_target(n, tokens, compute, seq_len)
    resolved = await laws.hyper_async(db, q.law, (n, d, c), warn_factor, q.optimizer)
    rec = law_service.recommend_with_law(resolved.row, resolved.law, n, d, c, seq_len, warn_factor)
    if q.loss_law is not None:  # asked for by name: it answers wherever the target lies, with warnings
        loss = await anyio.to_thread.run_sync(law_service.named_loss_law, db, q.loss_law)
    else:
        candidates = await laws.loss_async(db, resolved.row.optimizer)
        loss, rec.final_loss_note = law_service.choose_loss_law(candidates, n, d, warn_factor)
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
        batch_size=rec.batch_size, batch_size_rounding=law_service.BATCH_ROUNDING,
        batch_size_interval=interval(rec.batch_size_interval),
        near_optimal=_near_optimal(resolved.spread, rec, resolved.eps),
        final_loss=finite(rec.final_loss), final_loss_interval=interval(rec.final_loss_interval),
        loss_law=law_ref(loss.row) if loss is not None else None, final_loss_note=rec.final_loss_note,
        extrapolation_factor=finite(rec.extrapolation_factor), extrapolation_warning_factor=warn_factor,
        warnings=list(rec.warnings), law=law_ref(resolved.row), optimizer=rec.optimizer,
    )
