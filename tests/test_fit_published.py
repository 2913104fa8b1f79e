"""benchmarks/fit_published.py's section on the demo file (the GPU validation run it ships): it
reads the runs the demo file holds, and the one row it can check against VALIDATION.md (the
joint fit with the Step Law prior, today's code) says what VALIDATION.md says."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import fit_published  # noqa: E402


def test_the_demo_section_scores_the_demo_files_held_out_runs() -> None:
    text = fit_published.demo_run()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3 * 3 + 2  # every method x prior, then the two presets
    assert "33 runs, 11 configurations x 3 seeds" in text
    joint_steplaw = next(r for r in rows if r[0] == "| joint" and r[1] == "steplaw")
    # VALIDATION.md (run 4, post-hoc with the noise basin): batch 59 sequences, nearest held-out
    # configuration lr 0.00351 at 46 sequences, regret 0.62% [0.20%, 1.10%].
    assert joint_steplaw[3] == "59" and joint_steplaw[4] == "0.003511 / 46"
    assert joint_steplaw[5] == "0.62%" and joint_steplaw[6].startswith("[0.20%, 1.10%]")
