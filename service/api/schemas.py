"""Request and response schemas of the REST API, separate from the table models.

Field names follow DESIGN.md's vocabulary. Units: ``n_params`` non-embedding parameters
(count), ``tokens`` training tokens, ``compute`` FLOPs, ``lr`` peak learning rate,
``batch_tokens`` tokens, ``batch_size`` sequences of ``seq_len`` tokens, losses nats/token.
Every float in a response is finite (JSON has no NaN): a non-finite loss is null plus a status.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from hpscale.service.inputs import TEXT, JsonInt, not_boolean
from hpscale.service.runformat import MAX_INT32, OPTIMIZER_RE, LrSchedule, RunIn, Source

# Bounds of the targets the API accepts: wide enough for any language model anyone trains,
# narrow enough that N^alpha D^beta and 6 N D stay finite in double precision.
MAX_N_PARAMS = 1e16
MAX_TOKENS = 1e18
MAX_COMPUTE = 1e36
MAX_SEQ_LEN = 1 << 24


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
    batch_size: Interval = Field(description="The batch range in whole sequences of seq_len tokens (rounded outward).")
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
    law: Annotated[str, Field(min_length=1, max_length=200), TEXT] | None = Field(
        default=None,
        description="A hyper law's id or name (default: the newest fitted law whose extrapolation check passed "
        "and whose data the target lies within the extrapolation-warning factor of, else Step Law).",
    )
    loss_law: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="A loss law's id or name: it predicts the final loss wherever the target lies, with its "
        "interval and warnings (default: the loss law whose data the target lies within the "
        "extrapolation-warning factor of; none beyond every loss law's data).",
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
    batch_size: int = Field(
        description="Recommended batch in whole sequences of seq_len tokens: batch_tokens / seq_len rounded to the "
        "nearest whole sequence (halves up, at least 1); batch_tokens keeps the law's exact value."
    )
    batch_size_rounding: str = Field(description="How batch_size was rounded, in words.")
    batch_size_interval: Interval | None = Field(
        default=None, description="batch_tokens_interval in whole sequences, rounded outward."
    )
    near_optimal: NearOptimalRegion | None = Field(
        description="The near-optimal region; null when the law has neither data nor intervals (published laws)."
    )
    final_loss: float | None = Field(
        description="Predicted final loss (nats/token) by the newest fitted loss law whose check passed (else the "
        "newest, with a warning); null without a fitted loss law."
    )
    final_loss_interval: Interval | None = None
    loss_law: LawRef | None = None
    final_loss_note: str | None = Field(
        default=None, description="Why no final loss is predicted (the target lies outside every loss law's data).")
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
    steps: Interval | None = Field(default=None, description="Trajectory laws: the steps of the fitted curves.")
    peak_lr: Interval | None = Field(default=None, description="Trajectory laws: the peak lr of the fitted curves.")


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
    schedule: str | None = Field(default=None, description="The run's learning-rate schedule, as stored.")


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


class NoiseInfo(BaseModel):
    """The run-to-run noise a fit measured: the relative std of one run's final loss."""

    rel_std: float | None = Field(description="Standard deviation of log(final loss), i.e. relative (0.005 = 0.5%).")
    source: str = Field(description="repeats (seeds), residuals (around each group's smooth surface), "
                                    "law residuals (a loss law's own), or none.")
    dof: int
    configurations: int
    description: str = Field(description="The estimate in words.")


class PriorInfo(BaseModel):
    """A published law used as a prior on a fitted law's exponents, and what it did."""

    name: str
    width: float = Field(description="Standard deviation of the Gaussian prior on each exponent.")
    centres: dict[str, float]
    shift: dict[str, float] = Field(description="How far the prior moved each exponent from the data-only fit.")
    data_coefficients: dict[str, float] = Field(description="The data-only fit's coefficients.")


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
    exponent: float | None = Field(description="The loss basin's tilt in (log lr, log batch) within (N, D) groups; "
                                   "null when the runs cannot determine it, e.g. no group has runs near its best at two "
                                   "batch sizes (note says why).")
    interval: Interval | None = Field(description="Bootstrap interval (groups, then runs within them).")
    level: float = Field(description="The interval's confidence level.")
    theory: float | None = Field(description="The theory's exponent for this optimizer; null when it gives none.")
    theory_basis: str
    groups: int = Field(description="(N, D) groups (one per architecture) with runs near their best loss at two or "
                                    "more batch sizes.")
    runs: int = Field(default=0, description="Runs (every seed) near their group's best loss: the ones the tilt is "
                                             "fitted on.")
    cells: int = Field(description="(N, D, batch) cells with a bracketed lr optimum (the per-group table).")
    cells_excluded: int = Field(description="Cells without one: best lr on the lr grid's edge, under 3 lrs, or every "
                                            "run diverged.")
    per_group: list[CouplingGroup]
    method: str
    note: str
    warning: str | None = Field(default=None, description="Why the exponent rests on extrapolation (many cells' best "
                                                          "lr on the lr grid's edge); null: no such concern.")


