"""How the lr-batch coupling's fit time grows with the groups: group by group against dense.

The coupling (``fitting.coupling``) fits one loss basin with each (N, D) group's own lr* and
B* and floor (3 per group) and a shared shape (5), then refits it on 1,000 resamples. The
solver eliminates the per-group parameters group by group (``fitting.joint._local_step``); the
dense step it replaced (``_law_step``, still the joint hyper fit's, whose lr* and B* are a law)
solves all 3G + 5 at once. Synthetic groups: lr* = 0.3 N^-0.5 (B / 2^16)^0.5, 9 lrs in sqrt(2)
steps around each of 4 batches, 0.3% noise. Prints a markdown table (BENCHMARKS.md records it):
CPU seconds of this process for the whole fit, both ways, and the exponent with its interval.

    python benchmarks/coupling_speed.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

from hpscale.fitting import coupling  # noqa: E402
from hpscale.fitting.runs import RunSet  # noqa: E402

SHAPES = [((1e6, 4e6, 1.6e7), (2e8, 8e8)),  # 6 groups
          ((1e6, 2e6, 4e6, 8e6, 1.6e7), (2e8, 4e8, 8e8, 1.6e9)),  # 20
          (tuple(1e6 * 2.0 ** np.arange(10)), (2e8, 4e8, 8e8, 1.6e9, 3.2e9, 6.4e9))]  # 60


def grid(sizes: tuple[float, ...], budgets: tuple[float, ...], noise: float = 0.003, seed: int = 0) -> RunSet:
    rng = np.random.default_rng(seed)
    rows = []
    lattice = 2.0 ** np.arange(-18, 0, 0.5)
    for n in sizes:
        for d in budgets:
            for b in (2**15, 2**16, 2**17, 2**18):
                lr_star = 0.3 * n**-0.5 * (b / 2**16) ** 0.5
                i = int(np.argmin(np.abs(np.log(lattice / lr_star))))
                for lr in lattice[i - 4: i + 5]:
                    basin = 0.03 * np.log(lr / lr_star) ** 2 + 0.01 * (np.log(b) - 16.5 * np.log(2)) ** 2
                    loss = (2.0 + 30 / n**0.3 + 0.1 * np.log(d / 2e8)) * np.exp(basin)
                    rows.append({"name": f"{n:g}-{d:g}-{b}-{lr:.5g}", "n_params": n, "tokens": d, "lr": lr,
                                 "batch_tokens": float(b), "final_loss": loss * (1 + noise * rng.standard_normal())})
    return RunSet.from_records(rows)


def fit(runs: RunSet, local: bool) -> tuple[float, coupling.LrBatchCoupling]:
    """The whole coupling fit (1,000 resamples), with the group-by-group solver or the dense one."""
    original = coupling.basin_data

    def basin_data(r: RunSet, noise: float):  # noqa: ANN202
        data = original(r, noise)
        return data if data is None else replace(data, local=local)

    coupling.basin_data = basin_data
    try:
        t = time.process_time()
        result = coupling.LrBatchCoupling(n_bootstrap=1000, seed=0).fit(runs)
        return time.process_time() - t, result
    finally:
        coupling.basin_data = original


def main() -> None:
    print("| groups | runs in the basin | group by group, s | dense, s | k [95%], group by group | k [95%], dense |")
    print("|---|---|---|---|---|---|")
    for sizes, budgets in SHAPES:
        runs = grid(sizes, budgets)
        (t_fast, fast), (t_dense, dense) = fit(runs, True), fit(runs, False)

        def k(c: coupling.LrBatchCoupling) -> str:
            return f"{c.exponent_:.4f} [{c.interval_[0]:.3f}, {c.interval_[1]:.3f}]" if c.interval_ else "-"

        print(f"| {fast.groups_} | {fast.runs_} | {t_fast:.1f} | {t_dense:.1f} | {k(fast)} | {k(dense)} |")


if __name__ == "__main__":
    main()
