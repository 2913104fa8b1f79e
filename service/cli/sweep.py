"""``hpscale sweep plan|run|status`` and ``hpscale worker``: plan, train and watch sweeps.

torch is imported only by the commands that train (run, worker) and by ``plan`` to resolve
``device: auto``; never by ``hpscale --help`` or the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from hpscale.service.cli.common import (
    App, database_url, err_console, fmt, is_tty, open_db, out_console, print_json, set_database_url,
)

if TYPE_CHECKING:
    from rich.progress import Progress

app = App(help="Plan, run and watch sweeps of small GPTs (learning rate x batch size grids).")

SpecArg = Annotated[Path, typer.Argument(help="Sweep spec (YAML); see sweeps/examples/.", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="Override the spec's device: auto, cpu, cuda or cuda:N.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--cpu-threads", min=1, help=(
    "torch CPU threads per worker (default on the CPU: 1, the fastest for small models; measured in BENCHMARKS.md)."))]

# On the CPU, one torch thread per worker unless asked: the cells' models are small, and on a
# 2-core machine with other work on it, 2 threads took 5x the wall time and 6x the CPU time of 1
# (their OpenMP threads spin waiting for each other; benchmarks/tiny_sweep.py).
DEFAULT_CPU_THREADS = 1
PROGRESS_LINE_S = 5.0  # off a terminal, a progress line this often while a cell trains


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _plan_device(requested: str) -> str:
    if requested == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _plan_dict(plan: Any, device: str, flops_per_s: float | None) -> dict[str, Any]:
    from hpscale.sweeps.plan import estimate_seconds

    seconds, rate = estimate_seconds(plan, device, flops_per_s)
    return {
        "sweep": plan.spec.name, "groups": len(plan.groups), "cells": len(plan.cells), "runs": plan.runs,
        "flops": plan.flops, "separate_flops": plan.separate_flops, "flops_saved": plan.flops_saved,
        "device": device, "assumed_flops_per_s": rate, "estimated_seconds": seconds,
        "cell_list": [
            {"cell": c.key, "group": c.group, "optimizer": c.optimizer, "n_params": c.shape.n_params, "tokens": c.tokens,
             "d_model": c.shape.d_model, "n_layers": c.shape.n_layers, "n_heads": c.shape.n_heads,
             "batch_size": c.batch_size, "batch_tokens": c.batch_tokens, "steps": c.steps,
             "members": len(c.members), "lrs": sorted({m.lr for m in c.members}), "flops": f,
             "trunk": c.trunk, "warmup_steps": c.warmup_steps, "branch_step": c.branch_step}
            for c, f in zip(plan.cells, plan.flops_by_cell)
        ],
        "trunks": [{"trunk": key, "cells": [c.key for c in cells], "steps": cells[-1].steps,
                    "branch_steps": [c.branch_step for c in cells[:-1]]}
                   for key, cells in plan.trunks.items()],
    }


def _print_plan(info: dict[str, Any]) -> None:
    branched = bool(info["trunks"])
    table = Table(title=f"sweep {info['sweep']}: cells (each trains its learning rates x seeds fused)")
    cols = ["cell", "shape (d x L, heads)", "N", "D", "batch", "steps", "K", "FLOPs"]
    cols += ["trunk", "leaves it after"] if branched else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("cell", "shape (d x L, heads)", "trunk") else "right")
    last = {t["cells"][-1] for t in info["trunks"]}
    for c in info["cell_list"]:
        row = [c["cell"], f"{c['d_model']} x {c['n_layers']}, {c['n_heads']}", fmt(c["n_params"]),
               fmt(c["tokens"]), str(c["batch_size"]), str(c["steps"]), str(c["members"]), fmt(c["flops"], 3)]
        if branched:  # the longest budget is the trunk's own end: it leaves it nowhere
            row += [c["trunk"] or "-", "its end" if c["cell"] in last else f"step {c['branch_step']}"]
        table.add_row(*row)
    out_console.print(table)
    if branched:
        out_console.print(
            f"{len(info['trunks'])} trunks: each (size, batch, lr, seed) trains its stable phase once and branches "
            f"a cooldown for every shorter budget; that saves {info['flops_saved']:.3g} of "
            f"{info['separate_flops']:.3g} FLOPs ({info['separate_flops'] / info['flops']:.2f}x fewer than "
            "training every run separately)")
    out_console.print(
        f"{info['groups']} groups, {info['cells']} cells, {info['runs']} runs, {info['flops']:.3g} FLOPs; "
        f"estimated {_duration(info['estimated_seconds'])} on {info['device']} assuming "
        f"{info['assumed_flops_per_s']:.3g} model FLOP/s (--flops-per-s to change)"
        + ("" if info["device"].startswith("cuda") else
           " with one thread, and the start-up and per-step costs measured on a 2-core CPU")
        + "; refinement rounds add to it"
    )


@app.command("plan")
def plan_cmd(
    spec_path: SpecArg,
    device: DeviceOpt = None,
    flops_per_s: Annotated[Optional[float], typer.Option("--flops-per-s", min=1.0, help="Assumed model FLOP/s for the estimate.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show a spec's cells, run count, FLOPs and estimated time; trains nothing, stores nothing."""
    from hpscale.sweeps.plan import build_plan
    from hpscale.sweeps.spec import check_paths, load_spec

    spec = load_spec(spec_path)
    check_paths(spec)
    plan = build_plan(spec)
    info = _plan_dict(plan, _plan_device(device or spec.device), flops_per_s)
    print_json(info) if json_out else _print_plan(info)


