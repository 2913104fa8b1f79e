"""GPU validation, run 4 (issue 16): an experiment designed for the measured run-to-run noise.

Sweep five sizes spanning 16x in N at two token budgets (WSD branches) with two seeds per
configuration; fit every candidate lr/batch law (near-optimal, smooth and joint; each with and
without the Step Law prior), the loss law and the trajectory laws; let the laws' own
extrapolation checks choose the law that predicts, and write that choice and the held-out specs
down before any held-out run exists; then train a 4x larger model at the prediction and on a
local grid around it with three seeds each. The stages run on different machines (a GPU for the
training, any CPU for the rest), so every stage leaves its results in files committed under
``benchmarks/validation/run4/`` and the next stage starts from those files.

    python benchmarks/run4_validation.py sweep   --work validation-work/run4   # GPU, ~15 min
    python benchmarks/run4_validation.py predict --work validation-work/run4   # CPU
    python benchmarks/run4_validation.py heldout --work validation-work/run4   # GPU

Stages (each resumable):
  sweep    train benchmarks/validation/run4/sweep.yaml (val4) and sched.yaml (val4-sched) with
           several workers on one GPU; export their runs and curves to run4/sweep.json.gz
           (``--minutes`` stops starting new cells when the stage's time is spent: the export
           then holds what finished, and the next call resumes the rest)
  predict  rebuild a database from run4/*.json.gz, fit every law, choose the predicting law by
           its extrapolation check, write run4/prediction.json and run4/heldout-*.yaml
  heldout  train the held-out specs (the local grid and each preset's recommendation, three
           seeds each); export run4/heldout.json.gz
Nothing here is tuned after a held-out run exists: ``predict`` refuses to run again once
run4/heldout.json.gz is present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

from hpscale.db import storage  # noqa: E402
from hpscale.db.engine import Database  # noqa: E402
from hpscale.db.errors import NotFoundError  # noqa: E402
from hpscale.fitting.errors import FittingError  # noqa: E402

RUN4 = ROOT / "benchmarks" / "validation" / "run4"  # the specs, and every stage's exported results
SWEEP, SCHED = "val4", "val4-sched"
SWEEP_EXPORT, HELD_EXPORT = "sweep.json.gz", "heldout.json.gz"
# The held-out model: the sweep's family (6 layers, head_dim 32) at width 256,
# 12 * 6 * 256^2 = 4.72M = 4.0x the largest swept size (1.18M), at 10 tokens per parameter.
HELD_SHAPE = {"d_model": 256, "n_layers": 6, "n_heads": 8}
TOKENS_PER_PARAM = 10
SEQ_LEN = 256
SEEDS = [0, 1, 2]
HELD_GRID, HELD_PRESETS = "val4-held", ("steplaw", "deepseek")
HELD_SOURCES = (HELD_GRID, *(f"val4-held-{p}" for p in HELD_PRESETS))
# The local grid around the prediction: lr x/÷ 2^0.5, 2, 4 at the predicted batch, and the batch
# x/÷ 2 at the predicted lr (the design, as a cross rather than a full product: the lr
# line is where run 3 missed).
LR_STEPS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
BATCH_STEPS = (-1.0, 1.0)
# The candidate lr/batch laws; the one whose extrapolation check (refit without the largest
# swept size, scored on it) is best predicts. Decided before any held-out run exists.
HYPER_CANDIDATES = {
    f"hyper-{method}{'-steplaw' if prior else ''}": dict(kind="hyper", form="steplaw", method=method, prior=prior)
    for method in ("near_optimal", "smooth", "joint") for prior in (None, "steplaw")
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def held_n() -> float:
    return 12.0 * HELD_SHAPE["n_layers"] * HELD_SHAPE["d_model"] ** 2


def db_url(work: Path) -> str:
    return f"sqlite:///{work / 'validation.db'}"


def env(work: Path) -> dict[str, str]:
    return {**os.environ, "HPSCALE_DATA_DIR": str(work / "data"), "PYTHONUNBUFFERED": "1"}


def hpscale(work: Path, *args: str, log_name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hpscale.service.cli", "--database", db_url(work), *args]
    log("$ hpscale " + " ".join(args))
    out = open(work / f"log-{log_name}.txt", "a")
    return subprocess.Popen(cmd, env=env(work), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def restore(work: Path, results: Path) -> Database:
    """The work database, with the exported results loaded (idempotent: a fresh machine gets the
    earlier stages' runs, a warm one loses nothing)."""
    from hpscale.service.demo import load_demo

    db = Database(db_url(work))
    db.ensure_schema()
    for name in (SWEEP_EXPORT, HELD_EXPORT):
        if (results / name).exists():
            log(f"loading {name}: {load_demo(db, results / name)}")
    return db


def export(db: Database, sources: list[str], path: Path, laws: list[str] = ()) -> None:
    """Write the sources' finished runs (with curves) and ``laws`` to ``path``, and a copy under
    $OUT when the device tool runs this (its files come back to the project)."""
    from hpscale.service.demo import export_demo

    counts = export_demo(db, sources, path, laws)
    log(f"exported {counts} to {path}")
    out = os.environ.get("OUT")
    if out:
        shutil.copy(path, Path(out) / path.name)


# -- stage sweep ----------------------------------------------------------------------------
def stage_sweep(work: Path, results: Path, minutes: float, workers: int, device: str) -> None:
    from hpscale.service.settings import Settings
    from hpscale.sweeps.cellrun import prepare_corpus
    from hpscale.sweeps.spec import load_spec

    db = restore(work, results)
    os.environ["HPSCALE_DATA_DIR"] = str(work / "data")
    t0 = time.time()
    prepare_corpus(load_spec(results / "sweep.yaml"), Settings().data_dir / "corpora")
    log(f"corpus ready in {time.time() - t0:.0f} s")
    procs = [hpscale(work, "sweep", "run", str(results / name), "--device", device, log_name=name)
             for name in ("sweep.yaml", "sched.yaml")]
    time.sleep(20)  # let each `sweep run` store its plan before workers join it
    procs += [hpscale(work, "worker", "--sweep", SWEEP, "--no-progress", "--device", device, log_name=f"worker-{i}")
              for i in range(workers)]
    deadline = t0 + 60 * minutes
    while any(p.poll() is None for p in procs):
        if time.time() > deadline:
            log(f"{minutes:g} minutes spent: stopping the workers (finished runs are kept; a rerun resumes)")
            for p in procs:
                if p.poll() is None:
                    p.send_signal(2)  # SIGINT: a worker finishes nothing more, stores what it has
            for p in procs:
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(10)
    counts = {s: len(storage.list_runs(db, sources=[s], statuses=["done", "diverged"])) for s in (SWEEP, SCHED)}
    log(f"finished runs: {counts}; logs in {work}")
    export(db, [SWEEP, SCHED], results / SWEEP_EXPORT)


# -- stage predict --------------------------------------------------------------------------
def _score(row: Any) -> tuple[float, float]:
    """An extrapolation check's rank: mean loss regret on the held-out size, then the summed
    |log error| of lr* and B*; a missing number ranks last (0.0 is a perfect score)."""
    check = row.extrapolation or {}

    def value(name: str) -> float:
        v = check.get(name)
        return math.inf if v is None or check.get("failed") else float(v)

    return value("mean_loss_regret"), value("mean_abs_lr_log_error") + value("mean_abs_batch_log_error")


def _trajectory_runs(db: Database) -> list[str]:
    """The curves of one model under three schedules: val4-sched's cosine runs and the sweep's WSD
    runs (both budgets) of the same size, batch, lr and seeds."""
    sched = [r for r in storage.list_runs(db, sources=[SCHED]) if r.status == "done"]
    if not sched:
        return []
    ref = sched[0]
    same = [r for r in storage.list_runs(db, sources=[SWEEP]) if r.status == "done" and r.n_params == ref.n_params
            and r.batch_size == ref.batch_size and r.lr and abs(math.log(r.lr / ref.lr)) < 1e-3]
    return sorted({r.name for r in sched + same})


def stage_predict(work: Path, results: Path) -> dict[str, Any]:
    from hpscale.service import fits
    from hpscale.service.laws import recommend

    if (results / HELD_EXPORT).exists():
        raise SystemExit(f"{results / HELD_EXPORT} exists: the prediction was made before the held-out runs and stays")
    db = restore(work, results)
    laws: dict[str, Any] = {}
    for key, kw in {**HYPER_CANDIDATES, "loss": dict(kind="loss")}.items():
        name = f"val4-{key}"
        try:
            row = storage.get_law(db, name)
        except NotFoundError:
            try:
                row = fits.fit_and_store(db, sources=[SWEEP], n_bootstrap=1000, on_edge="warn", name=name, **kw)
            except FittingError as exc:  # reported; a candidate that cannot be fitted cannot be chosen
                log(f"{name}: could not be fitted: {exc}")
                continue
        laws[key] = row
        log(f"{name}: {json.dumps(row.record['coefficients'])}; check: {(row.extrapolation or {}).get('summary')}")
    traj = _trajectory_runs(db)
    for form in ("multi_power", "momentum"):
        name = f"val4-trajectory-{form}"
        try:
            row = storage.get_law(db, name)
        except NotFoundError:
            try:
                row = fits.fit_and_store(db, kind="trajectory", form=form, sources=[SWEEP, SCHED], run_names=traj,
                                         name=name)
            except FittingError as exc:  # reported; the experiment goes on without it
                log(f"{name}: could not be fitted: {exc}")
                continue
        laws[f"trajectory-{form}"] = row
        log(f"{name}: check: {(row.extrapolation or {}).get('summary')}")

    fitted = [k for k in HYPER_CANDIDATES if k in laws]
    if not fitted:
        raise SystemExit("no candidate lr/batch law could be fitted on the sweep")
    chosen = min(fitted, key=lambda k: _score(laws[k]))
    log(f"prediction law: {laws[chosen].name} (best extrapolation check of {len(HYPER_CANDIDATES)} candidates)")
    n, d = held_n(), TOKENS_PER_PARAM * held_n()
    pred = recommend(db, n, d, seq_len=SEQ_LEN, law=laws[chosen].id)
    loss_pred = (fits.predict_loss(db, laws["loss"].id, n, d) if "loss" in laws
                 else {"final_loss": None, "interval": None, "warnings": ["no loss law could be fitted"]})
    presets = {p: recommend(db, n, d, seq_len=SEQ_LEN, law=p) for p in HELD_PRESETS}
    prediction = {
        "n_params": n, "tokens": d, "hyper_law": laws[chosen].name,
        "candidates": {k: {"law": laws[k].name, "check": (laws[k].extrapolation or {}).get("summary"),
                           "score": list(_score(laws[k]))} for k in fitted},
        "lr": pred.lr, "batch_tokens": pred.batch_tokens, "batch_size": max(1, round(pred.batch_tokens / SEQ_LEN)),
        "lr_interval": pred.lr_interval, "batch_tokens_interval": pred.batch_tokens_interval,
        "final_loss": loss_pred["final_loss"], "final_loss_interval": loss_pred["interval"],
        "final_loss_warnings": loss_pred["warnings"],
        "presets": {p: {"lr": r.lr, "batch_tokens": r.batch_tokens, "batch_size": max(1, round(r.batch_tokens / SEQ_LEN))}
                    for p, r in presets.items()},
        "laws": {k: v.name for k, v in laws.items()},
    }
    (results / "prediction.json").write_text(json.dumps(prediction, indent=2) + "\n")
    log(f"prediction: {json.dumps(prediction)}")
    write_heldout_specs(results, prediction)
    export(db, [SWEEP, SCHED], results / SWEEP_EXPORT, [v.name for v in laws.values()])
    out = os.environ.get("OUT")
    if out:
        for path in [results / "prediction.json", *sorted(results.glob("heldout-*.yaml"))]:
            shutil.copy(path, Path(out) / path.name)
    return prediction


def heldout_spec(results: Path, name: str, lrs: list[float], batches: list[int]) -> dict[str, Any]:
    """A held-out spec: the held-out shape at 10 tokens/param with the sweep's WSD schedule (one
    budget: its warmup is the sweep's, 5% of the 10 tokens/param steps), three seeds."""
    base = yaml.safe_load((results / "sweep.yaml").read_text())
    schedule = {k: v for k, v in base["schedule"].items() if k != "branches"}
    base.update(name=name, description=f"run 4 held-out 4x model: {name}", sizes=[HELD_SHAPE],
                tokens={"per_param": [TOKENS_PER_PARAM]}, lr={"values": lrs}, batch_sizes=sorted(set(batches)),
                schedule=schedule, seeds=SEEDS, refine={"max_rounds": 0})
    return base


def write_heldout_specs(results: Path, p: dict[str, Any]) -> list[Path]:
    b = p["batch_size"]
    specs = {
        HELD_GRID: heldout_spec(results, HELD_GRID, [p["lr"] * 2.0**k for k in LR_STEPS], [b]),
        f"{HELD_GRID}-batch": heldout_spec(results, f"{HELD_GRID}-batch", [p["lr"]],
                                           [max(1, round(b * 2.0**k)) for k in BATCH_STEPS]),
        **{f"val4-held-{k}": heldout_spec(results, f"val4-held-{k}", [v["lr"]], [v["batch_size"]])
           for k, v in p["presets"].items()},
    }
    paths = []
    for name, spec in specs.items():
        path = results / f"heldout-{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        paths.append(path)
    return paths


# -- stage heldout --------------------------------------------------------------------------
def stage_heldout(work: Path, results: Path, minutes: float, workers: int, device: str) -> None:
    db = restore(work, results)
    specs = sorted(results.glob("heldout-*.yaml"))
    if not specs:
        raise SystemExit("no held-out specs: run the predict stage first (and commit what it wrote)")
    procs = [hpscale(work, "sweep", "run", str(s), "--device", device, log_name=s.stem) for s in specs]
    time.sleep(20)
    procs += [hpscale(work, "worker", "--sweep", HELD_GRID, "--no-progress", "--device", device,
                      log_name=f"held-worker-{i}") for i in range(workers)]
    deadline = time.time() + 60 * minutes
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(10)
    for p in procs:
        if p.poll() is None:
            p.send_signal(2)
    for p in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
    sources = [yaml.safe_load(s.read_text())["name"] for s in specs]
    export(db, sources, results / HELD_EXPORT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["sweep", "predict", "heldout"])
    parser.add_argument("--work", type=Path, default=ROOT / "validation-work" / "run4")
    parser.add_argument("--minutes", type=float, default=18.0, help="GPU stages: stop starting work after this long")
    parser.add_argument("--workers", type=int, default=3, help="GPU stages: extra workers sharing the GPU")
    parser.add_argument("--device", default="cuda", help="GPU stages: the workers' device")
    parser.add_argument("--results", type=Path, default=RUN4, help="the specs and the exported results (committed)")
    args = parser.parse_args()
    work, results = args.work.resolve(), args.results.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"stage {args.stage}")
    if args.stage == "sweep":
        stage_sweep(work, results, args.minutes, args.workers, args.device)
    elif args.stage == "predict":
        stage_predict(work, results)
    else:
        stage_heldout(work, results, args.minutes, args.workers, args.device)
    log("done")


if __name__ == "__main__":
    main()
