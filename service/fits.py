"""Glue between stored runs and the fitting package: select runs, fit a law, check its
extrapolation, store it with its provenance; and predictions from stored laws.

The one place where ``db`` rows become ``fitting`` inputs (``RunSet``, ``LossCurve``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.models import CurvePoint, Law, Run
from hpscale.db.provenance import code_version
from hpscale.fitting.coupling import LrBatchCoupling
from hpscale.fitting.errors import EdgeOptimumError, InsufficientDataError
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.registry import law_from_record
from hpscale.fitting.runs import RunSet
from hpscale.fitting.sanity import law_problems
from hpscale.fitting.schedules import infer_warmup
from hpscale.service.errors import InputError
from hpscale.service.fitkinds import CRITICAL_BY, CRITICAL_BY_WORDS, DEFAULT_FORM, DEFAULT_PRIOR_WIDTH, FORMS, KINDS, PRIOR_NAMES
from hpscale.service.fitkinds import METHODS as HYPER_METHODS
from hpscale.service.laws import check_passed, failure, fit_span, loss_warnings
from hpscale.service.runformat import check_schedule_length, read_schedule, schedule_lrs, steps_to_target_tag

# The laws that need scipy (loss, trajectory, critical batch, the extrapolation check) are
# imported where they are used: the API imports this module for ``runset`` on every start, and
# scipy.optimize with scipy.signal cost more CPU than the rest of a server's start.
if TYPE_CHECKING:
    from hpscale.fitting.trajectory import LossCurve

# When a fit's extrapolation check passes (the held-out largest scale, see fitting.validate):
# hyper laws by the loss regret of their recommendation, the others by their relative error.
PASS_THRESHOLDS = {
    "hyper": ("mean_loss_regret", 0.005),
    "loss": ("max_abs_rel_error", 0.01),
    "trajectory": ("mean_rel_error", 0.01),
    "critical_batch": ("mean_abs_log_error", math.log(2.0)),
}
TITLES = {
    "hyper": "optimal learning rate and batch size",
    "loss": "final loss L(N, D)",
    "trajectory": "loss curve under a learning-rate schedule",
    "critical-batch": "critical batch size",
}


METHOD_WORDS = {"near_optimal": "from near-optimal runs", "smooth": "from smoothed group optima",
                "joint": "from one basin model over every run"}


def law_title(kind: str, form: str, method: str, sources: Sequence[str], optimizer: str = "adamw",
              by: str = "n_params") -> str:
    """A fitted law's title: what it predicts (for which optimizer, but AdamW's laws keep the
    titles they had before laws named their optimizer), its form, for hyper laws how each
    group's optimum was taken (two fits of one form differ by it), for critical-batch laws the
    variable it is a power of (when not N), and the sources of its runs."""
    opt_title = "" if optimizer == "adamw" else f" for {optimizer}"
    how = f"{form} form, {METHOD_WORDS.get(method, method)}" if kind == "hyper" else form
    if kind == "critical-batch" and by != "n_params":
        how = f"{form} of {CRITICAL_BY_WORDS[by]}"
    return f"{TITLES[kind]}{opt_title} ({how}) fitted on {', '.join(sorted(sources))}"


def law_source(kind: str, used: int, selected: int, label: str) -> str:
    """Where a fitted law comes from, counting runs as its page and its extrapolation check do:
    a loss law is fitted on the best run of each (N, D) group of the selected runs."""
    if used == selected:
        return f"fitted by hpscale on {used} runs of {label}"
    why = " (the best of each (N, D) group)" if kind == "loss" else ""
    return f"fitted by hpscale on {used} of {selected} runs of {label}{why}"


def select_runs(db: Database, sources: Sequence[str] | None, run_names: Sequence[str] | None,
                optimizer: str | None = None) -> list[Run]:
    """Finished runs (done or diverged) of the given sources and/or names; all when neither;
    only those trained with ``optimizer`` when it is given."""
    runs = storage.list_runs(db, sources=sources or None, names=run_names or None, statuses=["done", "diverged"])
    if run_names:
        missing = sorted(set(run_names) - {r.name for r in runs})
        if missing:
            raise InputError(f"no finished run named {', '.join(repr(m) for m in missing[:5])}")
    if optimizer is not None:
        runs = [r for r in runs if r.optimizer == optimizer]
    if not runs:
        where = f" in source {', '.join(sources)}" if sources else ""
        which = f" {optimizer}" if optimizer is not None else ""
        raise InputError(f"no finished{which} runs{where}: import runs or run a sweep first")
    return runs


def one_optimizer(rows: Sequence[Run]) -> str:
    """The optimizer every run of ``rows`` trained with: a law is one optimizer's, and is only
    used for it. Runs of several optimizers are refused with their counts."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.optimizer] = counts.get(r.optimizer, 0) + 1
    if len(counts) > 1:
        listed = ", ".join(f"{o}: {n}" for o, n in sorted(counts.items()))
        raise InputError(f"the selected runs trained with {len(counts)} optimizers ({listed}): a law is one "
                         "optimizer's, choose one with --optimizer (API: optimizer)")
    return next(iter(counts))


