"""From a spec to cells: the grid of runs, their names, FLOPs and estimated time, and refinement.

Pure planning: nothing here touches the database or Optuna (``sweeps.queue`` does). Units:
params and tokens are counts, FLOPs are FLOP, rates FLOP/s, times seconds.

Names are deterministic, so whoever plans the same spec gets the same keys:
``group`` = ``N{n_params}-D{tokens}`` for AdamW and ``{optimizer}-N{n_params}-D{tokens}`` for
any other optimizer (a group is one optimizer's; AdamW's keys predate the optimizer axis and keep
their form, so a stored sweep re-plans to the same names), ``cell`` = ``{group}-B{batch}``,
``run`` = ``{cell}-lr{lr:.6g}-s{seed}``. The run name is the idempotency key of the runs table.

Branched sweeps (``schedule.branches``): the cells of one optimizer, size and batch share a
trunk, ``trunk`` = ``N{n_params}-B{batch}-trunk`` (prefixed like the group); a run's own trunk is
(trunk, lr, seed). The trunk is trained once up to the longest budget, and every shorter budget
branches off it into its own cooldown after ``branch_step`` shared steps, so a branched plan
costs the longest run plus the other budgets' cooldowns (``Plan.flops``) instead of every run
in full (``Plan.separate_flops``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from hpscale.sweeps.shape import GPTConfig, config_for_params, flops_per_token, n_params
from hpscale.fitting.schedules import lr_schedule, shared_steps
from hpscale.sweeps.spec import SizeSpec, SweepSpec, round_lr, schedule_lrs

# Assumed sustained model-FLOP rates for the time estimate (FLOP/s). CPU: one torch thread (the
# CLI's default there) on the 2-core dev machine, once start-up and per-step costs are counted
# apart (below). CUDA: ~10% of an H100's 989 TFLOP/s bf16 peak, what the fused engine reaches at
# d_model 128-256 (DESIGN.md); larger models do better, so this is conservative for them.
ASSUMED_FLOPS_PER_S = {"cpu": 2e10, "cuda": 1e14}
# On the CPU, tiny models spend most of their time outside the model's FLOPs. Measured there
# (CPU seconds of the tiny example's cells, 2026-12-04; benchmarks/tiny_sweep.py and
# BENCHMARKS.md): 7 s to start (torch, the corpus's tokenizer, the database and queue), then per
# step 5 ms plus 2.2 ms per member (the optimizer, evaluation, Python), besides the FLOPs.
CPU_START_S = 7.0
CPU_STEP_S = 5e-3
CPU_STEP_PER_MEMBER_S = 2.2e-3


@dataclass(frozen=True)
class Shape:
    """A member's model shape and its sizes."""

    d_model: int
    n_layers: int
    n_heads: int
    n_params: int  # non-embedding parameters, count
    flops_per_token: float  # training FLOPs per token of one member, attention included


@dataclass(frozen=True)
class Member:
    """One run of a cell: its peak lr, its init seed and its name."""

    lr: float
    seed: int
    name: str


@dataclass(frozen=True)
class Cell:
    """The runs sharing (optimizer, N, D, batch): one fused training job."""

    group: str
    key: str
    shape: Shape
    tokens: int  # the group's token budget D
    batch_size: int  # sequences per step
    seq_len: int
    steps: int  # optimizer steps: round(D / (batch_size x seq_len)), at least 1
    round: int  # 0 for the spec's grid, r for the r-th refinement
    members: tuple[Member, ...]
    optimizer: str = "adamw"  # the optimizer kind every member trains with (sweeps.spec.OPTIMIZERS)
    trunk: str | None = None  # branched sweeps: the trunk key this cell's runs branch off
    warmup_steps: int | None = None  # branched: the trunk's warmup (steps), the same for every branch
    branch_step: int | None = None  # branched: steps shared with the trunk; the cooldown follows

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def train_tokens(self) -> int:
        """Tokens one member actually trains on (steps x batch tokens; close to D)."""
        return self.steps * self.batch_tokens


