"""The worker loop: claim a cell's trials, train them fused, write curves and results, tell Optuna.

One worker runs per device; any number run at once, on any machines sharing the database.

    loop:
        fail stale trials (a dead worker's runs go back to the queue, via Optuna's heartbeat)
        claim the waiting trials of one job             -> train, record, tell; next
          (a cell, or a trunk with all its budgets: each budget recorded as soon as it is done)
        nothing waiting: refine finished groups, repair -> new work? next
        no run of the sweep queued or running           -> exit
        else wait (other workers may still fail, or finish and leave refinement behind)

A run's row is claimed by its trial before training (``db.storage.claim_sweep_run``), so a
duplicate trial never trains a run twice, and a finished run is never trained again. Ctrl-C
puts this worker's runs back in the queue at once (no need to wait for the grace period).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.models import Run
from hpscale.db.provenance import code_version
from hpscale.sweeps import book, queue
from hpscale.sweeps.cellrun import CellTask
from hpscale.sweeps.errors import SweepError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

    from hpscale.sweeps.spec import SweepSpec

logger = logging.getLogger("hpscale.worker")


class CellRunner(Protocol):
    """Trains one cell (see ``sweeps.cellrun``); ``corpus_hash`` is recorded on every run."""

    corpus_hash: str | None

    def __call__(self, task: CellTask, on_eval: Callable[[Any], None], on_progress: Callable[[Any], None],
                 on_result: Callable[[int, Sequence[Any]], None]) -> None: ...


class Reporter(Protocol):
    """Where the worker tells people what it does (the CLI draws rich progress bars)."""

    def cell_started(self, task: CellTask, runs_finished: int, runs_total: int) -> None: ...
    def progress(self, step: int, total_steps: int, tokens_per_s: float) -> None: ...
    def cell_finished(self, task: CellTask, results: Sequence[Any]) -> None: ...
    def message(self, text: str) -> None: ...


class SilentReporter:
    """A reporter that says nothing."""

    def cell_started(self, task: CellTask, runs_finished: int, runs_total: int) -> None:
        pass

    def progress(self, step: int, total_steps: int, tokens_per_s: float) -> None:
        pass

    def cell_finished(self, task: CellTask, results: Sequence[Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class WorkerSummary:
    """What one worker did."""

    worker: str
    cells: int = 0
    runs_done: int = 0
    runs_diverged: int = 0
    runs_failed: int = 0
    runs_retried: int = 0  # failed attempts put back in the queue (``workers.retries``)
    duplicates: int = 0
    refinements: list[book.Refinement] = field(default_factory=list)


def default_worker_id(device: str = "") -> str:
    """host:pid[:device], unique among live workers."""
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{device}" if device else "")


class Heartbeat:
    """Beats for the given trials (Optuna's heartbeat) and runs (``heartbeat_at``) every
    ``interval_s`` seconds on a daemon thread, while the ``with`` block runs."""

    def __init__(self, store: RDBStorage, db: Database, trial_ids: list[int], run_ids: list[int],
                 interval_s: float) -> None:
        self.store, self.db, self.trial_ids, self.run_ids = store, db, trial_ids, run_ids
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hpscale-heartbeat", daemon=True)

    def beat(self) -> None:
        for trial_id in self.trial_ids:
            self.store.record_heartbeat(trial_id)
        storage.beat_sweep_runs(self.db, self.run_ids)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as exc:  # a transient database error must not kill training; the next beat retries
                # Said, not swallowed: beats that keep failing let the runs' trials be re-queued.
                logger.warning("heartbeat failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, self.interval_s)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Worker:
    """One worker on one sweep. ``run()`` loops until the sweep has nothing queued or running."""

    def __init__(self, db: Database, sweep_name: str, runner_factory: Callable[[SweepSpec], CellRunner],
                 worker_id: str | None = None, reporter: Reporter | None = None,
                 poll_s: float | None = None) -> None:
        self.db = db
        self.sweep, self.spec = book.open_sweep(db, sweep_name)
        self.runner_factory = runner_factory
        self.runner: CellRunner | None = None
        self.summary = WorkerSummary(worker_id or default_worker_id())
        self.reporter: Reporter = reporter or SilentReporter()
        # Idle workers look for retried or refined work this often (seconds).
        self.poll_s = poll_s if poll_s is not None else max(0.5, min(5.0, self.spec.workers.heartbeat_s / 2))
        self.store = book.open_queue(db, self.spec)
        self.studies: dict[str, optuna.Study] = book.studies(db, self.store, self.sweep)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> WorkerSummary:
        """Work until no run of the sweep is queued or running."""
        while True:
            queue.fail_stale(self.studies.values())
            if self.runner is None and self._has_work():
                # Before claiming anything: building a corpus can take minutes, and a corpus
                # error must not leave claimed trials behind.
                self._ensure_runner()
            claimed = queue.claim_cell(self.studies.values())
            if claimed is not None:
                self._train(claimed)
                continue
            refined = book.refine(self.db, self.store, self.sweep, self.spec, self.studies)
            self.summary.refinements += [r for r in refined if r.runs_added]
            for r in refined:
                if r.runs_added:
                    self.reporter.message(r.describe())
            if sum(r.runs_added for r in refined) + book.repair(self.db, self.store, self.sweep, self.studies):
                continue
            if not self._has_work():
                break
            time.sleep(self.poll_s)
        return self.summary

    def _has_work(self) -> bool:
        """Whether any run of the sweep is queued or running (here or elsewhere)."""
        return bool(storage.list_runs(self.db, sweep_id=self.sweep.id, statuses=list(book.ACTIVE), limit=1))

    def _ensure_runner(self) -> CellRunner:
        if self.runner is None:
            self.runner = self.runner_factory(self.spec)
            stored = storage.get_sweep(self.db, self.sweep.id).corpus_hash
            mine = self.runner.corpus_hash
            if stored is None and mine is not None:
                storage.update_sweep(self.db, self.sweep.id, corpus_hash=mine)
            elif stored is not None and mine is not None and stored != mine:
                raise SweepError(
                    f"this machine's corpus (hash {mine[:12]}) differs from sweep {self.sweep.name!r}'s "
                    f"(hash {stored[:12]}): use the same files, or a pre-tokenized .bin corpus on every machine")
        return self.runner

    # -- one job: a cell, or the cells of one trunk's budgets ----------------------------------
    def _own(self, claimed: queue.Claimed, owned: list[tuple[optuna.Trial, Run]]) -> None:
        """Claim the run row of every claimed trial into ``owned``; duplicates are told FAIL."""
        names = [str(t.user_attrs.get("run")) for t in claimed.trials]
        rows = {r.name: r for r in storage.list_runs(self.db, sources=[self.sweep.name], names=names)}
        for trial, name in zip(claimed.trials, names):
            row = rows.get(name)
            if row is not None and self._claim_row(row, trial._trial_id):
                owned.append((trial, row))
            elif row is not None and row.status == "done" and row.final_loss is not None \
                    and not queue.told_done(trial.study, name):
                # Stored, but its worker died before telling Optuna (a branch is stored while
                # its trunk trains on): this retry of its trial tells the stored result, once.
                queue.tell_done(trial.study, trial, float(row.final_loss))
            else:
                queue.tell_failed(trial.study, trial, "duplicate")
                self.summary.duplicates += 1

    def _claim_row(self, row: Run, trial_id: int) -> bool:
        from optuna.trial import TrialState

        if row.status == "running" and row.trial_id is not None:
            # Taken over only from a trial Optuna no longer runs (failed as stale, or interrupted).
            if self.store.get_trial(row.trial_id).state == TrialState.RUNNING:
                return False
        elif row.status != "queued":
            return False
        return storage.claim_sweep_run(self.db, row.id, trial_id, row.trial_id, self.summary.worker)

    def _train(self, claimed: queue.Claimed) -> None:
        owned: list[tuple[optuna.Trial, Run]] = []
        try:
            self._own(claimed, owned)
            if owned:
                self._train_owned(owned)
        except KeyboardInterrupt:
            # Wherever Ctrl-C lands between claim and tell, this job's unfinished runs go back in the queue.
            self._release(claimed)
            raise

    def _train_owned(self, owned: list[tuple[optuna.Trial, Run]]) -> None:
        runner = self._ensure_runner()
        rows = [row for _, row in owned]
        cells = book.cells_from_rows(rows)
        task = CellTask(self.spec, cells[-1], tuple(cells[:-1]))
        # (cell index, member index) -> the trial and row trained there; a cell's results are
        # recorded for its own runs only (the job's members are those of all its cells).
        by_name = {row.name: (trial, row) for trial, row in owned}
        member = {m: k for k, m in enumerate(task.members)}
        slots = {(i, member[(m.lr, m.seed)]): by_name[m.name] for i, c in enumerate(task.cells) for m in c.members}
        recorded: set[int] = set()  # run ids
        counts = storage.sweep_run_counts(self.db).get(self.sweep.id, {})
        self.reporter.cell_started(task, sum(counts.get(s, 0) for s in book.FINISHED), sum(counts.values()))

        def on_result(i: int, results: Sequence[Any]) -> None:
            """Cell i is finished: store its runs now (a branch is safe before the trunk goes on)."""
            mine = [k for k in range(len(results)) if (i, k) in slots]
            for k in mine:
                trial, row = slots[(i, k)]
                self._record(trial, row, results[k])
                recorded.add(row.id)
            self.summary.cells += 1
            self.reporter.cell_finished(CellTask(self.spec, task.cells[i]), [results[k] for k in mine])

        beat = Heartbeat(self.store, self.db, [t._trial_id for t, _ in owned], [r.id for r in rows],
                         self.spec.workers.heartbeat_s)
        with beat:
            try:
                runner(task, self._writer(slots), self._progress, on_result)
            except Exception as exc:  # one bad job must not stop the sweep: record it and go on
                self._fail([(t, r) for t, r in owned if r.id not in recorded], exc)
                return
        missing = [(t, r) for t, r in owned if r.id not in recorded]
        if missing:  # a runner that skipped a cell is a bug: never leave its runs "running"
            self._fail(missing, SweepError(f"the cell runner reported no result for {len(missing)} runs"))

    def _writer(self, slots: dict[tuple[int, int], tuple[optuna.Trial, Run]]) -> Callable[[Any], None]:
        """The on_eval callback: one curve point per live member and cell it belongs to (a trunk's
        evaluation goes into the curve of every budget branching off after it), written as
        training goes (and only while this worker's trial still owns the run)."""

        def on_eval(event: Any) -> None:
            writes = []
            for i in event.branches:
                for k in range(len(event.status)):
                    if (i, k) in slots and event.status[k] != "diverged":
                        trial, row = slots[(i, k)]
                        writes.append((row.id, trial._trial_id, [{
                            "step": event.step, "tokens": float(event.tokens), "lr": event.lr[k],
                            "train_loss": event.train_loss[k], "val_loss": event.val_loss[k]}]))
            storage.add_owned_curve_points(self.db, writes)

        return on_eval

    def _progress(self, p: Any) -> None:
        self.reporter.progress(p.step, p.total_steps, p.tokens_per_s)

    def _record(self, trial: optuna.Trial, row: Run, res: Any) -> None:
        """Store one run's outcome, then tell its trial: exactly once per run."""
        corpus = self.runner.corpus_hash if self.runner else None
        config = {**(row.config or {}), "trained_steps": int(res.steps), "trained_tokens": int(res.tokens),
                  "diverged_step": res.diverged_step}
        status = "diverged" if res.status == "diverged" or res.final_val_loss is None else "done"
        loss = res.final_val_loss if status == "done" else None
        # The row first, then Optuna: a crash in between leaves a finished row and a running
        # trial, whose retry then finds the row finished and tells its result (``_own``).
        tags = {k: v for k, v in (row.tags or {}).items() if k != "error"}  # an earlier attempt's
        mine = storage.finish_sweep_run(self.db, row.id, trial._trial_id, status, loss, config=config, tags=tags,
                                        corpus_hash=corpus, code_version=code_version())
        if not mine:
            queue.tell_failed(trial.study, trial, "duplicate")
            self.summary.duplicates += 1
        elif status == "done":
            queue.tell_done(trial.study, trial, float(loss))  # type: ignore[arg-type]
            self.summary.runs_done += 1
        else:
            queue.tell_failed(trial.study, trial, "diverged")
            self.summary.runs_diverged += 1

    def _fail(self, owned: list[tuple[optuna.Trial, Run]], exc: Exception) -> None:
        """Record the runs of a cell whose training raised: failed, with the failed attempts
        counted in their tags ("attempts"), and back in the queue (a new trial, the row queued)
        while ``workers.retries`` allows. Then this worker waits ``heartbeat_s`` x attempts
        before it claims again, so that a GPU the other processes filled (CUDA out of memory)
        has time to free up. A run whose row another trial took over meanwhile is that trial's."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        error = f"{type(exc).__name__}: {text}"[:500]
        retries = self.spec.workers.retries
        attempt = int((owned[0][1].tags or {}).get("attempts", 0)) + 1 if owned else 0
        if owned:
            again = "; queued again" if attempt <= retries else ""
            self.reporter.message(f"cell {owned[0][1].cell_key} failed (attempt {attempt} of {retries + 1}): "
                                  f"{error}{again}")
        retried = False
        for trial, row in owned:
            attempts = int((row.tags or {}).get("attempts", 0)) + 1
            mine = storage.finish_sweep_run(self.db, row.id, trial._trial_id, "failed", None,
                                            tags={**(row.tags or {}), "error": error, "attempts": attempts})
            queue.tell_failed(trial.study, trial, "error" if mine else "duplicate")
            if not mine:
                self.summary.duplicates += 1
            elif attempts <= retries:
                storage.release_sweep_runs(self.db, [row.id], statuses=["failed"])
                queue.requeue(trial.study, trial)
                self.summary.runs_retried += 1
                retried = True
            else:
                self.summary.runs_failed += 1
        if retried:
            time.sleep(self.spec.workers.heartbeat_s * attempt)

    def _release(self, claimed: queue.Claimed) -> None:
        """Ctrl-C: the cell's unfinished runs go back to the queue now, with fresh trials, so a
        rerun resumes them without waiting for the grace period. Finished runs stay finished
        (a requeued copy of one is later told FAIL as a duplicate)."""
        from optuna.trial import TrialState

        # By the trials' ids, not by ``owned``: Ctrl-C may land after a row was claimed in the
        # database but before it was added to ``owned``.
        ids = set(claimed.trial_ids)
        names = [str(t.user_attrs.get("run")) for t in claimed.trials]
        rows = storage.list_runs(self.db, sources=[self.sweep.name], names=names, statuses=["running"])
        storage.release_sweep_runs(self.db, [r.id for r in rows if r.trial_id in ids])
        for trial in claimed.trials:
            if self.store.get_trial(trial._trial_id).state == TrialState.RUNNING:
                queue.tell_failed(trial.study, trial, "interrupted")
                queue.requeue(trial.study, trial)