def hyper_runs(rows: Sequence[Run]) -> RunSet:
    """The runs a hyper law is fitted on: those with lr and batch (all when none has both)."""
    return runset([r for r in rows if r.lr is not None and r.batch_tokens is not None] or rows)


def partition_runs(rows: Sequence[Run]) -> dict[str | None, list[Run]]:
    """Runs by the corpus they were trained on (its hash, which covers the tokenizer; None:
    unknown, as for imported runs), in the order first seen. Runs of another corpus have other
    optima and losses: one law over both describes neither."""
    out: dict[str | None, list[Run]] = {}
    for r in rows:
        out.setdefault(r.corpus_hash, []).append(r)
    return out


def refuse_unrelated(rows: Sequence[Run], chosen: bool) -> None:
    """Refuse to pool unrelated runs into one law: runs of several sources when none was chosen
    (``chosen``: sources or run names were given), or, whatever was chosen, runs of several
    corpora. ``mix`` in ``fit_and_store`` is the explicit request to pool them (runs of several
    optimizers are never pooled: ``one_optimizer``)."""
    how = "(hpscale fit: --mix; POST /fits: \"mix\": true)"
    sources: dict[str, int] = {}
    for r in rows:
        sources[r.source] = sources.get(r.source, 0) + 1
    if not chosen and len(sources) > 1:
        listed = ", ".join(f"{s} ({n} runs)" for s, n in sorted(sources.items()))
        raise InputError(
            f"finished runs of {len(sources)} sources are stored: {listed}; one law over all of them would pool "
            f"unrelated data: choose the source to fit (hpscale fit --source NAME; POST /fits: \"sources\"), "
            f"or ask for one law over all of them {how}"
        )
    parts = partition_runs(rows)
    if len(parts) > 1:
        listed = "; ".join(
            f"corpus {corpus[:12] if corpus else 'unknown'}: {len(runs)} runs ({', '.join(sorted({r.source for r in runs}))})"
            for corpus, runs in parts.items()
        )
        raise InputError(
            f"the selected runs were trained on different corpora ({listed}); choose runs of one (--source, --runs) "
            f"or ask for one law over all of them {how}"
        )


def runset(rows: Sequence[Run]) -> RunSet:
    """Stored runs as the fitting package's input, in the given order. Names are ``source/name``
    (unique). A run without a finite final loss counts as diverged: it informs no optimum. A
    mixture-of-experts run's architecture label is its total parameter count: two architectures
    of equal active N never share a group."""
    return RunSet.from_records(
        {
            "name": f"{r.source}/{r.name}", "n_params": r.n_params, "tokens": r.tokens, "lr": r.lr,
            "batch_tokens": r.batch_tokens, "final_loss": r.final_loss,
            "diverged": r.status == "diverged" or r.final_loss is None,
            "arch": f"moe:{r.n_params_total:.6g}" if r.n_params_total else "",
        }
        for r in rows
    )


