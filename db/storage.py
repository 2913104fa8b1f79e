"""The storage functions the rest of hpscale calls. The contract:

- Every function takes a ``Database`` and opens its own transaction (``Database.session``):
  a call either commits all it wrote or nothing, and driver errors come out as
  ``db.errors.StorageError`` subclasses.
- Runs are keyed by (source, name). ``add_runs`` is idempotent on that key: a run whose key is
  already stored is skipped, never duplicated or overwritten, also under concurrent writers.
- Losses handed in may be any float; non-finite ones are stored as a status plus NULL
  (``final_loss_status`` for runs, ``nonfinite`` for curve points), never as NaN.
- Functions return ORM objects detached from their session with their columns loaded
  (relationships are not loaded unless the function says so).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, literal, select, text, update

from hpscale.db.engine import Database
from hpscale.db.errors import ConflictError, NotFoundError
from hpscale.db.models import CurvePoint, Law, LawRun, Run, Sweep, utcnow

MAX_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL): a larger id names no row

RUN_COLUMNS = (
    "source", "name", "sweep_id", "n_params", "tokens", "lr", "batch_tokens", "batch_size", "seq_len",
    "schedule", "tags", "config", "status", "seed", "corpus_hash", "code_version", "spec", "finished_at",
    "group_key", "cell_key", "optimizer", "n_params_total", "trunk_key",
)


def loss_status(value: float | None) -> tuple[float | None, str]:
    """Split a loss into (finite value or None, status): "finite", "nan", "inf" or "missing"."""
    if value is None:
        return None, "missing"
    if math.isnan(value):
        return None, "nan"
    if math.isinf(value):
        return None, "inf"
    return float(value), "finite"


def finite_or_none(value: float | None) -> float | None:
    """A float if it is finite, else None (what a curve-point column may hold)."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class AddResult:
    """What ``add_runs`` did: how many runs it added and how many it skipped as present."""

    added: int
    skipped: int


def add_runs(db: Database, runs: Sequence[dict[str, Any]]) -> AddResult:
    """Store runs (dicts with Run column names, ``final_loss`` any float or None, and an
    optional ``curve``: a list of {step, tokens?, lr?, train_loss?, val_loss?}) in one
    transaction. Runs whose (source, name) is already stored are skipped, also when another
    client stores the same key at the same moment: the insert itself skips them (INSERT ... ON
    CONFLICT DO NOTHING on both backends), so concurrent re-sends never conflict. Bulk inserts."""
    if not runs:
        return AddResult(0, 0)
    with db.session() as s:  # known keys first: a re-sent batch writes nothing (no write lock taken)
        known: set[tuple[str, str]] = set()
        for source in sorted({r["source"] for r in runs}):
            known.update((source, n) for n in s.execute(select(Run.name).where(Run.source == source)).scalars())
    fresh = [r for r in runs if (r["source"], r["name"]) not in known]
    if not fresh:
        return AddResult(0, len(runs))
    now = utcnow()
    rows = []
    for r in fresh:
        row = {c: r.get(c) for c in RUN_COLUMNS}
        row["status"] = row["status"] or "done"
        row["optimizer"] = row["optimizer"] or "adamw"
        row["code_version"] = row["code_version"] or "import"
        row["final_loss"], row["final_loss_status"] = loss_status(r.get("final_loss"))
        row["created_at"] = now
        rows.append(row)
    with db.session() as s:
        stmt = _insert_skipping_known(db, Run, ("source", "name"))
        # RETURNING names the rows this statement inserted: the ones a curve belongs to.
        added = s.execute(stmt.returning(Run.id, Run.source, Run.name), rows).all()
        ids = {(src, name): rid for rid, src, name in added}
        points = [
            _point_row(ids[(r["source"], r["name"])], p)
            for r in fresh if r.get("curve") and (r["source"], r["name"]) in ids for p in r["curve"]
        ]
        if points:
            s.execute(insert(CurvePoint), points)
        return AddResult(len(ids), len(runs) - len(ids))


