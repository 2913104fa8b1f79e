"""GET /api/v1/recommend: the published laws, N from the model shape, D from compute, fitted
laws with their near-optimal region and extrapolation warning, and every error path."""

from __future__ import annotations

import math

import pytest
from test_api_support import (  # noqa: F401  (fixtures)
    any_client, app_db, assert_problem, client, close, make_client, seed_fitted_law, seed_grid, seed_loss_law,
)

from hpscale.db import storage

URL = "/api/v1/recommend"


def test_default_is_step_law(client) -> None:
    r = client.get(URL, params={"n_params": 7e9, "tokens": 1.4e12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["law"]["name"] == "steplaw" and body["law"]["origin"] == "published"
    assert close(body["lr"], 1.79 * 7e9**-0.713 * 1.4e12**0.307)
    assert close(body["batch_tokens"], 0.58 * 1.4e12**0.571)
    # A whole number of sequences, the nearest to the law's batch in tokens (kept exact beside it).
    assert body["batch_size"] == 2441 and 2440.5 <= body["batch_tokens"] / 2048 < 2441.5
    assert "nearest whole sequence" in body["batch_size_rounding"]
    assert body["seq_len"] == 2048
    assert body["n_params_basis"] == "given" and body["compute_basis"] == "6 * n_params * tokens"
    assert close(body["compute"], 6 * 7e9 * 1.4e12)
    # A published law has no intervals, hence no region; it knows its data's range (Step Law's
    # released grid reaches C = 3.67e20), and 7B on 1.4T tokens lies 160x beyond it in compute.
    assert body["near_optimal"] is None and body["lr_interval"] is None and body["final_loss"] is None
    assert close(body["extrapolation_factor"], 6 * 7e9 * 1.4e12 / 3.67e20)
    assert body["warnings"] == ["the target lies 160x outside the data law steplaw was fitted on"]


def test_n_from_model_shape_is_echoed(client) -> None:
    r = client.get(URL, params={"d_model": 4096, "n_layers": 32, "vocab_size": 32000, "tokens": 1e12, "seq_len": 4096})
    body = r.json()
    assert r.status_code == 200, r.text
    assert body["n_params"] == 12 * 32 * 4096**2
    assert body["n_params_basis"] == "12 * n_layers * d_model^2"
    assert (body["d_model"], body["n_layers"], body["vocab_size"]) == (4096, 32, 32000)
    assert body["embedding_params"] == 32000 * 4096
    assert body["batch_size"] == round(body["batch_tokens"] / 4096) and isinstance(body["batch_size"], int)


def test_compute_alone_gives_tokens_and_deepseek_uses_it(client) -> None:
    body = client.get(URL, params={"n_params": 1e9, "compute": 6e19, "law": "deepseek"}).json()
    assert body["law"]["name"] == "deepseek" and body["law"]["form"] == "compute"
    assert close(body["tokens"], 1e10) and body["tokens_basis"] == "compute / (6 * n_params)"
    assert body["compute_basis"] == "given"
    assert close(body["lr"], 0.3118 * 6e19**-0.125)
    assert close(body["batch_tokens"], 0.2920 * 6e19**0.3271)


def test_law_by_id(client) -> None:
    law_id = client.get("/api/v1/laws/deepseek").json()["id"]
    assert client.get(URL, params={"n_params": 1e9, "tokens": 1e10, "law": str(law_id)}).json()["law"]["name"] == "deepseek"


def test_tiny_batch_warns(client) -> None:
    body = client.get(URL, params={"n_params": 1e5, "tokens": 1e4, "seq_len": 1_000_000}).json()
    assert any("under one sequence" in w for w in body["warnings"])


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"tokens": 1e10}, "give n_params, or both d_model and n_layers"),
        ({"n_params": 1e9}, "give tokens (D) or compute"),
        ({"n_params": 1e9, "d_model": 512, "n_layers": 4, "tokens": 1e10}, "not both"),
        ({"d_model": 512, "tokens": 1e10}, "both d_model and n_layers"),
        ({"n_params": 1e9, "vocab_size": 50000, "tokens": 1e10}, "vocab_size needs d_model"),
    ],
)
def test_inconsistent_targets_are_422(client, params, detail) -> None:
    assert_problem(client.get(URL, params=params), 422, detail_has=detail)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_params": -5, "tokens": 1e10}, "n_params"),
        ({"n_params": "lots", "tokens": 1e10}, "n_params"),
        ({"n_params": 1e9, "tokens": "nan"}, "tokens"),
        ({"n_params": 1e9, "tokens": "inf"}, "tokens"),
        ({"n_params": 1e30, "tokens": 1e10}, "n_params"),
        ({"n_params": 1e9, "tokens": 1e10, "seq_len": 0}, "seq_len"),
        ({"d_model": 1.5, "n_layers": 2, "tokens": 1e10}, "d_model"),
        ({"n_params": 1e9, "tokens": 1e10, "law": ""}, "law"),
    ],
)
def test_invalid_values_are_422_naming_the_field(client, params, field) -> None:
    body = assert_problem(client.get(URL, params=params), 422, detail_has=f"query.{field}")
    assert body["errors"][0]["loc"] == ["query", field]