def per_step_lr(run: Run, points: Sequence[CurvePoint]) -> tuple[np.ndarray, bool]:
    """The learning rate of every step 1..T of a run, and whether it had to be guessed.

    Imported runs that carry their schedule (the run format's ``lr_schedule``, kept in
    ``config``) and sweep runs (their spec's schedule) give it exactly. Otherwise the lr logged
    at the curve's points is interpolated between them (second value True): that loses the
    warmup (the first point's lr holds from step 1) and every change between points."""
    spec, config = run.spec or {}, run.config or {}
    if config.get("lr_schedule"):
        sched = read_schedule(config["lr_schedule"])
        check_schedule_length(sched.length, f"run {run.source}/{run.name}'s lr_schedule")
        return schedule_lrs(sched), False
    if spec.get("schedule") and config.get("steps") and run.lr:
        from hpscale.sweeps.spec import ScheduleSpec, schedule_lrs as spec_lrs  # pydantic only: no torch behind this import

        check_schedule_length(int(config["steps"]), f"run {run.source}/{run.name}'s schedule")
        # A branch of a WSD trunk warms up for its trunk's steps, not a fraction of its own.
        return spec_lrs(ScheduleSpec.model_validate(spec["schedule"]), int(config["steps"]), float(run.lr),
                        warmup_steps=config.get("warmup_steps")), False
    known = [(p.step, p.lr) for p in points if p.lr is not None]
    if len(known) < 2:
        raise InputError(f"run {run.source}/{run.name} has no learning rate recorded with its curve")
    last = max(s for s, _ in known)
    check_schedule_length(last, f"run {run.source}/{run.name}'s curve")
    xs, ys = zip(*sorted(known))
    return np.interp(np.arange(1, last + 1), xs, ys), True


def declared_warmup(run: Run) -> int | None:
    """The warmup steps an imported run's recorded schedule states (None: it states none, or 0,
    the schedules' default: a table may hold its own ramp, which inference then finds)."""
    stored = (run.config or {}).get("lr_schedule")
    warmup = stored.get("warmup_steps") if isinstance(stored, dict) else None
    return int(warmup) if isinstance(warmup, int) and not isinstance(warmup, bool) and warmup > 0 else None


def loss_curves(db: Database, rows: Sequence[Run]) -> list[LossCurve]:
    """Finished runs with curves as the trajectory laws' input (evaluation loss at each step).
    A curve whose per-step lr was interpolated is marked so (``LossCurve.lr_interpolated``):
    the law fitted on it records a warning."""
    from hpscale.fitting.trajectory import LossCurve

    curves = storage.get_curves(db, [r.id for r in rows if r.status == "done"])
    out = []
    for r in rows:
        points = [p for p in curves.get(r.id, []) if p.val_loss is not None and p.step > 0]
        if len(points) < 3:
            continue
        lr, guessed = per_step_lr(r, curves[r.id])
        # The laws model the curve after warmup: earlier points carry no information for them.
        # A recorded schedule's warmup is taken as stated (one that rises again later, e.g. a
        # rewarm, would otherwise count as warming up until its highest lr).
        declared = declared_warmup(r)
        warmup = infer_warmup(lr) if declared is None else declared
        points = [p for p in points if warmup <= p.step <= lr.size]
        if len(points) < 3:
            continue
        out.append(LossCurve(name=f"{r.source}/{r.name}", lr=lr, steps=np.array([p.step for p in points]),
                             loss=np.array([p.val_loss for p in points]), warmup_steps=declared,
                             lr_interpolated=guessed))
    if not out:
        raise InsufficientDataError("no finished run with a loss curve (at least 3 points) among the selected runs")
    sizes = sorted({r.n_params for r in rows if f"{r.source}/{r.name}" in {c.name for c in out}})
    if len(sizes) > 1:
        raise InputError(
            f"a trajectory law describes one model size, but the selected curves span {len(sizes)} "
            f"(n_params {', '.join(f'{n:.4g}' for n in sizes[:6])}): choose runs with --runs or --source"
        )
    return out


