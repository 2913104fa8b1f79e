"""The worker loop on SQLite with a fake cell runner: queueing, results, divergence, refinement,
interruption and resume, failures and duplicate trials. The real trainer runs in
tests/service/test_cli_sweep.py; here training is a formula, so every path is fast and exact."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from optuna.trial import TrialState

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.sweeps import book, queue
from hpscale.sweeps.errors import SweepError
from hpscale.sweeps.plan import build_plan
from hpscale.sweeps.spec import parse_spec
from hpscale.sweeps.worker import Heartbeat, Worker

OPT_LR = 3e-3  # the fake loss surface's optimum


def spec_dict(name: str = "fake", **over: Any) -> dict[str, Any]:
    """A small spec: 2 sizes x 4 lrs x 2 batch sizes = 16 runs in 4 cells."""
    spec: dict[str, Any] = {
        "name": name,
        "sizes": [{"d_model": 32, "n_layers": 2, "n_heads": 2}, {"d_model": 64, "n_layers": 2, "n_heads": 2}],
        "tokens": {"values": [8192]}, "lr": {"low": 1e-3, "high": 1e-2, "count": 4},
        "batch_sizes": [4, 8], "seq_len": 32, "eval": {"interval": 8, "batches": 1, "batch_size": 4},
        "tokenizer": {"vocab_size": 512}, "device": "cpu",
        "refine": {"max_rounds": 0}, "workers": {"heartbeat_s": 1, "grace_s": 3},
    }
    spec.update(over)
    return spec


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing in the worker handles it."""


