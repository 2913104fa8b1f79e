"""hpscale's own run format (CSV or JSONL; JSON over the API), and the Step Law CSV format.

One record is one finished run:

| field | required | meaning |
|---|---|---|
| ``n_params`` | yes | non-embedding parameters (count, > 0); for a mixture-of-experts model the active ones |
| ``n_params_total`` | no | a mixture-of-experts model's total non-embedding parameters (>= ``n_params``) |
| ``tokens`` | yes | training tokens (> 0) |
| ``final_loss`` | yes | final validation loss, nats/token (> 0; may be NaN/inf only if ``status`` is ``diverged``) |
| ``name`` | no | unique within the import source; the key that makes re-import idempotent (default: a hash of the record) |
| ``lr`` | no | peak learning rate (> 0) |
| ``batch_tokens`` | no | batch in tokens (> 0) |
| ``batch_size``, ``seq_len`` | no | batch in sequences and sequence length; together they give ``batch_tokens`` |
| ``status`` | no | ``done`` (default) or ``diverged`` |
| ``optimizer`` | no | the optimizer it trained with: ``adamw`` (default), ``lion``, ``sgd``, ``sgd_sai``, ``lamb``, ``muon`` or another name; laws are fitted per optimizer |
| ``schedule`` | no | free text naming the learning-rate schedule (default: ``lr_schedule``'s kind) |
| ``lr_schedule`` | no | the schedule itself (see below): trajectory laws are fitted on the lr of every step it gives |
| ``tags`` | no | free-form: a JSON object (JSONL), or ``k=v;k=v`` text (CSV); one key is read: ``steps_to_target`` (below) |
| ``curve`` | no (JSONL only) | list of ``{step, lr?, loss, tokens?}``; ``loss`` is the evaluation loss |

``lr_schedule`` is one of the sweep spec's schedule kinds with its parameters,
``{kind: constant|cosine|linear|wsd, total_steps, peak_lr, warmup_steps?, final_lr_ratio?,
cooldown_fraction?, decay?}``, or a step table, ``{kind: table, table: [{step, lr}, ...],
total_steps?, warmup_steps?}`` (each lr holds from its step to the next entry's); see
``fitting.schedules.lr_schedule``. In CSV it is ``k=v;k=v`` text, the table as ``step:lr``
pairs separated by spaces: ``kind=table;warmup_steps=2160;table=1:3e-4 8001:9e-5``. Without
it, a trajectory fit interpolates the lr logged at the curve's points, and says so.
The same schedule objects are the API's ``POST /predict/curve`` schedules.

A run tagged ``steps_to_target`` (a number of optimizer steps) is a steps-to-target
measurement: it reached ``final_loss``, the target, after that many steps at its batch.
Critical-batch fits take such runs as they are (``parse_steps_to_target_file`` reads whole
tables of them) and measure the other runs' steps on their curves.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from hpscale.fitting.schedules import lr_schedule
from hpscale.service.errors import InputError
from hpscale.service.inputs import INTEGER, TEXT, JsonInt, check_tags
from hpscale.service.jsonsafe import json_safe
from hpscale.service.settings import get_settings

MAX_INT32 = 2**31 - 1  # steps and sequence lengths are 32-bit integer columns
SOURCE_MAX_LENGTH = 200  # runs.source is a String(200) column


def check_schedule_length(total_steps: int, what: str = "schedule", limit: int | None = None) -> None:
    """Refuse a schedule longer than ``limit`` steps (default: the ``HPSCALE_MAX_CURVE_STEPS``
    setting) before anything of its length is built: the trajectory laws' work and memory grow
    linearly with it."""
    limit = get_settings().max_curve_steps if limit is None else limit
    if total_steps > limit:
        raise InputError(f"{what}: {total_steps:,} steps exceed the limit of {limit:,} "
                         "(set HPSCALE_MAX_CURVE_STEPS to raise it)")


class NamedSchedule(BaseModel):
    """A learning-rate schedule by kind and parameters (``fitting.schedules.lr_schedule``):
    linear warmup from 0 to the peak, then the kind's decay."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["constant", "cosine", "linear", "wsd"]
    total_steps: JsonInt = Field(ge=1, le=MAX_INT32)
    peak_lr: float = Field(gt=0, le=10.0, strict=True)
    warmup_steps: JsonInt = Field(default=0, ge=0, le=MAX_INT32, description="Linear warmup from 0 to the peak.")
    final_lr_ratio: float = Field(default=0.1, ge=0, le=1, strict=True, description="Final lr as a fraction of the peak.")
    cooldown_fraction: float = Field(default=0.2, gt=0, le=1, strict=True,
                                     description="wsd: fraction of all steps spent decaying.")
    decay: Literal["linear", "exponential"] = Field(default="linear", description="wsd: shape of the cooldown.")

    @model_validator(mode="after")
    def _warmup_fits(self) -> "NamedSchedule":
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds total_steps ({self.total_steps})")
        return self

    @property
    def peak(self) -> float:
        return self.peak_lr

    @property
    def length(self) -> int:
        return self.total_steps


