"""The sweep's queue is Optuna: one study per (N, D) group, one trial per run, in hpscale's database.

The contract, in one place:

- Storage: ``optuna.storages.RDBStorage`` on the same URL as hpscale, so trials live in the same
  SQL database as the runs. Optuna's tables (``studies``, ``trials``, ...) sit beside hpscale's;
  hpscale's migrations never create or drop them. Both libraries keep their Alembic revision
  in the one ``alembic_version`` table, and hpscale's schema is created first, so Optuna finds the
  table filled and leaves it alone; its own compatibility check (which would read hpscale's
  revision) is skipped. Optuna records its schema in ``version_info``. Never run
  ``optuna storage upgrade`` on an hpscale database: it would rewrite ``alembic_version``.
- Trials: every run is enqueued (``enqueue_trial``) with params {lr, batch_size, seed} and user
  attrs {run, cell, group}, plus {trunk} for a branch of a warmup-stable-decay trunk. A worker
  claims the waiting trials of one cell (of one trunk, across the studies of its budgets) with
  the storage call ``Study.ask`` itself uses (``set_trial_state_values(..., RUNNING)``: a
  row-locked compare-and-set), so a trial is claimed by exactly one worker.
- Results: ``tell`` the final validation loss (nats/token), after the run's row is stored; a run
  stored by a worker that died before telling is told by its trial's retry (``told_done``), so
  every finished run ends with exactly one COMPLETE trial. A diverged run is told FAIL with user
  attr ``outcome`` = "diverged" (Optuna's samplers then ignore it, and no callback retries a told
  FAIL); the runs table holds status "diverged".
- Liveness: Optuna's heartbeat (``heartbeat_interval`` / ``grace_period``). Any worker calls
  ``fail_stale_trials``; a dead worker's trials become FAIL and ``RetryFailedTrialCallback``
  enqueues copies (fixed params and user attrs carried over), which the next worker claims.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from hpscale.sweeps.errors import SweepError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

# The search space in which enqueued values are "fixed params": wide enough for any lr, batch
# or seed a spec or a refinement round may hold (Optuna warns about values outside it).
LR_RANGE = (1e-9, 1e3)
BATCH_RANGE = (1, 1 << 24)
SEED_RANGE = (0, (1 << 31) - 1)


def study_name(sweep: str, group: str) -> str:
    """The Optuna study of one group of a sweep."""
    return f"hpscale:{sweep}:{group}"


def optuna_url(url: str) -> str:
    """hpscale's URL in the form Optuna's SQLAlchemy engine needs (psycopg 3 for PostgreSQL)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def open_storage(url: str, heartbeat_s: int, grace_s: int) -> RDBStorage:
    """Optuna's RDB storage on hpscale's (already migrated) database, with the heartbeat on."""
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    optuna.logging.set_verbosity(logging.WARNING)  # no "trial N finished" line per run
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if is_sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" in Optuna's words
        try:
            return RDBStorage(
                optuna_url(url), engine_kwargs=kwargs, skip_compatibility_check=True,
                heartbeat_interval=heartbeat_s, grace_period=grace_s,
                # max_retry None: a run is retried until it finishes; fixed params travel along.
                heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=None),
            )
        except Exception as exc:  # driver errors at connect time: one line for the CLI
            raise SweepError(f"cannot open the Optuna storage on {make_url(url).render_as_string()}: "
                             f"{str(exc).strip().splitlines()[0]}") from exc


def load_study(storage: RDBStorage, name: str, create: bool = False) -> optuna.Study:
    """A group's study (created when ``create``), minimising the final loss."""
    import optuna

    try:
        if create:
            return optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                       load_if_exists=True)
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SweepError(f"no Optuna study {name!r}: plan the sweep first (`hpscale sweep run SPEC`)") from None


def enqueue_run(study: optuna.Study, run: str, cell: str, group: str, lr: float, batch_size: int, seed: int,
                trunk: str | None = None) -> None:
    """Add one run to the queue as a waiting trial with fixed params (``trunk``: the trunk key
    of a branched run, which is trained with every waiting run of that trunk)."""
    attrs = {"run": run, "cell": cell, "group": group} | ({"trunk": trunk} if trunk else {})
    study.enqueue_trial({"lr": lr, "batch_size": batch_size, "seed": seed}, user_attrs=attrs)


