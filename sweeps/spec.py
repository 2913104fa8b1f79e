"""The sweep spec: a YAML file, validated by pydantic, that says which grid of small GPTs to train.

A spec names model sizes (a target non-embedding parameter count, or an explicit shape), token
budgets (absolute, or tokens per parameter), learning rates (a log range with a count, or a
list), batch sizes in sequences, the sequence length, the lr schedule, the optimizer (a kind
with its settings and clipping; a list of them is a sweep axis, each optionally with its own lr
grid), seeds, evaluation, the corpus and its tokenizer, precision, device, how far refinement
may widen the lr grid, and the workers' heartbeat. ``load_spec`` reads one; every
problem becomes one :class:`SpecError` line naming the field path and the bad value.

Units: params and tokens are counts, batch sizes are sequences, seq_len is tokens, intervals
are optimizer steps, heartbeat times are seconds.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpscale.sweeps.errors import SweepError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SpecError(SweepError):
    """A sweep spec that cannot be read or is invalid; the message is one line."""


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt "warmup_fracton" must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Beta = Annotated[float, Field(ge=0, lt=1)]  # a momentum or moving-average decay


class SizeSpec(_Strict):
    """One model size: ``n_params`` (target non-embedding params, the shape is chosen by
    ``sweeps.shape.config_for_params``) or an explicit ``d_model`` / ``n_layers`` / ``n_heads``."""

    n_params: PosFloat | None = None
    d_model: PosInt | None = None
    n_layers: PosInt | None = None
    n_heads: PosInt | None = None
    head_dim: PosInt = 64  # used with n_params only: d_model is a multiple of it

    @model_validator(mode="after")
    def _one_way(self) -> SizeSpec:
        shape = (self.d_model, self.n_layers, self.n_heads)
        if self.n_params is not None:
            if any(v is not None for v in shape):
                raise ValueError("give n_params or d_model/n_layers/n_heads, not both")
        elif any(v is None for v in shape):
            raise ValueError("give n_params, or all of d_model, n_layers and n_heads")
        elif self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:  # type: ignore[operator]
            raise ValueError(f"d_model {self.d_model} must split into n_heads {self.n_heads} heads of even size")
        return self


class TokensSpec(_Strict):
    """Token budgets D: absolute ``values`` (tokens) or ``per_param`` (D = ratio x N)."""

    values: list[PosFloat] | None = Field(default=None, min_length=1)
    per_param: list[PosFloat] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_way(self) -> TokensSpec:
        if (self.values is None) == (self.per_param is None):
            raise ValueError("give exactly one of values (tokens) or per_param (tokens per parameter)")
        return self


class LrSpec(_Strict):
    """Peak learning rates: a list (``values``) or ``count`` points log-spaced in [low, high]."""

    values: list[PosFloat] | None = Field(default=None, min_length=1)
    low: PosFloat | None = None
    high: PosFloat | None = None
    count: Annotated[int, Field(ge=2)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> LrSpec:
        ranged = (self.low, self.high, self.count)
        if self.values is not None:
            if any(v is not None for v in ranged):
                raise ValueError("give values, or low/high/count, not both")
        elif any(v is None for v in ranged):
            raise ValueError("give values, or all of low, high and count")
        elif self.low >= self.high:  # type: ignore[operator]
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self

    def grid(self) -> list[float]:
        """The learning rates, ascending, rounded to 6 significant digits (stable run names)."""
        if self.values is not None:
            raw = list(self.values)
        else:
            lo, hi, n = math.log(self.low), math.log(self.high), self.count  # type: ignore[arg-type]
            raw = [math.exp(lo + (hi - lo) * i / (n - 1)) for i in range(n)]  # type: ignore[operator]
        return sorted({round_lr(v) for v in raw})

    def log_step(self) -> float:
        """The grid's spacing in log space (the median gap; refinement extends the grid by it)."""
        grid = self.grid()
        if len(grid) < 2:
            return math.log(2.0)  # one lr given: widen by factors of 2
        gaps = sorted(math.log(b / a) for a, b in zip(grid, grid[1:]))
        return gaps[len(gaps) // 2]


class ScheduleSpec(_Strict):
    """The lr schedule (``fitting.schedules.lr_schedule``): linear warmup, then the decay ``kind``.

    ``branches`` (wsd only) makes the sweep's token budgets branches of one trunk: for every
    (size, batch, lr, seed) the stable phase is trained once, and each budget is a cooldown
    branched off it (``sweeps.train.train_branches``). A plain list holds token budgets; a
    mapping is like ``tokens`` (``values`` or ``per_param``). The budgets then come from here
    and the spec has no ``tokens``. The warmup is one length for every branch of a trunk:
    ``warmup_fraction`` of the shortest budget's steps.
    """

    kind: Literal["constant", "cosine", "linear", "wsd"] = "cosine"
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.05  # of each run's steps (branched: the shortest's)
    final_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1  # final lr / peak lr
    cooldown_fraction: Annotated[float, Field(gt=0, le=1)] = 0.2  # wsd only: the decay's share of steps
    branches: TokensSpec | None = None

    @field_validator("branches", mode="before")
    @classmethod
    def _list_is_tokens(cls, v: Any) -> Any:
        return {"values": v} if isinstance(v, list) else v  # [D1, D2, ...]: token budgets

    @model_validator(mode="after")
    def _branches_are_wsd(self) -> ScheduleSpec:
        if self.branches is not None:
            if self.kind != "wsd":
                raise ValueError(f"branches need kind wsd (a cooldown to branch into), got kind {self.kind}")
            if self.warmup_fraction + self.cooldown_fraction > 1:
                raise ValueError(f"warmup_fraction {self.warmup_fraction:g} + cooldown_fraction "
                                 f"{self.cooldown_fraction:g} exceed 1: the shortest branch's warmup "
                                 "would run into its cooldown")
        return self


def schedule_lrs(schedule: ScheduleSpec, steps: int, peak_lr: float, warmup_steps: int | None = None) -> Any:
    """The learning rate of every step 1..``steps`` of a run with this schedule and peak lr
    (numpy array). The trainer (peak 1: a multiplier) and the trajectory fits both use it.
    ``warmup_steps`` (steps) overrides ``warmup_fraction``: a branch's warmup is its trunk's."""
    from hpscale.fitting.schedules import lr_schedule

    warmup = int(round(schedule.warmup_fraction * steps)) if warmup_steps is None else min(int(warmup_steps), steps)
    return lr_schedule(schedule.kind, steps, peak_lr, warmup_steps=warmup,
                       final_lr_ratio=schedule.final_lr_ratio, cooldown_fraction=schedule.cooldown_fraction)


class EvalSpec(_Strict):
    """Validation: every ``interval`` steps, ``batches`` batches of ``batch_size`` sequences."""

    interval: PosInt = 100
    batches: PosInt = 8
    batch_size: PosInt = 16


class CorpusSpec(_Strict):
    """``python-source`` (built in), ``folder`` (text files under ``path``) or ``bin`` (token ids at ``path``)."""

    kind: Literal["python-source", "folder", "bin"] = "python-source"
    path: str | None = None
    max_files: PosInt | None = None  # read at most this many files (tests, quick looks)
    max_bytes: PosInt | None = None  # keep at most this much de-duplicated text
    val_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    vocab_size: PosInt | None = None  # bin only: ids are below it
    dtype: Literal["uint16", "uint32"] = "uint16"  # bin only

    @model_validator(mode="after")
    def _fits_kind(self) -> CorpusSpec:
        if self.kind == "python-source" and self.path is not None:
            raise ValueError("python-source takes no path")
        if self.kind in ("folder", "bin") and not self.path:
            raise ValueError(f"kind {self.kind} needs a path")
        if self.kind == "bin" and self.vocab_size is None:
            raise ValueError("kind bin needs vocab_size (the tokenizer's vocabulary)")
        if self.kind != "bin" and self.vocab_size is not None:
            raise ValueError("vocab_size belongs under tokenizer for text corpora")
        return self


class TokenizerSpec(_Strict):
    """The byte-level BPE trained on a text corpus."""

    vocab_size: Annotated[int, Field(ge=258, le=1 << 20)] = 8192
    max_bytes: PosInt = 40_000_000  # text the BPE learns from


class _OptimizerBase(_Strict):
    """What every optimizer entry has besides its own settings: gradient clipping and the
    divergence test (the trainer's, per member), and optionally its own lr grid."""

    grad_clip: PosFloat | None = 1.0  # per-member global-norm clip; null disables
    divergence_factor: Annotated[float, Field(gt=1)] = 2.0  # diverged when smoothed loss > factor x its best
    # This optimizer's learning rates; null: the spec's top-level ``lr``. Optimizers want very
    # different lrs (Lion's are 3-10x below AdamW's, Muon's and SGD's far above), so a sweep
    # over several gives each its own grid.
    lr: LrSpec | None = None


class AdamWSpec(_OptimizerBase):
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay (lr x weight_decay)."""

    kind: Literal["adamw"] = "adamw"
    weight_decay: NonNegFloat = 0.1  # decoupled, on matrices only (norm gains are never decayed)
    beta1: Beta = 0.9
    beta2: Beta = 0.95  # the usual LM choice: faster second-moment tracking than 0.999
    eps: PosFloat = 1e-8


class LionSpec(_OptimizerBase):
    """Lion (Chen et al. 2023): the sign of an interpolation of momentum and gradient. Its
    updates are larger than Adam's (every entry is +-lr): the paper advises an lr 3-10x
    smaller than AdamW's and a weight decay 3-10x larger, so that lr x weight_decay stays."""

    kind: Literal["lion"] = "lion"
    weight_decay: NonNegFloat = 1.0  # decoupled, as AdamW's: 10x AdamW's 0.1 for an lr 10x smaller
    beta1: Beta = 0.9  # interpolation of the update direction
    beta2: Beta = 0.99  # momentum decay


class SGDSpec(_OptimizerBase):
    """SGD with momentum, exactly ``torch.optim.SGD`` (dampening 0): buf = momentum buf + g,
    step lr x buf (Nesterov: g + momentum buf). Weight decay is the classic coupled L2 term
    added to the gradient, as torch's SGD does."""

    kind: Literal["sgd"] = "sgd"
    weight_decay: NonNegFloat = 0.0  # L2, added to the gradient of the decayed matrices
    momentum: Beta = 0.9
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: needs momentum > 0")
        return self


class SGDSaISpec(_OptimizerBase):
    """SGD-SaI ("No More Adam: Learning Rate Scaling at Initialization", 2024): SGD with
    (dampened) momentum whose lr is scaled, per weight tensor and once for all at the first
    step, by that tensor's gradient signal-to-noise ratio ||g|| / (std(g) + eps). The scale is
    of order sqrt(elements), so its lrs are far below plain SGD's."""

    kind: Literal["sgd_sai"] = "sgd_sai"
    weight_decay: NonNegFloat = 0.01  # decoupled: w <- w (1 - lr weight_decay), as the reference
    momentum: Beta = 0.9  # buf = momentum buf + (1 - momentum) g; buf = g at the first step
    eps: PosFloat = 1e-8


class LAMBSpec(_OptimizerBase):
    """LAMB (You et al. 2020): Adam's bias-corrected update plus decoupled decay, r = m/(sqrt(v)
    + eps) + weight_decay w, scaled per weight tensor by the trust ratio ||w|| / ||r|| (1 where
    either norm is zero). Defaults are the paper's."""

    kind: Literal["lamb"] = "lamb"
    weight_decay: NonNegFloat = 0.01
    beta1: Beta = 0.9
    beta2: Beta = 0.999
    eps: PosFloat = 1e-6


class MuonSpec(_OptimizerBase):
    """Muon (Jordan et al. 2024): for the hidden matrices (attention and MLP weights of every
    block), Nesterov momentum orthogonalised by ``ns_steps`` Newton-Schulz iterations (quintic,
    coefficients 3.4445, -4.7750, 2.0315) and scaled by sqrt(max(1, fan_out / fan_in)); for the
    embedding, the head and the norm gains, AdamW at ``adam_lr_ratio`` x the member's lr.
    Defaults follow the reference implementation's README (Muon lr 0.02, AdamW lr 3e-4, weight
    decay 0.01 for both)."""

    kind: Literal["muon"] = "muon"
    weight_decay: NonNegFloat = 0.01  # decoupled, both halves (norm gains never)
    momentum: Beta = 0.95
    nesterov: bool = True
    ns_steps: Annotated[int, Field(ge=1, le=20)] = 5
    adam_lr_ratio: PosFloat = 0.015  # the AdamW half's lr / Muon's lr: 3e-4 / 0.02 in the reference
    adam_beta1: Beta = 0.9
    adam_beta2: Beta = 0.95
    adam_eps: PosFloat = 1e-10


OPTIMIZER_SPECS: dict[str, type[_OptimizerBase]] = {
    "adamw": AdamWSpec, "lion": LionSpec, "sgd": SGDSpec, "sgd_sai": SGDSaISpec, "lamb": LAMBSpec, "muon": MuonSpec,
}
OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_SPECS)
"""The optimizer kinds the trainer implements (``sweeps.optim``), by the name runs and laws carry."""