class ScheduleEntry(BaseModel):
    """From ``step`` on (1-based), the learning rate is ``lr`` until the next entry."""

    model_config = ConfigDict(extra="forbid")

    step: JsonInt = Field(ge=1, le=MAX_INT32)
    lr: float = Field(ge=0, le=10.0, strict=True)


class TableSchedule(BaseModel):
    """A step-wise schedule given as a table of (step, lr)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["table"]
    table: list[ScheduleEntry] = Field(
        min_length=1, description="Entries by increasing step, the first at step 1.",
        json_schema_extra={"contains": {"properties": {"step": {"const": 1}}, "required": ["step"]}},
    )
    total_steps: Annotated[int, Field(ge=1, le=MAX_INT32), INTEGER] | None = Field(
        default=None, description="Default: the last step in the table.")
    warmup_steps: JsonInt = Field(default=0, ge=0, le=MAX_INT32,
                              description="Scales the table's values linearly from 0 over the first steps.")

    @model_validator(mode="after")
    def _well_formed(self) -> "TableSchedule":
        steps = [e.step for e in self.table]
        if steps[0] != 1:
            raise ValueError("the table must start at step 1")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("the table's steps must increase")
        if max(e.lr for e in self.table) <= 0:
            raise ValueError("at least one table lr must be > 0")
        if self.warmup_steps > self.length:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds the schedule's {self.length} steps")
        return self

    @property
    def peak(self) -> float:
        return max(e.lr for e in self.table)

    @property
    def length(self) -> int:
        return self.total_steps or self.table[-1].step


LrSchedule = Annotated[NamedSchedule | TableSchedule, Field(discriminator="kind")]
_SCHEDULE: TypeAdapter[NamedSchedule | TableSchedule] = TypeAdapter(LrSchedule)


def read_schedule(stored: dict[str, Any]) -> NamedSchedule | TableSchedule:
    """A schedule object from its JSON form (as stored in ``runs.config``)."""
    try:
        return _SCHEDULE.validate_python(stored)
    except ValidationError as exc:
        raise InputError(f"invalid lr_schedule: {_describe(exc)}") from None


def schedule_lrs(schedule: NamedSchedule | TableSchedule, at: np.ndarray | None = None,
                 max_steps: int | None = None) -> np.ndarray:
    """The learning rate of every step of a schedule (element i: the lr of step i + 1), or of
    the 1-based steps ``at`` only. A whole schedule longer than ``max_steps`` (default: the
    ``HPSCALE_MAX_CURVE_STEPS`` setting) is refused with ``InputError`` before it is built."""
    if at is None:
        check_schedule_length(schedule.length, limit=max_steps)
    try:
        if isinstance(schedule, TableSchedule):
            table = [(e.step, e.lr) for e in schedule.table]
            return lr_schedule("table", schedule.length, schedule.peak, warmup_steps=schedule.warmup_steps,
                               table=table, at=at)
        return lr_schedule(
            schedule.kind, schedule.total_steps, schedule.peak_lr, warmup_steps=schedule.warmup_steps,
            final_lr_ratio=schedule.final_lr_ratio, cooldown_fraction=schedule.cooldown_fraction, decay=schedule.decay,
            at=at,
        )
    except ValueError as exc:  # lr_schedule's refusals are the input's fault
        raise InputError(f"schedule: {exc}") from None

DEFAULT_OPTIMIZER = "adamw"
# An optimizer's name: lower case, as runs and laws store it (the column holds 40 characters).
OPTIMIZER_RE = r"^[a-z0-9][a-z0-9_.-]{0,39}$"


class CurvePointIn(BaseModel):
    """One point of an imported loss curve."""

    model_config = ConfigDict(extra="forbid")

    step: JsonInt = Field(ge=0, le=MAX_INT32, description="Optimizer step.")
    lr: float | None = Field(default=None, ge=0, strict=True, description="Learning rate at this step.")
    loss: float = Field(strict=True, description="Evaluation loss at this step, nats/token.")
    tokens: float | None = Field(default=None, ge=0, strict=True, description="Tokens seen at this step.")

    @field_validator("lr", "tokens")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


# The rules across fields that JSON Schema can state (the model validator below enforces them).
_RUN_RULES: dict[str, Any] = {"allOf": [
    # A finished run has a loss (status defaults to done).
    {"if": {"properties": {"status": {"const": "done"}}},
     "then": {"properties": {"final_loss": {"type": "number"}}, "required": ["final_loss"]}},
    # A batch in sequences needs their length (or the batch in tokens).
    {"if": {"properties": {"batch_size": {"type": "number"}}, "required": ["batch_size"]},
     "then": {"anyOf": [{"properties": {"seq_len": {"type": "integer"}}, "required": ["seq_len"]},
                        {"properties": {"batch_tokens": {"type": "number"}}, "required": ["batch_tokens"]}]}},
]}


class RunIn(BaseModel):
    """One run in hpscale's import format (see the module doc). Numbers are strict (JSON true
    or "1e6" is no number; the CSV reader turns cells into numbers first), text keeps
    ``service.inputs``' rule, and tags its bounds."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_RUN_RULES)

    n_params: float = Field(gt=0, strict=True,
                            description="Non-embedding parameters (a mixture-of-experts model: active ones).")
    n_params_total: float | None = Field(
        default=None, gt=0, strict=True, description="Mixture-of-experts: total non-embedding parameters (>= n_params)."
    )
    tokens: float = Field(gt=0, strict=True, description="Training tokens.")
    final_loss: float | None = Field(strict=True, json_schema_extra={"exclusiveMinimum": 0},
                                     description="Final validation loss, nats/token (> 0); null only if diverged.")
    name: Annotated[str, Field(min_length=1, max_length=300), TEXT] | None = None
    lr: float | None = Field(default=None, gt=0, strict=True, description="Peak learning rate.")
    batch_tokens: float | None = Field(default=None, gt=0, strict=True, description="Batch in tokens.")
    batch_size: float | None = Field(default=None, gt=0, strict=True, description="Batch in sequences.")
    seq_len: Annotated[int, Field(gt=0, le=MAX_INT32), INTEGER] | None = Field(default=None, description="Sequence length, tokens.")
    status: Literal["done", "diverged"] = "done"
    optimizer: str = Field(
        default=DEFAULT_OPTIMIZER, pattern=OPTIMIZER_RE,
        description="The optimizer the run trained with: adamw (default), lion, sgd, sgd_sai, lamb, muon, or another "
        "name (lower case letters, digits, '_', '.', '-'). Laws are fitted on one optimizer's runs.",
    )
    schedule: Annotated[str, Field(max_length=200), TEXT] | None = None
    lr_schedule: LrSchedule | None = Field(default=None, description="The learning-rate schedule itself.")
    tags: dict[str, Any] | None = Field(
        default=None, description="Free-form labels: a JSON object, nested at most 8 levels, at most 16 KiB as JSON, "
        "finite numbers only.",
    )
    curve: list[CurvePointIn] | None = Field(default=None, max_length=100_000)

    @field_validator("n_params", "n_params_total", "tokens", "lr", "batch_tokens", "batch_size")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_tags(v)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> "RunIn":
        if self.n_params_total is not None and self.n_params_total < self.n_params:
            raise ValueError(f"n_params_total: {self.n_params_total:g} is below n_params ({self.n_params:g}), "
                             "the active parameters")
        loss = self.final_loss
        if self.status == "done" and (loss is None or not math.isfinite(loss)):
            raise ValueError("final_loss: must be a finite number for a run with status 'done'")
        if loss is not None and math.isfinite(loss) and loss <= 0:
            raise ValueError("final_loss: must be > 0")
        if self.batch_size is not None and self.seq_len is not None:
            implied = self.batch_size * self.seq_len
            if self.batch_tokens is None:
                self.batch_tokens = implied
            elif abs(self.batch_tokens - implied) > 1e-6 * implied:
                raise ValueError(
                    f"batch_tokens: {self.batch_tokens:g} disagrees with batch_size x seq_len = {implied:g}"
                )
        elif self.batch_size is not None and self.batch_tokens is None:
            raise ValueError("batch_size: needs seq_len (or give batch_tokens)")
        if self.batch_tokens is not None and self.seq_len is not None and self.batch_size is None:
            self.batch_size = self.batch_tokens / self.seq_len
        if self.curve:
            seen: set[int] = set()
            for point in self.curve:  # one loss per step: a curve is a function of the step
                if point.step in seen:
                    raise ValueError(f"curve: step {point.step} appears twice (one point per step)")
                seen.add(point.step)
        if self.lr_schedule is not None:
            self._check_schedule(self.lr_schedule)
        return self

    def _check_schedule(self, sched: NamedSchedule | TableSchedule) -> None:
        """The schedule agrees with the run: its peak is the run's lr (which it supplies when
        absent) and it covers every curve point."""
        if self.lr is None:
            self.lr = sched.peak
        elif abs(sched.peak - self.lr) > 1e-6 * self.lr:
            raise ValueError(f"lr_schedule: its peak lr {sched.peak:g} disagrees with lr = {self.lr:g}")
        if self.schedule is None:
            self.schedule = sched.kind
        late = [p.step for p in self.curve or [] if p.step > sched.length]
        if late:
            raise ValueError(f"curve: step {late[0]} lies beyond the schedule's {sched.length} steps (lr_schedule)")

    def key(self) -> str:
        """The run's name, or a stable content hash when it has none (idempotent re-import)."""
        if self.name:
            return self.name
        # The default optimizer stays out of the hash: a file imported before runs named their
        # optimizer re-imports under the same keys (adds nothing).
        exclude = {"name"} | ({"optimizer"} if self.optimizer == DEFAULT_OPTIMIZER else set())
        body = self.model_dump(mode="json", exclude=exclude, exclude_none=True)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        return f"run-{digest}"

    def to_storage(self, source: str) -> dict[str, Any]:
        """The dict ``db.storage.add_runs`` takes. The schedule goes into ``config`` (read back
        by ``service.fits.per_step_lr``); curve points without an lr get the schedule's."""
        lrs: dict[int, float] = {}
        if self.lr_schedule is not None and self.curve:
            steps = np.array(sorted({p.step for p in self.curve if p.lr is None and p.step >= 1}), dtype=float)
            lrs = dict(zip(steps.astype(int).tolist(), schedule_lrs(self.lr_schedule, at=steps).tolist()))

        def point_lr(p: CurvePointIn) -> float | None:
            return lrs.get(p.step) if p.lr is None else p.lr

        return {
            "source": source,
            "name": self.key(),
            "n_params": self.n_params,
            "n_params_total": self.n_params_total,
            "tokens": self.tokens,
            "lr": self.lr,
            "batch_tokens": self.batch_tokens,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "schedule": self.schedule,
            "tags": self.tags,
            "config": {"lr_schedule": self.lr_schedule.model_dump(mode="json", exclude_none=True)}
            if self.lr_schedule is not None else None,
            "status": self.status,
            "optimizer": self.optimizer,
            "final_loss": self.final_loss,
            "code_version": "import",
            "curve": [
                {"step": p.step, "lr": point_lr(p), "val_loss": p.loss, "tokens": p.tokens} for p in self.curve
            ]
            if self.curve
            else None,
        }


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across fields names its field first: "field: message"
        loc, _, msg = msg.partition(": ") if ": " in msg else ("record", "", msg)
    if err["type"] == "missing":
        return f"field {loc!r}: missing (required)"
    if err["type"] == "extra_forbidden":
        return f"field {loc!r}: unknown field"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"field {loc!r}: {msg}{shown}"


