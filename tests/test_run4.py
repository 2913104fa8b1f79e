"""Validation run 4's stage script (benchmarks/run4_validation.py, issue 16): its specs are the
issue's design, and its report scores held-out runs against a prediction as the issue says
(regret on seed means with an interval, the final-loss error, the presets). The GPU stages
themselves run on the device; their CPU smoke run is in BENCHMARKS.md."""

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
import run4_validation as run4  # noqa: E402

from hpscale.db import storage  # noqa: E402
from hpscale.db.engine import Database  # noqa: E402
from hpscale.service.demo import export_demo  # noqa: E402
from hpscale.sweeps.plan import build_plan  # noqa: E402
from hpscale.sweeps.spec import load_spec  # noqa: E402


def test_the_sweep_and_the_held_out_model_are_the_issues_design() -> None:
    spec = load_spec(run4.RUN4 / "sweep.yaml")
    plan = build_plan(spec)
    sizes = sorted({c.shape.n_params for c in plan.cells})
    assert len(sizes) >= 5 and sizes[-1] / sizes[0] >= 16
    assert all(len({c.tokens for c in plan.cells if c.shape.n_params == n}) >= 2 for n in sizes)
    assert len(spec.seeds) >= 2 and len(spec.batch_sizes) >= 3 and spec.refine.max_rounds >= 1
    assert spec.refine.batches and spec.seeds_vary == "init_and_data"
    steps = np.diff(np.log2(spec.lr.grid()))
    assert np.allclose(steps, 0.5, atol=1e-3)  # sqrt(2) steps
    held = run4.held_shape(run4.RUN4)
    assert held == {"d_model": 256, "n_layers": 6, "n_heads": 8}
    assert run4.held_n(run4.RUN4) / sizes[-1] == pytest.approx(4.0)
    assert len(run4.SEEDS) >= 3 and set(run4.LR_STEPS) >= {-2, -1, -0.5, 0, 0.5, 1, 2}


def _results(tmp_path: Path, prediction: dict, configs: dict[str, list[tuple[float, int, list[float]]]]) -> Path:
    """A results folder as the stages leave it: the specs, prediction.json, the held-out export."""
    results = tmp_path / "run4"
    results.mkdir()
    shutil.copy(run4.RUN4 / "sweep.yaml", results / "sweep.yaml")
    db = Database(f"sqlite:///{tmp_path / 'gpu.db'}")
    db.ensure_schema()
    n = run4.held_n(results)
    runs = []
    for source, rows in configs.items():
        (results / f"heldout-{source}.yaml").write_text(yaml.safe_dump({"name": source}))
        for lr, batch, losses in rows:
            runs += [{"source": source, "name": f"lr{lr}-b{batch}-s{s}", "n_params": n, "tokens": 10 * n, "lr": lr,
                      "batch_size": batch, "batch_tokens": 256.0 * batch, "seq_len": 256, "seed": s,
                      "final_loss": loss, "status": "done" if np.isfinite(loss) else "diverged", "code_version": "t"}
                     for s, loss in enumerate(losses)]
    storage.add_runs(db, runs)
    export_demo(db, list(configs), results / run4.HELD_EXPORT)
    db.dispose()
    (results / "prediction.json").write_text(json.dumps({"n_params": n, "tokens": 10 * n, **prediction}))
    return results


