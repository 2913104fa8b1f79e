"""``hpscale db``: schema management."""

from __future__ import annotations

from typing import Annotated

import typer

from hpscale.service.cli.common import App, database_url, print_json

app = App(help="Database schema management.")


@app.command("upgrade")
def upgrade(json_out: Annotated[bool, typer.Option("--json", help="Print the revisions as JSON.")] = False) -> None:
    """Bring the database (HPSCALE_DATABASE_URL or the SQLite default) to the current schema."""
    from hpscale.db.engine import Database

    db = Database(database_url())
    before, after = db.upgrade()
    if json_out:
        print_json({"database": db.safe_url, "from": before, "to": after})
    elif before == after:
        typer.echo(f"{db.safe_url}: already at the current schema ({after})")
    else:
        typer.echo(f"{db.safe_url}: upgraded from {before or 'empty'} to {after}")


@app.command("current")
def current(json_out: Annotated[bool, typer.Option("--json", help="Print the revisions as JSON.")] = False) -> None:
    """Show the database's schema revision and the one this hpscale expects."""
    from hpscale.db.engine import Database

    db = Database(database_url())
    rev, head = db.current_revision(), db.head_revision()
    if json_out:
        print_json({"database": db.safe_url, "current": rev, "head": head})
    else:
        state = "up to date" if rev == head else ("empty" if rev is None else "needs `hpscale db upgrade`")
        typer.echo(f"{db.safe_url}: revision {rev or '-'} (code expects {head}): {state}")
