"""Request and response schemas of the REST API, separate from the table models.

Field names follow DESIGN.md's vocabulary. Units: ``n_params`` non-embedding parameters
(count), ``tokens`` training tokens, ``compute`` FLOPs, ``lr`` peak learning rate,
``batch_tokens`` tokens, ``batch_size`` sequences of ``seq_len`` tokens, losses nats/token.
Every float in a response is finite (JSON has no NaN): a non-finite loss is null plus a status.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from hpscale.service.runformat import OPTIMIZER_RE, RunIn

# Bounds of the targets the API accepts: wide enough for any language model anyone trains,
# narrow enough that N^alpha D^beta and 6 N D stay finite in double precision.
MAX_N_PARAMS = 1e16
MAX_TOKENS = 1e18
MAX_COMPUTE = 1e36
MAX_SEQ_LEN = 1 << 24
MAX_CURVE_STEPS = 1_000_000


def _as_utc(value: dt.datetime) -> dt.datetime:
    # Times are stored in UTC; SQLite hands them back without their zone, and a date-time
    # without an offset is not RFC 3339: say it is UTC.
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


UtcDatetime = Annotated[dt.datetime, AfterValidator(_as_utc)]
"""A point in time, always with its UTC offset."""


class Interval(BaseModel):
    """A (low, high) interval, in the unit of the quantity it bounds."""

    low: float
    high: float


# -- recommend -------------------------------------------------------------------------------
class LawRef(BaseModel):
    """Which law produced an answer, and where it comes from."""

    id: int
    name: str
    title: str
    kind: str = Field(description="hyper | loss | trajectory | critical_batch")
    form: str
    origin: str = Field(description="published | fitted")
    source: str = Field(description="Citation (published law) or the run sources it was fitted on.")
    optimizer: str = Field(description="The optimizer the law was fitted on (published laws: adamw); it is only "
                           "used for that optimizer.")


class NearOptimalRegion(BaseModel):
    """The lr and batch range expected to land within ``eps`` of the optimal loss."""

    lr: Interval
    batch_tokens: Interval
    batch_size: Interval = Field(description="The batch range in sequences of seq_len tokens.")
    eps: float | None = Field(description="Relative loss band the region is for (0.0025 = 0.25%), when known.")
    basis: Literal["law_data", "interval"] = Field(
        description="law_data: the spread of the near-optimal runs in the groups the law was fitted on, "
        "around the prediction; interval: the law's own confidence interval (no loss landscape known)."
    )


class RecommendQuery(BaseModel):
    """The target of a recommendation (query parameters)."""

    n_params: float | None = Field(
        default=None, ge=1, le=MAX_N_PARAMS, description="Non-embedding parameters N (or give d_model and n_layers)."
    )
    d_model: int | None = Field(default=None, ge=1, le=1_000_000, description="Model width; N = 12 n_layers d_model^2.")
    n_layers: int | None = Field(default=None, ge=1, le=100_000, description="Number of transformer blocks.")
    vocab_size: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Vocabulary size (with d_model): reports the embedding size."
    )
    tokens: float | None = Field(default=None, ge=1, le=MAX_TOKENS, description="Training tokens D.")
    compute: float | None = Field(
        default=None, ge=1, le=MAX_COMPUTE, description="Training compute C, FLOPs (default 6 N D; given alone: D = C / 6N)."
    )
    seq_len: int = Field(default=2048, ge=1, le=MAX_SEQ_LEN, description="Sequence length, tokens.")
    law: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="A hyper law's id or name (default: the newest fitted law whose extrapolation check passed "
        "and whose data the target lies within the extrapolation-warning factor of, else Step Law).",
    )
    optimizer: str | None = Field(
        default=None, pattern=OPTIMIZER_RE,
        description="The optimizer the run will train with (adamw, lion, sgd, sgd_sai, lamb, muon, ...): only its "
        "laws answer. Default: the named law's, else adamw. The published laws are AdamW's: another optimizer "
        "needs a law fitted on its runs (404 when there is none).",
    )


class Recommendation(BaseModel):
    """The recommended peak learning rate and batch size for one target."""

    n_params: float = Field(description="Non-embedding parameters N used (count).")
    n_params_basis: Literal["given", "12 * n_layers * d_model^2"] = Field(description="How N was obtained.")
    d_model: int | None = None
    n_layers: int | None = None
    vocab_size: int | None = None
    embedding_params: float | None = Field(
        default=None, description="vocab_size * d_model, reported for information (N excludes it)."
    )
    tokens: float = Field(description="Training tokens D.")
    compute: float = Field(description="Training compute C, FLOPs.")
    compute_basis: Literal["given", "6 * n_params * tokens"]
    tokens_basis: Literal["given", "compute / (6 * n_params)"]
    seq_len: int = Field(description="Sequence length, tokens.")
    lr: float = Field(description="Recommended peak learning rate.")
    lr_interval: Interval | None = None
    batch_tokens: float = Field(description="Recommended batch, tokens.")
    batch_tokens_interval: Interval | None = None
    batch_size: float = Field(description="Recommended batch, sequences of seq_len tokens.")
    batch_size_interval: Interval | None = None
    near_optimal: NearOptimalRegion | None = Field(
        description="The near-optimal region; null when the law has neither data nor intervals (published laws)."
    )
    final_loss: float | None = Field(
        description="Predicted final loss (nats/token) by the newest fitted loss law whose check passed (else the "
        "newest, with a warning); null without a fitted loss law."
    )
    final_loss_interval: Interval | None = None
    loss_law: LawRef | None = None
    extrapolation_factor: float | None = Field(
        description="How far the target lies outside the law's data (1 = inside); null when the law has no data range."
    )
    extrapolation_warning_factor: float = Field(description="Factor past which a warning is added.")
    warnings: list[str]
    law: LawRef
    optimizer: str = Field(description="The optimizer the recommendation is for (the law's).")


# -- laws --------------------------------------------------------------------------------------
class LawSummary(LawRef):
    """A law in a listing."""

    extrapolation_passed: bool | None = Field(description="Whether the held-out check passed; null: no check.")
    code_version: str
    created_at: UtcDatetime


class FitRange(BaseModel):
    """The data range a law was fitted on."""

    n_params: Interval | None = None
    tokens: Interval | None = None
    compute: Interval | None = None


class LawDataPoint(BaseModel):
    """A run a fitted law used."""

    run_id: int
    name: str
    source: str
    n_params: float
    tokens: float
    lr: float | None
    batch_tokens: float | None
    batch_size: float | None
    final_loss: float | None
    status: str


class HyperCurvePoint(BaseModel):
    """The law's optimum at one (N, D)."""

    n_params: float
    tokens: float
    compute: float
    lr: float
    batch_tokens: float
    lr_interval: Interval | None
    batch_tokens_interval: Interval | None


