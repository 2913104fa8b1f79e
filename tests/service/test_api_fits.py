"""POST /api/v1/fits: fit a law from stored runs (auth, validation, a fit the data cannot
support), store it with its provenance, and read it back."""

from __future__ import annotations

import pytest
from test_api_support import (  # noqa: F401  (fixtures)
    API_KEY, any_client, app_db, assert_problem, client, make_client, seed_grid,
)

KEY = {"X-API-Key": API_KEY}
HYPER = {"kind": "hyper", "form": "steplaw", "sources": ["grid"], "bootstrap": 20, "seed": 3}


def test_fit_is_stored_with_its_runs(any_client) -> None:
    run_ids = seed_grid(app_db(any_client))
    r = any_client.post("/api/v1/fits", json=HYPER, headers=KEY)
    assert r.status_code == 201, r.text
    law = r.json()
    assert r.headers["location"] == f"/api/v1/laws/{law['id']}"
    assert law["kind"] == "hyper" and law["form"] == "steplaw" and law["origin"] == "fitted"
    assert law["parameters"]["alpha_lr"] == pytest.approx(-0.5, abs=0.05)
    assert law["intervals"] is not None and law["fit_range"]["n_params"] == {"low": 1e6, "high": 1.6e7}
    assert sorted(p["run_id"] for p in law["data"]) == sorted(run_ids)
    assert any_client.get(law["location"] if "location" in law else f"/api/v1/laws/{law['id']}").json()["id"] == law["id"]
    listed = any_client.get("/api/v1/laws", params={"origin": "fitted"}).json()
    assert [x["id"] for x in listed] == [law["id"]]
    # The new law can be asked for a recommendation at once.
    rec = any_client.get("/api/v1/recommend", params={"n_params": 4e6, "tokens": 2e8, "law": law["id"]}).json()
    assert rec["law"]["id"] == law["id"] and rec["lr_interval"] is not None


def test_fit_on_named_runs(client) -> None:
    seed_grid(app_db(client))
    names = [r["name"] for r in client.get("/api/v1/runs", params={"limit": 1000}).json()["items"]
             if r["tokens"] == 1e8 or r["n_params"] != 1.6e7]
    r = client.post("/api/v1/fits", json={**HYPER, "sources": None, "runs": names}, headers=KEY)
    assert r.status_code == 201, r.text
    assert len(r.json()["data"]) == len(names)


def test_fit_the_data_cannot_support_is_422(client) -> None:
    assert_problem(client.post("/api/v1/fits", json={**HYPER, "sources": ["nothing"]}, headers=KEY), 422)
    seed_grid(app_db(client))
    one_size = [r["name"] for r in client.get("/api/v1/runs", params={"limit": 1000}).json()["items"] if r["n_params"] == 1e6]
    body = assert_problem(client.post("/api/v1/fits", json={**HYPER, "sources": None, "runs": one_size}, headers=KEY), 422)
    assert "n_params" in body["detail"] or "group" in body["detail"]
    assert client.get("/api/v1/laws", params={"origin": "fitted"}).json() == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"kind": "magic"}, "body.kind"),
        ({**HYPER, "bootstrap": 10_001}, "body.bootstrap"),
        ({**HYPER, "bootstrap": -1}, "body.bootstrap"),
        ({**HYPER, "colour": "red"}, "body.colour"),
        ({**HYPER, "sources": [""]}, "body.sources.0"),
    ],
)
def test_invalid_requests_are_422(client, body, where) -> None:
    assert_problem(client.post("/api/v1/fits", json=body, headers=KEY), 422, detail_has=where)


def test_auth(make_client) -> None:
    closed = make_client(api_key=None)
    assert_problem(closed.post("/api/v1/fits", json=HYPER, headers=KEY), 403, detail_has="HPSCALE_API_KEY")
    c = make_client()
    assert_problem(c.post("/api/v1/fits", json=HYPER), 401)
    assert_problem(c.post("/api/v1/fits", json=HYPER, headers={"X-API-Key": "guess"}), 401)


