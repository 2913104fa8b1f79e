"""Stages of a GPU experiment that outlives its machine (run 4, the optimizer axis).

A device machine is lent for 30 minutes and may be lost at any moment, so each experiment runs
as stages whose results are files committed under a results folder: a stage trains with several
``hpscale`` processes on one GPU, exports its sources' finished runs (with curves) every
EXPORT_EVERY_S seconds and at its end, and records in ``stages.json`` whether it completed. A
rerun, on the same machine or a fresh one, restores the exports into a new database and trains
only what is missing. ``benchmarks/gpu_session.sh`` chains the stages in device calls.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

from hpscale.db.engine import Database  # noqa: E402

STAGES = "stages.json"  # what each stage did: complete or not, when, how long, how many runs
EXPORT_EVERY_S = 120.0  # a GPU stage exports what has finished this often: a lost machine loses less
STOP_GRACE_S = 120.0  # after the stop, how long the workers together get to put their runs back


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_stages(results: Path) -> dict[str, Any]:
    path = results / STAGES
    return json.loads(path.read_text()) if path.exists() else {}


def record_stage(results: Path, stage: str, **info: Any) -> None:
    """Note in ``results``/stages.json what a stage did (committed with its exports)."""
    stages = read_stages(results)
    stages[stage] = {**stages.get(stage, {}), **info, "recorded": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    tmp = results / f".{STAGES}.tmp"
    tmp.write_text(json.dumps(stages, indent=2) + "\n")
    os.replace(tmp, results / STAGES)  # a crash mid-write keeps the last record
    copy_out(results / STAGES)


def copy_out(path: Path) -> None:
    """A copy under $OUT when the device tool runs this (its files come back to the project)."""
    out = os.environ.get("OUT")
    if out and Path(out).is_dir():
        shutil.copy(path, Path(out) / path.name)


def db_url(work: Path) -> str:
    return f"sqlite:///{work / 'validation.db'}"


def env(work: Path) -> dict[str, str]:
    return {**os.environ, "HPSCALE_DATA_DIR": str(work / "data"), "PYTHONUNBUFFERED": "1"}


def hpscale(work: Path, *args: str, log_name: str) -> subprocess.Popen:
    """``hpscale ARGS`` on the work database, in the background, its output in work/log-NAME.txt."""
    cmd = [sys.executable, "-m", "hpscale.service.cli", "--database", db_url(work), *args]
    log("$ hpscale " + " ".join(args))
    return start(cmd, work, log_name)


def start(cmd: list[str], work: Path, log_name: str) -> subprocess.Popen:
    """``cmd`` in the background, its output in work/log-NAME.txt, stoppable by ``supervise``'s
    SIGINT.

    gpu_session.sh runs the stages as a background job of a non-interactive shell, which starts
    them with SIGINT ignored; children inherit that, and a Python started so never raises
    KeyboardInterrupt. The workers then did not hear the stop: each ran on until killed, 120 s
    apiece (2026-12-06: 6.6 minutes of a session's GPU). Handling SIGINT here makes it default
    again in every child this process starts (exec resets a handled signal, not an ignored one).

    Each command leads its own process group, and ``stop`` signals the group: on a machine with
    several GPUs ``hpscale sweep run`` starts one worker per GPU, which must hear the stop as they
    would a Ctrl-C at a terminal, not be orphaned when their parent is killed. (A Ctrl-C at the
    terminal now reaches only this process; ``supervise`` passes it on.)"""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out = open(work / f"log-{log_name}.txt", "a")
    return subprocess.Popen(cmd, env=env(work), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            process_group=0)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to every process of ``proc``'s group (see ``start``); nothing when it is gone."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def restore(work: Path, results: Path, exports: Sequence[str]) -> Database:
    """The work database, with the named exports in ``results`` loaded (idempotent: a fresh
    machine gets the earlier stages' runs, a warm one loses nothing)."""
    from hpscale.service.demo import load_demo

    db = Database(db_url(work))
    db.ensure_schema()
    for name in exports:
        if (results / name).exists():
            log(f"loading {name}: {load_demo(db, results / name)}")
    return db


def export(db: Database, sources: list[str], path: Path, laws: Sequence[str] = ()) -> None:
    """Write the sources' finished runs (with curves) and ``laws`` to ``path``, and a copy under
    $OUT when the device tool runs this (its files come back to the project)."""
    from hpscale.service.demo import export_demo

    counts = export_demo(db, sources, path, list(laws))
    log(f"exported {counts} to {path}")
    copy_out(path)


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop the running ``procs`` as a Ctrl-C would: SIGINT to each one's process group (a worker
    stores what it has and takes nothing more), one STOP_GRACE_S for all of them to end, then
    SIGKILL to the groups of those still running."""
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGINT)
    grace = time.time() + STOP_GRACE_S  # one grace for all: they stop side by side
    for p in procs:
        try:
            p.wait(timeout=max(0.0, grace - time.time()))
        except subprocess.TimeoutExpired:
            log(f"a worker (pid {p.pid}) did not stop in {STOP_GRACE_S:.0f} s: killed")
            _signal_group(p, signal.SIGKILL)
            p.wait()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def supervise(db: Database, procs: list[subprocess.Popen], sources: list[str], path: Path,
              deadline: float) -> bool:
    """Wait for ``procs``, exporting ``sources`` to ``path`` every EXPORT_EVERY_S seconds; at the
    deadline, ``stop`` them. True when every process ended on its own and no run of ``sources``
    failed, i.e. the stage's work is complete. (A failed run, a cell that raised, is finished for
    the workers; the stage's next ``hpscale sweep run`` puts it back in the queue. Run 4's sweep
    once called itself complete with a refinement cell failed by CUDA out of memory, and its
    group's optimum stayed on the batch grid's edge.)

    Interrupted (Ctrl-C, or SIGTERM as from ``timeout``), it stops the workers before it ends:
    they lead their own process groups (``start``), which a Ctrl-C at the terminal does not reach."""
    last = time.time()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while any(p.poll() is None for p in procs):
            if time.time() > deadline:
                log("the stage's minutes are spent: stopping the workers (finished runs are kept; a rerun resumes)")
                stop(procs)
                return False
            if time.time() - last > EXPORT_EVERY_S:
                export(db, sources, path)
                last = time.time()
            time.sleep(5)
    except KeyboardInterrupt:
        log("interrupted: stopping the workers (finished runs are kept; a rerun resumes)")
        stop(procs)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    from hpscale.db import storage
    from hpscale.sweeps.status import failures

    failed = failures(storage.list_runs(db, sources=sources, statuses=["failed"]))
    for f in failed:
        log(f"{f['runs']} runs failed ({', '.join(f['cells'][:3])}): {f['error']}")
    if failed:
        log("the stage is not complete: a rerun retries the failed runs")
    return not failed and all(p.returncode == 0 for p in procs)
