"""The storage contract (db/storage.py docstring), run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import math

import pytest

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.db.errors import ConflictError, NotFoundError


def run(name: str, loss: float | None = 3.0, source: str = "s", **extra) -> dict:
    base = {"source": source, "name": name, "n_params": 1e6, "tokens": 2e7, "lr": 1e-3,
            "batch_tokens": 65536.0, "final_loss": loss}
    base.update(extra)
    return base


def test_add_runs_is_idempotent_on_source_and_name(db: Database) -> None:
    first = storage.add_runs(db, [run("a"), run("b")])
    again = storage.add_runs(db, [run("a"), run("b"), run("c")])
    assert (first.added, first.skipped) == (2, 0)
    assert (again.added, again.skipped) == (1, 2)
    assert [r.name for r in storage.list_runs(db)] == ["a", "b", "c"]
    # The same name in another source is another run.
    storage.add_runs(db, [run("a", source="t")])
    assert storage.count_runs(db) == 4
    assert storage.run_sources(db) == [("s", 3), ("t", 1)]


def test_existing_run_is_never_overwritten(db: Database) -> None:
    storage.add_runs(db, [run("a", loss=3.0)])
    storage.add_runs(db, [run("a", loss=9.0)])
    assert storage.list_runs(db)[0].final_loss == 3.0


def test_non_finite_losses_are_a_status_never_nan(db: Database) -> None:
    storage.add_runs(db, [
        run("nan", loss=float("nan"), status="diverged"),
        run("inf", loss=float("inf"), status="diverged"),
        run("none", loss=None, status="diverged"),
        run("ok", loss=2.5),
    ])
    by_name = {r.name: r for r in storage.list_runs(db)}
    assert (by_name["nan"].final_loss, by_name["nan"].final_loss_status) == (None, "nan")
    assert (by_name["inf"].final_loss, by_name["inf"].final_loss_status) == (None, "inf")
    assert (by_name["none"].final_loss, by_name["none"].final_loss_status) == (None, "missing")
    assert (by_name["ok"].final_loss, by_name["ok"].final_loss_status) == (2.5, "finite")


def test_curves_round_trip_and_mark_non_finite_points(db: Database) -> None:
    curve = [{"step": 10, "lr": 1e-3, "val_loss": 4.0, "tokens": 1e5},
             {"step": 20, "lr": 1e-3, "val_loss": float("nan")},
             {"step": 0, "lr": 0.0, "val_loss": 5.0}]
    storage.add_runs(db, [run("a", curve=curve)])
    rid = storage.list_runs(db)[0].id
    storage.add_curve_points(db, rid, [{"step": 30, "train_loss": 3.5, "val_loss": 3.9}])
    points = storage.get_curve(db, rid)
    assert [p.step for p in points] == [0, 10, 20, 30]
    assert [p.nonfinite for p in points] == [False, False, True, False]
    assert points[2].val_loss is None and points[1].val_loss == 4.0 and points[3].train_loss == 3.5


def test_failed_batch_writes_nothing(db: Database) -> None:
    # A curve point repeating a step breaks a unique constraint: the whole call must roll back.
    bad = run("b", curve=[{"step": 1, "val_loss": 3.0}, {"step": 1, "val_loss": 3.0}])
    with pytest.raises(ConflictError):
        storage.add_runs(db, [run("a"), bad])
    assert storage.count_runs(db) == 0


def test_filters_and_lookups(db: Database) -> None:
    storage.add_runs(db, [run("a"), run("b", status="diverged", loss=None), run("c", source="t")])
    assert [r.name for r in storage.list_runs(db, sources=["t"])] == ["c"]
    assert [r.name for r in storage.list_runs(db, statuses=["diverged"])] == ["b"]
    assert [r.name for r in storage.list_runs(db, names=["a", "c"])] == ["a", "c"]
    assert [r.name for r in storage.list_runs(db, limit=1, offset=1)] == ["b"]
    with pytest.raises(NotFoundError):
        storage.get_run(db, 10_000)
    with pytest.raises(NotFoundError):
        storage.get_curve(db, 10_000)


def test_laws_keep_their_record_and_runs(db: Database) -> None:
    storage.add_runs(db, [run("a"), run("b")])
    ids = [r.id for r in storage.list_runs(db)]
    record = {"kind": "hyper", "form": "steplaw", "coefficients": {"a_lr": 1.0, "x": math.pi}}
    law = storage.add_law(db, {"name": "fit-1", "kind": "hyper", "form": "steplaw", "origin": "fitted",
                               "title": "t", "source": "s", "record": record, "code_version": "x"}, ids)
    assert storage.get_law(db, law.id).record == record
    assert storage.get_law(db, "fit-1").id == law.id
    assert storage.law_run_ids(db, law.id) == sorted(ids)
    assert [x.name for x in storage.list_laws(db, kind="hyper")] == ["fit-1"]
    with pytest.raises(NotFoundError):
        storage.get_law(db, "nope")
    storage.delete_law(db, law.id)
    assert storage.list_laws(db) == []


def test_published_law_upsert_refreshes_in_place(db: Database) -> None:
    row = {"name": "pub", "kind": "hyper", "form": "steplaw", "origin": "published", "title": "t",
           "source": "s", "record": {"v": 1}, "code_version": "1"}
    first = storage.upsert_published_law(db, row)
    second = storage.upsert_published_law(db, {**row, "record": {"v": 2}})
    assert first.id == second.id
    assert storage.get_law(db, "pub").record == {"v": 2}


def test_sweeps(db: Database) -> None:
    sweep = storage.add_sweep(db, "sw", {"a": 1}, code_version="x")
    assert storage.get_sweep(db, "sw").id == sweep.id
    assert storage.get_sweep(db, sweep.id).spec == {"a": 1}
    assert [s.name for s in storage.list_sweeps(db)] == ["sw"]
    with pytest.raises(ConflictError):
        storage.add_sweep(db, "sw", {}, code_version="x")
    with pytest.raises(NotFoundError):
        storage.get_sweep(db, "other")


def test_concurrent_resends_of_one_run_are_skipped_not_refused(any_db_url: str) -> None:
    # 8 clients send the same batch at once (each with its own connection pool, as separate
    # processes would), and 8 more send it mixed with a run of their own: every key is stored
    # once, every re-send is counted as skipped, and no mixed batch loses its new run.
    import threading

    shared = [run(f"shared-{i}", curve=[{"step": 1, "val_loss": 4.0}]) for i in range(20)]
    clients = [Database(any_db_url) for _ in range(16)]
    for c in clients:  # connected and checked before the race starts
        c.ensure_schema()
        storage.count_runs(c)
    barrier = threading.Barrier(len(clients))
    results: list[storage.AddResult] = []
    errors: list[BaseException] = []

    def send(i: int) -> None:
        batch = shared if i < 8 else [*shared, run(f"own-{i}", curve=[{"step": 1, "val_loss": 3.0}])]
        try:
            barrier.wait()
            results.append(storage.add_runs(clients[i], batch))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.dispose()
    assert errors == []
    db = Database(any_db_url)
    assert sum(r.added for r in results) == 20 + 8
    assert sum(r.skipped for r in results) == 16 * 20 - 20
    names = [r.name for r in storage.list_runs(db)]
    assert sorted(names) == sorted({*(f"shared-{i}" for i in range(20)), *(f"own-{i}" for i in range(8, 16))})
    curves = storage.get_curves(db, [r.id for r in storage.list_runs(db)])
    assert all(len(points) == 1 for points in curves.values())
    db.dispose()


def _law(db: Database, name: str, run_ids: list[int]) -> int:
    return storage.add_law(db, {"name": name, "kind": "loss", "form": "chinchilla", "origin": "fitted", "title": "t",
                                "source": "s", "record": {}, "code_version": "t"}, run_ids).id


def test_delete_runs_is_all_or_nothing(db: Database) -> None:
    storage.add_runs(db, [run("a", curve=[{"step": 1, "val_loss": 4.0}]), run("b"), run("c"), run("x", source="t")])
    ids = {r.name: r.id for r in storage.list_runs(db)}
    law_id = _law(db, "fit-on-b", [ids["b"], ids["x"]])
    sweep = storage.add_sweep(db, "sw", {}, code_version="t")
    storage.add_sweep_runs(db, sweep.id, [{"source": "sw", "name": "q", "n_params": 1e6, "tokens": 1e7, "code_version": "t"}])

    def unchanged() -> None:
        assert storage.count_runs(db) == 5 and [law.id for law in storage.list_laws(db)] == [law_id]

    with pytest.raises(NotFoundError, match="'nope'"):  # one unknown name refuses the rest
        storage.delete_runs(db, sources=["s"], names=["a", "nope"])
    with pytest.raises(NotFoundError, match="source 'u'"):
        storage.delete_runs(db, sources=["s", "u"])
    with pytest.raises(ConflictError, match="sweep 'sw'"):
        storage.delete_runs(db, sources=["sw"])
    with pytest.raises(ConflictError, match="#%d 'fit-on-b'" % law_id):  # a law never silently loses runs
        storage.delete_runs(db, sources=["s"])
    unchanged()
    assert storage.delete_runs(db, sources=["s"], dry_run=True, with_laws=True).laws == [(law_id, "fit-on-b")]
    unchanged()

    done = storage.delete_runs(db, sources=["s"], names=["a", "c"])
    assert (done.runs, done.laws) == ({"s": 2}, [])
    assert storage.get_curves(db, [ids["a"]]) == {ids["a"]: []}
    done = storage.delete_runs(db, names=["b"], with_laws=True)
    assert (done.runs, done.laws) == ({"s": 1}, [(law_id, "fit-on-b")])
    assert storage.list_laws(db) == [] and sorted(r.name for r in storage.list_runs(db)) == ["q", "x"]


def test_heartbeats_and_curve_writes_of_many_runs_never_deadlock(db: Database) -> None:
    # A worker's heartbeat thread beats every run of its job while the training thread writes an
    # evaluation's points into all of them, each in its own transaction. On PostgreSQL both must
    # lock the run rows in one order: a trunk's job (12 runs) deadlocked there otherwise.
    import os
    import random
    import threading

    sweep = storage.add_sweep(db, "sw", {}, code_version="x")
    # Rows as large as a sweep's (each carries its spec, ~1.5 kB: below PostgreSQL's TOAST
    # threshold, so it stays in the row): an update then moves a row to another page.
    storage.add_sweep_runs(db, sweep.id, [run(f"r{i}", code_version="x", spec={"pad": os.urandom(750).hex()})
                                          for i in range(24)])
    rows = storage.list_runs(db, sweep_id=sweep.id)
    for i, r in enumerate(rows):
        assert storage.claim_sweep_run(db, r.id, 1000 + i, None, "w")
        storage.beat_sweep_runs(db, [r.id])  # rows updated in some order: the heap order is shuffled
    errors: list[Exception] = []

    def write() -> None:
        for step in range(60):
            try:
                storage.add_owned_curve_points(db, [(r.id, 1000 + i, [{"step": step, "val_loss": 1.0}])
                                                    for i, r in enumerate(rows)])
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    def beat() -> None:
        ids = [r.id for r in rows]
        for _ in range(300):
            random.shuffle(ids)
            try:
                storage.beat_sweep_runs(db, ids)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=beat)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(len(storage.get_curve(db, r.id)) == 60 for r in rows)
