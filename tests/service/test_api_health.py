"""GET /healthz: up with its database and schema; a 503 problem when the database does not
answer or does not hold hpscale's current schema. No body shows the database URL or the driver."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient
from sqlalchemy import text
from test_api_support import API_KEY, app_db, assert_problem, client, make_client  # noqa: F401  (fixtures)

from hpscale.db import storage
from hpscale.db.errors import ConflictError
from hpscale.service.api import create_app
from hpscale.service.settings import Settings


def test_healthy(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body == {"status": "ok", "version": body["version"], "database": "sqlite",
                    "schema_revision": app_db(client).head_revision()}


def test_database_down_is_503_without_url_or_password(tmp_path, caplog) -> None:
    # Nothing listens on port 1; the app is not started (a server could not start on it either).
    app = create_app(Settings(database_url="postgresql://dbuser:s3cret@127.0.0.1:1/secretdb", data_dir=tmp_path))
    with caplog.at_level(logging.ERROR, logger="hpscale.api"):
        body = assert_problem(TestClient(app).get("/healthz"), 503, detail_has="does not answer")
    for leak in ("s3cret", "dbuser", "127.0.0.1", "secretdb", "refused"):
        assert leak not in body["detail"], body["detail"]
    # The operator still learns where and why, from the log (password hidden there too).
    assert "127.0.0.1:1/secretdb" in caplog.text and "s3cret" not in caplog.text


def test_a_database_without_the_schema_is_not_healthy(tmp_path) -> None:
    # The app is not started, so nothing created the schema: every route would answer 503.
    path = tmp_path / "private" / "empty.db"
    app = create_app(Settings(database_url=f"sqlite:///{path}", data_dir=tmp_path))
    body = assert_problem(TestClient(app).get("/healthz"), 503, detail_has="without hpscale's schema")
    assert "private" not in body["detail"] and "empty.db" not in body["detail"]


def test_a_database_at_an_old_or_lost_schema_is_not_healthy(client) -> None:
    db = app_db(client)
    with db.engine.begin() as conn:  # as if an old hpscale had made it, after this server started
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    assert_problem(client.get("/healthz"), 503, detail_has="at schema revision 0003")
    with db.engine.begin() as conn:  # the schema dropped under a running server
        conn.execute(text("DROP TABLE alembic_version"))
    assert_problem(client.get("/healthz"), 503, detail_has="without hpscale's schema")


def test_storage_errors_answer_without_url_or_driver_message(make_client, tmp_path, monkeypatch) -> None:
    c = make_client(database_url=f"sqlite:///{tmp_path / 'hidden-name.db'}")

    def racing(db, runs):  # type: ignore[no-untyped-def]
        raise ConflictError(f"write refused by {db.safe_url}: UNIQUE constraint failed: runs.source, runs.name",
                            public="the write conflicts with stored data (a uniqueness rule)")

    monkeypatch.setattr(storage, "add_runs", racing)
    body = {"source": "s", "runs": [{"n_params": 1e6, "tokens": 1e7, "final_loss": 3.0}]}
    problem = assert_problem(client_post(c, body), 409, detail_has="conflicts with stored data")
    assert "hidden-name" not in problem["detail"] and "UNIQUE" not in problem["detail"]
    # A driver error reading: 503, saying what failed and nothing of the URL or the driver.
    with app_db(c).engine.begin() as conn:
        conn.execute(text("DROP TABLE curve_points"))
        conn.execute(text("DROP TABLE law_runs"))
        conn.execute(text("DROP TABLE runs"))
    problem = assert_problem(c.get("/api/v1/runs"), 503, detail_has="database failed")
    assert "hidden-name" not in problem["detail"] and "no such table" not in problem["detail"]


def client_post(c, body):  # type: ignore[no-untyped-def]
    return c.post("/api/v1/runs", json=body, headers={"X-API-Key": API_KEY})