OptimizerSpec = Annotated[
    AdamWSpec | LionSpec | SGDSpec | SGDSaISpec | LAMBSpec | MuonSpec, Field(discriminator="kind")
]


def _optimizer_list(value: Any) -> Any:
    """One optimizer (a mapping) or a list of them, each AdamW unless it names its ``kind``
    (a spec written before optimizers had kinds is AdamW's)."""
    items = value if isinstance(value, list) else [value]
    return [{"kind": "adamw", **item} if isinstance(item, dict) and "kind" not in item else item for item in items]


class RefineSpec(_Strict):
    """Refinement: while a group's best lr sits on the grid's edge, add ``points`` lrs beyond it,
    one grid step apart, at every batch size; at most ``max_rounds`` times per group. With
    ``batches``, a best batch on the batch grid's edge also adds a batch size beyond it (half
    the smallest or twice the largest), trained at every lr the group searched."""

    max_rounds: Annotated[int, Field(ge=0, le=10)] = 2
    points: Annotated[int, Field(ge=1, le=8)] = 2
    batches: bool = False


class WorkersSpec(_Strict):
    """Liveness: a worker beats every ``heartbeat_s``; a trial silent for ``grace_s`` is failed
    and re-queued (Optuna's RDB heartbeat). A cell whose training raised (CUDA out of memory on a
    GPU that other processes share, say) goes back in the queue up to ``retries`` times before
    its runs stay failed (then the next ``hpscale sweep run`` of the spec queues them again, with
    a new budget); the worker that saw it fail waits ``heartbeat_s`` x attempts first."""

    heartbeat_s: Annotated[int, Field(ge=1, le=3600)] = 20
    grace_s: Annotated[int, Field(ge=2, le=36000)] = 120
    retries: Annotated[int, Field(ge=0, le=10)] = 2

    @model_validator(mode="after")
    def _grace_exceeds_beat(self) -> WorkersSpec:
        if self.grace_s <= self.heartbeat_s:
            raise ValueError(f"grace_s {self.grace_s} must exceed heartbeat_s {self.heartbeat_s}")
        return self


