"""A sweep's book-keeping in the database: store a plan, refine finished groups, repair the queue.

The runs table says what must be trained (one row per planned run, keyed by name); Optuna's
trials (``sweeps.queue``) say who trains what. Every function here is idempotent and safe to
call from any number of workers at once: rows are inserted under their unique names, trials
for a row are enqueued only when the row has no waiting or running trial, and a duplicate trial
is harmless because ``db.storage.claim_sweep_run`` lets one trial own a run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.errors import ConflictError, NotFoundError
from hpscale.db.models import Run, Sweep
from hpscale.db.provenance import code_version
from hpscale.sweeps import queue
from hpscale.sweeps.errors import SweepError
from hpscale.sweeps.plan import Cell, Member, Plan, Shape, judge_group, make_cell, refinement_lrs, round_lr
from hpscale.sweeps.spec import SweepSpec, parse_spec

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

ACTIVE = ("queued", "running")
FINISHED = ("done", "diverged", "failed")


def schedule_label(spec: SweepSpec, cell: Cell | None = None) -> str:
    """The schedule as the runs table's ``schedule`` column shows it (a branch: its warmup in
    steps, the trunk's, and the step it left the trunk at)."""
    s = spec.schedule
    extra = f",cooldown={s.cooldown_fraction:g}" if s.kind == "wsd" else ""
    if cell is not None and cell.trunk is not None:
        return (f"{s.kind}(warmup_steps={cell.warmup_steps},final={s.final_lr_ratio:g}{extra},"
                f"branch_step={cell.branch_step})")
    return f"{s.kind}(warmup={s.warmup_fraction:g},final={s.final_lr_ratio:g}{extra})"


def run_rows(spec: SweepSpec, cell: Cell) -> list[dict[str, Any]]:
    """The runs table rows (queued) of one cell's members."""
    config = {"d_model": cell.shape.d_model, "n_layers": cell.shape.n_layers, "n_heads": cell.shape.n_heads,
              "vocab_size": spec.vocab_size, "steps": cell.steps, "flops_per_token": cell.shape.flops_per_token}
    if cell.trunk is not None:  # what rebuilds the branch's schedule: the trunk's warmup, where it leaves it
        config.update(warmup_steps=cell.warmup_steps, branch_step=cell.branch_step)
    return [
        {"source": spec.name, "name": m.name, "n_params": float(cell.shape.n_params), "tokens": float(cell.tokens),
         "lr": m.lr, "batch_size": float(cell.batch_size), "batch_tokens": float(cell.batch_tokens),
         "seq_len": cell.seq_len, "schedule": schedule_label(spec, cell), "tags": {"round": cell.round},
         "config": config, "seed": m.seed, "code_version": code_version(), "spec": spec.model_dump(mode="json"),
         "group_key": cell.group, "cell_key": cell.key, "optimizer": cell.optimizer, "trunk_key": cell.trunk}
        for m in cell.members
    ]


def cell_from_rows(rows: Sequence[Run]) -> Cell:
    """Rebuild a cell (its members restricted to ``rows``) from stored run rows of one cell."""
    r = rows[0]
    c = r.config or {}
    shape = Shape(int(c["d_model"]), int(c["n_layers"]), int(c["n_heads"]), int(r.n_params),
                  float(c["flops_per_token"]))
    members = tuple(Member(float(x.lr or 0.0), int(x.seed or 0), x.name) for x in rows)
    return Cell(str(r.group_key), str(r.cell_key), shape, int(r.tokens), int(r.batch_size or 0),
                int(r.seq_len or 0), int(c["steps"]), int((r.tags or {}).get("round", 0)), members,
                r.optimizer, trunk=r.trunk_key, warmup_steps=c.get("warmup_steps"), branch_step=c.get("branch_step"))


def cells_from_rows(rows: Sequence[Run]) -> list[Cell]:
    """Rebuild the cells of stored run rows (of one cell, or of the budgets of one trunk),
    shortest first: the last is the trunk's own end."""
    by_cell: dict[str, list[Run]] = defaultdict(list)
    for r in rows:
        by_cell[str(r.cell_key)].append(r)
    return sorted((cell_from_rows(rs) for rs in by_cell.values()), key=lambda c: (c.steps, c.tokens))