def critical_points(db: Database, rows: Sequence[Run]) -> dict[str, np.ndarray]:
    """Steps-to-target measurements: imported ones as they are (runs tagged ``steps_to_target``:
    the target is their final loss), and from stored curves: for each (N, D) group and batch
    size, the best run's curve gives the first step at which it reaches each target loss;
    targets are the losses every batch size of the group reaches."""
    from hpscale.fitting.critical import steps_to_target

    cols: dict[str, list[float]] = {"n_params": [], "target_loss": [], "batch_tokens": [], "steps": []}
    measured = set()
    for r in rows:
        try:
            s = steps_to_target_tag(r.tags)
        except InputError as exc:
            raise InputError(f"run {r.source}/{r.name}: {exc}") from None
        if s is None or r.status != "done" or r.final_loss is None or not r.batch_tokens:
            continue
        measured.add(r.id)
        for k, v in (("n_params", r.n_params), ("target_loss", r.final_loss), ("batch_tokens", r.batch_tokens),
                     ("steps", s)):
            cols[k].append(float(v))
    rows = [r for r in rows if r.id not in measured]
    curves = storage.get_curves(db, [r.id for r in rows if r.status == "done" and r.batch_tokens])
    by_group: dict[tuple[float, float], dict[float, Run]] = {}
    for r in rows:
        if r.id not in curves or not curves[r.id] or r.final_loss is None:
            continue
        cells = by_group.setdefault((r.n_params, r.tokens), {})
        best = cells.get(float(r.batch_tokens))  # type: ignore[arg-type]
        if best is None or (best.final_loss or math.inf) > r.final_loss:
            cells[float(r.batch_tokens)] = r  # type: ignore[arg-type]
    for (n, _d), cells in by_group.items():
        if len(cells) < 2:
            continue
        series = {
            b: (np.array([p.step for p in curves[r.id] if p.val_loss is not None]),
                np.array([p.val_loss for p in curves[r.id] if p.val_loss is not None]))
            for b, r in cells.items()
        }
        worst_final = max(float(np.min(loss)) for _, loss in series.values())
        best_start = min(float(loss[0]) for _, loss in series.values())
        for target in np.linspace(worst_final, best_start, 6)[:4]:
            for b, (steps, loss) in series.items():
                s = steps_to_target(steps, loss, float(target))
                if s is not None:
                    for k, v in (("n_params", n), ("target_loss", target), ("batch_tokens", b), ("steps", s)):
                        cols[k].append(float(v))
    if not cols["steps"]:
        raise InsufficientDataError(
            "no steps-to-target measurements: the critical batch needs groups trained at two or more batch sizes "
            "with loss curves, or a steps-to-target table (hpscale import steps-to-target)"
        )
    return {k: np.array(v) for k, v in cols.items()}


def fit_law(db: Database, rows: Sequence[Run], kind: str, form: str, n_bootstrap: int, seed: int,
            on_edge: str = "error", method: str = "near_optimal", prior: str | None = None,
            prior_width: float = DEFAULT_PRIOR_WIDTH, by: str = "n_params") -> tuple[Any, dict[str, Any] | None]:
    """Fit a law of ``kind``/``form`` on stored runs; returns (law, judged extrapolation report).
    Data enough for the law but not for refitting it without its largest scale still give a
    stored law, whose report says why it was not checked (and does not pass). A degenerate fit
    (``fitting.sanity``) gets a report that says it failed, and why: it is never a default."""
    from hpscale.fitting.validate import extrapolation_check

    # One order for the same runs, whatever order they were imported in: the bootstrap draws by
    # position, so a file's row order must not move a law's intervals.
    rows = sorted(rows, key=lambda r: (r.source, r.name))
    law, data = _fit(db, rows, kind, form, n_bootstrap, seed, on_edge, method, prior, prior_width, by)
    problems = law_problems(law.to_record())
    if problems:
        return law, {"kind": law.kind, "form": law.form, "passed": False, "checked": False, "failed": True,
                     "problems": problems, "summary": f"failed fit: {'; '.join(problems)}"}
    try:
        return law, judge(extrapolation_check(law, data))
    except InsufficientDataError as exc:
        return law, {"kind": law.kind, "form": law.form, "passed": False, "checked": False,
                     "summary": f"not checked: {exc}"}


