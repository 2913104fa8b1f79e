"""Laws per optimizer: a fit is one optimizer's and records it, with the lr-batch coupling of
its runs; ``recommend --optimizer``, the API's ``optimizer`` parameter and ``laws show`` choose
and show them; the published (AdamW) laws never answer for another optimizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import hp, hp_json
from synthetic_runs import SIZES, TOKENS, grid_records, optimum, write_jsonl
from test_api_support import assert_problem, client, make_client  # noqa: F401  (fixtures)

from hpscale.service import fits

PER_OPTIMIZER = len(SIZES) * len(TOKENS) * 15


@pytest.fixture
def two_optimizers(cli_env, tmp_path: Path) -> Path:
    """The synthetic grid trained with AdamW (lr* as the known law, no lr-batch coupling) and with
    Lion (lr* 10x smaller, lr* ~ B^0.5), in one source."""
    records = grid_records(optimizer="adamw") + grid_records(optimizer="lion", lr_scale=0.1, coupling=0.5)
    path = write_jsonl(tmp_path / "runs.jsonl", records)
    assert hp_json("import", "runs", str(path), "--source", "grid")["added"] == 2 * PER_OPTIMIZER
    return path


def test_a_fit_is_one_optimizers_and_records_it_with_the_coupling(two_optimizers) -> None:
    mixed = hp("fit", "--kind", "hyper", "--bootstrap", "0")
    assert mixed.exit_code == 1
    assert mixed.stderr == ("error: the selected runs trained with 2 optimizers (adamw: 120, lion: 120): a law is one "
                            "optimizer's, choose one with --optimizer (API: optimizer)\n")
    lion = hp_json("fit", "--kind", "hyper", "--optimizer", "Lion", "--bootstrap", "100")
    assert lion["optimizer"] == "lion" and len(lion["run_ids"]) == PER_OPTIMIZER
    assert "for lion" in lion["title"] and lion["name"].startswith("hyper-steplaw-lion-")
    coupling = lion["lr_batch_coupling"]
    # Bowls additive in loss, the basin model's in log loss: near, not exact.
    assert coupling["exponent"] == pytest.approx(0.5, abs=0.01)
    assert coupling["theory"] == 0.5 and coupling["groups"] == len(SIZES) * len(TOKENS) and coupling["cells_excluded"] == 0
    assert coupling["interval"][0] - 0.01 <= 0.5 <= coupling["interval"][1] + 0.01
    adamw = hp_json("fit", "--kind", "hyper", "--optimizer", "adamw", "--bootstrap", "0")
    assert adamw["optimizer"] == "adamw" and adamw["lr_batch_coupling"]["exponent"] == pytest.approx(0.0, abs=0.01)
    assert adamw["lr_batch_coupling"]["interval"] is None  # no bootstrap, no interval
    shown = hp("laws", "show", str(lion["id"]))
    assert shown.exit_code == 0 and "optimizer lion" in shown.stdout
    said = " ".join(shown.stdout.split())
    assert f"lr-batch exponent (lr* ~ B^k at fixed N, D): k = {coupling['exponent']:.3g} (95% interval" in said
    assert f"from {coupling['groups']} groups, {coupling['runs']} runs near their group's best" in said
    assert "theory 0.5 (Adam-type: a sign-based" in " ".join(shown.stdout.split())
    listed = hp("laws", "list")
    assert "lion" in listed.stdout
    nothing = hp("fit", "--kind", "hyper", "--optimizer", "sgd")
    assert nothing.exit_code == 1 and nothing.stderr.startswith("error: no finished sgd runs")


def test_recommend_chooses_among_the_optimizers_laws(two_optimizers) -> None:
    lion = hp_json("fit", "--kind", "hyper", "--optimizer", "lion", "--bootstrap", "0", "--name", "lion-law")
    adamw = hp_json("fit", "--kind", "hyper", "--optimizer", "adamw", "--bootstrap", "0", "--name", "adamw-law")
    assert lion["extrapolation"]["passed"] and adamw["extrapolation"]["passed"]
    n, d = 4e7, 8e9
    lr_star, _ = optimum(n, d)
    rec = hp_json("recommend", "--params", str(n), "--tokens", str(d), "--optimizer", "lion")
    assert rec["law"] == "lion-law" and rec["optimizer"] == "lion"
    assert rec["lr"] == pytest.approx(0.1 * lr_star, rel=0.2)
    default = hp_json("recommend", "--params", str(n), "--tokens", str(d))
    assert default["law"] == "adamw-law" and default["optimizer"] == "adamw"
    assert default["lr"] == pytest.approx(lr_star, rel=0.2)
    # Far from Lion's data: its law still answers (with the warning), never AdamW's Step Law.
    far = hp_json("recommend", "--params", "7e9", "--tokens", "2e12", "--optimizer", "lion")
    assert far["law"] == "lion-law" and any("outside the data" in w for w in far["warnings"])
    assert hp_json("recommend", "--params", "7e9", "--tokens", "2e12")["law"] == "steplaw"
    # No law for SGD: a clear message, not an AdamW law.
    sgd = hp("recommend", "--params", str(n), "--tokens", str(d), "--optimizer", "sgd")
    assert sgd.exit_code == 1 and sgd.stderr.startswith("error: no fitted hyper law for optimizer 'sgd'")
    assert "published laws (Step Law, DeepSeek) are AdamW's" in sgd.stderr and "Traceback" not in sgd.stderr
    # A named law must be the asked optimizer's; without --optimizer it answers for its own.
    wrong = hp("recommend", "--params", str(n), "--tokens", str(d), "--law", "steplaw", "--optimizer", "lion")
    assert wrong.exit_code == 1 and "was fitted on adamw runs, not lion" in wrong.stderr
    assert hp_json("recommend", "--params", str(n), "--tokens", str(d), "--law", "lion-law")["optimizer"] == "lion"
    human = hp("recommend", "--params", str(n), "--tokens", str(d), "--optimizer", "lion")
    assert "optimizer lion" in human.stdout


def test_the_loss_prediction_comes_from_the_optimizers_own_loss_law(two_optimizers) -> None:
    hp_json("fit", "--kind", "hyper", "--optimizer", "lion", "--bootstrap", "0")
    loss = hp_json("fit", "--kind", "loss", "--optimizer", "adamw", "--bootstrap", "0")
    assert loss["optimizer"] == "adamw"
    assert hp_json("recommend", "--params", "4e7", "--tokens", "8e9")["loss_law_id"] == loss["id"]
    assert hp_json("recommend", "--params", "4e7", "--tokens", "8e9", "--optimizer", "lion")["final_loss"] is None


def test_the_api_recommends_per_optimizer_and_shows_the_coupling(client) -> None:  # noqa: F811
    from test_api_support import app_db

    db = app_db(client)
    from hpscale.db import storage
    from hpscale.service.runformat import validate_runs

    records = grid_records(optimizer="adamw") + grid_records(optimizer="sgd", lr_scale=10.0, coupling=1.0)
    storage.add_runs(db, [r.to_storage("grid") for r in validate_runs(records)])
    law = fits.fit_and_store(db, kind="hyper", optimizer="sgd", n_bootstrap=50, name="sgd-law")
    r = client.get("/api/v1/recommend", params={"n_params": 4e7, "tokens": 8e9, "optimizer": "sgd"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["optimizer"] == "sgd" and body["law"]["name"] == "sgd-law" and body["law"]["optimizer"] == "sgd"
    plain = client.get("/api/v1/recommend", params={"n_params": 4e7, "tokens": 8e9}).json()
    assert plain["optimizer"] == "adamw" and plain["law"]["name"] == "steplaw"  # AdamW has no fitted law here
    assert_problem(client.get("/api/v1/recommend", params={"n_params": 4e7, "tokens": 8e9, "optimizer": "lion"}),
                   404, detail_has="no fitted hyper law for optimizer 'lion'")
    assert_problem(client.get("/api/v1/recommend", params={"n_params": 4e7, "tokens": 8e9, "law": "sgd-law",
                                                           "optimizer": "adamw"}),
                   422, detail_has="was fitted on sgd runs, not adamw")
    assert_problem(client.get("/api/v1/recommend", params={"n_params": 4e7, "tokens": 8e9, "optimizer": "Not One"}), 422)
    detail = client.get(f"/api/v1/laws/{law.id}").json()
    assert detail["optimizer"] == "sgd"
    coupling = detail["lr_batch_coupling"]
    assert coupling["exponent"] == pytest.approx(1.0, abs=0.01) and coupling["theory"] == 1.0
    assert coupling["interval"]["low"] - 1e-9 <= 1.0 <= coupling["interval"]["high"] + 1e-9
    assert len(coupling["per_group"]) == len(SIZES) * len(TOKENS)
    listed = client.get("/api/v1/laws", params={"optimizer": "sgd"}).json()
    assert [x["name"] for x in listed] == ["sgd-law"]
    published = client.get("/api/v1/laws", params={"origin": "published"}).json()
    assert {x["optimizer"] for x in published} == {"adamw"}
    assert client.get("/api/v1/laws/steplaw").json()["lr_batch_coupling"] is None
