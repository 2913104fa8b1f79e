"""One rule for text and tags at the boundary (service/inputs.py), on SQLite and PostgreSQL
alike: NUL characters and NaN/Infinity are 422 problems naming the field in the API and
``file:line: field`` errors in the CLI; tags are bounded in depth and size; a deep value stored
before these rules can still be listed, shown and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import hp, hp_json
from test_api_support import API_KEY, any_client, app_db, assert_problem, client, make_client  # noqa: F401

from hpscale.db import storage
from hpscale.service.inputs import MAX_TAGS_BYTES, MAX_TAGS_DEPTH, check_tags
from hpscale.service.jsonsafe import MAX_DEPTH, TOO_DEEP, json_safe

KEY = {"X-API-Key": API_KEY}
RUN = {"name": "r", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.5}


def nested(depth: int) -> dict:
    """{"a": {"a": ... {}}} with ``depth`` objects in all."""
    tags: dict = {}
    inner = tags
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return tags


def post_raw(client, text: str):  # type: ignore[no-untyped-def]
    """POST /runs with a body as written (Python's json.loads reads NaN and Infinity)."""
    return client.post("/api/v1/runs", content=text.encode(), headers={**KEY, "content-type": "application/json"})


# -- the rule itself ------------------------------------------------------------------------------
def test_tags_rule_bounds_depth_and_size_and_names_the_place() -> None:
    assert check_tags(nested(MAX_TAGS_DEPTH)) == nested(MAX_TAGS_DEPTH)
    with pytest.raises(ValueError, match=f"deeper than {MAX_TAGS_DEPTH} levels"):
        check_tags(nested(MAX_TAGS_DEPTH + 1))
    with pytest.raises(ValueError, match="deeper"):
        check_tags(nested(100_000))  # iterative: no RecursionError
    with pytest.raises(ValueError, match=r"tags\.x\[1\]"):
        check_tags({"x": [1, float("inf")]})
    with pytest.raises(ValueError, match="NUL"):
        check_tags({"a\x00": 1})
    with pytest.raises(ValueError, match="bytes as JSON"):
        check_tags({"blob": "x" * MAX_TAGS_BYTES})


def test_json_safe_is_iterative_and_bounded() -> None:
    out = json_safe(nested(100_000))
    depth = 0
    while isinstance(out, dict):
        out, depth = out["a"], depth + 1
    assert depth == MAX_DEPTH and out == TOO_DEEP
    assert json_safe({"a": (1.0, float("nan")), 2: float("-inf")}) == {"a": [1.0, None], "2": None}


# -- the API, on both backends ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"source": "s", "runs": [{**RUN, "tags": nested(256)}]}, "body.runs.0.tags: nested deeper"),
        ({"source": "s\x00", "runs": [RUN]}, "body.source: must not contain NUL"),
        ({"source": "s", "runs": [{**RUN, "name": "a\x00b"}]}, "body.runs.0.name: must not contain NUL"),
        ({"source": "s", "runs": [{**RUN, "schedule": "\x00"}]}, "body.runs.0.schedule"),
        ({"source": "s", "runs": [{**RUN, "tags": {"k": "v\x00"}}]}, "body.runs.0.tags"),
    ],
)
def test_bad_text_and_deep_tags_are_422_on_both_backends(any_client, body, where) -> None:
    assert_problem(any_client.post("/api/v1/runs", json=body, headers=KEY), 422, detail_has=where)
    assert any_client.get("/api/v1/runs").json()["total"] == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_tags_are_422_on_both_backends(any_client, literal) -> None:
    text = '{"source": "s", "runs": [{"n_params": 1e6, "tokens": 2e7, "final_loss": 3.5, "tags": {"x": [%s]}}]}'
    assert_problem(post_raw(any_client, text % literal), 422, detail_has="body.runs.0.tags: must hold finite numbers")
    assert any_client.get("/api/v1/runs").json()["total"] == 0


def test_nul_in_query_path_and_fit_body_is_422_on_both_backends(any_client) -> None:
    assert_problem(any_client.get("/api/v1/runs", params={"source": "a\x00"}), 422, detail_has="query.source")
    assert_problem(any_client.get("/api/v1/laws/a%00b"), 422, detail_has="path.law")
    assert_problem(any_client.get("/api/v1/sweeps/a%00b/groups"), 422, detail_has="path.sweep")
    assert_problem(any_client.get("/api/v1/recommend", params={"n_params": 1e9, "tokens": 1e10, "law": "x\x00"}),
                   422, detail_has="query.law")
    fit = {"kind": "hyper", "runs": ["a\x00"], "bootstrap": 0}
    assert_problem(any_client.post("/api/v1/fits", json=fit, headers=KEY), 422, detail_has="body.runs.0")
    curve = {"law": "x\x00", "schedule": {"kind": "constant", "total_steps": 10, "peak_lr": 1e-3}}
    assert_problem(any_client.post("/api/v1/predict/curve", json=curve), 422, detail_has="body.law")


