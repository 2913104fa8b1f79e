"""WSD branches against separate runs: three token budgets per (lr, batch) from one trunk, or
each budget trained from scratch, on one device.

For every (width, batch) case of a small validation-family model (6 layers, widths 64-160,
seq 256; the python-source corpus or random tokens), the K learning rates (x seeds) of the case
train fused, as the sweep engine trains a cell, two ways:

(a) branched: ``sweeps.train.train_branches`` with the three WSD schedules; the stable trunk
    is trained once, and each shorter budget is a cooldown branched off it (snapshot and restore);
(b) separate: ``sweeps.train.train_cell`` once per budget, each a WSD run from step 0.

Both ways use the same warmup (``--warmup-fraction`` of the shortest budget's steps), seeds,
batches and evaluations, so on the CPU a branch's final loss equals the separate run's bit for
bit. It prints, per case, the device seconds of each way, the speed-up, and the speed-up the
step counts promise; then every run's final loss both ways with the relative difference.
Device seconds: wall time between synchronisations on a GPU; CPU time of this process on the
CPU (wall time there depends on whoever else shares the machine's cores). A probe compiles the
case's shapes first; what a new trainer still pays (a CUDA graph capture, any recompilation)
counts in its way's time, as it would in a worker. With ``--repeats R`` each way runs R times,
alternating, and the fastest counts.

Robust for a lent GPU: no input, progress on stderr, ``--out FILE`` gets the JSON result after
every case (a killed run keeps what finished), and ``--time-budget`` seconds is respected: a
short probe measures each case's step time first, and a case that would not finish in the time
left is skipped and reported as skipped.

GPU:  PYTHONUNBUFFERED=1 python benchmarks/wsd_branches.py --device cuda --out wsd.json
CPU smoke test: python benchmarks/wsd_branches.py --device cpu --tiny
Needs torch, numpy and (for python-source) tokenizers; nothing else of the project's dependencies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)
from hpscale.fitting.schedules import lr_schedule, shared_steps  # noqa: E402
from hpscale.sweeps.shape import GPTConfig, n_params  # noqa: E402
from hpscale.sweeps.train import CellTrainer, Progress, TrainConfig, train_branches, train_cell  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _numbers(text: str, positive: bool) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and (v > 0 if positive else v >= 0) for v in values):
        kind = "positive" if positive else "non-negative"
        raise argparse.ArgumentTypeError(f"expected {kind} numbers, got {text!r}")
    return values


def floats(text: str) -> list[float]:
    """'1e-3,2e-3' -> [0.001, 0.002] (positive numbers); argparse reports a bad value."""
    return _numbers(text, positive=True)


def ints(text: str, positive: bool = True) -> list[int]:
    """'16,32' -> [16, 32] (positive integers: widths, batch sizes)."""
    values = _numbers(text, positive=positive)
    if any(v != int(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return [int(v) for v in values]


def seed_list(text: str) -> list[int]:
    """'0,1' -> [0, 1] (non-negative integers: seeds start at 0)."""
    return ints(text, positive=False)


@dataclass
class Case:
    """One (width, batch) case: its K members trained on three budgets, both ways."""

    d_model: int
    n_layers: int
    batch_size: int
    n_params: int
    steps: list[int]  # per budget
    branch_steps: list[int]  # steps each budget shares with the trunk
    warmup_steps: int
    members: int  # K
    status: str = "pending"  # done | skipped
    reason: str = ""
    probe_step_s: float | None = None
    branched_s: float | None = None
    separate_s: float | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"d{self.d_model} x {self.n_layers} b{self.batch_size}"

    @property
    def branched_steps(self) -> int:
        return self.steps[-1] + sum(s - b for s, b in zip(self.steps[:-1], self.branch_steps[:-1]))

    @property
    def expected_speedup(self) -> float:
        return sum(self.steps) / self.branched_steps


class Data:
    """Training batches by step and fixed validation batches: random tokens, or python-source."""

    def __init__(self, kind: str, vocab: int, seq_len: int, cache: Path, max_bytes: int, seed: int = 0) -> None:
        self.kind, self.seq_len = kind, seq_len
        if kind == "random":
            self.vocab = vocab
            self.train = np.random.default_rng(seed).integers(0, vocab, size=1 << 24, dtype=np.int64)
            self.val = np.random.default_rng(seed + 1).integers(0, vocab, size=1 << 20, dtype=np.int64)
        else:
            from hpscale.sweeps import data

            log(f"building the python-source corpus in {cache} (cached after the first time) ...")
            t0 = time.perf_counter()
            corpus = data.build_python_source_corpus(cache, vocab_size=vocab, max_bytes=max_bytes)
            self.vocab = corpus.vocab_size
            self.train, self.val = corpus.train, corpus.val
            log(f"corpus: {self.train.size:,} train tokens, {self.val.size:,} validation tokens "
                f"({time.perf_counter() - t0:.0f} s)")

    def sampler(self, batch_size: int, seed: int = 0) -> Any:
        from hpscale.sweeps.data import BatchSampler

        return BatchSampler(self.train, batch_size, self.seq_len, seed=seed)

    def validation(self, n: int, batch_size: int) -> list[torch.Tensor]:
        from hpscale.sweeps.data import BatchSampler

        sampler = BatchSampler(self.val, batch_size, self.seq_len, seed=12345)
        return [sampler(i) for i in range(n)]


def wsd(steps: int, warmup: int, cooldown: float, final_ratio: float) -> np.ndarray:
    return lr_schedule("wsd", steps, 1.0, warmup_steps=min(warmup, steps), final_lr_ratio=final_ratio,
                       cooldown_fraction=cooldown)


def make_case(args: argparse.Namespace, d_model: int, batch: int) -> Case:
    cfg = GPTConfig(vocab_size=args.vocab, seq_len=args.seq_len, d_model=d_model, n_layers=args.layers,
                    n_heads=max(1, d_model // args.head_dim))
    n = n_params(cfg)
    steps = sorted({max(1, round(r * n / (batch * args.seq_len))) for r in args.budgets})
    warmup = int(round(args.warmup_fraction * steps[0]))
    trunk = lr_schedule("constant", steps[-1], 1.0, warmup_steps=min(warmup, steps[-1]))
    branch = [shared_steps(wsd(s, warmup, args.cooldown_fraction, args.final_lr_ratio), trunk) for s in steps]
    return Case(d_model, args.layers, batch, n, steps, branch, warmup, len(args.lrs) * len(args.seeds))


def model_config(args: argparse.Namespace, case: Case, vocab: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab, seq_len=args.seq_len, d_model=case.d_model, n_layers=case.n_layers,
                     n_heads=max(1, case.d_model // args.head_dim))


def train_config(args: argparse.Namespace, case: Case, steps: int) -> TrainConfig:
    return TrainConfig(batch_size=case.batch_size, total_steps=steps, eval_interval=args.eval_interval,
                       eval_batches=args.eval_batches, precision=args.precision, compile=args.compile,
                       cuda_graph=args.cuda_graph, progress_interval=max(1, args.progress_every))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> float:
    """Device seconds so far: wall time after a synchronisation on a GPU, process CPU time on the CPU."""
    sync(device)
    return time.perf_counter() if device.startswith("cuda") else time.process_time()


def probe(args: argparse.Namespace, case: Case, data: Data, device: str, lrs: list[float], seeds: list[int]) -> float:
    """Seconds per training step of this case, after compilation and graph capture (which this
    call pays, so that neither measured way does)."""
    trainer = CellTrainer(model_config(args, case, data.vocab), train_config(args, case, 1), lrs, seeds, device)
    sampler = data.sampler(case.batch_size)
    warm = 3 + 2 if trainer._graph is not None else 2  # compile, then capture the graph and replay
    for s in range(warm):
        trainer.step(sampler(s))
    trainer.evaluate(data.validation(1, args.eval_batch_size))
    sync(device)
    t0 = time.perf_counter()
    n = args.probe_steps
    for s in range(warm, warm + n):
        trainer.step(sampler(s))
    sync(device)
    return (time.perf_counter() - t0) / n


def progress_printer(label: str, every_s: float = 10.0) -> Any:
    last = [0.0]

    def show(p: Progress) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s or p.step == p.total_steps:
            last[0] = now
            log(f"  {label}: step {p.step}/{p.total_steps}, {p.tokens_per_s / 1e6:.2f}M member-tokens/s, "
                f"{p.elapsed_s:.0f} s")

    return show


def run_case(args: argparse.Namespace, case: Case, data: Data, device: str, deadline: float) -> None:
    lrs = [lr for lr in args.lrs for _ in args.seeds]
    seeds = [s for _ in args.lrs for s in args.seeds]
    cfg = model_config(args, case, data.vocab)
    sampler = data.sampler(case.batch_size)
    val = data.validation(args.eval_batches, args.eval_batch_size)
    schedules = [wsd(s, case.warmup_steps, args.cooldown_fraction, args.final_lr_ratio) for s in case.steps]
    log(f"{case.label}: N = {case.n_params:,}, K = {case.members}, budgets {case.steps} steps "
        f"(branch points {case.branch_steps[:-1]}, warmup {case.warmup_steps})")
    case.probe_step_s = probe(args, case, data, device, lrs, seeds)
    evals = sum(s // args.eval_interval + 2 for s in case.steps) * 2
    projected = args.repeats * ((case.branched_steps + sum(case.steps)) * case.probe_step_s * 1.15
                                + evals * case.probe_step_s)
    left = deadline - time.perf_counter()
    if projected > left:
        case.status, case.reason = "skipped", f"needs about {projected:.0f} s, {left:.0f} s left of the time budget"
        log(f"  skipped: {case.reason}")
        return
    log(f"  probe: {case.probe_step_s * 1e3:.1f} ms a step; both ways about {projected:.0f} s")

    for rep in range(args.repeats):
        tag = f" (repeat {rep + 1}/{args.repeats})" if args.repeats > 1 else ""
        t0 = clock(device)
        branched = train_branches(cfg, train_config(args, case, case.steps[-1]), lrs, schedules, sampler, val,
                                  seeds=seeds, device=device, on_progress=progress_printer(f"{case.label} branched{tag}"))
        took = clock(device) - t0
        case.branched_s = took if case.branched_s is None else min(case.branched_s, took)
        separate = []
        t0 = clock(device)
        for steps, schedule in zip(case.steps, schedules):
            separate.append(train_cell(cfg, train_config(args, case, steps), lrs, schedule, sampler, val, seeds=seeds,
                                       device=device,
                                       on_progress=progress_printer(f"{case.label} separate {steps}{tag}")))
        took = clock(device) - t0
        case.separate_s = took if case.separate_s is None else min(case.separate_s, took)
    for steps, got, ref in zip(case.steps, branched, separate):
        for a, b in zip(got, ref):
            rel = (abs(a.final_val_loss - b.final_val_loss) / b.final_val_loss
                   if a.final_val_loss is not None and b.final_val_loss is not None else None)
            case.runs.append({"lr": a.lr, "seed": a.seed, "steps": steps, "tokens": a.tokens,
                              "tokens_per_param": a.tokens / case.n_params, "status": [a.status, b.status],
                              "loss_branched": a.final_val_loss, "loss_separate": b.final_val_loss, "rel_diff": rel})
    case.status = "done"
    log(f"  branched {case.branched_s:.1f} s, separate {case.separate_s:.1f} s: "
        f"{case.separate_s / case.branched_s:.2f}x (steps promise {case.expected_speedup:.2f}x)")


def seed_noise(case: Case) -> float | None:
    """Pooled relative std of the separate runs' final loss across seeds of one (lr, budget):
    the run-to-run noise that a branch's difference from its separate run is judged by."""
    groups: dict[tuple[float, float], list[float]] = {}
    for r in case.runs:
        if r["loss_separate"] is not None:
            groups.setdefault((r["lr"], r["tokens_per_param"]), []).append(math.log(r["loss_separate"]))
    ss = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in groups.values())
    dof = sum(len(g) - 1 for g in groups.values())
    return math.sqrt(ss / dof) if dof else None


