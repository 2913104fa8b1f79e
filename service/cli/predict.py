"""``hpscale predict``: loss curves and final losses from stored laws."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from hpscale.service.cli.common import App, count_option, fmt, open_db, out_console, print_json
from hpscale.service.errors import InputError

if TYPE_CHECKING:
    import numpy as np

app = App(help="Predictions from stored laws.")


def read_schedule(path: Path) -> np.ndarray:
    """A learning-rate schedule file (CSV with columns step,lr; steps from 1, any spacing:
    the lr holds from a listed step until the next) as the lr of every step."""
    import numpy as np

    from hpscale.service.runformat import check_schedule_length

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"step", "lr"} <= set(reader.fieldnames):
        raise InputError(f"{path}:1: expected a header with columns step,lr")
    rows: list[tuple[int, float]] = []
    for row in reader:
        line = reader.line_num
        try:
            step, lr = int(row["step"]), float(row["lr"])
        except (TypeError, ValueError):
            raise InputError(f"{path}:{line}: step must be an integer and lr a number (got {row['step']!r}, {row['lr']!r})") from None
        if step < 1 or not np.isfinite(lr) or lr < 0:
            raise InputError(f"{path}:{line}: step must be >= 1 and lr a finite number >= 0")
        if rows and step <= rows[-1][0]:
            raise InputError(f"{path}:{line}: steps must increase")
        rows.append((step, lr))
    if len(rows) < 2:
        raise InputError(f"{path}: needs at least two steps")
    if rows[0][0] != 1:
        raise InputError(f"{path}: the schedule must start at step 1")
    check_schedule_length(rows[-1][0], str(path))
    steps = np.arange(1, rows[-1][0] + 1)
    firsts = np.array([s for s, _ in rows])
    values = np.array([v for _, v in rows])
    return values[np.searchsorted(firsts, steps, side="right") - 1]


@app.command("curve")
def curve(
    law: Annotated[str, typer.Option(help="Id or name of a trajectory law.")],
    lr_schedule: Annotated[Path, typer.Option("--lr-schedule", help="CSV with columns step,lr (every step, or the steps where lr changes; other columns, such as a logged loss, are ignored).")],
    tokens_per_step: Annotated[Optional[float], typer.Option(help="Tokens per step, to add a tokens column.")] = None,
    every: Annotated[Optional[int], typer.Option(min=1, help="Predict every n-th step after warmup, and the last (default: every step with --json, every 100th in the table).")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(min=0, help="Steps of warmup (default: until the lr first reaches its peak).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the curve as JSON.")] = False,
) -> None:
    """Predict the loss after warmup of a learning-rate schedule with a trajectory law. The
    schedule may be up to HPSCALE_MAX_CURVE_STEPS steps long (default 2,000,000); only the
    printed steps are evaluated. Warnings follow the table: the law's own, a schedule longer
    than the fitted curves or at another peak lr; a law that predicts a loss <= 0 for the
    schedule refuses it."""
    from hpscale.service.fits import predict_curve

    step = every if every is not None else (1 if json_out else 100)
    out = predict_curve(open_db(), law, read_schedule(lr_schedule), tokens_per_step, every=step,
                        warmup_steps=warmup_steps)
    if json_out:
        print_json(out)
        return
    table = Table()
    cols = ["steps", "lr", "loss"] + (["tokens"] if "tokens" in out else [])
    for c in cols:
        table.add_column(c.removesuffix("s") if c == "steps" else c, justify="right")
    for i in range(len(out["steps"])):
        table.add_row(*(str(out[c][i]) if c == "steps" else fmt(out[c][i]) for c in cols))
    out_console.print(table)
    held = out["held_out"]
    if held:
        out_console.print(
            f"refitted without its longest curve ({held['curve']}), the law predicted that curve within "
            f"{100 * held['mean_rel_error']:.2f}% on average, {100 * held['max_rel_error']:.2f}% at worst",
            highlight=False)
    else:
        out_console.print("no held-out check: how close this law comes on a curve it has not seen is not known",
                          highlight=False)
    for w in out["warnings"]:
        out_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)


@app.command("loss")
def loss(
    law: Annotated[str, typer.Option(help="Id or name of a loss law.")],
    params: Annotated[float, count_option("--params", "-N", help="Non-embedding parameters N")],
    tokens: Annotated[float, count_option("--tokens", "-D", help="Training tokens D")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the prediction as JSON.")] = False,
) -> None:
    """Predict the final loss (nats/token) of N parameters trained on D tokens, with its 95% interval
    and the same warnings a recommendation gives (the law's check failed; the target lies far
    outside its data)."""
    from hpscale.service.fits import predict_loss
    from hpscale.service.settings import get_settings

    out = predict_loss(open_db(), law, params, tokens, warn_factor=get_settings().extrapolation_warning)
    if json_out:
        print_json(out)
        return
    iv = out["interval"]
    extra = f" (95% interval {fmt(iv[0])} .. {fmt(iv[1])})" if iv else ""
    out_console.print(f"predicted final loss {fmt(out['final_loss'])} nats/token{extra}")
    for w in out["warnings"]:
        out_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
