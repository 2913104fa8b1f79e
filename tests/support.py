"""Helpers shared by the tests: the published data beside the project, the CLI in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "data" / "external"


def external(*parts: str) -> Path:
    """A file of the published data beside the project; skips the test when it is absent."""
    path = EXTERNAL.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"published data not found at {path} (../shared is absent in a user's clone)")
    return path


def stop_process(proc: Any, timeout: float = 20) -> None:
    """Stop a server subprocess as Ctrl-C does; kill it if it does not stop within ``timeout`` s."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


runner = CliRunner()


def hp(*args: str) -> Any:
    """Invoke ``hpscale ARGS`` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from hpscale.service.cli import app

    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def hp_json(*args: str) -> Any:
    """Invoke ``hpscale ARGS --json``, assert success, and parse stdout."""
    result = hp(*args, "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    return json.loads(result.stdout)
