"""The exception root of the db package: driver errors are translated into these."""


class StorageError(Exception):
    """Root of every error the db package raises (driver errors are wrapped in it)."""


class NotFoundError(StorageError):
    """A requested row (run, sweep, law) does not exist."""


class ConflictError(StorageError):
    """A write would break a uniqueness rule (for example two runs of one name in a source)."""


class SchemaError(StorageError):
    """The database schema is missing, unknown or newer than this code."""
