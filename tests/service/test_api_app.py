"""The app as a whole: startup on an empty database, problems for every kind of error, the
OpenAPI document, the docs, the web UI and Plotly's file."""

from __future__ import annotations

import logging
import re

import pytest

from fastapi.testclient import TestClient
from test_api_support import PROBLEM, app_db, assert_problem, client, make_client  # noqa: F401  (fixtures)

import hpscale.service.api as api
from hpscale.db import storage
from hpscale.service.api.glue import sweeps as glue
from hpscale.service.settings import Settings


def test_startup_creates_schema_and_published_laws(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with TestClient(api.create_app(Settings(database_url=url))) as c:
        assert {x.name for x in storage.list_laws(app_db(c))} == {"steplaw", "deepseek"}
        assert c.get("/api/v1/recommend", params={"n_params": 1e9, "tokens": 2e10}).status_code == 200


def test_unknown_path_and_method_are_problems(client) -> None:
    assert_problem(client.get("/api/v1/nothing"), 404, detail_has="/api/v1")
    assert_problem(client.put("/api/v1/runs"), 405)


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("OPTIONS", "/api/v1/runs", "DELETE, GET, HEAD, POST"),  # the static pages answered "GET, HEAD"
    ("OPTIONS", "/api/v1/fits", "POST"),
    ("GET", "/api/v1/fits", "POST"),  # a POST-only path answered 404
    ("GET", "/api/v1/predict/curve", "POST"),
    ("PATCH", "/api/v1/runs/1", "GET, HEAD"),  # HEAD answers wherever GET does
    ("DELETE", "/api/v1/laws/steplaw", "GET, HEAD"),
    ("POST", "/healthz", "GET, HEAD"),
])
def test_a_method_a_path_does_not_serve_is_405_with_its_allow(client, method, path, allow) -> None:
    r = client.request(method, path)
    assert_problem(r, 405, detail_has=allow)
    assert r.headers["allow"] == allow
    # The web pages still answer as static files.
    assert client.get("/").status_code == 200 and client.post("/index.html").headers["allow"] == "GET, HEAD"


def test_unexpected_error_is_a_generic_500_and_logged(client, monkeypatch, caplog) -> None:
    def broken(db):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(glue, "list_sweeps", broken)
    with caplog.at_level(logging.ERROR, logger="hpscale.api"):
        body = assert_problem(client.get("/api/v1/sweeps"), 500)
    assert "secret" not in body["detail"] and body["detail"].startswith("internal server error")
    assert any("secret internal state" in (r.exc_text or "") for r in caplog.records)


def test_openapi_declares_schemas_and_problems(client) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["info"]["title"] == "hpscale"
    ops = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert {p for p, _, _ in ops} >= {
        "/healthz", "/api/v1/recommend", "/api/v1/laws", "/api/v1/laws/{law}", "/api/v1/sweeps", "/api/v1/sweeps/{sweep}",
        "/api/v1/sweeps/{sweep}/groups", "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/curve",
        "/api/v1/predict/curve", "/api/v1/fits",
    }
    for path, method, op in ops:
        ok = [c for c in op["responses"] if c.startswith("2")]
        assert ok and "$ref" in str(op["responses"][ok[0]]["content"]["application/json"]["schema"]), (path, method)
        for code, response in op["responses"].items():
            if code[0] in "45":
                assert list(response["content"]) == [PROBLEM], (path, method, code)
        assert "500" in op["responses"]
    writes = {(p, m): op for p, m, op in ops if m == "post" and p in ("/api/v1/runs", "/api/v1/fits")}
    for op in writes.values():
        assert {"401", "403", "413", "422"} <= set(op["responses"]) and op["security"] == [{"APIKeyHeader": []}]
    recommend = doc["paths"]["/api/v1/recommend"]["get"]
    assert {p["name"] for p in recommend["parameters"]} == {
        "n_params", "d_model", "n_layers", "vocab_size", "tokens", "compute", "seq_len", "law", "loss_law", "optimizer"}
    assert "Problem" in doc["components"]["schemas"]


def test_docs_page_works_offline(client) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
    # Every asset the page loads comes from this server: /docs must work with no network.
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets and all(a.startswith("/static/swagger-ui/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "/openapi.json" in r.text and client.get("/redoc").status_code == 404


def test_web_ui_and_plotly_are_served(client) -> None:
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript") and "plotly" in js.text[:200]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == (api.web_dir() / "index.html").read_text() and "recommend.js" in page.text


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/laws", "/api/v1/recommend?n_params=7e9&tokens=1.4e12", "/docs",
                                  "/openapi.json", "/", "/laws.html", "/style.css", "/app.js",
                                  "/static/plotly.min.js", "/static/swagger-ui/swagger-ui.css"])
def test_head_answers_as_get_without_a_body(client, path) -> None:
    # Monitors and caches use HEAD: every GET route and file answers it, with GET's headers.
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200, (get.status_code, head.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers.get("content-length") == get.headers.get("content-length")
    assert client.head("/api/v1/laws/999").status_code == 404


def test_static_assets_are_gzipped_and_cached(client) -> None:
    plotly_file = api.plotly_js()
    js = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert js.headers["content-encoding"] == "gzip" and js.headers["vary"] == "Accept-Encoding"
    assert int(js.headers["content-length"]) < plotly_file.stat().st_size / 2  # 4.8 MB -> about 1.4 MB
    assert js.content == plotly_file.read_bytes()  # httpx undid the gzip
    assert js.headers["cache-control"] == "public, max-age=86400"
    plain = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == js.content
    assert plain.headers["etag"] != js.headers["etag"]  # one ETag per encoding
    again = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip", "If-None-Match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["cache-control"] == "public, max-age=86400"
    # Our own pages and modules are revalidated on every use (a new version shows at once).
    for path in ("/", "/app.js", "/style.css"):
        r = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert r.headers["cache-control"] == "no-cache" and r.headers["content-encoding"] == "gzip", path
        assert client.get(path, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert client.get("/static/swagger-ui/swagger-ui-bundle.js").headers["cache-control"] == "public, max-age=86400"
    favicon = client.get("/static/swagger-ui/favicon-32x32.png")
    assert favicon.status_code == 200 and "content-encoding" not in favicon.headers  # PNG: already compressed


def test_mount_works_without_pages(tmp_path, monkeypatch) -> None:
    empty = tmp_path / "web"
    empty.mkdir()
    monkeypatch.setattr(api, "web_dir", lambda: empty)
    with TestClient(api.create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))) as c:
        assert_problem(c.get("/"), 404)
        assert c.get("/healthz").status_code == 200 and c.get("/api/v1/laws").status_code == 200


def test_the_api_never_imports_torch_or_optuna(tmp_path) -> None:
    # `hpscale serve` must start fast on a machine without a GPU stack: a fresh interpreter
    # serves the sweeps pages (which read sweep progress) without importing either.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "import hpscale.service.api as api\n"
        "from hpscale.service.settings import Settings\n"
        f"with TestClient(api.create_app(Settings(database_url='sqlite:///{tmp_path / 'x.db'}'))) as c:\n"
        "    assert c.get('/api/v1/sweeps').status_code == 200\n"
        "    assert c.get('/api/v1/recommend', params={'n_params': 7e9, 'tokens': 2e12}).status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'optuna'))[:5])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
