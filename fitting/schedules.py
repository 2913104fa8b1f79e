"""Per-step learning-rate schedules, shared by the trainer (sweeps) and the trajectory laws.

``lr_schedule`` returns an array of ``total_steps`` values: element i is the learning rate of
optimizer step i + 1 (steps are counted from 1, so the loss logged "at step s" was reached
after updates with lr[0] .. lr[s - 1]). Warmup is linear from 0: step s <= warmup_steps uses
peak_lr * s / warmup_steps, so the last warmup step reaches the peak.

Kinds (decay runs over the steps after warmup):
- ``constant``: the peak after warmup.
- ``cosine``: half cosine from the peak to final_lr_ratio * peak at the last step.
- ``linear``: straight line from the peak to final_lr_ratio * peak.
- ``wsd``: warmup-stable-decay: the peak until the cooldown, which takes the last
  cooldown_fraction of all steps and decays linearly or exponentially (``decay``) to
  final_lr_ratio * peak.
- ``table``: step-wise; ``table`` lists (first_step, lr) pairs, each lr holding from its step
  until the next entry; warmup, when given, scales the table's values over the first steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KINDS: tuple[str, ...] = ("constant", "cosine", "linear", "wsd", "table")


def lr_schedule(
    kind: str,
    total_steps: int,
    peak_lr: float,
    warmup_steps: int = 0,
    final_lr_ratio: float = 0.1,
    cooldown_fraction: float = 0.2,
    decay: str = "linear",
    table: Sequence[tuple[int, float]] | None = None,
    at: np.ndarray | None = None,
) -> np.ndarray:
    """The learning rate of every step, shape (total_steps,); with ``at``, of those (1-based)
    steps only, so that a long schedule is read without building it. See the module doc."""
    if kind not in KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {KINDS}")
    if total_steps < 1:
        raise ValueError("total_steps must be >= 1")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError("warmup_steps must lie in [0, total_steps]")
    if peak_lr <= 0 or final_lr_ratio < 0:
        raise ValueError("peak_lr must be > 0 and final_lr_ratio >= 0")
    if at is None:
        steps = np.arange(1, total_steps + 1, dtype=float)
    else:
        steps = np.asarray(at, dtype=float)
        if steps.ndim != 1 or (steps.size and (steps.min() < 1 or steps.max() > total_steps)):
            raise ValueError(f"steps to read must lie in 1..{total_steps}")
    final = peak_lr * final_lr_ratio
    # Decay progress in [0, 1] over the post-warmup steps: 0 at the first step after warmup
    # (which uses the peak), 1 at the last step (which uses the final lr).
    span = max(total_steps - warmup_steps, 1)
    progress = np.clip((steps - warmup_steps) / span, 0.0, 1.0)
    if kind == "constant":
        lr = np.full(steps.size, peak_lr)
    elif kind == "cosine":
        lr = final + (peak_lr - final) * 0.5 * (1.0 + np.cos(np.pi * progress))
    elif kind == "linear":
        lr = peak_lr - (peak_lr - final) * progress
    elif kind == "wsd":
        if not 0 < cooldown_fraction <= 1:
            raise ValueError("cooldown_fraction must lie in (0, 1]")
        if decay not in ("linear", "exponential"):
            raise ValueError("decay must be 'linear' or 'exponential'")
        start = total_steps - cooldown_fraction * total_steps
        q = np.clip((steps - start) / (total_steps - start), 0.0, 1.0)
        if decay == "linear":
            lr = peak_lr - (peak_lr - final) * q
        else:
            if final_lr_ratio <= 0:
                raise ValueError("exponential decay needs final_lr_ratio > 0")
            lr = peak_lr * final_lr_ratio ** q
    else:
        if not table:
            raise ValueError("kind 'table' needs table=[(first_step, lr), ...]")
        entries = sorted((int(s), float(v)) for s, v in table)
        if entries[0][0] > 1 or any(v < 0 for _, v in entries):
            raise ValueError("the table must start at step 1 (or earlier) and hold lr >= 0")
        firsts = np.array([s for s, _ in entries])
        values = np.array([v for _, v in entries])
        lr = values[np.searchsorted(firsts, steps, side="right") - 1]
    if warmup_steps > 0:
        warm = steps <= warmup_steps
        base = lr[warm] if kind == "table" else peak_lr
        lr = lr.copy()
        lr[warm] = base * (steps[warm] / warmup_steps)
    return lr.astype(float)


def shared_steps(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading steps two per-step schedules share exactly (bitwise-equal values): the
    steps a run branched off the other trains in common with it."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = min(a.size, b.size)
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def infer_warmup(lr: np.ndarray) -> int:
    """Warmup length of a per-step schedule: the steps before lr first reaches its maximum
    (0 when it starts at the maximum)."""
    lr = np.asarray(lr, dtype=float)
    first_max = int(np.argmax(lr >= lr.max() * (1 - 1e-12)))
    return first_max + 1 if first_max > 0 else 0
