"""A sweep's state, derived from its runs' counts by status."""

from __future__ import annotations

import pytest

from hpscale.sweeps.status import SWEEP_STATES, sweep_state


@pytest.mark.parametrize(("counts", "state"), [
    ({"queued": 8}, "planned"),
    ({"queued": 4, "running": 4}, "running"),
    ({"done": 3, "running": 1}, "running"),
    ({"done": 3, "diverged": 1, "queued": 4}, "partial"),
    ({"failed": 1, "queued": 2}, "partial"),
    ({"done": 7, "diverged": 1}, "finished"),
    ({"done": 2, "failed": 1, "queued": 0, "running": 0}, "finished"),
    ({}, "finished"),
])
def test_sweep_state_from_run_counts(counts: dict[str, int], state: str) -> None:
    assert sweep_state(counts) == state and state in SWEEP_STATES
