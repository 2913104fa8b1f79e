"""GET /api/v1/runs (pages, source filter), /runs/{id}, /runs/{id}/curve, and POST /api/v1/runs
in the import format: the auth rules, validation, idempotence and the body size limit."""

from __future__ import annotations

import json

import pytest
from test_api_support import (  # noqa: F401  (fixtures)
    API_KEY, any_client, app_db, assert_problem, client, make_client, seed_grid,
)

from hpscale.db import storage
from hpscale.db.errors import ConflictError

KEY = {"X-API-Key": API_KEY}
RUN = {"name": "r1", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.5, "lr": 1e-3, "batch_size": 32, "seq_len": 256,
       "tags": {"note": "x"}, "curve": [{"step": 10, "lr": 1e-3, "loss": 5.0, "tokens": 81920}, {"step": 20, "loss": 4.0}]}


def post_runs(client, body, headers=KEY):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/runs", json=body, headers=headers)


def test_import_then_read_back(any_client) -> None:
    r = post_runs(any_client, {"source": "mine", "runs": [RUN, {**RUN, "name": "r2", "curve": None, "final_loss": 3.4}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"source": "mine", "added": 2, "skipped": 0}
    page = any_client.get("/api/v1/runs", params={"source": "mine"}).json()
    assert page["total"] == 2 and [x["name"] for x in page["items"]] == ["r1", "r2"]
    run = page["items"][0]
    assert run["batch_tokens"] == 32 * 256 and run["compute"] == 6 * 1e6 * 2e7 and run["status"] == "done"
    detail = any_client.get(f"/api/v1/runs/{run['id']}").json()
    assert detail["tags"] == {"note": "x"} and detail["final_loss_status"] == "finite" and "config" in detail
    curve = any_client.get(f"/api/v1/runs/{run['id']}/curve").json()
    assert curve["run_id"] == run["id"]
    assert [(p["step"], p["val_loss"], p["lr"], p["tokens"]) for p in curve["points"]] == [
        (10, 5.0, 1e-3, 81920.0), (20, 4.0, None, None)]


def test_reimport_skips_known_runs(client) -> None:
    body = {"source": "mine", "runs": [RUN]}
    assert post_runs(client, body).json()["added"] == 1
    assert post_runs(client, body).json() == {"source": "mine", "added": 0, "skipped": 1}
    # Unnamed runs are keyed by their content, so re-sending them is idempotent too.
    unnamed = {"source": "mine", "runs": [{"n_params": 2e6, "tokens": 1e8, "final_loss": 3.0}]}
    assert post_runs(client, unnamed).json()["added"] == 1
    assert post_runs(client, unnamed).json()["skipped"] == 1


def test_diverged_run_without_loss(client) -> None:
    r = post_runs(client, {"source": "s", "runs": [{"name": "d", "n_params": 1e6, "tokens": 1e7, "final_loss": None,
                                                    "status": "diverged"}]})
    assert r.json()["added"] == 1
    run = client.get("/api/v1/runs").json()["items"][0]
    assert run["status"] == "diverged" and run["final_loss"] is None and run["final_loss_status"] == "missing"


def test_pagination_and_filter(client) -> None:
    seed_grid(app_db(client))
    post_runs(client, {"source": "aaa", "runs": [RUN]})
    first = client.get("/api/v1/runs", params={"limit": 10}).json()
    assert first["total"] == 91 and len(first["items"]) == 10 and first["items"][0]["source"] == "aaa"
    last = client.get("/api/v1/runs", params={"limit": 10, "offset": 90}).json()
    assert len(last["items"]) == 1 and last["offset"] == 90
    ids = set()
    for offset in range(0, 91, 10):
        ids |= {x["id"] for x in client.get("/api/v1/runs", params={"limit": 10, "offset": offset}).json()["items"]}
    assert len(ids) == 91
    assert client.get("/api/v1/runs", params={"source": "grid"}).json()["total"] == 90
    both = client.get("/api/v1/runs", params=[("source", "aaa"), ("source", "grid"), ("limit", 1)]).json()
    assert both["total"] == 91
    assert client.get("/api/v1/runs", params={"source": "none"}).json() == {"items": [], "total": 0, "limit": 100, "offset": 0}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 5000}, {"offset": -1}, {"source": ""}])
def test_bad_page_parameters_are_422(client, params) -> None:
    assert_problem(client.get("/api/v1/runs", params=params), 422)


def test_missing_runs_are_404(client) -> None:
    assert_problem(client.get("/api/v1/runs/12345"), 404, detail_has="12345")
    assert_problem(client.get("/api/v1/runs/12345/curve"), 404)
    assert_problem(client.get("/api/v1/runs/abc"), 422, detail_has="path.run_id")