def _csv_value(raw: str) -> Any:
    raw = raw.strip()
    return None if raw == "" else raw


def _number_type(field: str) -> type | None:
    """int or float when a field of ``RunIn`` holds a number, else None."""
    info = RunIn.model_fields.get(field)
    kinds = set(typing.get_args(info.annotation) or (info.annotation,)) if info is not None else set()
    # Annotated[int, ...] counts as int
    kinds = {typing.get_args(k)[0] if typing.get_origin(k) is Annotated else k for k in kinds}
    return int if int in kinds else float if float in kinds else None


def _csv_number(field: str, raw: str) -> Any:
    """A CSV cell of a number field as a number; text that is no number is left for the model
    to refuse with its usual message."""
    kind = _number_type(field)
    try:
        number = float(raw)
    except ValueError:
        return raw
    if kind is int and number.is_integer():
        return int(number)
    return number if kind is float else raw


def _parse_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"tag {part.strip()!r} is not key=value")
        k, v = part.split("=", 1)
        tags[k.strip()] = v.strip()
    return tags


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is no part of the header
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def _parse_schedule(raw: str) -> dict[str, Any]:
    """CSV ``lr_schedule`` text, ``k=v;k=v`` with the table as ``step:lr step:lr``, as the
    schedule's JSON object. Numbers become numbers (a CSV cell is text; the model is strict
    about numbers, as it is for JSON); anything else stays text for the model to check."""
    sched: dict[str, Any] = {k: _text_number(v) for k, v in _parse_tags(raw).items()}
    if "table" in sched:
        entries = []
        for pair in str(sched["table"]).split():
            step, sep, lr = pair.partition(":")
            if not sep:
                raise ValueError(f"table entry {pair!r} is not step:lr")
            entries.append({"step": _text_number(step), "lr": _text_number(lr)})
        sched["table"] = entries
    return sched


