"""A GPT whose every weight has a leading K axis: K members (learning rates or seeds) in one model.

nanoGPT-style, one readable file. The K members share every shape and never interact: each
matrix multiply is a ``torch.bmm`` over K, attention is one ``scaled_dot_product_attention``
call over K x batch, and the loss is returned per member, so the gradient of ``loss.sum()``
with respect to member k's weights is exactly the gradient of member k's own loss. Members see
the same batch ([B, T] token ids), or each its own ([K, B, T]: seeds that vary the data order):
the compute is the same either way, since every member runs on its B sequences.

Parameter storage. All weights of all members live in ONE flat float32 tensor ``flat`` of shape
[K, P] (member-major), and each named weight is a strided [K, ...] view of it (``p.data`` points
into ``flat``; ``p.grad`` into a matching ``flat_grad``, where backward accumulates in place). The
optimizer (``sweeps.optim``) then works on [K, P] tensors (weights, gradients, its state: AdamW's
two moments, say) with a few fused kernels, and everything per-member (learning rate, gradient
norm, divergence mask) is a [K, 1] broadcast. Views start on 64-element boundaries so compiled
kernels see aligned inputs. (Measured on an H100: handing the optimizer a list of per-weight
gradients instead saved no step time and made its compilation 3-10x slower; see BENCHMARKS.md.)

Shapes in comments: K members, B sequences, T positions, d = d_model, H heads, hd = d / H,
V = vocab_size, N = B * T.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpscale.sweeps.errors import TrainError
from hpscale.sweeps.shape import GPTConfig

# Gradients accumulate in place into strided views of ``flat_grad``, which autograd's layout
# check reports once per backward; the in-place add is what we want, so silence that one message.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

_ALIGN = 64  # elements: 256 bytes in float32, enough for any vectorised load


@dataclass(frozen=True)
class ParamSpec:
    """Where one named weight lives in the flat [K, P] buffer, and how it is initialised."""

    name: str
    shape: tuple[int, ...]  # per member (the K axis is in front)
    offset: int  # column in the flat buffer
    std: float  # normal init std; 0.0 means "ones" (norm gains)
    decay: bool  # weight decay applies (matrices yes, norm gains no)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def param_layout(config: GPTConfig) -> tuple[list[ParamSpec], int]:
    """The named weights of one member, in a fixed order, and the padded total P (elements)."""
    d, V, L, h = config.d_model, config.vocab_size, config.n_layers, config.mlp_ratio * config.d_model
    std, proj_std = config.init_std, config.init_std / math.sqrt(2 * L)
    entries: list[tuple[str, tuple[int, ...], float, bool]] = [("wte", (V, d), std, True)]
    for i in range(L):
        entries += [
            (f"h{i}_attn_norm", (d,), 0.0, False),
            (f"h{i}_wqkv", (d, 3 * d), std, True),  # x @ wqkv: columns are q | k | v
            (f"h{i}_wo", (d, d), proj_std, True),
            (f"h{i}_mlp_norm", (d,), 0.0, False),
            (f"h{i}_w_fc", (d, h), std, True),
            (f"h{i}_w_proj", (h, d), proj_std, True),
        ]
    entries.append(("norm_f", (d,), 0.0, False))
    if not config.tie_embeddings:
        entries.append(("lm_head", (d, V), std, True))
    specs, offset = [], 0
    for name, shape, s, decay in entries:
        specs.append(ParamSpec(name, shape, offset, s, decay))
        offset += -(-math.prod(shape) // _ALIGN) * _ALIGN
    return specs, offset


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x: [K, N, d], weight: [K, d] -> [K, N, d] in x's dtype.

    Computed in float32 (bf16 loses the mean square), rounded back to x's dtype at the end.
    """
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    # Index the gain to [K, 1, d] here rather than storing it so: compiling K = 1 with a stored
    # [K, 1, d] gain failed in backward on torch 2.11 (DESIGN.md).
    return (xf * weight.unsqueeze(1)).to(x.dtype)


