"""Coverage of ``fitting.validate.seed_regret``'s 95% interval on synthetic held-out grids.

A held-out lr line like run 4's (7 lrs in steps of 2^0.5 to 2^2 around the best, plus the best lr
at twice the batch), each configuration trained with ``--seeds`` seeds whose final losses carry
relative noise ``--noise``; the true landscape is L = 3 (1 + 0.01 log2(lr / lr*)^2), 0.4% worse at
twice the batch. For recommendations at lr*, sqrt(2) lr* and 2 lr* (true regret 0, 0.25%, 1%) the
table gives how often the interval holds the true regret, its mean width, and the mean absolute
error of the point estimate, over ``--trials`` grids. Prints a markdown table (BENCHMARKS.md).

    python benchmarks/seed_regret_coverage.py --trials 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

from hpscale.fitting.runs import RunSet  # noqa: E402
from hpscale.fitting.validate import seed_regret  # noqa: E402

LR_STAR, BATCH = 0.01, 65536.0


def grid(noise: float, seeds: int, rng: np.random.Generator) -> RunSet:
    """One synthetic held-out grid: 8 configurations x ``seeds`` runs."""
    cfg = [(LR_STAR * 2.0**k, BATCH) for k in (-2, -1, -0.5, 0, 0.5, 1, 2)] + [(LR_STAR, 2 * BATCH)]
    lr, b, loss = [], [], []
    for c_lr, c_b in cfg:
        true = 3.0 * (1 + 0.01 * np.log2(c_lr / LR_STAR) ** 2) * (1.004 if c_b > BATCH else 1.0)
        for _ in range(seeds):
            lr.append(c_lr), b.append(c_b), loss.append(true * (1 + noise * rng.standard_normal()))
    n = len(lr)
    return RunSet(n_params=np.full(n, 4.7e6), tokens=np.full(n, 4.7e7), lr=lr, batch_tokens=b, final_loss=loss,
                  diverged=np.zeros(n, bool), names=[f"r{i}" for i in range(n)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=300, help="synthetic grids per row (default 300)")
    p.add_argument("--noises", default="0.002,0.005,0.01", help="relative seed noise values (default 0.002,0.005,0.01)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples per interval (default 1000)")
    args = p.parse_args()
    noises = [float(v) for v in args.noises.split(",") if v.strip()]
    if args.trials < 1 or args.seeds < 2 or args.bootstrap < 1 or not noises or min(noises) <= 0:
        p.error("--trials and --bootstrap must be >= 1, --seeds >= 2, noises > 0")
    t0 = time.time()
    print(f"seed_regret: {args.trials} grids per row, 8 configurations x {args.seeds} seeds, "
          f"{args.bootstrap} bootstrap samples\n")
    print("| seed noise | recommendation | true regret | coverage of 95% interval | mean width | mean abs error |")
    print("|---|---|---|---|---|---|")
    for noise in noises:
        for k, truth in ((0.0, 0.0), (0.5, 0.0025), (1.0, 0.01)):
            rng = np.random.default_rng(1000 + int(noise * 1e4))
            inside, widths, errors = 0, [], []
            for _ in range(args.trials):
                r = seed_regret(grid(noise, args.seeds, rng), LR_STAR * 2.0**k, BATCH, n_bootstrap=args.bootstrap)
                lo, hi = r["interval"]
                inside += lo - 1e-12 <= truth <= hi + 1e-12
                widths.append(hi - lo)
                errors.append(abs(r["regret"] - truth))
            print(f"| {100 * noise:.1f}% | {2.0**k:.3g} lr* | {100 * truth:.2f}% | {100 * inside / args.trials:.1f}% | "
                  f"{100 * np.mean(widths):.2f}% | {100 * np.mean(errors):.2f}% |")
    print(f"\n{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
