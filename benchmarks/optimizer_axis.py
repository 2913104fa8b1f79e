"""The optimizer axis on the GPU (issue 17): one sweep per optimizer, their lr* laws side by side.

The specs in ``benchmarks/optimizers/`` (AdamW, Lion, SGD-M, SGD-SaI, LAMB, Muon) share run 4's
model family and data: 3 sizes over 8.9x in N, 2 token budgets from one WSD trunk, 8 lrs x 3
batch sizes with refinement, one seed. Every stage leaves its results under
``benchmarks/optimizers/`` (committed) and the next starts from them, on any machine:

    python benchmarks/optimizer_axis.py steptime   # GPU, ~3 min: step time of each optimizer vs AdamW's
    python benchmarks/optimizer_axis.py sweep      # GPU, ~15 min: the six sweeps, side by side
    python benchmarks/optimizer_axis.py report     # CPU: fits, tables, report.md / report.json

(``bash benchmarks/gpu_session.sh optimizers start`` chains the GPU stages in one device session.)
  steptime  benchmarks/sweep_throughput.py's optimizer comparison at d_model 512 and 768 (K = 8,
            compiled, CUDA graph, bf16): optimizer_step_times.json
  sweep     all six specs at once, one ``hpscale sweep run`` each on one GPU; their runs and
            curves exported to sweeps.json.gz every two minutes and at the end (``--minutes``
            stops the workers; a rerun restores the export and trains only the rest; ``--only
            lamb`` trains that optimizer's sweep alone, the export keeping all six)
  report    per optimizer: each (N, D) group's best lr and loss and whether it lies inside the
            searched grid; the lr* law (Step Law's form, near-optimal) with its intervals; the
            exponent of lr* on the batch beside the theory's; the step-time table against the
            issue's targets (at most 1.15x AdamW's for Lion, SGD, SGD-SaI and LAMB, 1.5x for Muon),
            and the later re-timings found in folders beside it (FOLDER/optimizer_step_times.json,
            sweep_throughput.py's output; the folders sort in the order they were timed)
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
from _stages import export, hpscale, log, read_stages, record_stage, restore, supervise  # noqa: E402

from hpscale.db import storage  # noqa: E402
from hpscale.db.engine import Database  # noqa: E402
from hpscale.fitting.errors import FittingError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "optimizers"  # the specs, and every stage's exported results
EXPORT = "sweeps.json.gz"
STEP_TIMES = "optimizer_step_times.json"
STEP_TARGETS = {"lion": 1.15, "sgd": 1.15, "sgd_sai": 1.15, "lamb": 1.15, "muon": 1.5}
THEORY = {"sgd": 1.0, "sgd_sai": 1.0}  # lr* ~ B^k: 1 for SGD, 0.5 for Adam-type updates (others)


def specs(results: Path) -> list[Path]:
    """The optimizer specs, AdamW's first (the reference)."""
    paths = sorted(results.glob("*.yaml"))
    return sorted(paths, key=lambda p: p.stem != "adamw")


def chosen(paths: list[Path], only: str) -> list[Path]:
    """The specs whose optimizer kind ``only`` names (comma-separated; empty: all of them)."""
    if not only:
        return paths
    kinds = {spec_info(p)[1]: p for p in paths}
    wanted = [k.strip() for k in only.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in kinds]
    if unknown or not wanted:
        raise ValueError(f"--only {only!r}: expected optimizers among {', '.join(kinds)}")
    return [kinds[k] for k in kinds if k in wanted]


def spec_info(path: Path) -> tuple[str, str]:
    """(sweep name, optimizer kind) of a spec."""
    doc = yaml.safe_load(path.read_text())
    return doc["name"], (doc.get("optimizer") or {}).get("kind", "adamw")