def table(cases: list[Case], args: argparse.Namespace, device: str) -> str:
    clock_name = "wall seconds" if device.startswith("cuda") else "CPU seconds of the process"
    lines = [f"WSD branches vs separate runs on {device}: {len(args.lrs)} lrs x {len(args.seeds)} seeds fused per "
             f"case, budgets {args.budgets} tokens/param, cooldown {args.cooldown_fraction:g}, seq {args.seq_len}, "
             f"{args.data} tokens; {clock_name}, best of {args.repeats}", ""]
    head = (f"{'case':<18}{'N':>11}{'K':>4}{'steps (budgets)':>20}{'branched s':>12}{'separate s':>12}"
            f"{'speed-up':>10}{'by steps':>10}{'max rel diff':>14}{'seed sd':>9}")
    lines += [head, "-" * len(head)]
    for c in cases:
        if c.status != "done":
            lines.append(f"{c.label:<18}{c.n_params:>11,}{c.members:>4}{str(c.steps):>20}   skipped: {c.reason}")
            continue
        diffs = [r["rel_diff"] for r in c.runs if r["rel_diff"] is not None]
        worst = f"{max(diffs):.2e}" if diffs else "-"
        lines.append(f"{c.label:<18}{c.n_params:>11,}{c.members:>4}{str(c.steps):>20}{c.branched_s:>12.2f}"
                     f"{c.separate_s:>12.2f}{c.separate_s / c.branched_s:>9.2f}x{c.expected_speedup:>9.2f}x{worst:>14}"
                     f"{'-' if (sd := seed_noise(c)) is None else f'{100 * sd:.2f}%':>9}")
    done = [c for c in cases if c.status == "done"]
    if done:
        b, s = sum(c.branched_s for c in done), sum(c.separate_s for c in done)  # type: ignore[misc]
        lines += ["-" * len(head), f"{'all cases':<53}{b:>12.2f}{s:>12.2f}{s / b:>9.2f}x"]
    lines += ["", f"{'case':<18}{'lr':>9}{'seed':>5}{'tok/param':>10}{'loss branched':>15}{'loss separate':>15}"
                  f"{'rel diff':>11}"]
    for c in done:
        for r in c.runs:
            lb, ls = r["loss_branched"], r["loss_separate"]
            lines.append(f"{c.label:<18}{r['lr']:>9.3g}{r['seed']:>5}{r['tokens_per_param']:>10.1f}"
                         f"{'diverged' if lb is None else f'{lb:.6f}':>15}{'diverged' if ls is None else f'{ls:.6f}':>15}"
                         f"{'-' if r['rel_diff'] is None else format(r['rel_diff'], '.2e'):>11}")
    return "\n".join(lines)


