"""The report stage of heldout_validation.py: tables for VALIDATION.md and plots (PNG), and the
export of the sweep as the package's demo dataset. CPU only (matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hpscale.db import storage  # noqa: E402
from hpscale.db.engine import Database  # noqa: E402
from hpscale.fitting.optimum import group_optima  # noqa: E402
from hpscale.fitting.registry import law_from_record  # noqa: E402
from hpscale.service import fits  # noqa: E402
from hpscale.service.demo import DEMO_FILE, export_demo  # noqa: E402

# The experiment's run sources, named once in the script that creates them.
from heldout_validation import HELD_GRID, LONG, MAIN  # noqa: E402
from heldout_validation import HELD_SOURCES as HELD  # noqa: E402
from heldout_validation import SCHED_SOURCES as SCHED  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "validation"
SWEEPS = (MAIN, LONG)


def _db(work: Path) -> Database:
    return Database(f"sqlite:///{work / 'validation.db'}")


def group_table(db: Database) -> tuple[str, list[Any]]:
    rows = [r for r in storage.list_runs(db, sources=list(SWEEPS)) if r.status in ("done", "diverged")]
    optima = group_optima(fits.runset(rows))
    lines = ["| N | D | tokens/param | runs | diverged | best lr | best batch (seq) | best loss | smooth lr* | smooth B* (seq) | grid edge |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in optima:
        grp = [r for r in rows if r.n_params == g.n_params and r.tokens == g.tokens]
        lines.append(
            f"| {g.n_params:.3g} | {g.tokens:.3g} | {g.tokens / g.n_params:.0f} | {len(grp)} | "
            f"{sum(r.status == 'diverged' for r in grp)} | {g.best_lr:.3g} | {g.best_batch_tokens / 256:.0f} | "
            f"{g.best_loss:.4f} | {g.lr:.3g} | {g.batch_tokens / 256:.1f} | {', '.join(g.edges) or 'inside'} |")
    return "\n".join(lines), optima


def law_table(db: Database, ids: dict[str, int]) -> str:
    lines = ["| law | coefficients | extrapolation check (largest N held out) |", "|---|---|---|"]
    for key, law_id in ids.items():
        law = storage.get_law(db, law_id)
        coef = ", ".join(f"{k} = {v:.4g}" for k, v in law.record["coefficients"].items())
        lines.append(f"| {law.name} ({law.form}) | {coef} | {(law.extrapolation or {}).get('summary', '-')} |")
    return "\n".join(lines)


def heldout_table(db: Database, res: dict[str, Any]) -> str:
    lines = ["| source | lr | batch (seq) | final loss | over best |", "|---|---|---|---|---|"]
    best = res["best"].final_loss
    for r in sorted((r for s in HELD for r in storage.list_runs(db, sources=[s])), key=lambda r: (r.batch_size, r.lr)):
        loss = "diverged" if r.final_loss is None else f"{r.final_loss:.4f}"
        over = "-" if r.final_loss is None else f"{100 * (r.final_loss / best - 1):+.2f}%"
        lines.append(f"| {r.source} | {r.lr:.4g} | {r.batch_size:.0f} | {loss} | {over} |")
    return "\n".join(lines)


def plot_hyper(db: Database, optima: list[Any], res: dict[str, Any]) -> None:
    p = res["prediction"]
    law = law_from_record(storage.get_law(db, p["law_ids"][p.get("hyper_law", "hyper")]).record)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = np.geomspace(1.5e5, 1.0e7, 60)
    for ratio, color in ((10, "C0"), (20, "C1")):
        preds = [law.predict(n, ratio * n) for n in ns]
        ax1.plot(ns, [q.lr for q in preds], color=color, label=f"fitted lr*, D = {ratio} N")
        if preds[0].lr_interval:
            ax1.fill_between(ns, [q.lr_interval[0] for q in preds], [q.lr_interval[1] for q in preds], color=color, alpha=0.12)
        ax2.plot(ratio * ns, [q.batch_tokens for q in preds], color=color, label=f"fitted B*, D = {ratio} N")
        if preds[0].batch_tokens_interval:
            ax2.fill_between(ratio * ns, [q.batch_tokens_interval[0] for q in preds],
                             [q.batch_tokens_interval[1] for q in preds], color=color, alpha=0.12)
        sel = [g for g in optima if round(g.tokens / g.n_params) == ratio]
        ax1.scatter([g.n_params for g in sel], [g.best_lr for g in sel], color=color, marker="o", zorder=3)
        ax2.scatter([g.tokens for g in sel], [g.best_batch_tokens for g in sel], color=color, marker="o", zorder=3)
    best = res["best"]
    ax1.scatter([p["n_params"]], [p["lr"]], marker="*", s=180, color="C3", label=f"predicted (held-out {p['n_params'] / 1e6:.1f}M)", zorder=4)
    ax1.scatter([best.n_params], [best.lr], marker="D", s=70, color="k", label="best found (held-out)", zorder=4)
    ax2.scatter([p["tokens"]], [p["batch_tokens"]], marker="*", s=180, color="C3", label="predicted", zorder=4)
    ax2.scatter([best.tokens], [best.batch_tokens], marker="D", s=70, color="k", label="best found", zorder=4)
    for ax, xl, yl in ((ax1, "N (non-embedding params)", "peak lr"), (ax2, "D (tokens)", "batch (tokens)")):
        ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel(xl); ax.set_ylabel(yl); ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_title("lr*(N, D): group optima (dots), fit with 95% band")
    ax2.set_title("B*(D): group optima, fit with 95% band")
    fig.tight_layout(); fig.savefig(FIGURES / "hyper.png", dpi=110); plt.close(fig)


def plot_loss(db: Database, optima: list[Any], res: dict[str, Any]) -> None:
    p = res["prediction"]
    law = law_from_record(storage.get_law(db, p["law_ids"]["loss"]).record)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ns = np.geomspace(1.5e5, 1.0e7, 60)
    for ratio, color in ((10, "C0"), (20, "C1")):
        preds = [law.predict(n, ratio * n) for n in ns]
        ax.plot(ns, [q.loss for q in preds], color=color, label=f"L(N, {ratio} N)")
        if preds[0].interval:
            ax.fill_between(ns, [q.interval[0] for q in preds], [q.interval[1] for q in preds], color=color, alpha=0.12)
        sel = [g for g in optima if round(g.tokens / g.n_params) == ratio]
        ax.scatter([g.n_params for g in sel], [g.best_loss for g in sel], color=color, zorder=3)
    ax.scatter([p["n_params"]], [p["final_loss"]], marker="*", s=180, color="C3", label="predicted (held-out)", zorder=4)
    ax.scatter([res["best"].n_params], [res["best"].final_loss], marker="D", color="k", label="best found", zorder=4)
    losses = [g.best_loss for g in optima] + [p["final_loss"], res["best"].final_loss]
    ax.set_ylim(0.9 * min(losses), 1.1 * max(losses))  # a wild bootstrap band must not hide the data
    ax.set_xscale("log"); ax.set_xlabel("N"); ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("L(N, D) = E + A/N^alpha + B/D^beta"); ax.grid(alpha=0.3); ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(FIGURES / "loss.png", dpi=110); plt.close(fig)


def plot_heldout(db: Database, res: dict[str, Any]) -> None:
    p = res["prediction"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    grid = [r for r in storage.list_runs(db, sources=[HELD_GRID]) if r.final_loss is not None]
    for i, b in enumerate(sorted({r.batch_size for r in grid})):
        pts = sorted((r.lr, r.final_loss) for r in grid if r.batch_size == b)
        ax.plot(*zip(*pts), marker="o", color=f"C{i}", label=f"batch {b:.0f} x 256")
    for key, marker, label in (("hpscale (fitted here)", "*", "hpscale prediction"), ("Step Law preset", "s", "Step Law"),
                               ("DeepSeek preset", "^", "DeepSeek")):
        r = res["rows"][key]
        ax.scatter([r.lr], [r.final_loss], marker=marker, s=160, color="k" if marker != "*" else "C3", zorder=4,
                   label=f"{label}: lr {r.lr:.3g}, batch {r.batch_size:.0f}")
    ax.set_xscale("log"); ax.set_ylim(top=min(2.1, ax.get_ylim()[1]))
    ax.set_xlabel("peak lr"); ax.set_ylabel("final validation loss"); ax.grid(alpha=0.3); ax.legend(fontsize=7)
    ax.set_title(f"held-out model, N = {p['n_params'] / 1e6:.1f}M, D = {p['tokens'] / 1e6:.0f}M tokens")
    fig.tight_layout(); fig.savefig(FIGURES / "heldout.png", dpi=110); plt.close(fig)


def plot_trajectory(db: Database, res: dict[str, Any]) -> str:
    """Observed curves of the schedule runs against each fitted trajectory law; the check's summaries."""
    ids = {form: res["prediction"]["law_ids"].get(f"trajectory_{form}") for form in ("multi_power", "momentum")}
    ids = {form: i for form, i in ids.items() if i is not None}
    if not ids:
        return "no trajectory law could be fitted"
    rows = {form: storage.get_law(db, i) for form, i in ids.items()}
    used = set(next(iter(rows.values())).record.get("runs_used") or [])
    runs = [r for r in storage.list_runs(db, sources=list(SWEEPS + SCHED)) if f"{r.source}/{r.name}" in used]
    curves = fits.loss_curves(db, runs)
    fig, axes = plt.subplots(1, len(rows), figsize=(6.2 * len(rows), 4.2), squeeze=False)
    for ax, (form, row) in zip(axes[0], rows.items()):
        law = law_from_record(row.record)
        held = (row.extrapolation or {}).get("held_out_curve")
        for i, c in enumerate(curves):
            label = c.name.split("/", 1)[0].removeprefix("val-sched-").replace(MAIN, "cosine")
            ax.plot(c.steps, c.loss, ".", ms=2, color=f"C{i}")
            ax.plot(c.steps, law.predict(c.lr, c.steps, c.warmup()), "-", color=f"C{i}", lw=1,
                    label=label + (" (held out by the check)" if c.name == held else ""))
        ax.set_xscale("log"); ax.set_xlabel("step"); ax.set_ylabel("validation loss"); ax.grid(alpha=0.3)
        ax.legend(fontsize=7); ax.set_title(f"{form} law: observed (dots) vs fitted (lines), N = 1.18M")
    fig.tight_layout(); fig.savefig(FIGURES / "trajectory.png", dpi=110); plt.close(fig)
    return "; ".join(f"{form}: {(row.extrapolation or {}).get('summary', '-')}" for form, row in rows.items())


