"""Fitting tests: the benchmarks/ import path and the published-data fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

EXTERNAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "external"


@pytest.fixture
def external() -> Path:
    if not (EXTERNAL / "README.md").exists():
        pytest.skip(f"published data not found at {EXTERNAL} (it lives in ../shared, absent from a fresh clone)")
    return EXTERNAL
