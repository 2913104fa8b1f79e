"""Fits a user can trust, through the CLI: the joint method and published priors, the noise and
band every fit reports, degenerate fits stored as failed, mixture-of-experts runs grouped by
architecture, and loss predictions that say when they extrapolate."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from support import hp, hp_json
from synthetic_runs import SIZES, TOKENS, grid_records, optimum, write_jsonl


@pytest.fixture
def grid(cli_env, tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "grid.jsonl", grid_records())
    hp_json("import", "runs", str(path), "--source", "grid")
    return path


def test_joint_fit_with_a_prior_reports_noise_band_basin_and_shift(grid) -> None:
    law = hp_json("fit", "--kind", "hyper", "--method", "joint", "--prior", "steplaw", "--prior-width", "0.05",
                  "--bootstrap", "30", "--name", "j")
    assert law["settings"]["method"] == "joint" and law["settings"]["prior"] == "steplaw"
    assert law["coefficients"]["alpha_lr"] == pytest.approx(-0.7, abs=0.05)
    assert law["noise"]["source"] == "residuals" and law["near_optimal_band"] >= 0.0025
    assert law["prior"]["name"] == "steplaw" and set(law["prior"]["shift"]) == {"alpha_lr", "beta_lr", "beta_b"}
    assert law["landscape"]["runs_in_band"] == len(law["run_ids"]) > 0
    shown = hp("laws", "show", "j").stdout
    assert "run-to-run noise of the final loss:" in shown and "near-optimal band:" in shown
    assert "joint basin: lr-batch tilt" in shown and "prior: steplaw (width 0.05 on each exponent); it moved alpha_lr" in shown
    lr_star, _ = optimum(8e7, 8e9)
    assert hp_json("recommend", "--params", "8e7", "--tokens", "8e9", "--law", "j")["lr"] == pytest.approx(lr_star, rel=0.2)


def test_bad_method_and_prior_are_one_line(grid) -> None:
    for args, message in ((["--method", "magic"], "method must be one of near_optimal, smooth, joint"),
                          (["--prior", "kaplan"], "prior must be one of none, steplaw, deepseek"),
                          (["--prior", "steplaw", "--form", "compute"], "form steplaw or full"),
                          (["--prior", "steplaw", "--prior-width", "0"], "prior width")):
        result = hp("fit", "--kind", "hyper", "--bootstrap", "0", *args)
        assert result.exit_code == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _degenerate_records() -> list[dict]:
    # Two "sizes" 0.01% apart whose optima differ by 2x in lr: alpha_lr ~ 7000. Seen for real
    # when a mixture-of-experts file was grouped by total parameters.
    recs = []
    for k, n in enumerate((1e9, 1.0001e9)):
        for d in TOKENS:
            lr_star, b_star = optimum(1e9, d)
            lr_star *= 2.0**k
            for i in range(-2, 3):
                for j in (-1, 0, 1):
                    lr, b = lr_star * 2.0**i, b_star * 2.0**j
                    loss = 2.5 + 0.02 * math.log(lr / lr_star) ** 2 + 0.01 * math.log(b / b_star) ** 2
                    recs.append({"name": f"{k}-{d:.0e}-{i}-{j}", "n_params": n, "tokens": d, "lr": lr,
                                 "batch_tokens": b, "final_loss": loss})
    return recs


def test_a_degenerate_fit_is_stored_as_failed_and_never_the_default(cli_env, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", _degenerate_records())
    hp_json("import", "runs", str(path), "--source", "bad")
    result = hp("fit", "--kind", "hyper", "--bootstrap", "20", "--allow-edge", "--name", "broken")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: law ") and "stored as a failed fit" in result.stderr
    assert "alpha_lr" in result.stderr
    shown = hp_json("laws", "show", "broken")
    assert shown["failure"] and shown["extrapolation"]["failed"] is True
    assert "failed fit" in hp("laws", "show", "broken").stdout
    # Never the default, even for a target inside its data; asked for by name: one clear line.
    assert hp_json("recommend", "--params", "1e9", "--tokens", "2e9")["law"] == "steplaw"
    named = hp("recommend", "--params", "7e9", "--tokens", "1.4e12", "--law", "broken")
    assert named.exit_code == 1 and "gives no finite learning rate and batch" in named.stderr
    assert "Traceback" not in named.stderr


def _steplaw_moe_csv(path: Path) -> Path:
    """A Step Law-format MoE file: two architectures with (nearly) equal totals, different actives."""
    cols = ["h", "ffnh", "numh", "numl", "lr", "bs", "ti", "loss", "smooth loss", "exp_name", "D", "N",
            "seq_len", "topk", "nume", "moeh", "Na"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for arch, (na, total) in enumerate(((3.0e8, 2.15e9), (4.5e8, 2.15e9))):
            for i, lr in enumerate((1e-3, 2e-3, 4e-3)):
                for bs in (256, 512):
                    w.writerow([1024, 4096, 16, 12, lr, bs, 1000, 2.5 + 0.01 * i, 2.4 + 0.01 * i,
                                f"moe{arch}_lr{lr}_bs{bs}", 2e10, total, 4096, 2, 16, 1024, na])
    return path


def test_steplaw_moe_import_uses_active_parameters_and_keeps_architectures_apart(cli_env, tmp_path: Path) -> None:
    path = _steplaw_moe_csv(tmp_path / "moe.csv")
    assert hp_json("import", "steplaw", str(path), "--source", "moe")["added"] == 12
    runs = hp_json("runs", "list", "--source", "moe")
    assert {r["n_params"] for r in runs} == {3.0e8, 4.5e8}
    assert {r["n_params_total"] for r in runs} == {2.15e9}
    assert {r["batch_tokens"] for r in runs} == {256 * 4096, 512 * 4096}  # the file's own seq_len
    exported = hp("export", "runs", "--format", "csv", "--source", "moe").stdout
    assert "n_params_total" in exported.splitlines()[0]


def test_fitting_groups_moe_runs_by_architecture(cli_env, tmp_path: Path) -> None:
    from hpscale.fitting.optimum import group_optima
    from hpscale.fitting.runs import RunSet

    same_n = RunSet.from_records(
        {"name": f"{a}-{i}", "n_params": 3e8, "tokens": 2e10, "lr": 1e-3 * 2**i, "batch_tokens": 1e6,
         "final_loss": 2.4 + 0.01 * (i - a) ** 2, "arch": f"moe:{total}"}
        for a, total in enumerate((2.15e9, 2.16e9)) for i in range(4))
    groups = group_optima(same_n)
    assert len(groups) == 2 and sorted(g.best_lr for g in groups) == [1e-3, 2e-3]


def test_predict_loss_warns_like_recommend(grid) -> None:
    law = hp_json("fit", "--kind", "loss", "--bootstrap", "20")
    near = hp_json("predict", "loss", "--law", str(law["id"]), "--params", "4e7", "--tokens", "8e9")
    assert not [w for w in near["warnings"] if "outside" in w]
    far = hp_json("predict", "loss", "--law", str(law["id"]), "--params", "7e9", "--tokens", "1.4e12")
    assert far["interval"] and any("outside the data loss law" in w for w in far["warnings"])
    human = hp("predict", "loss", "--law", str(law["id"]), "--params", "7e9", "--tokens", "1.4e12").stdout
    assert "warning:" in human and "extrapolation" in human
    # recommend gives no number there, and says which law would be needed.
    rec = hp_json("recommend", "--params", "7e9", "--tokens", "1.4e12")
    assert rec["final_loss"] is None and "outside the data of every stored loss law" in rec["final_loss_note"]
    named = hp_json("recommend", "--params", "7e9", "--tokens", "1.4e12", "--loss-law", str(law["id"]))
    assert named["final_loss"] is not None and any("outside the data loss law" in w for w in named["warnings"])
    assert SIZES and TOKENS  # the grid the fixture imported


def test_a_loss_laws_own_fit_warnings_travel_with_every_answer(cli_env, tmp_path: Path) -> None:
    # Losses without a floor (E = 0): the fit warns that E is not determined, and that warning
    # belongs beside every loss the law predicts, not only in the fit's output.
    path = tmp_path / "nofloor.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "n_params", "tokens", "final_loss"])
        for n in (1e7, 3e7, 1e8, 3e8):
            for d in (2e9, 8e9, 3.2e10):
                w.writerow([f"n{n:g}-d{d:g}", n, d, 400 / n**0.34 + 1500 / d**0.3])
    hp_json("import", "runs", str(path), "--source", "nofloor")
    law = hp_json("fit", "--kind", "loss", "--bootstrap", "20")
    assert any("E fitted to ~0" in w for w in law["warnings"])
    out = hp_json("predict", "loss", "--law", str(law["id"]), "--params", "1e8", "--tokens", "8e9")
    assert any("E fitted to ~0" in w for w in out["warnings"])
    rec = hp_json("recommend", "--params", "1e8", "--tokens", "8e9")
    assert rec["final_loss"] is not None and any("E fitted to ~0" in w for w in rec["warnings"])


def test_a_files_row_order_does_not_move_a_laws_intervals(cli_env, tmp_path: Path) -> None:
    import random

    recs = grid_records()
    for i, r in enumerate(recs):  # a little noise, so that the bootstrap has something to resample
        r["final_loss"] *= 1 + 0.002 * math.sin(7.0 * i)
    shuffled = list(recs)
    random.Random(1).shuffle(shuffled)
    laws = []
    for name, rows in (("a", recs), ("b", shuffled)):
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        hp_json("--database", url, "import", "runs", str(write_jsonl(tmp_path / f"{name}.jsonl", rows)), "--source", "g")
        laws.append(hp_json("--database", url, "fit", "--kind", "hyper", "--bootstrap", "40"))
    assert laws[0]["intervals"] == laws[1]["intervals"] and laws[0]["coefficients"] == laws[1]["coefficients"]


def test_a_sweep_of_the_lr_at_one_batch_gives_a_law_that_says_its_batch_is_not_fitted(cli_env, tmp_path: Path) -> None:
    one_batch = [r for r in grid_records() if r["name"].endswith("-j0")]
    hp_json("import", "runs", str(write_jsonl(tmp_path / "b.jsonl", one_batch)), "--source", "lr-only")
    law = hp_json("fit", "--kind", "hyper", "--bootstrap", "20")
    assert not law["failure"] and any("repeats the batch sizes that were run" in w for w in law["warnings"])
    rec = hp_json("recommend", "--params", "4e7", "--tokens", "8e9", "--law", str(law["id"]))
    assert any(w.startswith(f"law {law['name']}: only 0 of") for w in rec["warnings"])


def test_a_sweep_with_seeds_fits_and_is_checked(cli_env, tmp_path: Path) -> None:
    # Two seeds of every configuration: the law measures the noise from them, and its check
    # (refitted on seed means) runs; every hyper fit with seeds once died there with a KeyError.
    records = grid_records()
    rng = np.random.default_rng(0)
    seeded = [{**r, "name": f"{r['name']}-s{s}", "final_loss": r["final_loss"] * (1 + 0.003 * rng.standard_normal())}
              for r in records for s in (0, 1)]
    path = write_jsonl(tmp_path / "seeds.jsonl", seeded)
    hp_json("import", "runs", str(path))
    for method in ("near_optimal", "joint"):
        law = hp_json("fit", "--kind", "hyper", "--method", method, "--bootstrap", "0")
        assert law["noise"]["source"] == "repeats" and "mean_loss_regret" in law["extrapolation"], method