def live_runs(study: optuna.Study) -> set[str]:
    """Run names that have a waiting or running trial in the study."""
    from optuna.trial import TrialState

    trials = study._storage.get_all_trials(study._study_id, deepcopy=False,
                                           states=(TrialState.WAITING, TrialState.RUNNING))
    return {t.user_attrs.get("run") for t in trials}


def told_done(study: optuna.Study, run: str) -> bool:
    """Whether some trial of the study was told the result of run ``run`` (COMPLETE)."""
    from optuna.trial import TrialState

    trials = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
    return any(t.user_attrs.get("run") == run for t in trials)


def fail_stale(studies: Iterable[optuna.Study]) -> None:
    """Fail the trials whose worker stopped beating; the retry callback re-enqueues them."""
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since Optuna 2.9; the RDB heartbeat needs it
        for study in studies:
            fail_stale_trials(study)


@dataclass
class Claimed:
    """Trials of one training job this worker now runs (state RUNNING, params suggested): a
    cell's, or a trunk's (its budgets are groups of their own: each trial's study is
    ``trial.study``). ``key`` is the cell key or the trunk key."""

    key: str
    trials: list[optuna.Trial]

    @property
    def trial_ids(self) -> list[int]:
        return [t._trial_id for t in self.trials]


def _try_claim(storage: RDBStorage, trial_id: int) -> bool:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    # Beat first: Optuna never fails a RUNNING trial that has no heartbeat at all, so a worker
    # killed between claiming and its first beat would strand the trial forever. A beat on a
    # trial another worker wins is harmless: that worker's own beats overwrite it.
    storage.record_heartbeat(trial_id)
    try:
        return storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    except UpdateFinishedTrialError:
        return False


def job_key(trial: FrozenTrial) -> str:
    """What a trial is trained with: its trunk (every budget of it), else its cell."""
    return str(trial.user_attrs.get("trunk") or trial.user_attrs.get("cell"))


def claim_cell(studies: Iterable[optuna.Study]) -> Claimed | None:
    """Claim the waiting trials of the first job (a cell, or a trunk with the cells of all its
    budgets, which live in several studies) whose first trial this worker wins.

    A worker that loses a job's first trial skips that job entirely, so concurrent workers
    take different jobs instead of splitting one (a split job still trains correctly, only
    less fused). Each trial has a heartbeat before it is RUNNING, so a worker killed from here
    on has its trials failed and re-queued.
    """
    import optuna
    from optuna.trial import TrialState

    jobs: dict[str, list[tuple[optuna.Study, FrozenTrial]]] = {}
    for study in studies:
        waiting = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
        for t in sorted(waiting, key=lambda t: t.number):
            jobs.setdefault(job_key(t), []).append((study, t))
    for key, trials in jobs.items():
        first_study, first = trials[0]
        if not _try_claim(first_study._storage, first._trial_id):
            continue
        won = [(first_study, first)] + [(s, t) for s, t in trials[1:] if _try_claim(s._storage, t._trial_id)]
        live = [optuna.Trial(s, t._trial_id) for s, t in won]
        for trial in live:  # records the fixed params as the trial's params
            trial.suggest_float("lr", *LR_RANGE, log=True)
            trial.suggest_int("batch_size", *BATCH_RANGE, log=True)
            trial.suggest_int("seed", *SEED_RANGE)
        return Claimed(key, live)
    return None


# A trial may have been failed meanwhile by another worker's ``fail_stale_trials`` (this worker
# stalled past the grace period): telling it again is then a no-op, never an error.


def tell_done(study: optuna.Study, trial: optuna.Trial, final_loss: float) -> None:
    """Report a finished run's final validation loss (nats/token)."""
    study.tell(trial, final_loss, skip_if_finished=True)


def tell_failed(study: optuna.Study, trial: optuna.Trial, outcome: str) -> None:
    """Report a run that has no loss: ``outcome`` is "diverged", "duplicate" (another trial owns
    the run), "error" (training raised) or "interrupted" (Ctrl-C; a copy is enqueued)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        trial.set_user_attr("outcome", outcome)
    except UpdateFinishedTrialError:
        return
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def requeue(study: optuna.Study, trial: optuna.Trial) -> None:
    """Enqueue a copy of a trial (same params and user attrs): the run goes back in the queue."""
    frozen = study._storage.get_trial(trial._trial_id)
    attrs = {k: v for k, v in frozen.user_attrs.items() if k != "outcome"}
    study.enqueue_trial(frozen.system_attrs.get("fixed_params", frozen.params), user_attrs=attrs)
