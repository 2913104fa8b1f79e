"""``hpscale sweep plan|run|status`` and ``hpscale worker`` through the CLI, with the real trainer:
the tiny CPU example (2 sizes x 4 learning rates x 2 batch sizes) end to end into SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import hp, hp_json

from hpscale.db import storage
from hpscale.db.engine import Database

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "sweeps" / "examples" / "tiny_cpu.yaml"
TINY_OPTIMIZERS = ROOT / "sweeps" / "examples" / "tiny_cpu_optimizers.yaml"
WSD = ROOT / "sweeps" / "examples" / "tiny_cpu_wsd.yaml"


def test_plan_prints_cells_runs_flops_and_the_assumed_rate(cli_env: Path) -> None:
    result = hp("sweep", "plan", TINY)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "N24576-D16384-B4" in out and "N98304-D16384-B8" in out and "32 x 2, 2" in out
    assert "2 groups, 4 cells, 16 runs, 1.53e+11 FLOPs" in out
    # Model FLOPs at 2e10/s, 7 s to start and 5 ms + 2.2 ms per member a step (measured on the CPU):
    # 1.53e11 / 2e10 + 7 + 384 steps x (5 + 4 x 2.2) ms = 7.6 + 7 + 5.3 = 20 s (it was 31 s of FLOPs alone).
    assert "estimated 20 s on cpu assuming 2e+10 model FLOP/s" in " ".join(out.split())
    info = hp_json("sweep", "plan", TINY, "--device", "cuda", "--flops-per-s", "1e12")
    assert info["runs"] == 16 and info["assumed_flops_per_s"] == 1e12 and info["device"] == "cuda"
    assert info["estimated_seconds"] == info["flops"] / 1e12
    assert [c["steps"] for c in info["cell_list"]] == [128, 64, 128, 64]
    assert not (cli_env / "hpscale.db").exists()  # planning stores nothing


def test_bad_spec_is_one_line_and_no_traceback(cli_env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("count: 4", "count: 1"))
    result = hp("sweep", "plan", bad)
    assert result.exit_code == 1
    assert result.stderr == f"error: {bad}: lr.count: Input should be greater than or equal to 2 (got 1)\n"
    result = hp("sweep", "run", tmp_path / "missing.yaml")
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot read sweep spec")
    assert "Traceback" not in result.stderr + result.stdout


def test_tiny_cpu_sweep_end_to_end_then_status_and_resume(cli_env: Path) -> None:
    result = hp("sweep", "run", TINY, "--cpu-threads", "1")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "sweep tiny-cpu: 4 cells, 16 runs" in result.stderr
    assert "cell N98304-D16384-B8: " in result.stderr and "finished" in result.stdout
    db = Database(f"sqlite:///{cli_env / 'hpscale.db'}")
    runs = storage.list_runs(db, sources=["tiny-cpu"])
    # 16 planned runs; a group whose best lr lands on the grid's edge adds one lr to each of its
    # two cells (refine: max_rounds 1, points 1). Which happens depends on the corpus: the
    # python-source files of whatever environment runs the tests.
    planned = [r for r in runs if r.tags["round"] == 0]
    assert len(planned) == 16 and len(runs) in (16, 18, 20)
    assert {r.status for r in runs} <= {"done", "diverged"}
    done = [r for r in runs if r.status == "done"]
    assert len(done) >= 12 and all(1.0 < r.final_loss < 7.0 for r in done)  # ln(512) = 6.24 at init
    sweep = storage.get_sweep(db, "tiny-cpu")
    assert len(sweep.corpus_hash) == 64 and all(r.corpus_hash == sweep.corpus_hash for r in runs)
    assert all(r.code_version and r.spec["name"] == "tiny-cpu" and r.seed == 0 for r in runs)
    curve = storage.get_curve(db, done[0].id)
    assert curve[0].step == 0 and curve[-1].step == done[0].config["trained_steps"]
    assert curve[-1].val_loss == done[0].final_loss and curve[-1].val_loss < curve[0].val_loss

    status = hp_json("sweep", "status")
    (st,) = status
    assert st["name"] == "tiny-cpu" and st["finished"] and st["counts"]["done"] == len(done)
    for g in st["groups"]:
        assert g["counts"]["queued"] == 0 and g["best_loss"] is not None and g["bracketed"] in (True, False)
    human = hp("sweep", "status", "tiny-cpu")
    assert human.exit_code == 0 and "N24576-D16384" in human.stdout and "bracketed" in human.stdout

    # A rerun resumes: nothing left, nothing retrained, no row added.
    finished = {r.name: r.finished_at for r in runs}
    again = hp("sweep", "run", TINY, "--cpu-threads", "1")
    assert again.exit_code == 0, again.stderr
    assert "cell " not in again.stderr
    rerun = storage.list_runs(db, sources=["tiny-cpu"])
    assert {r.name: r.finished_at for r in rerun} == finished
    # A worker joining a finished sweep has nothing to do.
    joined = hp("worker", "--database", db.url, "--sweep", "tiny-cpu", "--json")
    assert joined.exit_code == 0 and json.loads(joined.stdout)["cells"] == 0
    db.dispose()


def test_tiny_cpu_sweep_over_two_optimizers_end_to_end(cli_env: Path) -> None:
    result = hp("sweep", "run", TINY_OPTIMIZERS, "--cpu-threads", "1")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "sweep tiny-cpu-optimizers: 4 cells, 12 runs" in result.stderr
    db = Database(f"sqlite:///{cli_env / 'hpscale.db'}")
    runs = storage.list_runs(db, sources=["tiny-cpu-optimizers"])
    assert len(runs) == 12 and {r.status for r in runs} == {"done"}
    by_opt = {o: [r for r in runs if r.optimizer == o] for o in ("adamw", "lion")}
    assert [len(v) for v in by_opt.values()] == [6, 6]
    assert sorted({r.lr for r in by_opt["lion"]}) == [0.001, 0.00316228, 0.01]  # Lion's own grid
    assert {r.group_key for r in by_opt["lion"]} == {"lion-N24576-D8192"}
    assert {r.group_key for r in by_opt["adamw"]} == {"N24576-D8192"}
    # Every run trained: its loss fell from ln(512) = 6.24. Lion's lowest lr at batch 8 (32 steps
    # of lr <= 0.001) falls least, by 0.24 nats with tokenizers 0.23 (by 0.3+ with an older BPE),
    # so the bar is 0.1 nats (the eval batches are fixed: a model that does not train stays put).
    for r in runs:
        curve = storage.get_curve(db, r.id)
        assert curve[-1].val_loss == r.final_loss < curve[0].val_loss - 0.1
    # The two optimizers trained different models from the same start: their losses differ.
    assert {round(r.final_loss, 6) for r in by_opt["adamw"]}.isdisjoint({round(r.final_loss, 6) for r in by_opt["lion"]})
    (st,) = hp_json("sweep", "status")
    assert [(g["group"], g["optimizer"]) for g in st["groups"]] == [("N24576-D8192", "adamw"), ("lion-N24576-D8192", "lion")]
    exported = hp("export", "runs", "--format", "jsonl").stdout.splitlines()
    assert sorted(json.loads(line)["optimizer"] for line in exported) == ["adamw"] * 6 + ["lion"] * 6


def test_branched_sweep_plans_trunks_and_trains_each_budget_as_a_run(cli_env: Path, tmp_path: Path) -> None:
    spec = tmp_path / "wsd.yaml"  # the example with its smaller size only: 2 trunks, 24 runs
    spec.write_text(WSD.read_text().replace("  - {d_model: 64, n_layers: 2, n_heads: 2}\n", ""))
    info = hp_json("sweep", "plan", spec)
    assert [t["trunk"] for t in info["trunks"]] == ["N24576-B4-trunk", "N24576-B8-trunk"]
    assert info["trunks"][0] == {"trunk": "N24576-B4-trunk", "steps": 128, "branch_steps": [51, 76],
                                 "cells": ["N24576-D8192-B4", "N24576-D12288-B4", "N24576-D16384-B4"]}
    # Trunk of 128 steps plus cooldowns of 13 and 20, against 64 + 96 + 128 trained separately.
    assert info["separate_flops"] / info["flops"] == pytest.approx(288 / 161, rel=0.03)
    assert info["flops_saved"] == pytest.approx(info["separate_flops"] - info["flops"])
    human = hp("sweep", "plan", spec)
    assert "2 trunks:" in human.stdout and "leaves it after" in human.stdout and "step 51" in human.stdout

    result = hp("sweep", "run", spec, "--cpu-threads", "1")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "trunk N24576-B4-trunk (3 budgets): 12 runs, 161 steps" in result.stderr
    assert f"24 runs, {info['flops']:.3g} FLOPs (2 trunks save {info['flops_saved']:.3g})" in result.stderr
    db = Database(f"sqlite:///{cli_env / 'hpscale.db'}")
    runs = storage.list_runs(db, sources=["tiny-cpu-wsd"])
    assert len(runs) == 24 and {r.status for r in runs} <= {"done", "diverged"}
    assert {r.trunk_key for r in runs} == {"N24576-B4-trunk", "N24576-B8-trunk"}
    by_budget = {int(r.tokens): r for r in runs if r.batch_size == 4 and r.lr == 0.001}
    assert sorted(by_budget) == [8192, 12288, 16384] and {r.status for r in by_budget.values()} == {"done"}
    curves = {d: [(p.step, p.val_loss) for p in storage.get_curve(db, r.id)] for d, r in by_budget.items()}
    for d, branch_step in ((8192, 51), (12288, 76)):
        mine, trunk = curves[d], curves[16384]
        shared = [p for p in mine if p[0] <= branch_step]
        assert shared == trunk[:len(shared)] and len(shared) == branch_step // 16 + 1  # from step 0, the trunk's
        assert mine[-1][0] == by_budget[d].config["trained_steps"] == d // 128
        assert mine[-1][1] == by_budget[d].final_loss != trunk[len(mine) - 1][1]  # its own cooldown
    losses = [by_budget[d].final_loss for d in (8192, 12288, 16384)]
    assert losses == sorted(losses, reverse=True)  # more tokens, lower loss
    # To the fits, a branch is an ordinary run: its lr schedule (the trunk's warmup, its own
    # cooldown) is rebuilt exactly, and the three cooldown curves fit a trajectory law.
    from hpscale.fitting.schedules import infer_warmup
    from hpscale.service.fits import per_step_lr

    for r in by_budget.values():
        points = storage.get_curve(db, r.id)
        lr, guessed = per_step_lr(r, points)
        assert lr.size == r.config["steps"] and [lr[p.step - 1] for p in points[1:]] == pytest.approx([p.lr for p in points[1:]])
        assert infer_warmup(lr) == r.config["warmup_steps"] == 6  # 10% of the shortest budget's 64 steps
        assert not guessed
    names = ",".join(r.name for r in by_budget.values())
    fit = hp_json("fit", "--kind", "trajectory", "--source", "tiny-cpu-wsd", "--runs", names)
    assert fit["kind"] == "trajectory" and sorted(fit["run_ids"]) == sorted(r.id for r in by_budget.values())
    db.dispose()


def test_worker_without_work_says_so(cli_env: Path) -> None:
    result = hp("worker")
    assert result.exit_code == 1 and result.stderr.startswith("error: no sweep in ") and "queued or running" in result.stderr
    result = hp("worker", "--sweep", "nope")
    assert result.exit_code == 1 and "no sweep 'nope'" in result.stderr
    assert hp("sweep", "status").stdout.startswith("no sweeps")


def test_help_and_status_do_not_import_torch_or_optuna(cli_env: Path) -> None:
    code = (
        "import sys\n"
        "from hpscale.service.cli import app\n"
        "for args in (['--help'], ['sweep', '--help'], ['sweep', 'status']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'optuna', 'fastapi', 'uvicorn', 'psycopg') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_one_worker_process_per_visible_gpu(cli_env: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    from hpscale.service.cli import sweep as sweep_cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert sweep_cli._gpu_slots("auto") == ["3", "5"] and sweep_cli._gpu_slots("cpu") == []
    assert sweep_cli._gpu_slots("cuda:1") == []  # one named GPU: one worker, in-process
    started = []

    class FakeProc:
        def __init__(self, args: list[str], env: dict[str, str]) -> None:
            started.append((args, env["CUDA_VISIBLE_DEVICES"]))
            assert env["HPSCALE_DATABASE_URL"].startswith("sqlite:///")

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(sweep_cli.subprocess, "Popen", FakeProc)
    assert sweep_cli._spawn_workers(["3", "5"], "s", None) == 0
    assert [slot for _, slot in started] == ["3", "5"]
    args = started[0][0]
    assert args[args.index("--sweep") + 1] == "s" and args[args.index("--device") + 1] == "cuda"
    assert "worker" in args and "--database" not in args  # the URL goes by environment, never argv


def test_status_fits_a_narrow_terminal_without_cutting_values(cli_env: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from hpscale.service.cli import sweep as sweep_cli

    assert hp("demo", "load").exit_code == 0
    st = next(s for s in hp_json("sweep", "status") if s["name"] == "val4")
    for width in (80, 120):
        out = io.StringIO()
        monkeypatch.setattr(sweep_cli, "out_console", Console(file=out, width=width, color_system=None))
        assert hp("sweep", "status", "val4").exit_code == 0
        text = out.getvalue()
        assert "…" not in text and max(map(len, text.splitlines())) <= width
        flat = " ".join(text.split())
        for g in st["groups"]:
            assert g["group"] in text and f"{g['counts']['done']} done" in flat and f"{g['best_loss']:.5g}" in text


def test_progress_lines_inside_a_cell_when_stderr_is_not_a_terminal(capsys) -> None:  # type: ignore[no-untyped-def]
    # A log or CI sees the sweep move during a long cell, not only when a cell starts and ends.
    from types import SimpleNamespace

    from hpscale.service.cli.sweep import RichReporter

    cell = SimpleNamespace(key="N98304-D16384-B8", members=[1, 2, 3, 4], steps=64)
    task = SimpleNamespace(key=cell.key, cell=cell, cells=[cell], members=cell.members, steps=64, branches=False)
    with RichReporter(live=False, line_every_s=0.0) as reporter:
        reporter.cell_started(task, 4, 16)
        for step in (16, 32, 48, 64):
            reporter.progress(step, 64, 12_345.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "cell N98304-D16384-B8: 4 runs, 64 steps (4 of 16 runs finished)"
    steps = [line for line in lines if ": step " in line]
    assert [line.split(": step ")[1].split(",")[0] for line in steps] == ["16/64", "32/64", "48/64"]
    assert "12,345 tok/s, about" in steps[0] and steps[0].endswith(" left")
    with RichReporter(live=False, lines=False, line_every_s=0.0) as quiet:  # --no-progress
        quiet.cell_started(task, 0, 16)
        quiet.progress(16, 64, 1.0)
    assert ": step " not in capsys.readouterr().err


def test_an_error_text_with_brackets_is_printed_as_it_is(capsys) -> None:  # type: ignore[no-untyped-def]
    # Read as Rich markup, "[/dev/shm]" raised inside the worker's failure path and killed it.
    from hpscale.service.cli.sweep import RichReporter

    with RichReporter(live=False) as reporter:
        reporter.message("cell X failed: OSError: expected [/dev/shm] to be writable [bold]")
    assert "expected [/dev/shm] to be writable [bold]" in capsys.readouterr().err


def test_runs_left_failed_are_said_and_exit_non_zero(cli_env: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A script running `hpscale sweep run spec && hpscale fit ...` must not fit a sweep with holes.
    from hpscale.service.cli import sweep as sweep_cli

    class Failing:
        corpus_hash = "f" * 64

        def __call__(self, task, *args):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(sweep_cli, "_runner_factory", lambda device, threads: (lambda spec: Failing()))
    spec = tmp_path / "failing.yaml"
    spec.write_text(TINY.read_text().replace("name: tiny-cpu", "name: tiny-failing")
                    .replace("workers:", "workers:\n  retries: 0"))
    result = hp("sweep", "run", spec)
    assert result.exit_code == 1 and "Traceback" not in result.stderr + result.stdout
    import re

    said = re.search(r"error: (\d+) runs failed \(why: `hpscale sweep status`\); `hpscale sweep run (\S+)` queues "
                     r"them again", " ".join(result.stderr.split()))
    assert said and said.group(2) == str(spec)
    failed = int(said.group(1))
    shown = " ".join(result.stdout.split())
    assert f"failed: {failed} runs (cells" in shown and "RuntimeError: CUDA out of memory (simulated)" in shown
    status = hp_json("sweep", "status", "tiny-failing")[0]
    # Exactly the 16 planned runs: a group whose runs failed is not refined (read as all diverged,
    # it once grew lower lrs that failed too).
    assert status["counts"]["failed"] == failed == 16 and sum(f["runs"] for f in status["failures"]) == 16
