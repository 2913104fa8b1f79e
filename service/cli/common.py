"""What every CLI command shares: the app class that turns errors into one line, the database
in force, JSON output and number formatting.

Imports here and at the top of every command module stay light (typer, rich, the packages'
exception classes): `hpscale --help` and each uvicorn worker of `hpscale serve` import the whole
command tree, so a command imports what it needs (SQLAlchemy, numpy, the fitting code) when it
runs (issue 14; `benchmarks/cli_start.py` measures it)."""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from hpscale.db.errors import StorageError
from hpscale.fitting.errors import FittingError
from hpscale.service.errors import ServiceError
from hpscale.service.jsonsafe import json_safe

if TYPE_CHECKING:
    from hpscale.db.engine import Database

F = TypeVar("F", bound=Callable[..., Any])

# Rich output for people goes to stderr so that stdout stays clean for --json and exports.
# Off a terminal Rich would wrap tables at 80 columns; a wider page keeps numbers whole.
err_console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 160)

_database_override: dict[str, str | None] = {"url": None}


def expected_errors() -> tuple[type[BaseException], ...]:
    """Error roots of every package: these are the user's problem, shown as one line."""
    from hpscale.sweeps.errors import SweepError  # no torch behind this import

    return (ServiceError, StorageError, FittingError, SweepError)


def translate_errors(func: F) -> F:
    """Run a command; an expected error becomes ``error: message`` on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except expected_errors() as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class App(typer.Typer):
    """A Typer app whose every command reports expected errors as one line, never a traceback."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:  # type: ignore[override]
        register = super().command(*args, **kwargs)

        def decorator(func: F) -> F:
            register(translate_errors(func))
            return func

        return decorator


def set_database_url(url: str | None) -> None:
    """Override the database URL for this process (the root ``--database`` option)."""
    _database_override["url"] = url


def database_url() -> str:
    """The database URL in force: ``--database``, else ``HPSCALE_DATABASE_URL``, else SQLite."""
    from hpscale.service.settings import get_settings

    return _database_override["url"] or get_settings().resolved_database_url


def open_db() -> Database:
    """The database in force, its schema created on first use."""
    from hpscale.db.engine import Database
    from hpscale.service.laws import ensure_published_laws

    db = Database(database_url())
    db.ensure_schema()
    ensure_published_laws(db)  # published laws come first in every database
    return db


def print_json(obj: Any) -> None:
    """One JSON document on stdout (non-finite floats become null: JSON has no NaN)."""
    typer.echo(json.dumps(json_safe(obj), indent=2, sort_keys=False))


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table: engineering-friendly, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


_COUNT = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)([kmbgtp]?)", re.IGNORECASE)
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def parse_count(text: str | float) -> float:
    """A number as people write counts (parameters, tokens, FLOPs): 7e9, 7B, 1.4T, 125M, 2,048.
    Suffixes (any case): k 1e3, M 1e6, B or G 1e9, T 1e12, P 1e15, as the web form reads them.
    A typer ``parser``: an unreadable value is a usage error naming the option."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _COUNT.fullmatch(re.sub(r"[,_\s]", "", text))
    if m:
        return float(m.group(1)) * _SCALE[m.group(2).lower()]
    try:  # nan, inf: numbers still, which the command refuses with its own message
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number (write it as 7e9, 7B or 1.4T)") from None


def count_option(*names: str, help: str) -> Any:  # noqa: A002 - typer's own keyword
    """A typer option for a count that accepts 7B / 1.4T style numbers (see ``parse_count``)."""
    return typer.Option(*names, parser=parse_count, metavar="NUMBER", help=f"{help} (7e9, 7B and 1.4T all work)")


def fail(message: str) -> None:
    """Stop a command with one error line and exit code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def is_tty() -> bool:
    """Whether stderr is a terminal (progress bars only then)."""
    return sys.stderr.isatty()
