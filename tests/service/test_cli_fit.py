"""``hpscale fit``, ``laws``, ``predict`` and ``recommend --law ID`` on runs with known laws."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import hp, hp_json
from synthetic_runs import SIZES, TOKENS, grid_records, optimum, write_jsonl


@pytest.fixture
def grid(cli_env, tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "grid.jsonl", grid_records(with_curves=True))
    assert hp_json("import", "runs", str(path), "--source", "grid")["added"] == len(SIZES) * len(TOKENS) * 15
    return path


def test_hyper_fit_recovers_the_law_and_recommends_with_intervals(grid) -> None:
    law = hp_json("fit", "--kind", "hyper", "--form", "steplaw", "--bootstrap", "50")
    coef = law["coefficients"]
    assert coef["alpha_lr"] == pytest.approx(-0.7, abs=0.05)
    assert coef["beta_lr"] == pytest.approx(0.3, abs=0.05)
    assert coef["beta_b"] == pytest.approx(0.55, abs=0.05)
    assert law["intervals"]["alpha_lr"][0] <= coef["alpha_lr"] <= law["intervals"]["alpha_lr"][1]
    assert law["extrapolation"]["passed"] is True
    assert len(law["run_ids"]) == 120
    rec = hp_json("recommend", "--params", "1.6e8", "--tokens", "8e9", "--law", str(law["id"]))
    lr_star, b_star = optimum(1.6e8, 8e9)
    assert rec["lr"] == pytest.approx(lr_star, rel=0.2)
    assert rec["batch_tokens"] == pytest.approx(b_star, rel=0.3)
    assert rec["lr_interval"][0] < rec["lr"] < rec["lr_interval"][1]
    assert rec["extrapolation_factor"] == pytest.approx(2.0)  # N is 2x past the largest fitted size
    far = hp_json("recommend", "--params", "7e9", "--tokens", "1e12", "--law", law["name"])
    assert far["extrapolation_factor"] > 10 and any("outside" in w for w in far["warnings"])


def test_default_recommendation_uses_a_fitted_law_that_passed(grid) -> None:
    assert hp_json("recommend", "--params", "1e8", "--tokens", "8e9")["law"] == "steplaw"
    law = hp_json("fit", "--kind", "hyper", "--bootstrap", "0", "--name", "mine")
    assert law["extrapolation"]["passed"]
    assert hp_json("recommend", "--params", "1e8", "--tokens", "8e9")["law"] == "mine"
    # A fitted law is the default only near its data: 7B on 2T tokens gets the published law.
    assert hp_json("recommend", "--params", "7e9", "--tokens", "2e12")["law"] == "steplaw"


def test_loss_fit_and_prediction(grid) -> None:
    law = hp_json("fit", "--kind", "loss", "--bootstrap", "20")
    assert law["kind"] == "loss" and len(law["run_ids"]) == len(SIZES) * len(TOKENS)  # best run per group
    out = hp_json("predict", "loss", "--law", str(law["id"]), "--params", "4e7", "--tokens", "8e9")
    assert out["final_loss"] == pytest.approx(1.7 + 400 / 4e7**0.34 + 1500 / 8e9**0.30, rel=0.01)
    assert out["interval"][0] <= out["final_loss"] <= out["interval"][1]
    # recommend predicts the final loss with the newest loss law, and says when its check failed.
    rec = hp_json("recommend", "--params", "4e7", "--tokens", "8e9")
    assert rec["final_loss"] == pytest.approx(out["final_loss"]) and rec["loss_law_id"] == law["id"]
    assert law["extrapolation"]["passed"] or any("extrapolation check did not pass" in w for w in rec["warnings"])
    human = hp("recommend", "--params", "4e7", "--tokens", "8e9")
    assert "predicted final loss" in human.stdout


def test_trajectory_fit_and_curve_prediction(grid, tmp_path: Path) -> None:
    names = ",".join(f"n1e+07-d2e+09-i{i}-j0" for i in (-2, -1, 0, 1, 2))
    law = hp_json("fit", "--kind", "trajectory", "--form", "momentum", "--runs", names)
    assert law["kind"] == "trajectory" and law["extrapolation"]["holdout"] == "steps"
    schedule = tmp_path / "s.csv"
    schedule.write_text("step,lr\n1,0.0001\n50,0.001\n2000,0.0003\n3000,0.0001\n")
    out = hp_json("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(schedule), "--tokens-per-step", "1000")
    assert out["steps"][-1] == 3000 and len(out["loss"]) == len(out["steps"]) == len(out["tokens"])
    assert out["tokens"][-1] == 3_000_000
    table = hp("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(schedule))
    assert table.exit_code == 0 and "3000" in table.stdout


def test_trajectory_refuses_mixed_model_sizes(grid) -> None:
    result = hp("fit", "--kind", "trajectory")
    assert result.exit_code == 1 and "one model size" in result.stderr


def test_critical_batch_from_curves(grid) -> None:
    # The synthetic curves put B_crit at half the optimal batch, which depends on D only: the
    # steps-to-target measured from the stored curves must show no growth with N.
    law = hp_json("fit", "--kind", "critical-batch", "--bootstrap", "20")
    assert law["kind"] == "critical_batch" and abs(law["coefficients"]["p"]) < 0.05
    assert law["extrapolation"]["holdout"] == "n_params"


def test_recommend_says_where_the_target_lies_once(grid) -> None:
    law = hp_json("fit", "--kind", "hyper", "--bootstrap", "0")
    inside = hp("recommend", "--params", "2e7", "--tokens", "2e9", "--law", str(law["id"])).stdout
    assert "the target lies inside the law's data" in inside and "1x" not in inside
    near = hp("recommend", "--params", "1.6e8", "--tokens", "8e9", "--law", str(law["id"])).stdout
    assert near.count("2x outside") == 1
    far = hp("recommend", "--params", "7e9", "--tokens", "1e12", "--law", str(law["id"])).stdout
    assert far.count("outside") == 1 and "warning: the target lies" in far  # the warning alone


def test_titles_tell_fits_of_one_form_apart_by_method(grid) -> None:
    near = hp_json("fit", "--kind", "hyper", "--bootstrap", "0", "--method", "near_optimal")
    smooth = hp_json("fit", "--kind", "hyper", "--bootstrap", "0", "--method", "smooth")
    assert near["title"] != smooth["title"]
    assert "steplaw form, from near-optimal runs" in near["title"] and "from smoothed group optima" in smooth["title"]
    loss = hp_json("fit", "--kind", "loss", "--bootstrap", "0")
    # Counted as the law page and its check count: the best run of each group, of all the runs.
    assert loss["source"] == f"fitted by hpscale on 8 of 120 runs of grid (the best of each (N, D) group)"


def test_laws_list_and_show(grid) -> None:
    hp_json("fit", "--kind", "hyper", "--bootstrap", "0")
    laws = hp_json("laws", "list")
    assert [x["name"] for x in laws[:2]] == ["steplaw", "deepseek"] and laws[2]["origin"] == "fitted"
    shown = hp("laws", "show", str(laws[2]["id"]))
    assert shown.exit_code == 0 and "extrapolation check passed" in shown.stdout
    assert hp("laws", "show", "steplaw").exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "--kind", "nope"], "expected one of"),
        (["fit", "--kind", "hyper", "--form", "weird"], "has forms"),
        (["fit", "--kind", "hyper", "--source", "absent"], "no finished runs in source absent"),
        (["fit", "--kind", "hyper", "--runs", "ghost"], "no finished run named 'ghost'"),
        (["laws", "show", "999"], "no law '999'"),
        (["predict", "loss", "--law", "steplaw", "--params", "1e9", "--tokens", "1e9"], "not a loss law"),
        (["recommend", "--params", "1e9", "--tokens", "1e9", "--law", "999"], "no law '999'"),
    ],
)
def test_fit_errors_are_one_line(grid, args, message) -> None:
    result = hp(*args)
    assert result.exit_code != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _store(cli_env: Path, records: list[dict], source: str, sweep: bool = False, **fields: object) -> None:
    """Store runs directly (with fields the import format has no column for: a sweep, a corpus
    hash, an optimizer)."""
    from hpscale.db import storage
    from hpscale.db.engine import Database

    assert hp("runs", "list").exit_code == 0  # creates the database
    db = Database(f"sqlite:///{cli_env / 'hpscale.db'}")
    sweep_id = storage.add_sweep(db, source, {}, code_version="test").id if sweep else None
    storage.add_runs(db, [{**r, "source": source, "sweep_id": sweep_id, "status": "done", "code_version": "test",
                           **fields} for r in records])
    db.dispose()


def test_imported_runs_at_the_grid_edge_fit_with_a_warning_in_words(cli_env, tmp_path: Path) -> None:
    # A published grid cannot be widened: its edge groups are fitted, and named, in words.
    hp("import", "runs", str(write_jsonl(tmp_path / "e.jsonl", grid_records(edge=True))))
    result = hp("fit", "--kind", "hyper", "--bootstrap", "0")
    assert result.exit_code == 0, result.stderr
    text = result.stdout + result.stderr
    assert "warning: group N=1e+07, D=2e+09: the best run" in text and "at the lowest learning rate searched" in text
    assert "on_edge" not in text and "lr_low" not in text
    law = hp_json("laws", "show", "hyper-steplaw-e-3")
    assert law["settings"]["on_edge"] == "warn"
    # Every held-out group's best run on its grid's edge: the check cannot score the law there
    # (a recommendation beyond the edge picks the edge run: no regret), so it does not pass, and
    # recommendations from the law say what it was fitted on.
    assert law["extrapolation"]["passed"] is False and "not conclusive: all 2 held-out groups" in law["extrapolation"]["summary"]
    assert "extrapolation check did not pass" in text and "not conclusive" in text
    rec = hp_json("recommend", "--params", "2e7", "--tokens", "2e9", "--law", str(law["id"]))
    assert any("8 (N, D) groups whose best run lies on the edge" in w for w in rec["warnings"])
    assert hp_json("recommend", "--params", "2e7", "--tokens", "2e9")["law"] == "steplaw"


def test_swept_runs_at_the_grid_edge_are_refused_unless_allowed(cli_env) -> None:
    _store(cli_env, grid_records(edge=True), "edgy", sweep=True)
    result = hp("fit", "--kind", "hyper", "--bootstrap", "0")
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "in 8 of 8 groups the best run lies on the edge of the searched grid" in result.stderr
    assert "Widen the sweep's grid" in result.stderr and "--allow-edge" in result.stderr
    assert "on_edge" not in result.stderr and "lr_low" not in result.stderr
    assert hp_json("fit", "--kind", "hyper", "--bootstrap", "0", "--allow-edge")["warnings"]


def test_fit_without_source_refuses_several_sources_and_lists_them(grid, cli_env) -> None:
    _store(cli_env, [{"name": "tiny", "n_params": 2.5e4, "tokens": 1.6e4, "lr": 0.01, "batch_tokens": 128,
                      "final_loss": 4.5}], "tiny-cpu")
    result = hp("fit", "--kind", "loss", "--bootstrap", "0")
    assert result.exit_code == 1 and "finished runs of 2 sources are stored: grid (120 runs), tiny-cpu (1 runs)" in result.stderr
    assert "--source" in result.stderr and "--mix" in result.stderr
    assert "runs of grid (" in hp_json("fit", "--kind", "loss", "--bootstrap", "0", "--source", "grid")["source"]
    mixed = hp_json("fit", "--kind", "hyper", "--bootstrap", "0", "--mix")
    assert mixed["source"].endswith("runs of grid, tiny-cpu")


def test_fit_never_pools_corpora_unasked_nor_optimizers(grid, cli_env) -> None:
    _store(cli_env, [{**r, "name": r["name"] + "-x"} for r in grid_records()], "grid", corpus_hash="feedc0ffee0123")
    result = hp("fit", "--kind", "hyper", "--bootstrap", "0", "--source", "grid")
    assert result.exit_code == 1 and "the selected runs were trained on different corpora" in result.stderr
    assert "corpus feedc0ffee01: 120 runs (grid)" in result.stderr and "corpus unknown: 120 runs (grid)" in result.stderr
    assert hp("fit", "--kind", "hyper", "--bootstrap", "0", "--source", "grid", "--mix").exit_code == 0
    # Another optimizer's runs: never one law with AdamW's, --mix or not (a law is one optimizer's).
    _store(cli_env, [{**r, "name": r["name"] + "-m"} for r in grid_records()], "grid", optimizer="muon")
    mixed = hp("fit", "--kind", "hyper", "--bootstrap", "0", "--source", "grid", "--mix")
    assert mixed.exit_code == 1 and "optimizers" in mixed.stderr
    assert hp("fit", "--kind", "hyper", "--bootstrap", "0", "--source", "grid", "--mix", "--optimizer", "muon").exit_code == 0


def test_fit_needs_two_model_sizes(cli_env, tmp_path: Path) -> None:
    one = [r for r in grid_records() if r["n_params"] == SIZES[0]]
    hp("import", "runs", str(write_jsonl(tmp_path / "one.jsonl", one)))
    result = hp("fit", "--kind", "hyper", "--bootstrap", "0")
    assert result.exit_code == 1 and "groups" in result.stderr


def test_bad_schedule_files(grid, tmp_path: Path) -> None:
    law = hp_json("fit", "--kind", "trajectory", "--form", "momentum",
                  "--runs", ",".join(f"n1e+07-d2e+09-i{i}-j0" for i in (-1, 0, 1)))
    for text, message in [("a,b\n1,2\n", "header with columns step,lr"), ("step,lr\n1,x\n", ":2: step must be"),
                          ("step,lr\n5,0.1\n6,0.1\n", "must start at step 1"), ("step,lr\n1,0.1\n1,0.2\n", "steps must increase")]:
        path = tmp_path / "bad.csv"
        path.write_text(text)
        result = hp("predict", "curve", "--law", str(law["id"]), "--lr-schedule", str(path))
        assert result.exit_code == 1 and message in result.stderr, (text, result.stderr)


def _steps_table(path: Path) -> Path:
    """A steps-to-target table in Zhang et al.'s columns, from S = S_min (1 + B_crit / B) with
    B_crit (tokens) = 1e3 N^0.5 and S_min = 2e3 (seq_len 512; N in millions)."""
    rows = ["model_size_M,target_eval_loss_c4,batch_size_seqs,seq_len,steps_to_target"]
    for n_m, target in ((10, 3.5), (40, 3.2), (160, 3.0)):
        b_crit = 1e3 * (n_m * 1e6) ** 0.5
        for b in (32, 64, 128, 256, 512, 1024):
            rows.append(f"{n_m},{target},{b},512,{2e3 * (1 + b_crit / (b * 512)):.1f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_critical_batch_from_a_steps_to_target_table(cli_env, tmp_path: Path) -> None:
    table = _steps_table(tmp_path / "cbs.csv")
    assert hp_json("import", "steps-to-target", str(table)) == {"source": "cbs", "added": 18, "skipped": 0}
    runs = {r["name"]: r for r in hp_json("runs", "list")}
    one = runs["N10000000-target3.5-batch16384"]
    assert one["final_loss"] == 3.5 and one["batch_size"] == 32 and one["seq_len"] == 512
    assert one["tokens"] == pytest.approx(one["tags"]["steps_to_target"] * 32 * 512)
    law = hp_json("fit", "--kind", "critical-batch", "--bootstrap", "50")
    assert law["coefficients"]["p"] == pytest.approx(0.5, abs=1e-3)
    assert law["coefficients"]["k"] == pytest.approx(1e3, rel=0.01)
    assert [t["b_crit"] for t in law["targets"]] == pytest.approx([1e3 * n ** 0.5 for n in (1e7, 4e7, 1.6e8)], rel=1e-3)
    assert set(law["exponents"]) == {"n_params", "tokens", "target_loss"}
    shown = hp("laws", "show", str(law["id"])).stdout
    assert "critical batch per target" in shown and "p = 0.5 on N" in shown
    # Against E_min, the fewest tokens to the target (here 2e3 x B_crit): B_crit ~ E_min^1.
    by_tokens = hp_json("fit", "--kind", "critical-batch", "--by", "tokens", "--bootstrap", "0")
    assert by_tokens["coefficients"]["p"] == pytest.approx(1.0, abs=1e-3)
    assert "power of E_min" in by_tokens["title"] and by_tokens["settings"]["by"] == "tokens"
    assert "tokens" in by_tokens["fit_range"]
    result = hp("fit", "--kind", "hyper", "--by", "tokens")
    assert result.exit_code == 1 and "by applies to critical-batch laws only" in result.stderr
    # Stopped at a target, these runs are no loss law's data.
    result = hp("fit", "--kind", "loss")
    assert result.exit_code == 1 and "steps-to-target measurements" in result.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("n_params,target_loss,batch_tokens\n1e6,3.0,1024\n", "missing column 'steps_to_target'"),
    ("n_params,target_loss,steps_to_target,batch_size\n1e6,3.0,100,8\n", "missing the batch"),
    ("n_params,target_loss,steps_to_target,batch_tokens,loss\n1e6,3,100,1024,2\n", "unknown column 'loss'"),
    ("n_params,model_size_M,target_loss,steps_to_target,batch_tokens\n1e6,1,3,100,1024\n", "both give n_params"),
    ("n_params,target_loss,steps_to_target,batch_tokens\n1e6,3.0,0,1024\n", "t.csv:2: column 'steps_to_target': must be"),
    ("n_params,target_loss,steps_to_target,batch_tokens\n1e6,3.0,x,1024\n", "t.csv:2: column 'steps_to_target': not a number"),
    ("n_params,target_loss,steps_to_target,batch_size,seq_len\n1e6,3,9,8,1.5\n", "'seq_len': must be a whole number"),
    ("n_params,target_loss,steps_to_target,batch_tokens\n1e6,3,9,8\n1e6,3,7,8\n", "t.csv:3: the measurement"),
])
def test_bad_steps_to_target_tables(cli_env, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    result = hp("import", "steps-to-target", str(path))
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert hp_json("runs", "list") == []


def test_steps_to_target_tables_as_spreadsheets_write_them(cli_env, tmp_path: Path) -> None:
    # A byte-order mark, spaces after the commas, both batch forms with one left blank per row,
    # and rows told apart only by their optimizer or lr: all read as meant.
    path = tmp_path / "sheet.csv"
    path.write_text("\ufeffn_params, target_loss, steps_to_target, batch_tokens, batch_size, seq_len, lr, optimizer\n"
                    "123456789, 3.0, 100, 1024, , , 1e-3, adamw\n"
                    "123456000, 3.0, 100, , 4, 256, 1e-3, adamw\n"
                    "123456000, 3.0, 100, , 4, 256, 2e-3, adamw\n"
                    "123456000, 3.0, 90, , 4, 256, 1e-3, lion\n", encoding="utf-8")
    assert hp_json("import", "steps-to-target", str(path))["added"] == 4
    names = sorted(r["name"] for r in hp_json("runs", "list"))
    assert names[0] == "N123456000-target3-batch1024-lr0.001-adamw" and len(set(names)) == 4
    bad = tmp_path / "bad.csv"
    bad.write_text("n_params,target_loss,steps_to_target,batch_tokens,batch_size,seq_len\n1e6,3,100,,4,\n")
    result = hp("import", "steps-to-target", str(bad))
    assert result.exit_code == 1 and "bad.csv:2: no batch" in result.stderr
    bad.write_text("n_params,target_loss,steps_to_target,batch_tokens\n1e6,,100,1024\n")
    result = hp("import", "steps-to-target", str(bad))
    assert result.exit_code == 1 and "column 'target_loss': empty (required)" in result.stderr


def test_a_bad_steps_to_target_tag_names_the_run(cli_env, tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("name,n_params,tokens,final_loss,batch_tokens,tags\n"
                    + "".join(f"r{b},1e6,{b * 100},3.0,{b},steps_to_target=100\n" for b in (64, 128))
                    + "bad,1e6,1e5,3.0,256,steps_to_target=soon\n")
    hp_json("import", "runs", str(path))
    result = hp("fit", "--kind", "critical-batch")
    assert result.exit_code == 1 and "run runs/bad: tag steps_to_target='soon'" in result.stderr
