"""The optimizer axis's GPU experiment (benchmarks/optimizer_axis.py, issue 17): its specs are the
issue's design, side by side, and its report tabulates each optimizer's optima, laws, lr-batch
exponents and step times. The GPU stages run on the device; their CPU smoke run is in
BENCHMARKS.md."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import optimizer_axis as axis  # noqa: E402

from hpscale.db import storage  # noqa: E402
from hpscale.db.engine import Database  # noqa: E402
from hpscale.service.demo import export_demo  # noqa: E402
from hpscale.sweeps.plan import build_plan  # noqa: E402
from hpscale.sweeps.spec import load_spec  # noqa: E402


def test_one_spec_per_optimizer_with_the_issues_design() -> None:
    paths = axis.specs(axis.RESULTS)
    assert [axis.spec_info(p)[1] for p in paths][0] == "adamw"
    assert {axis.spec_info(p)[1] for p in paths} == {"adamw", "lion", "sgd", "sgd_sai", "lamb", "muon"}
    shared = None
    for path in paths:
        spec = load_spec(path)
        plan = build_plan(spec)
        sizes = sorted({c.shape.n_params for c in plan.cells})
        assert len(sizes) >= 3 and sizes[-1] / sizes[0] >= 8, path.name
        assert all(len({c.tokens for c in plan.cells if c.shape.n_params == n}) >= 2 for n in sizes), path.name
        assert len(spec.batch_sizes) >= 3 and spec.refine.max_rounds >= 1 and spec.refine.batches, path.name
        (opt,) = spec.optimizer
        assert opt.kind == axis.spec_info(path)[1] and opt.lr.count >= 8, path.name
        # Side by side: every optimizer on the same models, budgets and batches.
        same = (sizes, sorted({c.tokens for c in plan.cells}), list(spec.batch_sizes), spec.seq_len)
        assert shared in (None, same), path.name
        shared = same


def test_a_sweep_stage_can_train_some_optimizers_alone() -> None:
    paths = axis.specs(axis.RESULTS)
    assert axis.chosen(paths, "") == paths
    assert [axis.spec_info(p)[1] for p in axis.chosen(paths, "lamb, muon")] == ["lamb", "muon"]
    for bad in ("adam", ",", "lamb,nope"):
        with pytest.raises(ValueError, match="expected optimizers among adamw"):
            axis.chosen(paths, bad)


def _bowl(n: float, d: float, lr: float, b: float, lr_opt: float) -> float:
    return 3.0 + 20 / n**0.3 + 0.05 * np.log(lr / lr_opt) ** 2 + 0.01 * np.log(b / 4096) ** 2


def test_the_report_tabulates_each_optimizer(tmp_path: Path) -> None:
    results = tmp_path / "optimizers"
    results.mkdir()
    for name in ("adamw.yaml", "lion.yaml"):
        shutil.copy(axis.RESULTS / name, results / name)
    db = Database(f"sqlite:///{tmp_path / 'gpu.db'}")
    db.ensure_schema()
    runs = []
    # AdamW's optimum inside its grid at every group; Lion's on its grid's upper edge at the largest.
    for source, optimizer, grid, opt in (("opt-adamw", "adamw", np.geomspace(1e-3, 1e-1, 8), 1e-2),
                                         ("opt-lion", "lion", np.geomspace(1e-4, 1e-2, 8), 1e-3)):
        for n in (7.4e4, 1.7e5, 6.6e5):
            for d in (10 * n, 20 * n):
                lr_opt = opt * (n / 1.7e5) ** -0.5 * (40 if source == "opt-lion" and n > 6e5 else 1)
                for lr in grid:
                    for b in (1024, 2048, 4096):
                        runs.append({"source": source, "name": f"{n:g}-{d:g}-{lr:.3g}-{b}", "n_params": n, "tokens": d,
                                     "lr": float(lr), "batch_tokens": float(b), "batch_size": b / 256, "seq_len": 256,
                                     "optimizer": optimizer, "final_loss": _bowl(n, d, lr, b, lr_opt),
                                     "status": "done", "code_version": "t"})
    storage.add_runs(db, runs)
    export_demo(db, ["opt-adamw", "opt-lion"], results / axis.EXPORT)
    (results / axis.STEP_TIMES).write_text(json.dumps({"device": "test", "torch": "t", "rows": [
        {"d_model": 512, "batch": 8, "optimizer": "adamw", "step_s": 0.010, "ratio": 1.0},
        {"d_model": 512, "batch": 8, "optimizer": "lion", "step_s": 0.012, "ratio": 1.2}]}))
    # A later re-timing of one optimizer, in its own folder: tabulated beside AdamW's of that run.
    (results / "lion-retimed").mkdir()
    (results / "lion-retimed" / axis.STEP_TIMES).write_text(json.dumps({"device": "card", "torch": "t", "rows": [
        {"d_model": 512, "batch": 8, "optimizer": "adamw", "step_s": 0.011, "ratio": 1.0},
        {"d_model": 512, "batch": 8, "optimizer": "lion", "step_s": 0.0121, "ratio": 1.1}]}))
    rep = axis.stage_report(tmp_path / "work", results, bootstrap=50)
    adamw, lion = rep["optimizers"]["adamw"], rep["optimizers"]["lion"]
    assert len(adamw["groups"]) == len(lion["groups"]) == 6
    assert all(g["inside"] for g in adamw["groups"])
    assert [g["inside"] for g in lion["groups"]].count(False) == 2  # the largest size's two budgets
    assert adamw["fit"]["coefficients"]["alpha_lr"] < 0
    assert adamw["fit"]["coupling"]["theory"] == 0.5
    text = (results / "report.md").read_text()
    assert "| lion | 6.6e+05 |" in text and "**no**" in text
    assert "| 512 | 8 | lion | 12.00 | 1.200x | <= 1.15x (**missed**) |" in text
    assert "| 512 | 8 | adamw | 10.00 | 1.000x | (reference) |" in text
    assert "| lion-retimed | card | 512 | 8 | lion | 12.10 | 11.00 | 1.100x | <= 1.15x (met) |" in text
    assert json.loads((results / "report.json").read_text())["optimizers"]["lion"]["source"] == "opt-lion"
    assert yaml.safe_load((results / "lion.yaml").read_text())["name"] == "opt-lion"
