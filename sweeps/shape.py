"""A member's shape, size and cost: ``GPTConfig``, non-embedding parameters, training FLOPs.

Torch-free, so that planning a sweep (``hpscale sweep plan``) needs no torch; the model itself
is ``sweeps.model``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpscale.sweeps.errors import TrainError


@dataclass(frozen=True)
class GPTConfig:
    """Shape of one member; every member of a cell has the same one."""

    vocab_size: int = 8192  # the built-in BPE's default: keeps the embedding small next to tiny models
    seq_len: int = 512  # long enough for code context, short enough that attention stays cheap
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4  # head_dim 64: the size flash attention kernels are fastest at
    mlp_ratio: int = 4  # 4 d hidden: with attention's 4 d^2 this is the standard 12 d^2 per layer
    # Untied: the laws we reproduce (Step Law, DeepSeek) were fitted on Llama-style untied
    # models, and untied keeps n_params and the lr response of the output layer separate from
    # the input embedding. Set True for nanoGPT-style weight tying.
    tie_embeddings: bool = False
    rope_base: float = 10000.0  # the RoFormer / Llama default; seq_len here is far below its range
    norm_eps: float = 1e-6  # small: RMSNorm runs in float32 even under bf16 autocast
    init_std: float = 0.02  # GPT-2's; residual output projections get / sqrt(2 n_layers)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise TrainError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise TrainError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise TrainError("head_dim (d_model / n_heads) must be even for rotary positions")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def n_params(config: GPTConfig) -> int:
    """Non-embedding parameters (count): the block matrices only.

    Per layer: attention qkv (3 d^2) + output (d^2) + MLP (2 * mlp_ratio * d^2), which is
    12 * n_layers * d_model^2 for the standard block (mlp_ratio 4). The embedding, the output
    head and the RMSNorm gains (2 d per layer + d) are not counted, following Kaplan et al.
    """
    d = config.d_model
    return config.n_layers * (4 + 2 * config.mlp_ratio) * d * d


def flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs per token of one member (FLOP): forward + backward, attention included.

    6 * (n_params + d * V) for the matrix multiplies, the output head included (the input
    embedding is a lookup, not a multiply), plus 12 * n_layers * seq_len * d for the attention
    scores and the weighted sum (PaLM / nanoGPT convention: the causal mask's saving is not
    subtracted). This is the numerator of MFU.
    """
    d, L, T = config.d_model, config.n_layers, config.seq_len
    return 6.0 * (n_params(config) + d * config.vocab_size) + 12.0 * L * T * d


def config_for_params(
    target_n_params: float,
    vocab_size: int = 8192,
    seq_len: int = 512,
    head_dim: int = 64,
    aspect: float = 64.0,
    tie_embeddings: bool = False,
) -> GPTConfig:
    """Choose d_model, n_layers and n_heads whose n_params is nearest ``target_n_params`` (count).

    Shape matters little for loss at fixed N (Kaplan et al.), so we keep d_model / n_layers near
    ``aspect`` (64 gives d 512 x 8 layers at 25M and d 768 x 12 layers at 85M, GPT-2 small) and
    d_model a multiple of ``head_dim``. Among n_layers around the aspect-ratio guess, the pair
    closest to the target in log space wins; ties go to the aspect ratio.
    """
    if target_n_params <= 0:
        raise TrainError(f"target_n_params must be positive, got {target_n_params}")
    guess = max(1, round((target_n_params / (12 * aspect**2)) ** (1 / 3)))
    best: tuple[float, float, int, int] | None = None
    for n_layers in range(max(1, guess - 2), guess + 3):
        raw = math.sqrt(target_n_params / (12 * n_layers))
        for d in {max(head_dim, math.floor(raw / head_dim) * head_dim),
                  max(head_dim, math.ceil(raw / head_dim) * head_dim)}:
            err = abs(math.log(12 * n_layers * d * d / target_n_params))
            shape = abs(math.log(d / n_layers / aspect))
            key = (round(err, 9), shape, n_layers, d)
            if best is None or key < best:
                best = key
    assert best is not None
    _, _, n_layers, d = best
    return GPTConfig(vocab_size=vocab_size, seq_len=seq_len, d_model=d, n_layers=n_layers,
                     n_heads=d // head_dim, tie_embeddings=tie_embeddings)