class RichReporter:
    """Worker progress on stderr: rich bars (runs, and the cell's steps with tokens/s and ETA)
    on a terminal; elsewhere (a log, a pipe, CI) a line when a cell starts and ends, and one
    every ``line_every_s`` seconds while it trains (none when ``lines`` is false)."""

    def __init__(self, live: bool, prefix: str = "", lines: bool = True, line_every_s: float = PROGRESS_LINE_S) -> None:
        self.live, self.prefix = live, prefix
        self.lines, self.line_every_s = lines, line_every_s
        self.bars: Progress | None = None
        self.runs_task: Any = None
        self.cell_task: Any = None
        self.what = ""  # the job training now: "cell KEY" or "trunk KEY (n budgets)"
        self.cell_start = self.last_line = 0.0

    def __enter__(self) -> RichReporter:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bars = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err_console, transient=False,
            )
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def cell_started(self, task: Any, runs_finished: int, runs_total: int) -> None:
        what = f"trunk {task.key} ({len(task.cells)} budgets)" if task.branches else f"cell {task.key}"
        runs = sum(len(c.members) for c in task.cells)
        if self.bars is None:
            self.what = what
            self.cell_start = self.last_line = time.monotonic()
            err_console.print(f"{self.prefix}{what}: {runs} runs, {task.steps} steps "
                              f"({runs_finished} of {runs_total} runs finished)", highlight=False)
            return
        if self.runs_task is None:
            self.runs_task = self.bars.add_task("runs finished", total=runs_total, completed=runs_finished, rate="")
        else:
            self.bars.update(self.runs_task, total=runs_total, completed=runs_finished)
        if self.cell_task is not None:
            self.bars.remove_task(self.cell_task)
        self.cell_task = self.bars.add_task(f"{task.key} K={len(task.members)}", total=task.steps, rate="")

    def progress(self, step: int, total_steps: int, tokens_per_s: float) -> None:
        if self.bars is not None and self.cell_task is not None:
            self.bars.update(self.cell_task, completed=step, rate=f"{tokens_per_s:,.0f} tok/s")
            return
        now = time.monotonic()
        if self.bars is None and self.lines and step < total_steps and now - self.last_line >= self.line_every_s:
            self.last_line = now
            left = (now - self.cell_start) / max(step, 1) * (total_steps - step)
            err_console.print(f"{self.prefix}{self.what}: step {step}/{total_steps}, {tokens_per_s:,.0f} tok/s, "
                              f"about {_duration(left)} left", highlight=False)

    def cell_finished(self, task: Any, results: Sequence[Any]) -> None:
        done = [r for r in results if r.status == "done" and r.final_val_loss is not None]
        best = min(done, key=lambda r: r.final_val_loss) if done else None
        text = (f"{self.prefix}cell {task.cell.key}: {len(done)} done, {len(results) - len(done)} diverged"
                + (f"; best lr {best.lr:.3g}, loss {best.final_val_loss:.4f}" if best else ""))
        if self.bars is not None:
            self.bars.console.print(text)
            self.bars.advance(self.runs_task, len(results))
        else:
            err_console.print(text)

    def message(self, text: str) -> None:
        # Messages carry error texts ("expected [/dev/shm] to be writable"): never Rich markup.
        (self.bars.console if self.bars is not None else err_console).print(f"{self.prefix}{text}", markup=False)


def _runner_factory(device: str | None, cpu_threads: int | None):  # type: ignore[no-untyped-def]
    from hpscale.service.settings import get_settings

    cache_dir = get_settings().data_dir / "corpora"

    def make(spec: Any) -> Any:
        import torch

        from hpscale.sweeps.cellrun import TorchCellRunner

        runner = TorchCellRunner(spec, cache_dir, device or spec.device)
        if cpu_threads or runner.device == "cpu":
            torch.set_num_threads(cpu_threads or DEFAULT_CPU_THREADS)
        return runner

    return make


