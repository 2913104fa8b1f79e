"""The optimizers of the fused trainer: one update over the stacked [K, P] weights, per member.

Every optimizer here is a function of the model's flat buffers (``sweeps.model``: weights and
gradients are [K, P], member k is row k) and of its own state buffers, with a learning rate per
member ([K, 1]). One call of the function :func:`make_update` returns does a whole step for all
K members: the divergence test, per-member gradient clipping, the optimizer's update, and the
masked write that leaves a diverged member's weights as they were. Compiled, it is a handful of
fused kernels; it never synchronises with the host, so the trainer can replay it inside a CUDA
graph (static shapes, no data-dependent Python branches: "first step" is a ``torch.where`` on
the step counter, not an ``if``).

The registry ``OPTIMIZERS`` maps a kind (the name runs and laws carry) to its update and its
state. The algorithms, as their references define them (``tests/sweeps/test_optim.py`` checks
each against a plain per-tensor implementation, and against ``torch.optim`` where it has one):

- ``adamw``: ``torch.optim.AdamW`` (bias-corrected moments, decoupled decay lr x wd).
- ``lion`` (Chen et al. 2023): u = sign(beta1 m + (1 - beta1) g); w <- w (1 - lr wd) - lr u;
  then m <- beta2 m + (1 - beta2) g.
- ``sgd``: ``torch.optim.SGD`` with momentum (dampening 0, optional Nesterov), L2 decay added
  to the gradient.
- ``sgd_sai`` (Xu et al. 2024, "No More Adam"): at the first step each weight tensor's lr scale
  is fixed to its gradient's ||g|| / (std(g) + eps) (std with Bessel's correction, as
  ``Tensor.std``); buf = g at the first step, then momentum buf + (1 - momentum) g;
  w <- w (1 - lr wd) - lr scale buf.
- ``lamb`` (You et al. 2020): Adam's bias-corrected r = m / (sqrt(v) + eps) + wd w, scaled per
  weight tensor by ||w|| / ||r|| (1 where either norm is 0): w <- w - lr ratio r.
- ``muon`` (Jordan et al. 2024, the reference ``muon.py``): hidden matrices get Nesterov momentum
  orthogonalised by a quintic Newton-Schulz iteration (3.4445, -4.7750, 2.0315), scaled by
  sqrt(max(1, fan_out / fan_in)), with decoupled decay; everything else (embedding, head, norm
  gains) gets AdamW at ``adam_lr_ratio`` x the member's lr.

"Weight tensor" means one named weight of ``sweeps.model.param_layout`` (its block of columns).
Weight decay only ever applies where ``decay_mask`` is 1 (matrices; never the norm gains), for
every kind. Padding columns between blocks hold zeros and stay zero under every update.

Shapes in comments: K members, P flat columns, S weight tensors (blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hpscale.sweeps.errors import TrainError

if TYPE_CHECKING:
    from hpscale.sweeps.model import StackedGPT

# The quintic Newton-Schulz coefficients of the reference Muon: chosen to maximise the slope at
# zero, so that 5 steps bring every singular value near 1 (somewhere in about 0.5-1.5, not
# exactly 1: the reference's note says Muon loses nothing by it).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Named weights that are not "hidden" matrices for Muon: the embedding and the output head.
NOT_HIDDEN = ("wte", "lm_head")


@dataclass(frozen=True)
class Layout:
    """What an update needs to know about the flat [K, P] buffer. Built once per model."""

    decay: Tensor  # [1, P] float: 1 where weight decay applies
    blocks: tuple[tuple[int, int], ...]  # (offset, numel) of every named weight, in layout order
    block_of: Tensor  # [P] int64: the block of each column; padding columns -> S (a dummy block)
    hidden: Tensor  # [1, P] float: 1 on Muon's hidden matrices, 0 elsewhere
    # Muon's hidden matrices grouped by shape: ((rows, cols), (offset, ...)), shapes as stored
    # ([fan_in, fan_out]: the model computes x @ W).
    matrices: tuple[tuple[tuple[int, int], tuple[int, ...]], ...]
    # The Q columns outside the hidden matrices (Muon's AdamW half, padding included): [Q] int64,
    # ascending, and as maximal runs of consecutive columns, (offset, numel), in order.
    outside_cols: Tensor
    outside: tuple[tuple[int, int], ...]

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)


def layout_of(model: StackedGPT) -> Layout:
    """The layout of a ``sweeps.model.StackedGPT`` (its ``specs``, ``n_flat`` and ``decay_mask``)."""
    device = model.flat.device
    block_of = torch.full((model.n_flat,), len(model.specs), dtype=torch.int64)
    hidden = torch.zeros(1, model.n_flat, dtype=torch.float32)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, spec in enumerate(model.specs):
        block_of[spec.offset:spec.offset + spec.numel] = i
        if len(spec.shape) == 2 and spec.name not in NOT_HIDDEN:
            hidden[:, spec.offset:spec.offset + spec.numel] = 1.0
            by_shape.setdefault((int(spec.shape[0]), int(spec.shape[1])), []).append(spec.offset)
    outside_cols = torch.nonzero(hidden[0] == 0).flatten()
    return Layout(
        decay=model.decay_mask, blocks=tuple((s.offset, s.numel) for s in model.specs),
        block_of=block_of.to(device), hidden=hidden.to(device),
        matrices=tuple((shape, tuple(offsets)) for shape, offsets in by_shape.items()),
        outside_cols=outside_cols.to(device), outside=column_runs(outside_cols),
    )


def column_runs(cols: Tensor) -> tuple[tuple[int, int], ...]:
    """Ascending column indices [Q] as maximal runs of consecutive columns: ((offset, numel), ...)."""
    if cols.numel() == 0:
        return ()
    breaks = torch.nonzero(cols[1:] != cols[:-1] + 1).flatten() + 1
    starts = torch.cat([breaks.new_zeros(1), breaks])
    ends = torch.cat([breaks, breaks.new_full((1,), cols.numel())])
    return tuple((int(cols[s]), int(e - s)) for s, e in zip(starts.tolist(), ends.tolist()))


# -- per-block reductions ----------------------------------------------------------------------
def block_reduce(x: Tensor, layout: Layout, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` (a reduction over dim 1) of every block of x [K, P]: [K, S].

    One reduction per block over its own contiguous columns (no atomics, exact per block);
    compiled, these become a few fused reduction kernels, and they replay in a CUDA graph."""
    return torch.stack([fn(x[:, o:o + n]) for o, n in layout.blocks], dim=1)


