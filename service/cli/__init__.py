"""The ``hpscale`` command line (typer). Each sub-command lives in a module named for it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from hpscale.service.cli import dbcmd, demo, imports, laws, predict, runs, sweep
from hpscale.service.cli.common import App, set_database_url
from hpscale.service.cli.fit import fit
from hpscale.service.cli.recommend import recommend
from hpscale.service.cli.serve import serve

app = App(
    help="hpscale: hyperparameter scaling laws. Sweep small GPTs, fit power laws for the optimal "
    "learning rate, batch size and loss, and recommend settings for large runs.",
)


@app.callback()
def main(
    database: Annotated[
        Optional[str],
        typer.Option("--database", envvar="HPSCALE_DATABASE_URL",
                     help="SQLAlchemy database URL (default: SQLite in ~/.local/share/hpscale/hpscale.db)."),
    ] = None,
) -> None:
    """hpscale: hyperparameter scaling laws for language-model pretraining."""
    set_database_url(database)


app.command("recommend")(recommend)
app.command("fit")(fit)
app.add_typer(laws.app, name="laws")
app.add_typer(predict.app, name="predict")
app.command("serve")(serve)
app.add_typer(imports.app, name="import")
app.add_typer(runs.runs_app, name="runs")
app.add_typer(runs.export_app, name="export")
app.add_typer(dbcmd.app, name="db")
app.add_typer(demo.app, name="demo")
app.add_typer(sweep.app, name="sweep")
app.command("worker")(sweep.worker_cmd)
