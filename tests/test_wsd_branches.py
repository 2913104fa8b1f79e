"""The WSD-branch benchmark (benchmarks/wsd_branches.py, issue 15): its CPU smoke setting trains
every budget both ways and finds the branches equal to the separate runs, and a saved result
prints its tables again with --table (the GPU chain keeps only the JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import wsd_branches  # noqa: E402


def test_branches_equal_separate_runs_and_the_saved_result_prints_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wsd.json"
    assert wsd_branches.main(["--device", "cpu", "--tiny", "--threads", "1", "--out", str(out),
                              "--corpus-cache", str(tmp_path / "corpus")]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    (case,) = doc["cases"]
    assert case["status"] == "done" and len(case["runs"]) == 2 * 3  # 2 lrs x 3 budgets
    assert all(r["rel_diff"] == 0.0 for r in case["runs"])  # float32 on the CPU: bit for bit
    assert case["expected_speedup"] == pytest.approx(sum(case["steps"]) / (
        case["steps"][-1] + sum(s - b for s, b in zip(case["steps"][:-1], case["branch_steps"][:-1]))))
    assert wsd_branches.main(["--table", str(out)]) == 0
    assert capsys.readouterr().out.strip() == printed.strip()


def test_a_file_that_is_not_a_result_is_one_line_of_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"cases": 3}')
    with pytest.raises(SystemExit, match="not a result of --out"):
        wsd_branches.main(["--table", str(bad)])
