"""Runs with known laws behind them, in hpscale's import format, for the CLI and API tests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from hpscale.fitting.trajectory import MultiPowerLaw
from hpscale.service.runformat import LrSchedule, schedule_lrs

# The laws the synthetic grid is drawn from (a Step Law-like form and a Chinchilla-like loss).
LR = {"a_lr": 2.0, "alpha_lr": -0.7, "beta_lr": 0.3}
BATCH = {"a_b": 0.5, "beta_b": 0.55}
LOSS = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}
SIZES = (1e7, 2e7, 4e7, 8e7)
TOKENS = (2e9, 8e9)


def optimum(n: float, d: float) -> tuple[float, float]:
    lr = LR["a_lr"] * n ** LR["alpha_lr"] * d ** LR["beta_lr"]
    return lr, BATCH["a_b"] * d ** BATCH["beta_b"]


def base_loss(n: float, d: float) -> float:
    return LOSS["E"] + LOSS["A"] / n ** LOSS["alpha"] + LOSS["B"] / d ** LOSS["beta"]


def curve(final: float, steps: int, lr: float, b_over_bcrit: float) -> list[dict[str, Any]]:
    """A loss curve reaching ``final``: L(s) = final + 2 (s_eff^-0.5 - steps_eff^-0.5) with
    s_eff = s / (1 + Bcrit / B) (so steps to a target follow S = S_min (1 + Bcrit / B)); lr
    recorded as a cosine with 5% warmup."""
    k = 1 + 1 / b_over_bcrit
    warm = max(1, steps // 20)
    out = []
    for s in range(0, steps + 1, max(1, steps // 40)):
        lr_s = lr * s / warm if s < warm else lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm))))
        loss = final + 2.0 * ((max(s, 1) / k) ** -0.5 - (steps / k) ** -0.5)
        out.append({"step": s, "lr": lr_s, "loss": loss})
    return out


def grid_records(with_curves: bool = False, edge: bool = False, optimizer: str | None = None,
                 lr_scale: float = 1.0, coupling: float = 0.0) -> list[dict[str, Any]]:
    """Full lr x batch grids (5 x 3 per (N, D) group) around the known optimum; ``edge``
    shifts every lr grid up so that the best run sits on the grid's low edge. ``optimizer``
    names the runs' optimizer (and prefixes their names); its optimal lr is ``lr_scale`` x the
    known one, times (B / B*)^``coupling`` at batch B (the lr-batch exponent)."""
    recs = []
    for n in SIZES:
        for d in TOKENS:
            lr_star, b_star = optimum(n, d)
            lr_star *= lr_scale
            b_crit = 0.5 * b_star
            for i in range(-2, 3):
                for j in (-1, 0, 1):
                    lr = lr_star * 2.0 ** (i + (3 if edge else 0)) * 1.1
                    b = round(b_star * 2.0**j / 1024) * 1024
                    at_b = lr_star * (b / b_star) ** coupling
                    loss = base_loss(n, d) + 0.02 * math.log(lr / at_b) ** 2 + 0.01 * math.log(b / b_star) ** 2
                    rec = {"name": f"{optimizer + '-' if optimizer else ''}n{n:.0e}-d{d:.0e}-i{i}-j{j}", "n_params": n,
                           "tokens": d, "lr": lr, "batch_tokens": b, "final_loss": loss}
                    if optimizer:
                        rec["optimizer"] = optimizer
                    if with_curves:
                        rec["curve"] = curve(loss, int(d / b), lr, b / b_crit)
                    recs.append(rec)
    return recs


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# A multi-power law of the order of the MPL paper's 25M model, and three schedules for it.
TRUE_MPL = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "B": 400.0, "C": 1.5, "beta": 0.5, "gamma": 0.5}
SYNTH = {
    "constant": {"kind": "constant", "total_steps": 8000, "peak_lr": 3e-4, "warmup_steps": 500},
    "cosine": {"kind": "cosine", "total_steps": 8000, "peak_lr": 3e-4, "warmup_steps": 500, "final_lr_ratio": 0.1},
    "step": {"kind": "table", "total_steps": 8000, "warmup_steps": 500,
             "table": [{"step": 1, "lr": 3e-4}, {"step": 5001, "lr": 1e-4}, {"step": 6501, "lr": 3e-5}]},
}


def trajectory_records(with_schedule: bool) -> list[dict[str, Any]]:
    """Three runs of one model whose curves follow ``TRUE_MPL`` under ``SYNTH``'s schedules,
    logged every 250 steps from step 250 (inside warmup) with each logged step's lr, as a
    training log has them; ``with_schedule`` adds the schedule itself (``lr_schedule``)."""
    law = MultiPowerLaw()
    law.coef_ = dict(TRUE_MPL)
    out = []
    for name, sched in SYNTH.items():
        lr = schedule_lrs(TypeAdapter(LrSchedule).validate_python(sched))
        steps = np.arange(500, 8001, 250)
        loss = law.predict(lr, steps)
        points = [{"step": 250, "lr": float(lr[249]), "loss": 5.0}]
        points += [{"step": int(s), "lr": float(lr[s - 1]), "loss": float(v)} for s, v in zip(steps, loss)]
        rec = {"name": name, "n_params": 2e7, "tokens": 8000 * 2.5e5, "final_loss": float(loss[-1]), "curve": points}
        if with_schedule:
            rec["lr_schedule"] = sched
        out.append(rec)
    return out