@dataclass(frozen=True)
class Plan:
    """Every cell of a spec, and its cost."""

    spec: SweepSpec
    cells: tuple[Cell, ...]
    flops_by_cell: tuple[float, ...] = field(default=())  # what training each cell costs, FLOP
    separate_flops: float = 0.0  # the same runs each trained from scratch, FLOP (= flops unless branched)

    @property
    def runs(self) -> int:
        return sum(len(c.members) for c in self.cells)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(c.group for c in self.cells))

    @property
    def flops(self) -> float:
        return float(sum(self.flops_by_cell))

    @property
    def flops_saved(self) -> float:
        """FLOPs that branching saves against training every run separately (FLOP)."""
        return max(self.separate_flops - self.flops, 0.0)

    @property
    def trunks(self) -> dict[str, list[Cell]]:
        """Branched plans: each trunk's cells, shortest budget first (the last one is the
        trunk's own end); empty for a plan without branches."""
        out: dict[str, list[Cell]] = {}
        for c in self.cells:
            if c.trunk is not None:
                out.setdefault(c.trunk, []).append(c)
        return {k: sorted(v, key=lambda c: (c.steps, c.tokens)) for k, v in out.items()}


def shape_for(size: SizeSpec, spec: SweepSpec) -> Shape:
    """The model shape of one size entry."""
    if size.n_params is not None:
        cfg = config_for_params(size.n_params, vocab_size=spec.vocab_size, seq_len=spec.seq_len,
                                head_dim=size.head_dim)
    else:
        cfg = GPTConfig(vocab_size=spec.vocab_size, seq_len=spec.seq_len, d_model=size.d_model,  # type: ignore[arg-type]
                        n_layers=size.n_layers, n_heads=size.n_heads)  # type: ignore[arg-type]
    return Shape(cfg.d_model, cfg.n_layers, cfg.n_heads, n_params(cfg), flops_per_token(cfg))


def group_key(n_params: int, tokens: int, optimizer: str = "adamw") -> str:
    """The key of one (optimizer, N, D) group (see the module doc)."""
    key = f"N{n_params}-D{tokens}"
    return key if optimizer == "adamw" else f"{optimizer}-{key}"


def cell_key(group: str, batch_size: int) -> str:
    return f"{group}-B{batch_size}"


def run_name(cell: str, lr: float, seed: int) -> str:
    return f"{cell}-lr{round_lr(lr):.6g}-s{seed}"


def trunk_key(n_params: int, batch_size: int, optimizer: str = "adamw") -> str:
    """The key of one (optimizer, N, batch) trunk, prefixed like its groups' keys."""
    key = f"N{n_params}-B{batch_size}-trunk"
    return key if optimizer == "adamw" else f"{optimizer}-{key}"


def token_budgets(spec: SweepSpec, n_params: int) -> list[int]:
    """The token budgets D of one size (tokens), ascending."""
    budgets = spec.budgets
    if budgets.values is not None:
        return sorted({int(round(v)) for v in budgets.values})
    return sorted({int(round(r * n_params)) for r in budgets.per_param or ()})


def cell_steps(spec: SweepSpec, tokens: int, batch_size: int) -> int:
    """Optimizer steps of a run of ``tokens`` at ``batch_size`` sequences (at least 1)."""
    return max(1, round(tokens / (batch_size * spec.seq_len)))


def trunk_warmup(spec: SweepSpec, n_params: int, batch_size: int) -> int:
    """A branched sweep's warmup at one size and batch (steps): ``warmup_fraction`` of the
    shortest budget's steps, so that every branch of the trunk warms up alike."""
    shortest = min(cell_steps(spec, d, batch_size) for d in token_budgets(spec, n_params))
    return int(round(spec.schedule.warmup_fraction * shortest))


