"""``hpscale demo``: the demo dataset shipped with the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hpscale.service.cli.common import App, open_db, print_json

app = App(help="The demo dataset: a real GPU sweep's runs, curves and fitted laws.")


@app.command("load")
def load(
    file: Annotated[Optional[Path], typer.Option(help="A demo file (default: the one shipped with hpscale).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Load the demo sweeps, runs (with loss curves) and laws into the database. Whatever is
    already there by name is kept; loading twice adds nothing."""
    from hpscale.service.demo import DEMO_FILE, load_demo

    counts = load_demo(open_db(), file or DEMO_FILE)
    if json_out:
        print_json(counts)
    else:
        typer.echo(f"demo: {counts['sweeps']} sweeps, {counts['runs']} runs added, {counts['laws']} laws added")
