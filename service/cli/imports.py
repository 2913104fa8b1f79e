"""``hpscale import``: load published runs or the project's own run format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hpscale.db import storage
from hpscale.service.cli.common import App, open_db, print_json
from hpscale.service.runformat import RUN_FORMAT_HELP, check_source, parse_runs_file, parse_steplaw_file

app = App(help="Import runs into the database (all-or-nothing; re-importing adds nothing).")


def _report(source: str, added: int, skipped: int, json_out: bool) -> None:
    if json_out:
        print_json({"source": source, "added": added, "skipped": skipped})
    else:
        typer.echo(f"{source}: {added} runs added, {skipped} already present")


@app.command("steplaw")
def import_steplaw(
    path: Annotated[Path, typer.Argument(help="Step Law's dense_lr_bs_loss.csv.")],
    source: Annotated[str, typer.Option(help="Label for these runs.")] = "steplaw",
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Import Step Law's released grid (batch column in sequences of 2,048 tokens; the
    smoothed loss is stored as final_loss, as the paper fits it)."""
    check_source(source)
    runs = parse_steplaw_file(path)
    result = storage.add_runs(open_db(), [r.to_storage(source) for r in runs])
    _report(source, result.added, result.skipped, json_out)


@app.command("runs", help="Import runs in hpscale's format (.csv or .jsonl).\n\n" + RUN_FORMAT_HELP)
def import_runs(
    path: Annotated[Path, typer.Argument(help="A .csv or .jsonl file of runs.")],
    source: Annotated[Optional[str], typer.Option(help="Label for these runs (default: the file name).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    runs = parse_runs_file(path)
    label = check_source(source) if source is not None else check_source(path.stem, "source (the file's name)")
    result = storage.add_runs(open_db(), [r.to_storage(label) for r in runs])
    _report(label, result.added, result.skipped, json_out)