def cell_schedule(spec: SweepSpec, cell: Cell) -> np.ndarray:
    """The lr multiplier (peak 1) of every step 1..steps of the cell's runs: what the trainer
    applies and what the trajectory fits rebuild."""
    return np.asarray(schedule_lrs(spec.schedule, cell.steps, 1.0, warmup_steps=cell.warmup_steps))


def make_cell(spec: SweepSpec, shape: Shape, tokens: int, batch_size: int, lrs: Sequence[float], rnd: int,
              optimizer: str = "adamw") -> Cell:
    """One cell: every (lr, seed) pair of ``lrs`` x the spec's seeds at one (optimizer, N, D, batch).
    In a branched sweep it also names its trunk and where it leaves it."""
    group = group_key(shape.n_params, tokens, optimizer)
    key = cell_key(group, batch_size)
    steps = cell_steps(spec, tokens, batch_size)
    members = tuple(Member(round_lr(lr), s, run_name(key, lr, s)) for lr in sorted(lrs) for s in spec.seeds)
    cell = Cell(group, key, shape, tokens, batch_size, spec.seq_len, steps, rnd, members, optimizer)
    if spec.schedule.branches is None:
        return cell
    warmup = trunk_warmup(spec, shape.n_params, batch_size)
    cell = replace(cell, trunk=trunk_key(shape.n_params, batch_size, optimizer), warmup_steps=warmup)
    # The trunk: warmup, then the peak for good. A branch shares exactly the steps on which its
    # own WSD schedule equals it (bitwise), so a branch trains what a separate run would.
    trunk = lr_schedule("constant", steps, 1.0, warmup_steps=min(warmup, steps))
    return replace(cell, branch_step=shared_steps(cell_schedule(spec, cell), trunk))


def _eval_flops(spec: SweepSpec, cell: Cell, evals: int) -> float:
    eval_tokens = evals * spec.eval.batches * spec.eval.batch_size * spec.seq_len
    return eval_tokens * cell.shape.flops_per_token / 3.0  # forward only: a third of a training step


def cell_flops(spec: SweepSpec, cell: Cell, shared_steps: int = 0) -> float:
    """FLOPs of a whole cell (FLOP): training of every member plus its evaluations (forward
    only, 1/3). ``shared_steps``: leading steps trained once for the whole trunk and paid by
    its longest cell, so not counted here (a branch pays its cooldown only)."""
    own = cell.steps - shared_steps
    train = own * cell.batch_tokens * cell.shape.flops_per_token
    if shared_steps:  # its own evaluations: those after the branch point, and the end
        evals = cell.steps // spec.eval.interval - shared_steps // spec.eval.interval + 1
    else:
        evals = cell.steps // spec.eval.interval + 2  # step 0, every interval, and the end
    return len(cell.members) * (train + _eval_flops(spec, cell, evals))


def build_plan(spec: SweepSpec) -> Plan:
    """The spec's grid: one cell per (optimizer, size, token budget, batch size), members = that
    optimizer's lrs x seeds."""
    cells: list[Cell] = []
    seen: set[str] = set()
    shapes = [shape_for(size, spec) for size in spec.sizes]
    for opt in spec.optimizer:
        lrs = spec.lr_grid(opt.kind).grid()
        for shape in shapes:
            for tokens in token_budgets(spec, shape.n_params):
                for batch in spec.batch_sizes:
                    cell = make_cell(spec, shape, tokens, batch, lrs, 0, opt.kind)
                    if cell.key not in seen:  # two size entries may resolve to one shape
                        seen.add(cell.key)
                        cells.append(cell)
    separate = [cell_flops(spec, c) for c in cells]
    longest = {key: trunk[-1].key for key, trunk in Plan(spec, tuple(cells)).trunks.items()}
    cost = [f if c.trunk is None or longest[c.trunk] == c.key else cell_flops(spec, c, c.branch_step or 0)
            for c, f in zip(cells, separate)]
    return Plan(spec, tuple(cells), tuple(cost), float(sum(separate)))


