"""The code version every run and law records: the commit, and whether the tree differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hpscale.db.provenance import code_version, git_revision


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_revision_names_the_commit_and_flags_changed_files(tmp_path: Path) -> None:
    assert git_revision(tmp_path) is None  # not a checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(tmp_path, "rev-parse", "--short", "HEAD")
    assert git_revision(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert git_revision(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_revision(tmp_path) == f"{head}.dirty"


def test_code_version_fits_its_column() -> None:
    assert 0 < len(code_version()) <= 40