class HyperCurve(BaseModel):
    """lr* and B* along N for plotting (log-spaced N)."""

    kind: Literal["hyper"] = "hyper"
    tokens_rule: str = Field(description="How D was chosen for each point, e.g. 'fixed D = 1e10' or 'D = 20 N'.")
    points: list[HyperCurvePoint]


class LossCurvePoint(BaseModel):
    """The loss law's prediction at one (N, D)."""

    n_params: float
    tokens: float
    compute: float
    final_loss: float = Field(description="Predicted final loss, nats/token.")
    final_loss_interval: Interval | None


class LossLawCurve(BaseModel):
    """L(N, D) along N for plotting (log-spaced N)."""

    kind: Literal["loss"] = "loss"
    tokens_rule: str = Field(description="How D was chosen for each point.")
    points: list[LossCurvePoint]


class TrajectoryFit(BaseModel):
    """One loss curve a trajectory law was fitted on: observed against predicted."""

    run_id: int
    name: str
    steps: list[int]
    observed: list[float] = Field(description="Logged evaluation loss, nats/token.")
    predicted: list[float] = Field(description="The law's loss at the same steps, nats/token.")


class CouplingGroup(BaseModel):
    """One (N, D) group's per-batch optimal learning rates."""

    n_params: float
    tokens: float
    batch_tokens: list[float] = Field(description="Batch sizes whose lr optimum is bracketed, tokens.")
    lr: list[float] = Field(description="The optimal lr at each of them (parabola vertex in log lr).")
    slope: float = Field(description="This group's own exponent (least squares of log lr* on log batch).")


class LrBatchCoupling(BaseModel):
    """How the optimal lr grows with the batch at fixed (N, D), lr* ~ B^exponent, measured on a
    hyper law's runs, beside the theory's value (1 for SGD, 0.5 for Adam-type updates)."""

    optimizer: str
    exponent: float | None = Field(description="Pooled within-group exponent; null when no group has two batches "
                                   "with a bracketed lr optimum (see note).")
    interval: Interval | None = Field(description="Bootstrap interval (groups, then cells within them).")
    level: float = Field(description="The interval's confidence level.")
    theory: float | None = Field(description="The theory's exponent for this optimizer; null when it gives none.")
    theory_basis: str
    groups: int = Field(description="(N, D) groups with a bracketed optimum at two or more batch sizes.")
    cells: int = Field(description="(N, D, batch) cells with a bracketed lr optimum.")
    cells_excluded: int = Field(description="Cells left out: optimum on the lr grid's edge, or under 3 lrs.")
    per_group: list[CouplingGroup]
    method: str
    note: str