@pytest.mark.parametrize(("field", "value"), [("seed", False), ("bootstrap", True)])
def test_booleans_are_no_integers(client, field, value) -> None:
    body = {"kind": "hyper", "bootstrap": 0, field: value}
    assert_problem(client.post("/api/v1/fits", json=body, headers=KEY), 422, detail_has=f"body.{field}")
    run = {**RUN, "seq_len": True}
    assert_problem(client.post("/api/v1/runs", json={"source": "s", "runs": [run]}, headers=KEY), 422,
                   detail_has="body.runs.0.seq_len")


def test_a_deep_value_stored_before_the_rules_is_shown_not_a_500(any_client) -> None:
    # Stored as an older hpscale would have stored it: straight through storage.
    db = app_db(any_client)
    storage.add_runs(db, [{"source": "old", "name": "deep", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.0,
                           "tags": nested(300)}])
    page = any_client.get("/api/v1/runs", params={"source": "old"})
    assert page.status_code == 200, page.text
    run_id = page.json()["items"][0]["id"]
    detail = any_client.get(f"/api/v1/runs/{run_id}")
    assert detail.status_code == 200 and TOO_DEEP in detail.text


# -- the CLI --------------------------------------------------------------------------------------------
def test_cli_lists_and_exports_a_deep_stored_value(cli_env, tmp_path: Path) -> None:
    from hpscale.service.cli.common import open_db

    storage.add_runs(open_db(), [{"source": "old", "name": "deep", "n_params": 1e6, "tokens": 2e7,
                                  "final_loss": 3.0, "tags": nested(300)}])
    listed = hp_json("runs", "list")
    assert listed[0]["name"] == "deep"
    exported = hp("export", "runs", "--format", "jsonl")
    assert exported.exit_code == 0 and json.loads(exported.stdout)["name"] == "deep"


def test_sqlite_export_is_valid_json_and_imports_into_postgresql(cli_env, tmp_path: Path, pg_url: str) -> None:
    from hpscale.service.cli.common import open_db

    # NaN and Infinity in tags, as SQLite took them before the rules.
    storage.add_runs(open_db(), [{"source": "old", "name": "n", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.0,
                                  "tags": {"x": float("nan"), "y": [float("inf"), 1.5]}}])
    out = tmp_path / "runs.jsonl"
    assert hp("export", "runs", "--format", "jsonl", "-o", str(out)).exit_code == 0

    def no_constants(name: str) -> None:
        raise AssertionError(f"bare {name} in the export")

    record = json.loads(out.read_text(), parse_constant=no_constants)
    assert record["tags"] == {"x": None, "y": [None, 1.5]}
    imported = hp("--database", pg_url, "import", "runs", str(out), "--json")
    assert imported.exit_code == 0, imported.stderr
    assert json.loads(imported.stdout)["added"] == 1


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
@pytest.mark.parametrize(
    ("line3", "field"),
    [
        ('{"name": "c\\u0000", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.0}', "field 'name': must not contain NUL"),
        ('{"name": "c", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.0, "tags": {"x": NaN}}', "field 'tags'"),
        ('{"name": "c", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.0, "schedule": "\\u0000"}', "field 'schedule'"),
    ],
)
def test_import_errors_name_file_and_line_on_both_backends(cli_env, tmp_path: Path, request, backend, line3,
                                                           field) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'x.db'}"
    good = '{"name": "%s", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.0}\n'
    path = tmp_path / "runs.jsonl"
    path.write_text(good % "a" + good % "b" + line3 + "\n")
    result = hp("--database", url, "import", "runs", str(path))
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {path}:3: {field}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert hp_json("--database", url, "runs", "list") == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_source_label_too_long_for_the_column_is_refused_on_both_backends(cli_env, tmp_path, request,
                                                                             backend) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'x.db'}"
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(RUN) + "\n")
    result = hp("--database", url, "import", "runs", str(path), "--source", "s" * 201)
    assert result.exit_code == 1 and "--source" in result.stderr and "200" in result.stderr
