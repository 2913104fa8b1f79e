"""Schema management: migrations on first use, upgrades of older databases, clear refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from hpscale.db import storage
from hpscale.db.engine import Database, alembic_config
from hpscale.db.errors import SchemaError, StorageError


def test_new_database_is_migrated_on_first_use(any_db_url: str) -> None:
    db = Database(any_db_url)
    assert db.current_revision() is None
    storage.add_runs(db, [{"source": "s", "name": "a", "n_params": 1.0, "tokens": 1.0, "final_loss": 1.0}])
    assert db.current_revision() == db.head_revision()
    db.dispose()


def test_the_migrations_build_exactly_the_models_schema(any_db_url: str) -> None:
    # A model changed without a migration (or the reverse) shows up here, on both backends.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from hpscale.db.models import Base

    db = Database(any_db_url)
    db.upgrade()
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    db.dispose()


def test_older_database_is_refused_until_upgraded(any_db_url: str) -> None:
    db = Database(any_db_url)
    command.upgrade(alembic_config(db.engine), "0001")
    with db.engine.begin() as conn:  # a row written by the old schema must survive the upgrade
        conn.execute(text(
            "INSERT INTO runs (source, name, n_params, tokens, status, final_loss, final_loss_status, "
            "code_version, created_at) VALUES ('old', 'r1', 1e6, 1e7, 'done', 3.0, 'finite', 'v0', "
            "CURRENT_TIMESTAMP)"
        ))
    if db.head_revision() != "0001":
        with pytest.raises(SchemaError, match="hpscale db upgrade"):
            storage.list_runs(Database(any_db_url))
    before, after = db.upgrade()
    assert (before, after) == ("0001", db.head_revision())
    assert [r.name for r in storage.list_runs(Database(any_db_url))] == ["r1"]
    assert db.upgrade() == (after, after)  # idempotent
    db.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.ensure_schema()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'deep' / 'er' / 'x.db'}")
    db.ensure_schema()
    assert (tmp_path / "deep" / "er" / "x.db").exists()


def test_foreign_database_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(SchemaError, match="not an hpscale database"):
        Database(f"sqlite:///{path}").ensure_schema()


def test_database_newer_than_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    Database(url).ensure_schema()
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaError, match="newer than this hpscale"):
        Database(url).ensure_schema()


@pytest.mark.parametrize("url", ["mysql://x@y/z", "not a url", "postgresql://nobody@127.0.0.1:1/none"])
def test_bad_urls_are_storage_errors(url: str) -> None:
    with pytest.raises(StorageError):
        Database(url).ensure_schema()
