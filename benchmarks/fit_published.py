"""Fit every law on published data and print our numbers beside the published ones.

Usage: python benchmarks/fit_published.py [DATA_ROOT]   (default ../shared/data/external)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

import numpy as np  # noqa: E402
from _external import (DEFAULT_ROOT, MPL_TEST, MPL_TRAIN, chinchilla_runs, demo_runs, mpl_curve,  # noqa: E402
                       steplaw_runs, zhang_critical_batch)
from hpscale.fitting.coupling import LrBatchCoupling  # noqa: E402
from hpscale.fitting.critical import CriticalBatchLaw  # noqa: E402
from hpscale.fitting.hyper import HyperLaw  # noqa: E402
from hpscale.fitting.loss import LossLaw  # noqa: E402
from hpscale.fitting.presets import PRESETS  # noqa: E402
from hpscale.fitting.trajectory import MomentumLaw, MultiPowerLaw  # noqa: E402
from hpscale.fitting.runs import RunSet  # noqa: E402
from hpscale.fitting.validate import extrapolation_check, regret, seed_regret  # noqa: E402

EPOCH = {"E": 1.817, "A": 477.8, "B": 2143.9, "alpha": 0.347, "beta": 0.367}
MPL_PAPER = {"25": (0.0012, 0.0040), "100": (0.0013, 0.0058)}
MPL_PUBLISHED_PARAMS = {"25": (0.0011, 0.0041), "100": (0.0014, 0.0058)}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


METHODS = ("near_optimal", "smooth", "joint")
PRIORS = (None, "steplaw")


def _regret_table(runs: RunSet, fit_mask: np.ndarray) -> list[list[str]]:
    """Each method with and without the Step Law prior, fitted on ``fit_mask`` and scored on the
    other groups: mean and worst regret of the grid run nearest the recommendation."""
    fit, test = runs.subset(fit_mask), runs.subset(~fit_mask)
    gid, keys = test.group_keys()
    rows = []
    for method in METHODS:
        for prior in PRIORS:
            law = HyperLaw(form="steplaw", method=method, on_edge="warn", prior=prior, n_bootstrap=0).fit(fit)
            regrets = []
            for g, (n, d) in enumerate(keys):
                m = gid == g
                p = law.predict(n, d)
                regrets.append(regret(test.lr[m], test.batch_tokens[m], test.final_loss[m], p.lr, p.batch_tokens)["nearest"])
            rows.append([method, prior or "none", str(len(keys)), f"{100 * np.mean(regrets):.3f}%",
                         f"{100 * np.max(regrets):.3f}%", f"{law.coef_['alpha_lr']:.3f}", f"{law.coef_['beta_lr']:.3f}"])
    return rows


def steplaw(root: Path) -> str:
    runs = steplaw_runs(root)
    published = PRESETS["steplaw"].law.coef_
    rows = []
    t0 = time.perf_counter()
    laws = {m: HyperLaw(form="steplaw", method=m, on_edge="warn").fit(runs) for m in METHODS}
    seconds = time.perf_counter() - t0
    for k in published:
        cells = [k, f"{published[k]:.4g}"]
        for law in laws.values():
            lo, hi = law.intervals_[k]
            cells.append(f"{law.coef_[k]:.4g} [{lo:.3g}, {hi:.3g}]")
        rows.append(cells)
    joint = laws["joint"]
    out = ["### Step Law (1,911 dense runs, 17 (N, D) groups, smooth loss, 1,000 bootstrap)",
           table(["coefficient", "published", "near-optimal OLS (Step Law's procedure) [95%]", "smooth optima [95%]",
                  "joint [95%]"], rows),
           "", f"Noise measured: {joint.noise_.describe()}; near-optimal band {100 * joint.band_:.3f}% "
           f"(Step Law's fixed band: 0.25%). Joint basin: tilt k = {joint.landscape_['k']:.3f}, curvature along lr "
           f"{joint.landscape_['A_lo']:.4f} (low side) / {joint.landscape_['A_hi']:.4f} (high side), along batch "
           f"{joint.landscape_['C_lo']:.4f} / {joint.landscape_['C_hi']:.4f}, {joint.landscape_['runs_in_band']} runs "
           f"in the window. The three fits with their bootstraps took {seconds:.1f} s.",
           "", "Warnings: " + "; ".join(laws["near_optimal"].warnings_), ""]
    rows = []
    for m in METHODS:
        for prior in PRIORS:
            for holdout in ("n_params", "tokens"):
                r = extrapolation_check(HyperLaw(form="steplaw", method=m, on_edge="warn", prior=prior), runs, holdout)
                scored = f"{len(r['groups']) - r['groups_on_lr_edge']} of {len(r['groups'])}"
                rows.append([m, prior or "none", f"largest {'N' if holdout == 'n_params' else 'D per N'}", scored,
                             f"{100 * r['mean_loss_regret']:.3f}%", f"{100 * r['max_loss_regret']:.3f}%",
                             f"{r['mean_abs_lr_log_error']:.3f}", f"{r['mean_abs_batch_log_error']:.3f}"])
    out += ["Extrapolation (refit without the held-out groups; regret = loss of the grid run nearest the "
            "recommendation over the group's best, over the held-out groups whose best run is not on their lr "
            "grid's edge; bar: mean regret <= 0.1%; prior width 0.1 on each exponent):",
            table(["method", "prior", "held out", "groups scored", "mean regret", "max regret", "mean abs log err lr*",
                   "mean abs log err B*"], rows), ""]
    sizes = np.unique(runs.n_params)
    out += ["Few sizes: fitted on the three smallest model sizes only (11 groups), scored on both larger sizes "
            "(5 groups); the published formula scores the same groups:",
            table(["method", "prior", "groups", "mean regret", "max regret", "alpha_lr", "beta_lr"],
                  _regret_table(runs, np.isin(runs.n_params, sizes[:3])) + [_published_row(runs, sizes[:3])])]
    c = LrBatchCoupling("adamw", n_bootstrap=1000, seed=0).fit(runs)
    lo, hi = c.interval_ or (float("nan"), float("nan"))
    rows = [[f"{g['n_params']:.3g}", f"{g['tokens']:.3g}", f"{g['tokens'] / g['n_params']:.0f}", str(len(g["lr"])),
             f"{g['slope']:.3f}"] for g in c.group_slopes_]
    out += ["", f"lr-batch coupling (fitting.coupling; lr* ~ B^k at fixed N, D): k = {c.exponent_:.3f} "
            f"[{lo:.3f}, {hi:.3f}] (95%, 1,000 bootstrap): the loss basin's tilt over {c.runs_} runs near their "
            f"group's best in {c.groups_} groups; theory for Adam: 0.5. Per group, the slope of the {len(c.cells_)} "
            f"cells' bracketed lr optima on the batch ({c.excluded_} cells have none: best lr on the lr grid's edge):",
            table(["N", "D", "D / N", "batches", "slope of the cells' optima"], rows)]
    return "\n".join(out)


def _published_row(runs: RunSet, fit_sizes: np.ndarray) -> list[str]:
    test = runs.subset(~np.isin(runs.n_params, fit_sizes))
    gid, keys = test.group_keys()
    law = PRESETS["steplaw"].law
    regrets = []
    for g, (n, d) in enumerate(keys):
        m = gid == g
        p = law.predict(n, d)
        regrets.append(regret(test.lr[m], test.batch_tokens[m], test.final_loss[m], p.lr, p.batch_tokens)["nearest"])
    return ["Step Law formula (fitted on all sizes)", "-", str(len(keys)), f"{100 * np.mean(regrets):.3f}%",
            f"{100 * np.max(regrets):.3f}%", "-0.713", "0.307"]


def demo_run() -> str:
    """The GPU validation run in the demo file (run 4): what each method's prediction for the
    held-out 4.72M model would have scored on its held-out runs (seed means, 95% intervals)."""
    sweep, held = demo_runs()
    n, d = float(held.n_params[0]), float(held.tokens[0])
    seq = 256  # run 4's sequence length: batch sizes in sequences

    def row(name: str, prior: str, lr: float, batch_tokens: float) -> list[str]:
        r = seed_regret(held, lr, batch_tokens)
        iv = r["interval"]
        return [name, prior, f"{lr:.4g}", f"{batch_tokens / seq:.0f}",
                f"{r['config']['lr']:.4g} / {r['config']['batch_tokens'] / seq:.0f}",
                "-" if r["regret"] is None else f"{100 * r['regret']:.2f}%",
                "-" if not iv else f"[{100 * iv[0]:.2f}%, {100 * iv[1]:.2f}%]"]

    rows = []
    for method in METHODS:
        for prior in (None, "steplaw", "deepseek"):
            law = HyperLaw(form="steplaw", method=method, on_edge="warn", prior=prior, n_bootstrap=0).fit(sweep)
            p = law.predict(n, d)
            rows.append(row(method, prior or "none", p.lr, p.batch_tokens))
    for name in ("steplaw", "deepseek"):
        p = PRESETS[name].law.predict(n, d)
        rows.append(row(f"{PRESETS[name].title} preset", "-", p.lr, p.batch_tokens))
    noise = HyperLaw(n_bootstrap=0, on_edge="warn").fit(sweep).noise_
    configs = len(held.average_repeats())
    return "\n".join([
        f"### Run 4 (the demo file: {len(sweep)} sweep runs of 0.074M-1.18M params; held out: 4.72M on 47.2M tokens, "
        f"{len(held)} runs, {configs} configurations x 3 seeds)",
        f"Noise measured on the sweep: {noise.describe()}.",
        table(["method", "prior", "lr", "batch (seq of 256)", "nearest held-out configuration (lr / seq)",
               "regret (seed means)", "95% interval"], rows),
    ])


def chinchilla(root: Path) -> str:
    law = LossLaw().fit(chinchilla_runs(root))
    rows = []
    for k, v in EPOCH.items():
        lo, hi = law.intervals_[k]
        rows.append([k, f"{v:g}", f"{law.coef_[k]:.4g}", f"{100 * (law.coef_[k] / v - 1):+.2f}%", f"[{lo:.4g}, {hi:.4g}]"])
    opt = law.compute_optimal(5.76e23)
    return "\n".join([
        "### Chinchilla approach 3 (240 points after dropping the 5 highest losses; Huber 1e-3 sum, L-BFGS-B)",
        table(["parameter", "Epoch AI", "ours", "difference", "95% bootstrap (1,000)"], rows), "",
        f"Compute-optimal at 5.76e23 FLOP (Chinchilla's budget): N* = {opt.n_params:.3g} "
        f"[{opt.n_params_interval[0]:.3g}, {opt.n_params_interval[1]:.3g}], D* = {opt.tokens:.3g} "
        f"[{opt.tokens_interval[0]:.3g}, {opt.tokens_interval[1]:.3g}]",
    ])


def mpl(root: Path) -> str:
    rows, coef_rows = [], []
    for size in ("25", "100"):
        train = [mpl_curve(root, size, n) for n in MPL_TRAIN]
        test = [mpl_curve(root, size, n) for n in MPL_TEST]
        t = time.perf_counter()
        law = MultiPowerLaw().fit(train)
        dt = time.perf_counter() - t
        s = law.score(test)
        mom = MomentumLaw().fit(train)
        m = mom.score(test)
        rows.append([f"{size}M", f"{s['mean']:.5f}", f"{s['worst']:.5f}", f"{MPL_PAPER[size][0]} / {MPL_PAPER[size][1]}",
                     f"{MPL_PUBLISHED_PARAMS[size][0]} / {MPL_PUBLISHED_PARAMS[size][1]}",
                     f"{m['mean']:.5f}", f"{m['worst']:.5f}", f"{dt:.1f} s"])
        coef_rows.append([f"{size}M MPL", ", ".join(f"{k}={v:.4g}" for k, v in law.coef_.items())])
        coef_rows.append([f"{size}M momentum", ", ".join(f"{k}={v:.4g}" for k, v in mom.coef_.items())])
        per = "; ".join(f"{k} {v['mean']:.4f}/{v['max']:.4f}" for k, v in s["per_curve"].items())
        coef_rows.append([f"{size}M MPL per test curve (mean/max)", per])
    return "\n".join([
        "### Multi-power law (fit on constant_24000, cosine_24000, wsdcon_9; predict the other six; "
        "lr rebuilt per step from file names)",
        table(["model", "MPL PredE", "MPL WorstE", "paper bar PredE / WorstE", "published params here",
               "momentum PredE", "momentum WorstE", "MPL fit time"], rows), "",
        table(["fit", "coefficients"], coef_rows),
    ])


def critical(root: Path) -> str:
    data = zhang_critical_batch(root)
    by_n = CriticalBatchLaw(by="n_params").fit(**data)
    rows = [[f"{t.n_params / 1e6:.0f}M", f"{t.target_loss}", f"{t.b_crit:.3g}", f"{t.b_crit / 512:.0f}",
             f"{t.b_overhead20 / 512:.0f}", f"{t.s_min:.0f}", f"{100 * t.rel_error:.1f}%"] for t in by_n.targets_]
    ex = by_n.exponents_
    check = extrapolation_check(by_n, data)
    return "\n".join([
        "### Critical batch (Zhang et al. 2024 steps-to-target, S = S_min (1 + B_crit / B))",
        table(["model", "target loss", "B_crit (tokens)", "B_crit (seqs of 512)", "20%-overhead batch (seqs)", "S_min", "fit mean rel err"], rows), "",
        f"Growth exponents of B_crit: vs N {ex['n_params']:.3f}, vs E_min (tokens) {ex['tokens']:.3f}, "
        f"vs target loss {ex['target_loss']:.2f}. Holding out the largest model: B_crit log error "
        f"{check['mean_abs_log_error']:.3f}.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT)
    root = parser.parse_args().root
    if not (root / "README.md").exists():
        sys.exit(f"published data not found at {root}")
    for section in (steplaw, chinchilla, mpl, critical):
        print(section(root))
        print()
    print(demo_run())


if __name__ == "__main__":
    main()