# -- auth ----------------------------------------------------------------------------------------
def test_writes_refused_without_a_configured_key(make_client) -> None:
    c = make_client(api_key=None)
    body = assert_problem(post_runs(c, {"source": "s", "runs": [RUN]}, headers={"X-API-Key": "anything"}), 403)
    assert "HPSCALE_API_KEY" in body["detail"]
    assert c.get("/api/v1/runs").json()["total"] == 0
    # An empty key configured is no key: still closed.
    assert_problem(post_runs(make_client(api_key=""), {"source": "s", "runs": [RUN]}, headers={"X-API-Key": ""}), 403)


@pytest.mark.parametrize("key", ["   ", " \t "])
def test_a_whitespace_only_key_is_no_key(make_client, monkeypatch, key) -> None:
    # A key of whitespace could never match (HTTP strips a header value's whitespace): it counts
    # as unset, so writes are disabled (403), as with no key at all.
    from hpscale.service.settings import Settings

    monkeypatch.setenv("HPSCALE_API_KEY", key)
    assert Settings().api_key is None
    c = make_client(api_key=key)
    for sent in ({"X-API-Key": "x"}, {}):
        assert_problem(post_runs(c, {"source": "s", "runs": [RUN]}, headers=sent), 403, detail_has="HPSCALE_API_KEY")
    # Whitespace around a real key is dropped the same way: the key itself still works.
    padded = make_client(api_key=f"  {API_KEY}\n")
    assert post_runs(padded, {"source": "s", "runs": [RUN]}).status_code == 200


def test_missing_or_wrong_key_is_401(client) -> None:
    assert_problem(post_runs(client, {"source": "s", "runs": [RUN]}, headers={}), 401, detail_has="X-API-Key")
    assert_problem(post_runs(client, {"source": "s", "runs": [RUN]}, headers={"X-API-Key": API_KEY + "x"}), 401, detail_has="wrong")
    assert_problem(post_runs(client, {"source": "s", "runs": [RUN]}, headers={"X-API-Key": API_KEY[:-1]}), 401)
    assert client.get("/api/v1/runs").json()["total"] == 0


def test_key_is_checked_before_body_validation(client) -> None:
    # An unauthenticated client learns nothing about the body's fields; only JSON that does not
    # parse at all is refused before the key is looked at (FastAPI parses the body first).
    assert_problem(post_runs(client, {"source": "s", "runs": []}, headers={}), 401)


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("runs", "where"),
    [
        ([{"n_params": 1e6, "tokens": 1e7}], "body.runs.0.final_loss"),
        ([{"n_params": -1, "tokens": 1e7, "final_loss": 3}], "body.runs.0.n_params"),
        ([RUN, {**RUN, "final_loss": None}], "body.runs.1"),
        ([{**RUN, "colour": "red"}], "body.runs.0.colour"),
        ([{**RUN, "status": "running"}], "body.runs.0.status"),
        ([{**RUN, "batch_tokens": 1.0}], "disagrees"),
        ([], "body.runs"),
    ],
)
def test_invalid_runs_are_422_and_store_nothing(client, runs, where) -> None:
    assert_problem(post_runs(client, {"source": "s", "runs": runs}), 422, detail_has=where)
    assert client.get("/api/v1/runs").json()["total"] == 0


def test_repeated_names_are_422(client) -> None:
    assert_problem(post_runs(client, {"source": "s", "runs": [RUN, RUN]}), 422, detail_has="repeats")


def test_malformed_json_and_missing_source(client) -> None:
    bad = client.post("/api/v1/runs", content=b"{not json", headers={**KEY, "content-type": "application/json"})
    assert_problem(bad, 422, detail_has="not valid JSON")
    assert_problem(post_runs(client, {"runs": [RUN]}), 422, detail_has="body.source")
    assert_problem(post_runs(client, {"source": "x" * 201, "runs": [RUN]}), 422, detail_has="body.source")


def test_conflict_is_409(client, monkeypatch) -> None:
    def racing(db, runs):  # type: ignore[no-untyped-def]
        raise ConflictError("write refused: UNIQUE constraint failed: runs.source, runs.name")

    monkeypatch.setattr(storage, "add_runs", racing)
    assert_problem(post_runs(client, {"source": "s", "runs": [RUN]}), 409, detail_has="UNIQUE")


