"""SQLAlchemy 2 table models.

Conventions (see DESIGN.md):
- Non-finite losses are stored explicitly: ``final_loss_status`` says "finite", "nan", "inf"
  or "missing" and ``final_loss`` is a finite float or NULL, never NaN in a float column.
- Every run and every law records where it came from (source, spec, seed, corpus hash,
  code version, created time; for a fitted law the exact runs it used, in ``law_runs``).
- Sizes are floats (double precision) because imported N and D are often non-integral
  (Chinchilla's N is read off a plot) and exceed 32 bits.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    """The current time in UTC (stored timezone-aware where the backend supports it)."""
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every hpscale table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


RUN_STATUSES = ("queued", "running", "done", "diverged", "failed")
LOSS_STATUSES = ("finite", "nan", "inf", "missing")


class Sweep(Base):
    """A planned grid of runs, from one sweep spec."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    corpus_hash: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    runs: Mapped[list[Run]] = relationship(back_populates="sweep")


class Run(Base):
    """One training run: its configuration, its outcome and its provenance."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("source", "name", name="uq_runs_source_name"),
        Index("ix_runs_group", "n_params", "tokens"),
        Index("ix_runs_sweep_status", "sweep_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Where the run came from: an import label ("steplaw", a user's --source) or a sweep name.
    source: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(300))
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)

    n_params: Mapped[float] = mapped_column(Float)  # non-embedding parameters (MoE: active ones), count
    n_params_total: Mapped[float | None] = mapped_column(Float)  # MoE: total non-embedding parameters; NULL: dense
    optimizer: Mapped[str] = mapped_column(String(40), default="adamw", server_default="adamw")
    tokens: Mapped[float] = mapped_column(Float)  # training tokens
    lr: Mapped[float | None] = mapped_column(Float)  # peak learning rate
    batch_tokens: Mapped[float | None] = mapped_column(Float)  # batch in tokens
    batch_size: Mapped[float | None] = mapped_column(Float)  # batch in sequences
    seq_len: Mapped[int | None] = mapped_column(Integer)  # tokens per sequence
    schedule: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # model shape etc.

    status: Mapped[str] = mapped_column(String(20), default="done")
    final_loss: Mapped[float | None] = mapped_column(Float)  # nats/token, finite or NULL
    final_loss_status: Mapped[str] = mapped_column(String(10), default="missing")

    seed: Mapped[int | None] = mapped_column(Integer)
    corpus_hash: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(40))
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    # Sweep engine (revision 0002): which (N, D) group and (N, D, batch) cell a sweep run belongs
    # to, the Optuna trial that owns it now (trials live in the same database), and liveness.
    group_key: Mapped[str | None] = mapped_column(String(120))
    cell_key: Mapped[str | None] = mapped_column(String(160))
    trial_id: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Revision 0005: a branch of a warmup-stable-decay trunk (``sweeps.plan``) names the trunk
    # cell it branched off; its own trunk is (trunk_key, lr, seed). NULL: trained on its own.
    trunk_key: Mapped[str | None] = mapped_column(String(160))

    sweep: Mapped[Sweep | None] = relationship(back_populates="runs")
    points: Mapped[list[CurvePoint]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True, order_by="CurvePoint.step"
    )


class CurvePoint(Base):
    """One point of a run's loss curve. Losses are finite or NULL; ``nonfinite`` marks NaN/inf."""

    __tablename__ = "curve_points"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_curve_points_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[float | None] = mapped_column(Float)  # tokens seen at this step
    lr: Mapped[float | None] = mapped_column(Float)  # learning rate at this step
    train_loss: Mapped[float | None] = mapped_column(Float)  # nats/token
    val_loss: Mapped[float | None] = mapped_column(Float)  # nats/token
    nonfinite: Mapped[bool] = mapped_column(Boolean, default=False)

    run: Mapped[Run] = relationship(back_populates="points")


class Law(Base):
    """A fitted or published law: its record (as ``fitting`` writes it) and provenance."""

    __tablename__ = "laws"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))  # hyper | loss | trajectory | critical_batch
    form: Mapped[str] = mapped_column(String(40))
    origin: Mapped[str] = mapped_column(String(20))  # published | fitted
    optimizer: Mapped[str] = mapped_column(String(40), default="adamw", server_default="adamw")  # fitted on
    title: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)  # citation, or the run sources it was fitted on
    record: Mapped[dict[str, Any]] = mapped_column(JSON)  # fitting's to_record()
    extrapolation: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # held-out check report
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # fit options used
    code_version: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    runs: Mapped[list[Run]] = relationship(secondary="law_runs", viewonly=True)


class LawRun(Base):
    """Which runs a fitted law used: the exact provenance of a fit."""

    __tablename__ = "law_runs"

    law_id: Mapped[int] = mapped_column(ForeignKey("laws.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
