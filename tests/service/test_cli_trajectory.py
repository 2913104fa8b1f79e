"""Trajectory laws through the CLI: fitted on the schedule that ran (the run format's
``lr_schedule``), predicted at real lengths (``hpscale predict curve``), with the published
multi-power-law curves as the proof; skipped where ../shared is absent."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter
from support import EXTERNAL, hp, hp_json
from synthetic_runs import TRUE_MPL, trajectory_records

from hpscale.fitting.trajectory import MultiPowerLaw
from hpscale.service.runformat import LrSchedule, schedule_lrs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _external import mpl_curve  # noqa: E402  (benchmarks/fit_published.py's own reader)

MPL_TRAIN = ("constant_24000", "cosine_24000", "wsdcon_9")
MPL_TEST = ("constant_72000", "cosine_72000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_18")
# benchmarks/fit_published.py's PredE / WorstE on this split as BENCHMARKS.md records them
# (fitted and scored in the fitting package, the per-step lr rebuilt from the files' names).
PUBLISHED_SPLIT = {"25": (0.00117, 0.00323), "100": (0.00134, 0.00464)}


def mpl_schedule(name: str) -> dict:
    """The schedule of an MPL curve, as data (the external README: peak 3e-4, linear warmup
    over 2,160 steps, the rest in the file name)."""
    kind, *args = name.split("_")
    common = {"peak_lr": 3e-4, "warmup_steps": 2160}
    if kind in ("constant", "cosine"):
        return {"kind": kind, "total_steps": int(args[0]), "final_lr_ratio": 0.1, **common}
    if kind in ("wsd", "wsdld"):
        start, end = int(args[0]), int(args[1])
        return {"kind": "wsd", "total_steps": end, "cooldown_fraction": (end - start) / end, "final_lr_ratio": 0.1,
                "decay": "exponential" if kind == "wsd" else "linear", **common}
    # wsdcon_X: 3e-4 until step 8,000, then X e-5 until 16,000
    return {"kind": "table", "total_steps": 16000, "warmup_steps": 2160,
            "table": [{"step": 1, "lr": 3e-4}, {"step": 8001, "lr": int(args[0]) * 1e-5}]}


def mpl_points(size: str, name: str) -> list[dict]:
    """The curve at the file's own steps; files named *_24000 are cut below step 24,000 (the
    MPL repository's scoring, which the published figures follow)."""
    path = EXTERNAL / "mpl" / f"csv_{size}" / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"published data not found at {path} (../shared is absent in a user's clone)")
    with open(path, newline="") as fh:
        rows = [{"step": int(float(r["step"])), "lr": float(r["lr"]), "loss": float(r["loss"])} for r in csv.DictReader(fh)]
    return [r for r in rows if not (name.endswith("24000") and r["step"] >= 24000)]


def run_record(size: str, name: str, with_schedule: bool) -> dict:
    points = mpl_points(size, name)
    rec = {"name": name, "n_params": float(size) * 1e6, "tokens": points[-1]["step"] * 0.5e6,
           "final_loss": points[-1]["loss"], "curve": points}
    if with_schedule:
        rec["lr_schedule"] = mpl_schedule(name)
    return rec


def predicted_errors(law_id: int, size: str, tmp_path: Path) -> tuple[float, float]:
    """PredE and WorstE of a stored law on the six test schedules, predicted through
    ``hpscale predict curve`` with each schedule written out step by step."""
    means, worsts = [], []
    for name in MPL_TEST:
        lr = schedule_lrs(TypeAdapter(LrSchedule).validate_python(mpl_schedule(name)))
        points = mpl_points(size, name)
        lr = lr[: points[-1]["step"]]
        path = tmp_path / f"{name}.csv"
        path.write_text("step,lr\n" + "".join(f"{i + 1},{float(v)!r}\n" for i, v in enumerate(lr)))
        out = hp_json("predict", "curve", "--law", str(law_id), "--lr-schedule", str(path))
        pred = dict(zip(out["steps"], out["loss"]))
        err = np.array([abs(pred[p["step"]] / p["loss"] - 1) for p in points])
        means.append(err.mean())
        worsts.append(err.max())
    return float(np.mean(means)), float(np.mean(worsts))


