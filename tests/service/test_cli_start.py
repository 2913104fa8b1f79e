"""What starting the CLI costs: `hpscale --help` imports no numerical or database library, and
`hpscale serve --workers 2` comes up on a machine whose cores are busy (issue 14 item 1, issue 13
item 3). Times are measured by benchmarks/cli_start.py, not asserted here."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import stop_process

HEAVY = ("numpy", "scipy", "sklearn", "sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "torch", "optuna",
         "pydantic_settings", "hpscale.fitting.hyper", "hpscale.db.engine", "hpscale.service.api")
HPSCALE = Path(sys.executable).with_name("hpscale")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = code + (
        "\nimport sys\n"
        f"print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list


def test_help_imports_no_numerical_or_database_library() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from hpscale.service.cli import app\n"
        "for argv in (['--help'], ['fit', '--help'], ['sweep', 'run', '--help'], ['import', 'runs', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        app(argv, prog_name='hpscale')\n"
    )
    assert _loaded_after(code) == []


def test_a_serve_worker_answers_pings_before_it_imports_the_app() -> None:
    # A spawned uvicorn worker re-imports the `hpscale` script's module and unpickles its config
    # (the HTTP protocol class) before its health-ping thread starts: both must be light.
    loaded = _loaded_after("import hpscale.service.cli\nimport hpscale.service.server\n")
    assert [m for m in loaded if m.split(".")[0] != "uvicorn"] == []


def _burn() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not HPSCALE.exists(), reason="the hpscale script is not installed beside this interpreter")
def test_serve_with_two_workers_starts_while_every_core_is_busy(tmp_path: Path) -> None:
    # Two busy loops per core: a worker gets a third of a core or less while it starts.
    burners = [multiprocessing.get_context("spawn").Process(target=_burn, daemon=True)
               for _ in range(2 * (os.cpu_count() or 1))]
    for b in burners:
        b.start()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPSCALE_")}
    env.update(HPSCALE_DATA_DIR=str(tmp_path / "data"), HPSCALE_LOAD_DEMO="false")
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(HPSCALE), "serve", "--port", str(port), "--workers", "2", "--log-level", "info"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while log.read_text().count("Application startup complete") < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"two workers did not start within 240 s:\n{log.read_text()}"
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as resp:
            assert resp.status == 200
    finally:
        for b in burners:
            b.terminate()
        stop_process(proc, timeout=60)
    text = log.read_text()
    # uvicorn says "died" when it kills a worker that missed its health ping (and starts another).
    assert " died" not in text and "was not ready" not in text, text