def test_the_report_scores_seed_means_and_the_presets(tmp_path: Path) -> None:
    base = {"hyper_law": "val4-hyper-joint", "candidates": {}, "laws": {}, "final_loss_interval": [3.0, 3.2]}
    grid = [(0.004 * 2.0**k, 8, [3.10 + 0.01 * k * k + e for e in (-0.003, 0.0, 0.003)]) for k in (-1, 0, 1)]
    results = _results(tmp_path, {**base, "lr": 0.004, "batch_size": 8, "final_loss": 3.05,
                                  "presets": {"steplaw": {"lr": 0.016, "batch_size": 16},
                                              "deepseek": {"lr": 0.002, "batch_size": 4}}},
                       {"val4-held": grid, "val4-held-steplaw": [(0.016, 16, [3.2, 3.21, float("nan")])],
                        "val4-held-deepseek": [(0.002, 4, [3.15, 3.16, 3.14])]})
    (tmp_path / "work").mkdir()
    db = run4.restore(tmp_path / "work", results)
    rep = run4.score_heldout(results, db)
    ours = rep["regret"]["hpscale"]
    assert ours["trained"] and ours["regret"] == 0.0 and ours["config"]["n"] == 3
    assert ours["interval"][0] == 0.0 and 0.0 < ours["interval"][1] < 0.01
    assert rep["regret"]["deepseek"]["regret"] == pytest.approx(3.15 / 3.10 - 1)
    assert rep["regret"]["steplaw"]["regret"] is None and rep["regret"]["steplaw"]["config"]["diverged"]
    assert rep["loss"]["measured"] == pytest.approx(3.10) and rep["loss"]["rel_error"] == pytest.approx(3.05 / 3.1 - 1)
    assert rep["targets"] == {"regret": True, "below_presets": True, "loss_error": True, "loss_inside_interval": True}
    text = run4.report_markdown(rep, [{"noise": {"rel_std": 0.005, "source": "repeats", "dof": 10}}])
    assert "| regret on seed means <= 0.3% | 0.00% [0.00%" in text and "**missed**" not in text
    assert "the heldout stage is not complete" in text  # no stages.json here: nothing says it is
    json.dumps(rep, allow_nan=False)
    # The report stage writes both files and the held-out figure (no fitted law here: no law figure).
    run4.stage_report(tmp_path / "work", results)
    assert "![fig-heldout](fig-heldout.png)" in (results / "report.md").read_text()
    assert (results / "fig-heldout.png").stat().st_size > 10_000 and not (results / "fig-hyper.png").exists()
    assert json.loads((results / "report.json").read_text())["targets"] == rep["targets"]
    for stage in ("sweep", "heldout"):
        run4.record_stage(results, stage, complete=True)
    rep = run4.score_heldout(results, db)
    assert "not complete" not in run4.report_markdown(rep, [{"noise": {"rel_std": None, "source": "none", "dof": 0}}])
    # A prediction off the trained grid is not scored as trained, and its loss is not measured.
    p = json.loads((results / "prediction.json").read_text())
    (results / "prediction.json").write_text(json.dumps({**p, "lr": 0.05}))
    rep = run4.score_heldout(results, db)
    assert not rep["regret"]["hpscale"]["trained"] and rep["loss"]["measured"] is None
    assert not any(rep["targets"].values())


def test_a_recommendation_that_was_not_trained_is_not_scored_as_trained(tmp_path: Path) -> None:
    grid = [(0.004 * 2.0**k, 8, [3.10 + 0.01 * k * k + e for e in (-0.003, 0.0, 0.003)]) for k in (-1, 0, 1)]
    results = _results(tmp_path, {"hyper_law": "x", "candidates": {}, "laws": {}, "lr": 0.004, "batch_size": 8,
                                  "final_loss": 3.5, "final_loss_interval": [3.4, 3.6],
                                  "presets": {"steplaw": {"lr": 0.03, "batch_size": 16}}},
                       {"val4-held": grid})
    (tmp_path / "work").mkdir()
    rep = run4.score_heldout(results, run4.restore(tmp_path / "work", results))
    assert not rep["regret"]["steplaw"]["trained"]  # its configuration is missing: nearest is not it
    assert rep["targets"]["regret"] and not rep["targets"]["below_presets"]
    assert rep["targets"]["loss_error"] is False and rep["targets"]["loss_inside_interval"] is False
    assert "**missed**" in run4.report_markdown(rep, [{"noise": {"rel_std": None, "source": "none", "dof": 0}}])


def test_a_stage_with_failed_runs_is_not_complete(tmp_path: Path) -> None:
    # Run 4's sweep once called itself complete with a refinement cell failed (CUDA out of
    # memory): a failed run is finished for the workers, not for the experiment.
    import subprocess

    import _stages

    db = Database(f"sqlite:///{tmp_path / 'work.db'}")
    db.ensure_schema()
    row = {"source": "val4", "n_params": 1e6, "tokens": 1e7, "lr": 0.004, "batch_size": 64, "seq_len": 256,
           "code_version": "t"}
    storage.add_runs(db, [{**row, "name": "a", "status": "done", "final_loss": 3.0},
                          {**row, "name": "b", "status": "failed", "tags": {"error": "OutOfMemoryError: CUDA"}}])

    def ended() -> list[subprocess.Popen]:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        return [proc]

    assert not _stages.supervise(db, ended(), ["val4"], tmp_path / "x.json.gz", deadline=float("inf"))
    assert _stages.supervise(db, ended(), ["other"], tmp_path / "x.json.gz", deadline=float("inf"))