def saved_table(path: Path) -> str:
    """The tables of a result that ``--out`` wrote: the device, the arguments and every case come
    from the file, so a run whose printed output was lost can still be reported."""
    try:
        doc = json.loads(path.read_text())
        fields = set(Case.__dataclass_fields__)
        cases = [Case(**{k: v for k, v in c.items() if k in fields}) for c in doc["cases"]]
        args = argparse.Namespace(**doc["args"])
        return table(cases, args, f"{doc['device']} ({doc['machine']})")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SystemExit(f"error: {path}: not a result of --out ({e})") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default).")
    p.add_argument("--widths", type=ints, default=[64, 128, 160], help="d_model values (default 64,128,160).")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=32, help="d_model / n_heads (default 32: 2-5 heads).")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-sizes", type=ints, default=[16, 32], help="sequences per step (default 16,32).")
    p.add_argument("--lrs", type=floats, default=[1e-3, 2e-3, 4e-3, 8e-3], help="peak lrs, fused as members.")
    p.add_argument("--seeds", type=seed_list, default=[0], help="init seeds, fused as members.")
    p.add_argument("--budgets", type=floats, default=[10, 15, 20], help="token budgets, tokens per parameter.")
    p.add_argument("--cooldown-fraction", type=float, default=0.2)
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="of the shortest budget's steps.")
    p.add_argument("--final-lr-ratio", type=float, default=0.0)
    p.add_argument("--data", choices=("python-source", "random"), default="python-source")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--corpus-cache", type=Path, default=Path(tempfile.gettempdir()) / "hpscale-bench-corpus")
    p.add_argument("--corpus-bytes", type=int, default=60_000_000, help="python-source text kept (bytes).")
    p.add_argument("--eval-interval", type=int, default=200)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA only")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA")
    p.add_argument("--probe-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1, help="run each way this many times, alternating; the fastest counts.")
    p.add_argument("--progress-every", type=int, default=50, help="steps between progress lines (at most one per 10 s).")
    p.add_argument("--time-budget", type=float, default=540.0, help="seconds for everything; cases that would not "
                   "fit are skipped (default 540: one 10-minute command with room to spare).")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: width 32, 2 layers, seq 64, batch 8, "
                   "random tokens, budgets of 2, 3 and 4 tokens/param.")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here (after every case).")
    p.add_argument("--table", type=Path, default=None, metavar="JSON",
                   help="print the tables of a result that --out wrote, and exit (trains nothing).")
    args = p.parse_args(argv)
    if args.table is not None:
        print(saved_table(args.table))
        return 0
    if args.tiny:
        args.widths, args.layers, args.seq_len, args.batch_sizes = [32], 2, 64, [8]
        args.lrs, args.budgets, args.data, args.vocab = [2e-3, 4e-3], [2, 3, 4], "random", 512
        args.eval_interval, args.eval_batches, args.eval_batch_size, args.progress_every = 40, 2, 8, 40
    deadline = time.perf_counter() + args.time_budget
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = (torch.cuda.get_device_name(device) if device.startswith("cuda")
               else f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    log(f"device {device} ({machine}), torch {torch.__version__}")
    data = Data(args.data, args.vocab, args.seq_len, args.corpus_cache, args.corpus_bytes)
    cases = [make_case(args, w, b) for w in args.widths for b in args.batch_sizes]

    def save() -> None:
        if args.out is not None:
            doc = {"device": device, "machine": machine, "torch": torch.__version__,
                   "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "cases": [asdict(c) | {"expected_speedup": c.expected_speedup} for c in cases]}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(args.out.suffix + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, args.out)

    for case in cases:
        if time.perf_counter() >= deadline:
            case.status, case.reason = "skipped", "time budget spent"
            continue
        run_case(args, case, data, device, deadline)
        save()
    save()
    print(table(cases, args, f"{device} ({machine})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