def _insert_skipping_known(db: Database, table: type[Any], key: tuple[str, ...]) -> Any:
    """``INSERT INTO table ... ON CONFLICT (key) DO NOTHING`` in the database's dialect."""
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=list(key))


def _point_row(run_id: int, p: dict[str, Any]) -> dict[str, Any]:
    losses = [p.get("train_loss"), p.get("val_loss")]
    return {
        "run_id": run_id,
        "step": int(p["step"]),
        "tokens": p.get("tokens"),
        "lr": p.get("lr"),
        "train_loss": finite_or_none(losses[0]),
        "val_loss": finite_or_none(losses[1]),
        "nonfinite": any(v is not None and not math.isfinite(v) for v in losses),
    }


def add_curve_points(db: Database, run_id: int, points: Iterable[dict[str, Any]]) -> int:
    """Append curve points to a run (as training goes); returns how many were written."""
    rows = [_point_row(run_id, p) for p in points]
    if rows:
        with db.session() as s:
            s.execute(insert(CurvePoint), rows)
    return len(rows)


def list_runs(
    db: Database,
    *,
    sources: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    sweep_id: int | None = None,
    statuses: Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Run]:
    """Runs, filtered, ordered by (source, id)."""
    q = select(Run).order_by(Run.source, Run.id)
    if sources:
        q = q.where(Run.source.in_(list(sources)))
    if names:
        q = q.where(Run.name.in_(list(names)))
    if sweep_id is not None:
        q = q.where(Run.sweep_id == sweep_id)
    if statuses:
        q = q.where(Run.status.in_(list(statuses)))
    if offset:
        q = q.offset(offset)
    if limit is not None:
        q = q.limit(limit)
    with db.session() as s:
        return list(s.execute(q).scalars())


def count_runs(db: Database, *, sources: Sequence[str] | None = None) -> int:
    """How many runs are stored (optionally only from some sources)."""
    q = select(func.count()).select_from(Run)
    if sources:
        q = q.where(Run.source.in_(list(sources)))
    with db.session() as s:
        return int(s.execute(q).scalar_one())


def run_sources(db: Database) -> list[tuple[str, int]]:
    """Every run source with its run count, by name."""
    with db.session() as s:
        return [(a, int(b)) for a, b in s.execute(select(Run.source, func.count()).group_by(Run.source).order_by(Run.source))]


def get_run(db: Database, run_id: int) -> Run:
    """One run by id; ``NotFoundError`` if absent."""
    with db.session() as s:
        run = s.get(Run, run_id) if 0 < run_id <= MAX_ID else None
        if run is None:
            raise NotFoundError(f"no run with id {run_id}")
        return run


def get_curves(db: Database, run_ids: Sequence[int]) -> dict[int, list[CurvePoint]]:
    """The curve points of several runs, by run id, each ordered by step."""
    out: dict[int, list[CurvePoint]] = {i: [] for i in run_ids}
    if not run_ids:
        return out
    with db.session() as s:
        q = select(CurvePoint).where(CurvePoint.run_id.in_(list(run_ids))).order_by(CurvePoint.run_id, CurvePoint.step)
        for p in s.execute(q).scalars():
            out[p.run_id].append(p)
    return out


def get_curve(db: Database, run_id: int) -> list[CurvePoint]:
    """One run's curve points ordered by step; ``NotFoundError`` if the run is absent."""
    get_run(db, run_id)
    return get_curves(db, [run_id])[run_id]


@dataclass(frozen=True)
class DeleteResult:
    """What ``delete_runs`` deleted (or, dry, would delete): runs by source, and the fitted laws
    that had used them as (id, name)."""

    runs: dict[str, int]
    laws: list[tuple[int, str]]