def _canonical(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def open_sweep(db: Database, name: str) -> tuple[Sweep, SweepSpec]:
    """A stored sweep and its spec; ``SweepError`` when absent."""
    try:
        row = storage.get_sweep(db, name)
    except NotFoundError:
        raise SweepError(f"no sweep {name!r} in {db.safe_url}: `hpscale sweep run SPEC` plans it") from None
    return row, parse_spec(row.spec, f"stored spec of sweep {name!r}")


def open_queue(db: Database, spec: SweepSpec) -> RDBStorage:
    """Optuna's storage on this database, after hpscale's own schema (see ``sweeps.queue``).
    Optuna creates its tables on first open: under the schema lock, so that workers opening a
    new database together do not race there."""
    db.ensure_schema()
    with db.schema_lock():
        return queue.open_storage(db.url, spec.workers.heartbeat_s, spec.workers.grace_s)


def group_keys(db: Database, sweep_id: int) -> list[str]:
    """The groups of a sweep, in planning order."""
    rows = storage.list_runs(db, sweep_id=sweep_id)
    return list(dict.fromkeys(str(r.group_key) for r in rows))


def studies(db: Database, store: RDBStorage, sweep: Sweep, create: bool = False) -> dict[str, optuna.Study]:
    """Every group's study, by group key."""
    return {g: queue.load_study(store, queue.study_name(sweep.name, g), create=create)
            for g in group_keys(db, sweep.id)}


def store_plan(db: Database, plan: Plan) -> Sweep:
    """Store a plan: the sweep, its queued runs and their trials. Idempotent: planning the same
    spec again adds nothing, puts "failed" runs back in the queue and repairs lost trials;
    a different spec under a stored name is refused."""
    spec = plan.spec
    dumped = spec.model_dump(mode="json")
    try:
        sweep = storage.get_sweep(db, spec.name)
    except NotFoundError:
        try:
            sweep = storage.add_sweep(db, spec.name, dumped, code_version())
        except ConflictError:  # another planner stored it a moment ago
            sweep = storage.get_sweep(db, spec.name)
    # Compare as this code reads the stored spec: a field added since (with its default) is no change.
    try:
        stored = parse_spec(sweep.spec).model_dump(mode="json")
    except SweepError:
        stored = sweep.spec
    if _canonical(stored) != _canonical(dumped):
        changed = ", ".join(_changed_fields(stored, dumped))
        raise SweepError(f"sweep {spec.name!r} already exists with a different spec (changed: {changed}): "
                         "give the new spec another name")
    rows = [row for cell in plan.cells for row in run_rows(spec, cell)]
    _insert(db, sweep.id, rows)
    failed = [r.id for r in storage.list_runs(db, sweep_id=sweep.id, statuses=["failed"])]
    storage.release_sweep_runs(db, failed, statuses=["failed"], drop_tags=("attempts",))  # a fresh retry budget
    store = open_queue(db, spec)
    repair(db, store, sweep, studies(db, store, sweep, create=True))
    return storage.get_sweep(db, sweep.id)


def _failed_for_good(run: Run, spec: SweepSpec) -> bool:
    """Whether a failed run has spent its retries (the worker queues it again otherwise)."""
    return int((run.tags or {}).get("attempts", 0)) > spec.workers.retries


def _insert(db: Database, sweep_id: int, rows: list[dict[str, Any]]) -> int:
    try:
        return storage.add_sweep_runs(db, sweep_id, rows)
    except ConflictError:  # a concurrent planner inserted some of these names: theirs stand
        return storage.add_sweep_runs(db, sweep_id, rows)


def repair(db: Database, store: RDBStorage, sweep: Sweep, by_group: dict[str, optuna.Study]) -> int:
    """Enqueue a trial for every queued or running run that has no waiting or running trial
    (a crash between two steps of a hand-over can leave one so). Returns how many."""
    added = 0
    active = storage.list_runs(db, sweep_id=sweep.id, statuses=list(ACTIVE))
    by_study: dict[str, list[Run]] = defaultdict(list)
    for r in active:
        by_study[str(r.group_key)].append(r)
    for group, rows in by_study.items():
        study = by_group.get(group) or queue.load_study(store, queue.study_name(sweep.name, group), create=True)
        by_group[group] = study
        live = queue.live_runs(study)
        for r in rows:
            if r.name not in live:
                queue.enqueue_run(study, r.name, str(r.cell_key), group, float(r.lr or 0.0),
                                  int(r.batch_size or 0), int(r.seed or 0), trunk=r.trunk_key)
                added += 1
    return added


@dataclass(frozen=True)
class Refinement:
    """What one refinement call did to one group."""

    group: str
    round: int
    # "low"/"high": the lr grid's edge; "batch_low"/"batch_high" when only the batch was; "fill":
    # lrs the group searched elsewhere added at batch sizes that lacked them (``batches``).
    edge: str
    lrs: tuple[float, ...]
    runs_added: int
    batches: tuple[int, ...] = ()  # batch sizes (sequences) added beyond the batch grid's edge, or filled

    def describe(self) -> str:
        """One line for the worker's progress output."""
        lrs = ", ".join(f"{x:.3g}" for x in self.lrs)
        sizes = ", ".join(str(b) for b in self.batches)
        if self.edge == "fill":
            return f"refine {self.group}: batch {sizes} trained after the group was refined around it: adds lr {lrs}"
        what = [f"lr {lrs}"] if self.lrs else []
        what += [f"batch {sizes}"] if self.batches else []
        where = (f"best batch on the {self.edge.removeprefix('batch_')}" if self.edge.startswith("batch_")
                 else f"best lr on the {self.edge}")
        return f"refine {self.group}: {where} edge, round {self.round} adds {' and '.join(what)}"


def refine(db: Database, store: RDBStorage, sweep: Sweep, spec: SweepSpec,
           by_group: dict[str, optuna.Study]) -> list[Refinement]:
    """For every finished group (no run queued or running, none failed with retries left) whose
    best lr is on the grid's edge (and rounds remain), add ``spec.refine.points`` lrs beyond that
    edge at every batch size, as round r + 1; with
    ``spec.refine.batches``, a best batch on the batch grid's edge adds one batch size beyond it
    (half the smallest, twice the largest) at every lr the group has.

    Runs failed for good (their ``workers.retries`` spent: CUDA out of memory at one batch size,
    say) are holes in the grid. Waiting for them held the group's refinement back for good (each
    ``sweep run`` retried the cell, which failed again), so the group is judged on the runs that
    finished, unless its best batch size has failed runs (its lr edge could then never close):
    refinement adds no runs at a batch size with failed runs, and no batch size past one on the
    optimum's side. When a later ``sweep run`` trains the hole, the lrs the group searched
    meanwhile are added there first ("fill", whatever the rounds). (A batch size past it that the
    hole kept back stays out once the rounds are spent.) A group whose every run failed is not
    judged.

    Deterministic in the group's finished runs, so workers refining at once compute the same
    run names; the unique names make the second insert a no-op, and only the inserting worker
    enqueues (``repair`` covers it if it dies first).
    """
    done: list[Refinement] = []
    rows = storage.list_runs(db, sweep_id=sweep.id)
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in rows:
        groups[str(r.group_key)].append(r)
    for group, members in groups.items():
        # Runs still to train, or failed with retries left (between the failure and the worker
        # queueing them again, or a worker killed in between), will change the verdict: not yet.
        if any(r.status in ACTIVE or (r.status == "failed" and not _failed_for_good(r, spec)) for r in members):
            continue
        judged = [r for r in members if r.status in ("done", "diverged")]
        if not judged:  # every run failed: judged, it would read as all diverged and grow lower lrs
            continue
        rnd = max(int((r.tags or {}).get("round", 0)) for r in members)
        optimizer = members[0].optimizer  # a group is one optimizer's
        failed_batches = {int(r.batch_size or 0) for r in members if r.status == "failed"}
        cells_rows: dict[str, list[Run]] = defaultdict(list)
        for r in members:
            cells_rows[str(r.cell_key)].append(r)
        bases = [cell_from_rows(cell_rows) for cell_rows in cells_rows.values()]
        searched = sorted({round_lr(float(r.lr or 0)) for r in members})
        fill_rows = _fill(spec, bases, searched, failed_batches, rnd, optimizer)
        if fill_rows:
            added = _enqueue_rows(db, store, sweep, group, by_group, fill_rows)
            if added:
                done.append(Refinement(group, rnd, "fill", tuple(sorted({r["lr"] for r in fill_rows})), added,
                                       tuple(sorted({int(r["batch_size"]) for r in fill_rows}))))
            continue  # judged again once the filled runs have trained
        if rnd >= spec.refine.max_rounds:
            continue
        verdict = judge_group([float(r.lr or 0) for r in judged], [float(r.batch_size or 0) for r in judged],
                              [r.final_loss if r.status == "done" else None for r in judged])
        if verdict.best_batch is not None and int(verdict.best_batch) in failed_batches:
            continue  # the best batch size has a hole: wait for the next `sweep run` to retry it
        edge = verdict.lr_edge
        batch_edge = verdict.batch_edge if spec.refine.batches else None
        if edge is None and batch_edge is None:
            continue
        log_step = spec.lr_grid(optimizer).log_step()
        lrs = refinement_lrs(searched, edge, log_step, spec.refine.points) if edge else []
        new_rows = []
        if lrs:
            for base in bases:
                if base.batch_size in failed_batches:
                    continue
                new_rows += run_rows(spec, make_cell(spec, base.shape, base.tokens, base.batch_size, lrs, rnd + 1,
                                                     optimizer))
        new_batches: tuple[int, ...] = ()
        if batch_edge:
            sizes = sorted({b.batch_size for b in bases})
            batch = sizes[0] // 2 if batch_edge == "low" else sizes[-1] * 2
            # Not past a failed batch size on that side of the optimum: the new batch would skip
            # the hole (and out of memory at batch 8 awaits batch 16 too).
            best = int(verdict.best_batch or 0)
            beyond_failure = any(f < best if batch_edge == "low" else f > best for f in failed_batches)
            if batch >= 1 and batch not in sizes and not beyond_failure:
                new_batches = (batch,)
                base = next(b for b in bases if b.batch_size not in failed_batches)
                cell = make_cell(spec, base.shape, base.tokens, batch, sorted(set(searched) | set(lrs)), rnd + 1,
                                 optimizer)
                new_rows += run_rows(spec, cell)
        if not new_rows:
            continue
        added = _enqueue_rows(db, store, sweep, group, by_group, new_rows)
        done.append(Refinement(group, rnd + 1, edge or f"batch_{batch_edge}", tuple(lrs), added, new_batches))
    return done


def _fill(spec: SweepSpec, bases: list[Cell], searched: Sequence[float], failed_batches: set[int], rnd: int,
          optimizer: str) -> list[dict[str, Any]]:
    """Rows for the lrs of ``searched`` that a batch size without failed runs lacks (a hole that
    trained after its group was refined around it)."""
    rows: list[dict[str, Any]] = []
    for base in bases:
        if base.batch_size in failed_batches:
            continue
        have = {round_lr(m.lr) for m in base.members}
        missing = [lr for lr in searched if lr not in have]
        if missing:
            rows += run_rows(spec, make_cell(spec, base.shape, base.tokens, base.batch_size, missing, rnd, optimizer))
    return rows


def _enqueue_rows(db: Database, store: RDBStorage, sweep: Sweep, group: str, by_group: dict[str, optuna.Study],
                  rows: list[dict[str, Any]]) -> int:
    """Insert refinement rows and, if this call inserted them, queue their trials; how many were new."""
    added = _insert(db, sweep.id, rows)
    if added:
        study = by_group.get(group) or queue.load_study(store, queue.study_name(sweep.name, group), create=True)
        for row in rows:
            queue.enqueue_run(study, row["name"], row["cell_key"], group, row["lr"], int(row["batch_size"]),
                              row["seed"], trunk=row["trunk_key"])
    return added
