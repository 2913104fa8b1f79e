"""The fused trainer: one step trains the K members of a cell (one learning rate or seed each).

Every member sees the same batches in the same order; members differ only in their learning
rate and initial seed and never interact. Per member: its own learning rate, its own
gradient-norm clipping (the norm over its own row of the flat gradient), and its own divergence
handling (a member whose loss turns NaN/inf, or whose smoothed loss rises above
``divergence_factor`` times its best smoothed loss, is marked diverged and stops updating; the
others go on unaffected).

The optimizer (``sweeps.optim``: AdamW, Lion, SGD with momentum, SGD-SaI, LAMB or Muon, chosen
by ``TrainConfig.optimizer``) works on the model's flat [K, P] buffers (see ``sweeps.model``):
weights, grads and its state (AdamW: two moments) are [K, P] tensors, so the whole update is a
few fused kernels and everything per-member is a [K, 1] broadcast. No host synchronisation
happens inside a step: divergence bookkeeping stays on the device and is read at evaluations.

On CUDA, bf16 autocast and ``torch.compile`` (regional: one transformer block, the head + loss,
and the optimizer update) are on by default, and after a few warm-up steps the whole step
(forward, backward, update, zeroing) is captured once as a CUDA graph and replayed: a small
model's step is hundreds of tiny kernels, and launching them one by one from Python costs more
than running them (BENCHMARKS.md). On the CPU the trainer runs eager float32, and is
deterministic given the seeds and the batches.

Entry points: :func:`train_cell` (a whole run with evaluations and callbacks),
:func:`train_branches` (several schedules sharing their first steps, such as warmup-stable-decay
cooldowns branched off one trunk: each shared step trained once) and :class:`CellTrainer` (one
step at a time, used by the throughput benchmark). A run trained alone is ``train_cell`` with
one learning rate: the same code with K = 1.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from hpscale.fitting.schedules import shared_steps
from hpscale.sweeps.errors import TrainError
from hpscale.sweeps.model import StackedGPT, block_forward, head_loss
from hpscale.sweeps.optim import OPTIMIZERS, init_state, layout_of, make_update
from hpscale.sweeps.shape import GPTConfig
from hpscale.sweeps.spec import AdamWSpec, OptimizerSpec

Status = Literal["running", "done", "diverged"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a cell's training that is shared by its K members."""

    batch_size: int  # sequences per step (every member sees the same ones); tokens = batch_size * seq_len
    total_steps: int
    # The update and its settings: a ``sweeps.spec`` optimizer entry (its kind picks the
    # ``sweeps.optim`` update; its own grad_clip, divergence_factor and lr grid are the sweep's,
    # and reach the trainer through the fields below and the members' lrs).
    optimizer: OptimizerSpec = field(default_factory=AdamWSpec)
    grad_clip: float | None = 1.0  # per-member global-norm clip; None disables it
    eval_interval: int = 100  # steps between validation evaluations (one also runs at step 0 and the end)
    eval_batches: int = 8  # validation batches per evaluation (caller supplies them)
    divergence_factor: float = 2.0  # diverged when the smoothed train loss > factor * its best value
    # Smoothing of the train loss for that test (an exponential moving average with this decay,
    # ~50 steps). Raw per-step losses will not do: one hard batch (a file of hex digits, say)
    # can cost twice the best loss, and it came at the same step for every member of a cell, so
    # a raw test marked whole cells of healthy small-batch runs diverged (VALIDATION.md).
    divergence_ema: float = 0.98
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool | None = None  # None: torch.compile on CUDA only
    cuda_graph: bool | None = None  # None: capture the step as a CUDA graph on CUDA (ignored elsewhere)
    progress_interval: int = 50  # steps between progress callbacks

    def __post_init__(self) -> None:
        for name in ("batch_size", "total_steps", "eval_interval", "eval_batches", "progress_interval"):
            if getattr(self, name) < 1:
                raise TrainError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer.kind not in OPTIMIZERS:
            raise TrainError(f"unknown optimizer {self.optimizer.kind!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise TrainError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.divergence_factor <= 1.0:
            raise TrainError(f"divergence_factor must exceed 1, got {self.divergence_factor}")
        if not 0.0 <= self.divergence_ema < 1.0:
            raise TrainError(f"divergence_ema must lie in [0, 1), got {self.divergence_ema}")


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of one member. Losses in nats/token; None where not finite."""

    step: int  # optimizer steps done
    tokens: int  # training tokens seen by this member
    lr: float  # the member's learning rate at the last step (peak lr x schedule multiplier)
    train_loss: float | None  # mean train loss over the steps since the previous evaluation
    val_loss: float | None


@dataclass(frozen=True)
class EvalEvent:
    """What ``on_eval`` receives at each evaluation: one entry per member in every list."""

    step: int
    tokens: int  # per member
    lr: list[float]
    train_loss: list[float | None]  # None at step 0, and for diverged members
    val_loss: list[float | None]  # None for diverged members
    status: list[Status]  # "running" until the final evaluation, then "done"; "diverged" as soon as it happens
    branches: tuple[int, ...] = (0,)  # train_branches: the schedules whose curves these points belong to


@dataclass(frozen=True)
class Progress:
    """What ``on_progress`` receives: throughput since the start of training."""

    step: int
    total_steps: int
    tokens: int  # per member
    tokens_per_s: float  # member-tokens per second: K x batch tokens per step / step time
    elapsed_s: float


@dataclass
class MemberResult:
    """The outcome of one member of a cell."""

    lr: float  # peak learning rate
    seed: int
    status: Status  # "done" or "diverged"
    final_val_loss: float | None  # validation loss at the last evaluation; None if diverged
    steps: int  # optimizer updates applied (the step it diverged at, if it did)
    tokens: int  # training tokens of the applied updates
    diverged_step: int | None
    curve: list[CurvePoint] = field(default_factory=list)


def _set_recompile_limit(limit: int) -> None:
    # Every (d_model, batch) cell is a new static shape of the same compiled functions: the default
    # limit of 8 would silently drop a long-lived worker back to eager.
    import torch._dynamo as dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, max(limit, getattr(dynamo.config, name)))


class CellTrainer:
    """K members of one shape trained in lock-step; call :meth:`step` once per batch.

    ``lrs[k]`` and ``seeds[k]`` belong to member k. Weights, moments and divergence state live
    on ``device``; nothing here synchronises with the host except :meth:`evaluate` results read
    by the caller.
    """

    def __init__(self, model_config: GPTConfig, train_config: TrainConfig, lrs: Sequence[float],
                 seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        if len(lrs) < 1 or len(lrs) != len(seeds):
            raise TrainError(f"need one seed per learning rate, got {len(lrs)} lrs and {len(seeds)} seeds")
        if not all(math.isfinite(lr) and lr > 0 for lr in lrs):
            raise TrainError(f"learning rates must be positive and finite, got {list(lrs)}")
        self.device = torch.device(device)
        self.model_config, self.config = model_config, train_config
        self.k = len(lrs)
        self.lrs, self.seeds = [float(x) for x in lrs], [int(s) for s in seeds]
        self.model = StackedGPT(model_config, self.seeds, self.device)
        layout = layout_of(self.model)
        # The optimizer's state (mostly [K, P] buffers laid out like the weights, as AdamW's "m" and
        # "v"; ``sweeps.optim.init_state`` says which are not).
        self.opt_state = init_state(train_config.optimizer.kind, self.k, layout, self.model.flat)
        self.lr_t = torch.tensor(self.lrs, dtype=torch.float32, device=self.device)  # [K]
        self.active = torch.ones(self.k, dtype=torch.bool, device=self.device)  # [K] not diverged
        self.ema = torch.zeros(self.k, device=self.device)  # [K] smoothed train loss
        self.best = torch.full((self.k,), math.inf, device=self.device)  # [K] lowest smoothed train loss
        self.diverged_step = torch.full((self.k,), -1.0, device=self.device)  # [K] -1: never
        self.step_t = torch.zeros((), device=self.device)  # updates done (a tensor: no recompiles)
        precision = train_config.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.model.residual_dtype = self.autocast_dtype or torch.float32
        use_compile = train_config.compile if train_config.compile is not None else self.device.type == "cuda"
        c = train_config
        self._eager_update = make_update(c.optimizer, layout, c.grad_clip or 0.0, c.divergence_factor,
                                         c.divergence_ema, ns_dtype=self.autocast_dtype or torch.float32)
        self._update_fn: Callable[..., None] = self._eager_update
        self._train_fns = (block_forward, head_loss)
        self._compiled, self._compile_checked, self._update_checked = use_compile, False, False
        if use_compile:
            _set_recompile_limit(64)
            self._train_fns = (torch.compile(block_forward, fullgraph=True, dynamic=False),
                               torch.compile(head_loss, fullgraph=True, dynamic=False))
            self._update_fn = torch.compile(self._eager_update, fullgraph=True, dynamic=False)
        want_graph = train_config.cuda_graph if train_config.cuda_graph is not None else True
        self._graph = _StepGraph(self) if want_graph and self.device.type == "cuda" else None

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def step(self, tokens: Tensor, lr_multiplier: Tensor | float = 1.0) -> Tensor:
        """Train every member on ``tokens`` ([B, T + 1] int64, on any device) with lr = lrs x multiplier.

        Returns the train loss of each member before the update, [K] float32 on the device
        (nats/token; not synchronised: call ``.tolist()`` only when you need the values). Under
        a CUDA graph the returned tensor is the graph's output buffer, which the next step
        overwrites: use (or clone) it before then.
        """
        if self._graph is not None:
            return self._graph.step(tokens, lr_multiplier)
        return self._step(tokens, lr_multiplier)

    def _step(self, tokens: Tensor, lr_multiplier: Tensor | float) -> Tensor:
        """One eager (possibly compiled) step: forward, backward, update, zero the gradients."""
        tokens = tokens.to(self.device, non_blocking=True)
        if not torch.is_tensor(lr_multiplier):
            lr_multiplier = torch.tensor(float(lr_multiplier), device=self.device)
        if self._compiled and not self._compile_checked:
            losses = self._first_compiled_backward(tokens)
        else:
            losses = self._forward_backward(tokens)
        args = self._update_args(losses, lr_multiplier)
        if self._update_fn is not self._eager_update and not self._update_checked:
            self._update_checked = True
            try:  # compile errors surface before the compiled code touches any state
                self._update_fn(*args)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"torch.compile of the optimizer failed ({type(exc).__name__}); eager update",
                              RuntimeWarning, stacklevel=2)
                self._update_fn = self._eager_update
                self._update_fn(*args)
        else:
            self._update_fn(*args)
        self.model.zero_grad()
        return losses

    def _update_args(self, losses: Tensor, lr_multiplier: Tensor) -> tuple:  # type: ignore[type-arg]
        """The arguments of ``sweeps.optim.make_update``'s step, in its order."""
        return (self.model.flat, self.model.flat_grad, self.opt_state, self.lr_t, lr_multiplier,
                self.active, self.best, self.ema, self.diverged_step, self.step_t, losses)

    def _forward_backward(self, tokens: Tensor) -> Tensor:
        self.model.block_fn, self.model.head_loss_fn = self._train_fns
        with self._autocast():
            losses = self.model.loss(tokens)  # [K]
        losses.sum().backward()  # member k's weights get exactly the gradient of its own loss
        return losses.detach()

    def _first_compiled_backward(self, tokens: Tensor) -> Tensor:
        """The first compiled step; if compilation fails, warn and train eagerly from here on.

        Compiler bugs are version-specific (DESIGN.md: K = 1 failed in backward on torch 2.11);
        a sweep should lose speed, not the run. Nothing is updated before backward completes, so
        zeroing the gradient is enough to retry the same step eagerly.
        """
        self._compile_checked = True
        try:
            return self._forward_backward(tokens)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "use eager"
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:300]}); training eagerly",
                          RuntimeWarning, stacklevel=3)
            self.model.zero_grad()
            self._train_fns = (block_forward, head_loss)
            self._update_fn = self._eager_update
            self._compiled = False
            return self._forward_backward(tokens)

    @torch.no_grad()
    def evaluate(self, batches: Sequence[Tensor]) -> Tensor:
        """Mean loss of each member over ``batches`` (each [B, T + 1]), [K] float32 on the device.

        Runs the uncompiled functions: an inference graph would be one more compilation per
        shape for a step that runs rarely. A member whose validation loss is not finite is
        marked diverged.
        """
        if not batches:
            raise TrainError("evaluation needs at least one validation batch")
        self.model.block_fn, self.model.head_loss_fn = block_forward, head_loss
        total = torch.zeros(self.k, device=self.device)
        with self._autocast():
            for batch in batches:
                total += self.model.loss(batch.to(self.device, non_blocking=True)).float()
        losses = total / len(batches)
        newly = self.active & ~torch.isfinite(losses)
        self.diverged_step.copy_(torch.where(newly, self.step_t, self.diverged_step))
        self.active &= torch.isfinite(losses)
        return losses

    # -- branching (train_branches) ------------------------------------------------------------
    def _state(self) -> list[Tensor]:
        """Every tensor a step may change: the weights, and each tensor the trainer holds as an
        attribute (optimizer moments, divergence state, the step count; constants such as the
        learning rates come along harmlessly). Found, not listed, so that an optimizer keeping
        other state in tensors (or lists or dicts of them) is covered as it stands."""
        found: dict[int, Tensor] = {id(self.model.flat): self.model.flat}
        for value in vars(self).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
            found.update((id(t), t) for t in items if torch.is_tensor(t))
        return list(found.values())

    @torch.no_grad()
    def snapshot(self) -> list[tuple[Tensor, Tensor]]:
        """A copy of the whole training state, on the device: (live tensor, copy) pairs."""
        return [(t, t.clone()) for t in self._state()]

    @torch.no_grad()
    def restore(self, snapshot: list[tuple[Tensor, Tensor]]) -> None:
        """Put a snapshot back, in place: every tensor keeps its address, so compiled code and a
        captured CUDA graph go on reading the restored values."""
        for live, saved in snapshot:
            live.copy_(saved)