def _text_number(raw: str) -> Any:
    """'10' -> 10, '3e-4' -> 0.0003, other text unchanged."""
    try:
        number = float(raw)
    except ValueError:
        return raw
    return int(number) if number.is_integer() and "." not in raw and "e" not in raw.lower() else number


_SCHEDULE_KEYS = ("kind", "total_steps", "peak_lr", "warmup_steps", "final_lr_ratio", "cooldown_fraction", "decay", "table")


def _format_schedule(sched: dict[str, Any]) -> str:
    """The inverse of ``_parse_schedule``, keys in a fixed order (the table last)."""
    parts = []
    for k in sorted(sched, key=lambda k: _SCHEDULE_KEYS.index(k) if k in _SCHEDULE_KEYS else len(_SCHEDULE_KEYS)):
        v = sched[k]
        if k == "table":
            v = " ".join(f"{e['step']}:{e['lr']!r}" for e in v)
        parts.append(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}")
    return ";".join(parts)


def _records_csv(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InputError(f"{path}: empty file (expected a header line)")
    unknown = [f for f in reader.fieldnames if f not in RunIn.model_fields or f == "curve"]
    if unknown:
        raise InputError(f"{path}:1: unknown column {unknown[0]!r} (see `hpscale import runs --help`)")
    for row in reader:
        line = reader.line_num
        if None in row:
            raise InputError(f"{path}:{line}: more values than columns")
        rec: dict[str, Any] = {k: _csv_value(v or "") for k, v in row.items()}
        rec = {k: _csv_number(k, v) if isinstance(v, str) and _number_type(k) else v for k, v in rec.items()}
        for key, parse in (("tags", _parse_tags), ("lr_schedule", _parse_schedule)):
            if rec.get(key) is not None:
                try:
                    rec[key] = parse(rec[key])
                except ValueError as exc:
                    raise InputError(f"{path}:{line}: field {key!r}: {exc}") from None
        # An empty cell is a missing value; an empty final_loss is an explicit null (diverged).
        yield line, {k: v for k, v in rec.items() if v is not None or k == "final_loss"}


def _records_jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{line}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{path}:{line}: expected a JSON object, got {type(rec).__name__}")
        yield line, rec


def parse_runs_file(path: Path) -> list[RunIn]:
    """Read and validate a run file (``.csv``, or ``.jsonl`` / ``.ndjson``). The first bad
    record raises ``InputError`` naming the file, line and field; nothing is returned then."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise InputError(f"{path}: unknown file type {suffix or '(none)'!r}: use .csv or .jsonl")
    text = _read_text(path)
    records = _records_csv(path, text) if suffix == ".csv" else _records_jsonl(path, text)
    runs: list[RunIn] = []
    seen: dict[str, int] = {}
    for line, rec in records:
        try:
            run = RunIn.model_validate(rec)
        except ValidationError as exc:
            raise InputError(f"{path}:{line}: {_describe(exc)}") from None
        key = run.key()
        if key in seen:
            if run.name:
                raise InputError(f"{path}:{line}: field 'name': {key!r} repeats line {seen[key]}")
            # An unnamed run is named by its content: the same name is the same run.
            raise InputError(f"{path}:{line}: the same run as line {seen[key]} (every field equal; give the "
                             "runs names if both are meant)")
        seen[key] = line
        runs.append(run)
    if not runs:
        raise InputError(f"{path}: no runs in the file")
    return runs


Source = Annotated[str, Field(min_length=1, max_length=SOURCE_MAX_LENGTH), TEXT]
"""A source label: the first half of a run's key (source, name)."""
_SOURCE = TypeAdapter(Source)


def check_source(label: str, option: str = "--source") -> str:
    """``label`` if it is a valid source label, else ``InputError`` naming ``option``."""
    try:
        return _SOURCE.validate_python(label)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InputError(f"{option} {label[:60]!r}: {msg}") from None


def validate_runs(records: list[dict[str, Any]]) -> list[RunIn]:
    """Validate records sent as JSON (the API): errors name the record index and field."""
    runs: list[RunIn] = []
    seen: set[str] = set()
    for i, rec in enumerate(records):
        try:
            run = RunIn.model_validate(rec)
        except ValidationError as exc:
            raise InputError(f"runs[{i}]: {_describe(exc)}") from None
        if run.key() in seen:
            raise InputError(f"runs[{i}]: field 'name': {run.key()!r} repeats an earlier record")
        seen.add(run.key())
        runs.append(run)
    return runs


# -- Step Law's released CSV ------------------------------------------------------------------
STEPLAW_COLUMNS = ("h", "ffnh", "numh", "numl", "lr", "bs", "ti", "loss", "smooth loss", "D", "N")
# Cells only kept as tags (the raw loss, the iteration count): an empty one is no error.
STEPLAW_INFO_CELLS = ("loss", "ti")
STEPLAW_SEQ_LEN = 2048  # Step Law's batch column counts sequences of 2,048 tokens (dense file)
# The mixture-of-experts file adds these: N is then the total and Na the active parameter count.
STEPLAW_MOE_COLUMNS = ("Na", "nume", "topk", "moeh")


def parse_steplaw_file(path: Path) -> list[RunIn]:
    """Read Step Law's ``dense_lr_bs_loss.csv`` or ``moe_lr_bs_loss.csv``. ``final_loss`` is the
    smoothed loss (what the paper fits); the raw loss and model shape go into ``tags``. In the
    mixture-of-experts file ``n_params`` is the active count (``Na``, what the laws use, as Step
    Law fits them) and ``n_params_total`` the total (``N``); a ``seq_len`` column, when present,
    gives the tokens of a sequence. Errors name file, line, column."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InputError(f"{path}: empty file (expected Step Law's header line)")
    missing = [c for c in STEPLAW_COLUMNS if c not in reader.fieldnames]
    if missing:
        raise InputError(f"{path}:1: missing column {missing[0]!r}: not Step Law's dense_lr_bs_loss.csv format")
    moe = "Na" in reader.fieldnames
    if moe:
        absent = [c for c in STEPLAW_MOE_COLUMNS if c not in reader.fieldnames]
        if absent:
            raise InputError(f"{path}:1: missing column {absent[0]!r}: a Step Law MoE file (it has 'Na') needs "
                             f"{', '.join(STEPLAW_MOE_COLUMNS)}")
    numeric = STEPLAW_COLUMNS + (STEPLAW_MOE_COLUMNS if moe else ()) + (("seq_len",) if "seq_len" in reader.fieldnames else ())
    runs: list[RunIn] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        values: dict[str, float] = {}
        for col in numeric:
            raw = (row.get(col) or "").strip()
            if not raw and col in STEPLAW_INFO_CELLS:
                continue  # kept as a tag when given; the fits do not use it
            try:
                value = float(raw)
            except ValueError:
                raise InputError(f"{path}:{line}: column {col!r}: not a number (got {raw!r})") from None
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"{path}:{line}: column {col!r}: must be a finite number > 0 (got {raw!r})")
            values[col] = value
        shape = {k: int(values[k]) for k in ("h", "ffnh", "numh", "numl", *(("nume", "topk", "moeh") if moe else ()))}
        name = (row.get("exp_name") or "").strip() or (
            f"h{shape['h']}_ffnh{shape['ffnh']}_numl{shape['numl']}_lr{values['lr']:.4e}"
            f"_bs{int(values['bs'])}_D{values['D']:.3e}"
        )
        if name in seen:
            raise InputError(f"{path}:{line}: column 'exp_name': {name!r} repeats line {seen[name]}")
        seen[name] = line
        runs.append(
            RunIn(
                name=name,
                n_params=values["Na"] if moe else values["N"],
                n_params_total=values["N"] if moe else None,
                tokens=values["D"],
                final_loss=values["smooth loss"],
                lr=values["lr"],
                batch_size=values["bs"],
                seq_len=int(values.get("seq_len", STEPLAW_SEQ_LEN)),
                tags={**({"raw_loss": values["loss"]} if "loss" in values else {}),
                      **({"iterations": int(values["ti"])} if "ti" in values else {}), **shape},
            )
        )
    if not runs:
        raise InputError(f"{path}: no runs in the file")
    return runs


# -- Steps-to-target tables (critical batch measurements) -----------------------------------
# A run tagged with this key is a steps-to-target measurement: trained at its batch until its
# loss reached ``final_loss`` (the target), which took this many optimizer steps. Critical-batch
# fits read such runs directly (``service.fits.critical_points``); other runs give theirs from
# their curves.
STEPS_TO_TARGET_TAG = "steps_to_target"
# Columns of a steps-to-target table: hpscale's names first, then the names of Zhang et al.'s
# released table (critical-batch-size repository), which imports as it stands.
STEPS_COLUMNS: dict[str, tuple[str, ...]] = {
    "n_params": ("n_params", "model_size_M"),
    "target_loss": ("target_loss", "target_eval_loss_c4", "target_eval_loss"),
    "steps_to_target": ("steps_to_target", "steps"),
    "batch_tokens": ("batch_tokens",),
    "batch_size": ("batch_size", "batch_size_seqs"),
    "seq_len": ("seq_len",),
    "name": ("name",),
    "lr": ("lr",),
    "optimizer": ("optimizer",),
}
_STEPS_SCALE = {"model_size_M": 1e6}  # a column in millions


def parse_steps_to_target_file(path: Path) -> list[RunIn]:
    """Read a steps-to-target table (CSV): one row per (model size, target loss, batch) with the
    optimizer steps the model took to reach the target at that batch. Columns: ``n_params``
    (or ``model_size_M``, millions), ``target_loss`` (nats/token), ``steps_to_target``, and
    ``batch_tokens`` or ``batch_size`` with ``seq_len``; optional ``name``, ``lr``,
    ``optimizer``. Each row becomes a run whose ``final_loss`` is the target, whose ``tokens``
    are steps x batch, tagged ``steps_to_target``. Errors name file, line and column."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InputError(f"{path}: empty file (expected a header line)")
    header = [f.strip() for f in reader.fieldnames]
    reader.fieldnames = header  # "n_params, target_loss" names the same columns as without spaces
    known = {alias: field for field, aliases in STEPS_COLUMNS.items() for alias in aliases}
    unknown = [f for f in header if f not in known]
    if unknown:
        raise InputError(f"{path}:1: unknown column {unknown[0]!r} (see `hpscale import steps-to-target --help`)")
    columns: dict[str, str] = {}
    for col in header:
        if known[col] in columns:
            raise InputError(f"{path}:1: columns {columns[known[col]]!r} and {col!r} both give {known[col]}")
        columns[known[col]] = col
    for field in ("n_params", "target_loss", "steps_to_target"):
        if field not in columns:
            raise InputError(f"{path}:1: missing column {field!r} (or {' / '.join(STEPS_COLUMNS[field][1:])})")
    if "batch_tokens" not in columns and not {"batch_size", "seq_len"} <= columns.keys():
        raise InputError(f"{path}:1: missing the batch: a column batch_tokens, or batch_size with seq_len")
    runs: list[RunIn] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise InputError(f"{path}:{line}: more values than columns")
        cells = {field: (row.get(col) or "").strip() for field, col in columns.items()}
        values: dict[str, float] = {}
        for field, raw in cells.items():
            if field in ("name", "optimizer"):
                continue  # text
            if raw == "":
                if field in ("n_params", "target_loss", "steps_to_target"):
                    raise InputError(f"{path}:{line}: column {columns[field]!r}: empty (required)")
                continue  # an optional number left empty
            try:
                value = float(raw) * _STEPS_SCALE.get(columns[field], 1.0)
            except ValueError:
                raise InputError(f"{path}:{line}: column {columns[field]!r}: not a number (got {raw!r})") from None
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"{path}:{line}: column {columns[field]!r}: must be a finite number > 0 (got {raw!r})")
            values[field] = value
        if "seq_len" in values and not values["seq_len"].is_integer():
            raise InputError(f"{path}:{line}: column {columns['seq_len']!r}: must be a whole number")
        batch = values.get("batch_tokens")
        if batch is None:
            if "batch_size" not in values or "seq_len" not in values:
                raise InputError(f"{path}:{line}: no batch: give batch_tokens, or batch_size with seq_len")
            batch = values["batch_size"] * values["seq_len"]
        steps = values["steps_to_target"]
        # The default name holds every number that tells two measurements apart.
        name = cells.get("name") or "-".join(
            [f"N{values['n_params']:.10g}", f"target{values['target_loss']:.10g}", f"batch{batch:.10g}"]
            + ([f"lr{values['lr']:.10g}"] if "lr" in values else [])
            + ([cells["optimizer"].lower()] if cells.get("optimizer") else []))
        record: dict[str, Any] = {
            "name": name, "n_params": values["n_params"], "tokens": steps * batch,
            "final_loss": values["target_loss"], "batch_tokens": batch,
            "tags": {STEPS_TO_TARGET_TAG: steps},
            **{k: values[k] for k in ("batch_size", "lr") if k in values},
            **({"seq_len": int(values["seq_len"])} if "seq_len" in values else {}),
            **({"optimizer": cells["optimizer"]} if cells.get("optimizer") else {}),
        }
        try:
            run = RunIn.model_validate(record)
        except ValidationError as exc:
            raise InputError(f"{path}:{line}: {_describe(exc)}") from None
        if name in seen:
            raise InputError(f"{path}:{line}: the measurement {name!r} repeats line {seen[name]}")
        seen[name] = line
        runs.append(run)
    if not runs:
        raise InputError(f"{path}: no measurements in the file")
    return runs