class FakeRunner:
    """Trains nothing: loss = 3 + 0.2 (ln lr - ln OPT_LR)^2 + 0.05 ln B - 0.1 ln(D / 8192), curve
    points at every eval interval, ``step_s`` seconds a step; lrs >= ``diverge_at`` diverge half
    way. The cells of a job are trained one after the other, each reported when done (as the
    real trainer reports branches). ``trained`` lists every run name it was asked to train;
    ``kill_after`` raises ``Killed`` on the first call once that many cells are reported."""

    corpus_hash = "f" * 64

    def __init__(self, step_s: float = 0.0, diverge_at: float = math.inf, opt_lr: float | dict[str, float] = OPT_LR,
                 interrupt_on: int | None = None, fail_on: int | None = None, kill_after: int | None = None) -> None:
        # opt_lr: one optimum for every optimizer, or one per optimizer kind.
        self.step_s, self.diverge_at, self.opt_lrs = step_s, diverge_at, opt_lr
        self.interrupt_on, self.fail_on, self.kill_after = interrupt_on, fail_on, kill_after
        self.trained: list[str] = []
        self.calls = 0

    def loss(self, lr: float, batch: int, optimizer: str = "adamw", tokens: float = 8192) -> float:
        opt = self.opt_lrs[optimizer] if isinstance(self.opt_lrs, dict) else self.opt_lrs
        return 3.0 + 0.2 * (math.log(lr) - math.log(opt)) ** 2 + 0.05 * math.log(batch) - 0.1 * math.log(tokens / 8192)

    def __call__(self, task: Any, on_eval: Any, on_progress: Any, on_result: Any) -> None:
        self.calls += 1
        spec, members = task.spec, task.members
        if self.fail_on == self.calls:
            raise RuntimeError("simulated CUDA out of memory")
        for i, cell in enumerate(task.cells):
            if self.kill_after is not None and self.calls == 1 and i == self.kill_after:
                raise Killed
            self.trained += [m.name for m in cell.members]
            final = [self.loss(lr, cell.batch_size, cell.optimizer, cell.tokens) for lr, _ in members]
            diverged = [lr >= self.diverge_at for lr, _ in members]
            for step in range(0, cell.steps + 1):
                if step and self.step_s:
                    time.sleep(self.step_s)
                if self.interrupt_on == self.calls and step == cell.steps // 2:
                    raise KeyboardInterrupt
                if step % spec.eval.interval == 0 or step == cell.steps:
                    status = ["diverged" if d and step > cell.steps // 2 else ("done" if step == cell.steps else "running")
                              for d in diverged]
                    frac = step / cell.steps
                    on_eval(SimpleNamespace(step=step, tokens=step * cell.batch_tokens, lr=[lr for lr, _ in members],
                                            train_loss=[None if step == 0 else f + (1 - frac) for f in final],
                                            val_loss=[f + (1 - frac) for f in final], status=status, branches=(i,)))
                    on_progress(SimpleNamespace(step=step, total_steps=cell.steps, tokens_per_s=1e6))
            on_result(i, [SimpleNamespace(lr=lr, seed=seed, status="diverged" if d else "done",
                                          final_val_loss=None if d else f, steps=cell.steps // 2 if d else cell.steps,
                                          tokens=(cell.steps // 2 if d else cell.steps) * cell.batch_tokens,
                                          diverged_step=cell.steps // 2 if d else None)
                          for (lr, seed), f, d in zip(members, final, diverged)])


def plan_into(db: Database, spec: dict[str, Any]) -> Any:
    return book.store_plan(db, build_plan(parse_spec(spec)))


def trials(db: Database, sweep_name: str) -> list[Any]:
    sweep, spec = book.open_sweep(db, sweep_name)
    store = book.open_queue(db, spec)
    return [t for s in book.studies(db, store, sweep).values() for t in s.get_trials(deepcopy=False)]


@pytest.fixture
def sdb(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'sweep.db'}")
    database.ensure_schema()
    yield database
    database.dispose()


def test_worker_trains_every_run_once_and_records_it(sdb: Database) -> None:
    sweep = plan_into(sdb, spec_dict())
    runner = FakeRunner()
    summary = Worker(sdb, "fake", lambda spec: runner, poll_s=0.05).run()
    assert summary.cells == 4 and summary.runs_done == 16 and summary.duplicates == 0
    assert sorted(runner.trained) == sorted(set(runner.trained)) and len(runner.trained) == 16
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert {r.status for r in runs} == {"done"} and len(runs) == 16
    r = min(runs, key=lambda r: r.final_loss)
    assert r.lr == pytest.approx(2.15443e-3) and r.batch_size == 4  # the grid point nearest OPT_LR
    assert r.corpus_hash == "f" * 64 and r.code_version and r.spec["name"] == "fake"
    assert r.config["trained_steps"] == 64 and r.config["d_model"] in (32, 64)
    curve = storage.get_curve(sdb, r.id)
    assert [p.step for p in curve] == list(range(0, 65, 8))
    assert curve[-1].val_loss == pytest.approx(r.final_loss)
    assert storage.get_sweep(sdb, sweep.id).corpus_hash == "f" * 64
    told = trials(sdb, "fake")
    assert len(told) == 16 and all(t.state == TrialState.COMPLETE for t in told)
    assert {(t.params["lr"], t.params["batch_size"]) for t in told} == {(x.lr, x.batch_size) for x in runs}
    assert sorted(t.value for t in told) == pytest.approx(sorted(x.final_loss for x in runs))


def test_diverged_runs_are_failed_trials_and_diverged_rows(sdb: Database) -> None:
    sweep = plan_into(sdb, spec_dict())
    summary = Worker(sdb, "fake", lambda spec: FakeRunner(diverge_at=0.009), poll_s=0.05).run()
    assert summary.runs_diverged == 4 and summary.runs_done == 12
    runs = storage.list_runs(sdb, sweep_id=sweep.id, statuses=["diverged"])
    assert len(runs) == 4 and all(r.final_loss is None and r.final_loss_status == "missing" for r in runs)
    assert all(r.config["diverged_step"] is not None for r in runs)
    failed = [t for t in trials(sdb, "fake") if t.state == TrialState.FAIL]
    assert len(failed) == 4 and {t.user_attrs["outcome"] for t in failed} == {"diverged"}


def test_refinement_extends_the_grid_until_the_optimum_is_bracketed(sdb: Database) -> None:
    # The optimum lies above the grid (1e-3 .. 1e-2): round 1 adds 2 lrs above, and the best
    # of those is interior, so the group is bracketed and no round 2 follows.
    spec = spec_dict(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], refine={"max_rounds": 3, "points": 2})
    sweep = plan_into(sdb, spec)
    runner = FakeRunner(opt_lr=0.03)
    summary = Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    (ref,) = summary.refinements
    assert ref.edge == "high" and ref.round == 1 and ref.runs_added == 4  # 2 lrs x 2 batch sizes
    assert ref.lrs == pytest.approx((0.0215443, 0.0464159), rel=1e-5)
    from hpscale.sweeps.status import sweep_status

    (group,) = sweep_status(sdb, storage.get_sweep(sdb, sweep.id)).groups
    assert group.bracketed is True and group.rounds == 1 and group.counts["done"] == 12
    assert group.best_lr == pytest.approx(0.0215443, rel=1e-5)


def test_an_optimizer_axis_trains_and_refines_each_optimizer_on_its_own_grid(sdb: Database) -> None:
    # AdamW on the spec's grid (1e-3 .. 1e-2, optimum inside); Lion on its own (1e-4 .. 1e-3,
    # 2 points), whose optimum lies above it: refinement widens Lion's group by Lion's grid step.
    spec = spec_dict(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[4],
                     optimizer=[{"kind": "adamw"}, {"kind": "lion", "weight_decay": 0.3,
                                                   "lr": {"values": [1e-4, 1e-3]}}],
                     refine={"max_rounds": 1, "points": 1})
    sweep = plan_into(sdb, spec)
    runner = FakeRunner(opt_lr={"adamw": 3e-3, "lion": 3e-3})
    summary = Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    by_opt = {o: sorted(r.lr for r in runs if r.optimizer == o) for o in ("adamw", "lion")}
    assert by_opt["adamw"] == pytest.approx([1e-3, 2.15443e-3, 4.64159e-3, 1e-2], rel=1e-5)
    assert by_opt["lion"] == pytest.approx([1e-4, 1e-3, 1e-2])  # + one Lion grid step (x10) above
    assert {r.group_key for r in runs} == {"N24576-D8192", "lion-N24576-D8192"}
    assert all(r.cell_key.startswith(r.group_key) and r.name.startswith(r.group_key) for r in runs)
    assert {r.status for r in runs} == {"done"} and len(runs) == 7
    (ref,) = summary.refinements
    assert ref.group == "lion-N24576-D8192" and ref.lrs == (0.01,)
    from hpscale.sweeps.status import sweep_status

    groups = sweep_status(sdb, storage.get_sweep(sdb, sweep.id)).groups
    assert [(g.group, g.optimizer, g.best_lr) for g in groups] == [
        ("N24576-D8192", "adamw", pytest.approx(2.15443e-3, rel=1e-5)),
        ("lion-N24576-D8192", "lion", pytest.approx(1e-3))]


def test_batch_refinement_adds_a_batch_beyond_the_edge(sdb: Database) -> None:
    # The fake loss grows with ln B, so the best batch is the smallest (4): with batch
    # refinement on, round 1 adds batch 2 at the group's 4 lrs (the lr optimum is inside).
    spec = spec_dict(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}],
                     refine={"max_rounds": 1, "points": 1, "batches": True})
    sweep = plan_into(sdb, spec)
    runner = FakeRunner()
    summary = Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    (ref,) = summary.refinements
    assert ref.edge == "batch_low" and ref.batches == (2,) and ref.lrs == () and ref.runs_added == 4
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert sorted({int(r.batch_size) for r in runs}) == [2, 4, 8] and all(r.status == "done" for r in runs)
    b2 = [r for r in runs if r.batch_size == 2]
    assert len(b2) == 4 and {r.name for r in b2} <= set(runner.trained)
    assert all(r.tokens == runs[0].tokens for r in b2)  # same D: twice the steps of batch 4


