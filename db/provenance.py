"""What every stored run and law records about the code that made it."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@lru_cache
def code_version() -> str:
    """The hpscale version, plus the git commit when running from a checkout (``0.1.0+abc1234``,
    ``0.1.0+abc1234.dirty`` when tracked files differ from that commit)."""
    try:
        base = version("hpscale")
    except PackageNotFoundError:
        base = "0+unknown"
    revision = git_revision(Path(__file__).resolve().parents[1])
    return f"{base}+{revision}"[:40] if revision else base[:40]


def git_revision(root: Path) -> str | None:
    """The short commit of the checkout at ``root``, with ``.dirty`` when tracked files were
    changed since (a copy of a tree beside an older ``.git`` says so instead of naming a commit
    it does not hold); None outside a checkout or without git."""
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return None
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = changed.returncode != 0 or bool(changed.stdout.strip())
    return head.stdout.strip() + (".dirty" if dirty else "")
