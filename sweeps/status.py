"""A sweep's progress, per group: run counts by status, the best run so far, and whether the
group's optimum is bracketed by its lr grid. Reads the runs table only (no Optuna, no torch)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.models import Run, Sweep, utcnow
from hpscale.sweeps.plan import group_key, judge_group
from hpscale.sweeps.spec import SpecError, WorkersSpec, parse_spec

STATUSES = ("done", "diverged", "running", "queued", "failed")
SWEEP_STATES = ("planned", "running", "partial", "finished")


def sweep_state(counts: dict[str, int]) -> str:
    """A sweep's state from its runs' counts by status (see ``SWEEP_STATES``).

    "finished": nothing queued or running; "running": a worker holds runs now; "planned": nothing
    has been trained yet; "partial": some runs finished and the rest wait for a worker (a sweep
    stopped with Ctrl-C, say). Derived, never stored, so that it cannot go stale.
    """
    if not (counts.get("queued", 0) or counts.get("running", 0)):
        return "finished"
    if counts.get("running", 0):
        return "running"
    return "partial" if any(counts.get(s, 0) for s in ("done", "diverged", "failed")) else "planned"


@dataclass(frozen=True)
class GroupStatus:
    """One (optimizer, N, D) group. Losses in nats/token, batch in sequences; ``stale`` counts running runs
    whose worker has not beaten for the grace period (they return to the queue soon)."""

    group: str
    optimizer: str
    n_params: float
    tokens: float
    counts: dict[str, int]
    stale: int
    rounds: int  # refinement rounds so far
    best_lr: float | None
    best_batch_size: int | None
    best_loss: float | None
    bracketed: bool | None  # None until every run of the group has finished
    edges: list[str]


@dataclass(frozen=True)
class SweepStatus:
    """A whole sweep."""

    id: int
    name: str
    created_at: str
    corpus_hash: str | None
    counts: dict[str, int]
    groups: list[GroupStatus]
    # Why runs failed: one entry per distinct error, {"error", "runs", "cells"}, most runs first
    # (a failed run's cell raised in every attempt ``workers.retries`` allowed).
    failures: list[dict[str, object]]

    @property
    def state(self) -> str:
        return sweep_state(self.counts)

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "state": self.state, "finished": self.finished}


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes for what was written in UTC.
    return t.replace(tzinfo=dt.timezone.utc) if t is not None and t.tzinfo is None else t


def group_status(group: str, rows: list[Run], grace_s: int, now: dt.datetime) -> GroupStatus:
    """The status of one group from its run rows."""
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    stale = sum(1 for r in rows if r.status == "running" and r.heartbeat_at is not None
                and (now - _aware(r.heartbeat_at)).total_seconds() > grace_s)  # type: ignore[operator]
    judged = [r for r in rows if r.status in ("done", "diverged")]
    verdict = judge_group([float(r.lr or 0) for r in judged], [float(r.batch_size or 0) for r in judged],
                          [r.final_loss if r.status == "done" else None for r in judged])
    finished = not (counts["queued"] or counts["running"])
    return GroupStatus(
        group=group, optimizer=rows[0].optimizer, n_params=rows[0].n_params, tokens=rows[0].tokens, counts=counts, stale=stale,
        rounds=max(int((r.tags or {}).get("round", 0)) for r in rows),
        best_lr=verdict.best_lr, best_batch_size=verdict.best_batch, best_loss=verdict.best_loss,
        bracketed=(verdict.lr_edge is None) if finished else None, edges=list(verdict.edges),
    )


def sweep_status(db: Database, sweep: Sweep) -> SweepStatus:
    """Progress of one sweep, groups in planning order."""
    rows = storage.list_runs(db, sweep_id=sweep.id)
    by_group: dict[str, list[Run]] = defaultdict(list)
    for r in rows:
        # Sweeps stored by other means (an import, the demo) have no group keys: group by (optimizer, N, D).
        by_group[r.group_key or group_key(int(r.n_params), int(r.tokens), r.optimizer)].append(r)
    try:
        grace = parse_spec(sweep.spec).workers.grace_s
    except SpecError:  # not a spec this engine wrote: its runs are shown, its liveness is not judged
        grace = WorkersSpec().grace_s
    now = utcnow()
    groups = [group_status(g, rs, grace, now) for g, rs in by_group.items()]
    counts = {s: sum(g.counts[s] for g in groups) for s in STATUSES}
    return SweepStatus(sweep.id, sweep.name, sweep.created_at.isoformat(), sweep.corpus_hash, counts, groups,
                       failures(rows))


def failures(rows: list[Run]) -> list[dict[str, object]]:
    """The failed runs' errors (their ``error`` tag), each with how many runs and which cells."""
    by_error: dict[str, list[Run]] = defaultdict(list)
    for r in rows:
        if r.status == "failed":
            by_error[str((r.tags or {}).get("error") or "no error recorded")].append(r)
    return [{"error": error, "runs": len(rs), "cells": sorted({str(r.cell_key or r.name) for r in rs})}
            for error, rs in sorted(by_error.items(), key=lambda item: (-len(item[1]), item[0]))]