def delete_runs(db: Database, *, sources: Sequence[str] | None = None, names: Sequence[str] | None = None,
                with_laws: bool = False, dry_run: bool = False) -> DeleteResult:
    """Delete the runs of ``sources`` (all of each) and/or of ``names`` (within ``sources`` when
    given), with their curves, in one transaction: all of them or, on any refusal, none.

    Refused: a source or name that matches no run (``NotFoundError``); a run of a sweep (the
    sweep owns it; ``ConflictError``); a run a fitted law used, unless ``with_laws``, which
    deletes those laws too (``ConflictError`` naming the laws): a law never silently loses runs.
    The selected runs are locked first (PostgreSQL: FOR UPDATE, so a fit linking one of them
    waits and then fails; SQLite: the database's write lock), so the checks hold until commit.
    ``dry_run`` checks and reports without deleting."""
    if not sources and not names:
        raise ValueError("delete_runs needs sources and/or names")
    where = []
    if sources:
        where.append(Run.source.in_(list(sources)))
    if names:
        where.append(Run.name.in_(list(names)))
    with db.session() as s:
        if db.engine.dialect.name == "sqlite":
            s.execute(text("BEGIN IMMEDIATE"))  # the write lock now, not at the first DELETE
        rows = s.execute(select(Run.id, Run.source, Run.name, Run.sweep_id).where(*where)
                         .order_by(Run.id).with_for_update()).all()
        missing = sorted(set(sources or ()) - {r.source for r in rows})
        if missing:
            raise NotFoundError(f"no runs in source {', '.join(repr(m) for m in missing[:5])}")
        missing = sorted(set(names or ()) - {r.name for r in rows})
        if missing:
            within = f" in source {', '.join(repr(x) for x in sources)}" if sources else ""
            raise NotFoundError(f"no run named {', '.join(repr(m) for m in missing[:5])}{within}")
        in_sweeps = sorted({r.source for r in rows if r.sweep_id is not None})
        if in_sweeps:
            raise ConflictError(
                f"runs of sweep {', '.join(repr(x) for x in in_sweeps[:5])} belong to the sweep: sweep runs are not "
                "deleted one by one (delete imported runs only)")
        ids = [r.id for r in rows]
        law_ids: set[int] = set()
        for part in _chunks(ids):
            law_ids.update(s.execute(select(LawRun.law_id).where(LawRun.run_id.in_(part))).scalars())
        laws = [(int(i), n) for i, n in s.execute(
            select(Law.id, Law.name).where(Law.id.in_(sorted(law_ids))).order_by(Law.id)).all()] if law_ids else []
        if laws and not with_laws:
            shown = ", ".join(f"#{i} {n!r}" for i, n in laws[:5]) + (f" and {len(laws) - 5} more" if len(laws) > 5 else "")
            raise ConflictError(
                f"{len(laws)} fitted law{'s' if len(laws) > 1 else ''} used these runs ({shown}): deleting the runs "
                "would leave them without their data; force the delete to remove those laws too")
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.source] = counts.get(r.source, 0) + 1
        if not dry_run:
            if laws:
                s.execute(delete(Law).where(Law.id.in_([i for i, _ in laws])))
            # Explicit, not left to ON DELETE CASCADE: correct whatever the connection's foreign-key setting.
            for part in _chunks(ids):
                s.execute(delete(LawRun).where(LawRun.run_id.in_(part)))
                s.execute(delete(CurvePoint).where(CurvePoint.run_id.in_(part)))
                s.execute(delete(Run).where(Run.id.in_(part)))
        return DeleteResult(runs=counts, laws=laws)


def _chunks(ids: Sequence[int], size: int = 10_000) -> Iterable[Sequence[int]]:
    """``ids`` in slices that stay under SQLite's and psycopg's limits on bound parameters."""
    return (ids[i:i + size] for i in range(0, len(ids), size))


# -- laws ------------------------------------------------------------------------------------
def add_law(db: Database, law: dict[str, Any], run_ids: Sequence[int] = ()) -> Law:
    """Store a law (dict with Law column names) and the ids of the runs it was fitted on."""
    with db.session() as s:
        row = Law(**law)
        s.add(row)
        s.flush()
        if run_ids:
            s.execute(insert(LawRun), [{"law_id": row.id, "run_id": int(i)} for i in sorted(set(run_ids))])
        return row


