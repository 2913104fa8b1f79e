"""How often the critical-batch exponent's interval, and the lr-batch exponent's, cover the truth.

Synthetic data with a known answer, many trials per row; prints two markdown tables
(BENCHMARKS.md records them):

1. Critical batch (``fitting.critical``): targets of S = S_min (1 + B_crit / B) with
   B_crit = 1e3 N^0.5 tokens, batches spread from B_crit / 8 to 4 B_crit, log-normal noise on
   the steps; the interval of p (true 0.5) from the bootstrap over targets and residuals.
2. lr-batch exponent (``fitting.coupling``): groups whose lr* = 0.3 N^-0.5 (B / 2^16)^k, a loss
   bowl in log lr with multiplicative noise; the lr grid either centred on each cell's optimum
   (9 points) or one grid of 5 points per group centred on the middle batch, where the extreme
   batches' best lr sits on the grid's edge (the fit then warns); the tilt uses those runs too.

    python benchmarks/interval_coverage.py [--trials 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

from hpscale.fitting.coupling import LrBatchCoupling  # noqa: E402
from hpscale.fitting.critical import CriticalBatchLaw  # noqa: E402
from hpscale.fitting.runs import RunSet  # noqa: E402


def critical_row(batches: int, targets: int, noise: float, trials: int) -> list[str]:
    rng = np.random.default_rng(1)
    hit, width = 0, []
    for trial in range(trials):
        n, b, s, t = [], [], [], []
        for i, size in enumerate(np.geomspace(1e7, 1e9, targets)):
            b_crit = 1e3 * size**0.5
            for batch in np.geomspace(b_crit / 8, b_crit * 4, batches):
                n.append(size)
                b.append(batch)
                t.append(3.0 - 0.1 * i)
                s.append(1e3 * (1 + b_crit / batch) * np.exp(rng.normal(0, noise)))
        law = CriticalBatchLaw(n_bootstrap=300, seed=trial).fit(np.array(n), np.array(t), np.array(b), np.array(s))
        lo, hi = law.intervals_["p"]
        hit += lo <= 0.5 <= hi
        width.append(hi - lo)
    return [str(targets), str(batches), f"{100 * noise:.0f}%", str(trials), f"{hit / trials:.0%}",
            f"{np.median(width):.3f}"]


def coupling_runs(k: float, centred: bool, noise: float, rng: np.random.Generator) -> RunSet:
    rows = []
    for n in (1e6, 4e6, 1.6e7):
        for d in (2e8, 8e8):
            centre = 0.3 * n**-0.5
            for b in (2**14, 2**15, 2**16, 2**17, 2**18):
                lr_star = centre * (b / 2**16) ** k
                # The centred grid: 9 lrs in sqrt(2) steps around this cell's optimum; the fixed one:
                # 5 lrs around the group's middle batch, whatever the batch.
                middle = lr_star if centred else centre
                grid = middle * 2.0 ** (np.arange(-4, 5) / 2 if centred else np.arange(-2, 3) / 2)
                for lr in grid:
                    loss = (2.0 + 30 / n**0.3 + 0.05 * np.log(b) + 0.03 * np.log(lr / lr_star) ** 2)
                    rows.append({"name": f"{n:g}-{d:g}-{b}-{lr:.5g}", "n_params": n, "tokens": d, "lr": lr,
                                 "batch_tokens": float(b), "final_loss": loss * (1 + noise * rng.standard_normal())})
    return RunSet.from_records(rows)


def coupling_row(k: float, centred: bool, noise: float, trials: int) -> list[str]:
    rng = np.random.default_rng(2)
    est, hit, warned = [], 0, 0
    for trial in range(trials):
        fit = LrBatchCoupling(n_bootstrap=500, seed=trial).fit(coupling_runs(k, centred, noise, rng))
        est.append(fit.exponent_)
        hit += fit.interval_ is not None and fit.interval_[0] <= k <= fit.interval_[1]
        warned += bool(fit.warning_)
    grid = "9 lrs centred per cell" if centred else "5 lrs per group"
    return [f"{k:g}", grid, f"{100 * noise:.1f}%", str(trials), f"{np.mean(est):.3f}", f"{hit / trials:.0%}",
            f"{warned / trials:.0%}"]


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="synthetic data sets per row")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    print(table(["targets", "batches each", "noise on steps", "trials", "p's 95% interval covers 0.5",
                 "median width"],
                [critical_row(b, t, sd, args.trials) for b, t, sd in ((9, 5, 0.05), (4, 5, 0.05), (4, 3, 0.05),
                                                                      (6, 4, 0.10))]))
    print()
    print(table(["true k", "lr grid", "loss noise", "trials", "mean estimate", "95% interval covers k",
                 "fits that warn"],
                [coupling_row(0.5, centred, 0.002, args.trials // 2 or 1) for centred in (True, False)]))


if __name__ == "__main__":
    main()
