"""Alembic environment: runs migrations on the engine hpscale hands over (no alembic.ini)."""

from alembic import context

from hpscale.db.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a SQLite table by copy, DROP and rename. With foreign keys on (as
        # hpscale's connections have them), that DROP first deletes the rows that reference the
        # table (ON DELETE CASCADE): rebuilding `sweeps` would delete every sweep's runs. The
        # pragma only takes effect outside a transaction, so it is set before one begins.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things in place: batch mode rebuilds tables when needed.
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
