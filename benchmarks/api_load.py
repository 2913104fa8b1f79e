"""Load benchmark of ``GET /api/v1/recommend`` on loopback (issue 5's target on a 2-core machine:
at least 1,000 requests/s sustained with p99 latency under 10 ms and no errors).

Starts ``hpscale serve`` on 127.0.0.1 and a free port with a new temporary SQLite database, waits
for /healthz, warms up, then measures two things, ``--duration`` seconds each:

1. sustained: requests sent at a fixed rate (``--rate``, default 1,000/s) over a pool of
   keep-alive connections, whatever the answers' speed (an open loop). Latency counts from
   the moment a request was due, so a server that falls behind is charged for the wait too.
   This is the target's measurement. Client: a small asyncio HTTP/1.1 client.
2. maximum: a fixed number of connections each sending its next request as soon as the last
   is answered (a closed loop), so the server runs flat out; latency then mostly measures the
   queue. Client: ``wrk`` when installed (C: it takes little of the CPU it measures), else the
   asyncio client.

3. side by side (issue 14): one keep-alive client, one request at a time, alternating blocks of
   requests between hpscale and a bare FastAPI endpoint computing the same formula
   (``_bare_api.py``, served by uvicorn the same way), so that both see the same machine load.
   Target: hpscale's p50 and p99 within 1.5x of the bare endpoint's, with the demo data (and so
   a fitted loss law) loaded.

Also reported: the server's CPU time per request (its processes' user + system time from
/proc), which tells the server's cost apart from how busy the machine is with other work.
Every address used is 127.0.0.1; nothing else is contacted.

    python benchmarks/api_load.py [--duration 30] [--rate 1000] [--connections 8] [--workers 2] [--no-demo]
"""

from __future__ import annotations

import _repo  # noqa: F401  (makes ``import hpscale`` work from a plain checkout)

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"  # loopback only, by design: this script never talks to another address
QUERY = "n_params=7e9&tokens=1.4e12&seq_len=4096"
PATH = f"/api/v1/recommend?{QUERY}"
BARE_PATH = f"/recommend?{QUERY}"  # _bare_api.py: the same formula with nothing around it
BLOCK = 200  # requests to one server before the side-by-side client turns to the other
POOL = 32  # connections of the fixed-rate client: enough that a slow answer does not stall the schedule