def test_joint_fit_with_a_prior_through_the_api(client) -> None:
    seed_grid(app_db(client))
    body = {**HYPER, "method": "joint", "prior": "steplaw", "prior_width": 0.05}
    r = client.post("/api/v1/fits", json=body, headers=KEY)
    assert r.status_code == 201, r.text
    law = r.json()
    assert law["settings"]["method"] == "joint" and law["prior"]["name"] == "steplaw"
    assert set(law["prior"]["shift"]) == {"alpha_lr", "beta_lr", "beta_b"}
    assert law["noise"]["description"] and law["landscape"]["runs_in_band"] > 0 and law["failure"] == []
    assert_problem(client.post("/api/v1/fits", json={**HYPER, "prior": "kaplan"}, headers=KEY), 422, detail_has="prior")
    assert_problem(client.post("/api/v1/fits", json={**HYPER, "method": "joint", "prior": "steplaw", "form": "compute"},
                               headers=KEY), 422, detail_has="form steplaw or full")


def test_trajectory_fit_on_posted_runs_uses_their_schedules(client) -> None:
    from synthetic_runs import trajectory_records

    for source, with_schedule in (("scheduled", True), ("logged", False)):
        r = client.post("/api/v1/runs", json={"source": source, "runs": trajectory_records(with_schedule)}, headers=KEY)
        assert r.status_code == 200 and r.json()["added"] == 3, r.text
    exact = client.post("/api/v1/fits", json={"kind": "trajectory", "sources": ["scheduled"]}, headers=KEY).json()
    guessed = client.post("/api/v1/fits", json={"kind": "trajectory", "sources": ["logged"]}, headers=KEY).json()
    assert exact["warnings"] == []
    page = client.get(f"/api/v1/laws/{guessed['id']}").json()  # what the law page shows
    assert any("no schedule recorded for 3 of 3 curves" in w for w in page["warnings"])
    # The stored runs' curves carry the lr of the schedule, and their fitted curves match it.
    fits = {f["name"]: f for f in client.get(f"/api/v1/laws/{exact['id']}").json()["fitted_curves"]}
    step = fits["scheduled/step"]
    assert max(abs(p / o - 1) for p, o in zip(step["predicted"], step["observed"])) < 1e-3
def test_a_fit_over_several_sources_needs_mix(client) -> None:
    db = app_db(client)
    seed_grid(db)
    seed_grid(db, source="other")
    body = {**HYPER, "sources": None, "bootstrap": 0}
    problem = assert_problem(client.post("/api/v1/fits", json=body, headers=KEY), 422)
    assert "2 sources are stored: grid (" in problem["detail"] and "other (" in problem["detail"]
    assert client.post("/api/v1/fits", json={**body, "sources": ["grid"]}, headers=KEY).status_code == 201
    mixed = client.post("/api/v1/fits", json={**body, "mix": True}, headers=KEY)
    assert mixed.status_code == 201 and mixed.json()["settings"]["mix"] is True


def test_critical_batch_law_shows_each_target(client) -> None:
    # Steps-to-target measurements sent as runs tagged steps_to_target (S = S_min (1 + B_crit / B),
    # S_min 1000, B_crit = 2e3 N^0.5 tokens): the law's detail carries every target's fit.
    runs = [{"name": f"n{n:g}-b{b}", "n_params": n, "tokens": s * b, "final_loss": 3.0, "batch_tokens": b,
             "tags": {"steps_to_target": s}}
            for n in (1e6, 4e6, 1.6e7) for b in (1024, 4096, 16384, 65536)
            for s in [1e3 * (1 + 2e3 * n ** 0.5 / b)]]
    assert client.post("/api/v1/runs", json={"source": "cbs", "runs": runs}, headers=KEY).json()["added"] == 12
    r = client.post("/api/v1/fits", json={"kind": "critical-batch", "sources": ["cbs"], "bootstrap": 20}, headers=KEY)
    assert r.status_code == 201, r.text
    info = r.json()["critical_batch"]
    assert [t["b_crit"] for t in info["targets"]] == pytest.approx([2e3 * n ** 0.5 for n in (1e6, 4e6, 1.6e7)], rel=1e-3)
    assert info["exponents"]["n_params"] == pytest.approx(0.5, abs=1e-3) and info["by"] == "n_params"
    hyper = client.get("/api/v1/laws/steplaw").json()
    assert hyper["critical_batch"] is None
    r = client.post("/api/v1/fits", json={"kind": "critical-batch", "sources": ["cbs"], "bootstrap": 0,
                                          "by": "target_loss"}, headers=KEY)
    assert r.status_code == 422 and "same target_loss" in r.json()["detail"]  # every target at loss 3.0
    r = client.post("/api/v1/fits", json={"kind": "critical-batch", "sources": ["cbs"], "bootstrap": 0,
                                          "by": "tokens"}, headers=KEY)
    assert r.status_code == 201 and r.json()["critical_batch"]["by"] == "tokens"
