"""Wall time of the tiny CPU sweep as a new user runs it (issue 14 item 2), against the plan's
estimate, for several torch thread counts.

Each trial runs ``hpscale sweep run sweeps/examples/tiny_cpu.yaml [--cpu-threads N]`` in a new
data folder (so the corpus and its tokenizer are built as on a first run), with stderr not a
terminal, and reports its wall time, its CPU time (user + system), the estimate the command
printed before training, the runs it trained (refinement may add some) and the machine's load
average (other work on the machine slows a run down, and slows more threads down more).

    python benchmarks/tiny_sweep.py [--threads default,1,2] [--repeats 1] [--spec PATH]
"""

from __future__ import annotations

import _repo  # noqa: F401  (makes ``import hpscale`` work from a plain checkout)

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "sweeps" / "examples" / "tiny_cpu.yaml"


def trial(spec: Path, threads: str) -> dict[str, object]:
    """One fresh run of the sweep; what it took and what it said."""
    tmp = Path(tempfile.mkdtemp(prefix="hpscale-tiny-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPSCALE_")}
    env["HPSCALE_DATA_DIR"] = str(tmp)
    cmd = [sys.executable, "-m", "hpscale.service.cli", "sweep", "run", str(spec), "--json"]
    if threads != "default":
        cmd += ["--cpu-threads", threads]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        wall = time.perf_counter() - t0
        shutil.rmtree(tmp, ignore_errors=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {out.returncode}:\n{out.stderr[-3000:]}")
    estimate = re.search(r"estimated ([^ ]+ \w+)", out.stderr)
    trained = sum(int(m) for m in re.findall(r": (\d+) done", out.stderr)) + \
        sum(int(m) for m in re.findall(r", (\d+) diverged", out.stderr))
    return {"threads": threads, "wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "estimate": estimate.group(1) if estimate else "?", "runs": trained, "load": load,
            "progress_lines": out.stderr.count(": step ")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="default,1,2", help="comma-separated torch thread counts, 'default' for "
                    "hpscale's own choice (default: default,1,2)")
    ap.add_argument("--repeats", type=int, default=1, help="trials per thread count, interleaved (default 1)")
    ap.add_argument("--spec", type=Path, default=TINY, help="sweep spec (default: the tiny CPU example)")
    args = ap.parse_args()
    settings = [t.strip() for t in args.threads.split(",") if t.strip()]
    if not settings or any(t != "default" and not t.isdigit() for t in settings) or not 1 <= args.repeats <= 20:
        raise SystemExit("--threads takes 'default' or whole numbers; --repeats lies in [1, 20]")
    rows = [trial(args.spec, t) for _ in range(args.repeats) for t in settings]
    print(f"`hpscale sweep run {args.spec.name}` in a new data folder each time; {os.cpu_count()} CPUs")
    print("| threads | wall | CPU | plan's estimate | runs trained | progress lines on stderr | load average at start |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['wall']:.1f} s | {r['cpu']:.1f} s | {r['estimate']} | {r['runs']} | "
              f"{r['progress_lines']} | {r['load']:.2f} |")


if __name__ == "__main__":
    main()