def per_column(values: Tensor, layout: Layout, padding: float) -> Tensor:
    """Spread per-block values [K, S] over the columns: [K, P] (padding columns get ``padding``)."""
    table = torch.cat([values, torch.full_like(values[:, :1], padding)], dim=1)  # [K, S + 1]
    return table.index_select(1, layout.block_of)


def _norm(x: Tensor) -> Tensor:
    return x.norm(dim=1)


def _std(x: Tensor) -> Tensor:
    return x.std(dim=1)


# -- the updates ---------------------------------------------------------------------------------
# Each takes the weights w [K, P], the clipped gradient g [K, P], the state, the per-member lr
# lr [K, 1] (peak lr x schedule), the step count t (0-d, 1 at the first step), the layout and the
# kind's settings; it updates its state in place and returns the new weights.
def adamw_step(w: Tensor, g: Tensor, state: dict[str, Tensor], lr: Tensor, t: Tensor, layout: Layout,
               beta1: float, beta2: float, eps: float, weight_decay: float) -> Tensor:
    m, v = state["m"], state["v"]
    m.lerp_(g, 1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    update = (m / (1.0 - beta1 ** t)) / ((v / (1.0 - beta2 ** t)).sqrt() + eps)
    return w * (1.0 - lr * weight_decay * layout.decay) - lr * update


def lion_step(w: Tensor, g: Tensor, state: dict[str, Tensor], lr: Tensor, t: Tensor, layout: Layout,
              beta1: float, beta2: float, weight_decay: float) -> Tensor:
    m = state["m"]
    direction = torch.sign(m * beta1 + g * (1.0 - beta1))  # sign(0) = 0: padding stays put
    m.mul_(beta2).add_(g, alpha=1.0 - beta2)  # after the update direction is taken
    return w * (1.0 - lr * weight_decay * layout.decay) - lr * direction


def sgd_step(w: Tensor, g: Tensor, state: dict[str, Tensor], lr: Tensor, t: Tensor, layout: Layout,
             momentum: float, nesterov: bool, weight_decay: float) -> Tensor:
    d = g + weight_decay * layout.decay * w  # torch.optim.SGD's L2 term
    buf = state["buf"]
    buf.mul_(momentum).add_(d)  # buf starts at 0, so the first step's buf is d, as torch's
    step = d + momentum * buf if nesterov else buf
    return w - lr * step


def sgd_sai_step(w: Tensor, g: Tensor, state: dict[str, Tensor], lr: Tensor, t: Tensor, layout: Layout,
                 momentum: float, eps: float, weight_decay: float) -> Tensor:
    first = t == 1.0
    # The scale is measured on the first step's gradient and kept; the reductions run every step
    # (a graph cannot branch on the step) and cost one read of g.
    snr = block_reduce(g, layout, _norm) / (block_reduce(g, layout, _std).nan_to_num() + eps)  # [K, S]
    state["gsnr"].copy_(torch.where(first, snr, state["gsnr"]))
    buf = state["buf"]
    buf.copy_(torch.where(first, g, buf * momentum + g * (1.0 - momentum)))
    scale = per_column(state["gsnr"], layout, 0.0)  # [K, P]
    return w * (1.0 - lr * weight_decay * layout.decay) - lr * scale * buf


def lamb_step(w: Tensor, g: Tensor, state: dict[str, Tensor], lr: Tensor, t: Tensor, layout: Layout,
              beta1: float, beta2: float, eps: float, weight_decay: float) -> Tensor:
    m, v = state["m"], state["v"]
    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    r = (m / (1.0 - beta1 ** t)) / ((v / (1.0 - beta2 ** t)).sqrt() + eps) + weight_decay * layout.decay * w
    w_norm, r_norm = block_reduce(w, layout, _norm), block_reduce(r, layout, _norm)  # [K, S]
    ratio = torch.where((w_norm > 0) & (r_norm > 0), w_norm / r_norm, torch.ones_like(w_norm))
    return w - lr * per_column(ratio, layout, 1.0) * r


def newton_schulz(x: Tensor, steps: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Approximately orthogonalise a batch of matrices [B, r, c] (the reference Muon's
    ``zeropower_via_newtonschulz5``, computed in ``dtype``; bfloat16 there). Returns float32."""
    if steps < 1:  # the normalisation happens in the first step
        raise ValueError(f"newton_schulz needs at least one step, got {steps}")
    a, b, c = NS_COEFFICIENTS
    y = x.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        y = y.mT
    acc = torch.promote_types(y.dtype, torch.float32)  # the polynomial's sums: float32 at least
    eye = torch.eye(y.size(-2), dtype=acc, device=y.device)
    for i in range(steps):
        gram = (y @ y.mT).to(acc)
        if i == 0:
            # The reference first divides y by its Frobenius norm (+ 1e-7) so that its spectral
            # norm is at most 1. That norm is the square root of the Gram matrix's trace, so the
            # first step divides the Gram matrix by its square and the polynomial by it once:
            # the same arithmetic without a pass over y (the largest tensor here) to read its norm
            # and another to read and write it divided. (With the bf16 gather below: Muon's step at
            # d_model 768, batch 8 on an H100 from 69.6 to 68.3 ms, AdamW's 46.2-46.4 ms;
            # benchmarks/optimizers/muon-h100-2026-12-06-4-gram-norm/ab/.)
            inv = 1.0 / (gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(0.0).sqrt() + 1e-7)[..., None, None]
            gram = gram * inv.square()
        g = gram.to(y.dtype)
        # a y + (b gram + c gram^2) y as (a I + b gram + c gram^2) y: plain GEMMs and one
        # elementwise pass over the small Gram matrices. (With the terms as baddbmm's input, each
        # GEMM first copied it, y the largest tensor here: the step at d_model 768, batch 8 took
        # 73.1 ms against 69.5 ms so on an H100.) The three terms are summed in float32 and
        # rounded once: in bf16 each term rounded (a itself to 3.4375) put the result 2.3-2.5% from
        # float32's on random 256-1024 matrices, the reference's own formula 2.4-2.7%.
        poly = a * eye + b * gram + c * (g @ g).to(acc)
        if i == 0:
            poly = poly * inv
        y = poly.to(y.dtype) @ y
    if tall:
        y = y.mT
    return y.float()


def _columns(pieces: dict[int, Tensor], like: Tensor) -> Tensor:
    """A tensor shaped like ``like`` ([K, P]) holding each piece ([K, n]) at its column offset and
    0 elsewhere, built as one concatenation. (Written into a zeroed buffer one slice at a time, the pieces compiled to
    a chain of slice_scatters that inductor fused into the update's one pointwise kernel, each
    element choosing among all 32 slices at d_model 768: that kernel took 30.2 ms a step on an
    H100, AdamW's whole update kernel 5.8 ms; benchmarks/optimizers/muon-h100-2026-12-06-1-baddbmm/.)"""
    (k, width), cols, at = like.shape, [], 0
    for o in sorted(pieces):
        if o > at:
            cols.append(like.new_zeros(k, o - at))
        cols.append(pieces[o])
        at = o + pieces[o].shape[1]
    if at < width:
        cols.append(like.new_zeros(k, width - at))
    return torch.cat(cols, dim=1)


def muon_step(w: Tensor, g: Tensor, state: dict[str, Tensor], lr: Tensor, t: Tensor, layout: Layout,
              momentum: float, nesterov: bool, ns_steps: int, weight_decay: float, adam_lr_ratio: float,
              adam_beta1: float, adam_beta2: float, adam_eps: float, ns_dtype: torch.dtype) -> Tensor:
    m, v = state["m"], state["v"]  # m [K, P]; v [K, Q]: only the AdamW half reads a second moment
    k = w.shape[0]
    hidden = layout.hidden  # [1, P]
    # One momentum buffer for both halves, each column with its own half's decay.
    m.lerp_(g, (1.0 - momentum) * hidden + (1.0 - adam_beta1) * (1.0 - hidden))
    # The second moment on the AdamW half's columns alone (18% of P at d_model 768, 25% at 512):
    # kept over every column, it cost the step a read and a write of a [K, P] buffer, and the
    # update a read of it and of m, each for nothing on the hidden columns.
    outside = layout.outside_cols  # [Q]
    v.lerp_(g.index_select(1, outside).square(), 1.0 - adam_beta2)
    direction = g.lerp(m, momentum) if nesterov else m
    pieces: dict[int, Tensor] = {}  # offset -> [K, numel]: each column run's update, in units of lr
    for (rows, cols), offsets in layout.matrices:
        n = rows * cols
        # Each matrix cast to Newton-Schulz's dtype as it is gathered (its first act): the stack
        # moves half the bytes in bf16.
        mats = torch.stack([direction[:, o:o + n].to(ns_dtype) for o in offsets], dim=1)
        mats = mats.reshape(k * len(offsets), rows, cols)
        # Stored [fan_in, fan_out]: the reference's max(1, rows / cols) of an nn.Linear weight
        # ([fan_out, fan_in]) is max(1, cols / rows) here.
        out = newton_schulz(mats, ns_steps, ns_dtype) * max(1.0, cols / rows) ** 0.5
        out = out.reshape(k, len(offsets), n)
        pieces.update((o, out[:, i]) for i, o in enumerate(offsets))
    # AdamW on the other columns, at adam_lr_ratio x the member's lr: [K, Q].
    adam = (m.index_select(1, outside) / (1.0 - adam_beta1 ** t)) / ((v / (1.0 - adam_beta2 ** t)).sqrt() + adam_eps)
    adam = adam * adam_lr_ratio
    at = 0
    for o, n in layout.outside:
        pieces[o] = adam[:, at:at + n]
        at += n
    update = _columns(pieces, w)  # [K, P]
    # [1, P], per unit of lr. (The hidden matrices all decay, layout.decay being 1 on every matrix.)
    decay = weight_decay * layout.decay * (hidden + adam_lr_ratio * (1.0 - hidden))
    return w * (1.0 - lr * decay) - lr * update


@dataclass(frozen=True)
class Optimizer:
    """One kind: its update, the [K, P] state buffers it keeps, and the settings it reads."""

    step: Callable[..., Tensor]
    state: tuple[str, ...]  # buffers laid out like the weights, zero at the start
    settings: tuple[str, ...]  # fields of the kind's ``sweeps.spec`` entry passed to ``step``


OPTIMIZERS: dict[str, Optimizer] = {
    "adamw": Optimizer(adamw_step, ("m", "v"), ("beta1", "beta2", "eps", "weight_decay")),
    "lion": Optimizer(lion_step, ("m",), ("beta1", "beta2", "weight_decay")),
    "sgd": Optimizer(sgd_step, ("buf",), ("momentum", "nesterov", "weight_decay")),
    "sgd_sai": Optimizer(sgd_sai_step, ("buf",), ("momentum", "eps", "weight_decay")),
    "lamb": Optimizer(lamb_step, ("m", "v"), ("beta1", "beta2", "eps", "weight_decay")),
    "muon": Optimizer(muon_step, ("m",), ("momentum", "nesterov", "ns_steps", "weight_decay", "adam_lr_ratio",
                                              "adam_beta1", "adam_beta2", "adam_eps")),
}


def init_state(kind: str, k: int, layout: Layout, like: Tensor) -> dict[str, Tensor]:
    """Zeroed state buffers of optimizer ``kind`` for K members: those of ``Optimizer.state``
    shaped like ``like`` ([K, P]), SGD-SaI's per-block scale [K, S] and Muon's second moment on
    the columns outside its hidden matrices [K, Q]."""
    state = {name: torch.zeros_like(like) for name in _optimizer(kind).state}
    if kind == "sgd_sai":
        state["gsnr"] = torch.zeros(k, layout.n_blocks, dtype=like.dtype, device=like.device)  # [K, S]
    if kind == "muon":
        state["v"] = like.new_zeros(k, layout.outside_cols.numel())  # [K, Q]: the AdamW half's
    return state


def _optimizer(kind: str) -> Optimizer:
    try:
        return OPTIMIZERS[kind]
    except KeyError:
        raise TrainError(f"unknown optimizer {kind!r}; expected one of {', '.join(OPTIMIZERS)}") from None


def make_update(settings: Any, layout: Layout, max_norm: float, factor: float, ema_decay: float,
                ns_dtype: torch.dtype = torch.float32) -> Callable[..., None]:
    """The whole per-member step of optimizer ``settings.kind`` (a ``sweeps.spec`` optimizer
    entry), as one function for the trainer to call (and compile):

        update(flat, grad, state, lr, mult, active, best, ema, diverged_step, step_t, losses)

    Shapes: flat, grad [K, P]; state as ``init_state``; lr [K] peak lrs; mult 0-d schedule
    multiplier; active (bool), best, ema, diverged_step [K]; step_t 0-d updates done; losses [K]
    this step's train loss per member (from the weights before the update). In place.

    Divergence: a member whose loss is not finite, or whose smoothed loss (decay ``ema_decay``)
    exceeds ``factor`` x its best, is marked diverged (``active`` False, ``diverged_step``) and
    keeps its weights (``torch.where``, not a multiply, keeps its NaNs out). Clipping: each
    member's gradient is scaled to at most ``max_norm`` by its own global norm, its row of
    ``grad`` (0: no clipping), before the optimizer sees it, as ``clip_grad_norm_`` before
    ``optimizer.step()``. ``ns_dtype``: Muon's Newton-Schulz matmuls (bfloat16 under bf16 training).
    """
    opt = _optimizer(settings.kind)
    consts: dict[str, Any] = {name: getattr(settings, name) for name in opt.settings}
    if settings.kind == "muon":
        consts["ns_dtype"] = ns_dtype
    step_fn = opt.step

    def update(flat: Tensor, grad: Tensor, state: dict[str, Tensor], lr: Tensor, mult: Tensor, active: Tensor,
               best: Tensor, ema: Tensor, diverged_step: Tensor, step_t: Tensor, losses: Tensor) -> None:
        smoothed = torch.where(step_t == 0, losses, ema_decay * ema + (1.0 - ema_decay) * losses)  # [K]
        ok = active & torch.isfinite(losses) & (smoothed <= factor * best)  # [K]
        diverged_step.copy_(torch.where(active & ~ok, step_t, diverged_step))
        active.copy_(ok)
        ema.copy_(torch.where(ok, smoothed, ema))
        best.copy_(torch.where(ok, torch.minimum(best, smoothed), best))
        step_t.add_(1.0)
        g = grad
        if max_norm > 0:
            norm = g.square().sum(1, keepdim=True).sqrt()  # [K, 1]: each member's own gradient norm
            g = g * (max_norm / (norm + 1e-6)).clamp(max=1.0)
        new = step_fn(flat, g, state, (lr * mult).unsqueeze(1), step_t, layout, **consts)
        flat.copy_(torch.where(ok.unsqueeze(1), new, flat))

    return update

