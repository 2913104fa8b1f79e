"""Time every law's fit on published data (wall clock, this machine).

Usage: python benchmarks/fit_speed.py [DATA_ROOT]   (default ../shared/data/external)
Targets: every law kind on the 1,911 Step Law runs with 1,000 bootstrap resamples < 10 s in
total; the multi-power law on one model size's curves < 30 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

from _external import DEFAULT_ROOT, MPL_TRAIN, mpl_curve, steplaw_runs, zhang_critical_batch  # noqa: E402
from hpscale.fitting.coupling import LrBatchCoupling  # noqa: E402
from hpscale.fitting.critical import CriticalBatchLaw  # noqa: E402
from hpscale.fitting.hyper import HyperLaw  # noqa: E402
from hpscale.fitting.loss import LossLaw  # noqa: E402
from hpscale.fitting.trajectory import MomentumLaw, MultiPowerLaw  # noqa: E402


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT)
    root = parser.parse_args().root
    runs = steplaw_runs(root)
    rows: list[tuple[str, float, bool]] = []  # (what, seconds, counts toward the 10 s total)
    for form in ("steplaw", "full", "compute"):
        rows.append((f"hyper {form}, near-optimal OLS, 1,000 bootstrap", timed(
            lambda f=form: HyperLaw(form=f, on_edge="warn", n_bootstrap=1000).fit(runs)), True))
    rows.append(("loss law (17 group optima), 4,500-point start grid, 1,000 bootstrap",
                 timed(lambda: LossLaw(n_bootstrap=1000).fit(runs)), True))
    rows.append(("hyper steplaw, smooth optima, 1,000 bootstrap",
                 timed(lambda: HyperLaw(form="steplaw", method="smooth", on_edge="warn").fit(runs)), True))
    rows.append(("hyper steplaw, joint (1,267 runs in the basin window), no bootstrap",
                 timed(lambda: HyperLaw(form="steplaw", method="joint", on_edge="warn", n_bootstrap=0).fit(runs)), False))
    rows.append(("hyper steplaw, joint, 1,000 bootstrap",
                 timed(lambda: HyperLaw(form="steplaw", method="joint", on_edge="warn").fit(runs)), False))
    rows.append(("lr-batch coupling (the basin's tilt, per-group lr* and B*), 1,000 bootstrap",
                 timed(lambda: LrBatchCoupling(n_bootstrap=1000).fit(runs)), False))
    data = zhang_critical_batch(root)
    rows.append(("critical batch (Zhang, 45 measurements)", timed(lambda: CriticalBatchLaw().fit(**data)), False))
    for size in ("25", "100"):
        curves = [mpl_curve(root, size, n) for n in MPL_TRAIN]
        rows.append((f"multi-power law, {size}M, 3 curves ({sum(c.steps.size for c in curves)} points)",
                     timed(lambda c=curves: MultiPowerLaw().fit(c)), False))
        rows.append((f"momentum law, {size}M, 3 curves", timed(lambda c=curves: MomentumLaw().fit(c)), False))
    print("| fit | seconds |")
    print("|---|---|")
    for what, sec, _ in rows:
        print(f"| {what} | {sec:.2f} |")
    total = sum(sec for _, sec, counts in rows if counts)
    print(f"| **every law kind on the 1,911 Step Law runs (hyper x 3 forms + smooth method + loss), 1,000 bootstrap: total** | **{total:.2f}** |")


if __name__ == "__main__":
    main()
