"""Sweep throughput: the fused K-member engine against one eager run at a time, on one GPU.

Reference grid: d_model 128 / 256 / 512 / 768 (4 / 6 / 8 / 8 layers, head_dim 64), 8 learning
rates, 2 batch sizes, a fixed number of steps, random tokens (no corpus needed).

(a) baseline: one run at a time, a plain unstacked GPT of the same architecture (nn.Linear,
    nn.RMSNorm, rotary, SDPA, GELU MLP, untied head) in eager PyTorch with bf16 autocast,
    torch.optim.AdamW(fused=True) and clip_grad_norm_: the simplest honest way to run the grid.
(b) engine: sweeps.train.CellTrainer, the 8 learning rates of a cell fused (K = 8), compiled, bf16.

Per cell it prints tokens/s of each (the engine's counts all K members), MFU (model FLOPs with
attention, sweeps.shape.flops_per_token, over 989 TFLOP/s dense bf16), the ratio, then the grid's
wall time: measured for the benchmark's steps (compilation included), and projected for a sweep
of --project-steps steps per run from the measured setup and step times.

With --optimizers (e.g. adamw,lion,sgd,sgd_sai,lamb,muon) it times instead the engine's step
with each optimizer (sweeps.optim) against AdamW's on the same cells, and prints a table of step
times and ratios to AdamW's beside the targets (1.15x for Lion, SGD, SGD-SaI and LAMB; 1.5x for
Muon, whose Newton-Schulz iterations are real matmuls); no baseline runs then.

Run: PYTHONPATH=. PYTHONUNBUFFERED=1 python benchmarks/sweep_throughput.py [--out DIR]
Optimizers: PYTHONPATH=. python benchmarks/sweep_throughput.py --sizes 512,768 --optimizers adamw,lion,sgd,sgd_sai,lamb,muon
CPU smoke test: PYTHONPATH=. python benchmarks/sweep_throughput.py --device cpu --tiny [--optimizers ...]
Needs torch and pydantic (sweeps.train reads its optimizer settings from sweeps.spec); nothing else
of the project.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)
from hpscale.sweeps.model import apply_rotary, rotary_tables  # noqa: E402
from hpscale.sweeps.shape import GPTConfig, flops_per_token, n_params  # noqa: E402
from hpscale.sweeps.spec import OPTIMIZER_SPECS  # noqa: E402
from hpscale.sweeps.train import CellTrainer, TrainConfig  # noqa: E402

PEAK_BF16 = 989e12  # H100 SXM dense bf16, FLOP/s
SIZES = [(128, 4), (256, 6), (512, 8), (768, 8)]  # (d_model, n_layers)
TARGET_RATIO = {128: 6.0, 256: 3.0, 512: 1.5, 768: 1.5}
# Step time of each optimizer / AdamW's at most (issue 17).
OPTIMIZER_TARGET = {"lion": 1.15, "sgd": 1.15, "sgd_sai": 1.15, "lamb": 1.15, "muon": 1.5}
# Each optimizer's lrs relative to AdamW's: where it trains rather than diverges (a diverged
# member still computes every kernel, but NaN weights would make the losses meaningless).
LR_SCALE = {"adamw": 1.0, "lion": 0.1, "sgd": 30.0, "sgd_sai": 0.1, "lamb": 1.0, "muon": 10.0}


class PlainBlock(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        d = c.d_model
        self.n_heads = c.n_heads
        self.attn_norm, self.mlp_norm = nn.RMSNorm(d, eps=c.norm_eps), nn.RMSNorm(d, eps=c.norm_eps)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.fc_proj = nn.Linear(d, c.mlp_ratio * d, bias=False), nn.Linear(c.mlp_ratio * d, d, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(B, T, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, d))
        return x + self.fc_proj(F.gelu(self.fc(self.mlp_norm(x))))


class PlainGPT(nn.Module):
    """One member, unstacked: the baseline."""

    def __init__(self, c: GPTConfig, device: torch.device) -> None:
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList(PlainBlock(c) for _ in range(c.n_layers))
        self.norm_f = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.cos, self.sin = rotary_tables(c.seq_len, c.head_dim, c.rope_base, device)

    def forward(self, tokens: Tensor) -> Tensor:
        idx, targets = tokens[:, :-1], tokens[:, 1:]
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        logits = self.lm_head(self.norm_f(x))
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


@dataclass
class Timing:
    setup_s: float  # model + optimizer creation (engine: also the first, compiling, step)
    step_s: float  # median-free mean over the timed steps, after warmup (seconds per step)
    wall_s: float  # everything this run / cell took in the benchmark
    tokens_per_s: float  # member-tokens per second over the timed steps
    peak_gib: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _batches(cfg: GPTConfig, batch: int, n: int, device: torch.device, seed: int) -> list[Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len + 1), device=device, generator=g) for _ in range(n)]


def time_baseline(cfg: GPTConfig, batch: int, lr: float, warmup: int, steps: int, device: torch.device) -> Timing:
    _sync(device)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = PlainGPT(cfg, device).to(device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    data = _batches(cfg, batch, 4, device, seed=1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    setup = time.perf_counter() - t0

    def one(i: int) -> None:
        with _autocast(device):
            loss = model(data[i % len(data)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(warmup):
        one(i)
    _sync(device)
    t1 = time.perf_counter()
    for i in range(steps):
        one(i)
    _sync(device)
    t2 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    step_s = (t2 - t1) / steps
    return Timing(setup, step_s, t2 - t0, batch * cfg.seq_len / step_s, peak)


def time_engine(cfg: GPTConfig, batch: int, lrs: list[float], warmup: int, steps: int, device: torch.device,
                compile: bool, cuda_graph: bool = True, optimizer: str = "adamw") -> tuple[Timing, list[float]]:
    _sync(device)
    t0 = time.perf_counter()
    tc = TrainConfig(batch_size=batch, total_steps=warmup + steps, compile=compile, cuda_graph=cuda_graph,
                     optimizer=OPTIMIZER_SPECS[optimizer]())
    trainer = CellTrainer(cfg, tc, lrs, [0] * len(lrs), device)
    data = _batches(cfg, batch, 4, device, seed=1)
    mult = torch.ones((), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.step(data[0], mult)  # compiles on the first call
    _sync(device)
    setup = time.perf_counter() - t0
    # The CUDA graph is captured at the trainer's 4th step: warm up past it, so that capture
    # stays out of the timed steps (and in the setup, as it is in a real run).
    for i in range(1, max(warmup, 5)):
        trainer.step(data[i % len(data)], mult)
    _sync(device)
    t1 = time.perf_counter()
    for i in range(steps):
        losses = trainer.step(data[i % len(data)], mult)
    _sync(device)
    t2 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    step_s = (t2 - t1) / steps
    final = losses.tolist()
    del trainer
    return Timing(setup, step_s, t2 - t0, len(lrs) * batch * cfg.seq_len / step_s, peak), final


def check_compiled_k1(cfg: GPTConfig, batch: int, device: torch.device) -> str:
    """DESIGN.md: compiling K = 1 failed in backward on torch 2.11. Compare compiled and eager K = 1."""
    data = _batches(cfg, batch, 3, device, seed=7)
    out, still_compiled = [], False
    for compile in (True, False):
        tr = CellTrainer(cfg, TrainConfig(batch_size=batch, total_steps=3, compile=compile), [1e-3], [0], device)
        out.append([tr.step(b).item() for b in data])
        if compile:
            still_compiled = tr._compiled  # False if the trainer fell back to eager
    rel = max(abs(a - b) / abs(b) for a, b in zip(*out))
    return f"K=1 compiled vs eager losses {out[0]} vs {out[1]}: max rel diff {rel:.2e} (compiled path kept: {still_compiled})"


def profile_step(fn, label: str, device: torch.device, out_dir: Path | None) -> None:  # type: ignore[no-untyped-def]
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(5):
            fn()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=60)
    print(f"\n--- profile: {label} (5 steps) ---\n{table}", flush=True)
    if out_dir is not None:
        (out_dir / f"profile_{label}.txt").write_text(table)


def profile_optimizers(cfg: GPTConfig, batch: int, optimizers: list[str], lrs: list[float], device: torch.device,
                       compile: bool, out_dir: Path | None) -> None:
    """The engine's step with each optimizer under the profiler (kernels by GPU time), without the
    CUDA graph: inside a replayed graph the profiler sees one launch, not the kernels."""
    data = _batches(cfg, batch, 1, device, seed=3)[0]
    for name in optimizers:
        tc = TrainConfig(batch_size=batch, total_steps=10, compile=compile, cuda_graph=False,
                         optimizer=OPTIMIZER_SPECS[name]())
        trainer = CellTrainer(cfg, tc, [lr * LR_SCALE[name] for lr in lrs], [0] * len(lrs), device)
        for _ in range(2):  # compiles on the first call
            trainer.step(data)
        profile_step(partial(trainer.step, data), f"{name}_d{cfg.d_model}_B{batch}", device, out_dir)
        del trainer  # its buffers go before the next optimizer's are made
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _shapes(text: str) -> list[tuple[int, int]]:
    """'64:6,192:6' -> [(64, 6), (192, 6)] (d_model, n_layers); argparse reports a bad value."""
    try:
        shapes = [tuple(int(v) for v in c.split(":")) for c in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"expected d_model:n_layers[,d_model:n_layers...], got {text!r}")
    return shapes  # type: ignore[return-value]


def _optimizers(text: str) -> list[str]:
    """'lion,muon' -> ['adamw', 'lion', 'muon'] (AdamW first: the reference); argparse reports a bad name."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in OPTIMIZER_SPECS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown optimizer {bad[0] if bad else text!r}; expected some of "
                                         f"{', '.join(OPTIMIZER_SPECS)}")
    return ["adamw"] + [n for n in dict.fromkeys(names) if n != "adamw"]


