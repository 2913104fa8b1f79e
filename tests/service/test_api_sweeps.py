"""GET /api/v1/sweeps, /sweeps/{sweep} and /sweeps/{sweep}/groups."""

from __future__ import annotations

import pytest

from test_api_support import (  # noqa: F401  (fixtures)
    any_client, app_db, assert_problem, client, make_client, seed_sweep,
)


def test_empty(client) -> None:
    assert client.get("/api/v1/sweeps").json() == []


def test_list_and_detail_with_progress(any_client) -> None:
    sweep_id = seed_sweep(app_db(any_client))
    (listed,) = any_client.get("/api/v1/sweeps").json()
    assert listed["id"] == sweep_id and listed["name"] == "tiny" and listed["n_runs"] == 18
    assert listed["runs_by_status"] == {"done": 14, "diverged": 1, "queued": 3}
    assert listed["status"] == "partial"  # derived from the runs: some finished, none running
    by_id = any_client.get(f"/api/v1/sweeps/{sweep_id}").json()
    by_name = any_client.get("/api/v1/sweeps/tiny").json()
    assert by_id == by_name and by_id["spec"] == {"sizes": [1e6, 4e6]} and by_id["corpus_hash"] == "abc"


def test_groups(any_client) -> None:
    seed_sweep(app_db(any_client))
    groups = any_client.get("/api/v1/sweeps/tiny/groups").json()
    assert [(g["n_params"], g["tokens"]) for g in groups] == [(1e6, 1e8), (4e6, 1e8)]
    finished, queued = groups
    runs = {r["name"]: r for r in finished["runs"]}
    assert len(runs) == 15
    best = runs["g1-lr0-b0"]
    assert finished["best_run_id"] == best["id"] and finished["best_loss"] == 3.0 and finished["eps"] == 0.0025
    # Within 0.25% of the best: lr one step off at the best batch (0.2%), batch one step off (0.1%).
    expected = {"g1-lr0-b0", "g1-lr-1-b0", "g1-lr1-b0", "g1-lr0-b-1", "g1-lr0-b1"}
    assert {n for n, r in runs.items() if r["near_optimal"]} == expected
    assert sorted(finished["near_optimal_run_ids"]) == sorted(runs[n]["id"] for n in expected)
    diverged = runs["g1-lr2-b1"]
    assert diverged["status"] == "diverged" and diverged["final_loss"] is None and diverged["final_loss_status"] == "nan"
    assert finished["optimum"]["edges"] == [] and finished["optimum"]["lr"] > 0
    assert queued["best_run_id"] is None and queued["near_optimal_run_ids"] == [] and queued["optimum"] is None
    assert {r["status"] for r in queued["runs"]} == {"queued"}


def test_seeds_of_one_configuration_count_by_their_mean(client) -> None:
    from hpscale.db import storage

    db = app_db(client)
    sweep = storage.add_sweep(db, "seeds", {}, code_version="test")
    # lr 1e-3: seeds 3.00 and 3.10 (mean 3.05); lr 2e-3: 3.039 and 3.041 (mean 3.04; one loss
    # to the bit twice would be one run stored twice); lr 4e-3: one seed diverged.
    losses = {"a0": (1e-3, 3.00), "a1": (1e-3, 3.10), "b0": (2e-3, 3.039), "b1": (2e-3, 3.041),
              "c0": (4e-3, 3.01), "c1": (4e-3, None)}
    storage.add_runs(db, [{"source": "seeds", "name": k, "sweep_id": sweep.id, "n_params": 1e6, "tokens": 1e8,
                           "lr": lr, "batch_tokens": 4096.0, "batch_size": 16, "seq_len": 256,
                           "status": "done" if loss else "diverged", "final_loss": loss or float("nan"),
                           "code_version": "test"} for k, (lr, loss) in losses.items()])
    (group,) = client.get("/api/v1/sweeps/seeds/groups").json()
    names = {r["id"]: r["name"] for r in group["runs"]}
    assert group["best_loss"] == pytest.approx(3.04) and names[group["best_run_id"]] in ("b0", "b1")
    assert sorted(names[i] for i in group["near_optimal_run_ids"]) == ["b0", "b1"]


def test_not_found(client) -> None:
    assert_problem(client.get("/api/v1/sweeps/7"), 404, detail_has="no sweep")
    assert_problem(client.get("/api/v1/sweeps/nope/groups"), 404)


def test_odd_digits_in_a_sweep_reference_are_not_found(client) -> None:
    assert_problem(client.get("/api/v1/sweeps/\u00b9"), 404)


def test_an_optimum_on_the_grid_edge_is_described_in_words(client) -> None:
    from hpscale.db import storage

    db = app_db(client)
    sweep = storage.add_sweep(db, "edgy", {}, code_version="test")
    # The loss falls with lr all the way: the best run is at the highest lr searched.
    storage.add_runs(db, [{"source": "edgy", "name": f"lr{i}-b{j}", "sweep_id": sweep.id, "n_params": 1e6,
                           "tokens": 1e8, "lr": 1e-3 * 2**i, "batch_tokens": 4096.0 * 2**j, "batch_size": 16 * 2**j,
                           "seq_len": 256, "status": "done", "final_loss": 3.5 - 0.1 * i + 0.01 * abs(j - 1),
                           "code_version": "test"} for i in range(4) for j in range(3)])
    (group,) = client.get("/api/v1/sweeps/edgy/groups").json()
    assert group["optimum"]["edges"] == ["lr_high"]
    assert group["optimum"]["edges_text"] == "at the highest learning rate searched"
