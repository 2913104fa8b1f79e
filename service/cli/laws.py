"""``hpscale laws``: list and show stored laws (published and fitted)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from hpscale.service.cli.common import App, fmt, open_db, out_console, print_json
from hpscale.service.fitkinds import CRITICAL_BY_WORDS

if TYPE_CHECKING:
    from hpscale.db.engine import Database
    from hpscale.db.models import Law

app = App(help="Published and fitted laws.")


def law_summary(db: Database, row: Law, detail: bool = False) -> dict[str, Any]:
    """A law as JSON: identity, coefficients, intervals, fit range, extrapolation report."""
    from hpscale.db import storage
    from hpscale.service.laws import failure

    rec = row.record or {}
    out: dict[str, Any] = {
        "id": row.id, "name": row.name, "kind": row.kind, "form": row.form, "origin": row.origin,
        "optimizer": row.optimizer, "title": row.title, "source": row.source, "coefficients": rec.get("coefficients"),
        "intervals": rec.get("intervals"), "fit_range": rec.get("fit_range"), "warnings": rec.get("warnings") or [],
        "noise": rec.get("noise"), "near_optimal_band": rec.get("near_optimal_band"), "prior": rec.get("prior"),
        "landscape": rec.get("landscape"), "failure": failure(row),
        "extrapolation": row.extrapolation, "code_version": row.code_version,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
    if row.kind == "critical_batch":  # B_crit of every target, and its exponent on each variable
        out["targets"] = rec.get("targets")
        out["exponents"] = rec.get("exponents")
    if detail:
        out["settings"] = row.settings
        out["run_ids"] = storage.law_run_ids(db, row.id)
        out["lr_batch_coupling"] = rec.get("lr_batch_coupling")
    return out


def coupling_line(c: dict[str, Any]) -> str:
    """A hyper law's lr-batch coupling in one line: the measured exponent and the theory's."""
    theory = f"theory {c['theory']:g} ({c['theory_basis']})" if c.get("theory") is not None else c.get("theory_basis", "")
    if c.get("exponent") is None:
        return f"lr-batch exponent: not measured: {c.get('note', '')}; {theory}"
    iv = c.get("interval")
    level = f"{c.get('level', 0.95) * 100:g}%"
    interval = f" ({level} interval {fmt(iv[0], 3)} .. {fmt(iv[1], 3)})" if iv else f" (no interval: {c.get('note', '')})"
    warning = f". Warning: {c['warning']}" if c.get("warning") else ""
    return (f"lr-batch exponent (lr* ~ B^k at fixed N, D): k = {fmt(c['exponent'], 3)}{interval} from "
            f"{c['groups']} groups, {c.get('runs', 0)} runs near their group's best ({c['cells_excluded']} of "
            f"{c['cells'] + c['cells_excluded']} (N, D, batch) cells without a bracketed lr optimum); "
            f"{theory}{warning}")


def print_law(db: Database, row: Law) -> None:
    """A law for people: a coefficient table with intervals, then its provenance and checks."""
    info = law_summary(db, row, detail=True)
    table = Table(title=f"law {row.id}: {row.name} ({row.kind}, {row.form}, {row.origin}, optimizer {row.optimizer})")
    table.add_column("coefficient")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    intervals = info["intervals"] or {}
    for key, value in (info["coefficients"] or {}).items():
        iv = intervals.get(key)
        table.add_row(key, fmt(value), f"{fmt(iv[0])} .. {fmt(iv[1])}" if iv else "-")
    out_console.print(table)
    out_console.print(f"{row.title}\nsource: {row.source}", highlight=False)
    if info["fit_range"]:
        ranges = ", ".join(f"{k} {fmt(v[0])}..{fmt(v[1])}" for k, v in info["fit_range"].items())
        out_console.print(f"fitted range: {ranges}", highlight=False)
    if info["run_ids"]:
        out_console.print(f"fitted on {len(info['run_ids'])} runs")
    for line in describe_fit(info):
        out_console.print(line, highlight=False)
    if info["failure"]:
        out_console.print(f"[red]failed fit[/red] (never used by default): {'; '.join(info['failure'])}", highlight=False)
    elif row.extrapolation:
        ex = row.extrapolation
        verdict = "passed" if ex.get("passed") else "did not pass"
        out_console.print(f"extrapolation check {verdict}: {ex.get('summary', '')}", highlight=False)
    if info["lr_batch_coupling"]:
        out_console.print(coupling_line(info["lr_batch_coupling"]), highlight=False)
    if info.get("targets"):
        print_targets(info["targets"], info.get("exponents") or {})
    for w in info["warnings"]:
        out_console.print(f"[yellow]warning:[/yellow] {w}")


def print_targets(targets: list[dict[str, Any]], exponents: dict[str, float]) -> None:
    """A critical-batch law's per-target fits (S = S_min (1 + B_crit / B)) and the exponent of
    B_crit on each variable the targets vary in."""
    table = Table(title="critical batch per target")
    for col in ("n_params", "target loss", "B_crit (tokens)", "S_min (steps)", "E_min (tokens)",
                "B at 20% overhead", "mean rel. error"):
        table.add_column(col, justify="right")
    for t in targets:
        table.add_row(fmt(t["n_params"]), fmt(t["target_loss"]), fmt(t["b_crit"]), fmt(t["s_min"]), fmt(t["e_min"]),
                      fmt(t["b_overhead20"]), f"{100 * t['rel_error']:.1f}%")
    out_console.print(table)
    if exponents:
        out_console.print("B_crit ~ x^p across targets: " + ", ".join(
            f"p = {fmt(v, 3)} on {CRITICAL_BY_WORDS.get(k, k)}" for k, v in exponents.items()), highlight=False)


def describe_fit(info: dict[str, Any]) -> list[str]:
    """How a fitted law treated noise and priors, in lines for people (empty for published laws)."""
    from hpscale.fitting.noise import NoiseEstimate

    lines = []
    noise = NoiseEstimate.from_record(info.get("noise"))
    if noise is not None:
        lines.append(f"run-to-run noise of the final loss: {noise.describe()}")
    band = info.get("near_optimal_band")
    if band is not None:
        lines.append(f"near-optimal band: {100 * band:.2f}% above a group's best (single-seed configurations; "
                     "narrower for averaged seeds, never under the 0.25% floor)")
    landscape = info.get("landscape")
    if landscape:
        lines.append(
            f"joint basin: lr-batch tilt k = {landscape['k']:.3g}; curvature along lr {landscape['A_lo']:.3g} (low side) / "
            f"{landscape['A_hi']:.3g} (high side), along batch {landscape['C_lo']:.3g} / {landscape['C_hi']:.3g}; "
            f"{landscape['runs_in_band']} runs within {100 * landscape['window']:.2g}% of their group's best")
    prior = info.get("prior")
    if prior:
        shifts = ", ".join(f"{k} {v:+.3g}" for k, v in (prior.get("shift") or {}).items())
        lines.append(f"prior: {prior['name']} (width {prior['width']:g} on each exponent); it moved {shifts}")
    return lines


@app.command("list")
def list_laws(json_out: Annotated[bool, typer.Option("--json", help="Print the laws as JSON.")] = False) -> None:
    """List the published laws and every fitted law."""
    from hpscale.db import storage

    db = open_db()  # stores the published laws in a new database
    rows = storage.list_laws(db)
    if json_out:
        print_json([law_summary(db, r) for r in rows])
        return
    table = Table()
    for col in ("id", "name", "kind", "form", "origin", "optimizer", "extrapolation", "title"):
        table.add_column(col)
    for r in rows:
        ex = "-" if not r.extrapolation else ("passed" if r.extrapolation.get("passed") else "failed")
        table.add_row(str(r.id), r.name, r.kind, r.form, r.origin, r.optimizer, ex, r.title)
    out_console.print(table)


@app.command("show")
def show(
    law: Annotated[str, typer.Argument(help="Law id or name.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the law as JSON.")] = False,
) -> None:
    """Show one law: coefficients with intervals, fitted range, provenance, extrapolation check."""
    from hpscale.db import storage

    db = open_db()
    row = storage.get_law(db, law)
    if json_out:
        print_json(law_summary(db, row, detail=True))
    else:
        print_law(db, row)
