"""Fixtures and seed data shared by the API tests (``test_api_*.py``); holds no tests itself.

Clients run the real app (lifespan included) through FastAPI's ASGI test client on a private
database. Data is seeded through ``db.storage`` and the import format, never through the routes
under test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.runs import RunSet
from hpscale.service.api import create_app
from hpscale.service.settings import Settings

API_KEY = "test-key-0123456789"
PROBLEM = "application/problem+json"

# The synthetic grid's true optimum: lr* = 2 N^-0.5 D^0.1, B* = 0.5 D^0.5 tokens (as a power
# law must be recoverable from it), loss a bowl around it in (log lr, log B).
N_SIZES = (1e6, 4e6, 1.6e7)
D_SIZES = (1e8, 4e8)
LR_STEPS = (-2, -1, 0, 1, 2)  # grid points in units of log(2) around the optimum
B_STEPS = (-1, 0, 1)


def true_optimum(n: float, d: float) -> tuple[float, float]:
    """(lr*, B*_tokens) of the synthetic grid."""
    return 2.0 * n**-0.5 * d**0.1, 0.5 * d**0.5


def grid_runs(source: str = "grid") -> list[dict[str, Any]]:
    """Finished runs in the import format: every (N, D) group a 5 x 3 lr x batch grid whose best
    run sits at the centre (so no optimum touches a grid edge)."""
    runs = []
    for n in N_SIZES:
        for d in D_SIZES:
            lr0, b0 = true_optimum(n, d)
            base = 2.0 + 50.0 / n**0.3 + 80.0 / d**0.3
            for i in LR_STEPS:
                for j in B_STEPS:
                    lr, bt = lr0 * 2.0**i, b0 * 2.0**j
                    loss = base * (1 + 0.002 * i * i + 0.001 * j * j)
                    runs.append({"name": f"n{n:g}-d{d:g}-lr{i}-b{j}", "n_params": n, "tokens": d, "lr": lr,
                                 "batch_tokens": bt, "seq_len": 256, "final_loss": loss})
    return runs


def seed_grid(db: Database, source: str = "grid") -> list[int]:
    """Store the synthetic grid under ``source``; returns the stored runs' ids."""
    from hpscale.service.runformat import validate_runs

    storage.add_runs(db, [r.to_storage(source) for r in validate_runs(grid_runs(source))])
    return [r.id for r in storage.list_runs(db, sources=[source])]


def seed_fitted_law(db: Database, name: str = "grid-fit", passed: bool = True, n_bootstrap: int = 40) -> int:
    """Fit a Step-Law-form hyper law on the stored grid and store it like a fit would (record,
    extrapolation report, the runs used); returns its id."""
    runs = storage.list_runs(db, sources=["grid"])
    run_set = RunSet(
        n_params=np.array([r.n_params for r in runs]), tokens=np.array([r.tokens for r in runs]),
        lr=np.array([r.lr for r in runs]), batch_tokens=np.array([r.batch_tokens for r in runs]),
        final_loss=np.array([r.final_loss for r in runs]), diverged=np.zeros(len(runs), bool),
        names=[r.name for r in runs],
    )
    law = HyperLaw(form="steplaw", n_bootstrap=n_bootstrap, seed=1).fit(run_set)
    row = storage.add_law(
        db,
        {"name": name, "kind": "hyper", "form": "steplaw", "origin": "fitted", "title": "grid fit",
         "source": "runs of source grid", "record": law.to_record(),
         "extrapolation": {"passed": passed, "held_out": "largest N", "lr_log_error": 0.01},
         "settings": {"n_bootstrap": n_bootstrap}, "code_version": "test"},
        [r.id for r in runs],
    )
    return row.id


# The loss law of ``seed_loss_law``: L = E + A / N^alpha + B / D^beta, fitted on N 1e6..1e8, D 1e8..1e10.
LOSS_COEF = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def seed_loss_law(db: Database, extrapolation: dict[str, Any] | None = None) -> Any:
    """Store a loss law with known coefficients (``LOSS_COEF``) as a fit would; returns its row."""
    from hpscale.fitting.loss import LossLaw

    law = LossLaw(n_bootstrap=0)
    law.coef_ = dict(LOSS_COEF)
    law.fit_range_ = {"n_params": [1e6, 1e8], "tokens": [1e8, 1e10], "compute": [6e14, 6e18]}
    return storage.add_law(db, {
        "name": "loss-fit", "kind": "loss", "form": law.form, "origin": "fitted", "title": "loss", "source": "runs",
        "record": law.to_record(), "extrapolation": extrapolation, "code_version": "t"})


def seed_sweep(db: Database) -> int:
    """A sweep with two (N, D) groups: one finished grid with a diverged run, one still queued."""
    sweep = storage.add_sweep(db, "tiny", {"sizes": [1e6, 4e6]}, code_version="test", corpus_hash="abc")
    runs = []
    n, d = 1e6, 1e8
    lr0, b0 = true_optimum(n, d)
    for i in LR_STEPS:
        for j in B_STEPS:
            diverged = i == 2 and j == 1
            loss = None if diverged else 3.0 * (1 + 0.002 * i * i + 0.001 * j * j)
            runs.append({"source": "tiny", "name": f"g1-lr{i}-b{j}", "sweep_id": sweep.id, "n_params": n, "tokens": d,
                         "lr": lr0 * 2.0**i, "batch_tokens": b0 * 2.0**j, "batch_size": b0 * 2.0**j / 256,
                         "seq_len": 256, "status": "diverged" if diverged else "done",
                         "final_loss": float("nan") if diverged else loss, "code_version": "test"})
    for i in (-1, 0, 1):
        runs.append({"source": "tiny", "name": f"g2-lr{i}", "sweep_id": sweep.id, "n_params": 4e6, "tokens": 1e8,
                     "lr": 1e-3 * 2.0**i, "batch_tokens": 8192.0, "status": "queued", "final_loss": None,
                     "code_version": "test"})
    storage.add_runs(db, runs)
    return sweep.id


@pytest.fixture
def make_client(tmp_path: Any) -> Iterator[Callable[..., TestClient]]:
    """Build a started app (lifespan run) on a database; keyword arguments go to Settings
    (default: a private SQLite file and the test API key)."""
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        settings.setdefault("database_url", f"sqlite:///{tmp_path / f'api{len(clients)}.db'}")
        settings.setdefault("api_key", API_KEY)
        client = TestClient(create_app(Settings(**settings)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """The app on a new SQLite database, writes enabled with ``API_KEY``."""
    return make_client()


@pytest.fixture
def any_client(make_client: Callable[..., TestClient], any_db_url: str) -> TestClient:
    """The app on each backend (SQLite, then PostgreSQL)."""
    return make_client(database_url=any_db_url)


def app_db(client: TestClient) -> Database:
    """The database the client's app uses (to seed it)."""
    return client.app.state.db  # type: ignore[attr-defined, no-any-return]


def assert_problem(response: Any, status: int, *, detail_has: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:hpscale:problem:")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if detail_has is not None:
        assert detail_has in body["detail"], body["detail"]
    return body  # type: ignore[no-any-return]


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    """Relative closeness of two floats."""
    return math.isclose(a, b, rel_tol=rel)
