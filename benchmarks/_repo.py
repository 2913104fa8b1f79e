"""Make ``import hpscale.<package>`` work for the benchmark scripts, installed or not.

Installed (``pip install -e .``), nothing happens. From a plain checkout (a GPU machine that
has the dependencies but not the project), the repository root is exposed as the package
``hpscale`` through a symlink in the temp folder, also for child processes (``PYTHONPATH``):
the top-level folders fitting/, db/, ... are exactly the subpackages hpscale.fitting, ...
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_importable() -> None:
    """Put ``hpscale`` on ``sys.path`` (and on children's ``PYTHONPATH``) when not installed."""
    if importlib.util.find_spec("hpscale") is not None:
        return
    folder = Path(tempfile.gettempdir()) / f"hpscale-checkout-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    link = folder / "hpscale"
    if not link.is_symlink() or link.resolve() != ROOT:
        tmp = folder / f".hpscale-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(ROOT, target_is_directory=True)
        os.replace(tmp, link)
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)


ensure_importable()
