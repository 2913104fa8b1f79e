"""The exception root of the service layer, and the table of every package's error roots."""

from __future__ import annotations

from hpscale.db.errors import ConflictError, NotFoundError, StorageError
from hpscale.fitting.errors import FittingError


class ServiceError(Exception):
    """Root of errors raised by the service layer on purpose (bad input, impossible request)."""


class InputError(ServiceError):
    """Bad user input: a file, an option, a request field. The message says where and why."""


def status_for(exc: BaseException) -> int | None:
    """The HTTP status for an expected error, or None for an unexpected one."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, (InputError, FittingError)):
        return 422
    if isinstance(exc, ServiceError):
        return 400
    if isinstance(exc, StorageError):
        return 503
    try:
        from hpscale.sweeps.errors import SweepError  # sweeps may be absent in a slim API install
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, SweepError):
        return 422
    return None


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ServiceError, StorageError, FittingError)