def _fit(db: Database, rows: Sequence[Run], kind: str, form: str, n_bootstrap: int, seed: int,
         on_edge: str, method: str, prior: str | None, prior_width: float, by: str) -> tuple[Any, Any]:
    from hpscale.fitting.critical import CriticalBatchLaw
    from hpscale.fitting.loss import LossLaw
    from hpscale.fitting.trajectory import MomentumLaw, MultiPowerLaw

    if kind == "hyper":
        data = hyper_runs(rows)
        law = HyperLaw(form=form, n_bootstrap=n_bootstrap, seed=seed, on_edge=on_edge, method=method,
                       prior=prior, prior_width=prior_width)
        return law.fit(data), data
    if kind == "loss":
        # A steps-to-target measurement stopped at its target at whatever batch it had: its
        # loss is no final loss of a run trained to its budget.
        trained = [r for r in rows if steps_to_target_tag(r.tags) is None]
        if not trained:
            raise InputError("the selected runs are steps-to-target measurements (tagged steps_to_target), the data "
                             "of a critical-batch fit: a loss law needs runs trained to their token budget")
        data = runset(trained)
        return LossLaw(n_bootstrap=n_bootstrap, seed=seed).fit(data), data
    if kind == "trajectory":
        curves = loss_curves(db, rows)
        return (MultiPowerLaw() if form == "multi_power" else MomentumLaw()).fit(curves), curves
    if kind == "critical-batch":
        pts = critical_points(db, rows)
        return CriticalBatchLaw(by=by, n_bootstrap=n_bootstrap, seed=seed).fit(**pts), pts
    raise InputError(f"unknown law kind {kind!r}; expected one of {', '.join(KINDS)}")


