"""What one request at each of the API's default caps costs (HPSCALE_MAX_*, service/settings.py),
and how /healthz answers meanwhile.

Usage: python benchmarks/request_caps.py
In-process (FastAPI's test client) on a new SQLite database in a temporary folder. While each
request runs, another thread asks /healthz every 50 ms; the table gives how many answers came and
the slowest. The last rows time the multi-power law's prediction at every step directly (what
POST /predict/curve did before it evaluated at most 1,000 steps).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401  (hpscale importable from a plain checkout)

from fastapi.testclient import TestClient  # noqa: E402

from hpscale.db import storage  # noqa: E402
from hpscale.fitting.schedules import lr_schedule  # noqa: E402
from hpscale.fitting.trajectory import MultiPowerLaw  # noqa: E402
from hpscale.service.api import create_app  # noqa: E402
from hpscale.service.runformat import validate_runs  # noqa: E402
from hpscale.service.settings import Settings  # noqa: E402

KEY = {"X-API-Key": "bench"}
MPL = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "B": 300.0, "C": 2.0, "beta": 0.6, "gamma": 0.6}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def grid(source: str) -> list[dict[str, Any]]:
    """A 3 x 2 (N, D) grid of 5 x 3 lr x batch runs with a bowl-shaped loss (as the API tests)."""
    runs = []
    for n in (1e6, 4e6, 1.6e7):
        for d in (1e8, 4e8):
            lr0, b0 = 2.0 * n**-0.5 * d**0.1, 0.5 * d**0.5
            base = 2.0 + 50.0 / n**0.3 + 80.0 / d**0.3
            for i in (-2, -1, 0, 1, 2):
                for j in (-1, 0, 1):
                    runs.append({"name": f"{source}-{n:g}-{d:g}-{i}-{j}", "n_params": n, "tokens": d,
                                 "lr": lr0 * 2.0**i, "batch_tokens": b0 * 2.0**j, "seq_len": 256,
                                 "final_loss": base * (1 + 0.002 * i * i + 0.001 * j * j)})
    return runs


def during(client: TestClient, request: Any) -> tuple[float, int, float, int]:
    """Run ``request``; meanwhile poll /healthz. (seconds, health answers, slowest ms, status)."""
    stop, latencies = threading.Event(), []

    def poll() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            client.get("/healthz")
            latencies.append(time.perf_counter() - t)
            stop.wait(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    t = time.perf_counter()
    status = request().status_code
    seconds = time.perf_counter() - t
    stop.set()
    poller.join()
    return seconds, len(latencies), 1000 * max(latencies, default=0.0), status


def main() -> None:
    settings = Settings(database_url=f"sqlite:///{tempfile.mkdtemp()}/bench.db", api_key="bench", load_demo=False)
    rows = []
    with TestClient(create_app(settings)) as c:
        db = c.app.state.db  # type: ignore[attr-defined]
        many = [{"name": f"r{i}", "n_params": 1e6 + i, "tokens": 2e7, "final_loss": 3.5, "lr": 1e-3,
                 "batch_size": 32, "seq_len": 256, "tags": {"i": i}} for i in range(settings.max_runs_per_request)]
        body = json.dumps({"source": "many", "runs": many})
        rows.append((f"POST /runs, {len(many):,} runs (HPSCALE_MAX_RUNS_PER_REQUEST)", f"{len(body) / 1e6:.1f} MB",
                     during(c, lambda: c.post("/api/v1/runs", content=body, headers={**KEY, "content-type": "application/json"}))))
        per_run = 500
        curves = [{"name": f"c{i}", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.5,
                   "curve": [{"step": s, "lr": 1e-3, "loss": 4.0} for s in range(per_run)]}
                  for i in range(settings.max_curve_points // per_run)]
        body = json.dumps({"source": "curves", "runs": curves})
        rows.append((f"POST /runs, {len(curves) * per_run:,} curve points (HPSCALE_MAX_CURVE_POINTS)",
                     f"{len(body) / 1e6:.1f} MB",
                     during(c, lambda: c.post("/api/v1/runs", content=body, headers={**KEY, "content-type": "application/json"}))))
        storage.add_runs(db, [r.to_storage("grid") for r in validate_runs(grid("grid"))])
        fit = {"kind": "hyper", "form": "steplaw", "sources": ["grid"], "bootstrap": settings.max_fit_bootstrap}
        rows.append((f"POST /fits, hyper on 90 runs, {settings.max_fit_bootstrap:,} bootstrap (HPSCALE_MAX_FIT_BOOTSTRAP)",
                     "", during(c, lambda: c.post("/api/v1/fits", json=fit, headers=KEY))))
        law = MultiPowerLaw()
        law.coef_ = dict(MPL)
        row = storage.add_law(db, {"name": "mpl", "kind": "trajectory", "form": law.form, "origin": "fitted",
                                   "title": "MPL", "source": "bench", "record": law.to_record(), "code_version": "b"})
        schedule = {"kind": "cosine", "total_steps": settings.max_curve_points, "peak_lr": 3e-4, "warmup_steps": 500}
        rows.append((f"POST /predict/curve, cosine of {settings.max_curve_points:,} steps (1,000 answered)", "",
                     during(c, lambda: c.post("/api/v1/predict/curve", json={"law": row.id, "schedule": schedule}))))
    print("| request | body | status | wall s | /healthz answers meanwhile | slowest /healthz ms |")
    print("|---|---|---|---:|---:|---:|")
    for what, size, (sec, n, slowest, status) in rows:
        print(f"| {what} | {size} | {status} | {sec:.2f} | {n} | {slowest:.0f} |")
    print()
    print("| multi-power law at every step (the API before) | wall s | peak RSS of this process, MB |")
    print("|---|---:|---:|")
    for steps in (2_000, 5_000, 10_000):
        lr = lr_schedule("cosine", steps, 3e-4)
        t = time.perf_counter()
        law.predict(lr)
        print(f"| {steps:,} steps | {time.perf_counter() - t:.2f} | {peak_mb():.0f} |")


if __name__ == "__main__":
    main()