def steps_to_target_tag(tags: dict[str, Any] | None) -> float | None:
    """The steps a run tagged as a steps-to-target measurement took (None: not one). The tag
    may be text (a CSV import's tags are): a value that is no number > 0 raises InputError."""
    if not tags or STEPS_TO_TARGET_TAG not in tags:
        return None
    raw = tags[STEPS_TO_TARGET_TAG]
    try:
        steps = float(raw)
    except (TypeError, ValueError):
        steps = math.nan
    if not (math.isfinite(steps) and steps > 0):
        raise InputError(f"tag {STEPS_TO_TARGET_TAG}={raw!r}: must be a number of steps > 0")
    return steps


EXPORT_FIELDS = (
    "name", "n_params", "n_params_total", "tokens", "final_loss", "lr", "batch_tokens", "batch_size", "seq_len",
    "status", "optimizer", "schedule", "tags",
)


CSV_FIELDS = EXPORT_FIELDS + ("lr_schedule",)


def run_to_record(run: Any, curve: list[Any] | None = None) -> dict[str, Any]:
    """A stored run (``db.models.Run``) in the import format; ``curve`` adds its points.
    Runs that are not finished (queued, running, failed) have no place in this format."""
    rec: dict[str, Any] = {f: getattr(run, f) for f in EXPORT_FIELDS}
    if rec["status"] not in ("done", "diverged"):
        raise InputError(f"run {run.id} is {rec['status']}: only finished runs can be exported")
    stored = (run.config or {}).get("lr_schedule")
    # Re-read through the model: the same fields in the same order whatever the database kept.
    rec["lr_schedule"] = read_schedule(stored).model_dump(mode="json", exclude_none=True) if stored else None
    if curve:
        rec["curve"] = [
            {k: v for k, v in {"step": p.step, "lr": p.lr, "loss": p.val_loss, "tokens": p.tokens}.items()
             if v is not None}
            for p in curve
            if p.val_loss is not None
        ]
    return rec


def records_to_csv(records: list[dict[str, Any]]) -> str:
    """Records in the CSV import format (tags as k=v;k=v, curves dropped)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        row = {k: rec.get(k) for k in CSV_FIELDS}
        tags = row.get("tags")
        row["tags"] = ";".join(f"{k}={v}" for k, v in tags.items()) if tags else None
        row["lr_schedule"] = _format_schedule(row["lr_schedule"]) if row.get("lr_schedule") else None
        writer.writerow({k: ("" if v is None else (repr(v) if isinstance(v, float) else v)) for k, v in row.items()})
    return buf.getvalue()


def records_to_jsonl(records: list[dict[str, Any]]) -> str:
    """Records in the JSONL import format, one object a line, None fields left out. Valid JSON
    whatever was stored: a non-finite number (in tags stored before the input rules) is null."""
    return "".join(
        json.dumps(json_safe({k: v for k, v in r.items() if v is not None}), allow_nan=False) + "\n" for r in records
    )
