"""Glue between stored laws and the fitting package: published laws, loading, recommending."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.errors import NotFoundError
from hpscale.db.models import Law
from hpscale.db.provenance import code_version
from hpscale.fitting.errors import FittingError
from hpscale.fitting.hyper import HyperLaw, compute_flops
from hpscale.fitting.optimum import EDGE_NOTE
from hpscale.fitting.presets import DEFAULT_PRESET, PRESETS
from hpscale.fitting.registry import extrapolation_factor, law_from_record
from hpscale.fitting.sanity import design_notes, law_problems
from hpscale.service.errors import InputError

logger = logging.getLogger("hpscale")

DEFAULT_OPTIMIZER = "adamw"  # the published presets' optimizer, and every law's before laws named theirs


def ensure_published_laws(db: Database) -> None:
    """Store every published preset (or refresh one whose record changed), so that a new
    database can recommend at once. Writes nothing when all are up to date."""
    stored = {r.name: r for r in storage.list_laws(db, origin="published")}
    for preset in PRESETS.values():
        record = preset.law.to_record()
        row = stored.get(preset.name)
        if row is not None and row.record == record and row.source == preset.source:
            continue
        storage.upsert_published_law(
            db,
            {
                "name": preset.name,
                "kind": "hyper",
                "form": preset.law.form,
                "origin": "published",
                "optimizer": DEFAULT_OPTIMIZER,
                "title": preset.title,
                "source": preset.source,
                "record": record,
                "extrapolation": None,
                "settings": None,
                "code_version": code_version(),
            },
        )


def resolve_law(db: Database, law: str | int | None, target: tuple[float, ...], warn_factor: float,
                kind: str = "hyper", optimizer: str | None = None) -> Law:
    """A stored law by id or name (which must be ``optimizer``'s when that is given); None: the
    default for ``target`` (N params, D tokens) and ``optimizer`` (default AdamW), see
    ``default_law``."""
    ensure_published_laws(db)
    if law is not None:
        row = storage.get_law(db, law)
        if row.kind != kind:
            raise InputError(f"law {row.id} ({row.name}) is a {row.kind} law, not a {kind} law")
        check_optimizer(row, optimizer)
        return row
    chosen = default_law(default_candidates(db, kind, optimizer or DEFAULT_OPTIMIZER), target, warn_factor,
                         optimizer or DEFAULT_OPTIMIZER)
    return chosen if chosen is not None else storage.get_law(db, DEFAULT_PRESET)


def check_optimizer(row: Law, optimizer: str | None) -> None:
    """``InputError`` when a law named by the caller was fitted on another optimizer than asked."""
    if optimizer is not None and row.optimizer != optimizer:
        raise InputError(f"law {row.id} ({row.name}) was fitted on {row.optimizer} runs, not {optimizer}: "
                         "a law is only used for its own optimizer")


def default_candidates(db: Database, kind: str = "hyper", optimizer: str = DEFAULT_OPTIMIZER) -> list[Law]:
    """The fitted laws of ``kind`` and ``optimizer`` whose extrapolation check passed and whose
    fit is sound (``failure`` is empty), newest first."""
    return [r for r in reversed(storage.list_laws(db, kind=kind, origin="fitted"))
            if r.optimizer == optimizer and check_passed(r) and not failure(r)]


def failure(row: Law) -> list[str]:
    """Why a stored law is unusable (a degenerate fit: ``fitting.sanity.law_problems``); empty
    when it is sound. Checked on the record itself, so laws stored before the check are caught."""
    record = row.record if isinstance(row.record, dict) else {}
    return law_problems(record)


def default_law(candidates: list[Law], target: tuple[float, ...], warn_factor: float,
                optimizer: str = DEFAULT_OPTIMIZER) -> Law | None:
    """The law to answer ``target`` (N, D, optionally the C asked for) for ``optimizer`` from its ``candidates``
    (``default_candidates``): the newest that answers without an extrapolation warning
    (``choose_default``). None: AdamW's published preset answers. The published laws are AdamW's:
    another optimizer with no candidate near the target gets its newest passing law (the answer
    then carries the extrapolation warning), and with none at all ``NotFoundError`` says so,
    rather than an AdamW law answering for it."""
    chosen = choose_default(candidates, target, warn_factor)
    if chosen is not None or optimizer == DEFAULT_OPTIMIZER:
        return chosen
    if candidates:
        return candidates[0]
    raise NotFoundError(
        f"no fitted hyper law for optimizer {optimizer!r} whose extrapolation check passed; the published laws "
        f"(Step Law, DeepSeek) are AdamW's and say nothing about {optimizer}: fit one on {optimizer} runs "
        f"(`hpscale fit --kind hyper --optimizer {optimizer}`), or name a law")


def choose_default(candidates: list[Law], target: tuple[float, ...], warn_factor: float) -> Law | None:
    """The first of ``candidates`` (newest first) that would answer the target (N params, D
    tokens, and optionally the C FLOPs asked for) without an extrapolation warning: the target
    lies within ``warn_factor`` of its data (in N, D and C; ``law_extrapolation``). None: use the
    published preset, fitted on models up to billions of parameters (a sweep of 3M-parameter
    models says little about a 7B model)."""
    for row in candidates:
        if law_extrapolation(row, *target) <= warn_factor:
            return row
    return None


def law_extrapolation(row: Law, n_params: float, tokens: float, compute: float | None = None) -> float:
    """How far a hyper law's answer for a target lies outside its data (``extrapolation_factor``):
    a compute-form law answers at the C asked for (``compute``), the others at N and D, whatever
    C was said."""
    return extrapolation_factor((row.record or {}).get("fit_range"), n_params, tokens,
                                compute if row.form == "compute" else None)


def check_passed(row: Law) -> bool | None:
    """Whether a law's extrapolation check passed; None when it carries no check (published).
    A law stored as failed never passed."""
    report = row.extrapolation
    if not isinstance(report, dict) or "passed" not in report:
        return None
    return bool(report["passed"]) and not report.get("failed")


@dataclass(frozen=True)
class LossLawChoice:
    """A loss law recommendations may predict the final loss with: its row, its fitting object,
    and whether its extrapolation check passed."""

    row: Law
    law: Any
    passed: bool


def loss_candidates(db: Database, optimizer: str = DEFAULT_OPTIMIZER) -> list[LossLawChoice]:
    """The sound fitted loss laws of ``optimizer``: those whose extrapolation check passed first,
    then the others, newest first in each. An unreadable law is logged and skipped: it must not
    take recommendations down with it."""
    rows = [r for r in reversed(storage.list_laws(db, kind="loss", origin="fitted"))
            if r.optimizer == optimizer and not failure(r)]
    out = []
    for row in sorted(rows, key=lambda r: not check_passed(r)):
        try:
            out.append(LossLawChoice(row=row, law=law_object(row), passed=bool(check_passed(row))))
        except FittingError as exc:
            logger.warning("loss law %s (id %s) cannot be loaded: %s", row.name, row.id, exc)
    return out


def choose_loss_law(candidates: list[LossLawChoice], n_params: float, tokens: float,
                    warn_factor: float) -> tuple[LossLawChoice | None, str | None]:
    """The loss law that answers for a target (N params, D tokens) by default: the first
    candidate whose data the target lies within ``warn_factor`` of. None with a note when the
    target lies outside every stored loss law: a loss law fitted on 2M-parameter models says
    nothing trustworthy about a 7B model, so no number is shown (the law still answers when
    asked for by name, with its interval and a warning)."""
    factors = []
    for choice in candidates:
        factor = extrapolation_factor((choice.row.record or {}).get("fit_range"), n_params, tokens)
        if factor <= warn_factor:
            return choice, None
        factors.append((factor, choice))
    if not factors:
        return None, None
    factor, nearest = min(factors, key=lambda fc: fc[0])
    span = fit_span((nearest.row.record or {}).get("fit_range"))
    others = f" (of {len(factors)} stored loss laws, the nearest)" if len(factors) > 1 else ""
    return None, (
        f"no final-loss prediction: the target lies {factor:.3g}x outside the data of every stored loss law; "
        f"loss law {nearest.row.name}{others} was fitted on {span}. A loss law answers within "
        f"{warn_factor:g}x of its data: fit one on runs that reach that far, or ask for loss law "
        f"{nearest.row.id} by name to see its extrapolation with its interval"
    )


# The axes of a law's fit range, as people read them (hyper and loss laws: N, D, C; trajectory
# laws: steps and the fitted curves' peak lr).
SPAN_LABELS = {"n_params": "N", "tokens": "D", "compute": "C", "steps": "steps", "peak_lr": "peak lr"}


def fit_span(fit_range: Any) -> str:
    """'N 1.7e+05-1.8e+06, D 1.7e+06-1.8e+07, C 1.7e+12-1.9e+14' (or 'steps 2160-23936, peak lr
    0.0003') from a fit range: each axis it has (an extrapolation factor is the largest over N,
    D and C = 6ND, so C is shown too); a range of one value shows it once."""
    if not isinstance(fit_range, dict):
        return "data of unknown range"
    parts = []
    for key, label in SPAN_LABELS.items():
        pair = fit_range.get(key)
        if isinstance(pair, list) and len(pair) == 2:
            lo, hi = (f"{v:.0f}" if key == "steps" else f"{v:.3g}" for v in pair)  # steps are whole
            parts.append(f"{label} {lo}" if lo == hi else f"{label} {lo}-{hi}")
    return ", ".join(parts) or "data of unknown range"


def loss_warnings(row: Law, passed: bool, n_params: float, tokens: float, warn_factor: float) -> list[str]:
    """What a user must know about a loss law's prediction for a target: its check failed, its
    fit warned (E or an exponent at ~0: true of every answer it gives), or the target lies far
    outside its data."""
    out = []
    if not passed:
        out.append(f"loss law {row.name}'s extrapolation check did not pass")
    out.extend(f"loss law {row.name}: {w}" for w in (row.record or {}).get("warnings") or [] if isinstance(w, str))
    factor = extrapolation_factor((row.record or {}).get("fit_range"), n_params, tokens)
    if factor > warn_factor:
        out.append(f"the target lies {factor:.3g}x outside the data loss law {row.name} was fitted on "
                   f"({fit_span((row.record or {}).get('fit_range'))}): this is an extrapolation, not a prediction to trust")
    return out


def add_loss_prediction(rec: "Recommendation", loss: LossLawChoice, warn_factor: float = 10.0) -> None:
    """Add the loss law's predicted final loss (nats/token) for the target to ``rec``, with the
    warnings ``loss_warnings`` gives."""
    pred = loss.law.predict(rec.n_params, rec.tokens)
    rec.final_loss, rec.final_loss_interval, rec.loss_law_id = pred.loss, pred.interval, loss.row.id
    rec.warnings.extend(loss_warnings(loss.row, loss.passed, rec.n_params, rec.tokens, warn_factor))


def law_object(row: Law) -> Any:
    """The fitting-package law a stored row describes."""
    return law_from_record(row.record)


# A compute given with N and D beyond this factor of 6 N D is said to differ (DeepSeek's own C,
# which counts attention, lies within it for most shapes: 1.08x for a 7B model at seq 4096).
C_MISMATCH = 1.5

BATCH_ROUNDING = "batch_tokens / seq_len rounded to the nearest whole sequence (halves up, at least 1)"
"""How a recommendation turns the law's batch in tokens into whole sequences (said in answers)."""


def whole_sequences(batch_tokens: float, seq_len: int) -> int:
    """A batch of ``batch_tokens`` tokens in whole sequences of ``seq_len`` tokens (see
    ``BATCH_ROUNDING``): a batch is a whole number of sequences, and the CLI and the web UI must
    show the same one."""
    return max(1, math.floor(batch_tokens / seq_len + 0.5))


def sequence_interval(low_tokens: float, high_tokens: float, seq_len: int) -> tuple[int, int]:
    """A batch range in tokens as whole sequences, rounded outward (the range only widens)."""
    return max(1, math.floor(low_tokens / seq_len)), max(1, math.ceil(high_tokens / seq_len))


@dataclass
class Recommendation:
    """A recommended configuration for one target (units: lr -, batch_tokens tokens (the law's
    value), batch_size whole sequences (``BATCH_ROUNDING``), compute FLOPs, final_loss
    nats/token)."""

    n_params: float
    tokens: float
    compute: float
    seq_len: int
    lr: float
    batch_tokens: float
    batch_size: int
    law: str
    law_id: int
    law_title: str
    law_origin: str
    source: str
    optimizer: str = DEFAULT_OPTIMIZER  # the law's (and so the recommendation's) optimizer
    lr_interval: tuple[float, float] | None = None
    batch_tokens_interval: tuple[float, float] | None = None
    batch_size_interval: tuple[int, int] | None = None
    extrapolation_factor: float | None = None
    warnings: list[str] = field(default_factory=list)
    final_loss: float | None = None
    final_loss_interval: tuple[float, float] | None = None
    loss_law_id: int | None = None
    final_loss_note: str | None = None


def check_target(n_params: float, tokens: float | None, compute: float | None, seq_len: int) -> tuple[float, float]:
    """Validate a target and return (tokens, compute). Exactly one of tokens/compute may be
    missing: D = C / (6 N) or C = 6 N D."""
    if not (math.isfinite(n_params) and n_params > 0):
        raise InputError(f"n_params must be a finite number > 0 (got {n_params!r})")
    if seq_len <= 0:
        raise InputError(f"seq_len must be > 0 (got {seq_len})")
    for label, v in (("tokens", tokens), ("compute", compute)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise InputError(f"{label} must be a finite number > 0 (got {v!r})")
    if tokens is None and compute is None:
        raise InputError("give tokens (D) or compute (C, FLOPs)")
    if tokens is None:
        assert compute is not None
        tokens = compute / (6.0 * n_params)
    if compute is None:
        compute = compute_flops(n_params, tokens)
    return tokens, compute


def recommend(
    db: Database,
    n_params: float,
    tokens: float | None = None,
    *,
    compute: float | None = None,
    seq_len: int = 2048,
    law: str | int | None = None,
    loss_law: str | int | None = None,
    warn_factor: float = 10.0,
    optimizer: str | None = None,
) -> Recommendation:
    """Recommended peak lr and batch for a target of N params on D tokens (or C FLOPs), trained
    with ``optimizer`` (None: the named law's, else AdamW; see ``resolve_law``), and the final
    loss a loss law predicts: ``loss_law`` by id or name (answers wherever the target lies, with
    warnings), else the default of ``choose_loss_law`` among the optimizer's loss laws (none far
    from every loss law)."""
    tokens, compute = check_target(n_params, tokens, compute, seq_len)
    row = resolve_law(db, law, (n_params, tokens, compute), warn_factor, optimizer=optimizer)
    rec = recommend_with_law(row, law_object(row), n_params, tokens, compute, seq_len, warn_factor)
    if loss_law is not None:
        add_loss_prediction(rec, named_loss_law(db, loss_law), warn_factor)
        return rec
    choice, note = choose_loss_law(loss_candidates(db, row.optimizer), n_params, tokens, warn_factor)
    if choice is not None:
        add_loss_prediction(rec, choice, warn_factor)
    rec.final_loss_note = note
    return rec


def named_loss_law(db: Database, law: str | int) -> LossLawChoice:
    """A loss law asked for by id or name; refuses another kind or a failed fit."""
    row = storage.get_law(db, law)
    if row.kind != "loss":
        raise InputError(f"law {row.id} ({row.name}) is a {row.kind} law, not a loss law")
    problems = failure(row)
    if problems:
        raise InputError(f"loss law {row.id} ({row.name}) is a failed fit: {problems[0]}")
    return LossLawChoice(row=row, law=law_object(row), passed=bool(check_passed(row)))


def recommend_with_law(
    row: Law, hyper: HyperLaw, n_params: float, tokens: float, compute: float, seq_len: int, warn_factor: float = 10.0
) -> Recommendation:
    """The recommendation of an already resolved hyper law (``row`` and its ``law_object``), for a
    target checked by ``check_target``. No database access: the API resolves laws once and
    caches them, then calls this per request."""
    # A compute-form law uses C as given (DeepSeek's own C may differ from 6ND); others use N, D.
    pred = hyper.predict(n_params, tokens, compute=compute)
    problems = failure(row)
    if not (math.isfinite(pred.lr) and pred.lr > 0 and math.isfinite(pred.batch_tokens) and pred.batch_tokens > 0):
        why = f": its fit failed ({problems[0]})" if problems else ""
        raise InputError(f"law {row.id} ({row.name}) gives no finite learning rate and batch for this target{why}")
    rec = Recommendation(
        n_params=n_params, tokens=tokens, compute=compute, seq_len=seq_len,
        lr=pred.lr, batch_tokens=pred.batch_tokens, batch_size=whole_sequences(pred.batch_tokens, seq_len),
        law=row.name, law_id=row.id, law_title=row.title, law_origin=row.origin, source=row.source,
        optimizer=row.optimizer, lr_interval=pred.lr_interval, batch_tokens_interval=pred.batch_tokens_interval,
        batch_size_interval=(
            sequence_interval(*pred.batch_tokens_interval, seq_len) if pred.batch_tokens_interval else None
        ),
    )
    if problems:
        rec.warnings.append(f"law {row.name} is a failed fit ({'; '.join(problems)}): do not rely on it")
    rec.warnings.extend(f"law {row.name}: {w}" for w in design_notes(row.record or {})[1])
    edged = [w for w in (row.record or {}).get("warnings") or [] if isinstance(w, str) and EDGE_NOTE in w]
    if edged:
        rec.warnings.append(f"law {row.name} was fitted on {len(edged)} (N, D) groups whose best run lies on the edge "
                            "of the searched grid: their optimum, and so the law, may be off (hpscale laws show)")
    ratio = compute / (6.0 * n_params * tokens)
    if not 1 / C_MISMATCH <= ratio <= C_MISMATCH:
        uses = "at C" if row.form == "compute" else "at N and D, not at C"
        rec.warnings.append(f"the compute given ({compute:.3g} FLOPs) is {ratio:.3g}x 6 N D ({6.0 * n_params * tokens:.3g}): "
                            f"law {row.name} answers {uses}")
    fit_range = (row.record or {}).get("fit_range")
    if fit_range:
        rec.extrapolation_factor = law_extrapolation(row, n_params, tokens, compute)
        if rec.extrapolation_factor > warn_factor:
            rec.warnings.append(
                f"the target lies {rec.extrapolation_factor:.3g}x outside the data law {row.name} was fitted on"
            )
    if pred.batch_tokens < seq_len:
        rec.warnings.append(f"the recommended batch ({pred.batch_tokens:.3g} tokens) is under one sequence")
    return rec