def upsert_published_law(db: Database, law: dict[str, Any]) -> Law:
    """Insert a published law by name, or refresh its record if the code's version changed.
    Safe against another process inserting the same law at the same moment (every command
    opening a new database does this): the loser of that race updates the winner's row."""
    try:
        return _upsert_law(db, law)
    except ConflictError:
        return _upsert_law(db, law)  # inserted by another process since our select: now an update


def _upsert_law(db: Database, law: dict[str, Any]) -> Law:
    with db.session() as s:
        row = s.execute(select(Law).where(Law.name == law["name"])).scalar_one_or_none()
        if row is None:
            row = Law(**law)
            s.add(row)
        else:
            for key, value in law.items():
                setattr(row, key, value)
        s.flush()
        return row


def list_laws(db: Database, *, kind: str | None = None, origin: str | None = None) -> list[Law]:
    """Laws ordered by id (published laws first, as they are stored on first use)."""
    q = select(Law).order_by(Law.id)
    if kind:
        q = q.where(Law.kind == kind)
    if origin:
        q = q.where(Law.origin == origin)
    with db.session() as s:
        return list(s.execute(q).scalars())


def get_law(db: Database, law_id: int | str) -> Law:
    """One law by id or by name; ``NotFoundError`` if absent."""
    with db.session() as s:
        # isdecimal, not isdigit: "¹" is a digit that int() refuses.
        if isinstance(law_id, int) or (isinstance(law_id, str) and law_id.isdecimal()):
            row = s.get(Law, int(law_id)) if 0 < int(law_id) <= MAX_ID else None
        else:
            row = s.execute(select(Law).where(Law.name == law_id)).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"no law {law_id!r} (see `hpscale laws list`)")
        return row


def law_run_ids(db: Database, law_id: int) -> list[int]:
    """The ids of the runs a fitted law used."""
    with db.session() as s:
        return list(s.execute(select(LawRun.run_id).where(LawRun.law_id == law_id).order_by(LawRun.run_id)).scalars())


def delete_law(db: Database, law_id: int) -> None:
    """Remove a law (and its run links)."""
    with db.session() as s:
        result = s.execute(delete(Law).where(Law.id == law_id))
        if result.rowcount == 0:
            raise NotFoundError(f"no law with id {law_id}")


# -- sweeps ----------------------------------------------------------------------------------
def add_sweep(db: Database, name: str, spec: dict[str, Any], code_version: str, corpus_hash: str | None = None) -> Sweep:
    """Store a new sweep."""
    with db.session() as s:
        row = Sweep(name=name, spec=spec, code_version=code_version, corpus_hash=corpus_hash)
        s.add(row)
        s.flush()
        return row


def get_sweep(db: Database, sweep_id: int | str) -> Sweep:
    """One sweep by id or by name; ``NotFoundError`` if absent."""
    with db.session() as s:
        if isinstance(sweep_id, int) or str(sweep_id).isdecimal():
            row = s.get(Sweep, int(sweep_id)) if 0 < int(sweep_id) <= MAX_ID else None
        else:
            row = s.execute(select(Sweep).where(Sweep.name == sweep_id)).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"no sweep {sweep_id!r} (see `hpscale sweep status`)")
        return row


def list_sweeps(db: Database) -> list[Sweep]:
    """All sweeps ordered by id."""
    with db.session() as s:
        return list(s.execute(select(Sweep).order_by(Sweep.id)).scalars())


def get_runs(db: Database, run_ids: Sequence[int]) -> list[Run]:
    """Several runs by id, ordered by id; ids that do not exist are left out."""
    if not run_ids:
        return []
    with db.session() as s:
        return list(s.execute(select(Run).where(Run.id.in_(sorted(set(run_ids)))).order_by(Run.id)).scalars())