CriticalBy = Literal["n_params", "tokens", "target_loss"]
"""The variable x of a critical-batch law B_crit = k x^p (``fitting.forms.CRITICAL_BY``)."""


class CriticalTarget(BaseModel):
    """One target of a critical-batch law: S = S_min (1 + B_crit / B) fitted on its batches."""

    n_params: float = Field(description="Model size, non-embedding parameters.")
    target_loss: float = Field(description="The loss the steps were counted to, nats/token.")
    b_crit: float = Field(description="Critical batch, tokens.")
    s_min: float = Field(description="Fewest optimizer steps (infinite batch).")
    e_min: float = Field(description="Fewest tokens (S_min x B_crit).")
    b_overhead20: float = Field(description="Batch (tokens) whose steps carry 20% overhead over linear scaling "
                                            "from the smallest batch measured (Zhang et al.'s measure).")
    rel_error: float = Field(description="Mean |S_pred / S - 1| over the target's batches.")


class CriticalBatchInfo(BaseModel):
    """A critical-batch law's per-target fits and the exponent of B_crit on each variable."""

    by: CriticalBy = Field(
        description="The variable x of the law B_crit = k x^p: n_params, tokens (E_min) or target_loss.")
    targets: list[CriticalTarget]
    exponents: dict[str, float] = Field(
        description="p of B_crit ~ x^p across targets, for x = n_params, tokens (E_min), target_loss where they vary.")


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
    noise: NoiseInfo | None = Field(default=None, description="The run-to-run noise the fit measured.")
    near_optimal_band: float | None = Field(
        default=None, description="Hyper laws: the near-optimal band (relative) of a single-seed configuration.")
    prior: PriorInfo | None = Field(default=None, description="Hyper laws: the published prior, if any.")
    landscape: dict[str, float] | None = Field(
        default=None, description="Joint hyper fits: the shared basin (tilt k, curvatures A_lo/A_hi along lr, "
                                  "C_lo/C_hi along batch, runs_in_band, window).")
    failure: list[str] = Field(default_factory=list,
                               description="Why the fit is degenerate and never used by default (empty: it is sound).")
    lr_batch_coupling: LrBatchCoupling | None = Field(
        default=None, description="Fitted hyper laws: the exponent of lr* on the batch at fixed (N, D), with its "
        "interval and the theory's value (null for other laws, and for hyper laws fitted before it was measured)."
    )
    critical_batch: CriticalBatchInfo | None = Field(
        default=None, description="Critical-batch laws: B_crit per target and its exponents (null for other laws).")


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
    trunk_key: str | None = Field(
        description="A branch of a warmup-stable-decay trunk: the trunk cell whose stable phase it shares with the "
                    "other token budgets of its lr and seed (config.branch_step: the steps shared); null for a run "
                    "trained on its own.")


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
    edges: list[str] = Field(description="Grid edges the best run touches (the sweep should widen there): "
                             "lr_low, lr_high, batch_low, batch_high, lr_unsearched.")
    edges_text: str | None = Field(
        default=None, description="Where the best run lies on the grid, in words (None when on no edge)."
    )


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
    eps: float = Field(description="The near-optimal band used (relative): the sweep's measured run-to-run noise "
                                   "for a configuration of this group's seed count, never under 0.25%.")
    optimum: GroupOptimum | None = Field(description="Null when the group has too few finished runs with lr and batch.")


# -- writes ------------------------------------------------------------------------------------


class RunsImport(BaseModel):
    """Runs in hpscale's import format, as JSON."""

    model_config = ConfigDict(extra="forbid")

    source: Source = Field(description="Label of the batch; with each run's name, its key.")
    runs: list[RunIn] = Field(min_length=1, description="The runs; re-sending a known (source, name) skips it.")


class ImportResult(BaseModel):
    """What an import did."""

    source: str
    added: int
    skipped: int = Field(description="Runs whose (source, name) was already stored.")


class DeletedLaw(BaseModel):
    """A fitted law deleted with the runs it used."""

    id: int
    name: str


class RunsDeleted(BaseModel):
    """What a delete removed."""

    runs: int = Field(description="Runs deleted, with their curves.")
    by_source: dict[str, int] = Field(description="Runs deleted per source.")
    laws: list[DeletedLaw] = Field(description="Fitted laws deleted with them (force=true only).")


