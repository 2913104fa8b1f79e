"""``hpscale runs`` and ``hpscale export``: show and round-trip stored runs."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from hpscale.service.cli.common import App, fail, fmt, open_db, out_console, print_json
from hpscale.service.errors import InputError

if TYPE_CHECKING:
    from hpscale.db import storage

runs_app = App(help="Show or delete stored runs.")
export_app = App(help="Export stored data in hpscale's import format.")


def _sources(source: list[str] | None) -> list[str] | None:
    return [s for item in source for s in item.split(",") if s] if source else None


@runs_app.command("list")
def list_runs(
    source: Annotated[Optional[list[str]], typer.Option(help="Only runs of this source (repeatable, or comma-separated).")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Rows to show in the table (0: all). --json shows all.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print every matching run as JSON.")] = False,
) -> None:
    """List stored runs with their configuration and final loss."""
    from hpscale.db import storage

    db = open_db()
    runs = storage.list_runs(db, sources=_sources(source))
    if json_out:
        print_json([
            {"id": r.id, "source": r.source, "sweep_id": r.sweep_id, **run_to_record_safe(r)} for r in runs
        ])
        return
    if not runs:
        stored = storage.run_sources(db)
        if stored:  # the filter matched nothing: say what is there instead
            counts = ", ".join(f"{s} ({n})" for s, n in stored)
            out_console.print(f"no runs of source {', '.join(_sources(source) or [])}; stored sources: {counts}",
                              highlight=False)
        else:
            out_console.print("no runs stored: `hpscale import runs FILE`, `hpscale import steplaw FILE` or "
                              "`hpscale sweep run SPEC` adds some")
        return
    shown = runs if limit == 0 else runs[:limit]
    table = Table(show_header=True)
    for col in ("id", "source", "name", "N", "D", "lr", "batch tokens", "status", "final loss"):
        table.add_column(col, justify="right" if col not in ("source", "name", "status") else "left")
    for r in shown:
        table.add_row(str(r.id), r.source, r.name[:40], fmt(r.n_params), fmt(r.tokens), fmt(r.lr),
                      fmt(r.batch_tokens), r.status, fmt(r.final_loss))
    out_console.print(table)
    counts = ", ".join(f"{s}: {n}" for s, n in storage.run_sources(db))
    more = f" (showing {len(shown)}; --limit 0 shows all)" if len(shown) < len(runs) else ""
    out_console.print(f"{len(runs)} runs{more}. By source: {counts}")


@runs_app.command("delete")
def delete_runs(
    names: Annotated[Optional[list[str]], typer.Argument(help="Names of the runs to delete (within --source when given).",
                                                         show_default=False)] = None,
    source: Annotated[Optional[list[str]], typer.Option(
        help="Delete the runs of this source (repeatable, or comma-separated); with NAMES, only those runs of it.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Also delete the fitted laws that used these runs.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was deleted as JSON.")] = False,
) -> None:
    """Delete stored runs, with their curves: a whole source (--source S), runs by name, or both.

    All or nothing: a source or name that matches no run, a run of a sweep, or a run that a fitted law used refuses the whole delete.

    --force deletes those laws too. Asks for confirmation on a terminal; scripts pass --yes."""
    from hpscale.db import storage

    sources = _sources(source)
    if not sources and not names:
        raise InputError("say what to delete: --source S (all its runs) and/or run NAMES")
    db = open_db()
    plan = storage.delete_runs(db, sources=sources, names=names, with_laws=force, dry_run=True)
    summary = _delete_summary(plan)
    if not yes:
        if not sys.stdin.isatty():
            raise InputError(f"would delete {summary}: pass --yes to delete without a confirmation prompt")
        if not typer.confirm(f"Delete {summary}?", default=False, err=True):
            raise typer.Exit(1)
    done = storage.delete_runs(db, sources=sources, names=names, with_laws=force)
    if json_out:
        print_json({"runs": sum(done.runs.values()), "by_source": done.runs,
                    "laws": [{"id": i, "name": n} for i, n in done.laws]})
    else:
        typer.echo(f"deleted {_delete_summary(done)}")


def _delete_summary(result: storage.DeleteResult) -> str:
    total = sum(result.runs.values())
    by_source = ", ".join(f"{s}: {n}" for s, n in sorted(result.runs.items()))
    laws = (f" and {len(result.laws)} fitted law{'s' if len(result.laws) != 1 else ''} "
            f"({', '.join(f'#{i} {n}' for i, n in result.laws[:5])})") if result.laws else ""
    return f"{total} run{'s' if total != 1 else ''} ({by_source}){laws}"


def run_to_record_safe(run) -> dict:  # type: ignore[no-untyped-def]
    """A run's fields for listing, whatever its status (queued runs included)."""
    from hpscale.service.runformat import EXPORT_FIELDS

    return {f: getattr(run, f) for f in EXPORT_FIELDS}


class ExportFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


@export_app.command("runs")
def export_runs(
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="csv (no curves) or jsonl (with curves).")] = ExportFormat.jsonl,
    source: Annotated[Optional[list[str]], typer.Option(help="Only runs of this source (repeatable).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
) -> None:
    """Export finished runs (done or diverged) so that `hpscale import runs` reads them back."""
    from hpscale.db import storage
    from hpscale.service.runformat import records_to_csv, records_to_jsonl, run_to_record

    db = open_db()
    runs = [r for r in storage.list_runs(db, sources=_sources(source)) if r.status in ("done", "diverged")]
    curves = storage.get_curves(db, [r.id for r in runs]) if format is ExportFormat.jsonl else {}
    records = [run_to_record(r, curves.get(r.id)) for r in runs]
    text = records_to_csv(records) if format is ExportFormat.csv else records_to_jsonl(records)
    if output is None:
        sys.stdout.write(text)
    else:
        write_file(output, text)
        typer.echo(f"{len(records)} runs written to {output}", err=True)


def write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file beside it, then renamed);
    a path that cannot be written is one error line."""
    if path.is_dir():
        fail(f"{path} is a folder: give a file name, e.g. {path / 'runs.jsonl'}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        fail(f"cannot write {path}: {exc.strerror or exc}")