@dataclass
class Result:
    """What one load phase measured (latencies in ms)."""

    phase: str
    client: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float | None = None  # server CPU per request

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(port: int, workers: int, data_dir: Path, demo: bool = True) -> subprocess.Popen[bytes]:
    """``hpscale serve`` on loopback with a private SQLite database (the demo data loaded into it
    unless ``demo`` is false), access log off (a log line per request would measure the
    terminal, not the API)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPSCALE_")}
    env["HPSCALE_DATA_DIR"] = str(data_dir)
    env["HPSCALE_LOAD_DEMO"] = "true" if demo else "false"
    cmd = [sys.executable, "-m", "hpscale.service.cli", "serve", "--host", HOST, "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_server(*procs: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop servers as Ctrl-C does (uvicorn shuts its workers down cleanly on SIGINT); kill
    one that does not stop within ``timeout`` seconds."""
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_bare(port: int, workers: int) -> subprocess.Popen[bytes]:
    """The bare FastAPI endpoint of ``_bare_api.py`` on loopback."""
    script = Path(__file__).resolve().parent / "_bare_api.py"
    return subprocess.Popen([sys.executable, str(script), str(port), str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0, path: str = "/healthz") -> None:
    """Poll ``path`` until it answers 200 several times in a row (every worker serves the same
    port, so a few more polls after the first success let the slower worker finish starting)."""
    deadline = time.monotonic() + timeout
    ok = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"the server exited with code {proc.returncode}:\n{err}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as resp:
                ok += resp.status == 200
        except OSError:
            ok = 0
        if ok >= 5:
            return
        time.sleep(0.2)
    raise SystemExit(f"the server did not become healthy within {timeout:.0f} s")


def tree_cpu_seconds(root: int) -> float | None:
    """CPU time (user + system, s) so far of process ``root`` and all its descendants, counting
    children that already exited, from /proc (Linux); None elsewhere."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, ..., utime (11), stime (12), cutime (13), cstime (14).
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = sum(int(f) for f in fields[11:15]) / tick
    total = 0.0
    for pid, value in cpu.items():
        p = pid
        while p not in (0, 1):
            if p == root:
                total += value
                break
            p = parents.get(p, 0)
    return total


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))] * 1e3


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    """Send one request on a keep-alive connection and read its whole answer; True if 200."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    await reader.readexactly(int(m.group(1)) if m else 0)
    return head.startswith(b"HTTP/1.1 200")


async def fixed_rate(port: int, seconds: float, rate: float) -> Result:
    """Open loop: request i is due at start + i / rate; a free connection of the pool sends it
    (at once if it is late) and its latency counts from when it was due."""
    request = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    total = int(seconds * rate)
    latencies: list[float] = []
    errors = 0
    next_index = 0
    start = time.perf_counter() + 0.05

    async def connection() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    ok = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    return
                latencies.append(time.perf_counter() - due)
                errors += not ok
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(POOL)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return Result(f"sustained {rate:,.0f}/s", f"asyncio, {POOL} connections", len(latencies), elapsed,
                  _percentile(latencies, 0.50), _percentile(latencies, 0.99), errors)


async def closed_loop_python(port: int, seconds: float, connections: int) -> Result:
    """Closed loop with the asyncio client (when wrk is not installed)."""
    request = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    ok = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    return
                latencies.append(time.perf_counter() - t0)
                errors += not ok
        finally:
            writer.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - t_start
    latencies.sort()
    return Result("maximum", f"asyncio, {connections} connections", len(latencies), elapsed,
                  _percentile(latencies, 0.50), _percentile(latencies, 0.99), errors)


def closed_loop_wrk(port: int, seconds: float, connections: int) -> Result:
    """Closed loop with wrk (one thread: it keeps up with a 2-core server easily)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", f"http://{HOST}:{port}{PATH}"],
        capture_output=True, text=True, check=True,
    ).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise SystemExit(f"cannot read the {pct}th percentile from wrk's output:\n{out}")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
    if not m:
        raise SystemExit(f"cannot read the request count from wrk's output:\n{out}")
    duration = float(m.group(2)) * (1e-3 if m.group(3) == "ms" else 1.0)
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Result("maximum", f"wrk, {connections} connections", int(m.group(1)), duration,
                  latency("50"), latency("99"), errors)


async def side_by_side(ports: dict[str, tuple[int, str, int]], seconds: float) -> list[Result]:
    """One keep-alive connection per server and one request in flight at a time, alternating
    blocks of ``BLOCK`` requests between the servers for ``seconds`` in all: the servers are
    measured under the same load of the machine. ``ports``: label -> (port, path, server pid);
    each server's CPU time is counted over its own blocks."""
    conns = {}
    for label, (port, path, _) in ports.items():
        reader, writer = await asyncio.open_connection(HOST, port)
        conns[label] = (reader, writer, f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    latencies: dict[str, list[float]] = {label: [] for label in ports}
    errors = dict.fromkeys(ports, 0)
    busy = dict.fromkeys(ports, 0.0)
    cpu: dict[str, float | None] = dict.fromkeys(ports, 0.0)
    stop = time.perf_counter() + seconds
    try:
        while time.perf_counter() < stop:
            for label, (reader, writer, request) in conns.items():
                pid = ports[label][2]
                t_block, cpu_before = time.perf_counter(), tree_cpu_seconds(pid)
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    ok = await _exchange(reader, writer, request)
                    latencies[label].append(time.perf_counter() - t0)
                    errors[label] += not ok
                busy[label] += time.perf_counter() - t_block
                cpu_after, so_far = tree_cpu_seconds(pid), cpu[label]
                cpu[label] = None if None in (cpu_before, cpu_after, so_far) else so_far + cpu_after - cpu_before  # type: ignore[operator]
    finally:
        for _, writer, _ in conns.values():
            writer.close()
    out = []
    for label, lat in latencies.items():
        lat.sort()
        used = cpu[label]
        out.append(Result(f"side by side: {label}", "asyncio, 1 connection", len(lat), busy[label],
                          _percentile(lat, 0.50), _percentile(lat, 0.99), errors[label],
                          used / len(lat) * 1e3 if used is not None and lat else None))
    return out


def measured(pid: int, run: Callable[[], Result]) -> Result:
    """Run a load phase and attach the server's CPU time per request."""
    before = tree_cpu_seconds(pid)
    result = run()
    after = tree_cpu_seconds(pid)
    if before is not None and after is not None and result.requests:
        result.cpu_ms = (after - before) / result.requests * 1e3
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of each measured phase (default 30)")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s of the sustained phase (default 1000)")
    ap.add_argument("--connections", type=int, default=8, help="connections of the maximum phase (default 8)")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2: one per core)")
    ap.add_argument("--client", choices=("auto", "wrk", "python"), default="auto", help="client of the maximum phase")
    ap.add_argument("--no-demo", dest="demo", action="store_false",
                    help="start hpscale on an empty database (no demo data, so no fitted loss law)")
    ap.add_argument("--side-by-side-only", action="store_true", help="measure the side-by-side phase alone")
    args = ap.parse_args()
    if not 1 <= args.duration <= 600 or not 1 <= args.connections <= 256 or not 1 <= args.rate <= 20_000:
        raise SystemExit("--duration must lie in [1, 600] s, --connections in [1, 256], --rate in [1, 20000]")
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")

    def maximum(seconds: float) -> Result:
        if client == "wrk":
            return closed_loop_wrk(port, seconds, args.connections)
        return asyncio.run(closed_loop_python(port, seconds, args.connections))

    with tempfile.TemporaryDirectory(prefix="hpscale-load-") as tmp:
        port, bare_port = free_port(), free_port()
        proc = start_server(port, args.workers, Path(tmp), demo=args.demo)
        bare = start_bare(bare_port, args.workers)
        try:
            wait_healthy(port, proc)
            wait_healthy(bare_port, bare, path=BARE_PATH)
            asyncio.run(closed_loop_python(bare_port, 1, args.connections))  # warm-up of both
            maximum(3)  # warm-up: imports, first queries, the law cache
            load_before = os.getloadavg()[0]
            results = [] if args.side_by_side_only else [
                measured(proc.pid, lambda: asyncio.run(fixed_rate(port, args.duration, args.rate))),
                measured(proc.pid, lambda: maximum(args.duration)),
            ]
            pair = asyncio.run(side_by_side({"hpscale": (port, PATH, proc.pid),
                                             "bare FastAPI": (bare_port, BARE_PATH, bare.pid)}, args.duration))
        finally:
            stop_server(proc, bare)

    print(f"GET {PATH}: {args.workers} uvicorn workers, {args.duration:.0f} s per phase, demo data "
          f"{'loaded' if args.demo else 'not loaded'}; load average before: {load_before:.2f} on {os.cpu_count()} CPUs")
    results += pair
    print("| phase | client | requests/s | p50 latency | p99 latency | requests | errors | server CPU per request |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cpu = f"{r.cpu_ms:.3f} ms" if r.cpu_ms is not None else "n/a"
        print(f"| {r.phase} | {r.client} | {r.rate:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | {r.requests:,} | "
              f"{r.errors} | {cpu} |")
    if not args.side_by_side_only:
        sustained = results[0]
        target_ok = sustained.rate >= 0.99 * args.rate >= 990 and sustained.p99_ms < 10 and sustained.errors == 0
        print(f"target (sustained >= 1,000 requests/s, p99 < 10 ms, no errors): {'met' if target_ok else 'NOT met'}")
    ours, yardstick = pair
    p50, p99 = ours.p50_ms / yardstick.p50_ms, ours.p99_ms / yardstick.p99_ms
    print(f"side by side: hpscale / bare FastAPI = {p50:.2f}x at p50, {p99:.2f}x at p99; target (both within 1.5x): "
          f"{'met' if p50 <= 1.5 and p99 <= 1.5 and ours.errors == 0 else 'NOT met'}")


if __name__ == "__main__":
    main()