# -- size limit -----------------------------------------------------------------------------------
def test_body_over_the_limit_is_413(make_client) -> None:
    c = make_client(max_body_bytes=2000)
    small = {"source": "s", "runs": [RUN]}
    assert post_runs(c, small).status_code == 200
    big = {"source": "s", "runs": [{**RUN, "name": f"r{i}"} for i in range(40)]}
    assert len(json.dumps(big)) > 2000
    assert_problem(post_runs(c, big), 413, detail_has="2000 bytes")
    # Streamed without a Content-Length (chunked): counted as it arrives.
    chunks = (json.dumps(big)[i:i + 500].encode() for i in range(0, len(json.dumps(big)), 500))
    streamed = c.post("/api/v1/runs", content=chunks, headers={**KEY, "content-type": "application/json"})
    assert_problem(streamed, 413)
    assert c.get("/api/v1/runs").json()["total"] == 1


def test_streamed_body_under_the_limit_is_accepted(make_client) -> None:
    c = make_client(max_body_bytes=5000)
    raw = json.dumps({"source": "s", "runs": [RUN]}).encode()
    r = c.post("/api/v1/runs", content=(raw[i:i + 100] for i in range(0, len(raw), 100)),
               headers={**KEY, "content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_a_branch_shows_its_trunk(client) -> None:
    db = app_db(client)
    storage.add_runs(db, [{"source": "wsd", "name": "b", "n_params": 1e5, "tokens": 1e6, "final_loss": 3.0,
                           "trunk_key": "N100000-B8-trunk", "config": {"branch_step": 80}},
                          {"source": "wsd", "name": "alone", "n_params": 1e5, "tokens": 1e6, "final_loss": 3.0}])
    items = {x["name"]: x["id"] for x in client.get("/api/v1/runs").json()["items"]}
    branch = client.get(f"/api/v1/runs/{items['b']}").json()
    assert branch["trunk_key"] == "N100000-B8-trunk" and branch["config"]["branch_step"] == 80
    assert client.get(f"/api/v1/runs/{items['alone']}").json()["trunk_key"] is None


# -- delete -----------------------------------------------------------------------------------------
def test_a_bad_run_can_be_deleted_and_listings_recover(any_client) -> None:
    # A run with tags nested 256 deep, as stored before the input rules existed.
    deep: dict = {}
    inner = deep
    for _ in range(256):
        inner["a"] = {}
        inner = inner["a"]
    db = app_db(any_client)
    post_runs(any_client, {"source": "mine", "runs": [RUN, {**RUN, "name": "r2", "curve": None}]})
    storage.add_runs(db, [{"source": "bad", "name": "deep", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.0,
                           "tags": deep}])
    assert any_client.get("/api/v1/runs").status_code == 200
    # Writes need the key, like the other writes.
    assert_problem(any_client.delete("/api/v1/runs", params={"source": "bad"}), 401)
    r = any_client.delete("/api/v1/runs", params={"source": "bad"}, headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json() == {"runs": 1, "by_source": {"bad": 1}, "laws": []}
    assert any_client.get("/api/v1/runs").json()["total"] == 2
    # By name within a source; an unknown name refuses the whole delete.
    assert_problem(any_client.delete("/api/v1/runs", params=[("source", "mine"), ("name", "r1"), ("name", "zz")],
                                     headers=KEY), 404, detail_has="'zz'")
    assert any_client.get("/api/v1/runs").json()["total"] == 2
    r = any_client.delete("/api/v1/runs", params={"source": "mine", "name": "r1"}, headers=KEY)
    assert r.json()["runs"] == 1 and [x["name"] for x in any_client.get("/api/v1/runs").json()["items"]] == ["r2"]
    assert_problem(any_client.delete("/api/v1/runs", headers=KEY), 422, detail_has="query.source")


def test_deleting_runs_a_law_used_needs_force(client) -> None:
    from test_api_support import seed_fitted_law, seed_grid

    db = app_db(client)
    seed_grid(db)
    law_id = seed_fitted_law(db, name="grid-fit")
    problem = assert_problem(client.delete("/api/v1/runs", params={"source": "grid", "name": "n1e+06-d1e+08-lr0-b0"},
                                           headers=KEY), 409, detail_has=f"#{law_id} 'grid-fit'")
    assert "force" in problem["detail"] and client.get(f"/api/v1/laws/{law_id}").status_code == 200
    assert client.get("/api/v1/runs").json()["total"] == 90
    r = client.delete("/api/v1/runs", params={"source": "grid", "force": "true"}, headers=KEY)
    assert r.json() == {"runs": 90, "by_source": {"grid": 90}, "laws": [{"id": law_id, "name": "grid-fit"}]}
    assert_problem(client.get(f"/api/v1/laws/{law_id}"), 404)
    # The recommendation falls back to the published law at once (the law cache was cleared).
    rec = client.get("/api/v1/recommend", params={"n_params": 4e6, "tokens": 4e8}).json()
    assert rec["law"]["name"] == "steplaw"
