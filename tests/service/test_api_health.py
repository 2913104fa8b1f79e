"""GET /healthz: up with its database, and a 503 problem when the database does not answer."""

from __future__ import annotations

from fastapi.testclient import TestClient
from test_api_support import assert_problem, client, make_client  # noqa: F401  (fixtures)

from hpscale.service.api import create_app
from hpscale.service.settings import Settings


def test_healthy(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"].startswith("sqlite:///") and body["schema_revision"]


def test_database_down_is_503_without_a_password(tmp_path) -> None:
    # Nothing listens on port 1; the app is not started (a server could not start on it either).
    app = create_app(Settings(database_url="postgresql://u:s3cret@127.0.0.1:1/x", data_dir=tmp_path))
    body = assert_problem(TestClient(app).get("/healthz"), 503)
    assert "s3cret" not in body["detail"] and "127.0.0.1:1" in body["detail"]
