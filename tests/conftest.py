"""Shared fixtures: databases on both backends, the external data folder, a CLI runner."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


from support import EXTERNAL  # noqa: F401  (re-exported for tests that only need the path)

PG_ADMIN_URL = os.environ.get("HPSCALE_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
_pg_unreachable: list[str] = []  # the first connection error, so that later tests skip at once


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


def pg_required() -> bool:
    """Whether a missing PostgreSQL server fails the tests that need it (CI: ``.ci/run`` sets
    HPSCALE_TEST_PG_REQUIRED=1, and most CI services set CI) or skips them (a contributor's
    laptop)."""
    def truthy(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")

    return truthy("HPSCALE_TEST_PG_REQUIRED") or truthy("CI")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the local server, dropped after the test. An
    unreachable server skips the test with the reason, or fails it where ``pg_required()``."""
    try:
        if _pg_unreachable:
            raise ConnectionError(_pg_unreachable[0])
        admin = _pg_admin()
    except Exception as exc:
        _pg_unreachable[:1] = [str(exc).strip() or type(exc).__name__]
        message = f"PostgreSQL at {PG_ADMIN_URL.rsplit('@', 1)[-1]} is not reachable: {_pg_unreachable[0]}"
        if pg_required():
            pytest.fail(f"{message} (HPSCALE_TEST_PG_REQUIRED or CI is set: PostgreSQL is required)")
        pytest.skip(f"{message} (set HPSCALE_TEST_PG to a server's URL; CI requires one)")
    name = f"hpscale_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield url
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A new SQLite file database in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'hpscale.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both backends: a new SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hpscale.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(any_db_url: str):  # type: ignore[no-untyped-def]
    """A migrated ``Database`` on each backend."""
    from hpscale.db.engine import Database

    database = Database(any_db_url)
    database.ensure_schema()
    yield database
    database.dispose()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point hpscale's settings at a private data folder (and so a private SQLite database)."""
    from hpscale.service.settings import get_settings

    monkeypatch.setenv("HPSCALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HPSCALE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()