@pytest.mark.parametrize("size", ["25", "100"])
def test_mpl_curves_imported_with_their_schedules_reproduce_the_published_split(cli_env, tmp_path: Path, size: str) -> None:
    for source, with_schedule in (("scheduled", True), ("interpolated", False)):
        path = tmp_path / f"{source}.jsonl"
        path.write_text("".join(json.dumps(run_record(size, n, with_schedule)) + "\n" for n in MPL_TRAIN))
        assert hp_json("import", "runs", str(path), "--source", source)["added"] == 3
    exact = hp_json("fit", "--kind", "trajectory", "--source", "scheduled")
    guessed = hp_json("fit", "--kind", "trajectory", "--source", "interpolated")
    assert not any("interpolated" in w for w in exact["warnings"])
    assert any("no schedule recorded for 3 of 3 curves" in w for w in guessed["warnings"])
    pred_e, worst_e = predicted_errors(exact["id"], size, tmp_path)
    print(f"{size}M through the CLI: schedule given PredE {pred_e:.6f} WorstE {worst_e:.6f}", end="; ")
    bench = MultiPowerLaw().fit([mpl_curve(EXTERNAL, size, n) for n in MPL_TRAIN]).score(
        [mpl_curve(EXTERNAL, size, n) for n in MPL_TEST])
    # The CLI predicts every step, where no lr drops are merged; the benchmark scores at the
    # logged steps, merging smooth drops into bins of 16 steps (< 1e-5 relative per point).
    assert pred_e == pytest.approx(bench["mean"], rel=1e-3) and worst_e == pytest.approx(bench["worst"], rel=1e-3)
    assert pred_e == pytest.approx(PUBLISHED_SPLIT[size][0], abs=1e-5)
    assert worst_e == pytest.approx(PUBLISHED_SPLIT[size][1], abs=1e-5)
    g_pred, g_worst = predicted_errors(guessed["id"], size, tmp_path)
    print(f"lr interpolated from the curve PredE {g_pred:.6f} WorstE {g_worst:.6f}")
    # The law fitted on the guessed schedule is several times worse on the real ones.
    assert g_pred > 3 * pred_e and g_worst > 3 * worst_e


def test_fit_uses_the_recorded_schedule_and_says_when_it_had_to_guess(cli_env, tmp_path: Path) -> None:
    for source, with_schedule in (("scheduled", True), ("logged", False)):
        path = tmp_path / f"{source}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in trajectory_records(with_schedule)))
        hp("import", "runs", str(path), "--source", source)
    exact = hp_json("fit", "--kind", "trajectory", "--source", "scheduled")
    assert exact["warnings"] == []
    for k in ("L0", "alpha", "B", "C"):
        assert exact["coefficients"][k] == pytest.approx(TRUE_MPL[k], rel=0.02), k
    human = hp("fit", "--kind", "trajectory", "--source", "logged")
    assert human.exit_code == 0 and "no schedule recorded for 3 of 3 curves" in human.stdout
    guessed = hp_json("laws", "list")[-1]
    assert any("interpolated between the lr logged" in w for w in guessed["warnings"])
    assert "no schedule recorded" in hp("laws", "show", str(guessed["id"])).stdout