def test_refinement_stops_after_max_rounds(sdb: Database) -> None:
    spec = spec_dict(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], refine={"max_rounds": 1, "points": 1})
    sweep = plan_into(sdb, spec)
    Worker(sdb, "fake", lambda s: FakeRunner(opt_lr=10.0), poll_s=0.05).run()
    from hpscale.sweeps.status import sweep_status

    (group,) = sweep_status(sdb, storage.get_sweep(sdb, sweep.id)).groups
    assert group.rounds == 1 and group.bracketed is False and "lr_high" in group.edges
    assert group.counts == {"done": 10, "diverged": 0, "running": 0, "queued": 0, "failed": 0}


def test_ctrl_c_requeues_and_a_rerun_resumes_without_retraining(sdb: Database) -> None:
    sweep = plan_into(sdb, spec_dict())
    first = FakeRunner(interrupt_on=2)
    with pytest.raises(KeyboardInterrupt):
        Worker(sdb, "fake", lambda s: first, poll_s=0.05).run()
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert sum(r.status == "done" for r in runs) == 4 and sum(r.status == "queued" for r in runs) == 12
    interrupted = [r for r in runs if r.name in first.trained[4:]]
    assert len(interrupted) == 4 and all(r.status == "queued" for r in interrupted)
    assert all(storage.get_curve(sdb, r.id) == [] for r in interrupted)  # partial curves are gone
    # The rerun plans again (a no-op) and finishes the rest; the 4 finished runs are not retrained.
    plan_into(sdb, spec_dict())
    second = FakeRunner()
    Worker(sdb, "fake", lambda s: second, poll_s=0.05).run()
    assert not set(first.trained[:4]) & set(second.trained) and len(second.trained) == 12
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert len(runs) == 16 and {r.status for r in runs} == {"done"}
    states = [t.state for t in trials(sdb, "fake")]
    assert states.count(TrialState.COMPLETE) == 16 and states.count(TrialState.FAIL) == 4


