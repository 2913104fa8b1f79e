"""hpscale's own run format (CSV or JSONL; JSON over the API), and the Step Law CSV format.

One record is one finished run:

| field | required | meaning |
|---|---|---|
| ``n_params`` | yes | non-embedding parameters (count, > 0) |
| ``tokens`` | yes | training tokens (> 0) |
| ``final_loss`` | yes | final validation loss, nats/token (> 0; may be NaN/inf only if ``status`` is ``diverged``) |
| ``name`` | no | unique within the import source; the key that makes re-import idempotent (default: a hash of the record) |
| ``lr`` | no | peak learning rate (> 0) |
| ``batch_tokens`` | no | batch in tokens (> 0) |
| ``batch_size``, ``seq_len`` | no | batch in sequences and sequence length; together they give ``batch_tokens`` |
| ``status`` | no | ``done`` (default) or ``diverged`` |
| ``optimizer`` | no | the optimizer it trained with: ``adamw`` (default), ``lion``, ``sgd``, ``sgd_sai``, ``lamb``, ``muon`` or another name; laws are fitted per optimizer |
| ``schedule`` | no | free text naming the learning-rate schedule |
| ``tags`` | no | free-form: a JSON object (JSONL), or ``k=v;k=v`` text (CSV) |
| ``curve`` | no (JSONL only) | list of ``{step, lr, loss, tokens?}``; ``loss`` is the evaluation loss |
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpscale.service.errors import InputError

MAX_INT32 = 2**31 - 1  # steps and sequence lengths are 32-bit integer columns
DEFAULT_OPTIMIZER = "adamw"
# An optimizer's name: lower case, as runs and laws store it (the column holds 40 characters).
OPTIMIZER_RE = r"^[a-z0-9][a-z0-9_.-]{0,39}$"


class CurvePointIn(BaseModel):
    """One point of an imported loss curve."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0, le=MAX_INT32, description="Optimizer step.")
    lr: float | None = Field(default=None, ge=0, description="Learning rate at this step.")
    loss: float = Field(description="Evaluation loss at this step, nats/token.")
    tokens: float | None = Field(default=None, ge=0, description="Tokens seen at this step.")

    @field_validator("lr", "tokens")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class RunIn(BaseModel):
    """One run in hpscale's import format (see the module doc)."""

    model_config = ConfigDict(extra="forbid")

    n_params: float = Field(gt=0, description="Non-embedding parameters.")
    tokens: float = Field(gt=0, description="Training tokens.")
    final_loss: float | None = Field(description="Final validation loss, nats/token; null only if diverged.")
    name: str | None = Field(default=None, min_length=1, max_length=300)
    lr: float | None = Field(default=None, gt=0, description="Peak learning rate.")
    batch_tokens: float | None = Field(default=None, gt=0, description="Batch in tokens.")
    batch_size: float | None = Field(default=None, gt=0, description="Batch in sequences.")
    seq_len: int | None = Field(default=None, gt=0, le=MAX_INT32, description="Sequence length, tokens.")
    status: Literal["done", "diverged"] = "done"
    optimizer: str = Field(
        default=DEFAULT_OPTIMIZER, pattern=OPTIMIZER_RE,
        description="The optimizer the run trained with: adamw (default), lion, sgd, sgd_sai, lamb, muon, or another "
        "name (lower case letters, digits, '_', '.', '-'). Laws are fitted on one optimizer's runs.",
    )
    schedule: str | None = Field(default=None, max_length=200)
    tags: dict[str, Any] | None = None
    curve: list[CurvePointIn] | None = Field(default=None, max_length=100_000)

    @field_validator("n_params", "tokens", "lr", "batch_tokens", "batch_size")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("optimizer", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> "RunIn":
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
        return self

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
        """The dict ``db.storage.add_runs`` takes."""
        return {
            "source": source,
            "name": self.key(),
            "n_params": self.n_params,
            "tokens": self.tokens,
            "lr": self.lr,
            "batch_tokens": self.batch_tokens,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "schedule": self.schedule,
            "tags": self.tags,
            "status": self.status,
            "optimizer": self.optimizer,
            "final_loss": self.final_loss,
            "code_version": "import",
            "curve": [
                {"step": p.step, "lr": p.lr, "val_loss": p.loss, "tokens": p.tokens} for p in self.curve
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
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


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
        if rec.get("tags") is not None:
            try:
                rec["tags"] = _parse_tags(rec["tags"])
            except ValueError as exc:
                raise InputError(f"{path}:{line}: field 'tags': {exc}") from None
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
            raise InputError(f"{path}:{line}: field 'name': {key!r} repeats line {seen[key]}")
        seen[key] = line
        runs.append(run)
    if not runs:
        raise InputError(f"{path}: no runs in the file")
    return runs


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
STEPLAW_SEQ_LEN = 2048  # Step Law's batch column counts sequences of 2,048 tokens


def parse_steplaw_file(path: Path) -> list[RunIn]:
    """Read Step Law's ``dense_lr_bs_loss.csv``. ``final_loss`` is the smoothed loss (what the
    paper fits); the raw loss and model shape go into ``tags``. Errors name file, line, column."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InputError(f"{path}: empty file (expected Step Law's header line)")
    missing = [c for c in STEPLAW_COLUMNS if c not in reader.fieldnames]
    if missing:
        raise InputError(f"{path}:1: missing column {missing[0]!r}: not Step Law's dense_lr_bs_loss.csv format")
    runs: list[RunIn] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        values: dict[str, float] = {}
        for col in STEPLAW_COLUMNS:
            raw = (row.get(col) or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise InputError(f"{path}:{line}: column {col!r}: not a number (got {raw!r})") from None
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"{path}:{line}: column {col!r}: must be a finite number > 0 (got {raw!r})")
            values[col] = value
        shape = {k: int(values[k]) for k in ("h", "ffnh", "numh", "numl")}
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
                n_params=values["N"],
                tokens=values["D"],
                final_loss=values["smooth loss"],
                lr=values["lr"],
                batch_size=values["bs"],
                seq_len=STEPLAW_SEQ_LEN,
                tags={"raw_loss": values["loss"], "iterations": int(values["ti"]), **shape},
            )
        )
    if not runs:
        raise InputError(f"{path}: no runs in the file")
    return runs


RUN_FORMAT_HELP = (
    "Columns (CSV) or keys (JSONL): required n_params, tokens, final_loss (may be empty/null only "
    "for status diverged); optional name (unique within the source; re-import skips known names), "
    "lr, batch_tokens, or batch_size with seq_len, status (done|diverged), optimizer (default adamw; "
    "lion, sgd, sgd_sai, lamb, muon, ...), schedule, tags (JSONL: an "
    "object; CSV: k=v;k=v), and in JSONL curve: a list of {step, lr, loss, tokens?}."
)

EXPORT_FIELDS = (
    "name", "n_params", "tokens", "final_loss", "lr", "batch_tokens", "batch_size", "seq_len",
    "status", "optimizer", "schedule", "tags",
)


def run_to_record(run: Any, curve: list[Any] | None = None) -> dict[str, Any]:
    """A stored run (``db.models.Run``) in the import format; ``curve`` adds its points.
    Runs that are not finished (queued, running, failed) have no place in this format."""
    rec: dict[str, Any] = {f: getattr(run, f) for f in EXPORT_FIELDS}
    if rec["status"] not in ("done", "diverged"):
        raise InputError(f"run {run.id} is {rec['status']}: only finished runs can be exported")
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
    writer = csv.DictWriter(buf, fieldnames=list(EXPORT_FIELDS), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        row = {k: rec.get(k) for k in EXPORT_FIELDS}
        tags = row.get("tags")
        row["tags"] = ";".join(f"{k}={v}" for k, v in tags.items()) if tags else None
        writer.writerow({k: ("" if v is None else (repr(v) if isinstance(v, float) else v)) for k, v in row.items()})
    return buf.getvalue()


def records_to_jsonl(records: list[dict[str, Any]]) -> str:
    """Records in the JSONL import format, one object a line, None fields left out."""
    return "".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in records)