def estimate_seconds(plan: Plan, device: str, flops_per_s: float | None = None) -> tuple[float, float]:
    """(seconds, assumed FLOP/s) to train the plan on one ``device`` ("cpu" or "cuda"): its
    model FLOPs at the rate, and on the CPU the start-up and per-step costs measured there.
    Refinement rounds (an optimum on the grid's edge) add cells the plan cannot know of."""
    cuda = device.startswith("cuda")
    rate = flops_per_s or ASSUMED_FLOPS_PER_S["cuda" if cuda else "cpu"]
    seconds = plan.flops / rate
    if not cuda:
        # A branched cell trains only its cooldown past its trunk's branch point; a trunk's
        # longest budget trains the trunk itself.
        ends = {cells[-1].key for cells in plan.trunks.values()}
        trained = {c.key: c.steps if c.trunk is None or c.key in ends else c.steps - (c.branch_step or 0)
                   for c in plan.cells}
        seconds += CPU_START_S + sum(trained[c.key] * (CPU_STEP_S + CPU_STEP_PER_MEMBER_S * len(c.members))
                                     for c in plan.cells)
    return seconds, rate


# -- refinement ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupVerdict:
    """Where a finished group's optimum lies on its searched lr grid."""

    best_lr: float | None  # None when every run diverged
    best_batch: int | None
    best_loss: float | None
    edges: tuple[str, ...]  # fitting.optimum.grid_edges' names, or ("all_diverged",)

    @property
    def lr_edge(self) -> str | None:
        """"low" or "high" when the optimum needs lrs beyond the grid, else None."""
        if "all_diverged" in self.edges or "lr_low" in self.edges:
            return "low"
        if "lr_high" in self.edges:
            return "high"
        return None

    @property
    def batch_edge(self) -> str | None:
        """"low" or "high" when the best batch is the smallest or largest searched, else None."""
        if "batch_low" in self.edges:
            return "low"
        if "batch_high" in self.edges:
            return "high"
        return None


def judge_group(lrs: Sequence[float], batches: Sequence[float], losses: Sequence[float | None]) -> GroupVerdict:
    """The group's best configuration (lr, batch) and the grid edges it touches.

    Seeds of one configuration count by their mean loss, as in the fits. A diverged run counts
    as searched with an infinite loss (and makes its configuration's mean infinite): an optimum
    whose higher neighbours diverged is bracketed from above, not on an edge.
    """
    from hpscale.fitting.optimum import grid_edges
    from hpscale.fitting.runs import RunSet

    if not lrs:
        return GroupVerdict(None, None, None, ("all_diverged",))
    diverged = np.array([v is None for v in losses])
    # One group: N and D play no part here, so both are 1.
    configs = RunSet(n_params=np.ones(len(lrs)), tokens=np.ones(len(lrs)), lr=lrs, batch_tokens=batches,
                     final_loss=np.array([math.nan if v is None else v for v in losses], float),
                     diverged=diverged, names=[str(i) for i in range(len(lrs))]).average_repeats()
    loss = np.where(configs.diverged, math.inf, configs.final_loss)
    if not np.isfinite(loss).any():
        return GroupVerdict(None, None, None, ("all_diverged",))
    best = int(np.argmin(loss))
    edges = grid_edges(configs.lr, configs.batch_tokens, best)
    return GroupVerdict(float(configs.lr[best]), int(configs.batch_tokens[best]), float(loss[best]), edges)


def refinement_lrs(searched: Sequence[float], edge: str, log_step: float, points: int) -> list[float]:
    """``points`` new lrs one grid step apart beyond the ``edge`` ("low"/"high") of ``searched``."""
    if edge == "low":
        start = min(searched)
        return [round_lr(start * math.exp(-log_step * i)) for i in range(1, points + 1)]
    start = max(searched)
    return [round_lr(start * math.exp(log_step * i)) for i in range(1, points + 1)]
