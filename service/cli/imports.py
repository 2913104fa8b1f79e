"""``hpscale import``: load published runs or the project's own run format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hpscale.service.cli.common import App, open_db, print_json

app = App(help="Import runs into the database (all-or-nothing; re-importing adds nothing).")

# The run format itself is defined (and documented field by field) in service/runformat.py.
RUN_FORMAT_HELP = (
    "Columns (CSV) or keys (JSONL): required n_params, tokens, final_loss (may be empty/null only "
    "for status diverged); optional n_params_total (mixture-of-experts: total parameters, n_params "
    "being the active ones), name (unique within the source; re-import skips known names), "
    "lr, batch_tokens, or batch_size with seq_len, status (done|diverged), optimizer (default adamw; lion, sgd, sgd_sai, lamb, muon, ...), schedule (free text), "
    "lr_schedule (the schedule itself: {kind: constant|cosine|linear|wsd, total_steps, peak_lr, warmup_steps, "
    "final_lr_ratio, cooldown_fraction, decay} or {kind: table, table: [{step, lr}], total_steps, warmup_steps}; "
    "CSV: kind=wsd;total_steps=24000;peak_lr=3e-4;warmup_steps=2160 or kind=table;table=1:3e-4 8001:9e-5; "
    "without it a trajectory fit interpolates the lr logged with the curve), tags (JSONL: an "
    "object; CSV: k=v;k=v; a tag steps_to_target=S marks a run that reached its final_loss after S steps, "
    "a critical-batch measurement), and in JSONL curve: a list of {step, lr?, loss, tokens?}."
)


def _store(runs: list[Any], source: str | None, path: Path, json_out: bool) -> None:
    """Store parsed runs (``runformat.RunIn``) under ``source`` (default: the file's name) and
    report the counts: all or nothing, and a re-import adds nothing."""
    from hpscale.db import storage
    from hpscale.service.runformat import check_source

    label = check_source(source) if source is not None else check_source(path.stem, "source (the file's name)")
    result = storage.add_runs(open_db(), [r.to_storage(label) for r in runs])
    if json_out:
        print_json({"source": label, "added": result.added, "skipped": result.skipped})
    else:
        typer.echo(f"{label}: {result.added} runs added, {result.skipped} already present")


@app.command("steplaw")
def import_steplaw(
    path: Annotated[Path, typer.Argument(help="Step Law's dense_lr_bs_loss.csv.")],
    source: Annotated[str, typer.Option(help="Label for these runs.")] = "steplaw",
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Import Step Law's released grid (batch column in sequences of 2,048 tokens; the
    smoothed loss is stored as final_loss, as the paper fits it)."""
    from hpscale.service.runformat import check_source, parse_steplaw_file

    check_source(source)  # before the file is read: a bad label is refused at once
    _store(parse_steplaw_file(path), source, path, json_out)


@app.command("runs", help="Import runs in hpscale's format (.csv or .jsonl).\n\n" + RUN_FORMAT_HELP)
def import_runs(
    path: Annotated[Path, typer.Argument(help="A .csv or .jsonl file of runs.")],
    source: Annotated[Optional[str], typer.Option(help="Label for these runs (default: the file name).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    from hpscale.service.runformat import parse_runs_file

    _store(parse_runs_file(path), source, path, json_out)


@app.command("steps-to-target")
def import_steps_to_target(
    path: Annotated[Path, typer.Argument(help="A CSV table of steps-to-target measurements.")],
    source: Annotated[Optional[str], typer.Option(help="Label for these runs (default: the file name).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Import a steps-to-target table, the data of a critical-batch fit (`hpscale fit --kind
    critical-batch`): one row per (model size, target loss, batch) with the optimizer steps it
    took to reach the target. Columns: n_params (or model_size_M, in millions), target_loss
    (nats/token; or target_eval_loss_c4), steps_to_target, and batch_tokens or batch_size with
    seq_len (batch_size_seqs is batch_size); optional name, lr, optimizer. Zhang et al.'s
    released table (critical-batch-size) imports as it stands. Each row is stored as a run whose
    final loss is the target and whose tokens are steps x batch, tagged steps_to_target."""
    from hpscale.service.runformat import parse_steps_to_target_file

    _store(parse_steps_to_target_file(path), source, path, json_out)