class LawDetail(LawSummary):
    """A law with everything needed to judge it."""

    parameters: dict[str, float] = Field(description="The law's coefficients by name.")
    intervals: dict[str, Interval] | None = Field(description="Bootstrap intervals of the coefficients.")
    fit_range: FitRange | None
    extrapolation: dict[str, Any] | None = Field(description="The held-out extrapolation report, as fitting wrote it.")
    settings: dict[str, Any] | None = Field(description="The options the fit used.")
    warnings: list[str]
    data: list[LawDataPoint] = Field(description="The runs the law was fitted on (empty for published laws).")
    curve: Annotated[HyperCurve | LossLawCurve, Field(discriminator="kind")] | None = Field(
        description="Curve points along N for plotting (hyper and loss laws; null for other kinds)."
    )
    fitted_curves: list[TrajectoryFit] | None = Field(
        description="Trajectory laws: each curve fitted on, observed against predicted (null for other kinds)."
    )
    lr_batch_coupling: LrBatchCoupling | None = Field(
        default=None, description="Fitted hyper laws: the exponent of lr* on the batch at fixed (N, D), with its "
        "interval and the theory's value (null for other laws, and for hyper laws fitted before it was measured)."
    )


# -- sweeps and runs ---------------------------------------------------------------------------
class SweepSummary(BaseModel):
    """A sweep with its progress."""

    id: int
    name: str
    status: Literal["planned", "running", "partial", "finished"] = Field(
        description="From the runs: finished (nothing queued or running), running (a worker holds runs), "
                    "planned (nothing trained yet) or partial (some finished, the rest queued).")
    corpus_hash: str | None
    code_version: str
    created_at: UtcDatetime
    n_runs: int = Field(description="Runs planned in total.")
    runs_by_status: dict[str, int] = Field(description="queued | running | done | diverged | failed -> count.")


class SweepDetail(SweepSummary):
    """A sweep with its spec."""

    spec: dict[str, Any]


class Run(BaseModel):
    """A stored run."""

    id: int
    source: str
    name: str
    sweep_id: int | None
    n_params: float
    tokens: float
    compute: float | None = Field(description="6 N D, FLOPs (null past double precision).")
    lr: float | None
    batch_tokens: float | None
    batch_size: float | None
    seq_len: int | None
    schedule: str | None
    optimizer: str = Field(description="The optimizer the run trained with (adamw, lion, sgd, sgd_sai, lamb, muon, ...).")
    status: str = Field(description="queued | running | done | diverged | failed")
    final_loss: float | None
    final_loss_status: str = Field(description="finite | nan | inf | missing")
    tags: dict[str, Any] | None
    seed: int | None
    corpus_hash: str | None
    code_version: str
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


class RunDetail(Run):
    """A run with its configuration and spec."""

    config: dict[str, Any] | None
    spec: dict[str, Any] | None


class RunPage(BaseModel):
    """One page of runs."""

    items: list[Run]
    total: int = Field(description="Runs matching the filter, over all pages.")
    limit: int
    offset: int


class CurvePoint(BaseModel):
    """One logged point of a run's loss curve."""

    step: int
    tokens: float | None
    lr: float | None
    train_loss: float | None
    val_loss: float | None
    nonfinite: bool = Field(description="A loss at this step was NaN or infinite (stored as null).")


class RunCurve(BaseModel):
    """A run's loss curve, ordered by step."""

    run_id: int
    points: list[CurvePoint]


class GroupRun(BaseModel):
    """A run of a group, as the landscape plots need it."""

    id: int
    name: str
    lr: float | None
    batch_tokens: float | None
    batch_size: float | None
    final_loss: float | None
    final_loss_status: str
    status: str
    near_optimal: bool


class GroupOptimum(BaseModel):
    """A group's smooth optimum: the argmin of a quadratic in (log lr, log batch)."""

    lr: float
    batch_tokens: float | None
    method: str
    edges: list[str] = Field(description="Grid edges the best run touches (the sweep should widen there).")