# -- stage steptime -------------------------------------------------------------------------
def stage_steptime(results: Path, device: str) -> None:
    if read_stages(results).get("steptime", {}).get("complete"):
        log("the steptime stage is complete (stages.json): nothing to do")
        return
    kinds = ",".join(spec_info(p)[1] for p in specs(results))
    t0 = time.time()
    cmd = [sys.executable, str(ROOT / "benchmarks" / "sweep_throughput.py"), "--device", device,
           "--optimizers", kinds, "--out", str(results)]
    cmd += ["--sizes", "512,768"] if device == "cuda" else ["--tiny"]
    log("$ " + " ".join(cmd))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, cwd=ROOT, env=env).returncode == 0 and (results / STEP_TIMES).exists()
    record_stage(results, "steptime", complete=done, seconds=round(time.time() - t0), device=device)
    if not done:
        raise SystemExit("the step-time benchmark failed (its output is above)")


# -- stage sweep ----------------------------------------------------------------------------
def stage_sweep(work: Path, results: Path, minutes: float, device: str, only: str = "") -> None:
    """Train the specs' sweeps side by side for ``minutes`` (``only``: those optimizers alone,
    the GPU to the ones with work worth it; the export keeps every sweep's runs)."""
    from hpscale.service.settings import Settings
    from hpscale.sweeps.cellrun import prepare_corpus
    from hpscale.sweeps.spec import load_spec

    if read_stages(results).get("sweep", {}).get("complete"):
        log("the sweep stage is complete (stages.json): nothing to do")
        return
    db = restore(work, results, [EXPORT])
    os.environ["HPSCALE_DATA_DIR"] = str(work / "data")
    t0 = time.time()
    paths = specs(results)
    running = chosen(paths, only)
    prepare_corpus(load_spec(paths[0]), Settings().data_dir / "corpora")  # one corpus for all six
    log(f"corpus ready in {time.time() - t0:.0f} s")
    procs = [hpscale(work, "sweep", "run", str(p), "--device", device, log_name=p.stem) for p in running]
    sources = [spec_info(p)[0] for p in paths]
    # A subset's end is not the stage's: the others still have their work.
    complete = supervise(db, procs, sources, results / EXPORT, t0 + 60 * minutes) and running == paths
    counts = {s: len(storage.list_runs(db, sources=[s], statuses=["done", "diverged"])) for s in sources}
    log(f"finished runs: {counts}; logs in {work}")
    export(db, sources, results / EXPORT)
    spent = read_stages(results).get("sweep", {}).get("seconds", 0.0) + time.time() - t0
    record_stage(results, "sweep", complete=complete, runs=counts, seconds=round(spent), device=device)


# -- stage report ---------------------------------------------------------------------------
def optimizer_groups(db: Database, source: str) -> list[dict[str, Any]]:
    """Each (N, D) group of a sweep: its best run's lr, batch and loss, the lr grid it searched and
    whether its best lr lies inside it (``fitting.optimum.group_optima``'s edges)."""
    from hpscale.fitting.optimum import group_optima
    from hpscale.service import fits

    rows = [r for r in storage.list_runs(db, sources=[source]) if r.status in ("done", "diverged")]
    if not rows:
        return []
    runs = fits.runset(rows)
    out = []
    for g in group_optima(runs):
        in_group = (runs.n_params == g.n_params) & (runs.tokens == g.tokens)
        lrs = runs.lr[in_group]
        out.append({"n_params": g.n_params, "tokens": g.tokens, "best_lr": g.best_lr,
                    "best_batch_tokens": g.best_batch_tokens, "best_loss": g.best_loss,
                    "lr_grid": [float(lrs.min()), float(lrs.max())], "runs": int(in_group.sum()),
                    "inside": not any(e.startswith("lr") for e in g.edges)})
    return out