def rotary_tables(seq_len: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin: [T, hd / 2] float32, the rotation angles of every (position, frequency) pair."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [KB, H, T, hd]; rotates the two halves of each head (GPT-NeoX / Llama layout)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)


def block_forward(x: Tensor, attn_norm: Tensor, wqkv: Tensor, wo: Tensor, mlp_norm: Tensor,
                  w_fc: Tensor, w_proj: Tensor, cos: Tensor, sin: Tensor,
                  batch: int, n_heads: int, eps: float) -> Tensor:
    """One pre-norm transformer block for all K members. x: [K, N, d] -> [K, N, d].

    A pure function of its tensors so that ``torch.compile`` compiles it once per shape and
    reuses the code for every layer (regional compilation: a fraction of whole-model compile time).
    """
    K, N, d = x.shape
    T, hd = N // batch, d // n_heads
    h = rms_norm(x, attn_norm, eps)  # [K, N, d]
    qkv = torch.bmm(h, wqkv)  # [K, N, 3d]
    qkv = qkv.view(K * batch, T, 3, n_heads, hd).permute(2, 0, 3, 1, 4)  # [3, KB, H, T, hd]
    q, k, v = qkv.unbind(0)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [KB, H, T, hd]
    y = y.transpose(1, 2).reshape(K, N, d)  # [K, N, d]
    x = x + torch.bmm(y, wo)
    h = rms_norm(x, mlp_norm, eps)
    h = F.gelu(torch.bmm(h, w_fc))  # [K, N, mlp_ratio * d]
    return x + torch.bmm(h, w_proj)


def head_loss(x: Tensor, norm_f: Tensor, w_head: Tensor, targets: Tensor, eps: float) -> Tensor:
    """Final norm, output head and cross-entropy. x: [K, N, d], w_head: [K, d, V], targets: [N]
    (the same for every member) or [K, N] (each member's own).

    Returns the mean loss of each member, [K] float32 (nats/token). Logits are upcast to float32
    for the softmax; compiled, the upcast fuses into the reduction instead of being stored.
    """
    K, N, _ = x.shape
    logits = torch.bmm(rms_norm(x, norm_f, eps), w_head)  # [K, N, V]
    V = logits.shape[-1]
    flat_targets = targets.reshape(-1) if targets.dim() == 2 else targets.repeat(K)  # [K * N]
    loss = F.cross_entropy(logits.float().view(K * N, V), flat_targets, reduction="none")
    return loss.view(K, N).mean(1)


def head_logits(x: Tensor, norm_f: Tensor, w_head: Tensor, eps: float) -> Tensor:
    """x: [K, N, d] -> logits [K, N, V] (for sampling and inspection; training uses head_loss)."""
    return torch.bmm(rms_norm(x, norm_f, eps), w_head)


class StackedGPT(nn.Module):
    """K GPT members of one shape, weights stacked on a leading K axis inside one flat buffer.

    ``seeds[k]`` seeds member k's initialisation (drawn on the CPU, so a member's initial weights
    do not depend on the device, on K, or on the other members): members with equal seeds start
    identical, which is what a learning-rate sweep wants.
    """

    def __init__(self, config: GPTConfig, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        super().__init__()
        if len(seeds) < 1:
            raise TrainError("a cell needs at least one member (seeds is empty)")
        self.config = config
        self.k = len(seeds)
        self.specs, self.n_flat = param_layout(config)
        device = torch.device(device)
        # [K, P]: member-major, so member k's weights (and gradients, and Adam moments) are row k.
        self.flat = torch.zeros(self.k, self.n_flat, dtype=torch.float32, device=device)
        self.flat_grad = torch.zeros_like(self.flat)
        self.decay_mask = torch.zeros(1, self.n_flat, dtype=torch.float32, device=device)  # 1 where decayed
        self.weights = nn.ParameterDict()
        for spec, view, grad in zip(self.specs, self.views_of(self.flat), self.views_of(self.flat_grad)):
            p = nn.Parameter(torch.empty(0, device=device))
            p.data = view  # [K, *shape], row stride P: writes to ``flat`` are writes to the weight
            p.grad = grad  # backward adds into ``flat_grad`` in place (a defined grad is never replaced)
            self.weights[spec.name] = p
            if spec.decay:
                self.decay_mask[:, spec.offset:spec.offset + spec.numel] = 1.0
        self._init_weights(seeds)
        cos, sin = rotary_tables(config.seq_len, config.head_dim, config.rope_base, device)
        self.register_buffer("rope_cos", cos, persistent=False)  # [T, hd / 2]
        self.register_buffer("rope_sin", sin, persistent=False)
        # The residual stream's dtype. bfloat16 under bf16 training (set by sweeps.train): every
        # memory-bound elementwise pass (norms, residual adds, saved activations) then moves half
        # the bytes; norms and the loss still compute in float32, and the weights stay float32.
        self.residual_dtype = torch.float32
        self.block_fn = block_forward  # replaced by a compiled version in sweeps.train on CUDA
        self.head_loss_fn = head_loss

    @torch.no_grad()
    def _init_weights(self, seeds: Sequence[int]) -> None:
        for k, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(int(seed))
            row = torch.zeros(self.n_flat, dtype=torch.float32)
            for spec in self.specs:
                cols = slice(spec.offset, spec.offset + spec.numel)
                if spec.std == 0.0:
                    row[cols] = 1.0
                else:
                    row[cols] = torch.randn(spec.numel, generator=gen) * spec.std
            self.flat[k].copy_(row)

    def views_of(self, buffer: Tensor) -> list[Tensor]:
        """Per-weight [K, *shape] views of a [K, P] buffer laid out like ``flat`` (Adam moments, say)."""
        return [buffer[:, s.offset:s.offset + s.numel].view(self.k, *s.shape) for s in self.specs]

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero ``flat_grad`` in place. The gradient views must stay, so ``set_to_none`` is ignored."""
        self.flat_grad.zero_()

    def parameters_in_order(self) -> list[nn.Parameter]:
        """The weights in layout order (matching ``views_of`` and ``specs``)."""
        return [self.weights[s.name] for s in self.specs]

    def _w(self, name: str) -> Tensor:
        return self.weights[name]

    def hidden(self, idx: Tensor) -> Tensor:
        """idx: [B, T] int64 token ids (the same for every member) or [K, B, T] (each member's own)
        -> final residual [K, B*T, d]."""
        B, T = idx.shape[-2:]
        c = self.config
        if T > c.seq_len:
            raise TrainError(f"sequence of {T} tokens is longer than seq_len {c.seq_len}")
        wte = self._w("wte")  # [K, V, d], a strided view: gathered from, never copied
        if idx.dim() == 3:
            if idx.shape[0] != self.k:
                raise TrainError(f"a batch per member needs {self.k} batches, got {idx.shape[0]}")
            ids = idx.reshape(self.k, B * T, 1).expand(self.k, B * T, wte.shape[-1])
            x = torch.gather(wte, 1, ids).to(self.residual_dtype)  # [K, N, d]
        else:
            x = torch.index_select(wte, 1, idx.reshape(-1)).to(self.residual_dtype)  # [K, N, d]
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for i in range(c.n_layers):
            x = self.block_fn(x, self._w(f"h{i}_attn_norm"), self._w(f"h{i}_wqkv"), self._w(f"h{i}_wo"),
                              self._w(f"h{i}_mlp_norm"), self._w(f"h{i}_w_fc"), self._w(f"h{i}_w_proj"),
                              cos, sin, B, c.n_heads, c.norm_eps)
        return x

    def head_weight(self) -> Tensor:
        """[K, d, V]: the output projection (the transposed embedding when tied)."""
        if self.config.tie_embeddings:
            return self._w("wte").transpose(1, 2)
        return self._w("lm_head")

    def loss(self, tokens: Tensor) -> Tensor:
        """tokens: [B, T + 1] int64 (every member's batch) or [K, B, T + 1] (a batch per member)
        -> mean next-token loss of each member, [K] float32 (nats/token)."""
        idx, targets = tokens[..., :-1], tokens[..., 1:]
        x = self.hidden(idx)
        flat_targets = targets.reshape(self.k, -1) if tokens.dim() == 3 else targets.reshape(-1)
        return self.head_loss_fn(x, self._w("norm_f"), self.head_weight(), flat_targets, self.config.norm_eps)

    def forward(self, idx: Tensor) -> Tensor:
        """idx: [B, T] or [K, B, T] -> logits [K, B, T, V]."""
        B, T = idx.shape[-2:]
        logits = head_logits(self.hidden(idx), self._w("norm_f"), self.head_weight(), self.config.norm_eps)
        return logits.view(self.k, B, T, -1)