def judge(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """Add ``passed`` and a one-line ``summary`` to an extrapolation report."""
    if report is None:
        return None
    metric, limit = PASS_THRESHOLDS[report["kind"]]
    value = report.get(metric)
    if report.get("inconclusive") or value is None:  # no score, or one that means nothing: not passed
        why = report.get("inconclusive") or f"no held-out group gives a {metric}"
        return {**report, "metric": metric, "threshold": limit, "passed": False,
                "summary": f"held out the largest {report['holdout']}: not conclusive: {why}"}
    value = float(value)
    summary = f"held out the largest {report['holdout']}: {metric} = {value:.4g} (pass at <= {limit:.4g})"
    if report.get("groups_on_lr_edge"):
        summary += f" (over the groups whose optimum the grid brackets; {report['groups_on_lr_edge']} on its edge left out)"
    return {**report, "metric": metric, "threshold": limit, "passed": bool(value <= limit), "summary": summary}


def fit_and_store(
    db: Database,
    *,
    kind: str,
    form: str | None = None,
    sources: Sequence[str] | None = None,
    run_names: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    on_edge: str | None = None,
    method: str = "near_optimal",
    prior: str | None = None,
    prior_width: float = DEFAULT_PRIOR_WIDTH,
    name: str | None = None,
    optimizer: str | None = None,
    mix: bool = False,
    by: str = "n_params",
) -> Law:
    """Fit a law from stored runs (of one optimizer: ``optimizer``, or the one the selected runs
    share) and store it with its record, extrapolation report, the exact runs used and its
    optimizer. A hyper law's record also carries the lr-batch coupling of its runs
    (``fitting.coupling``). Raises ``InputError`` / ``FittingError`` with what is missing. A fit
    whose coefficients are degenerate is stored too, marked failed with the reason (see
    ``fit_law``): callers check ``fit_failure(row)``.

    Without ``sources`` or ``run_names``, the runs of one source: with several stored, this
    refuses and lists them. Runs of different corpora are never pooled unless ``mix`` (see
    ``refuse_unrelated``), runs of different optimizers never. ``on_edge`` (hyper laws: a group's
    best run on the edge of the searched grid): "error" refuses, "warn" fits and records a
    warning; None: "error" when a run comes from a sweep (which can be widened), "warn" for
    imported runs only (a published grid cannot be). ``by`` (critical-batch laws): the variable
    x of B_crit = k x^p, one of n_params, tokens (E_min) or target_loss."""
    if kind not in KINDS:
        raise InputError(f"unknown law kind {kind!r}; expected one of {', '.join(KINDS)}")
    form = form or DEFAULT_FORM[kind]
    if form not in FORMS[kind]:
        raise InputError(f"kind {kind!r} has forms {', '.join(FORMS[kind])}; got {form!r}")
    if not 0 <= n_bootstrap <= 100_000:
        raise InputError(f"bootstrap must lie in 0..100000 (got {n_bootstrap})")
    if on_edge not in ("error", "warn", None):
        raise InputError(f"on_edge must be 'error' or 'warn' (got {on_edge!r})")
    if method not in HYPER_METHODS:
        raise InputError(f"method must be one of {', '.join(HYPER_METHODS)} (got {method!r})")
    if prior not in (None, *PRIOR_NAMES):
        raise InputError(f"prior must be one of {', '.join(PRIOR_NAMES)} (got {prior!r})")
    prior = None if prior == "none" else prior
    if prior is not None and kind != "hyper":
        raise InputError("a published prior applies to hyper laws only (their exponents)")
    if by not in CRITICAL_BY:
        raise InputError(f"by must be one of {', '.join(CRITICAL_BY)} (got {by!r})")
    if by != "n_params" and kind != "critical-batch":
        raise InputError("by applies to critical-batch laws only (the variable B_crit is a power of)")
    if not (math.isfinite(prior_width) and prior_width > 0):
        raise InputError(f"the prior width must be a finite number > 0 (got {prior_width!r})")
    rows = select_runs(db, sources, run_names, optimizer)
    if not mix:
        refuse_unrelated(rows, chosen=bool(sources or run_names))
    fitted_on = one_optimizer(rows)
    if on_edge is None:
        on_edge = "error" if any(r.sweep_id is not None for r in rows) else "warn"
    try:
        law, report = fit_law(db, rows, kind, form, n_bootstrap, seed, on_edge, method, prior, prior_width, by)
    except EdgeOptimumError as exc:
        raise InputError(
            f"{exc}. Widen the sweep's grid (a refinement round, or more learning rates / batch sizes in its spec), "
            "or fit anyway and keep these warnings with the law (hpscale fit: --allow-edge; POST /fits: "
            "\"allow_edge\": true)"
        ) from None
    record = law.to_record()
    if kind == "hyper":
        coupling = LrBatchCoupling(optimizer=fitted_on, n_bootstrap=n_bootstrap, seed=seed).fit(hyper_runs(rows))
        record["lr_batch_coupling"] = coupling.to_record()
    used = set(record.get("runs_used") or [f"{r.source}/{r.name}" for r in rows])
    used_ids = [r.id for r in rows if f"{r.source}/{r.name}" in used]
    label = ", ".join(sorted({r.source for r in rows}))
    count = len(storage.list_laws(db, kind="hyper" if kind == "hyper" else law.kind))
    # AdamW's laws keep the names and titles they had before laws named their optimizer.
    opt_name = "" if fitted_on == "adamw" else f"{fitted_on}-"
    return storage.add_law(
        db,
        {
            "name": name or f"{kind}-{form}-{opt_name}{label[:60]}-{count + 1}".replace(" ", ""),
            "kind": law.kind,
            "form": form,
            "origin": "fitted",
            "optimizer": fitted_on,
            "title": law_title(kind, form, method, {r.source for r in rows}, fitted_on, by),
            "source": law_source(kind, len(used_ids), len(rows), label),
            "record": record,
            "extrapolation": report,
            "settings": {"n_bootstrap": n_bootstrap, "seed": seed, "on_edge": on_edge, "method": method,
                         "prior": prior, "prior_width": prior_width if prior else None,
                         "sources": list(sources or []), "optimizer": optimizer, "mix": mix,
                         **({"by": by} if kind == "critical-batch" else {}),
                         "runs": list(run_names or [])},
            "code_version": code_version(),
        },
        used_ids,
    )


def fit_failure(row: Law) -> list[str]:
    """Why a stored fit failed (empty: it did not)."""
    report = row.extrapolation if isinstance(row.extrapolation, dict) else {}
    return list(report.get("problems") or []) if report.get("failed") else []


def load_law(db: Database, law_id: int | str, kind: str | None = None) -> tuple[Law, Any]:
    """A stored law and its fitting object; ``kind`` checks what the caller expects."""
    row = storage.get_law(db, law_id)
    if kind is not None and row.kind != kind:
        raise InputError(f"law {row.id} ({row.name}) is a {row.kind} law, not a {kind} law")
    return row, law_from_record(row.record)


def predict_curve(db: Database, law_id: int | str, lr: np.ndarray, tokens_per_step: float | None = None,
                  every: int = 1, max_steps: int | None = None, warmup_steps: int | None = None) -> dict[str, Any]:
    """The predicted loss of a trajectory law after warmup of a schedule whose step i + 1 uses
    ``lr[i]``: at every ``every``-th step from the end of warmup, and at the last step (the law
    evaluates those steps only). ``tokens_per_step`` adds a tokens column (tokens per step).
    Schedules longer than ``max_steps`` (default: HPSCALE_MAX_CURVE_STEPS) are refused.
    ``warmup_steps``: the schedule's stated warmup (default: until its lr first reaches its peak)."""
    row, law = load_law(db, law_id, kind="trajectory")
    lr = np.asarray(lr, dtype=float)
    if lr.ndim != 1 or lr.size < 2 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
        raise InputError("the schedule must hold at least 2 finite learning rates >= 0")
    if not lr.max() > 0:
        raise InputError("the schedule's learning rate is 0 at every step: a trajectory law predicts training "
                         "with a learning rate > 0")
    check_schedule_length(lr.size, limit=max_steps)
    if every < 1:
        raise InputError(f"every must be >= 1 (got {every})")
    if warmup_steps is not None and not 0 <= warmup_steps < lr.size:
        raise InputError(f"warmup_steps must lie in 0..{lr.size - 1} (got {warmup_steps})")
    warmup = infer_warmup(lr) if warmup_steps is None else int(warmup_steps)
    first = max(warmup, 1)
    steps = np.unique(np.append(np.arange(first, lr.size + 1, every), lr.size))
    loss = np.asarray(law.predict(lr, steps, warmup), float)
    bad = np.flatnonzero(~(np.isfinite(loss) & (loss > 0)))
    if bad.size:
        raise InputError(
            f"law {row.id} ({row.name}) predicts a loss of {loss[bad[0]]:.4g} at step {int(steps[bad[0]])} of this "
            f"schedule: it does not hold this far from the curves it was fitted on ({fit_span((row.record or {}).get('fit_range'))})")
    out: dict[str, Any] = {"law_id": row.id, "steps": steps.tolist(), "lr": lr[steps - 1].tolist(),
                           "loss": loss.tolist(), "warmup_steps": warmup,
                           "warnings": curve_warnings(row, lr, warmup), "held_out": held_out_error(row)}
    if tokens_per_step is not None:
        if not (math.isfinite(tokens_per_step) and tokens_per_step > 0):
            raise InputError("tokens_per_step must be a finite number > 0")
        out["tokens"] = (steps * tokens_per_step).tolist()
    return out


def held_out_error(row: Law) -> dict[str, Any] | None:
    """How well a trajectory law predicts a curve it has not seen: its extrapolation check refitted
    it without its longest curve and scored that curve (relative errors |pred / loss - 1|). The
    nearest thing these laws have to an interval; None when the law has no such check."""
    report = row.extrapolation if isinstance(row.extrapolation, dict) else {}
    if report.get("kind") != "trajectory" or report.get("failed"):
        return None
    mean, worst = report.get("mean_rel_error"), report.get("max_rel_error")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (mean, worst)):
        return None
    return {"curve": report.get("held_out_curve"), "mean_rel_error": float(mean), "max_rel_error": float(worst),
            "fit_curves": list(report.get("fit_curves") or [])}


