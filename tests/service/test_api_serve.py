"""``hpscale serve``: a real uvicorn server on loopback, with two workers, answering over TCP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import stop_process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_two_workers_on_a_new_database(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPSCALE_")}
    env["HPSCALE_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpscale.service.cli", "serve", "--port", str(port), "--workers", "2", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
                time.sleep(0.2)
        assert status == 200 and body["database"] == "sqlite"
        # Every request on a fresh keep-alive-less connection, so both workers answer some.
        for _ in range(20):
            status, rec = _get(f"http://127.0.0.1:{port}/api/v1/recommend?n_params=1e9&tokens=2e10")
            assert status == 200 and rec["law"]["name"] == "steplaw"
        # A new database gets the demo dataset, so a new user sees real sweeps at once.
        status, sweeps = _get(f"http://127.0.0.1:{port}/api/v1/sweeps")
        assert status == 200 and "val4" in {s["name"] for s in sweeps}
        status, problem = _get(f"http://127.0.0.1:{port}/api/v1/laws/404")
        assert status == 404 and problem["status"] == 404
    finally:
        stop_process(proc)
    assert (tmp_path / "data" / "hpscale.db").exists()


def test_serve_refuses_a_bad_database_url_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hpscale.service.cli", "--database", "mysql://nope/x", "serve", "--port", str(_free_port())],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1
