"""The database handle: engine, sessions, migrations.

``Database(url)`` is the one way to reach storage. SQLite (the embedded default) gets WAL
journaling, foreign keys and a busy timeout on every connection; PostgreSQL goes through the
same code. A new database is migrated to the current schema on first use; an older one is
brought up to date by ``upgrade()`` (the ``hpscale db upgrade`` command), and refused with a
clear message until then.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from hpscale.db.errors import ConflictError, SchemaError, StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
UNREACHABLE = "the database does not answer (the server log says why)"  # what an API caller may read
# PostgreSQL advisory-lock key of schema creation (any fixed 64-bit number; "hpscale" in ASCII).
SCHEMA_LOCK_KEY = 0x687073_63616C65


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite;
    # the busy timeout makes concurrent writers wait rather than fail at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with hpscale's connection settings. Creates SQLite's folder."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"invalid database URL {url!r}: {exc}", public="invalid database URL") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise StorageError(f"unsupported database backend {parsed.get_backend_name()!r}: use sqlite or postgresql",
                       public="unsupported database backend")


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the migrations shipped inside this package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


class Database:
    """A handle on one database: its engine, a session factory, and its schema state."""

    def __init__(self, url: str, *, auto_migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._checked = False
        self._head: str | None = None
        self.auto_migrate = auto_migrate

    # -- schema -----------------------------------------------------------------------------
    def head_revision(self) -> str:
        """The newest migration this code ships (read once: the migrations ship with the code)."""
        if self._head is None:
            head = ScriptDirectory.from_config(alembic_config(self.engine)).get_current_head()
            assert head is not None
            self._head = head
        return self._head

    def current_revision(self) -> str | None:
        """The database's migration revision, or None for an empty database."""
        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {_driver_message(exc)}",
                               public=UNREACHABLE) from exc

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to the newest revision. Returns (revision before, revision after)."""
        before = self.current_revision()
        try:
            command.upgrade(alembic_config(self.engine), "head")
        except SQLAlchemyError as exc:
            raise StorageError(f"migration failed on {self.safe_url}: {_driver_message(exc)}",
                               public="the database's schema could not be migrated (the server log says why)") from exc
        self._checked = True
        return before, self.head_revision()

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Hold an exclusive lock, across processes and hosts, while creating tables.

        Workers started together on a new database would otherwise race to create it (and
        Optuna's tables), the losers failing with "table ... already exists". SQLite: an
        ``flock`` on ``<file>.lock`` beside the database; PostgreSQL: a session advisory lock.
        """
        url = self.engine.url
        backend = url.get_backend_name()
        if backend == "sqlite" and url.database and url.database != ":memory:":
            with open(Path(url.database).expanduser().with_name(Path(url.database).name + ".lock"), "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
                yield
        elif backend == "postgresql":
            try:
                conn = self.engine.connect()
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            except SQLAlchemyError as exc:
                raise StorageError(f"cannot open database {self.safe_url}: {_driver_message(exc)}",
                                   public=UNREACHABLE) from exc
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK_KEY})
                conn.close()
        else:
            yield

    def ensure_schema(self) -> None:
        """Create the schema of a new database; refuse a database behind or ahead of the code.
        Safe when several processes open one new database at once (see ``schema_lock``)."""
        if self._checked:
            return
        head = self.head_revision()
        if self.current_revision() == head:
            self._checked = True
            return
        with self.schema_lock():
            self._ensure_schema_locked(head)

    def _ensure_schema_locked(self, head: str) -> None:
        current = self.current_revision()  # again: another process may have just created it
        if current == head:
            self._checked = True
            return
        if current is None:
            with self.engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
            if tables and not self.auto_migrate:
                raise SchemaError(f"{self.safe_url} holds tables that hpscale did not create",
                                  public="the database holds tables that hpscale did not create")
            if tables - {"alembic_version"} and "runs" not in tables:
                # A foreign database: never write hpscale's tables into somebody else's schema.
                raise SchemaError(
                    f"{self.safe_url} is not an hpscale database (it has tables {sorted(tables)[:5]} ...)",
                    public="the database is not an hpscale database",
                )
            self.upgrade()
            return
        script = ScriptDirectory.from_config(alembic_config(self.engine))
        known = {rev.revision for rev in script.walk_revisions()}
        if current not in known:
            raise SchemaError(
                f"{self.safe_url} is at schema revision {current}, newer than this hpscale "
                f"(head {head}): upgrade hpscale",
                public=f"the database is at schema revision {current}, newer than this hpscale (head {head})",
            )
        raise SchemaError(
            f"{self.safe_url} is at schema revision {current}, older than this hpscale (head {head}): "
            "run `hpscale db upgrade`",
            public=f"the database is at schema revision {current}, older than this hpscale (head {head})",
        )

    # -- sessions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on any error, and translates driver
        errors into ``StorageError`` subclasses (``ConflictError`` for uniqueness)."""
        self.ensure_schema()
        session = self._sessions()
        try:
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise ConflictError(f"write refused by {self.safe_url}: {_driver_message(exc)}",
                                public="the write conflicts with stored data (a uniqueness rule)") from exc
        except SQLAlchemyError as exc:
            session.rollback()
            raise StorageError(f"database error on {self.safe_url}: {_driver_message(exc)}",
                               public="the database failed to answer (the server log says why)") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _driver_message(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