# A trajectory law describes schedules of the peak lr it was fitted at: beyond this factor from
# the fitted peaks its predictions carry a warning.
PEAK_LR_FACTOR = 1.5


def curve_warnings(row: Law, lr: np.ndarray, warmup: int) -> list[str]:
    """What a user must know about a trajectory law's predicted curve: the law's own fit
    warnings, a failed or missing check, a schedule longer than the fitted curves or at another
    peak lr, and a warmup inferred past an earlier drop of the lr (a rewarm)."""
    record = row.record or {}
    out = [f"trajectory law {row.name}: {w}" for w in record.get("warnings") or [] if isinstance(w, str)]
    if check_passed(row) is False:
        out.append(f"trajectory law {row.name}'s extrapolation check did not pass")
    fr = record.get("fit_range") or {}
    steps, peaks = fr.get("steps"), fr.get("peak_lr")
    if isinstance(steps, list) and lr.size > steps[1]:
        out.append(f"the schedule runs to step {lr.size}, {lr.size / steps[1]:.3g}x the longest curve law {row.name} "
                   f"was fitted on ({steps[1]:.6g} steps): the further beyond, the less the prediction is to be trusted")
    peak = float(lr.max())
    if isinstance(peaks, list) and not peaks[0] / PEAK_LR_FACTOR <= peak <= peaks[1] * PEAK_LR_FACTOR:
        out.append(f"the schedule's peak lr {peak:.3g} differs from the peak lr of the curves law {row.name} was "
                   f"fitted on ({fit_span((row.record or {}).get('fit_range'))}): a trajectory law describes schedules of its own peak lr")
    if warmup > 1 and np.any(np.diff(lr[:warmup]) < 0):
        out.append(f"the lr falls before step {warmup}, where warmup is taken to end: the curve is predicted from "
                   "there on")
    rises = np.flatnonzero(np.diff(lr[max(warmup - 1, 0):]) > 0)
    if rises.size:
        out.append(f"the lr rises after warmup (first at step {max(warmup, 1) + int(rises[0]) + 1}): the trajectory "
                   "laws describe schedules that only fall after warmup, a rise enters them as a negative drop")
    return out


def predict_loss(db: Database, law_id: int | str, n_params: float, tokens: float,
                 warn_factor: float = 10.0) -> dict[str, Any]:
    """A loss law's predicted final loss (nats/token) for N params on D tokens, with interval and
    the warnings a recommendation would give (its check failed; the target lies more than
    ``warn_factor`` outside its data)."""
    row, law = load_law(db, law_id, kind="loss")
    for label, v in (("n_params", n_params), ("tokens", tokens)):
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"{label} must be a finite number > 0 (got {v!r})")
    problems = failure(row)
    if problems:
        raise InputError(f"loss law {row.id} ({row.name}) is a failed fit: {problems[0]}")
    pred = law.predict(n_params, tokens)
    return {"law_id": row.id, "n_params": n_params, "tokens": tokens, "final_loss": pred.loss,
            "interval": list(pred.interval) if pred.interval else None,
            "warnings": loss_warnings(row, bool(check_passed(row)), n_params, tokens, warn_factor)}