class _StepGraph:
    """The trainer's step captured once as a CUDA graph and replayed for every later step.

    The first ``warmup`` steps run normally (they compile, and they are real training steps),
    on a side stream as CUDA graph capture requires; the next step is captured on that stream
    (capture records kernels without running them) and every step from then on, that one
    included, is a replay. The graph reads its batch and lr multiplier from fixed device
    buffers: each step copies the batch into one through a pinned host buffer (an asynchronous
    copy, so the host prepares the next batch while the device trains), and the losses come
    back in a fixed output buffer. Everything else the step touches (weights, moments,
    divergence state) already lives at fixed addresses in the trainer, so evaluations and
    callers see the same tensors as without a graph. The replayed kernels are the ones the
    warm-up ran, in the same order: a step's result is the same with or without the graph
    (a test compares the two on the GPU). If capture fails, the trainer warns and goes on
    without a graph.
    """

    warmup = 3  # eager steps before capture: the compiled functions must not recompile inside it

    def __init__(self, trainer: CellTrainer) -> None:
        # A weak reference: the trainer owns this object, and a reference cycle would keep the
        # weights, moments and the graph's memory pool alive after a cell until the garbage
        # collector ran, while the worker builds the next cell's trainer.
        self.trainer = weakref.proxy(trainer)
        self.stream = torch.cuda.Stream(trainer.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.steps = 0
        self.tokens: Tensor | None = None  # [B, T + 1] int64 on the device, read by the graph
        self.mult = torch.zeros((), dtype=torch.float32, device=trainer.device)
        self.losses: Tensor | None = None  # [K], written by the graph
        self.pinned: list[Tensor] = []  # two host buffers, alternated, and the copy out of each
        self.copied: list[torch.cuda.Event] = []

    def step(self, tokens: Tensor, lr_multiplier: Tensor | float) -> Tensor:
        tr = self.trainer
        if self.failed:
            return tr._step(tokens, lr_multiplier)
        if self.graph is None and self.steps >= self.warmup:
            self._capture(tokens)
        if self.graph is None:
            return self._warmup_step(tokens, lr_multiplier)
        self._load(tokens, lr_multiplier)
        self.graph.replay()
        self.steps += 1
        assert self.losses is not None
        return self.losses

    def _warmup_step(self, tokens: Tensor, lr_multiplier: Tensor | float) -> Tensor:
        main = torch.cuda.current_stream(self.trainer.device)
        # The multiplier goes through the graph's own buffer here too: the compiled update then
        # sees the same input at capture as in warm-up, and is not recompiled inside the capture.
        self._set_mult(lr_multiplier)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            losses = self.trainer._step(tokens, self.mult)
        main.wait_stream(self.stream)
        losses.record_stream(main)  # made on the side stream, used on the main one
        self.steps += 1
        return losses

    def _load(self, tokens: Tensor, lr_multiplier: Tensor | float) -> None:
        """Copy this step's batch and multiplier into the graph's input buffers (stream-ordered)."""
        assert self.tokens is not None
        if tokens.device.type == "cpu":
            i = self.steps % 2
            self.copied[i].synchronize()  # the copy out of this buffer two steps ago is done
            self.pinned[i].copy_(tokens)
            self.tokens.copy_(self.pinned[i], non_blocking=True)
            self.copied[i].record()
        else:
            self.tokens.copy_(tokens)
        self._set_mult(lr_multiplier)

    def _set_mult(self, lr_multiplier: Tensor | float) -> None:
        if torch.is_tensor(lr_multiplier):
            self.mult.copy_(lr_multiplier)
        else:
            self.mult.fill_(float(lr_multiplier))

    def _capture(self, tokens: Tensor) -> None:
        tr = self.trainer
        self.tokens = torch.empty(tokens.shape, dtype=torch.int64, device=tr.device)
        self.pinned = [torch.empty(tokens.shape, dtype=torch.int64).pin_memory() for _ in range(2)]
        self.copied = [torch.cuda.Event() for _ in range(2)]
        for ev in self.copied:
            ev.record()
        torch.cuda.current_stream(tr.device).synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                losses = tr._forward_backward(self.tokens)
                tr._update_fn(*tr._update_args(losses, self.mult))
                tr.model.zero_grad()
        except Exception as exc:  # noqa: BLE001 - any capture failure means "no graph"
            warnings.warn(f"CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:300]}); "
                          "training without a graph", RuntimeWarning, stacklevel=3)
            self.failed = True
            self.tokens = None
            torch.cuda.synchronize(tr.device)
            return
        self.graph, self.losses = graph, losses


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def train_cell(
    model_config: GPTConfig,
    train_config: TrainConfig,
    lrs: Sequence[float],
    lr_schedule: Sequence[float] | np.ndarray | Tensor,
    train_batches: Callable[[int], Tensor],
    val_batches: Sequence[Tensor],
    seeds: int | Sequence[int] = 0,
    device: torch.device | str = "cpu",
    on_eval: Callable[[EvalEvent], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[MemberResult]:
    """Train the K = len(lrs) members of one cell together and return one result per member.

    lrs: peak learning rates, one per member. lr_schedule: the multiplier of every step,
    length ``train_config.total_steps`` (member k's lr at step s is lrs[k] * lr_schedule[s]).
    train_batches(step) -> [B, T + 1] int64 tokens for that step (the same for every member;
    ``sweeps.data.BatchSampler`` is such a callable). val_batches: the fixed validation batches
    evaluated at step 0, every ``eval_interval`` steps and at the end. seeds: one per member,
    or one int for all (an lr sweep starts every member from the same weights).
    ``on_eval(EvalEvent)`` runs at each evaluation (write curve points there);
    ``on_progress(Progress)`` every ``progress_interval`` steps. Training stops early if every
    member has diverged.
    """
    schedule = _as_schedule(lr_schedule)
    if schedule.shape != (train_config.total_steps,):
        raise TrainError(f"lr_schedule has shape {schedule.shape}, expected ({train_config.total_steps},)")
    return train_branches(model_config, train_config, lrs, [schedule], train_batches, val_batches, seeds, device,
                          on_eval, on_progress)[0]


def _as_schedule(lr_schedule: Sequence[float] | np.ndarray | Tensor) -> np.ndarray:
    schedule = np.asarray(lr_schedule.cpu() if torch.is_tensor(lr_schedule) else lr_schedule, dtype=np.float64)
    if schedule.ndim != 1 or schedule.size < 1:
        raise TrainError(f"an lr schedule is one multiplier per step, got shape {schedule.shape}")
    if not np.all(np.isfinite(schedule)) or np.any(schedule < 0):
        raise TrainError("lr_schedule multipliers must be finite and >= 0")
    return schedule


# Branching (many token budgets from one run, e.g. warmup-stable-decay cooldowns off one trunk)
# is "snapshot and restore", not "a branch is more members": at a branch point the trainer
# copies its whole state aside (on the device), trains the branch's cooldown with the same
# members, then copies the state back and goes on along the trunk. Both do the same arithmetic;
# more members would only fuse a cooldown's steps with the trunk's (helping launch-bound small
# cells somewhat) but would change K while the cell trains: a recompile and a new CUDA graph per
# K, twice the activation memory, and masked members when branches do not overlap. Snapshot and
# restore keeps every tensor's shape and address, so the compiled functions and the captured
# CUDA graph replay unchanged, a branch runs the very kernels a separate run of its budget
# would (bitwise equal on the CPU, tested), and the extra memory is one copy of the weights
# and optimizer state. benchmarks/wsd_branches.py measures what it saves.
def train_branches(
    model_config: GPTConfig,
    train_config: TrainConfig,
    lrs: Sequence[float],
    schedules: Sequence[Sequence[float] | np.ndarray | Tensor],
    train_batches: Callable[[int], Tensor],
    val_batches: Sequence[Tensor],
    seeds: int | Sequence[int] = 0,
    device: torch.device | str = "cpu",
    on_eval: Callable[[EvalEvent], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_result: Callable[[int, list[MemberResult]], None] | None = None,
) -> list[list[MemberResult]]:
    """Train the K members of one cell on several lr schedules that share their first steps;
    return, per schedule, one result per member: what ``train_cell`` gives for each alone.

    The longest schedule is the trunk line (the last of equally long ones). Every other one
    shares with it its longest common prefix of bitwise-equal multipliers: those steps are
    trained once. At the end of the prefix the trainer snapshots its state (weights, optimizer
    and divergence state, the running train loss), trains the schedule's own remaining steps,
    evaluates, reports, and restores the snapshot to go on along the trunk. Step s of any
    schedule trains on ``train_batches(s)``, and each schedule is evaluated where it would be
    alone (step 0, every ``eval_interval`` steps, its last step), so a branch's curve is the
    shared trunk points followed by its own. Schedule lengths are their step counts
    (``train_config.total_steps`` is not used here).

    ``EvalEvent.branches`` names the schedules (indices into ``schedules``) an evaluation's
    points belong to. ``on_result(i, results)`` runs as soon as schedule i is finished, before
    training goes on: a caller that stores it then loses nothing of it if training later dies.
    Progress counts every step trained, trunk and branches together.
    """
    cfg = train_config
    if not schedules:
        raise TrainError("train_branches needs at least one lr schedule")
    scheds = [_as_schedule(s) for s in schedules]
    seed_list = [int(seeds)] * len(lrs) if isinstance(seeds, int) else [int(s) for s in seeds]
    val = list(val_batches)[: cfg.eval_batches]
    trainer = CellTrainer(model_config, cfg, lrs, seed_list, device)
    n = len(scheds)
    main = max(range(n), key=lambda i: (scheds[i].size, i))
    last = scheds[main].size
    shared = [shared_steps(s, scheds[main]) for s in scheds]  # shared[main] == last
    sched_t = [torch.tensor(s, dtype=torch.float32, device=trainer.device) for s in scheds]  # [S_i] each
    leaving: dict[int, list[int]] = {}  # trunk step -> schedules that leave the trunk after it
    for i in sorted(range(n), key=lambda i: (scheds[i].size, i)):
        if i != main:
            leaving.setdefault(shared[i], []).append(i)
    tokens_per_step = cfg.batch_size * model_config.seq_len
    total_steps = last + sum(scheds[i].size - shared[i] for i in range(n) if i != main)
    results = [[MemberResult(lr=lr, seed=s, status="done", final_val_loss=None, steps=0, tokens=0,
                             diverged_step=None) for lr, s in zip(trainer.lrs, seed_list)] for _ in range(n)]
    finished: set[int] = set()
    train_sum = torch.zeros(trainer.k, device=trainer.device)
    since = 0  # steps summed in train_sum
    ran, start = 0, time.perf_counter()  # steps trained so far, every line together

    def evaluate(step: int, final: bool, branches: list[int], schedule: np.ndarray) -> bool:
        """Evaluate, record into ``branches``' curves, call back; True when every member has diverged."""
        nonlocal since
        val_loss = trainer.evaluate(val).tolist()
        train_loss = (train_sum / since).tolist() if since else [math.nan] * trainer.k
        active = trainer.active.tolist()
        mult = float(schedule[max(step - 1, 0)])
        event = EvalEvent(step=step, tokens=step * tokens_per_step, lr=[lr * mult for lr in trainer.lrs],
                          train_loss=[], val_loss=[], status=[], branches=tuple(branches))
        for k in range(trainer.k):
            alive = active[k]
            tl = _finite_or_none(train_loss[k]) if alive else None
            vl = _finite_or_none(val_loss[k]) if alive else None
            status: Status = ("done" if final else "running") if alive else "diverged"
            event.train_loss.append(tl)
            event.val_loss.append(vl)
            event.status.append(status)
            if alive:
                for i in branches:
                    results[i][k].curve.append(CurvePoint(step, step * tokens_per_step, event.lr[k], tl, vl))
        if on_eval is not None:
            on_eval(event)
        train_sum.zero_()
        since = 0
        return not any(active)

    def train_step(schedule: Tensor, step: int) -> None:
        """One update with the multiplier of ``step`` (0-based) of ``schedule``, on that step's batch."""
        nonlocal since, ran
        losses = trainer.step(train_batches(step), schedule[step])
        train_sum.add_(torch.where(torch.isfinite(losses), losses, 0.0))
        since += 1
        ran += 1
        if on_progress is not None and (ran % cfg.progress_interval == 0 or ran == total_steps):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            elapsed = time.perf_counter() - start
            on_progress(Progress(ran, total_steps, ran * tokens_per_step,
                                 trainer.k * ran * tokens_per_step / max(elapsed, 1e-9), elapsed))

    def finish(i: int, done: int) -> None:
        """Schedule i ends after ``done`` of its steps: its results, reported."""
        diverged_at = trainer.diverged_step.tolist()
        active = trainer.active.tolist()
        for k, res in enumerate(results[i]):
            if active[k]:
                res.status, res.steps = "done", done
                res.final_val_loss = res.curve[-1].val_loss if res.curve else None
            else:
                res.status, res.final_val_loss = "diverged", None
                res.diverged_step = int(diverged_at[k])
                res.steps = int(diverged_at[k])
            res.tokens = res.steps * tokens_per_step
        finished.add(i)
        if on_result is not None:
            on_result(i, results[i])

    def branch(i: int) -> None:
        """Schedule i's own steps after the trunk's, then the trunk's state back."""
        nonlocal since
        saved, saved_sum, saved_since = trainer.snapshot(), train_sum.clone(), since
        done, size, all_diverged = shared[i], scheds[i].size, False
        if done == 0:  # it shares no step: its own step-0 point (the trunk's has another lr)
            all_diverged = evaluate(0, final=False, branches=[i], schedule=scheds[i])
        if done == size:  # no steps of its own: its final evaluation is here
            evaluate(done, final=True, branches=[i], schedule=scheds[i])
        while done < size and not all_diverged:
            train_step(sched_t[i], done)
            done += 1
            if done % cfg.eval_interval == 0 or done == size:
                all_diverged = evaluate(done, final=done == size, branches=[i], schedule=scheds[i])
        finish(i, done)
        trainer.restore(saved)
        train_sum.copy_(saved_sum)
        since = saved_since

    def on_trunk(step: int) -> list[int]:
        """The schedules whose curves a trunk evaluation at ``step`` belongs to."""
        return [i for i in range(n) if i not in finished and step <= shared[i]
                and (i == main or step < scheds[i].size) and (step > 0 or shared[i] > 0 or i == main)]

    done = 0
    all_diverged = evaluate(0, final=False, branches=on_trunk(0), schedule=scheds[main])
    for i in leaving.get(0, []):
        if not all_diverged:
            branch(i)
    while done < last and not all_diverged:
        train_step(sched_t[main], done)
        done += 1
        here = leaving.get(done, [])
        for i in here:  # budgets that end on the trunk: evaluated before the trunk's evaluation resets the train loss
            if scheds[i].size == done:
                branch(i)
        if done % cfg.eval_interval == 0 or done == last:
            all_diverged = evaluate(done, final=done == last, branches=on_trunk(done), schedule=scheds[main])
        for i in here:
            if scheds[i].size > done and not all_diverged:
                branch(i)
    for i in range(n):  # stopped early (every member diverged): the rest ends here, as each would alone
        if i != main and i not in finished:
            finish(i, done)
    finish(main, done)
    return results
