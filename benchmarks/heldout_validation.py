"""End-to-end validation on a GPU: sweep small GPTs, fit the laws, predict a 4x larger model,
train it at the prediction and on a local grid around it, and report the regret.

One command reproduces the whole experiment on a GPU machine (one H100 or H200; VALIDATION.md
gives the times measured):

    python benchmarks/heldout_validation.py all --work validation-work

Stages (each resumable; ``all`` runs them in order):
  sweep    the sweeps of benchmarks/validation/: val-main and val-long (the grids the lr, batch and
           loss laws are fitted on) and the val-sched-* schedule runs (the trajectory laws), run
           concurrently
  predict  fit lr*(N, D), B*(N, D), L(N, D) and the trajectory laws; predict the held-out model;
           write the held-out specs (local grid lr x/÷2, x/÷4, batch x/÷2; Step Law's and
           DeepSeek's recommendations)
  heldout  train the held-out specs
  report   tables and plots into VALIDATION.md's folder (CPU only; needs matplotlib)
  demo     export the sweep's runs, curves and laws as the package's demo dataset
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

SPECS = ROOT / "benchmarks" / "validation"
MAIN, LONG = "val-main", "val-long"
# The trajectory laws' curves: one model (d_model 128), peak lr and batch under several schedules.
# val-main holds the cosine run of the same model, peak lr (its grid point 0.00399998) and
# tokens; the longest curve (cosine-long, 2x the tokens) is the one their extrapolation check
# holds out.
SCHEDULES = ("constant", "linear", "wsd", "cosine-long")
SCHED_SOURCES = tuple(f"val-sched-{k}" for k in SCHEDULES)
# The held-out model's runs: the local grid around the prediction, and each preset's recommendation.
HELD_GRID = "held-grid"
HELD_SOURCES = (HELD_GRID, "held-steplaw", "held-deepseek")
# The sweep's shape family (6 layers, head_dim 32) at twice the largest width:
# 12 * 6 * 320^2 = 7.37M = 4 x 1.84M non-embedding parameters.
HELD_SHAPE = {"d_model": 320, "n_layers": 6, "n_heads": 10}
# The candidate lr/batch laws. Which one predicts is decided by each one's extrapolation check on
# the sweep alone (refit without the largest N, scored on it), before any held-out run exists.
HYPER_CANDIDATES = {
    "hyper": dict(kind="hyper", form="steplaw", method="near_optimal"),
    "hyper_smooth": dict(kind="hyper", form="steplaw", method="smooth"),
    "hyper_full": dict(kind="hyper", form="full", method="near_optimal"),
    "hyper_full_smooth": dict(kind="hyper", form="full", method="smooth"),
}
TOKENS_PER_PARAM = 10
SEQ_LEN = 256


def held_n() -> float:
    return 12.0 * HELD_SHAPE["n_layers"] * HELD_SHAPE["d_model"] ** 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env(work: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["HPSCALE_DATA_DIR"] = str(work / "data")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def db_url(work: Path) -> str:
    return f"sqlite:///{work / 'validation.db'}"


def hpscale(work: Path, *args: str, log_name: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hpscale.service.cli", "--database", db_url(work), *args]
    logf = open(work / f"log-{log_name or args[0] + '-' + Path(args[-1]).stem}.txt", "a")
    log("$ hpscale " + " ".join(args))
    return subprocess.Popen(cmd, env=env(work), stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)


def run_concurrently(work: Path, specs: list[Path], extra_workers: dict[str, int] | None = None) -> None:
    """Train several specs at once on the same GPU, after building the shared corpus once;
    ``extra_workers`` adds ``hpscale worker`` processes to a sweep (its cells then train side by side)."""
    from hpscale.service.settings import Settings
    from hpscale.sweeps.cellrun import prepare_corpus
    from hpscale.sweeps.spec import load_spec

    os.environ["HPSCALE_DATA_DIR"] = str(work / "data")
    t0 = time.time()
    prepare_corpus(load_spec(specs[0]), Settings().data_dir / "corpora")
    log(f"corpus ready in {time.time() - t0:.0f} s")
    procs = [hpscale(work, "sweep", "run", str(s)) for s in specs]
    time.sleep(20)  # let each `sweep run` store its plan before workers join it
    for sweep, count in (extra_workers or {}).items():
        procs += [hpscale(work, "worker", "--sweep", sweep, "--no-progress", "--device", "cuda",
                          log_name=f"worker-{sweep}-{i}") for i in range(count)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a sweep failed (exit codes {codes}); see {work}/log-*.txt")


def stage_sweep(work: Path) -> None:
    # Small models leave the GPU mostly idle: extra workers train val-main's cells side by side.
    run_concurrently(work, [SPECS / "sweep_main.yaml", SPECS / "sweep_long.yaml",
                            *(SPECS / f"sched_{k}.yaml" for k in SCHEDULES)],
                     extra_workers={MAIN: 3, LONG: 1})


def choose_hyper_law(laws: dict[str, Any]) -> str:
    """The key of the candidate hyper law whose extrapolation check scored best: lowest mean loss
    regret on the held-out largest size, then lowest summed |log error| of lr* and B*."""
    def score(key: str) -> tuple[float, float]:
        check = laws[key].extrapolation or {}

        def value(name: str) -> float:  # a missing number ranks last; 0.0 is a perfect score
            v = check.get(name)
            return math.inf if v is None else float(v)

        return value("mean_loss_regret"), value("mean_abs_lr_log_error") + value("mean_abs_batch_log_error")

    return min(HYPER_CANDIDATES, key=score)


def stage_predict(work: Path) -> dict[str, Any]:
    from hpscale.service import fits
    from hpscale.service.laws import recommend

    db = Database(db_url(work))
    sources = [MAIN, LONG]
    laws: dict[str, Any] = {}
    for key, kw in {**HYPER_CANDIDATES, "loss": dict(kind="loss")}.items():
        name = f"validation-{key}"
        try:
            row = storage.get_law(db, name)
        except NotFoundError:
            row = fits.fit_and_store(db, sources=sources, n_bootstrap=1000, on_edge="warn", name=name, **kw)
        laws[key] = row
        log(f"{name}: {json.dumps(row.record['coefficients'])}; check: {(row.extrapolation or {}).get('summary')}")
    sched = storage.list_runs(db, sources=list(SCHED_SOURCES))
    short = min(sched, key=lambda r: r.tokens)
    cosine = [r for r in storage.list_runs(db, sources=[MAIN]) if (r.n_params, r.tokens, r.batch_size) ==
              (short.n_params, short.tokens, short.batch_size) and abs(math.log(r.lr / short.lr)) < 1e-3]
    traj_names = sorted({r.name for r in sched + cosine})  # names are unique within a source only
    for form in ("multi_power", "momentum"):
        name = f"validation-trajectory-{form}"
        try:
            row = storage.get_law(db, name)
        except NotFoundError:
            try:
                row = fits.fit_and_store(db, kind="trajectory", form=form, sources=[MAIN, *SCHED_SOURCES],
                                         run_names=traj_names, name=name)
            except FittingError as exc:  # reported, and the experiment goes on without it
                log(f"{name}: could not be fitted: {exc}")
                continue
        laws[f"trajectory_{form}"] = row
        log(f"{name}: check: {(row.extrapolation or {}).get('summary')}")

    chosen = choose_hyper_law(laws)
    log(f"prediction law: {laws[chosen].name} (best extrapolation check of {len(HYPER_CANDIDATES)} candidates)")
    n, d = held_n(), TOKENS_PER_PARAM * held_n()
    pred = recommend(db, n, d, seq_len=SEQ_LEN, law=laws[chosen].id)
    loss_pred = fits.predict_loss(db, laws["loss"].id, n, d)
    presets = {p: recommend(db, n, d, seq_len=SEQ_LEN, law=p) for p in ("steplaw", "deepseek")}
    prediction = {
        "n_params": n, "tokens": d, "lr": pred.lr, "batch_tokens": pred.batch_tokens,
        "batch_size": max(1, round(pred.batch_tokens / SEQ_LEN)), "lr_interval": pred.lr_interval,
        "batch_tokens_interval": pred.batch_tokens_interval, "final_loss": loss_pred["final_loss"],
        "hyper_law": chosen,
        "final_loss_interval": loss_pred["interval"], "law_ids": {k: v.id for k, v in laws.items()},
        "presets": {p: {"lr": r.lr, "batch_tokens": r.batch_tokens, "batch_size": max(1, round(r.batch_size))}
                    for p, r in presets.items()},
    }
    (work / "prediction.json").write_text(json.dumps(prediction, indent=2))
    log(f"prediction: {json.dumps(prediction)}")
    write_heldout_specs(work, prediction)
    return prediction


def heldout_spec(name: str, lrs: list[float], batches: list[int], rounds: int) -> dict[str, Any]:
    base = yaml.safe_load((SPECS / "sweep_main.yaml").read_text())
    base.update(name=name, description=f"held-out 4x model: {name}", sizes=[HELD_SHAPE],
                tokens={"per_param": [TOKENS_PER_PARAM]}, lr={"values": lrs},
                batch_sizes=sorted(set(batches)), refine={"max_rounds": rounds, "points": 1})
    return base


def write_heldout_specs(work: Path, p: dict[str, Any]) -> list[Path]:
    b = p["batch_size"]
    specs = {
        HELD_GRID: heldout_spec(HELD_GRID, [p["lr"] * 2.0**k for k in (-2, -1, 0, 1, 2)],
                                  [max(1, round(b / 2)), b, 2 * b], rounds=1),
        **{f"held-{k}": heldout_spec(f"held-{k}", [v["lr"]], [v["batch_size"]], rounds=0)
           for k, v in p["presets"].items()},
    }
    paths = []
    for name, spec in specs.items():
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        paths.append(path)
    return paths


def stage_heldout(work: Path) -> None:
    run_concurrently(work, [work / f"{name}.yaml" for name in HELD_SOURCES], extra_workers={HELD_GRID: 2})


def results(work: Path) -> dict[str, Any]:
    """The numbers of the report: regret of each recommendation and the loss prediction error."""
    db = Database(db_url(work))
    p = json.loads((work / "prediction.json").read_text())
    held = [r for s in HELD_SOURCES for r in storage.list_runs(db, sources=[s])]
    done = [r for r in held if r.status == "done" and r.final_loss is not None]
    best = min(done, key=lambda r: r.final_loss)

    def at(source: str, lr: float, batch: int) -> Any:
        cands = [r for r in done if r.source == source and r.batch_size == batch]
        return min(cands, key=lambda r: abs(math.log(r.lr / lr)))

    predicted = at(HELD_GRID, p["lr"], p["batch_size"])
    rows = {"hpscale (fitted here)": predicted}
    for k, v in p["presets"].items():
        rows[{"steplaw": "Step Law preset", "deepseek": "DeepSeek preset"}[k]] = at(f"held-{k}", v["lr"], v["batch_size"])
    return {
        "prediction": p, "best": best, "rows": rows, "held": held,
        "regret": {k: r.final_loss / best.final_loss - 1 for k, r in rows.items()},
        "loss_error": p["final_loss"] / best.final_loss - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["sweep", "predict", "heldout", "gpu", "report", "demo", "all"])
    parser.add_argument("--work", type=Path, default=ROOT / "validation-work")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    stages = {"gpu": ["sweep", "predict", "heldout"], "all": ["sweep", "predict", "heldout", "report", "demo"]}
    for stage in stages.get(args.stage, [args.stage]):
        log(f"stage {stage}")
        if stage in ("report", "demo"):
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from validation_report import write_demo, write_report  # CPU side: matplotlib, the package's demo file

            (write_report if stage == "report" else write_demo)(work, results if stage == "report" else None)
        else:
            {"sweep": stage_sweep, "predict": stage_predict, "heldout": stage_heldout}[stage](work)
    log("done")


if __name__ == "__main__":
    main()
