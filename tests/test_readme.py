"""The README's first screen and CI stay in step."""

from __future__ import annotations

import re

from support import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block, "the README's first screen must hold a bash block"
    return [line for line in first_block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_gives_exactly_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    assert "pip install torch==2.13.0" in commands[0] and "hpscale" in commands[0]
    assert "pip install torch==2.13.0" in commands[1] and commands[1].rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
