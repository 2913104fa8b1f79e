"""Three worker processes on one PostgreSQL database, one of them killed (SIGKILL) mid-cell:
Optuna's heartbeat fails its trials, the retry callback re-queues them, the survivors train
them, and every planned run ends up finished exactly once with one clean curve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
from optuna.trial import TrialState

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.sweeps import book
from hpscale.sweeps.plan import build_plan
from hpscale.sweeps.spec import parse_spec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# A worker process with the fake runner of test_worker (a formula, 40 ms a step: the longest
# cells take 5 s, longer than the 3 s grace period, so live workers must keep beating).
WORKER = """
import sys
sys.path.insert(0, {here!r})
from test_worker import FakeRunner
from hpscale.db.engine import Database
from hpscale.sweeps.worker import Worker
url, name, sweep = sys.argv[1], sys.argv[2], sys.argv[3]
Worker(Database(url), sweep, lambda spec: FakeRunner(step_s=0.04), worker_id=name, poll_s=0.3).run()
"""


def _spec() -> dict:
    from test_worker import spec_dict

    # 2 sizes x 2 budgets x 2 batch sizes = 8 cells of 4 lrs: 32 runs, 1-5 s a cell.
    return spec_dict("dist", tokens={"values": [8192, 16384]})


def three_workers_one_killed(url: str, sweep: str, tmp_path: Path, ready: Callable[[], bool], what: str,
                             finish_s: float) -> Any:
    """Start workers w1, w2 and w3 on ``sweep``; SIGKILL w1 as soon as ``ready()``; wait for the
    others to finish the sweep. Returns what ``ready()`` returned."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    procs = {name: subprocess.Popen([sys.executable, str(script), url, name, sweep], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name in ("w1", "w2", "w3")}
    try:
        deadline = time.monotonic() + 90
        while not (found := ready()):
            assert time.monotonic() < deadline, what
            assert procs["w1"].poll() is None, procs["w1"].stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.02)
        os.kill(procs["w1"].pid, signal.SIGKILL)
        procs["w1"].wait()
        for name in ("w2", "w3"):
            out, _ = procs[name].communicate(timeout=finish_s)
            assert procs[name].returncode == 0, out.decode()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return found