def fit_optimizer(db: Database, source: str, bootstrap: int) -> dict[str, Any]:
    """The lr* law of one optimizer's sweep (Step Law's form, near-optimal), with its intervals
    and lr-batch coupling; or why it could not be fitted."""
    from hpscale.service import fits
    from hpscale.service.errors import InputError

    try:
        row = fits.fit_and_store(db, kind="hyper", sources=[source], n_bootstrap=bootstrap, on_edge="warn")
    except (FittingError, InputError) as exc:
        return {"error": str(exc)}
    rec = row.record or {}
    return {"law": row.name, "coefficients": rec.get("coefficients"), "intervals": rec.get("intervals"),
            "coupling": rec.get("lr_batch_coupling"), "failure": fits.fit_failure(row),
            "warnings": rec.get("warnings") or []}


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def _iv(v: list[float] | None) -> str:
    return "" if not v else f" ({_num(v[0])} .. {_num(v[1])})"


def report_markdown(rep: dict[str, Any]) -> str:
    lines = ["# The optimizer axis (issue 17): one sweep per optimizer", "",
             "## Best lr and loss per (N, D) group", "",
             "| optimizer | N | D | runs | lr grid | best lr | best batch (tokens) | best loss | optimum inside the grid |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, o in rep["optimizers"].items():
        for g in o["groups"]:
            lines.append(f"| {kind} | {_num(g['n_params'])} | {_num(g['tokens'])} | {g['runs']} | "
                         f"{_num(g['lr_grid'][0])}-{_num(g['lr_grid'][1])} | {_num(g['best_lr'])} | "
                         f"{_num(g['best_batch_tokens'])} | {g['best_loss']:.4f} | {'yes' if g['inside'] else '**no**'} |")
    lines += ["", "## lr* laws side by side (lr* = a N^alpha D^beta; B* = b D^beta_b), 95% intervals", "",
              "| optimizer | a_lr | alpha_lr | beta_lr | a_b | beta_b | lr-batch exponent k | theory | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for kind, o in rep["optimizers"].items():
        fit = o["fit"]
        if "error" in fit:
            lines.append(f"| {kind} | - | - | - | - | - | - | {THEORY.get(kind, 0.5):g} | not fitted: {fit['error']} |")
            continue
        c, iv, cp = fit["coefficients"] or {}, fit["intervals"] or {}, fit["coupling"] or {}
        cells = [f"{_num(c.get(k))}{_iv(iv.get(k))}" for k in ("a_lr", "alpha_lr", "beta_lr", "a_b", "beta_b")]
        k = f"{_num(cp.get('exponent'))}{_iv(cp.get('interval'))}" if cp.get("exponent") is not None else "-"
        note = "; ".join(fit["failure"] or []) or ("; ".join(fit["warnings"][:1]) if fit["warnings"] else "")
        if cp.get("exponent") is None and cp.get("note"):  # why the lr-batch exponent is missing
            note = "; ".join(filter(None, [f"k: {cp['note']}", note]))
        lines.append(f"| {kind} | {' | '.join(cells)} | {k} | {THEORY.get(kind, 0.5):g} | {note} |")
    steps = rep.get("step_times")
    if steps:
        recorded = rep.get("stages", {}).get("steptime", {}).get("recorded", "?")
        lines += ["", f"## Step time against AdamW's ({steps['device']}, torch {steps['torch']})", "",
                  f"The steptime stage's table (recorded {recorded}, with the code of then).", "",
                  "| d_model | batch (seq) | optimizer | step ms | vs AdamW | target |", "|---|---|---|---|---|---|"]
        for r in steps["rows"]:
            lines.append(f"| {r['d_model']} | {r['batch']} | {r['optimizer']} | {r['step_s'] * 1e3:.2f} | "
                         f"{r['ratio']:.3f}x | {_verdict(r)} |")
    later = rep.get("later_step_times") or {}
    if later:
        lines += ["", "## Step times measured since", "",
                  "Each folder beside this report holds one later timing (its name says of what, on "
                  "which card and when; BENCHMARKS.md says what changed), AdamW timed again in the same run.", "",
                  "| folder | device | d_model | batch (seq) | optimizer | step ms | AdamW ms | vs AdamW | target |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for folder, t in later.items():
            adamw = {(r["d_model"], r["batch"]): r["step_s"] for r in t["rows"] if r["optimizer"] == "adamw"}
            for r in t["rows"]:
                if r["optimizer"] == "adamw":
                    continue
                base = adamw.get((r["d_model"], r["batch"]))
                lines.append(f"| {folder} | {t['device']} | {r['d_model']} | {r['batch']} | {r['optimizer']} | "
                             f"{r['step_s'] * 1e3:.2f} | {'-' if base is None else f'{base * 1e3:.2f}'} | "
                             f"{r['ratio']:.3f}x | {_verdict(r)} |")
    return "\n".join(lines) + "\n"


def _verdict(row: dict[str, Any]) -> str:
    """A step-time row's target and whether it is met ("(reference)" for AdamW's own)."""
    target = STEP_TARGETS.get(row["optimizer"])
    if target is None:
        return "(reference)"
    return f"<= {target:.2f}x " + ("(met)" if row["ratio"] <= target else "(**missed**)")


def stage_report(work: Path, results: Path, bootstrap: int) -> dict[str, Any]:
    db = restore(work, results, [EXPORT])
    rep: dict[str, Any] = {"stages": read_stages(results), "optimizers": {}}
    for path in specs(results):
        source, kind = spec_info(path)
        groups = optimizer_groups(db, source)
        rep["optimizers"][kind] = {"source": source, "groups": groups,
                                   "fit": fit_optimizer(db, source, bootstrap) if groups else {"error": "no runs"}}
    if (results / STEP_TIMES).exists():
        rep["step_times"] = json.loads((results / STEP_TIMES).read_text())
    # Later re-timings (one folder each, named for what was timed, the card and the date).
    rep["later_step_times"] = {p.parent.name: json.loads(p.read_text())
                               for p in sorted(results.glob(f"*/{STEP_TIMES}"))}
    (results / "report.json").write_text(json.dumps(rep, indent=1, default=str) + "\n")
    (results / "report.md").write_text(report_markdown(rep))
    log(f"wrote {results / 'report.md'}")
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["steptime", "sweep", "report"])
    parser.add_argument("--work", type=Path, default=ROOT / "validation-work" / "optimizers")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the specs and the exported results (committed)")
    parser.add_argument("--minutes", type=float, default=15.0, help="sweep: stop starting work after this long")
    parser.add_argument("--device", default="cuda", help="GPU stages: the device (cpu for a smoke run)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="report: bootstrap resamples of each law")
    parser.add_argument("--only", default="", help="sweep: train only these optimizers' sweeps, comma-separated "
                                                   "(e.g. lamb); the export keeps every sweep's runs")
    args = parser.parse_args()
    if not (args.minutes > 0 and args.bootstrap >= 0):
        parser.error("--minutes must be > 0 and --bootstrap >= 0")
    work, results = args.work.resolve(), args.results.resolve()
    if not specs(results):
        parser.error(f"--results {results}: no optimizer specs (*.yaml) there")
    try:
        chosen(specs(results), args.only)  # a wrong name stops here, before anything starts
    except ValueError as exc:
        parser.error(str(exc))
    work.mkdir(parents=True, exist_ok=True)
    log(f"stage {args.stage}")
    from hpscale.db.errors import NotFoundError
    from hpscale.service.errors import InputError
    from hpscale.sweeps.errors import SweepError

    try:
        if args.stage == "steptime":
            stage_steptime(results, args.device)
        elif args.stage == "sweep":
            stage_sweep(work, results, args.minutes, args.device, args.only)
        else:
            stage_report(work, results, args.bootstrap)
    except (FittingError, InputError, OSError, NotFoundError, SweepError) as exc:  # one line, not a traceback
        raise SystemExit(f"stage {args.stage}: {exc}") from None
    log("done")


if __name__ == "__main__":
    main()
