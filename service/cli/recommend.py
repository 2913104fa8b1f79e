"""``hpscale recommend``: learning rate and batch size for a large run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.table import Table

from hpscale.service.cli.common import count_option, fmt, open_db, out_console, print_json


def recommend(
    params: Annotated[float, count_option("--params", "-N", help="Non-embedding parameters N")],
    tokens: Annotated[Optional[float], count_option("--tokens", "-D", help="Training tokens D")] = None,
    compute: Annotated[
        Optional[float],
        count_option("--compute", help="Training compute C in FLOPs; default 6 N D. Given alone, D = C / (6 N)"),
    ] = None,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Sequence length in tokens (for the batch in sequences).")] = 2048,
    law: Annotated[
        Optional[str],
        typer.Option(help="Law: 'steplaw', 'deepseek', or a fitted law's id or name. Default: the newest "
                     "fitted law whose extrapolation check passed and whose data the target lies within "
                     "HPSCALE_EXTRAPOLATION_WARNING (10x) of, else Step Law."),
    ] = None,
    loss_law: Annotated[
        Optional[str],
        typer.Option(help="Loss law (id or name) for the predicted final loss: it answers wherever the target "
                     "lies, with its interval and warnings. Default: a loss law whose data the target lies within "
                     "HPSCALE_EXTRAPOLATION_WARNING of; none when the target lies beyond every loss law's data."),
    ] = None,
    optimizer: Annotated[
        Optional[str],
        typer.Option(help="The optimizer the run will use (adamw, lion, sgd, sgd_sai, lamb, muon, ...): only laws "
                     "fitted on it answer. Default: --law's optimizer, else adamw. The published laws are AdamW's."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Recommend the peak learning rate and batch size for N parameters trained on D tokens."""
    from hpscale.service.laws import BATCH_ROUNDING
    from hpscale.service.laws import recommend as recommend_config
    from hpscale.service.settings import get_settings

    db = open_db()
    warn_factor = get_settings().extrapolation_warning
    rec = recommend_config(
        db, params, tokens, compute=compute, seq_len=seq_len, law=law, loss_law=loss_law, warn_factor=warn_factor,
        optimizer=optimizer.strip().lower() if optimizer else None,
    )
    if json_out:
        print_json({**asdict(rec), "batch_size_rounding": BATCH_ROUNDING})
        return
    table = Table(title=f"N = {rec.n_params:.4g} params, D = {rec.tokens:.4g} tokens, C = {rec.compute:.4g} FLOPs",
                  show_header=True)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("interval", justify="right")

    def iv(pair: tuple[float, float] | None) -> str:
        return f"{pair[0]:.3g} - {pair[1]:.3g}" if pair else "-"

    table.add_row("peak learning rate", fmt(rec.lr), iv(rec.lr_interval))
    bt = rec.batch_tokens_interval
    table.add_row("batch (tokens, the law's value)", f"{rec.batch_tokens:,.0f}",
                  f"{bt[0]:,.0f} - {bt[1]:,.0f}" if bt else "-")
    seqs = rec.batch_size_interval
    table.add_row(f"batch (whole sequences of {rec.seq_len})", f"{rec.batch_size:,d}",
                  f"{seqs[0]:,d} - {seqs[1]:,d}" if seqs else "-")
    if rec.final_loss is not None:
        table.add_row("predicted final loss", fmt(rec.final_loss), iv(rec.final_loss_interval))
    out_console.print(table)
    out_console.print(f"law: {rec.law} (id {rec.law_id}, {rec.law_origin}, optimizer {rec.optimizer}) - {rec.law_title}")
    out_console.print(f"source: {rec.source}", highlight=False)
    out_console.print(f"batch in sequences: {BATCH_ROUNDING}", highlight=False)
    factor = rec.extrapolation_factor
    if factor is not None and factor <= warn_factor:  # a larger factor is one of the warnings below
        out_console.print("the target lies inside the law's data" if factor <= 1 else
                          f"the target lies {factor:.3g}x outside the law's data (a warning from {warn_factor:g}x on)",
                          highlight=False)
    for w in rec.warnings:
        out_console.print(f"[yellow]warning:[/yellow] {w}")
    if rec.final_loss_note:
        out_console.print(rec.final_loss_note, highlight=False)
