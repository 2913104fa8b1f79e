"""Start-up cost of the ``hpscale`` command (issue 14 item 1, issue 13 item 3).

Measures, each ``--repeats`` times in fresh processes, the wall time and the CPU time (user +
system, the process and its children) of:

- ``hpscale --help``;
- ``hpscale recommend --params 7e9 --tokens 1.4e12`` on a SQLite database that already holds
  its schema and the published laws (the first call, which creates them, is a warm-up);
- ``hpscale serve`` with ``--workers 1`` and ``--workers 2`` (``--serve-workers``): from the
  start of the process until ``/healthz`` has answered 200 from every worker, and the CPU the
  server's processes used by then (from /proc);
- the import of the CLI's and the API's module trees alone (``python -c "import ..."``).

``--load N`` keeps N busy-looping processes running during the measurement: a busy machine, on
which uvicorn kills a worker that does not answer its health ping within 5 s (issue 13 item 3).
Every address used is 127.0.0.1. Output: a Markdown table of medians (and the worst of the
repeats).

    python benchmarks/cli_start.py [--repeats 5] [--load 0] [--serve-workers 1,2]
"""

from __future__ import annotations

import _repo  # noqa: F401  (makes ``import hpscale`` work from a plain checkout)
from api_load import HOST, free_port, stop_server, tree_cpu_seconds

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

@dataclass
class Sample:
    wall_s: float
    cpu_s: float


def hpscale_cmd() -> list[str]:
    """The installed ``hpscale`` script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("hpscale")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpscale.service.cli"]


def timed_run(cmd: list[str], env: dict[str, str]) -> Sample:
    """Run ``cmd`` to completion; its wall time and the CPU time of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu)


def serve_start(env: dict[str, str], workers: int, timeout: float) -> Sample | None:
    """Start ``hpscale serve``; the time until /healthz answered 200 ten times in a row (every
    worker listens on the same port: one success may come from the first worker alone) and the
    CPU its processes used by then. None: no answer within ``timeout`` seconds."""
    port = free_port()
    cmd = hpscale_cmd() + ["serve", "--host", HOST, "--port", str(port), "--workers", str(workers),
                           "--no-access-log", "--log-level", "warning"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ok = 0
        while ok < 10:
            if proc.poll() is not None:
                raise SystemExit(f"hpscale serve exited with {proc.returncode}:\n"
                                 f"{proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
            if time.perf_counter() - t0 > timeout:
                return None
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as resp:
                    ok = ok + 1 if resp.status == 200 else 0
            except OSError:
                ok = 0
                time.sleep(0.05)
        wall = time.perf_counter() - t0
        return Sample(wall, tree_cpu_seconds(proc.pid) or 0.0)
    finally:
        stop_server(proc, timeout=30)


def _burn() -> None:  # pragma: no cover - a load generator
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement (default 5)")
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes kept running meanwhile (default 0)")
    ap.add_argument("--serve-workers", default="1,2", help="worker counts of `hpscale serve` to start (default 1,2)")
    ap.add_argument("--serve-timeout", type=float, default=60.0, help="seconds a server may take to answer (default 60)")
    args = ap.parse_args()
    if not 1 <= args.repeats <= 100 or not 0 <= args.load <= 64:
        raise SystemExit("--repeats must lie in [1, 100] and --load in [0, 64]")
    serve_workers = [int(w) for w in args.serve_workers.split(",") if w.strip()]

    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    tmp = Path(tempfile.mkdtemp(prefix="hpscale-start-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPSCALE_")}
        env.update(HPSCALE_DATA_DIR=str(tmp), HPSCALE_LOAD_DEMO="false")
        hp = hpscale_cmd()
        py = [sys.executable, "-c"]
        cases: list[tuple[str, list[str] | int]] = [
            ("hpscale --help", hp + ["--help"]),
            ("hpscale recommend --params 7e9 --tokens 1.4e12", hp + ["recommend", "--params", "7e9", "--tokens", "1.4e12"]),
            ("import hpscale.service.cli", py + ["import hpscale.service.cli"]),
            ("import hpscale.service.api (the app a serve worker builds)", py + ["import hpscale.service.api"]),
        ]
        cases += [(f"hpscale serve --workers {w} (until /healthz answers)", w) for w in serve_workers]
        timed_run(hp + ["recommend", "--params", "7e9", "--tokens", "1.4e12"], env)  # creates the database
        rows: list[tuple[str, list[Sample | None]]] = []
        for label, what in cases:
            samples = [serve_start(env, what, args.serve_timeout) if isinstance(what, int) else timed_run(what, env)
                       for _ in range(args.repeats)]
            rows.append((label, samples))
    finally:
        for b in burners:
            b.terminate()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{args.repeats} fresh processes each; {args.load} busy-looping processes alongside; "
          f"{os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.2f}")
    print("| command | wall, median | wall, worst | CPU, median | CPU, worst |")
    print("|---|---:|---:|---:|---:|")
    for label, samples in rows:
        started = [s for s in samples if s is not None]
        failed = len(samples) - len(started)
        note = f" ({failed} of {len(samples)} never answered within {args.serve_timeout:.0f} s)" if failed else ""
        if not started:
            print(f"| `{label}`{note} | - | - | - | - |")
            continue
        walls, cpus = [s.wall_s for s in started], [s.cpu_s for s in started]
        print(f"| `{label}`{note} | {statistics.median(walls):.2f} s | {max(walls):.2f} s | "
              f"{statistics.median(cpus):.2f} s | {max(cpus):.2f} s |")


if __name__ == "__main__":
    main()