def test_predict_curve_at_real_lengths(cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in trajectory_records(True)))
    hp("import", "runs", str(path))
    law = hp_json("fit", "--kind", "trajectory")["id"]
    # 72,000 steps written out one by one (the length of the longest MPL curves): every step
    # after warmup is predicted (this died allocating 36 GiB).
    steps = 72_000
    lr = schedule_lrs(TypeAdapter(LrSchedule).validate_python(
        {"kind": "cosine", "total_steps": steps, "peak_lr": 3e-4, "warmup_steps": 2160}))
    schedule = tmp_path / "long.csv"
    schedule.write_text("step,lr\n" + "".join(f"{i + 1},{float(v)!r}\n" for i, v in enumerate(lr)))
    out = hp_json("predict", "curve", "--law", str(law), "--lr-schedule", str(schedule))
    assert out["steps"][0] == 2160 and out["steps"][-1] == steps and len(out["loss"]) == steps - 2160 + 1
    assert np.all(np.diff(out["loss"][:-1000]) < 0)
    sparse = hp_json("predict", "curve", "--law", str(law), "--lr-schedule", str(schedule), "--every", "10000")
    assert sparse["steps"] == [2160, 12160, 22160, 32160, 42160, 52160, 62160, 72000]
    assert sparse["loss"] == pytest.approx([out["loss"][s - 2160] for s in sparse["steps"]], rel=1e-6)
    table = hp("predict", "curve", "--law", str(law), "--lr-schedule", str(schedule))
    assert table.exit_code == 0 and "72000" in table.stdout
    # Longer than HPSCALE_MAX_CURVE_STEPS: one line, exit 1, before anything is built.
    from hpscale.service.settings import get_settings

    monkeypatch.setenv("HPSCALE_MAX_CURVE_STEPS", "50000")
    get_settings.cache_clear()
    result = hp("predict", "curve", "--law", str(law), "--lr-schedule", str(schedule))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "72,000 steps exceed the limit of 50,000 (set HPSCALE_MAX_CURVE_STEPS" in result.stderr


def _write_schedule(path: Path, rows: list[tuple[int, float]]) -> Path:
    path.write_text("step,lr\n" + "".join(f"{s},{v!r}\n" for s, v in rows))
    return path


