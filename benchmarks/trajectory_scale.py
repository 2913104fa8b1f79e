"""Trajectory laws at real lengths: predicting a 1,000,000-step schedule and fitting on curves
of 100,000 steps, with seconds and peak memory.

Usage: python benchmarks/trajectory_scale.py [--steps 1000000] [--fit-steps 100000] [--every 100]

The curves are synthetic, drawn from known laws (a multi-power law of the order of the MPL
paper's 25M model; a momentum law), so each fit also reports how far it lands from the truth.
Seconds are wall clock and process CPU of one call; peak memory is what ``tracemalloc`` saw
numpy and Python allocate during a second, traced call (the first runs untraced).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

import numpy as np  # noqa: E402

from hpscale.fitting.schedules import lr_schedule  # noqa: E402
from hpscale.fitting.trajectory import LossCurve, MomentumLaw, MultiPowerLaw  # noqa: E402

MPL = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "B": 450.0, "C": 1.5, "beta": 0.5, "gamma": 0.5}
MOMENTUM = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "C": 1.2, "lam": 0.998}
PEAK = 3e-4


def known(cls: type, coef: dict[str, float], **settings: Any) -> Any:
    law = cls(**settings)
    law.coef_ = dict(coef)
    return law


def measure(fn: Callable[[], Any]) -> tuple[float, float, float, Any]:
    """(wall s, CPU s, peak MiB, result) of fn(); the peak from a second, traced call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return wall, cpu, peak, out


def schedules(total: int, warmup: int) -> dict[str, np.ndarray]:
    return {
        "constant": lr_schedule("constant", total, PEAK, warmup),
        "cosine": lr_schedule("cosine", total, PEAK, warmup, final_lr_ratio=0.1),
        "wsd": lr_schedule("wsd", total, PEAK, warmup, final_lr_ratio=0.1, cooldown_fraction=0.2, decay="exponential"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000, help="length of the predicted schedule")
    parser.add_argument("--fit-steps", type=int, default=100_000, help="length of each fitted curve")
    parser.add_argument("--every", type=int, default=100, help="the fitted curves are logged every this many steps")
    args = parser.parse_args()

    rows: list[list[str]] = []
    total, warmup = args.steps, args.steps // 50
    lr = lr_schedule("cosine", total, PEAK, warmup, final_lr_ratio=0.1)
    cases = [
        ("multi-power law", known(MultiPowerLaw, MPL), 1),
        ("multi-power law", known(MultiPowerLaw, MPL), 100),
        ("momentum law", known(MomentumLaw, MOMENTUM), 1),
    ]
    for label, law, every in cases:
        steps = np.arange(warmup, total + 1, every)
        wall, cpu, peak, loss = measure(lambda law=law, steps=steps: law.predict(lr, steps, warmup))
        rows.append([f"predict, {label}", f"cosine, {total:,} steps", f"{steps.size:,} (every {every})",
                     f"{wall:.2f}", f"{cpu:.2f}", f"{peak:.0f}", f"final loss {loss[-1]:.4f}"])

    total, warmup = args.fit_steps, args.fit_steps // 50
    steps = np.arange(warmup, total + 1, args.every)
    scheds = schedules(total, warmup)
    for label, cls, coef, settings in (
        ("multi-power law (bins of 16 steps, the default)", MultiPowerLaw, MPL, {}),
        ("multi-power law (exact sum, bin_width=1)", MultiPowerLaw, MPL, {"bin_width": 1}),
        ("momentum law", MomentumLaw, MOMENTUM, {}),
    ):
        truth = known(cls, coef, bin_width=1) if cls is MultiPowerLaw else known(cls, coef)
        curves = [LossCurve(name, lr, steps, truth.predict(lr, steps, warmup), warmup) for name, lr in scheds.items()]
        wall, cpu, peak, law = measure(lambda cls=cls, settings=settings, curves=curves: cls(**settings).fit(curves))
        worst = max(abs(law.coef_[k] / v - 1) for k, v in coef.items())
        rows.append([f"fit, {label}", f"3 curves x {total:,} steps (constant, cosine, wsd)",
                     f"{3 * steps.size:,} (every {args.every})", f"{wall:.2f}", f"{cpu:.2f}", f"{peak:.0f}",
                     f"worst coefficient error {100 * worst:.3f}%"])

    header = ["what", "schedule", "points evaluated", "wall s", "CPU s", "peak MiB (tracemalloc)", "check"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