class SweepSpec(_Strict):
    """A whole sweep. ``name`` is the run source in the database and must be unique there."""

    name: str
    description: str = ""
    sizes: list[SizeSpec] = Field(min_length=1)
    tokens: TokensSpec | None = None  # required unless schedule.branches gives the budgets
    lr: LrSpec | None = None  # every optimizer's grid unless it gives its own
    batch_sizes: list[PosInt] = Field(min_length=1)  # sequences per step
    seq_len: Annotated[int, Field(ge=2)] = 512
    schedule: ScheduleSpec = ScheduleSpec()
    # One optimizer, or a list of them: a sweep axis (each its own groups, runs and laws).
    optimizer: Annotated[list[OptimizerSpec], BeforeValidator(_optimizer_list), Field(min_length=1)] = [AdamWSpec()]
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default=[0], min_length=1)
    # What a seed changes: the initial weights and the batch order (each seed its own stream of the
    # data_seed's batches; seed 0 the stream every sweep used before), or the weights only (every
    # member of a cell then reads the same batches). Seeds of one configuration still train as
    # members of one cell: each member reads its own batch ([K, B, T]) at no extra compute.
    seeds_vary: Literal["init_and_data", "init"] = "init_and_data"
    data_seed: Annotated[int, Field(ge=0)] = 0  # the batches' seed (the streams above are its orders)
    eval: EvalSpec = EvalSpec()
    corpus: CorpusSpec = CorpusSpec()
    tokenizer: TokenizerSpec = TokenizerSpec()
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool | None = None  # torch.compile; null: on CUDA only
    cuda_graph: bool | None = None  # replay each step as one CUDA graph; null: on CUDA (no effect on the CPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    refine: RefineSpec = RefineSpec()
    workers: WorkersSpec = WorkersSpec()

    @model_validator(mode="after")
    def _one_place_for_budgets(self) -> SweepSpec:
        if self.schedule.branches is None and self.tokens is None:
            raise ValueError("give tokens (the token budgets), or schedule.branches for budgets branched off one trunk")
        if self.schedule.branches is not None and self.tokens is not None:
            raise ValueError("give the token budgets once: in schedule.branches (branched) or in tokens, not both")
        return self

    @property
    def budgets(self) -> TokensSpec:
        """The token budgets: ``tokens``, or ``schedule.branches`` for a branched sweep."""
        return self.schedule.branches or self.tokens  # type: ignore[return-value]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("use 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return v

    @field_validator("batch_sizes", "seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("values must be distinct")
        return sorted(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|cuda(:\d+)?)$", v):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return v

    @field_validator("optimizer")
    @classmethod
    def _distinct_kinds(cls, v: list[Any]) -> list[Any]:
        kinds = [o.kind for o in v]
        for i, kind in enumerate(kinds):
            if kind in kinds[:i]:
                raise ValueError(f"{kind} appears twice: a sweep trains one setting of each optimizer "
                                 "(runs and laws are keyed by the optimizer's kind)")
        return v

    @model_validator(mode="after")
    def _every_optimizer_has_lrs(self) -> SweepSpec:
        if self.lr is None:
            missing = [o.kind for o in self.optimizer if o.lr is None]
            if missing:
                raise ValueError(f"lr: required, or an lr for each optimizer (none of its own: {', '.join(missing)})")
        return self

    def optimizer_for(self, kind: str) -> Any:
        """The spec's entry for optimizer ``kind`` (an ``OptimizerSpec``); ``SpecError`` if absent."""
        for o in self.optimizer:
            if o.kind == kind:
                return o
        raise SpecError(f"sweep {self.name!r} has no optimizer {kind!r} (it has {', '.join(o.kind for o in self.optimizer)})")

    def lr_grid(self, kind: str) -> LrSpec:
        """The learning rates optimizer ``kind`` is swept over: its own, else the spec's."""
        return self.optimizer_for(kind).lr or self.lr  # type: ignore[no-any-return]

    @property
    def vocab_size(self) -> int:
        """The vocabulary the models are built for (ids)."""
        return self.corpus.vocab_size if self.corpus.kind == "bin" else self.tokenizer.vocab_size  # type: ignore[return-value]


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _error_loc(err: Any, data: dict[str, Any]) -> tuple[Any, ...]:
    """An error's field path as the user wrote the spec: no pydantic function names, no
    optimizer kind tag (``optimizer.0.lion.beta1`` is ``optimizer.0.beta1``), no list index
    under an ``optimizer`` given as one mapping, and ``kind`` named when the kind is unknown."""
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    if loc[:1] == ["optimizer"] and len(loc) >= 2 and isinstance(loc[1], int):
        if len(loc) >= 3 and loc[2] in OPTIMIZER_SPECS:
            del loc[2]
        if err["type"] == "union_tag_invalid":
            loc.append("kind")
        if not isinstance(data.get("optimizer"), list):
            del loc[1]
    return tuple(loc)


def _format_error(exc: ValidationError, source: str, data: dict[str, Any]) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = _error_loc(err, data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error" and re.match(r"^[a-z_]+: ", msg):  # a check across fields names its field
            where, _, msg = msg.partition(": ")
            loc = (*loc, where)
        bad = err.get("input")
        shown = "" if isinstance(bad, dict) or err["type"] in ("missing", "union_tag_invalid") else f" (got {bad!r})"
        parts.append(f"{_where(loc)}: {msg}{shown}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"{source}: " + "; ".join(parts) + more


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Validate a spec already parsed from YAML/JSON; ``SpecError`` (one line) if invalid."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep spec is a mapping of fields, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_error(exc, source, data)) from None


def load_spec(path: Path | str) -> SweepSpec:
    """Read and validate a YAML sweep spec."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read sweep spec {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_spec(data, str(path))


def check_paths(spec: SweepSpec) -> None:
    """Check on this machine what validation cannot: that a folder or .bin corpus exists.
    (Kept out of the model so a stored spec still parses on a machine without the files.)"""
    c = spec.corpus
    if c.path is None:
        return
    path = Path(c.path).expanduser()
    ok = path.is_dir() if c.kind == "folder" else path.is_file()
    if not ok:
        what = "a folder" if c.kind == "folder" else "a file"
        raise SpecError(f"corpus.path: {what} that does not exist here (got {c.path!r})")


def round_lr(lr: float) -> float:
    """An lr rounded to 6 significant digits: the same value whoever computes it (run names, trial params)."""
    return float(f"{lr:.6g}")
