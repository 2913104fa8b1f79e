"""Storage for hpscale: SQLAlchemy 2 models, sessions, migrations and the storage functions.

The rest of the project talks to the database only through ``db.storage`` (and the
``Database`` handle from ``db.engine``); it never builds queries of its own.
"""