def test_unknown_law_is_404(client) -> None:
    assert_problem(client.get(URL, params={"n_params": 1e9, "tokens": 1e10, "law": "nosuchlaw"}), 404, detail_has="nosuchlaw")


def test_law_of_another_kind_is_422(client) -> None:
    storage.add_law(app_db(client), {"name": "mpl", "kind": "trajectory", "form": "multi_power", "origin": "fitted",
                                     "title": "t", "source": "s", "record": {"kind": "trajectory"}, "code_version": "t"})
    assert_problem(client.get(URL, params={"n_params": 1e9, "tokens": 1e10, "law": "mpl"}), 422, detail_has="not a hyper law")


def test_fitted_law_gives_intervals_region_and_extrapolation(any_client) -> None:
    db = app_db(any_client)
    seed_grid(db)
    law_id = seed_fitted_law(db)
    inside = any_client.get(URL, params={"n_params": 4e6, "tokens": 2e8, "law": "grid-fit"}).json()
    assert inside["law"]["id"] == law_id and inside["law"]["origin"] == "fitted"
    assert inside["lr_interval"]["low"] < inside["lr"] < inside["lr_interval"]["high"]
    bs_iv, bt_iv = inside["batch_size_interval"], inside["batch_tokens_interval"]
    assert bs_iv["low"] == math.floor(bt_iv["low"] / 2048) and bs_iv["high"] == math.ceil(bt_iv["high"] / 2048)
    assert inside["extrapolation_factor"] == 1.0 and inside["warnings"] == []
    region = inside["near_optimal"]
    # The grid's near-optimal runs span one lr step (x2) either side of the optimum.
    assert region["basis"] == "law_data" and region["eps"] == 0.0025
    assert 0.4 < region["lr"]["low"] / inside["lr"] < 0.8 and 1.3 < region["lr"]["high"] / inside["lr"] < 2.5
    assert region["batch_tokens"]["low"] <= inside["batch_tokens"] <= region["batch_tokens"]["high"]
    assert region["batch_size"]["low"] == max(1, math.floor(region["batch_tokens"]["low"] / 2048))
    assert region["batch_size"]["high"] == math.ceil(region["batch_tokens"]["high"] / 2048)
    far = any_client.get(URL, params={"n_params": 1.6e9, "tokens": 4e8, "law": str(law_id)}).json()
    assert close(far["extrapolation_factor"], 100.0, rel=1e-6)
    assert far["extrapolation_warning_factor"] == 10.0
    assert any("100x outside" in w for w in far["warnings"])


def test_default_switches_to_a_passing_fitted_law(client) -> None:
    db = app_db(client)
    seed_grid(db)
    client.app.state.laws.ttl = 0  # check for new laws on every request (default: every second)
    assert client.get(URL, params={"n_params": 4e6, "tokens": 2e8}).json()["law"]["name"] == "steplaw"
    # Stored by "another process": the law cache notices that the stored laws changed.
    seed_fitted_law(db, name="failed-check", passed=False)
    assert client.get(URL, params={"n_params": 4e6, "tokens": 2e8}).json()["law"]["name"] == "steplaw"
    seed_fitted_law(db, name="passed-check", passed=True)
    assert client.get(URL, params={"n_params": 4e6, "tokens": 2e8}).json()["law"]["name"] == "passed-check"
    # Far outside the law's data (1000x in N), the published law stays the default; by name, the fitted one answers.
    assert client.get(URL, params={"n_params": 4e9, "tokens": 2e11}).json()["law"]["name"] == "steplaw"
    named = client.get(URL, params={"n_params": 4e9, "tokens": 2e11, "law": "passed-check"}).json()
    assert named["law"]["name"] == "passed-check" and named["extrapolation_factor"] > 10


