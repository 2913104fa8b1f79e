"""The exception root of the db package: driver errors are translated into these."""

from __future__ import annotations


class StorageError(Exception):
    """Root of every error the db package raises (driver errors are wrapped in it).

    ``str(exc)`` is the whole story for the operator (the CLI prints it, the server logs it): it
    may name the database URL and quote the driver. ``public`` is what any API caller may read:
    by default the same message, but an error that wraps the driver says what failed without
    the URL or the driver's words."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public if public is not None else message


class NotFoundError(StorageError):
    """A requested row (run, sweep, law) does not exist."""


class ConflictError(StorageError):
    """A write would break a uniqueness rule (for example two runs of one name in a source)."""


class SchemaError(StorageError):
    """The database schema is missing, unknown or newer than this code."""