def test_predict_curve_says_how_far_the_schedule_lies_from_the_fitted_curves(cli_env, tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in trajectory_records(True)))
    hp("import", "runs", str(path))
    law = hp_json("fit", "--kind", "trajectory")
    assert law["fit_range"] == {"steps": [500.0, 8000.0], "peak_lr": [3e-4, 3e-4]}
    # Like the fitted curves: no warning.
    same = _write_schedule(tmp_path / "same.csv", [(1, 1e-5), (2, 3e-4), (8000, 3e-4)])
    out = hp_json("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(same))
    assert out["warnings"] == []
    # The law's error on a curve it had not seen comes with every prediction (its check's).
    check = law["extrapolation"]
    assert out["held_out"] == {"curve": check["held_out_curve"], "fit_curves": check["fit_curves"],
                               "mean_rel_error": check["mean_rel_error"], "max_rel_error": check["max_rel_error"]}
    shown = hp("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(same)).stdout
    assert f"refitted without its longest curve ({check['held_out_curve']})" in shown
    # 10x longer, at 10x the peak lr: both said, in the table's output too.
    far = _write_schedule(tmp_path / "far.csv", [(1, 3e-3), (80_000, 3e-3)])
    out = hp_json("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(far), "--every", "1000")
    assert any("runs to step 80000, 10x the longest curve" in w for w in out["warnings"])
    assert any("peak lr 0.003 differs" in w for w in out["warnings"])
    shown = hp("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(far), "--every", "10000")
    assert shown.exit_code == 0 and shown.stdout.count("warning:") == 2
    # A rewarm: the lr falls, then rises above its first plateau. The steps before the highest lr
    # are taken as warmup, and the answer says so.
    rewarm = _write_schedule(tmp_path / "rewarm.csv", [(1, 1e-4), (2000, 5e-5), (4000, 3e-4), (8000, 3e-4)])
    out = hp_json("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(rewarm), "--every", "1000")
    assert out["warmup_steps"] == 4000 and out["steps"][0] == 4000
    assert any("falls before step 4000, where warmup is taken to end" in w for w in out["warnings"])
    # Stated, the warmup is the schedule's; a rise after it is said.
    out = hp_json("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(rewarm), "--every", "1000",
                  "--warmup-steps", "500")
    assert out["warmup_steps"] == 500 and out["steps"][0] == 500
    assert any("rises after warmup (first at step 4000)" in w for w in out["warnings"])
    late = _write_schedule(tmp_path / "late.csv", [(1, 3e-4), (2000, 1e-5), (4000, 3e-4), (8000, 1e-5)])
    out = hp_json("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(late), "--every", "1000")
    assert out["warmup_steps"] == 0 and any("rises after warmup (first at step 4000)" in w for w in out["warnings"])
    result = hp("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(late), "--warmup-steps", "9000")
    assert result.exit_code == 1 and "warmup_steps must lie in 0..7999" in result.stderr
    # An lr of 0 throughout: refused in one line.
    zero = _write_schedule(tmp_path / "zero.csv", [(1, 0.0), (8000, 0.0)])
    result = hp("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(zero))
    assert result.exit_code == 1 and "0 at every step" in result.stderr and "Traceback" not in result.stderr


def test_predict_curve_refuses_where_the_law_predicts_no_loss(cli_env, tmp_path: Path) -> None:
    # A law whose annealing term outweighs everything once the lr falls (floor below 0): a
    # schedule that anneals that far is refused with the step where the loss would turn <= 0.
    from hpscale.db import storage
    from hpscale.service.cli.common import open_db

    law = MultiPowerLaw()
    law.coef_ = {**TRUE_MPL, "B": 3e4}
    law.fit_range_ = {"steps": [500.0, 8000.0], "peak_lr": [3e-4, 3e-4]}
    row = storage.add_law(open_db(), {"name": "steep", "kind": "trajectory", "form": "multi_power",
                                     "origin": "fitted", "title": "steep", "source": "test",
                                     "record": law.to_record(), "extrapolation": None, "code_version": "test"}, [])
    anneal = _write_schedule(tmp_path / "anneal.csv", [(1, 3e-4), (4000, 1e-6), (8000, 1e-6)])
    result = hp("predict", "curve", "--law", str(row.id), "--lr-schedule", str(anneal))
    assert result.exit_code == 1 and "predicts a loss of -" in result.stderr and "steps 500-8000" in result.stderr


def test_a_recorded_warmup_is_taken_as_stated(cli_env, tmp_path: Path) -> None:
    # A schedule that rises again after its warmup (1e-4, then 3e-4 from step 4001): inferring
    # the warmup as "until the highest lr" dropped every point before step 4001.
    from hpscale.db import storage
    from hpscale.service.cli.common import open_db
    from hpscale.service.fits import loss_curves

    sched = {"kind": "table", "total_steps": 8000, "warmup_steps": 500,
             "table": [{"step": 1, "lr": 1e-4}, {"step": 4001, "lr": 3e-4}]}
    points = [{"step": s, "loss": 5.0 - s / 4000} for s in range(250, 8001, 250)]
    rec = {"name": "rewarm", "n_params": 2e7, "tokens": 2e9, "final_loss": points[-1]["loss"], "curve": points,
           "lr_schedule": sched}
    (tmp_path / "r.jsonl").write_text(json.dumps(rec) + "\n")
    hp("import", "runs", str(tmp_path / "r.jsonl"))
    db = open_db()
    (curve,) = loss_curves(db, storage.list_runs(db))
    assert curve.warmup_steps == 500 and curve.steps[0] == 500 and curve.steps.size == 31
    # A table that holds its own ramp and states no warmup: inferred, as before (the schedules'
    # default of 0 is no statement).
    ramp = {"kind": "table", "total_steps": 8000,
            "table": [{"step": s, "lr": 3e-4 * s / 500} for s in range(1, 500, 50)] + [{"step": 500, "lr": 3e-4}]}
    (tmp_path / "ramp.jsonl").write_text(json.dumps({**rec, "name": "ramp", "lr_schedule": ramp}) + "\n")
    hp("import", "runs", str(tmp_path / "ramp.jsonl"), "--source", "ramp")
    (curve,) = loss_curves(db, storage.list_runs(db, sources=["ramp"]))
    assert curve.warmup_steps is None and curve.warmup() == 500 and curve.steps[0] == 500