@pytest.mark.postgres
def test_three_workers_one_killed_every_run_finishes_exactly_once(pg_url: str, tmp_path: Path) -> None:
    sys.path.insert(0, str(HERE))
    db = Database(pg_url)
    sweep = book.store_plan(db, build_plan(parse_spec(_spec())))

    def training() -> set[str]:  # w1 is training a cell: its runs are "running" and have curve points
        mine = [r for r in storage.list_runs(db, sweep_id=sweep.id, statuses=["running"]) if r.worker == "w1"]
        return {r.name for r in mine} if mine and all(storage.get_curve(db, r.id) for r in mine) else set()

    killed = three_workers_one_killed(pg_url, "dist", tmp_path, training, "w1 never started a cell", 150)

    runs = storage.list_runs(db, sweep_id=sweep.id)
    assert len(runs) == 32 and len({r.name for r in runs}) == 32
    assert Counter(r.status for r in runs) == {"done": 32}
    assert all(r.final_loss is not None for r in runs)
    # The killed worker's runs were finished by the others, each with one clean curve (the
    # points of the killed attempt were deleted when the run was taken over).
    retrained = [r for r in runs if r.name in killed]
    assert len(killed) == 4 and all(r.worker in ("w2", "w3") for r in retrained)
    for r in runs:
        steps = [p.step for p in storage.get_curve(db, r.id)]
        assert steps == sorted(set(steps)) and steps[-1] == r.config["trained_steps"]
    # Optuna: exactly one COMPLETE trial per run; the killed trials are FAIL and were retried.
    _, spec = book.open_sweep(db, "dist")
    store = book.open_queue(db, spec)
    all_trials = [t for s in book.studies(db, store, sweep).values() for t in s.get_trials(deepcopy=False)]
    complete = Counter(t.user_attrs["run"] for t in all_trials if t.state == TrialState.COMPLETE)
    assert set(complete) == {r.name for r in runs} and set(complete.values()) == {1}
    # Only the killed worker's trials failed: the live workers' heartbeats kept theirs alive.
    failed = [t for t in all_trials if t.state == TrialState.FAIL]
    assert {t.user_attrs["run"] for t in failed} == killed and len(failed) == len(killed)
    retries = [t for t in all_trials if "failed_trial" in t.system_attrs]
    assert {t.user_attrs["run"] for t in retries} == killed
    assert not [t for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    db.dispose()


@pytest.mark.postgres
def test_a_worker_killed_inside_a_trunk_loses_no_finished_branch(pg_url: str, tmp_path: Path) -> None:
    # 2 sizes x 2 batch sizes = 4 trunks of 3 budgets x 4 lrs: 48 runs. w1 is killed once it
    # has stored a budget of its trunk and trains the next: the stored one stays as it is, and
    # the others retrain the trunk for the unfinished budgets only.
    sys.path.insert(0, str(HERE))
    from test_worker import branched_spec

    db = Database(pg_url)
    sweep = book.store_plan(db, build_plan(parse_spec(branched_spec("dist-wsd"))))

    def stored_a_budget() -> dict[str, Any]:  # every run of one budget done, the trunk's next ones running
        mine = [r for r in storage.list_runs(db, sweep_id=sweep.id) if r.worker == "w1"]
        done = Counter(r.cell_key for r in mine if r.status == "done")
        stored = {r.trunk_key for r in mine if done[r.cell_key] == 4}  # a whole budget of 4 lrs
        running = [r for r in mine if r.status == "running" and r.trunk_key in stored]
        return {r.name: r.finished_at for r in mine if r.status == "done"} if running else {}

    kept = three_workers_one_killed(pg_url, "dist-wsd", tmp_path, stored_a_budget, "w1 never stored a budget", 240)
    assert len(kept) >= 4
    runs = storage.list_runs(db, sweep_id=sweep.id)
    assert len(runs) == 48 and Counter(r.status for r in runs) == {"done": 48}  # nothing failed
    assert {r.name: r.finished_at for r in runs if r.name in kept} == kept  # never trained again
    assert all(r.worker == "w1" for r in runs if r.name in kept)
    _, spec = book.open_sweep(db, "dist-wsd")
    store = book.open_queue(db, spec)
    all_trials = [t for s in book.studies(db, store, sweep).values() for t in s.get_trials(deepcopy=False)]
    complete = Counter(t.user_attrs["run"] for t in all_trials if t.state == TrialState.COMPLETE)
    assert set(complete) == {r.name for r in runs} and set(complete.values()) == {1}
    failed = {t.user_attrs["run"] for t in all_trials if t.state == TrialState.FAIL}
    assert failed - set(kept)  # the unfinished branches were failed and retried
    db.dispose()


INTERRUPTIBLE = """
import signal, sys
# A child of a shell's background job inherits SIGINT ignored, and Python then installs no
# handler: restore the default so that the signal below is the user's Ctrl-C wherever pytest runs.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {here!r})
from test_worker import FakeRunner
from hpscale.db.engine import Database
from hpscale.sweeps.worker import Worker
try:
    Worker(Database(sys.argv[1]), "dist", lambda spec: FakeRunner(step_s=0.04), worker_id="w", poll_s=0.3).run()
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_ctrl_c_mid_cell_then_a_rerun_finishes_everything_once(tmp_path: Path) -> None:
    # A real SIGINT (what Ctrl-C sends) at an arbitrary point inside a cell, on SQLite.
    sys.path.insert(0, str(HERE))
    db = Database(f"sqlite:///{tmp_path / 'sweep.db'}")
    sweep = book.store_plan(db, build_plan(parse_spec(_spec())))
    script = tmp_path / "worker.py"
    script.write_text(INTERRUPTIBLE.format(here=str(HERE)))
    proc = subprocess.Popen([sys.executable, str(script), db.url], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not storage.list_runs(db, sweep_id=sweep.id, statuses=["done"]):
        assert time.monotonic() < deadline and proc.poll() is None, "the worker never finished a cell"
        time.sleep(0.05)
    time.sleep(0.5)  # into the next cell
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out.decode()
    runs = storage.list_runs(db, sweep_id=sweep.id)
    assert not [r for r in runs if r.status == "running"]  # released at once, no grace period
    before = {r.name: r.finished_at for r in runs if r.status == "done"}
    assert 0 < len(before) < 32
    # The rerun (what `hpscale sweep run SPEC` does again) finishes the rest, nothing twice.
    book.store_plan(db, build_plan(parse_spec(_spec())))
    from test_worker import FakeRunner
    from hpscale.sweeps.worker import Worker

    runner = FakeRunner()
    Worker(db, "dist", lambda spec: runner, poll_s=0.05).run()
    assert not set(runner.trained) & set(before) and len(runner.trained) == 32 - len(before)
    runs = storage.list_runs(db, sweep_id=sweep.id)
    assert Counter(r.status for r in runs) == {"done": 32}
    assert {r.name: r.finished_at for r in runs if r.name in before} == before
    db.dispose()


# Each process opens the same new database the way every `hpscale sweep run` / `worker` does:
# hpscale's schema, the published laws, Optuna's tables. They start together at a file barrier.
OPENER = """
import os, sys, time
sys.path.insert(0, {here!r})
from test_worker import spec_dict
from hpscale.db.engine import Database
from hpscale.service.laws import ensure_published_laws
from hpscale.sweeps import book
from hpscale.sweeps.spec import parse_spec
url, gate = sys.argv[1], sys.argv[2]
while not os.path.exists(gate):
    time.sleep(0.001)
db = Database(url)
ensure_published_laws(db)
book.open_queue(db, parse_spec(spec_dict("race")))
print("opened")
"""


def test_processes_opening_one_new_database_at_once_all_succeed(any_db_url: str, tmp_path: Path) -> None:
    # Seen on the GPU: 5 `sweep run` started together on a new SQLite file, and two failed with
    # "table studies already exists" (Optuna's first open) and "UNIQUE constraint failed:
    # laws.name" (the published laws). Every one of them must open the database.
    url = any_db_url
    script, gate = tmp_path / "opener.py", tmp_path / "go"
    script.write_text(OPENER.format(here=str(HERE)))
    procs = [subprocess.Popen([sys.executable, str(script), url, str(gate)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(6)]
    time.sleep(3)  # every process imported and waits at the gate
    gate.touch()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o for o in outs if "opened" not in o)[-2000:]
    db = Database(url)
    assert sorted(law.name for law in storage.list_laws(db, origin="published")) == ["deepseek", "steplaw"]