def test_warning_threshold_comes_from_settings(make_client) -> None:
    c = make_client(extrapolation_warning=1000.0)
    db = app_db(c)
    seed_grid(db)
    seed_fitted_law(db)
    body = c.get(URL, params={"n_params": 1.6e9, "tokens": 4e8, "law": "grid-fit"}).json()
    assert body["extrapolation_warning_factor"] == 1000.0 and body["warnings"] == []
    # The same factor decides where a fitted law is the default: at 1000x, this target gets it.
    assert c.get(URL, params={"n_params": 1.6e9, "tokens": 4e8}).json()["law"]["name"] == "grid-fit"


def test_fitted_loss_law_predicts_the_final_loss(client) -> None:
    row = seed_loss_law(app_db(client), extrapolation={"passed": True})
    body = client.get(URL, params={"n_params": 1e8, "tokens": 1e10}).json()
    assert body["loss_law"]["id"] == row.id
    assert close(body["final_loss"], 1.8 + 400.0 / 1e8**0.34 + 2000.0 / 1e10**0.37)
    assert body["final_loss_interval"] is None and body["warnings"] == []
    # 1000x beyond the loss law's data: no number, a note saying why and what would answer.
    far = client.get(URL, params={"n_params": 1e11, "tokens": 1e10}).json()
    assert far["final_loss"] is None and far["final_loss_interval"] is None and far["loss_law"] is None
    assert far["final_loss_note"].startswith("no final-loss prediction: the target lies 1e+03x outside the data "
                                             "of every stored loss law; loss law loss-fit was fitted on N 1e+06-1e+08")
    # Asked for by name, the law answers anyway: its number, and the warning.
    named = client.get(URL, params={"n_params": 1e11, "tokens": 1e10, "loss_law": "loss-fit"}).json()
    assert close(named["final_loss"], 1.8 + 400.0 / 1e11**0.34 + 2000.0 / 1e10**0.37)
    assert named["final_loss_note"] is None
    assert any("1e+03x outside the data loss law loss-fit was fitted on" in w for w in named["warnings"])
    assert_problem(client.get(URL, params={"n_params": 1e9, "tokens": 1e10, "loss_law": "steplaw"}), 422,
                   detail_has="not a loss law")


def test_demo_loss_law_answers_near_its_data_and_not_for_7b(client) -> None:
    from hpscale.service.demo import load_demo

    load_demo(app_db(client))
    client.app.state.laws.clear()  # the demo was written behind the running app
    far = client.get(URL, params={"n_params": 7e9, "tokens": 1.4e12}).json()
    assert far["final_loss"] is None and far["final_loss_interval"] is None
    assert "outside the data of every stored loss law" in far["final_loss_note"]
    near = client.get(URL, params={"n_params": 2e6, "tokens": 2e7}).json()  # inside the demo sweep's range
    assert near["final_loss"] is not None and near["final_loss_note"] is None
    assert near["loss_law"]["kind"] == "loss"


def test_a_repeated_query_is_answered_without_computing_it_again(client, monkeypatch) -> None:
    # A loss law's bootstrap interval costs milliseconds: a recommendation asked again (the web
    # UI's plots, a training script polling) is answered from the cache until the laws change.
    from hpscale.fitting.loss import LossLaw

    db = app_db(client)
    seed_grid(db)
    seed_loss_law(db, extrapolation={"passed": True})
    calls = []
    predict = LossLaw.predict
    monkeypatch.setattr(LossLaw, "predict", lambda self, *a, **k: calls.append(a) or predict(self, *a, **k))
    params = {"n_params": 1e8, "tokens": 1e10}
    first = client.get(URL, params=params).json()
    assert [client.get(URL, params=params).json() for _ in range(5)] == [first] * 5
    assert len(calls) == 1
    other = client.get(URL, params={**params, "seq_len": 4096}).json()
    assert len(calls) == 2 and other["batch_size"] != first["batch_size"]
    # A law stored since (by another process) changes the answer once the cache checks.
    client.app.state.laws.ttl = 0
    seed_fitted_law(db, name="passed-check", passed=True)
    assert client.get(URL, params={"n_params": 4e6, "tokens": 2e8}).json()["law"]["name"] == "passed-check"
