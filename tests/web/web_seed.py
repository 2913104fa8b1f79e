"""Seed data for the browser tests: a small sweep with curves, a sweep in progress, runs under
three lr schedules, a grid trained with Lion, and laws fitted on them with the fitting
package's public API.

The loss landscape is synthetic but shaped like a real one: a Chinchilla-style L(N, D) plus a
quadratic bowl in (log lr, log batch) around Step Law's optimum, so the fitted law lands near
Step Law and every plot has something to show (an optimum inside the grid, diverged runs at
the largest learning rate and smallest batch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.fitting.coupling import LrBatchCoupling
from hpscale.fitting.critical import CriticalBatchLaw
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.loss import LossLaw
from hpscale.fitting.runs import RunSet
from hpscale.fitting.schedules import lr_schedule
from hpscale.fitting.trajectory import LossCurve, MultiPowerLaw
from hpscale.fitting.validate import extrapolation_check
from hpscale.service.fits import judge, law_title
from hpscale.service.runformat import parse_runs_file

SWEEP = "grid-demo"
SIZES = (1e6, 3e6, 9e6)  # N, non-embedding parameters
TOKENS = (4e7, 1.6e8)  # D, tokens
LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # around Step Law's lr*
BATCH_FACTORS = (0.25, 0.5, 1.0, 2.0)  # around Step Law's B*
SEQ_LEN = 256
CURVE_POINTS = 12
SCHEDULES = ("constant", "cosine", "wsd")
SCHEDULE_STEPS = 600


def _steplaw(n: float, d: float) -> tuple[float, float]:
    return 1.79 * n**-0.713 * d**0.307, 0.58 * d**0.571


def _loss(n: float, d: float, lr: float, bt: float, lr_opt: float, bt_opt: float) -> float:
    base = 1.7 + 250.0 / n**0.34 + 1200.0 / d**0.36
    # The bowl is wider in batch than in lr, as measured landscapes are.
    return base * (1 + 0.004 * math.log(lr / lr_opt) ** 2 + 0.0015 * math.log(bt / bt_opt) ** 2)


def grid_runs() -> list[dict[str, Any]]:
    """The sweep's runs in hpscale's import format, each with a loss curve."""
    rng = np.random.default_rng(7)
    out = []
    for n in SIZES:
        for d in TOKENS:
            lr_opt, bt_opt = _steplaw(n, d)
            for bf in BATCH_FACTORS:
                # Whole sequences, so batch_size x seq_len reproduces batch_tokens exactly.
                batch_size = max(1, round(bt_opt * bf / SEQ_LEN))
                bt = batch_size * SEQ_LEN
                for lf in LR_FACTORS:
                    lr = lr_opt * lf
                    name = f"n{n:.0e}-d{d:.0e}-b{batch_size}-lr{lr:.3e}"
                    diverged = lf == LR_FACTORS[-1] and bf == BATCH_FACTORS[0]
                    final = _loss(n, d, lr, bt, lr_opt, bt_opt) * (1 + rng.normal(0, 2e-4))
                    steps = np.linspace(d / bt / CURVE_POINTS, d / bt, CURVE_POINTS).round().astype(int)
                    curve = []
                    for i, s in enumerate(steps):
                        frac = (i + 1) / CURVE_POINTS
                        loss = final + 3.0 * (1 - frac) ** 2 + 0.05 * (1 - frac)
                        if diverged and i >= CURVE_POINTS // 2:
                            loss = float("nan")
                        curve.append({"step": int(s), "lr": lr, "loss": loss, "tokens": float(s * bt)})
                    out.append({
                        "name": name, "n_params": n, "tokens": d, "lr": lr, "batch_size": batch_size,
                        "seq_len": SEQ_LEN, "final_loss": None if diverged else final,
                        "status": "diverged" if diverged else "done", "schedule": "cosine", "curve": curve,
                    })
    return out


LION_LR_SCALE = 0.1  # Lion's optimal lr against AdamW's (Step Law's) at B*
LION_COUPLING = 0.5  # lr* ~ B^0.5 within a group


def lion_runs() -> list[dict[str, Any]]:
    """The grid-demo shapes trained with Lion: lr* 10x below Step Law's and growing as the square
    root of the batch (the lr-batch coupling the law page shows)."""
    rng = np.random.default_rng(11)
    out = []
    for n in SIZES:
        for d in TOKENS:
            lr_opt, bt_opt = _steplaw(n, d)
            lr_opt *= LION_LR_SCALE
            for bf in BATCH_FACTORS:
                batch_size = max(1, round(bt_opt * bf / SEQ_LEN))
                bt = batch_size * SEQ_LEN
                at_b = lr_opt * (bt / bt_opt) ** LION_COUPLING
                for lf in LR_FACTORS:
                    lr = lr_opt * lf
                    out.append({
                        "name": f"lion-n{n:.0e}-d{d:.0e}-b{batch_size}-lr{lr:.3e}", "n_params": n, "tokens": d, "lr": lr,
                        "batch_size": batch_size, "seq_len": SEQ_LEN, "optimizer": "lion", "schedule": "cosine",
                        "final_loss": _loss(n, d, lr, bt, at_b, bt_opt) * (1 + rng.normal(0, 2e-5)),
                    })
    return out


def schedule_runs() -> list[dict[str, Any]]:
    """One model trained under three lr schedules, its curves drawn from a multi-power law."""
    truth = MultiPowerLaw()
    truth.coef_ = {"L0": 2.6, "A": 0.9, "alpha": 0.45, "B": 350.0, "C": 2.0, "beta": 0.55, "gamma": 0.6}
    rng = np.random.default_rng(3)
    out = []
    for kind in SCHEDULES:
        lr = lr_schedule(kind, SCHEDULE_STEPS, 3e-3, warmup_steps=30, final_lr_ratio=0.1)
        steps = np.arange(30, SCHEDULE_STEPS + 1, 10)
        loss = truth.predict(lr, steps, warmup_steps=30) * (1 + rng.normal(0, 1e-3, steps.size))
        # The curve logs the lr of every step (the trajectory page rebuilds the schedule from
        # it) and the evaluation loss every 10 steps after warmup.
        curve = [
            {"step": int(s), "lr": float(lr[s - 1]), "loss": float(loss[(s - 30) // 10])}
            for s in steps
        ]
        out.append({
            # One name in every schedule's source, as sweeps that differ only by schedule name runs.
            "name": "mpl-run", "n_params": 4e6, "tokens": SCHEDULE_STEPS * 64 * SEQ_LEN, "lr": 3e-3,
            "batch_size": 64, "seq_len": SEQ_LEN, "final_loss": float(loss[-1]), "schedule": kind, "curve": curve,
        })
    return out


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    # NaN is what a diverged run logs; the import format reads it back (as the CLI would).
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def _import(db: Database, path: Path, source: str, sweep_id: int | None = None) -> None:
    runs = [r.to_storage(source) for r in parse_runs_file(path)]
    for r in runs:
        r["sweep_id"] = sweep_id
    storage.add_runs(db, runs)


def seed(db: Database, tmp: Path) -> dict[str, Any]:
    """Fill ``db``; returns the ids the tests navigate to."""
    sweep = storage.add_sweep(db, SWEEP, {"sizes": list(SIZES), "tokens": list(TOKENS), "seq_len": SEQ_LEN}, "test")
    _import(db, _write_jsonl(tmp / "grid.jsonl", grid_runs()), SWEEP, sweep.id)
    # A sweep still running: two runs done, the rest queued or running (the list's progress).
    running = storage.add_sweep(db, "grid-running", {"sizes": [1e6]}, "test")
    storage.add_runs(db, [
        {"source": "grid-running", "name": f"r{i}", "sweep_id": running.id, "n_params": 1e6, "tokens": 2e7,
         "lr": 1e-3 * 2**i, "batch_tokens": 32768, "batch_size": 128, "seq_len": SEQ_LEN,
         "status": status, "final_loss": 3.5 if status == "done" else None}
        for i, status in enumerate(["done", "done", "running", "queued", "queued", "queued"])
    ])
    for r in schedule_runs():  # a source per schedule (one sweep each), the runs named alike
        _import(db, _write_jsonl(tmp / f"schedule-{r['schedule']}.jsonl", [r]), f"sched-{r['schedule']}")

    stored = storage.list_runs(db, sweep_id=sweep.id)
    runs = RunSet.from_records(
        {"name": str(r.id), "n_params": r.n_params, "tokens": r.tokens, "lr": r.lr, "batch_tokens": r.batch_tokens,
         "final_loss": r.final_loss, "diverged": r.status == "diverged"}
        for r in stored
    )
    hyper = HyperLaw(form="steplaw", n_bootstrap=200, seed=0, on_edge="warn").fit(runs)
    record = {**hyper.to_record(), "lr_batch_coupling": LrBatchCoupling("adamw", n_bootstrap=200).fit(runs).to_record()}
    report = judge(extrapolation_check(hyper, runs))  # passed, on this synthetic landscape (the laws test checks)
    law = storage.add_law(db, {
        "name": "grid-demo-steplaw", "kind": "hyper", "form": "steplaw", "origin": "fitted",
        "title": law_title("hyper", "steplaw", "near_optimal", [SWEEP]), "source": SWEEP, "record": record,
        "extrapolation": report, "settings": hyper.to_record()["settings"],
        "code_version": "test",
    }, [r.id for r in stored])
    # A newer fit of the same form whose check failed: recommendations (and the laws page) keep
    # to the one that passed; the two differ in their titles by their method.
    smooth = HyperLaw(form="steplaw", method="smooth", n_bootstrap=0, on_edge="warn").fit(runs)
    failed = storage.add_law(db, {
        "name": "grid-demo-steplaw-smooth", "kind": "hyper", "form": "steplaw", "origin": "fitted",
        "title": law_title("hyper", "steplaw", "smooth", [SWEEP]), "source": SWEEP, "record": smooth.to_record(),
        "extrapolation": {**judge(extrapolation_check(smooth, runs)), "passed": False},
        "settings": smooth.to_record()["settings"], "code_version": "test",
    }, [r.id for r in stored])

    # Few refinements and no bootstrap: the full default fit takes half a minute on six points.
    # No extrapolation check: holding out the largest N leaves four (N, D) points, fewer than
    # the law's five coefficients.
    loss = LossLaw(n_refine=4, n_bootstrap=0).fit(runs)
    best = {int(name) for name in loss.runs_used_ or []}
    loss_row = storage.add_law(db, {
        "name": "grid-demo-loss", "kind": "loss", "form": loss.form, "origin": "fitted",
        "title": "Loss law fitted on grid-demo", "source": SWEEP, "record": loss.to_record(),
        "extrapolation": None, "settings": loss.to_record()["settings"], "code_version": "test",
    }, sorted(best))

    sched = storage.list_runs(db, sources=[f"sched-{kind}" for kind in SCHEDULES])
    curves = storage.get_curves(db, [r.id for r in sched])
    loss_curves = []
    for r in sched:
        pts = curves[r.id]
        lr = lr_schedule(r.schedule, SCHEDULE_STEPS, 3e-3, warmup_steps=30, final_lr_ratio=0.1)
        loss_curves.append(LossCurve(name=f"{r.source}/{r.name}", lr=lr, steps=np.array([p.step for p in pts]),
                                     loss=np.array([p.val_loss for p in pts]), warmup_steps=30))
    mpl = MultiPowerLaw().fit(loss_curves)
    traj = storage.add_law(db, {
        "name": "schedules-mpl", "kind": "trajectory", "form": "multi_power", "origin": "fitted",
        "title": "Multi-power law on the schedule runs", "source": "sched-*", "record": mpl.to_record(),
        "extrapolation": extrapolation_check(mpl, loss_curves), "settings": None, "code_version": "test",
    }, [r.id for r in sched])
    # Lion's grid and its law, fitted on Lion's runs only (a law is one optimizer's).
    _import(db, _write_jsonl(tmp / "lion.jsonl", lion_runs()), "lion-demo")
    lion_rows = storage.list_runs(db, sources=["lion-demo"])
    lion_set = RunSet.from_records(
        {"name": str(r.id), "n_params": r.n_params, "tokens": r.tokens, "lr": r.lr, "batch_tokens": r.batch_tokens,
         "final_loss": r.final_loss} for r in lion_rows)
    lion = HyperLaw(form="steplaw", n_bootstrap=200, seed=0, on_edge="warn").fit(lion_set)
    lion_record = {**lion.to_record(), "lr_batch_coupling": LrBatchCoupling("lion", n_bootstrap=200).fit(lion_set).to_record()}
    lion_law = storage.add_law(db, {
        "name": "lion-demo-steplaw", "kind": "hyper", "form": "steplaw", "origin": "fitted", "optimizer": "lion",
        "title": "Step Law form fitted on lion-demo (Lion)", "source": "lion-demo", "record": lion_record,
        "extrapolation": judge(extrapolation_check(lion, lion_set)),
        "settings": lion.to_record()["settings"], "code_version": "test",
    }, [r.id for r in lion_rows])
    # A steps-to-target table (S = 1000 (1 + B_crit / B), B_crit = 2e3 N^0.5 tokens) and its
    # critical-batch law.
    storage.add_runs(db, [
        {"source": "cbs-demo", "name": f"n{n:g}-b{b}", "n_params": n, "tokens": s * b, "final_loss": 3.0,
         "batch_tokens": b, "tags": {"steps_to_target": s}, "status": "done", "code_version": "test"}
        for n in (1e6, 4e6, 1.6e7) for b in (1024, 4096, 16384, 65536) for s in [1e3 * (1 + 2e3 * n**0.5 / b)]
    ])
    cbs_rows = storage.list_runs(db, sources=["cbs-demo"])
    critical = CriticalBatchLaw(n_bootstrap=50).fit(
        **{k: np.array(v) for k, v in {
            "n_params": [r.n_params for r in cbs_rows], "target_loss": [r.final_loss for r in cbs_rows],
            "batch_tokens": [r.batch_tokens for r in cbs_rows],
            "steps": [r.tags["steps_to_target"] for r in cbs_rows]}.items()})
    critical_law = storage.add_law(db, {
        "name": "cbs-demo-critical", "kind": "critical_batch", "form": "power", "origin": "fitted",
        "title": "Critical batch fitted on cbs-demo", "source": "cbs-demo", "record": critical.to_record(),
        "extrapolation": None, "settings": None, "code_version": "test",
    }, [r.id for r in cbs_rows])
    return {
        "critical_law_id": critical_law.id,
        "sweep_id": sweep.id, "running_sweep_id": running.id, "hyper_law_id": law.id, "trajectory_law_id": traj.id,
        "failed_hyper_law_id": failed.id,
        "loss_law_id": loss_row.id, "lion_law_id": lion_law.id,
        "run_id": stored[0].id, "n_groups": len(SIZES) * len(TOKENS), "n_batches": len(BATCH_FACTORS),
    }
