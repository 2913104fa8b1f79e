"""The installed package lives under one import name, ``hpscale``: nothing named ``db``, ``web``,
``service``, ``fitting`` or ``sweeps`` lands in a user's site-packages."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from support import ROOT

TOP_LEVEL = ("db", "web", "service", "fitting", "sweeps")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (found,) = out.glob("hpscale-*.whl")
    return found


def test_wheel_holds_only_the_hpscale_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"hpscale"}
    # The data files travel too: migrations' template, the web pages, the demo data, examples.
    for needed in ("hpscale/db/migrations/script.py.mako", "hpscale/web/index.html",
                   "hpscale/service/data/demo.json.gz", "hpscale/sweeps/examples/tiny_cpu.yaml",
                   "hpscale/db/migrations/versions/0001_initial_schema.py"):
        assert needed in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as zf:
        assert "hpscale = hpscale.service.cli:app" in zf.read(entry).decode()


def test_wheel_installs_into_a_fresh_venv_and_imports_only_hpscale(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    assert (site / "hpscale").is_dir()
    assert not any((site / name).exists() for name in TOP_LEVEL)
    # The dependencies come from this test run's environment (PYTHONPATH processes no .pth file,
    # so its editable hpscale stays invisible): the fresh venv's hpscale is the one imported.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    probe = (
        "import importlib.util, hpscale.service.cli, hpscale.fitting.hyper, hpscale.db.engine, hpscale.web\n"
        "import hpscale.fitting\n"
        f"assert hpscale.fitting.__file__.startswith({str(site)!r}), hpscale.fitting.__file__\n"
        f"assert all(importlib.util.find_spec(n) is None for n in {TOP_LEVEL!r})\n"
        "from hpscale.service.api import web_dir\n"
        "assert (web_dir() / 'index.html').exists()\n"
    )
    subprocess.run([str(py), "-c", probe], check=True, env=env, cwd=tmp_path, timeout=120)
    result = subprocess.run([str(venv / "bin" / "hpscale"), "--help"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "recommend" in result.stdout
