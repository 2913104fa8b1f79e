"""GET /api/v1/laws and /laws/{law}: listing, filters, a law's parameters, intervals, data,
extrapolation report and plotting curve, and the error paths."""

from __future__ import annotations

import math

import pytest
from test_api_support import (  # noqa: F401  (fixtures)
    any_client, app_db, assert_problem, client, close, make_client, seed_fitted_law, seed_grid, seed_loss_law,
)

from hpscale.db import storage


def test_published_laws_are_listed_on_a_new_database(client) -> None:
    r = client.get("/api/v1/laws")
    assert r.status_code == 200
    laws = {law["name"]: law for law in r.json()}
    assert set(laws) == {"steplaw", "deepseek"}
    assert laws["steplaw"]["kind"] == "hyper" and laws["steplaw"]["origin"] == "published"
    assert laws["steplaw"]["extrapolation_passed"] is None
    assert "Predictable Scale" in laws["steplaw"]["source"]


def test_filters(client) -> None:
    db = app_db(client)
    seed_grid(db)
    seed_fitted_law(db)
    assert [x["name"] for x in client.get("/api/v1/laws", params={"origin": "fitted"}).json()] == ["grid-fit"]
    assert len(client.get("/api/v1/laws", params={"kind": "hyper"}).json()) == 3
    assert client.get("/api/v1/laws", params={"kind": "loss"}).json() == []
    assert_problem(client.get("/api/v1/laws", params={"kind": "magic"}), 422, detail_has="query.kind")


def test_published_law_detail_and_curve(client) -> None:
    body = client.get("/api/v1/laws/steplaw", params={"n_min": 1e8, "n_max": 1e10, "points": 3}).json()
    assert body["parameters"] == {"a_lr": 1.79, "alpha_lr": -0.713, "beta_lr": 0.307, "a_b": 0.58, "beta_b": 0.571}
    # A published law stores the range of the data it was fitted on (Step Law: its released grid).
    assert body["intervals"] is None and body["data"] == []
    assert body["fit_range"]["n_params"] == {"low": 2.147e8, "high": 1.074e9}
    assert body["fit_range"]["tokens"] == {"low": 4e9, "high": 1e11}
    curve = body["curve"]
    # D fixed at the geometric middle of the law's data (2e10) unless a fixed D is given.
    assert curve["kind"] == "hyper" and curve["tokens_rule"].startswith("fixed D = 2e+10")
    assert [p["n_params"] for p in curve["points"]] == pytest.approx([1e8, 1e9, 1e10])
    p = curve["points"][1]
    assert close(p["tokens"], 2e10) and close(p["lr"], 1.79 * 1e9**-0.713 * 2e10**0.307)
    assert p["lr_interval"] is None
    fixed = client.get("/api/v1/laws/1", params={"points": 2, "tokens": 1e11}).json()["curve"]
    assert [q["tokens"] for q in fixed["points"]] == [1e11, 1e11] and "fixed D = 1e+11" in fixed["tokens_rule"]
    # The default range: the law's data widened 10x each way.
    assert [q["n_params"] for q in fixed["points"]] == pytest.approx([2.147e7, 1.074e10])


def test_fitted_law_detail(any_client) -> None:
    db = app_db(any_client)
    run_ids = seed_grid(db)
    law_id = seed_fitted_law(db)
    body = any_client.get(f"/api/v1/laws/{law_id}", params={"points": 5}).json()
    assert body["name"] == "grid-fit" and body["origin"] == "fitted" and body["extrapolation_passed"] is True
    assert body["extrapolation"]["lr_log_error"] == 0.01
    # The synthetic grid's optimum is lr* = 2 N^-0.5 D^0.1: the fit must find it.
    assert body["parameters"]["alpha_lr"] == pytest.approx(-0.5, abs=0.05)
    assert set(body["intervals"]) == {"a_lr", "alpha_lr", "beta_lr", "a_b", "beta_b"}
    assert body["fit_range"]["n_params"] == {"low": 1e6, "high": 1.6e7}
    assert sorted(p["run_id"] for p in body["data"]) == sorted(run_ids)
    assert all(p["source"] == "grid" and p["lr"] > 0 for p in body["data"])
    curve = body["curve"]
    assert curve["points"][0]["n_params"] == pytest.approx(1e5) and curve["points"][-1]["n_params"] == pytest.approx(1.6e8)
    assert "geometric middle" in curve["tokens_rule"] and close(curve["points"][0]["tokens"], math.sqrt(1e8 * 4e8))
    for p in curve["points"]:  # bootstrap bands around the point estimate
        assert p["lr_interval"]["low"] <= p["lr"] * 1.000001 and p["lr"] <= p["lr_interval"]["high"] * 1.000001


def test_law_by_name_and_not_found(client) -> None:
    assert client.get("/api/v1/laws/deepseek").json()["form"] == "compute"
    assert_problem(client.get("/api/v1/laws/9999"), 404, detail_has="9999")
    assert_problem(client.get("/api/v1/laws/nope"), 404)


def test_non_hyper_law_has_no_curve(client) -> None:
    row = storage.add_law(app_db(client), {
        "name": "mpl", "kind": "trajectory", "form": "multi_power", "origin": "fitted", "title": "MPL", "source": "s",
        "record": {"kind": "trajectory", "coefficients": {"L0": 2.0, "A": 0.5, "bad": float("nan")}}, "code_version": "t"})
    body = client.get(f"/api/v1/laws/{row.id}").json()
    assert body["curve"] is None and body["fitted_curves"] is None and body["parameters"] == {"L0": 2.0, "A": 0.5}