def _work(db: Any, sweep_name: str, device: str | None, cpu_threads: int | None, progress: bool) -> Any:
    from hpscale.sweeps.worker import Worker, default_worker_id

    with RichReporter(live=progress and is_tty(), lines=progress) as reporter:
        worker = Worker(db, sweep_name, _runner_factory(device, cpu_threads),
                        worker_id=default_worker_id(device or ""), reporter=reporter)
        return worker.run()


def _summary_dict(summary: Any) -> dict[str, Any]:
    return {"worker": summary.worker, "cells": summary.cells, "runs_done": summary.runs_done,
            "runs_diverged": summary.runs_diverged, "runs_failed": summary.runs_failed,
            "runs_retried": summary.runs_retried, "duplicates": summary.duplicates,
            "refinements": [{"group": r.group, "round": r.round, "edge": r.edge, "lrs": list(r.lrs)}
                            for r in summary.refinements]}


def _gpu_slots(device: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES values, one per worker process, when several GPUs are visible."""
    if device not in ("auto", "cuda"):
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def _spawn_workers(slots: list[str], sweep_name: str, cpu_threads: int | None) -> int:
    """One ``hpscale worker`` process per GPU; returns the worst exit code."""
    base = [sys.executable, "-c", "from hpscale.service.cli import app; app()", "worker",
            "--sweep", sweep_name, "--device", "cuda", "--no-progress"]
    if cpu_threads:
        base += ["--cpu-threads", str(cpu_threads)]
    procs = []
    for slot in slots:
        # The URL travels in the environment, not in argv, where `ps` would show its password.
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": slot, "HPSCALE_DATABASE_URL": database_url()}
        procs.append(subprocess.Popen(base, env=env))
    err_console.print(f"started {len(procs)} workers, one per GPU ({', '.join(slots)})")
    try:
        # A worker killed by a signal returns -N: report it as the shell does (128 + N), not as 0.
        return max((128 - c if c < 0 else c) for c in (p.wait() for p in procs))
    except KeyboardInterrupt:
        # The children got the same Ctrl-C: each puts its runs back in the queue; wait for that.
        for p in procs:
            p.wait()
        raise


@app.command("run")
def run_cmd(
    spec_path: SpecArg,
    device: DeviceOpt = None,
    cpu_threads: ThreadsOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the sweep's status as JSON at the end.")] = False,
) -> None:
    """Plan a sweep into the database and train it here: one worker per visible GPU, or one on the
    CPU. Rerunning the same spec resumes it; finished runs are never trained again, failed ones
    are queued again. Exits 1 when runs are left failed (the status says why)."""
    from hpscale.db import storage
    from hpscale.service.settings import get_settings
    from hpscale.sweeps.book import store_plan
    from hpscale.sweeps.plan import build_plan
    from hpscale.sweeps.spec import check_paths, load_spec

    spec = load_spec(spec_path)
    check_paths(spec)
    plan = build_plan(spec)
    dev = device or spec.device
    info = _plan_dict(plan, _plan_device(dev), None)
    saved = f" ({len(info['trunks'])} trunks save {info['flops_saved']:.3g})" if info["trunks"] else ""
    err_console.print(f"sweep {spec.name}: {info['cells']} cells, {info['runs']} runs, {info['flops']:.3g} FLOPs{saved}, "
                      f"estimated {_duration(info['estimated_seconds'])} on {info['device']}")
    db = open_db()
    sweep = store_plan(db, plan)
    slots = _gpu_slots(dev)
    if slots:
        from hpscale.sweeps.cellrun import prepare_corpus

        # Build the corpus cache once here, so the workers open it instead of racing to write it.
        prepare_corpus(spec, get_settings().data_dir / "corpora")
        code = _spawn_workers(slots, sweep.name, cpu_threads)
    else:
        _work(db, sweep.name, device, cpu_threads, progress=True)
        code = 0
    _show_status(db, [storage.get_sweep(db, sweep.id)], json_out)
    if _say_failed(db, sweep.id, spec_path) or code:
        raise typer.Exit(max(code, 1))


def _say_failed(db: Any, sweep_id: int, spec_path: Any = None) -> bool:
    """One line when runs of the sweep are left failed (their errors are in the status above);
    True then, so that the command exits non-zero and a script does not go on to fit a sweep
    with holes in it."""
    from hpscale.db import storage

    failed = storage.sweep_run_counts(db).get(sweep_id, {}).get("failed", 0)
    if failed:
        again = f"`hpscale sweep run {spec_path}`" if spec_path else "`hpscale sweep run` with its spec"
        err_console.print(f"error: {failed} runs failed (why: `hpscale sweep status`); {again} queues them again",
                          markup=False)
    return bool(failed)


def _show_status(db: Any, sweeps: list[Any], json_out: bool) -> None:
    from hpscale.sweeps.status import sweep_status

    statuses = [sweep_status(db, s) for s in sweeps]
    if json_out:
        print_json([s.to_dict() for s in statuses])
        return
    if not statuses:
        out_console.print("no sweeps: `hpscale sweep run SPEC` starts one")
        return
    from hpscale.fitting.optimum import describe_edges

    for st in statuses:
        # The group key holds N and D; the runs by status are one column of words: a table that
        # fits a 80-column terminal, whose text columns wrap rather than lose digits (issue 14).
        table = Table(title=f"sweep {st.name} (id {st.id}): {st.state}")
        # One optimizer: said in the title; several: a column.
        optimizers = sorted({g.optimizer for g in st.groups})
        several = len(optimizers) > 1
        if len(optimizers) == 1:
            table.title = f"{table.title}, optimizer {optimizers[0]}"
        columns = [("group (N, D)", "left")] + ([("opti-\nmizer", "left")] if several else []) + [
            ("runs", "left"), ("best\nlr", "right"), ("best\nbatch", "right"), ("best\nloss", "right"),
            ("bracketed", "left"), ("refine\nrounds", "right")]
        for col, justify in columns:
            # "fold": a value too long for its column continues on the next line, never cut.
            table.add_column(col, justify=justify, overflow="fold")
        for g in st.groups:
            runs = ", ".join(f"{n} {status}" + (f" ({g.stale} stale)" if status == "running" and g.stale else "")
                             for status, n in g.counts.items() if n)
            bracket = "-" if g.bracketed is None else ("yes" if g.bracketed else "no: best run " + describe_edges(g.edges))
            table.add_row(g.group, *([g.optimizer] if several else []), runs or "none", fmt(g.best_lr, 3),
                          fmt(g.best_batch_size), fmt(g.best_loss, 5), bracket, str(g.rounds))
        out_console.print(table)
        for f in st.failures:
            cells = ", ".join(f["cells"][:3]) + (f" and {len(f['cells']) - 3} more" if len(f["cells"]) > 3 else "")
            out_console.print(f"failed: {f['runs']} runs (cells {cells}): {f['error']}", markup=False)
        if st.failures:
            out_console.print("`hpscale sweep run SPEC` again queues the failed runs again (their groups are "
                              "refined once they finish)", markup=False)


@app.command("status")
def status_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Sweep name or id (default: every sweep).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Progress per group: runs done, diverged, running, queued; best lr, batch and loss so far;
    whether the optimum is bracketed by the lr grid; and why runs failed (each error, its runs
    and cells; `hpscale sweep run SPEC` queues them again)."""
    from hpscale.db import storage

    db = open_db()
    sweeps = [storage.get_sweep(db, name)] if name else storage.list_sweeps(db)
    _show_status(db, sweeps, json_out)


def worker_cmd(
    database: Annotated[Optional[str], typer.Option("--database", help="Database URL shared by the workers (default: the root --database / HPSCALE_DATABASE_URL).")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="Sweep name (default: the one sweep with work left).")] = None,
    device: DeviceOpt = None,
    cpu_threads: ThreadsOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Rich progress bars on a terminal.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print what this worker did as JSON.")] = False,
) -> None:
    """Join a sweep from this machine: train its queued cells until none is left."""
    from hpscale.db import storage
    from hpscale.sweeps.errors import SweepError

    if database:
        set_database_url(database)
    db = open_db()
    if sweep is None:
        counts = storage.sweep_run_counts(db)
        open_ = [s for s in storage.list_sweeps(db)
                 if counts.get(s.id, {}).get("queued", 0) or counts.get(s.id, {}).get("running", 0)]
        if not open_:
            raise SweepError(f"no sweep in {db.safe_url} has runs queued or running")
        if len(open_) > 1:
            raise SweepError(f"several sweeps have work left ({', '.join(s.name for s in open_)}): pick one with --sweep")
        sweep = open_[0].name
    summary = _work(db, sweep, device, cpu_threads, progress)
    if json_out:
        print_json(_summary_dict(summary))
    else:
        err_console.print(f"worker {summary.worker}: {summary.cells} cells, {summary.runs_done} runs done, "
                          f"{summary.runs_diverged} diverged, {summary.runs_failed} failed"
                          + (f" ({summary.runs_retried} failed attempts queued again)" if summary.runs_retried else ""))
    if summary.runs_failed:  # the runs this worker gave up on: a non-zero exit, as `sweep run`'s
        raise typer.Exit(1)