def sweep_run_counts(db: Database) -> dict[int, dict[str, int]]:
    """Per sweep id, how many of its runs are in each status (a sweep's progress)."""
    out: dict[int, dict[str, int]] = {}
    with db.session() as s:
        q = select(Run.sweep_id, Run.status, func.count()).where(Run.sweep_id.is_not(None)).group_by(Run.sweep_id, Run.status)
        for sweep_id, status, n in s.execute(q):
            out.setdefault(int(sweep_id), {})[status] = int(n)
    return out


# -- sweep engine ----------------------------------------------------------------------------
# A sweep run's row is its idempotency key: (source = sweep name, name = run name) is unique,
# and ``trial_id`` names the Optuna trial that owns the row now. Ownership moves only by a
# compare-and-set on ``trial_id`` (``claim_sweep_run``), so two trials that carry the same run
# (a retry racing a repair) can never both train it.
SWEEP_RUN_COLUMNS = RUN_COLUMNS


def add_sweep_runs(db: Database, sweep_id: int, runs: Sequence[dict[str, Any]]) -> int:
    """Insert queued sweep runs (dicts with Run column names), skipping names already stored
    for this sweep. Returns how many were added. Two planners racing on one name: the loser's
    transaction fails with ``ConflictError`` and may simply call again."""
    if not runs:
        return 0
    with db.session() as s:
        have = set(s.execute(select(Run.name).where(Run.sweep_id == sweep_id)).scalars())
        now = utcnow()
        rows = []
        for r in runs:
            if r["name"] in have:
                continue
            have.add(r["name"])
            row = {c: r.get(c) for c in SWEEP_RUN_COLUMNS}
            row.update(sweep_id=sweep_id, status="queued", final_loss=None, final_loss_status="missing",
                       created_at=now, optimizer=row["optimizer"] or "adamw")
            rows.append(row)
        if rows:
            s.execute(insert(Run), rows)
        return len(rows)


def update_sweep(db: Database, sweep_id: int, **fields: Any) -> Sweep:
    """Set columns of a sweep (``corpus_hash``, say)."""
    with db.session() as s:
        row = s.get(Sweep, sweep_id)
        if row is None:
            raise NotFoundError(f"no sweep with id {sweep_id}")
        for key, value in fields.items():
            setattr(row, key, value)
        s.flush()
        return row


def claim_sweep_run(db: Database, run_id: int, trial_id: int, expected_trial_id: int | None, worker: str) -> bool:
    """Make ``trial_id`` the owner of a queued or running run whose owner is still
    ``expected_trial_id``; on success the run is "running" and the points of any earlier attempt
    are deleted (a retried run starts its curve afresh). False when another trial got there first
    or the run is finished."""
    now = utcnow()
    owner = Run.trial_id.is_(None) if expected_trial_id is None else Run.trial_id == expected_trial_id
    with db.session() as s:
        result = s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status.in_(("queued", "running")), owner)
            .values(status="running", trial_id=trial_id, worker=worker, started_at=now, heartbeat_at=now,
                    final_loss=None, final_loss_status="missing", finished_at=None)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        s.execute(delete(CurvePoint).where(CurvePoint.run_id == run_id))
        return True