def compare_optimizers(cells: list[tuple[int, int, int]], optimizers: list[str], config, lrs: list[float],  # type: ignore[no-untyped-def]
                       args: argparse.Namespace, device: torch.device, compile: bool, cuda_graph: bool,
                       out_dir: Path | None) -> None:
    """Each optimizer's engine step on every cell, against AdamW's on the same cell: a table."""
    rows = []
    for d, layers, batch in cells:
        cfg = config(d, layers)
        adamw_s = math.nan
        for name in optimizers:
            scaled = [lr * LR_SCALE[name] for lr in lrs]
            eng, final = time_engine(cfg, batch, scaled, args.warmup, args.steps, device, compile, cuda_graph, name)
            if name == "adamw":
                adamw_s = eng.step_s
            row = {"d_model": d, "n_layers": layers, "batch": batch, "optimizer": name, "step_s": eng.step_s,
                   "ratio": eng.step_s / adamw_s, "tokens_per_s": eng.tokens_per_s, "setup_s": eng.setup_s,
                   "peak_gib": eng.peak_gib, "final_losses": final}
            rows.append(row)
            print(f"d={d:4d} L={layers} B={batch:3d} {name:8s}: step {eng.step_s * 1e3:8.2f} ms, "
                  f"{row['ratio']:.3f}x AdamW's, setup {eng.setup_s:5.1f} s, peak {eng.peak_gib:5.1f} GiB, "
                  f"losses {min(final):.3f}..{max(final):.3f}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print("\n| d_model | layers | batch (seq) | K | optimizer | step ms | vs AdamW | target | tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = OPTIMIZER_TARGET.get(r["optimizer"])
        verdict = "" if target is None else f"<= {target:.2f}x " + ("(met)" if r["ratio"] <= target else "(missed)")
        print(f"| {r['d_model']} | {r['n_layers']} | {r['batch']} | {len(lrs)} | {r['optimizer']} | "
              f"{r['step_s'] * 1e3:.2f} | {r['ratio']:.3f}x | {verdict or '(reference)'} | {r['tokens_per_s']:,.0f} |")
    if out_dir:
        (out_dir / "optimizer_step_times.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
             "torch": torch.__version__, "lrs": lrs, "lr_scale": LR_SCALE, "seq_len": args.seq_len,
             "steps": args.steps, "warmup": args.warmup, "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny CPU smoke configuration")
    ap.add_argument("--batches", default="8,16", help="batch sizes in sequences")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--project-steps", type=int, default=2000)
    ap.add_argument("--sizes", default="", help="subset of d_model values, e.g. 128,512")
    ap.add_argument("--extra-cells", default="", help="cells outside the grid, 'd:batch,...' (e.g. 512:32,768:32)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-cuda-graph", action="store_true", help="engine without CUDA graph capture of the step")
    ap.add_argument("--shapes", type=_shapes, default=[], help="replace the grid's sizes: 'd_model:n_layers,...' (e.g. 64:6,192:6)")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--lr-count", type=int, default=8, help="learning rates per cell (K)")
    ap.add_argument("--engine-only", action="store_true", help="skip the one-run-at-a-time baseline (a)")
    ap.add_argument("--profile", action="store_true",
                    help="profile the smallest and a d>=512 cell after the grid (with --optimizers: each "
                         "optimizer's step on the largest size's first batch)")
    ap.add_argument("--optimizers", type=_optimizers, default=[],
                    help=f"time the engine's step per optimizer against AdamW's instead ({','.join(OPTIMIZER_SPECS)})")
    ap.add_argument("--out", default=os.environ.get("OUT", ""))
    args = ap.parse_args()
    device = torch.device(args.device)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    sizes = SIZES
    if args.sizes:
        wanted = {int(s) for s in args.sizes.split(",")}
        sizes = [s for s in SIZES if s[0] in wanted]
    batches = [int(b) for b in args.batches.split(",")]
    if args.shapes:
        sizes = args.shapes
    lrs = [float(x) for x in torch.logspace(math.log10(3e-4), math.log10(3e-3), args.lr_count).tolist()]
    seq_len, vocab = args.seq_len, args.vocab
    if args.tiny:
        sizes, batches, seq_len, vocab = [(64, 2), (128, 2)], [2, 4], 32, 256
        lrs = lrs[:4]
    head_dim = args.head_dim
    compile = not args.no_compile and device.type == "cuda"
    cuda_graph = not args.no_cuda_graph
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    print(f"grid: sizes {sizes}, {len(lrs)} lrs, batches {batches} x {seq_len} tokens, vocab {vocab}, "
          f"{args.warmup} warmup + {args.steps} timed steps, compile={compile}, cuda_graph={cuda_graph}", flush=True)

    def config(d: int, layers: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab, seq_len=seq_len, d_model=d, n_layers=layers, n_heads=max(1, d // head_dim))

    if compile:
        print(check_compiled_k1(config(*sizes[0]), batches[0], device), flush=True)

    if args.optimizers:
        compare_optimizers([(d, layers, b) for d, layers in sizes for b in batches], args.optimizers, config, lrs,
                           args, device, compile, cuda_graph, out_dir)
        if args.profile:
            profile_optimizers(config(*sizes[-1]), batches[0], args.optimizers, lrs, device, compile, out_dir)
        return
    layers_of = dict(SIZES) | dict(sizes)
    extra = [(int(d), int(b)) for d, b in (c.split(":") for c in args.extra_cells.split(",") if c)]
    cells = [(d, layers, b, True) for d, layers in sizes for b in batches]
    cells += [(d, layers_of[d], b, False) for d, b in extra]
    rows = []
    grid_t0 = time.perf_counter()
    for d, layers, batch, in_grid in cells:
        cfg = config(d, layers)
        base = [] if args.engine_only else [time_baseline(cfg, batch, lr, args.warmup, args.steps, device) for lr in lrs]
        eng, final = time_engine(cfg, batch, lrs, args.warmup, args.steps, device, compile, cuda_graph)
        b_tps = sum(t.tokens_per_s for t in base) / len(base) if base else math.nan
        fpt = flops_per_token(cfg)
        row = {"d_model": d, "n_layers": layers, "n_params": n_params(cfg), "batch": batch,
               "baseline_tokens_per_s": b_tps, "engine_tokens_per_s": eng.tokens_per_s,
               "baseline_mfu": b_tps * fpt / PEAK_BF16, "engine_mfu": eng.tokens_per_s * fpt / PEAK_BF16,
               "ratio": eng.tokens_per_s / b_tps, "baseline": [asdict(t) for t in base],
               "engine": asdict(eng), "engine_final_losses": final, "in_grid": in_grid}
        rows.append(row)
        print(f"{'' if in_grid else '(extra) '}d={d:4d} L={layers} B={batch:3d}: baseline {b_tps:11,.0f} tok/s (MFU {row['baseline_mfu']:6.1%}), "
              f"engine {eng.tokens_per_s:11,.0f} tok/s (MFU {row['engine_mfu']:6.1%}), ratio {row['ratio']:5.2f}x; "
              f"engine setup+compile {eng.setup_s:5.1f} s, peak {eng.peak_gib:5.1f} GiB; "
              f"losses {min(final):.3f}..{max(final):.3f}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"benchmark wall time {time.perf_counter() - grid_t0:.1f} s", flush=True)

    S = args.project_steps
    grid = [r for r in rows if r["in_grid"]]
    if args.engine_only:
        print("\n| d_model | layers | batch (seq) | K | engine tok/s | engine MFU | step ms | setup s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            e = r["engine"]
            print(f"| {r['d_model']} | {r['n_layers']} | {r['batch']} | {len(lrs)} | {r['engine_tokens_per_s']:,.0f} | "
                  f"{r['engine_mfu']:.1%} | {e['step_s'] * 1e3:.2f} | {e['setup_s']:.1f} |")
        return
    measured_base = sum(t["wall_s"] for r in grid for t in r["baseline"])
    measured_eng = sum(r["engine"]["wall_s"] for r in grid)
    proj_base = sum(t["setup_s"] + S * t["step_s"] for r in grid for t in r["baseline"])
    proj_eng = sum(r["engine"]["setup_s"] + S * r["engine"]["step_s"] for r in grid)
    print("\n| d_model | layers | N (non-emb) | batch (seq) | (a) eager tok/s | (a) MFU | (b) engine tok/s | (b) MFU | ratio | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['d_model']} | {r['n_layers']} | {r['n_params'] / 1e6:.1f}M | {r['batch']}{'' if r['in_grid'] else ' (extra)'} | "
              f"{r['baseline_tokens_per_s']:,.0f} | {r['baseline_mfu']:.1%} | {r['engine_tokens_per_s']:,.0f} | "
              f"{r['engine_mfu']:.1%} | {r['ratio']:.2f}x | {TARGET_RATIO.get(r['d_model'], 0):.1f}x |")
    print(f"\ngrid of {len(grid) * len(lrs)} runs, {args.steps + args.warmup} steps each (measured, compilation included): "
          f"(a) {measured_base:.1f} s, (b) {measured_eng:.1f} s, speed-up {measured_base / measured_eng:.2f}x")
    print(f"grid projected to {S} steps per run (setup + {S} x measured step time): "
          f"(a) {proj_base / 60:.1f} min, (b) {proj_eng / 60:.1f} min, speed-up {proj_base / proj_eng:.2f}x", flush=True)
    if out_dir:
        (out_dir / "sweep_throughput.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
             "torch": torch.__version__, "lrs": lrs, "seq_len": seq_len, "vocab": vocab, "steps": args.steps,
             "warmup": args.warmup, "rows": rows, "grid_measured_s": [measured_base, measured_eng],
             "grid_projected_s": [proj_base, proj_eng], "project_steps": S}, indent=1))

    if args.profile:
        for d, layers in ([sizes[0], sizes[-1]] if len(sizes) > 1 else sizes):
            cfg, batch = config(d, layers), batches[0]
            data = _batches(cfg, batch, 1, device, seed=3)[0]
            trainer = CellTrainer(cfg, TrainConfig(batch_size=batch, total_steps=10, compile=compile), lrs, [0] * len(lrs), device)
            trainer.step(data)
            profile_step(lambda: trainer.step(data), f"engine_d{d}_B{batch}", device, out_dir)
            del trainer
            model = PlainGPT(cfg, device).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")

            def base_step() -> None:
                with _autocast(device):
                    loss = model(data)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

            base_step()
            profile_step(base_step, f"baseline_d{d}_B{batch}", device, out_dir)
            del model, opt
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