class Group(BaseModel):
    """The runs sharing (optimizer, N, D)."""

    optimizer: str = Field(description="The optimizer every run of the group trained with (adamw, lion, ...).")
    n_params: float
    tokens: float
    compute: float | None = Field(description="6 N D, FLOPs (null past double precision).")
    runs: list[GroupRun]
    best_run_id: int | None = Field(description="The lowest-loss run of the best configuration; null if none finished.")
    best_loss: float | None = Field(description="The best configuration's final loss (the mean over its seeds), nats/token.")
    near_optimal_run_ids: list[int] = Field(
        description="Runs of the configurations within eps of the best (by mean loss over seeds; never a diverged one).")
    eps: float
    optimum: GroupOptimum | None = Field(description="Null when the group has too few finished runs with lr and batch.")


# -- writes ------------------------------------------------------------------------------------


class RunsImport(BaseModel):
    """Runs in hpscale's import format, as JSON."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=200, description="Label of the batch; with each run's name, its key.")
    runs: list[RunIn] = Field(min_length=1, description="The runs; re-sending a known (source, name) skips it.")


class ImportResult(BaseModel):
    """What an import did."""

    source: str
    added: int
    skipped: int = Field(description="Runs whose (source, name) was already stored.")


FitKind = Literal["hyper", "loss", "trajectory", "critical-batch"]  # as ``hpscale fit --kind`` (service.fits.KINDS)


class FitRequest(BaseModel):
    """Fit a law from stored runs and store it."""

    model_config = ConfigDict(extra="forbid")

    kind: FitKind
    form: str | None = Field(default=None, max_length=40, description="The law's form (e.g. steplaw | full | compute).")
    sources: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=100, description="Use the runs of these sources (default: every run)."
    )
    runs: list[Annotated[str, Field(min_length=1, max_length=300)]] | None = Field(
        default=None, max_length=100_000, description="Use only the runs of these names."
    )
    bootstrap: int = Field(default=1000, ge=0, le=10_000, description="Bootstrap resamples for intervals (0: none).")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the bootstrap.")
    optimizer: str | None = Field(
        default=None, pattern=OPTIMIZER_RE,
        description="Fit on the runs of this optimizer only (default: the selected runs must share one).",
    )


# -- predict -----------------------------------------------------------------------------------
class NamedSchedule(BaseModel):
    """A learning-rate schedule by kind and parameters (see fitting.schedules)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["constant", "cosine", "linear", "wsd"]
    total_steps: int = Field(ge=1, le=MAX_CURVE_STEPS)
    peak_lr: float = Field(gt=0, le=10.0)
    warmup_steps: int = Field(default=0, ge=0, le=MAX_CURVE_STEPS, description="Linear warmup from 0 to the peak.")
    final_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="Final lr as a fraction of the peak.")
    cooldown_fraction: float = Field(default=0.2, gt=0, le=1, description="wsd: fraction of all steps spent decaying.")
    decay: Literal["linear", "exponential"] = Field(default="linear", description="wsd: shape of the cooldown.")

    @model_validator(mode="after")
    def _warmup_fits(self) -> "NamedSchedule":
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds total_steps ({self.total_steps})")
        return self


class ScheduleEntry(BaseModel):
    """From ``step`` on (1-based), the learning rate is ``lr`` until the next entry."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=1, le=MAX_CURVE_STEPS)
    lr: float = Field(ge=0, le=10.0)


class TableSchedule(BaseModel):
    """A step-wise schedule given as a table of (step, lr)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["table"]
    table: list[ScheduleEntry] = Field(min_length=1, max_length=MAX_CURVE_STEPS)
    total_steps: int | None = Field(default=None, ge=1, le=MAX_CURVE_STEPS, description="Default: the last step in the table.")

    @model_validator(mode="after")
    def _starts_at_one(self) -> "TableSchedule":
        if min(e.step for e in self.table) != 1:
            raise ValueError("the table must start at step 1")
        return self


class CurvePredictionRequest(BaseModel):
    """Predict a loss curve with a trajectory law."""

    model_config = ConfigDict(extra="forbid")

    law: int | str = Field(description="A trajectory law's id or name.")
    schedule: NamedSchedule | TableSchedule = Field(discriminator="kind")
    tokens_per_step: float | None = Field(
        default=None, gt=0, le=1e12, description="Tokens per optimizer step, for laws that work in tokens."
    )


class CurvePrediction(BaseModel):
    """A predicted loss curve."""

    law: LawRef
    steps: list[int]
    lr: list[float]
    loss: list[float] = Field(description="Predicted loss at each step, nats/token.")
    tokens: list[float] | None = Field(default=None, description="Tokens seen at each step (with tokens_per_step).")


# -- health ------------------------------------------------------------------------------------
class Health(BaseModel):
    """The service is up and its database answers."""

    status: Literal["ok"]
    version: str
    database: str = Field(description="The database URL with any password hidden.")
    schema_revision: str | None
