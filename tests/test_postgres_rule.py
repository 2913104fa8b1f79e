"""Without a PostgreSQL server the tests that need one skip with the reason on a contributor's
machine, and fail where PostgreSQL is required (CI: .ci/run sets HPSCALE_TEST_PG_REQUIRED)."""

from __future__ import annotations

import os
import subprocess
import sys

from support import ROOT

NEEDS_PG = "tests/sweeps/test_distributed.py::test_three_workers_one_killed_every_run_finishes_exactly_once"


def _pytest_without_postgres(**extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HPSCALE_TEST_PG_REQUIRED")}
    env.update(HPSCALE_TEST_PG="postgresql://nobody@127.0.0.1:1/none", **extra)  # port 1: nothing listens
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", NEEDS_PG],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_tests_needing_postgres_skip_with_the_reason_when_it_is_absent() -> None:
    out = _pytest_without_postgres()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout and "127.0.0.1:1/none is not reachable" in out.stdout, out.stdout


def test_ci_fails_loudly_without_postgres() -> None:
    for env in ({"HPSCALE_TEST_PG_REQUIRED": "1"}, {"CI": "true"}):
        out = _pytest_without_postgres(**env)
        assert out.returncode == 1 and "PostgreSQL is required" in out.stdout, (env, out.stdout)


def test_ci_script_requires_postgres() -> None:
    assert "export HPSCALE_TEST_PG_REQUIRED=1" in (ROOT / ".ci" / "run").read_text().splitlines()