def branched_spec(name: str = "wsd", **over: Any) -> dict[str, Any]:
    """2 sizes x 4 lrs x 2 batch sizes x 3 budgets = 48 runs: 4 trunks, each with 3 budgets."""
    spec = spec_dict(name, schedule={"kind": "wsd", "cooldown_fraction": 0.2, "branches": [8192, 16384, 32768]},
                     **over)
    del spec["tokens"]
    return spec


def test_a_trunk_trains_every_budget_in_one_job_and_each_is_a_run_of_its_own(sdb: Database) -> None:
    sweep = plan_into(sdb, branched_spec())
    runner = FakeRunner()
    summary = Worker(sdb, "wsd", lambda spec: runner, poll_s=0.05).run()
    assert runner.calls == 4 and summary.cells == 12 and summary.runs_done == 48 and summary.duplicates == 0
    assert sorted(runner.trained) == sorted(set(runner.trained)) and len(runner.trained) == 48
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert {r.status for r in runs} == {"done"} and len({r.group_key for r in runs}) == 6  # (N, D) as ever
    r = next(r for r in runs if r.name == "N24576-D16384-B4-lr0.001-s0")
    assert r.trunk_key == "N24576-B4-trunk" and r.config["branch_step"] == 102 and r.config["warmup_steps"] == 3
    assert r.schedule == "wsd(warmup_steps=3,final=0.1,cooldown=0.2,branch_step=102)"
    assert r.final_loss == pytest.approx(runner.loss(1e-3, 4, tokens=16384))
    assert storage.get_curve(sdb, r.id)[-1].step == 128
    # Optuna: one trial per run, told once, in the study of the run's own (N, D) group.
    told = trials(sdb, "wsd")
    assert len(told) == 48 and all(t.state == TrialState.COMPLETE for t in told)
    assert all(t.user_attrs["trunk"] == next(x.trunk_key for x in runs if x.name == t.user_attrs["run"])
               for t in told)


def test_a_killed_worker_loses_no_finished_branch(sdb: Database) -> None:
    spec = branched_spec(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[4])
    sweep = plan_into(sdb, spec)
    first = FakeRunner(kill_after=1)  # dies once the shortest budget is stored, inside the trunk's job
    with pytest.raises(Killed):
        Worker(sdb, "wsd", lambda s: first, worker_id="w1", poll_s=0.05).run()
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    done = [r for r in runs if r.status == "done"]
    assert {r.tokens for r in done} == {8192} and len(done) == 4
    assert {r.status for r in runs if r.tokens > 8192} == {"running"}  # its trials still RUNNING: stale soon
    curves = {r.id: [(p.step, p.val_loss) for p in storage.get_curve(sdb, r.id)] for r in done}
    second = FakeRunner()
    summary = Worker(sdb, "wsd", lambda s: second, worker_id="w2", poll_s=0.2).run()  # after the 3 s grace
    assert summary.runs_done == 8 and not set(second.trained) & {r.name for r in done}
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert {r.status for r in runs} == {"done"} and {r.worker for r in runs if r.tokens > 8192} == {"w2"}
    assert all([(p.step, p.val_loss) for p in storage.get_curve(sdb, i)] == c for i, c in curves.items())
    complete = Counter(t.user_attrs["run"] for t in trials(sdb, "wsd") if t.state == TrialState.COMPLETE)
    assert sorted(complete) == sorted(r.name for r in runs) and set(complete.values()) == {1}  # exactly once


