"""``hpscale fit``: fit a law from stored runs, store it, print it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from hpscale.service.cli.common import fail, open_db, print_json
from hpscale.service.cli.laws import law_summary, print_law
from hpscale.service.fitkinds import CRITICAL_BY, DEFAULT_FORM, DEFAULT_PRIOR_WIDTH, FORMS, KINDS, PRIOR_NAMES


def _split(values: list[str] | None) -> list[str] | None:
    return [v for item in values for v in item.split(",") if v] if values else None


def fit(
    kind: Annotated[str, typer.Option(help=f"Law kind: {', '.join(KINDS)}.")],
    form: Annotated[
        Optional[str],
        typer.Option(help="Form of the law. hyper: steplaw (lr on N and D, B on D), full (both on N and D), "
                     "compute (both on C = 6ND); loss: chinchilla; trajectory: multi_power, momentum; "
                     f"critical-batch: power. Default: {', '.join(f'{k}={v}' for k, v in DEFAULT_FORM.items())}."),
    ] = None,
    source: Annotated[Optional[list[str]], typer.Option(help="Fit on runs of this source (repeatable or comma-separated). Default: the one source stored; with several, the fit is refused with their list.")] = None,
    runs: Annotated[Optional[str], typer.Option(help="Fit only on these run names, comma-separated.")] = None,
    bootstrap: Annotated[int, typer.Option(
        min=0, max=100_000, help="Bootstrap resamples for the intervals of hyper, loss and critical-batch laws "
        "(0: none; trajectory laws have no intervals).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap (a fit is reproducible).")] = 0,
    method: Annotated[str, typer.Option(help=(
        "hyper laws: near_optimal (Step Law's procedure: every configuration not distinguishable from its group's "
        "best given the run-to-run noise, at least the 0.25% band), smooth (one quadratic-fit optimum per group) "
        "or joint (one model of the loss over every run near its group's basin: tolerant of noise)."))] = "near_optimal",
    prior: Annotated[str, typer.Option(help=(
        f"hyper laws: a published law's exponents as a Gaussian prior ({', '.join(PRIOR_NAMES)}): a sweep of few "
        "sizes then extrapolates like the literature unless its data say otherwise."))] = "none",
    prior_width: Annotated[float, typer.Option(help="Standard deviation of the prior on each exponent.")] = DEFAULT_PRIOR_WIDTH,
    by: Annotated[str, typer.Option(help=(
        f"critical-batch laws: the variable x of B_crit = k x^p ({', '.join(CRITICAL_BY)}: tokens is E_min, the "
        "fewest tokens to the target; Zhang et al. find B_crit grows with the data, not the model)."))] = "n_params",
    allow_edge: Annotated[bool, typer.Option("--allow-edge", help="hyper laws on swept runs: fit even when a group's best run lies on the edge of the searched grid (recorded as a warning). Imported runs always fit so, with the warning: their grid cannot be widened.")] = False,
    mix: Annotated[bool, typer.Option("--mix", help="Fit one law over runs of several sources or corpora (refused otherwise; optimizers never mix).")] = False,
    name: Annotated[Optional[str], typer.Option(help="Name of the stored law (default: generated).")] = None,
    optimizer: Annotated[
        Optional[str],
        typer.Option(help="Fit on the runs of this optimizer only (adamw, lion, sgd, sgd_sai, lamb, muon, ...). "
                     "Default: the selected runs must all share one; a law is only used for its optimizer."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the stored law as JSON.")] = False,
) -> None:
    """Fit a law on stored runs of one optimizer; store its parameters, intervals, extrapolation
    check, the exact runs used and (hyper laws) the lr-batch coupling; print it.

    A law describes one kind of data: without --source it fits the one source stored and refuses
    (listing them) when there are several; runs of different corpora are never fitted together
    unless --mix is given, runs of different optimizers never (--optimizer chooses)."""
    if kind not in FORMS:
        raise typer.BadParameter(f"expected one of {', '.join(KINDS)}", param_hint="--kind")
    from hpscale.service.fits import fit_and_store, fit_failure

    db = open_db()
    row = fit_and_store(
        db, kind=kind, form=form, sources=_split(source), run_names=_split([runs] if runs else None),
        n_bootstrap=bootstrap, seed=seed, on_edge="warn" if allow_edge else None, method=method,
        prior=prior, prior_width=prior_width, name=name, optimizer=optimizer.strip().lower() if optimizer else None,
        mix=mix, by=by,
    )
    if json_out:
        print_json(law_summary(db, row, detail=True))
    else:
        print_law(db, row)
    problems = fit_failure(row)
    if problems:
        fail(f"law {row.id} ({row.name}) is stored as a failed fit and will never be used by default: {'; '.join(problems)}")
