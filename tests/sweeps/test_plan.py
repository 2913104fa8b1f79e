"""Planning: cells, names, FLOPs, estimates and refinement rules; storing a plan into the database
with Optuna beside hpscale's schema (on both backends); the 0001 -> 0002 migration keeps data."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from hpscale.db import storage
from hpscale.db.engine import Database, alembic_config
from hpscale.sweeps import book, queue
from hpscale.sweeps.errors import SweepError
from hpscale.sweeps.plan import build_plan, cell_flops, cell_schedule, estimate_seconds, judge_group, refinement_lrs
from hpscale.sweeps.spec import parse_spec

OPTUNA_TABLES = {"studies", "trials", "trial_params", "trial_values", "trial_heartbeats", "version_info"}


def spec(**over: Any) -> Any:
    data: dict[str, Any] = {
        "name": "p", "sizes": [{"d_model": 32, "n_layers": 2, "n_heads": 2}, {"d_model": 64, "n_layers": 2, "n_heads": 2}],
        "tokens": {"values": [24576]}, "lr": {"low": 1e-3, "high": 3e-2, "count": 4}, "batch_sizes": [4, 8],
        "seq_len": 32, "eval": {"interval": 32, "batches": 2, "batch_size": 8}, "tokenizer": {"vocab_size": 512},
        "device": "cpu", "workers": {"heartbeat_s": 1, "grace_s": 3},
    }
    data.update(over)
    return parse_spec(data)


def test_cells_runs_and_names() -> None:
    plan = build_plan(spec())
    assert plan.runs == 16 and len(plan.cells) == 4 and plan.groups == ["N24576-D24576", "N98304-D24576"]
    cell = plan.cells[0]
    assert cell.key == "N24576-D24576-B4" and cell.steps == 24576 // (4 * 32) and cell.batch_tokens == 128
    assert [m.name for m in cell.members] == [
        "N24576-D24576-B4-lr0.001-s0", "N24576-D24576-B4-lr0.00310723-s0",
        "N24576-D24576-B4-lr0.00965489-s0", "N24576-D24576-B4-lr0.03-s0"]
    assert build_plan(spec()).cells == plan.cells  # deterministic


def test_tokens_per_param_seeds_and_target_sizes() -> None:
    plan = build_plan(spec(sizes=[{"n_params": 1e6}], tokens={"per_param": [10, 20]}, seeds=[0, 1], batch_sizes=[8]))
    n = plan.cells[0].shape.n_params
    assert 0.7e6 < n < 1.4e6 and n == 12 * plan.cells[0].shape.n_layers * plan.cells[0].shape.d_model ** 2
    assert [c.tokens for c in plan.cells] == [10 * n, 20 * n]
    assert len(plan.cells[0].members) == 8 and {m.seed for m in plan.cells[0].members} == {0, 1}


def test_flops_and_estimate() -> None:
    s = spec()
    plan = build_plan(s)
    c = plan.cells[0]
    d, L, V, T = 32, 2, 512, 32
    per_token = 6 * (12 * L * d * d + d * V) + 12 * L * T * d
    evals = c.steps // 32 + 2
    expected = 4 * (c.steps * 128 * per_token + evals * 2 * 8 * 32 * per_token / 3)
    assert plan.flops_by_cell[0] == pytest.approx(expected)
    seconds, rate = estimate_seconds(plan, "cpu")
    # On the CPU, start-up and per-step costs come on top of the FLOPs (tiny models: most of it).
    overhead = 7.0 + sum(cell.steps * (5e-3 + 2.2e-3 * len(cell.members)) for cell in plan.cells)
    assert rate == 2e10 and seconds == pytest.approx(plan.flops / 2e10 + overhead)
    assert estimate_seconds(plan, "cuda:1", flops_per_s=1e12) == (pytest.approx(plan.flops / 1e12), 1e12)


def branched(**over: Any) -> Any:
    return spec(tokens=None, schedule={"kind": "wsd", "warmup_fraction": 0.1, "cooldown_fraction": 0.2,
                                       "branches": {"per_param": [1, 2, 3]}}, **over)


def test_branched_plan_names_trunks_where_budgets_leave_them_and_the_flops_saved() -> None:
    plan = build_plan(branched(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[4]))
    assert list(plan.trunks) == ["N24576-B4-trunk"]
    cells = plan.trunks["N24576-B4-trunk"]
    assert [c.steps for c in cells] == [192, 384, 576] and {c.warmup_steps for c in cells} == {19}
    assert [c.branch_step for c in cells] == [153, 307, 460]  # the last 20% of each budget is its cooldown
    for c in cells:  # a budget shares exactly its stable steps with the trunk: warmup, then the peak
        own = cell_schedule(plan.spec, c)
        assert (own[: c.branch_step] == np.minimum(np.arange(1, c.branch_step + 1) / 19, 1.0)).all()
        assert own[c.branch_step] < 1.0 and own[-1] == pytest.approx(0.1)
    # Cost: the longest budget in full, the others only after their branch points.
    separate = [cell_flops(plan.spec, c) for c in cells]
    assert plan.separate_flops == pytest.approx(sum(separate))
    assert plan.flops == pytest.approx(separate[2] + sum(cell_flops(plan.spec, c, c.branch_step) for c in cells[:2]))
    assert plan.separate_flops / plan.flops == pytest.approx(6 / (3 + 0.2 + 0.4), rel=0.01)
    assert plan.flops_saved == pytest.approx(plan.separate_flops - plan.flops)
    unbranched = build_plan(spec())
    assert not unbranched.trunks and unbranched.flops_saved == 0 and unbranched.separate_flops == unbranched.flops
    # Each optimizer trains its own trunks (a job is one optimizer's), keyed like its groups.
    two = build_plan(branched(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[4],
                              optimizer=[{"kind": "adamw"}, {"kind": "lion", "lr": {"values": [1e-4]}}]))
    assert list(two.trunks) == ["N24576-B4-trunk", "lion-N24576-B4-trunk"]
    assert [c.group for c in two.trunks["lion-N24576-B4-trunk"]] == ["lion-N24576-D24576", "lion-N24576-D49152",
                                                                       "lion-N24576-D73728"]


def test_branched_runs_store_their_trunk_and_refinement_keeps_it(db: Database) -> None:
    s = branched(refine={"max_rounds": 1, "points": 1})
    sweep = book.store_plan(db, build_plan(s))
    runs = storage.list_runs(db, sweep_id=sweep.id)
    assert len(runs) == 48 and {r.trunk_key for r in runs} == {"N24576-B4-trunk", "N24576-B8-trunk",
                                                               "N98304-B4-trunk", "N98304-B8-trunk"}
    store = book.open_queue(db, s)
    studies = book.studies(db, store, sweep)
    assert len(studies) == 6  # one per (N, D) group, as ever
    waiting = [t for st in studies.values() for t in st.get_trials(deepcopy=False)]
    assert {t.user_attrs["trunk"] for t in waiting} == {r.trunk_key for r in runs}
    # A group whose best lr is on the grid's low edge gets lower lrs, as branches of the same trunks.
    group = "N24576-D24576"
    for r in runs:
        if r.group_key == group:
            storage.claim_sweep_run(db, r.id, 10_000 + r.id, None, "w")
            storage.finish_sweep_run(db, r.id, 10_000 + r.id, "done", 3.0 + r.lr, config=r.config)
    added = [x for x in book.refine(db, store, sweep, s, studies) if x.runs_added]
    assert [(x.group, x.edge) for x in added] == [(group, "low")]
    new = [r for r in storage.list_runs(db, sweep_id=sweep.id) if r.tags["round"] == 1]
    assert len(new) == 2 and {r.trunk_key for r in new} == {"N24576-B4-trunk", "N24576-B8-trunk"}
    assert all(r.config["warmup_steps"] and r.config["branch_step"] for r in new)
    cells = book.cells_from_rows(new)
    assert [c.trunk for c in cells] == ["N24576-B8-trunk", "N24576-B4-trunk"]  # shortest first


@pytest.mark.parametrize(
    ("losses", "edge", "best"),
    [
        ([3.0, 2.5, 2.7, 2.9], None, 2),  # interior optimum
        ([2.0, 2.5, 2.7, 2.9], "low", 1),
        ([3.0, 2.9, 2.8, 2.7], "high", 8),
        ([3.0, 2.9, 2.8, None], None, 4),  # the next lr diverged: bracketed from above
        ([None, None, None, None], "low", None),  # all diverged: search lower
    ],
)
def test_judge_group(losses: list[float | None], edge: str | None, best: float | None) -> None:
    lrs = [1.0, 2.0, 4.0, 8.0]
    verdict = judge_group(lrs, [16] * 4, losses)
    assert verdict.lr_edge == edge and verdict.best_lr == best


def test_judge_group_counts_seeds_by_their_mean() -> None:
    # lr 2: seeds 2.4 and 2.8 (mean 2.6); lr 4: 2.5 twice; lr 8: one seed diverged.
    lrs, losses = [1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0], [2.9, 2.4, 2.8, 2.5, 2.5, 2.3, None]
    verdict = judge_group(lrs, [16] * 7, losses)
    assert (verdict.best_lr, verdict.best_loss, verdict.lr_edge) == (4.0, 2.5, None)


def test_refinement_lrs_step_beyond_the_edge() -> None:
    assert refinement_lrs([1e-3, 1e-2], "high", math.log(10), 2) == [0.1, 1.0]
    assert refinement_lrs([1e-3, 1e-2], "low", math.log(2), 1) == [0.0005]


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_store_plan_is_idempotent_and_lives_beside_optuna(db: Database) -> None:
    s = spec()
    sweep = book.store_plan(db, build_plan(s))
    assert OPTUNA_TABLES <= _tables(db) and {"runs", "sweeps", "alembic_version"} <= _tables(db)
    assert db.current_revision() == db.head_revision() == "0005"  # Optuna left alembic_version alone
    runs = storage.list_runs(db, sweep_id=sweep.id)
    assert len(runs) == 16 and {r.status for r in runs} == {"queued"} and runs[0].source == "p"
    assert runs[0].group_key == "N24576-D24576" and runs[0].cell_key == "N24576-D24576-B4"
    assert runs[0].spec["name"] == "p" and runs[0].config["steps"] == 192 and runs[0].batch_tokens == 128
    store = book.open_queue(db, s)
    studies = book.studies(db, store, sweep)
    assert sorted(studies) == ["N24576-D24576", "N98304-D24576"]
    waiting = [t for st in studies.values() for t in st.get_trials(deepcopy=False)]
    assert len(waiting) == 16 and {t.user_attrs["run"] for t in waiting} == {r.name for r in runs}
    assert waiting[0].system_attrs["fixed_params"] == {"lr": 0.001, "batch_size": 4, "seed": 0}
    # Again: nothing added, nothing enqueued twice; hpscale's upgrade leaves Optuna's tables.
    book.store_plan(db, build_plan(s))
    assert len(storage.list_runs(db, sweep_id=sweep.id)) == 16
    assert sum(len(st.get_trials(deepcopy=False)) for st in book.studies(db, store, sweep).values()) == 16
    assert db.upgrade() == ("0005", "0005") and OPTUNA_TABLES <= _tables(db)
    fresh = Database(db.url)
    fresh.ensure_schema()  # a new handle accepts the shared database as hpscale's
    fresh.dispose()


def test_a_changed_spec_under_a_stored_name_is_refused(db: Database) -> None:
    book.store_plan(db, build_plan(spec()))
    with pytest.raises(SweepError, match=r"sweep 'p' already exists with a different spec \(changed: batch_sizes\)"):
        book.store_plan(db, build_plan(spec(batch_sizes=[4, 16])))


def test_study_names_and_urls() -> None:
    assert queue.study_name("s", "N1-D2") == "hpscale:s:N1-D2"
    assert queue.optuna_url("postgresql://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"
    assert queue.optuna_url("sqlite:///x.db") == "sqlite:///x.db"


def test_migrations_from_0001_keep_rows(any_db_url: str) -> None:
    db = Database(any_db_url)
    command.upgrade(alembic_config(db.engine), "0001")
    assert db.current_revision() == "0001"
    with db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO sweeps (id, name, spec, status, code_version, created_at) "
            "VALUES (1, 'old', '{}', 'planned', 'v0', '2026-01-01 00:00:00')"))
        conn.execute(sa.text(
            "INSERT INTO runs (id, source, name, sweep_id, n_params, tokens, lr, status, final_loss, "
            "final_loss_status, code_version, created_at) VALUES "
            "(1, 'old', 'r1', 1, 1e6, 2e7, 0.001, 'done', 3.5, 'finite', 'v0', '2026-01-01 00:00:00')"))
        conn.execute(sa.text("INSERT INTO curve_points (run_id, step, val_loss, nonfinite) VALUES (1, 10, 4.0, false)"))
    with pytest.raises(Exception, match="older than this hpscale"):
        db.ensure_schema()
    assert db.upgrade() == ("0001", "0005")
    (sweep,) = storage.list_sweeps(db)
    assert (sweep.name, sweep.code_version) == ("old", "v0")  # 0003 dropped the stale status column only
    (run,) = storage.list_runs(db)
    assert (run.name, run.final_loss, run.status, run.sweep_id) == ("r1", 3.5, "done", 1)
    assert run.group_key is None and run.trial_id is None and run.heartbeat_at is None
    assert run.optimizer == "adamw" and run.n_params_total is None  # 0004: every older run was AdamW's
    assert run.trunk_key is None  # 0005: every older run was trained on its own
    assert [p.val_loss for p in storage.get_curve(db, 1)] == [4.0]
    with db.engine.connect() as conn:
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("runs")}
    assert "ix_runs_sweep_status" in indexes
    command.downgrade(alembic_config(db.engine), "0001")  # and back, still keeping the row
    assert db.current_revision() == "0001"
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM runs")).scalar_one() == "r1"
    db.dispose()


def test_planning_needs_no_torch() -> None:
    # `hpscale sweep plan` must work (and start fast) where torch is absent or slow to import.
    code = (
        "import sys\n"
        "from hpscale.sweeps.plan import build_plan, estimate_seconds\n"
        "from hpscale.sweeps.spec import load_spec\n"
        "plan = build_plan(load_spec('sweeps/examples/gpu_small.yaml'))\n"
        "estimate_seconds(plan, 'cuda')\n"
        "assert plan.cells and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_cpu_estimate_counts_a_trunks_shared_steps_once() -> None:
    # A branched sweep trains each trunk once and only the cooldowns of its shorter budgets: the
    # per-step cost of the estimate counts those steps, not every budget from scratch.
    from pathlib import Path

    from hpscale.sweeps.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "sweeps" / "examples" / "tiny_cpu_wsd.yaml")
    plan = build_plan(spec)
    assert plan.trunks
    per_step = lambda c: 5e-3 + 2.2e-3 * len(c.members)  # noqa: E731 - the measured constants
    trained = sum(
        cells[-1].steps * per_step(cells[-1]) + sum((c.steps - c.branch_step) * per_step(c) for c in cells[:-1])
        for cells in plan.trunks.values()
    )
    seconds, rate = estimate_seconds(plan, "cpu")
    assert seconds == pytest.approx(plan.flops / rate + 7.0 + trained)
    assert trained < sum(c.steps * per_step(c) for c in plan.cells)
