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
    python benchmarks/run4_validation.py heldout --work validation-work/run4   # GPU, ~7 min
    python benchmarks/run4_validation.py report  --work validation-work/run4   # CPU

(``bash benchmarks/gpu_session.sh run4 start`` chains the GPU stages in one device session.)
Stages (each resumable; run4/stages.json records what each did and whether it is complete):
  sweep    train benchmarks/validation/run4/sweep.yaml (val4) and sched.yaml (val4-sched) with
           several workers on one GPU; export their runs and curves to run4/sweep.json.gz every
           two minutes and at the end (``--minutes`` stops the workers when the stage's time is
           spent: the export then holds what finished, and a rerun, on this machine or a fresh
           one that restores the export, trains only the rest)
  predict  rebuild a database from run4/*.json.gz, fit every law, choose the predicting law by
           its extrapolation check, write run4/prediction.json and run4/heldout-*.yaml
  heldout  train the held-out specs (the local grid and each preset's recommendation, three
           seeds each); export run4/heldout.json.gz the same way
  report   score the held-out runs against the prediction (regret on seed means with its
           interval, final-loss error, the issue's targets): run4/report.md and report.json
Nothing here is tuned after a held-out run exists: once run4/prediction.json is written,
``predict`` keeps it, and it refuses to predict at all when held-out results exist without it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _stages import (copy_out, export, hpscale, log, read_stages, record_stage,  # noqa: E402
                     supervise)
from _stages import restore as restore_exports  # noqa: E402

from hpscale.db import storage  # noqa: E402
from hpscale.db.engine import Database  # noqa: E402
from hpscale.db.errors import NotFoundError  # noqa: E402
from hpscale.fitting.errors import FittingError  # noqa: E402

RUN4 = ROOT / "benchmarks" / "validation" / "run4"  # the specs, and every stage's exported results
SWEEP, SCHED = "val4", "val4-sched"
SWEEP_EXPORT, HELD_EXPORT = "sweep.json.gz", "heldout.json.gz"
TOKENS_PER_PARAM = 10
SEEDS = [0, 1, 2]
HELD_GRID, HELD_PRESETS = "val4-held", ("steplaw", "deepseek")
# The local grid around the prediction: lr x/÷ 2^0.5, 2, 4 at the predicted batch, and the batch
# x/÷ 2 at the predicted lr (the design, as a cross rather than a full product: the lr
# line is where run 3 missed).
LR_STEPS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
BATCH_STEPS = (-1.0, 1.0)
# The candidate lr/batch laws; the one whose extrapolation check (refit without the largest
# swept size, scored on it) is best predicts. Decided before any held-out run exists.
TRAJECTORY_FORMS = ("multi_power", "momentum")
HYPER_CANDIDATES = {
    f"hyper-{method}{'-steplaw' if prior else ''}": dict(kind="hyper", form="steplaw", method=method, prior=prior)
    for method in ("near_optimal", "smooth", "joint") for prior in (None, "steplaw")
}


def held_shape(results: Path) -> dict[str, int]:
    """The held-out model: the sweep's largest shape at twice the width, same depth and head size
    (4x its non-embedding parameters; run 4: width 128 -> 256, 1.18M -> 4.72M)."""
    top = max(yaml.safe_load((results / "sweep.yaml").read_text())["sizes"], key=lambda z: z["d_model"])
    head_dim = top["d_model"] // top["n_heads"]
    return {"d_model": 2 * top["d_model"], "n_layers": top["n_layers"], "n_heads": 2 * top["d_model"] // head_dim}


def seq_len(results: Path) -> int:
    """The sweep's sequence length (tokens); the held-out runs use it too."""
    return int(yaml.safe_load((results / "sweep.yaml").read_text())["seq_len"])


def held_n(results: Path) -> float:
    shape = held_shape(results)
    return 12.0 * shape["n_layers"] * shape["d_model"] ** 2


def restore(work: Path, results: Path) -> Database:
    """The work database with run 4's exports loaded (see ``_stages.restore``)."""
    return restore_exports(work, results, (SWEEP_EXPORT, HELD_EXPORT))


# -- stage sweep ----------------------------------------------------------------------------
def stage_sweep(work: Path, results: Path, minutes: float, workers: int, device: str) -> None:
    from hpscale.service.settings import Settings
    from hpscale.sweeps.cellrun import prepare_corpus
    from hpscale.sweeps.spec import load_spec

    if read_stages(results).get("sweep", {}).get("complete"):
        log("the sweep stage is complete (stages.json): nothing to do")
        return
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
    complete = supervise(db, procs, [SWEEP, SCHED], results / SWEEP_EXPORT, t0 + 60 * minutes)
    counts = {s: len(storage.list_runs(db, sources=[s], statuses=["done", "diverged"])) for s in (SWEEP, SCHED)}
    log(f"finished runs: {counts}; logs in {work}")
    export(db, [SWEEP, SCHED], results / SWEEP_EXPORT)
    spent = read_stages(results).get("sweep", {}).get("seconds", 0.0) + time.time() - t0
    record_stage(results, "sweep", complete=complete, runs=counts, seconds=round(spent), device=device)


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


def stage_predict(work: Path, results: Path, allow_incomplete: bool = False) -> dict[str, Any]:
    from hpscale.service import fits
    from hpscale.service.laws import recommend

    if (results / "prediction.json").exists():
        log("prediction.json exists: it was decided before the held-out runs and stays (delete it, and every "
            "held-out result, to predict again)")
        prediction = json.loads((results / "prediction.json").read_text())
        if not list(results.glob("heldout-*.yaml")):  # a stage that died after its decision: finish it
            write_heldout_specs(results, prediction)
            record_stage(results, "predict", complete=True, hyper_law=prediction["hyper_law"])
        return prediction
    if (results / HELD_EXPORT).exists():
        raise SystemExit(f"{results / HELD_EXPORT} exists without a prediction: predicting now would see it")
    if not read_stages(results).get("sweep", {}).get("complete"):
        if not allow_incomplete:
            raise SystemExit("the sweep stage is not complete (stages.json): run it again to finish it, or "
                             "predict from the runs that finished with --allow-incomplete (the prediction stays)")
        log("warning: the sweep stage is not complete (stages.json): predicting from the runs that finished")
    db = restore(work, results)
    # A new prediction fits every law anew: one found by name was fitted for an earlier decision
    # (on an incomplete sweep, say). Within this call a law is fitted once.
    names = [f"val4-{key}" for key in (*HYPER_CANDIDATES, "loss")] + [f"val4-trajectory-{f}" for f in TRAJECTORY_FORMS]
    for law in storage.list_laws(db):
        if law.name in names:
            storage.delete_law(db, law.id)
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
    for form in TRAJECTORY_FORMS:
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
    n = held_n(results)
    d = TOKENS_PER_PARAM * n
    seq = seq_len(results)
    pred = recommend(db, n, d, seq_len=seq, law=laws[chosen].id)
    loss_pred = (fits.predict_loss(db, laws["loss"].id, n, d) if "loss" in laws
                 else {"final_loss": None, "interval": None, "warnings": ["no loss law could be fitted"]})
    presets = {p: recommend(db, n, d, seq_len=seq, law=p) for p in HELD_PRESETS}
    prediction = {
        "n_params": n, "tokens": d, "hyper_law": laws[chosen].name,
        "candidates": {k: {"law": laws[k].name, "check": (laws[k].extrapolation or {}).get("summary"),
                           "score": [v if math.isfinite(v) else None for v in _score(laws[k])]} for k in fitted},
        "lr": pred.lr, "batch_tokens": pred.batch_tokens, "batch_size": max(1, round(pred.batch_tokens / seq)),
        "lr_interval": pred.lr_interval, "batch_tokens_interval": pred.batch_tokens_interval,
        "final_loss": loss_pred["final_loss"], "final_loss_interval": loss_pred["interval"],
        "final_loss_warnings": loss_pred["warnings"],
        "presets": {p: {"lr": r.lr, "batch_tokens": r.batch_tokens, "batch_size": max(1, round(r.batch_tokens / seq))}
                    for p, r in presets.items()},
        "laws": {k: v.name for k, v in laws.items()},
    }
    (results / "prediction.json").write_text(json.dumps(prediction, indent=2) + "\n")
    log(f"prediction: {json.dumps(prediction)}")
    for path in [results / "prediction.json", *write_heldout_specs(results, prediction)]:
        copy_out(path)
    export(db, [SWEEP, SCHED], results / SWEEP_EXPORT, [v.name for v in laws.values()])
    record_stage(results, "predict", complete=True, hyper_law=laws[chosen].name)
    return prediction


def heldout_spec(results: Path, name: str, lrs: list[float], batches: list[int]) -> dict[str, Any]:
    """A held-out spec: the held-out shape at 10 tokens/param with the sweep's WSD schedule (one
    budget: its warmup is the sweep's, 5% of the 10 tokens/param steps), three seeds."""
    base = yaml.safe_load((results / "sweep.yaml").read_text())
    schedule = {k: v for k, v in base["schedule"].items() if k != "branches"}
    base.update(name=name, description=f"run 4 held-out 4x model: {name}", sizes=[held_shape(results)],
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
def heldout_sources(results: Path) -> list[str]:
    return [yaml.safe_load(path.read_text())["name"] for path in sorted(results.glob("heldout-*.yaml"))]


def stage_heldout(work: Path, results: Path, minutes: float, workers: int, device: str) -> None:
    if read_stages(results).get("heldout", {}).get("complete"):
        log("the held-out stage is complete (stages.json): nothing to do")
        return
    specs = sorted(results.glob("heldout-*.yaml"))
    if not specs:
        raise SystemExit("no held-out specs: run the predict stage first (and commit what it wrote)")
    db = restore(work, results)
    t0 = time.time()
    procs = [hpscale(work, "sweep", "run", str(s), "--device", device, log_name=s.stem) for s in specs]
    time.sleep(20)
    procs += [hpscale(work, "worker", "--sweep", HELD_GRID, "--no-progress", "--device", device,
                      log_name=f"held-worker-{i}") for i in range(workers)]
    sources = heldout_sources(results)
    complete = supervise(db, procs, sources, results / HELD_EXPORT, t0 + 60 * minutes)
    counts = {s: len(storage.list_runs(db, sources=[s], statuses=["done", "diverged"])) for s in sources}
    export(db, sources, results / HELD_EXPORT)
    spent = read_stages(results).get("heldout", {}).get("seconds", 0.0) + time.time() - t0
    record_stage(results, "heldout", complete=complete, runs=counts, seconds=round(spent), device=device)


# -- stage report ---------------------------------------------------------------------------
REGRET_TARGET, LOSS_TARGET = 0.003, 0.02  # the targets: regret on seed means, final-loss error


def _pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _num(v: float | None, missing: str = "-") -> str:
    return missing if v is None else f"{v:.4f}"


def _span(v: list[float] | None) -> str:
    return "-" if not v else f"[{v[0]:.4f}, {v[1]:.4f}]"


def _interval(v: list[float] | None, digits: int = 2) -> str:
    return "-" if not v else f"[{_pct(v[0], digits)}, {_pct(v[1], digits)}]"


def score_heldout(results: Path, db: Database) -> dict[str, Any]:
    """The held-out results against the prediction: each recommendation's regret on seed means
    (with its interval), the final-loss error, and the issue's targets met or not."""
    from hpscale.fitting.validate import seed_regret
    from hpscale.service import fits

    if not (results / "prediction.json").exists():
        raise SystemExit("no prediction.json: run the predict stage first (and commit what it wrote)")
    p = json.loads((results / "prediction.json").read_text())
    rows = [r for r in storage.list_runs(db, sources=heldout_sources(results)) if r.status in ("done", "diverged")]
    if not rows:
        raise SystemExit("no held-out runs: run the heldout stage first (and commit what it exported)")
    held = fits.runset(rows)
    recs = {"hpscale": (p["lr"], p["batch_size"])} | {k: (v["lr"], v["batch_size"]) for k, v in p["presets"].items()}
    scores: dict[str, Any] = {}
    seq = seq_len(results)
    for who, (lr, batch_size) in recs.items():
        r = seed_regret(held, lr, batch_size * seq)
        trained = abs(math.log(r["config"]["lr"] / lr)) < 1e-3 and r["config"]["batch_tokens"] == batch_size * seq
        scores[who] = {"lr": lr, "batch_size": batch_size, "trained": trained, **r}
    ours = scores["hpscale"]
    # The predicted loss is for a run at the recommendation: measured there, or not at all.
    measured = ours["config"]["mean"] if ours["trained"] else None
    pred, interval = p.get("final_loss"), p.get("final_loss_interval")
    loss = {"predicted": pred, "interval": interval, "measured": measured,
            "rel_error": None if pred is None or measured is None else pred / measured - 1.0,
            "inside": None if not interval or measured is None else interval[0] <= measured <= interval[1]}
    # A preset is beaten only where it was trained (a diverged preset, regret None, is beaten).
    presets = [(scores[k]["trained"], scores[k]["regret"]) for k in p["presets"]]
    targets = {
        "regret": ours["trained"] and ours["regret"] is not None and ours["regret"] <= REGRET_TARGET,
        "below_presets": ours["trained"] and ours["regret"] is not None
        and all(trained and (v is None or ours["regret"] < v) for trained, v in presets),
        "loss_error": loss["rel_error"] is not None and abs(loss["rel_error"]) <= LOSS_TARGET,
        "loss_inside_interval": bool(loss["inside"]),
    }
    other = {}
    for key, name in p["laws"].items():
        if not key.startswith("hyper-"):
            try:
                other[name] = (storage.get_law(db, name).extrapolation or {}).get("summary")
            except NotFoundError:
                other[name] = "not in the export"
    return {"prediction": p, "regret": scores, "loss": loss, "targets": targets, "other_laws": other,
            "stages": read_stages(results), "held_out_runs": len(rows)}


def sweep_groups(db: Database) -> list[dict[str, Any]]:
    """The sweep's noise estimate, then each swept (N, D): its best configuration by seed mean
    (``fitting.optimum.group_optima``) and how many configurations it has."""
    from hpscale.fitting.noise import estimate_noise
    from hpscale.fitting.optimum import group_optima
    from hpscale.service import fits

    runs = fits.runset([r for r in storage.list_runs(db, sources=[SWEEP]) if r.status in ("done", "diverged")])
    noise = estimate_noise(runs)
    out: list[dict[str, Any]] = [{"noise": {"rel_std": noise.rel_std, "source": noise.source, "dof": noise.dof}}]
    if not runs.usable.any():
        return out
    gid, keys = runs.average_repeats().group_keys()
    configs = dict(zip(keys, np.bincount(gid, minlength=len(keys)).tolist()))
    out += [{"n_params": g.n_params, "tokens": g.tokens, "configs": configs[(g.n_params, g.tokens)],
             "best_lr": g.best_lr, "best_batch_tokens": g.best_batch_tokens, "best_loss": g.best_loss}
            for g in group_optima(runs)]
    return out


def report_markdown(rep: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    p, loss, t = rep["prediction"], rep["loss"], rep["targets"]
    ok = {True: "met", False: "**missed**"}
    lines = [
        "# Validation run 4: the report", "",
        f"Held-out model: {p['n_params'] / 1e6:.2f}M non-embedding parameters, {p['tokens'] / 1e6:.1f}M tokens; "
        f"{rep['held_out_runs']} held-out runs. Prediction law: `{p['hyper_law']}` (chosen by its extrapolation "
        "check before any held-out run existed).", "",
        *[line for stage in ("sweep", "heldout") if not rep["stages"].get(stage, {}).get("complete")
          for line in (f"**Warning: the {stage} stage is not complete** (stages.json): these numbers are from "
                       "the runs that finished.", "")],
        "## Targets", "",
        "| target | value | |", "|---|---|---|",
        f"| regret on seed means <= {_pct(REGRET_TARGET, 1)} | {_pct(rep['regret']['hpscale']['regret'])} "
        f"{_interval(rep['regret']['hpscale']['interval'])} | {ok[t['regret']]} |",
        "| regret below both presets' | " + ", ".join(f"{k} {_pct(v['regret'])}" for k, v in rep["regret"].items()
                                                       if k != "hpscale") + f" | {ok[t['below_presets']]} |",
        f"| final-loss error <= {_pct(LOSS_TARGET, 0)} | {_pct(loss['rel_error'])} (predicted "
        f"{_num(loss['predicted'])}, measured {_num(loss['measured'])}) | {ok[t['loss_error']]} |",
        f"| measured loss inside the 95% interval | {_span(loss['interval'])} | {ok[t['loss_inside_interval']]} |",
        "",
        "## Regret of each recommendation", "",
        "Seed means; the interval is a 95% parametric bootstrap with the pooled seed noise (the best chosen "
        "again in every sample); p(best) is the share of samples in which the recommendation is the best "
        "configuration; smooth reads a quadratic fitted to the local landscape.", "",
        "| who | lr | batch | trained | seeds | regret | 95% interval | p(best) | smooth |", "|---|---|---|---|---|---|---|---|---|",
    ]
    for who, r in rep["regret"].items():
        lines.append(f"| {who} | {r['lr']:.4g} | {r['batch_size']} | {'yes' if r['trained'] else 'no (nearest)'} | "
                     f"{r['config']['n']} | {_pct(r['regret'])} | {_interval(r['interval'])} | "
                     f"{'-' if r['p_best'] is None else round(r['p_best'], 2)} | {_pct(r['smooth'])} |")
    noise = rep["regret"]["hpscale"]["noise"]
    lines += ["", f"Held-out seed noise (pooled): {_pct(noise and noise['rel_std'])} relative standard deviation"
              + (f" ({noise['dof']} degrees of freedom)." if noise else "."), "",
              "## Held-out configurations", "", "| lr | batch tokens | seeds | mean loss | sd |", "|---|---|---|---|---|"]
    for c in rep["regret"]["hpscale"]["configs"]:
        lines.append(f"| {c['lr']:.4g} | {c['batch_tokens']:.0f} | {c['n']} | "
                     f"{_num(c['mean'], 'diverged')} | {_num(c['sd'])} |")
    lines += ["", "## The candidates' extrapolation checks (before the held-out runs)", "",
              "| law | loss regret on the largest swept size | lr + batch log error | check |", "|---|---|---|---|"]
    for k, c in p["candidates"].items():
        regret, log_error = (v if v is not None and math.isfinite(v) else None for v in c["score"])
        lines.append(f"| {c['law']} | {_pct(regret, 3)} | {_num(log_error)} | {c['check'] or '-'} |")
    lines += ["", "## The loss and trajectory laws' checks", "", "| law | check |", "|---|---|"]
    lines += [f"| {name} | {check or '-'} |" for name, check in rep["other_laws"].items()]
    sweep_noise, *rows = groups
    lines += ["", "## The sweep: best configuration of each (N, D) by seed mean", "",
              f"Seed noise of the sweep ({sweep_noise['noise']['source']}): {_pct(sweep_noise['noise']['rel_std'])}.", "",
              "| N | D | configurations | best lr | best batch tokens | best loss |", "|---|---|---|---|---|---|"]
    for g in rows:
        lines.append(f"| {g['n_params'] / 1e6:.3f}M | {g['tokens'] / 1e6:.2f}M | {g['configs']} | {g['best_lr']:.4g} | "
                     f"{g['best_batch_tokens']:.0f} | {g['best_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_report(db: Database, rep: dict[str, Any], groups: list[dict[str, Any]], results: Path) -> list[Path]:
    """fig-heldout.png: the held-out landscape (seed means with their standard errors, every seed,
    each recommendation); fig-hyper.png: the sweep's group optima (seed means) and the
    predicting law's lr*(N, D) and B*(N, D) with their 95% bands, out to the held-out size.
    Needs matplotlib (a test dependency); without it the report has no figures."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: the report has no figures")
        return []
    from hpscale.fitting.registry import law_from_record

    p, seq = rep["prediction"], seq_len(results)
    held = [r for r in storage.list_runs(db, sources=heldout_sources(results)) if r.final_loss is not None]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    batches = sorted({c["batch_tokens"] for c in rep["regret"]["hpscale"]["configs"]})
    for i, b in enumerate(batches):
        rows = sorted((c for c in rep["regret"]["hpscale"]["configs"] if c["batch_tokens"] == b and c["mean"]),
                      key=lambda c: c["lr"])
        ax.errorbar([c["lr"] for c in rows], [c["mean"] for c in rows], fmt="o-" if len(rows) > 1 else "o",
                    yerr=[(c["sd"] or 0.0) / math.sqrt(c["n"]) for c in rows], color=f"C{i}", capsize=3,
                    label=f"batch {b / seq:.0f} x {seq}: seed mean +- s.e.")
        seeds = [(r.lr, r.final_loss) for r in held if r.batch_tokens == b]
        ax.scatter(*zip(*seeds), s=8, color=f"C{i}", alpha=0.5)
    for (who, r), marker in zip(rep["regret"].items(), ("*", "s", "^", "v")):
        mean = r["config"]["mean"] if r["trained"] else None
        if mean is not None:
            ax.scatter([r["lr"]], [mean], marker=marker, s=170, facecolors="none", edgecolors="k", zorder=4,
                       label=f"{who}: lr {r['lr']:.3g}, batch {r['batch_size']}, regret {_pct(r['regret'])}")
    if p.get("final_loss") is not None:
        ax.axhline(p["final_loss"], color="C3", ls="--", lw=1, label=f"predicted loss {p['final_loss']:.3f}")
    ax.set_xscale("log"); ax.set_xlabel("peak lr"); ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(f"held-out model: N = {p['n_params'] / 1e6:.2f}M, D = {p['tokens'] / 1e6:.1f}M tokens")
    ax.grid(alpha=0.3); ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(results / "fig-heldout.png", dpi=110); plt.close(fig)
    paths = [results / "fig-heldout.png"]

    try:
        law = law_from_record(storage.get_law(db, p["hyper_law"]).record)
    except (NotFoundError, FittingError):
        return paths
    rows = groups[1:]
    ratios = sorted({round(g["tokens"] / g["n_params"]) for g in rows})
    ns = np.geomspace(min(g["n_params"] for g in rows) / 1.5, p["n_params"] * 1.5, 60)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, ratio in enumerate(ratios):
        preds = [law.predict(n, ratio * n) for n in ns]
        ax1.plot(ns, [q.lr for q in preds], color=f"C{i}", label=f"lr*(N, {ratio} N)")
        ax2.plot(ns, [q.batch_tokens for q in preds], color=f"C{i}", label=f"B*(N, {ratio} N)")
        if preds[0].lr_interval:
            ax1.fill_between(ns, *zip(*[q.lr_interval for q in preds]), color=f"C{i}", alpha=0.12)
        if preds[0].batch_tokens_interval:
            ax2.fill_between(ns, *zip(*[q.batch_tokens_interval for q in preds]), color=f"C{i}", alpha=0.12)
        sel = [g for g in rows if round(g["tokens"] / g["n_params"]) == ratio]
        ax1.scatter([g["n_params"] for g in sel], [g["best_lr"] for g in sel], color=f"C{i}", zorder=3)
        ax2.scatter([g["n_params"] for g in sel], [g["best_batch_tokens"] for g in sel], color=f"C{i}", zorder=3)
    best = rep["regret"]["hpscale"]["best"]
    for ax, key, bkey in ((ax1, "lr", "lr"), (ax2, "batch_tokens", "batch_tokens")):
        ax.scatter([p["n_params"]], [p[key]], marker="*", s=180, color="C3", zorder=4, label="prediction (held-out)")
        if best:
            ax.scatter([p["n_params"]], [best[bkey]], marker="D", s=60, color="k", zorder=4,
                       label="best held-out configuration")
        ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel("N (non-embedding parameters)")
        ax.grid(alpha=0.3); ax.legend(fontsize=7)
    ax1.set_ylabel("peak lr"); ax2.set_ylabel("batch (tokens)")
    ax1.set_title(f"{p['hyper_law']}: group optima (seed means), 95% band")
    fig.tight_layout(); fig.savefig(results / "fig-hyper.png", dpi=110); plt.close(fig)
    return [*paths, results / "fig-hyper.png"]


def stage_report(work: Path, results: Path) -> dict[str, Any]:
    db = restore(work, results)
    rep = score_heldout(results, db)
    groups = sweep_groups(db)
    (results / "report.json").write_text(json.dumps({**rep, "sweep": groups}, indent=2) + "\n")
    figures = plot_report(db, rep, groups, results)
    text = report_markdown(rep, groups)
    if figures:
        text += "\n" + "\n".join(f"![{f.stem}]({f.name})" for f in figures) + "\n"
    (results / "report.md").write_text(text)
    log(f"report: {results / 'report.md'}; targets: {json.dumps(rep['targets'])}")
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["sweep", "predict", "heldout", "report"])
    parser.add_argument("--work", type=Path, default=ROOT / "validation-work" / "run4")
    parser.add_argument("--minutes", type=float, default=18.0, help="GPU stages: stop starting work after this long")
    parser.add_argument("--workers", type=int, default=3, help="GPU stages: extra workers sharing the GPU")
    parser.add_argument("--device", default="cuda", help="GPU stages: the workers' device")
    parser.add_argument("--results", type=Path, default=RUN4, help="the specs and the exported results (committed)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="predict: from the runs that finished when the sweep stage is not complete")
    args = parser.parse_args()
    if not (args.minutes > 0 and args.workers >= 0):
        parser.error("--minutes must be > 0 and --workers >= 0")
    if not (args.results / "sweep.yaml").is_file():
        parser.error(f"--results {args.results}: no sweep.yaml there (the run's specs and exports)")
    work, results = args.work.resolve(), args.results.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"stage {args.stage}")
    from hpscale.service.errors import InputError

    try:
        if args.stage == "sweep":
            stage_sweep(work, results, args.minutes, args.workers, args.device)
        elif args.stage == "predict":
            stage_predict(work, results, args.allow_incomplete)
        elif args.stage == "heldout":
            stage_heldout(work, results, args.minutes, args.workers, args.device)
        else:
            stage_report(work, results)
    except (FittingError, InputError, OSError, NotFoundError) as exc:  # one line, not a traceback
        raise SystemExit(f"stage {args.stage}: {exc}") from None
    log("done")


if __name__ == "__main__":
    main()
