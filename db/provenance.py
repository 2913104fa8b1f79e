"""What every stored run and law records about the code that made it."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@lru_cache
def code_version() -> str:
    """The hpscale version, plus the git commit when running from a checkout (``0.1.0+abc1234``)."""
    try:
        base = version("hpscale")
    except PackageNotFoundError:
        base = "0+unknown"
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, timeout=5, check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                return f"{base}+{out.stdout.strip()}"[:40]
        except (OSError, subprocess.SubprocessError):
            pass
    return base[:40]