def write_report(work: Path, results: Callable[[Path], dict[str, Any]]) -> None:
    """Write docs/validation/*.png and print the tables VALIDATION.md quotes."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    db = _db(work)
    res = results(work)
    groups, optima = group_table(db)
    plot_hyper(db, optima, res)
    plot_loss(db, optima, res)
    plot_heldout(db, res)
    traj = plot_trajectory(db, res)
    p = res["prediction"]
    summary = ["| recommendation | lr | batch (seq) | final loss | regret over best |", "|---|---|---|---|---|"]
    for key, r in res["rows"].items():
        summary.append(f"| {key} | {r.lr:.4g} | {r.batch_size:.0f} | {r.final_loss:.4f} | {100 * res['regret'][key]:.2f}% |")
    best = res["best"]
    summary.append(f"| best found | {best.lr:.4g} | {best.batch_size:.0f} | {best.final_loss:.4f} | 0 |")
    text = "\n\n".join([
        "### Sweep groups\n" + groups,
        "### Fitted laws\n" + law_table(db, p["law_ids"]),
        f"### Held-out model: predictions\nlr* = {p['lr']:.4g} (95% {p['lr_interval'][0]:.3g} .. {p['lr_interval'][1]:.3g}), "
        f"B* = {p['batch_tokens']:.0f} tokens = {p['batch_size']} sequences, final loss {p['final_loss']:.4f} "
        f"(95% {p['final_loss_interval'][0]:.3f} .. {p['final_loss_interval'][1]:.3f})",
        "### Held-out model: regret\n" + "\n".join(summary),
        f"final-loss prediction error: {100 * res['loss_error']:+.2f}% (predicted {p['final_loss']:.4f}, best found {best.final_loss:.4f})",
        "### Held-out runs\n" + heldout_table(db, res),
        f"### Trajectory law\n{traj}",
    ])
    (work / "report.md").write_text(text + "\n")
    print(text)


def write_demo(work: Path, _results: Any = None) -> None:
    """Export the validation sweeps, the held-out runs and the fitted laws as the demo dataset."""
    db = _db(work)
    names = [law.name for law in storage.list_laws(db, origin="fitted")]
    counts = export_demo(db, list(SWEEPS + SCHED + HELD), DEMO_FILE, names)
    print(f"demo dataset: {counts} -> {DEMO_FILE} ({DEMO_FILE.stat().st_size / 1e6:.2f} MB)")