@pytest.mark.parametrize(
    "params", [{"points": 1}, {"points": 10_000}, {"n_min": 0}, {"n_min": 1e9, "n_max": 1e8}, {"tokens": -1},
               {"tokens_per_param": 0}],
)
def test_bad_curve_parameters_are_422(client, params) -> None:
    assert_problem(client.get("/api/v1/laws/steplaw", params=params), 422)


def test_loss_law_curve(client) -> None:
    row = seed_loss_law(app_db(client))
    curve = client.get(f"/api/v1/laws/{row.id}", params={"points": 3}).json()["curve"]
    assert curve["kind"] == "loss" and [p["n_params"] for p in curve["points"]] == pytest.approx([1e5, 1e7, 1e9])
    p = curve["points"][1]
    assert close(p["tokens"], 1e9) and close(p["final_loss"], 1.8 + 400.0 / 1e7**0.34 + 2000.0 / 1e9**0.37)


def test_trajectory_law_shows_observed_against_predicted(client) -> None:
    import numpy as np

    from hpscale.fitting.trajectory import MultiPowerLaw
    from hpscale.service.runformat import validate_runs

    coef = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "B": 300.0, "C": 2.0, "beta": 0.6, "gamma": 0.6}
    law = MultiPowerLaw.from_record({"kind": "trajectory", "coefficients": coef})
    steps = np.arange(10, 1001, 10)
    schedules = {"constant": np.full(1000, 1e-3), "step": np.where(np.arange(1, 1001) < 800, 1e-3, 3e-4)}
    records = []
    for name, lr in schedules.items():
        loss = law.predict(lr, steps, 0)
        records.append({"name": name, "n_params": 1e6, "tokens": 1e8, "final_loss": float(loss[-1]), "lr": 1e-3,
                        "curve": [{"step": int(s), "lr": float(lr[s - 1]), "loss": float(v)} for s, v in zip(steps, loss)]})
    db = app_db(client)
    storage.add_runs(db, [r.to_storage("mpl") for r in validate_runs(records)])
    run_ids = [r.id for r in storage.list_runs(db, sources=["mpl"])]
    row = storage.add_law(db, {"name": "mpl-fit", "kind": "trajectory", "form": "multi_power", "origin": "fitted",
                               "title": "MPL", "source": "runs", "record": law.to_record(),
                               "code_version": "t"}, run_ids)
    body = client.get(f"/api/v1/laws/{row.id}").json()
    assert body["curve"] is None and len(body["data"]) == 2
    fits = {f["name"]: f for f in body["fitted_curves"]}
    assert set(fits) == {"mpl/constant", "mpl/step"}
    for f in fits.values():
        assert len(f["steps"]) == len(f["observed"]) == len(f["predicted"]) > 50
        assert np.allclose(f["observed"], f["predicted"], rtol=0.02)


def test_unusable_record_is_shown_with_a_warning(client) -> None:
    row = storage.add_law(app_db(client), {
        "name": "broken", "kind": "hyper", "form": "steplaw", "origin": "fitted", "title": "t", "source": "s",
        "record": {"kind": "hyper", "form": "steplaw", "coefficients": {"a_lr": 1.0}}, "code_version": "t"})
    body = client.get(f"/api/v1/laws/{row.id}").json()
    assert body["curve"] is None and body["parameters"] == {"a_lr": 1.0}
    assert any("cannot be used" in w for w in body["warnings"])


def test_odd_digits_in_a_law_reference_are_not_found(client) -> None:
    # "¹" passes str.isdigit() but not int(): a lookup by name, not a crash.
    assert_problem(client.get("/api/v1/laws/\u00b9"), 404)
    assert client.get("/api/v1/laws/\u0661").json()["id"] == 1  # Arabic-Indic one is a decimal: id 1


def test_ids_past_the_integer_columns_are_not_found(any_client) -> None:
    huge = "9" * 25
    assert_problem(any_client.get(f"/api/v1/laws/{huge}"), 404)
    assert_problem(any_client.get(f"/api/v1/sweeps/{huge}/groups"), 404)
    assert_problem(any_client.get(f"/api/v1/runs/{huge}"), 404)
    assert_problem(any_client.get("/api/v1/recommend", params={"n_params": 1e9, "tokens": 1e10, "law": huge}), 404)


def test_a_law_fitted_on_absurd_sizes_still_has_a_curve(client) -> None:
    # Schema-valid runs of 1e-300 (or 1e300) parameters: the default curve range stays within
    # 1 .. 1e16 parameters instead of reaching 0 or infinity (a 500 before).
    from hpscale.fitting.loss import LossLaw

    for low, high, name in ((5e-324, 1e-300, "tiny"), (1e300, 1.7e308, "huge")):
        law = LossLaw(n_bootstrap=0)
        law.coef_ = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
        law.fit_range_ = {"n_params": [low, high], "tokens": [1e8, 1e10], "compute": [1e9, 1e20]}
        row = storage.add_law(app_db(client), {
            "name": name, "kind": "loss", "form": law.form, "origin": "fitted", "title": "t", "source": "runs",
            "record": law.to_record(), "code_version": "t"})
        r = client.get(f"/api/v1/laws/{row.id}", params={"points": 3})
        assert r.status_code == 200, r.text
        assert all(1.0 <= p["n_params"] <= 1e16 for p in r.json()["curve"]["points"])