def test_the_stop_reaches_workers_started_with_sigint_ignored(tmp_path: Path) -> None:
    # gpu_session.sh starts the stages with SIGINT ignored (a background job of a script): the
    # stop must still reach the workers as KeyboardInterrupt, not wait for each and kill it.
    import signal
    import time

    import _stages

    db = Database(f"sqlite:///{tmp_path / 'work.db'}")
    db.ensure_schema()
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = _stages.start([sys.executable, "-c", "import time\ntry:\n    print('ready')\n    time.sleep(60)\n"
                                "except KeyboardInterrupt:\n    print('put back')\n    raise SystemExit(3)"],
                               tmp_path, "w")
        log = tmp_path / "log-w.txt"
        for _ in range(600):  # until the child is inside its try (its output is unbuffered)
            if log.read_text().startswith("ready"):
                break
            time.sleep(0.05)
        t0 = time.time()
        assert not _stages.supervise(db, [worker], ["val4"], tmp_path / "x.json.gz", deadline=0.0)
    finally:
        signal.signal(signal.SIGINT, before)
    assert worker.returncode == 3 and time.time() - t0 < 30
    assert log.read_text().split() == ["ready", "put", "back"]


def test_the_stop_reaches_the_workers_children(tmp_path: Path) -> None:
    # On several GPUs `hpscale sweep run` starts one worker per GPU: the stop must reach those
    # grandchildren too (as a Ctrl-C at a terminal does), not leave them running when it ends.
    import time

    import _stages

    db = Database(f"sqlite:///{tmp_path / 'work.db'}")
    db.ensure_schema()
    child = ("import sys, time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\n"
             "except KeyboardInterrupt:\n    open(sys.argv[1], 'w').write('put back')")
    parent = ("import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
              "try:\n    p.wait()\nexcept KeyboardInterrupt:\n    p.wait()\n    raise SystemExit(3)")
    mark = tmp_path / "grandchild.txt"
    worker = _stages.start([sys.executable, "-c", parent, child, str(mark)], tmp_path, "w")
    log = tmp_path / "log-w.txt"
    for _ in range(600):  # until the grandchild is inside its try
        if log.read_text().startswith("ready"):
            break
        time.sleep(0.05)
    t0 = time.time()
    assert not _stages.supervise(db, [worker], ["val4"], tmp_path / "x.json.gz", deadline=0.0)
    assert worker.returncode == 3 and time.time() - t0 < 30
    assert mark.read_text() == "put back"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_stage_stops_its_workers(tmp_path: Path, sig: str) -> None:
    # The workers lead their own process groups, which a Ctrl-C at the terminal (or `timeout`'s
    # SIGTERM to the stage) does not reach: supervise must pass the stop on, not orphan them.
    import signal
    import subprocess
    import time

    worker = ("import sys, time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\n"
              "except KeyboardInterrupt:\n    open(sys.argv[1], 'w').write('put back')")
    stage = ("import sys\nfrom pathlib import Path\nsys.path.insert(0, sys.argv[1])\nimport _stages\n"
             "from hpscale.db.engine import Database\nwork = Path(sys.argv[2])\n"
             "db = Database(f'sqlite:///{work / \"work.db\"}')\ndb.ensure_schema()\n"
             "p = _stages.start([sys.executable, '-c', sys.argv[3], sys.argv[4]], work, 'w')\n"
             "_stages.supervise(db, [p], ['val4'], work / 'x.json.gz', deadline=float('inf'))")
    mark = tmp_path / "worker.txt"
    proc = subprocess.Popen([sys.executable, "-c", stage, str(ROOT / "benchmarks"), str(tmp_path), worker,
                             str(mark)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "log-w.txt"
    for _ in range(600):  # until the worker is inside its try
        if log.exists() and log.read_text().startswith("ready"):
            break
        time.sleep(0.05)
    t0 = time.time()
    proc.send_signal(getattr(signal, sig))  # to the stage alone, not to its workers' group
    out, _ = proc.communicate(timeout=60)
    assert time.time() - t0 < 30 and proc.returncode != 0
    assert mark.exists() and mark.read_text() == "put back", out
    assert "interrupted: stopping the workers" in out