FitKind = Literal["hyper", "loss", "trajectory", "critical-batch"]  # as ``hpscale fit --kind`` (service.fits.KINDS)


class FitRequest(BaseModel):
    """Fit a law from stored runs and store it."""

    model_config = ConfigDict(extra="forbid")

    kind: FitKind
    form: Annotated[str, Field(max_length=40), TEXT] | None = Field(
        default=None, description="The law's form (e.g. steplaw | full | compute).")
    sources: list[Source] | None = Field(
        default=None, max_length=100,
        description="Use the runs of these sources (default: the one source stored; with several, refused)."
    )
    runs: list[Annotated[str, Field(min_length=1, max_length=300), TEXT]] | None = Field(
        default=None, max_length=100_000, description="Use only the runs of these names."
    )
    bootstrap: JsonInt = Field(default=1000, ge=0, le=10_000, description="Bootstrap resamples for intervals (0: none).")
    seed: JsonInt = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the bootstrap.")
    method: Literal["near_optimal", "smooth", "joint"] = Field(
        default="near_optimal", description="Hyper laws: how runs become the law (near_optimal: every configuration "
        "not distinguishable from its group's best given the noise; smooth: one optimum per group; joint: one "
        "basin model over every run).")
    prior: Literal["none", "steplaw", "deepseek"] = Field(
        default="none", description="Hyper laws: a published law's exponents as a Gaussian prior.")
    prior_width: float = Field(default=0.1, gt=0, le=10, strict=True,
                               description="Standard deviation of the prior on each exponent.")
    mix: bool = Field(
        default=False, strict=True,
        description="Fit one law over runs of several sources (when no sources are named) or corpora; refused "
        "otherwise (runs of several optimizers are never fitted together).",
    )
    allow_edge: bool = Field(
        default=False, strict=True,
        description="Hyper laws on swept runs: fit even when a group's best run lies on the edge of the searched "
        "grid (kept as a warning). Imported runs always fit so, with the warning.",
    )
    optimizer: str | None = Field(
        default=None, pattern=OPTIMIZER_RE,
        description="Fit on the runs of this optimizer only (default: the selected runs must share one).",
    )
    by: CriticalBy = Field(
        default="n_params", description="Critical-batch laws: the variable x of B_crit = k x^p (tokens: E_min, the "
        "fewest tokens to the target).")


# -- predict -----------------------------------------------------------------------------------
class CurvePredictionRequest(BaseModel):
    """Predict a loss curve with a trajectory law."""

    model_config = ConfigDict(extra="forbid")

    law: Annotated[int | Annotated[str, Field(min_length=1, max_length=200)], BeforeValidator(not_boolean), TEXT] = Field(
        description="A trajectory law's id or name.")
    schedule: LrSchedule = Field(description="At most HPSCALE_MAX_CURVE_STEPS steps (default 2,000,000).")
    tokens_per_step: float | None = Field(
        default=None, gt=0, le=1e12, strict=True, description="Tokens per optimizer step, for laws that work in tokens."
    )
    every: JsonInt = Field(default=1, ge=1, le=MAX_INT32,
                           description="Predict at every n-th step after warmup (and at the last step) only.")


class HeldOutCurveError(BaseModel):
    """How well the law predicted a curve it had not seen (its extrapolation check)."""

    curve: str | None = Field(description="The held-out curve: the longest the law was fitted on.")
    fit_curves: list[str] = Field(description="The curves the law was refitted on without it.")
    mean_rel_error: float = Field(description="Mean |predicted / measured - 1| over the held-out curve's points.")
    max_rel_error: float = Field(description="Largest |predicted / measured - 1| over them.")


class CurvePrediction(BaseModel):
    """A predicted loss curve."""

    law: LawRef
    steps: list[int]
    lr: list[float]
    loss: list[float] = Field(description="Predicted loss at each step, nats/token.")
    tokens: list[float] | None = Field(default=None, description="Tokens seen at each step (with tokens_per_step).")
    warmup_steps: int = Field(description="Steps taken as warmup (before the lr first reaches its peak); the "
                                          "curve is predicted after them.")
    warnings: list[str] = Field(description="The law's fit warnings, a failed check, a schedule longer than the "
                                            "fitted curves or at another peak lr.")
    held_out: HeldOutCurveError | None = Field(
        default=None, description="The law's error on a curve it had not seen: the nearest thing a trajectory law has "
        "to an interval (null when it was not checked).")


# -- health ------------------------------------------------------------------------------------
class Health(BaseModel):
    """The service is up, its database answers and holds the schema this code expects."""

    status: Literal["ok"]
    version: str
    database: Literal["sqlite", "postgresql"] = Field(description="The database backend (its URL is not shown).")
    schema_revision: str = Field(description="The database's schema revision (the code's own).")