def add_owned_curve_points(db: Database,
                           writes: Sequence[tuple[int, int, Sequence[dict[str, Any]]]]) -> list[int]:
    """Append curve points to sweep runs, each only while its trial owns it (status "running"):
    a worker that stalled past the grace period and lost its run must not write into the curve
    of the run's new owner. ``writes`` holds (run_id, trial_id, points) triples, all written in
    ONE transaction (a fused cell's K members at an evaluation: one commit, not K); returns how
    many points were written for each, in order (0 where the trial is not the owner)."""
    written = [0] * len(writes)
    todo = [(i, run_id, trial_id, [_point_row(run_id, p) for p in points])
            for i, (run_id, trial_id, points) in enumerate(writes)]
    todo = [t for t in todo if t[3]]
    if not todo:
        return written
    cols = CurvePoint.__table__.c
    with db.session() as s:
        for i, run_id, trial_id, rows in sorted(todo, key=lambda t: t[1]):  # lock rows in id order: no deadlock
            owned = select(Run.id).where(Run.id == run_id, Run.trial_id == trial_id, Run.status == "running")
            # PostgreSQL: a share lock on the run row makes a concurrent take-over wait for this
            # transaction (and then delete these points). SQLite ignores it, but there each
            # INSERT ... SELECT WHERE EXISTS below is atomic (one writer at a time).
            if s.execute(owned.with_for_update(read=True)).first() is None:
                continue
            for row in rows:
                values = select(*[literal(v, type_=cols[k].type) for k, v in row.items()]).where(owned.exists())
                # RETURNING counts what was written (psycopg reports no rowcount for INSERT ... SELECT).
                written[i] += len(s.execute(insert(CurvePoint).from_select(list(row), values)
                                            .returning(CurvePoint.id)).all())
    return written


def beat_sweep_runs(db: Database, run_ids: Sequence[int]) -> None:
    """Record that the worker training these runs is alive (``heartbeat_at`` = now)."""
    if run_ids:
        with db.session() as s:
            # Lock the rows in id order first, the order ``add_owned_curve_points`` locks them in:
            # a plain UPDATE locks in heap order, which updates shuffle, and PostgreSQL then
            # found a beat and an evaluation's write waiting for each other (a deadlock) once a
            # job held 12 runs (a trunk's budgets). SQLite takes no row locks.
            live = Run.id.in_(list(run_ids)) & (Run.status == "running")
            ids = list(s.execute(select(Run.id).where(live).order_by(Run.id).with_for_update(key_share=True)).scalars())
            if ids:
                s.execute(update(Run).where(Run.id.in_(ids), Run.status == "running")
                          .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))


def finish_sweep_run(db: Database, run_id: int, trial_id: int, status: str, final_loss: float | None,
                     **fields: Any) -> bool:
    """Store a run's outcome ("done", "diverged" or "failed") if ``trial_id`` still owns it.
    ``fields`` sets more columns (config, corpus_hash, code_version). Returns False when the run
    was taken over meanwhile (its result then belongs to the new owner)."""
    value, loss_state = loss_status(final_loss)
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id == run_id, Run.trial_id == trial_id, Run.status == "running")
            .values(status=status, final_loss=value, final_loss_status=loss_state, finished_at=utcnow(), **fields)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def release_sweep_runs(db: Database, run_ids: Sequence[int], statuses: Sequence[str] = ("running",),
                       drop_tags: Sequence[str] = ()) -> int:
    """Put runs back in the queue ("queued", no points): after Ctrl-C, or to retry "failed" runs;
    ``drop_tags`` names tags the released runs lose (a new ``sweep run`` resets the count of
    failed attempts, "attempts")."""
    if not run_ids:
        return 0
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id.in_(list(run_ids)), Run.status.in_(list(statuses)))
            .values(status="queued", worker=None, started_at=None, heartbeat_at=None, final_loss=None,
                    final_loss_status="missing", finished_at=None)
            .execution_options(synchronize_session=False)
        )
        s.execute(delete(CurvePoint).where(CurvePoint.run_id.in_(list(run_ids))))
        if drop_tags:
            for run in s.scalars(select(Run).where(Run.id.in_(list(run_ids)), Run.status == "queued")):
                if run.tags and any(t in run.tags for t in drop_tags):
                    run.tags = {k: v for k, v in run.tags.items() if k not in drop_tags}
        return int(result.rowcount)


def law_stamp(db: Database) -> tuple[int, int]:
    """(how many laws, largest law id): changes whenever a law is added or deleted, so a
    reader can keep resolved laws until it does (one cheap query instead of several)."""
    with db.session() as s:
        count, top = s.execute(select(func.count(), func.max(Law.id)).select_from(Law)).one()
        return int(count), int(top or 0)