def test_a_run_stored_by_a_worker_that_died_before_telling_is_told_by_the_retry(
        sdb: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = branched_spec(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[4])
    sweep = plan_into(sdb, spec)
    told = queue.tell_done

    def die(*args: Any) -> None:  # the first branch's first run is stored, then the worker dies
        raise Killed

    monkeypatch.setattr(queue, "tell_done", die)
    with pytest.raises(Killed):
        Worker(sdb, "wsd", lambda s: FakeRunner(), worker_id="w1", poll_s=0.05).run()
    monkeypatch.setattr(queue, "tell_done", told)
    (stored,) = storage.list_runs(sdb, sweep_id=sweep.id, statuses=["done"])
    Worker(sdb, "wsd", lambda s: FakeRunner(), worker_id="w2", poll_s=0.2).run()
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert {r.status for r in runs} == {"done"} and len(runs) == 12
    complete = [t for t in trials(sdb, "wsd") if t.state == TrialState.COMPLETE]
    assert Counter(t.user_attrs["run"] for t in complete) == {r.name: 1 for r in runs}
    (retry,) = [t for t in complete if t.user_attrs["run"] == stored.name]
    assert retry.value == stored.final_loss and "failed_trial" in retry.system_attrs


def test_a_failing_cell_is_queued_again_and_then_trained(sdb: Database) -> None:
    # Run 4 lost a refinement cell to CUDA out of memory on a shared GPU, and nothing retried it.
    sweep = plan_into(sdb, spec_dict())
    summary = Worker(sdb, "fake", lambda s: FakeRunner(fail_on=1), poll_s=0.05).run()
    assert summary.runs_retried == 4 and summary.runs_failed == 0 and summary.runs_done == 16
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert {r.status for r in runs} == {"done"} and not [r for r in runs if "error" in r.tags]
    again = [r for r in runs if r.tags.get("attempts") == 1]
    assert len(again) == 4 and len({r.cell_key for r in again}) == 1
    outcomes = [t.user_attrs.get("outcome") for t in trials(sdb, "fake") if t.state == TrialState.FAIL]
    assert outcomes == ["error"] * 4  # exactly once per failed attempt; each run told done once
    assert len([t for t in trials(sdb, "fake") if t.state == TrialState.COMPLETE]) == 16


class OneBadCell(FakeRunner):
    """Raises for every job holding the cell ``bad`` (the first cell of the plan); trains the rest."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad, self.failures = bad, 0

    def __call__(self, task: Any, *args: Any) -> None:
        if any(c.key == self.bad for c in task.cells):
            self.failures += 1
            raise RuntimeError("simulated CUDA out of memory")
        super().__call__(task, *args)


def test_retries_stop_at_the_budget_and_a_new_sweep_run_gives_a_new_one(
        sdb: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = plan_into(sdb, spec_dict())  # workers.retries: 2 (the default)
    bad = storage.list_runs(sdb, sweep_id=sweep.id)[0].cell_key
    runner = OneBadCell(bad)
    summary = Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    assert runner.failures == 3  # the first attempt and two retries
    assert summary.runs_retried == 8 and summary.runs_failed == 4 and summary.runs_done == 12
    failed = storage.list_runs(sdb, sweep_id=sweep.id, statuses=["failed"])
    assert {r.cell_key for r in failed} == {bad} and {r.tags["attempts"] for r in failed} == {3}
    assert len([t for t in trials(sdb, "fake") if t.state == TrialState.COMPLETE]) == 12
    # `hpscale sweep status` says which cells failed and why.
    from hpscale.sweeps.status import sweep_status

    st = sweep_status(sdb, storage.get_sweep(sdb, sweep.id))
    assert st.state == "finished" and st.counts["failed"] == 4
    assert st.failures == [{"error": "RuntimeError: simulated CUDA out of memory", "runs": 4, "cells": [bad]}]
    import io

    from rich.console import Console

    from hpscale.service.cli import sweep as sweep_cli

    out = io.StringIO()
    monkeypatch.setattr(sweep_cli, "out_console", Console(file=out, width=200, color_system=None))
    sweep_cli._show_status(sdb, [storage.get_sweep(sdb, sweep.id)], False)
    assert f"failed: 4 runs (cells {bad}): RuntimeError: simulated CUDA out of memory" in out.getvalue()
    assert "`hpscale sweep run SPEC` again queues the failed runs again" in out.getvalue()
    plan_into(sdb, spec_dict())  # `hpscale sweep run` again: queued again, with a new budget
    assert {r.tags.get("attempts") for r in storage.list_runs(sdb, sweep_id=sweep.id, statuses=["queued"])} == {None}
    again = OneBadCell(bad)
    Worker(sdb, "fake", lambda s: again, poll_s=0.05).run()
    assert again.failures == 3


@pytest.mark.parametrize("bad_batch", [8, 2])
def test_a_cell_failed_for_good_leaves_a_hole_and_refinement_goes_on_around_it(sdb: Database, bad_batch: int) -> None:
    # One batch size fails on every attempt (out of memory, say); the optimum lies above the lr
    # grid and at the smallest batch. Refinement must still widen the lr grid, at the batches that
    # trained, and halve the batch unless the smallest batch is the one that failed (nothing is
    # added at or beyond a failure). Before, the failed cell held the group's refinement back for good.
    spec = spec_dict(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[2, 4, 8],
                     refine={"max_rounds": 1, "points": 1, "batches": True},
                     workers={"heartbeat_s": 1, "grace_s": 3, "retries": 1})
    sweep = plan_into(sdb, spec)
    bad = next(r.cell_key for r in storage.list_runs(sdb, sweep_id=sweep.id) if r.batch_size == bad_batch)
    runner = OneBadCell(bad)
    runner.opt_lrs = 0.03
    summary = Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    assert runner.failures == 2  # the first attempt and one retry
    (ref,) = summary.refinements
    assert ref.edge == "high" and ref.lrs == pytest.approx((0.0215443,), rel=1e-5)
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    added = sorted((int(r.batch_size), round(r.lr, 5)) for r in runs if (r.tags or {}).get("round") == 1)
    grid = [1e-3, 2.15443e-3, 4.64159e-3, 1e-2, 2.15443e-2]
    if bad_batch == 8:  # lr 0.0215 at batches 2 and 4; batch 1 at the group's five lrs
        assert ref.batches == (1,)
        assert added == sorted([(2, 0.02154), (4, 0.02154)] + [(1, round(x, 5)) for x in grid])
    else:  # lr 0.0215 at batches 4 and 8; no batch below the failed 2
        assert ref.batches == ()
        assert added == [(4, 0.02154), (8, 0.02154)]
    assert all(r.status == "done" for r in runs if (r.tags or {}).get("round") == 1)
    assert {r.status for r in runs if r.cell_key == bad} == {"failed"}


def test_a_hole_that_trains_later_gets_the_lrs_its_group_searched_meanwhile(sdb: Database) -> None:
    # Batch 2 fails for good in the first `sweep run`; its group is refined around it (lr 0.0215
    # at batches 4 and 8). The next `sweep run` trains batch 2, and refinement fills in the lr it
    # missed there, though the rounds are spent.
    spec = spec_dict(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[2, 4, 8],
                     refine={"max_rounds": 1, "points": 1, "batches": True},
                     workers={"heartbeat_s": 1, "grace_s": 3, "retries": 0})
    sweep = plan_into(sdb, spec)
    bad = next(r.cell_key for r in storage.list_runs(sdb, sweep_id=sweep.id) if r.batch_size == 2)
    runner = OneBadCell(bad)
    runner.opt_lrs = 0.03
    first = Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    assert [(r.edge, r.batches) for r in first.refinements] == [("high", ())]
    plan_into(sdb, spec)  # `hpscale sweep run` again: the failed runs are queued again, and train
    second = Worker(sdb, "fake", lambda s: FakeRunner(opt_lr=0.03), poll_s=0.05).run()
    (fill,) = second.refinements
    assert fill.edge == "fill" and fill.batches == (2,) and fill.lrs == pytest.approx((0.0215443,), rel=1e-5)
    assert fill.describe().startswith("refine N24576-D8192: batch 2 trained after the group was refined")
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert {r.status for r in runs} == {"done"}
    lrs_by_batch = {b: sorted(round(r.lr, 5) for r in runs if r.batch_size == b) for b in (2, 4, 8)}
    assert lrs_by_batch[2] == lrs_by_batch[4] == lrs_by_batch[8] and len(lrs_by_batch[2]) == 5


def test_a_hole_at_the_best_batch_holds_its_group_back(sdb: Database) -> None:
    # Round 1's cell at the best batch (2) fails for good: its lr edge cannot close there, and
    # refining on at the other batches only would run to max_rounds past their own optima.
    class FailsHighLrAtBatch2(FakeRunner):
        def loss(self, lr: float, batch: float, optimizer: str = "adamw", tokens: float = 8192) -> float:
            return super().loss(lr, batch, optimizer, tokens) + math.log(batch)  # batch 2 is best

        def __call__(self, task: Any, *args: Any) -> None:
            if any(c.batch_size == 2 and any(m.lr > 0.0101 for m in c.members) for c in task.cells):
                raise RuntimeError("simulated CUDA out of memory")
            super().__call__(task, *args)

    spec = spec_dict(sizes=[{"d_model": 32, "n_layers": 2, "n_heads": 2}], batch_sizes=[2, 4, 8],
                     refine={"max_rounds": 4, "points": 1}, workers={"heartbeat_s": 1, "grace_s": 3, "retries": 0})
    sweep = plan_into(sdb, spec)
    summary = Worker(sdb, "fake", lambda s: FailsHighLrAtBatch2(opt_lr=0.03), poll_s=0.05).run()
    assert [(r.round, r.edge) for r in summary.refinements] == [(1, "high")]  # then it waits
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert max(r.lr for r in runs) == pytest.approx(0.0215443, rel=1e-5)
    assert {r.status for r in runs if r.batch_size == 2 and r.lr > 0.0101} == {"failed"}


def test_a_cell_that_keeps_failing_is_recorded_and_retried_by_the_next_run(sdb: Database) -> None:
    sweep = plan_into(sdb, {**spec_dict(), "workers": {**spec_dict()["workers"], "retries": 0}})
    summary = Worker(sdb, "fake", lambda s: FakeRunner(fail_on=1), poll_s=0.05).run()
    assert summary.runs_failed == 4 and summary.runs_done == 12
    failed = storage.list_runs(sdb, sweep_id=sweep.id, statuses=["failed"])
    assert len(failed) == 4 and "simulated CUDA out of memory" in failed[0].tags["error"]
    plan_into(sdb, {**spec_dict(), "workers": {**spec_dict()["workers"], "retries": 0}})  # `hpscale sweep run` again: queued again
    runner = FakeRunner()
    Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    assert sorted(runner.trained) == sorted(r.name for r in failed)
    runs = storage.list_runs(sdb, sweep_id=sweep.id)
    assert {r.status for r in runs} == {"done"} and not [r for r in runs if "error" in r.tags]


def test_a_duplicate_trial_never_trains_a_run_twice(sdb: Database) -> None:
    sweep = plan_into(sdb, spec_dict())
    Worker(sdb, "fake", lambda s: FakeRunner(), poll_s=0.05).run()
    done = storage.list_runs(sdb, sweep_id=sweep.id)[0]
    _, spec = book.open_sweep(sdb, "fake")
    store = book.open_queue(sdb, spec)
    study = book.studies(sdb, store, sweep)[done.group_key]
    queue.enqueue_run(study, done.name, done.cell_key, done.group_key, done.lr, int(done.batch_size), done.seed)
    runner = FakeRunner()
    summary = Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    assert runner.trained == [] and summary.duplicates == 1
    assert storage.get_run(sdb, done.id).final_loss == done.final_loss
    dup = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("outcome") == "duplicate"]
    assert len(dup) == 1 and dup[0].state == TrialState.FAIL


def test_a_lost_trial_is_repaired(sdb: Database) -> None:
    # A crash between inserting a run and enqueueing its trial leaves a queued run with no trial.
    sweep = plan_into(sdb, spec_dict())
    _, spec = book.open_sweep(sdb, "fake")
    extra = dict(book.run_rows(spec, build_plan(spec).cells[0])[0], name="orphan", lr=0.002)
    assert storage.add_sweep_runs(sdb, sweep.id, [extra]) == 1
    runner = FakeRunner()
    Worker(sdb, "fake", lambda s: runner, poll_s=0.05).run()
    assert "orphan" in runner.trained
    assert {r.status for r in storage.list_runs(sdb, sweep_id=sweep.id)} == {"done"}


def test_a_worker_with_another_corpus_claims_nothing(sdb: Database) -> None:
    sweep = plan_into(sdb, spec_dict())
    storage.update_sweep(sdb, sweep.id, corpus_hash="a" * 64)
    with pytest.raises(SweepError, match=r"this machine's corpus \(hash ffffffffffff\) differs from sweep 'fake'"):
        Worker(sdb, "fake", lambda s: FakeRunner(), poll_s=0.05).run()
    assert {t.state for t in trials(sdb, "fake")} == {TrialState.WAITING}
    assert {r.status for r in storage.list_runs(sdb, sweep_id=sweep.id)} == {"queued"}


def test_run_ownership_moves_only_by_compare_and_set(db: Database) -> None:
    # On both backends: the storage calls the worker relies on for "exactly once".
    sweep = plan_into(db, spec_dict())
    run = storage.list_runs(db, sweep_id=sweep.id)[0]
    point = {"step": 8, "val_loss": 4.0}
    assert storage.add_owned_curve_points(db, [(run.id, 101, [point])]) == [0]  # queued: nobody owns it
    assert storage.claim_sweep_run(db, run.id, 101, None, "a")
    assert not storage.claim_sweep_run(db, run.id, 102, None, "b")  # the owner moved on: CAS fails
    assert storage.add_owned_curve_points(db, [(run.id, 101, [point])]) == [1]
    assert storage.add_owned_curve_points(db, [(run.id, 102, [{"step": 16, "val_loss": 3.0}])]) == [0]
    assert storage.claim_sweep_run(db, run.id, 102, 101, "b")  # take-over from a dead trial 101
    assert storage.get_curve(db, run.id) == []  # the dead attempt's points are gone
    assert storage.add_owned_curve_points(db, [(run.id, 101, [point])]) == [0]  # the old owner writes nothing
    assert not storage.finish_sweep_run(db, run.id, 101, "done", 3.0)
    assert storage.finish_sweep_run(db, run.id, 102, "done", float("nan"))
    done = storage.get_run(db, run.id)
    assert (done.status, done.final_loss, done.final_loss_status, done.worker) == ("done", None, "nan", "b")
    assert not storage.claim_sweep_run(db, run.id, 103, 102, "c")  # finished runs are never claimed
    assert storage.release_sweep_runs(db, [run.id]) == 0  # nor released


def test_one_transaction_writes_each_owned_runs_points_and_skips_the_rest(db: Database) -> None:
    # A fused cell's evaluation: K runs' points in one commit, each only while its trial owns it.
    sweep = plan_into(db, spec_dict())
    a, b, c = storage.list_runs(db, sweep_id=sweep.id)[:3]
    assert storage.claim_sweep_run(db, a.id, 201, None, "w")
    assert storage.claim_sweep_run(db, b.id, 202, None, "w")
    point = {"step": 10, "tokens": 640.0, "lr": 1e-3, "train_loss": 4.5, "val_loss": float("inf")}
    written = storage.add_owned_curve_points(db, [
        (b.id, 202, [point, {**point, "step": 20, "val_loss": 4.0}]),
        (a.id, 999, [point]),  # a trial that does not own a
        (c.id, 203, [point]),  # c is queued: nobody owns it
        (a.id, 201, []),
    ])
    assert written == [2, 0, 0, 0]
    curve = storage.get_curve(db, b.id)
    assert [(p.step, p.val_loss, p.nonfinite) for p in curve] == [(10, None, True), (20, 4.0, False)]
    assert storage.get_curve(db, a.id) == [] and storage.get_curve(db, c.id) == []
    assert storage.add_owned_curve_points(db, []) == []


def test_status_of_a_sweep_stored_by_other_means(sdb: Database) -> None:
    # A sweep imported or seeded without this engine: no group keys, a spec of another shape.
    from hpscale.sweeps.status import sweep_status

    sweep = storage.add_sweep(sdb, "imported", {"grid": "someone else's"}, "v0")
    storage.add_runs(sdb, [
        {"source": "imported", "name": f"r{i}", "sweep_id": sweep.id, "n_params": 1e6, "tokens": 2e7, "lr": lr,
         "batch_size": 32, "final_loss": loss, "status": "done"}
        for i, (lr, loss) in enumerate([(1e-3, 3.2), (2e-3, 3.0), (4e-3, 3.1)])])
    (group,) = sweep_status(sdb, storage.get_sweep(sdb, sweep.id)).groups
    assert group.group == "N1000000-D20000000" and group.best_lr == 2e-3 and group.bracketed is True


def test_torch_runner_on_folder_and_bin_corpora(tmp_path: Path) -> None:
    # The real adapter (sweeps.cellrun): corpus kinds, schedule and sampler wiring, K = 2 fused.
    import numpy as np

    from hpscale.sweeps.cellrun import CellTask, TorchCellRunner

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(6):
        (texts / f"f{i}.txt").write_text(f"def f{i}(x):\n    return x * {i} + {i * i}\n" * 40)
    ids = np.random.default_rng(0).integers(0, 300, size=20000).astype(np.uint16)
    ids.tofile(tmp_path / "t.bin")
    corpora = [{"kind": "folder", "path": str(texts), "val_fraction": 0.3},
               {"kind": "bin", "path": str(tmp_path / "t.bin"), "vocab_size": 300}]
    for corpus in corpora:
        spec = parse_spec(spec_dict(corpus=corpus, sizes=[{"d_model": 32, "n_layers": 1, "n_heads": 2}],
                                    tokens={"values": [1024]}, lr={"values": [1e-3, 1e-2]}, batch_sizes=[4],
                                    schedule={"kind": "wsd", "warmup_fraction": 0.25}))
        runner = TorchCellRunner(spec, tmp_path / "cache", "cpu")
        assert len(runner.corpus_hash) == 64
        cell = build_plan(spec).cells[0]
        events: list[Any] = []
        reported: list[Any] = []
        runner(CellTask(spec, cell), events.append, lambda p: None, lambda i, res: reported.append((i, res)))
        ((index, results),) = reported
        assert index == 0 and [r.status for r in results] == ["done", "done"] and cell.steps == 8
        assert [e.step for e in events] == [0, 8] and all(r.final_val_loss < 7 for r in results)
        assert events[-1].lr[1] == pytest.approx(10 * events[-1].lr[0])  # per-member peak x one schedule


def test_a_failing_heartbeat_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    # The first beat (entering the block) works; later beats fail twice, then work again.
    outcomes = iter([None, OSError("database gone"), OSError("database gone"), None, None, None, None])
    beats: list[int] = []

    class Store:
        def record_heartbeat(self, trial_id: int) -> None:
            beats.append(trial_id)
            failure = next(outcomes, None)
            if failure is not None:
                raise failure

    with caplog.at_level("WARNING", logger="hpscale.worker"):
        with Heartbeat(Store(), None, [7], [], interval_s=0.02):  # type: ignore[arg-type]
            time.sleep(0.3)
    failures = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(failures) == 2 and "database gone" in failures[0].getMessage()
    assert len(beats) >= 4  # it went on beating after the failures
