"""Published laws as priors on a fitted law's exponents: pulled with few groups, not with many."""

from __future__ import annotations

import pytest
from fitting_synthetic import TRUE_HYPER, basin_grid

from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.priors import PriorError, prior_for
from hpscale.fitting.registry import law_from_record


def test_prior_centres_per_form() -> None:
    assert prior_for("steplaw", "steplaw").centres == {"alpha_lr": -0.713, "beta_lr": 0.307, "beta_b": 0.571}
    assert prior_for("steplaw", "full").centres["alpha_b"] == 0.0
    assert prior_for("deepseek", "compute").centres == {"gamma_lr": -0.125, "gamma_b": 0.3271}
    assert prior_for("deepseek", "steplaw").centres["alpha_lr"] == -0.125
    assert prior_for("none", "steplaw") is None and prior_for(None, "full") is None
    with pytest.raises(PriorError, match="form steplaw or full"):
        prior_for("steplaw", "compute")
    with pytest.raises(PriorError, match="width"):
        prior_for("steplaw", "steplaw", width=0.0)
    with pytest.raises(PriorError, match="unknown prior"):
        prior_for("kaplan", "steplaw")


@pytest.mark.parametrize("method", ["near_optimal", "smooth", "joint"])
def test_prior_pulls_a_small_sweep_and_records_how_far(method: str) -> None:
    # Two sizes, two budgets of a world whose alpha_lr is -0.7; a prior centred at -0.713.
    small = basin_grid(sizes=(1e7, 2e7), per_param=(10, 20), noise=0.005, seed=4)
    free = HyperLaw(method=method, n_bootstrap=0, on_edge="warn").fit(small)
    tight = HyperLaw(method=method, n_bootstrap=0, on_edge="warn", prior="steplaw", prior_width=0.02).fit(small)
    assert abs(tight.coef_["alpha_lr"] + 0.713) < abs(free.coef_["alpha_lr"] + 0.713)
    assert abs(tight.coef_["alpha_lr"] + 0.713) < 0.03
    rec = tight.prior_
    assert rec["name"] == "steplaw" and rec["width"] == 0.02
    assert rec["shift"]["alpha_lr"] == pytest.approx(tight.coef_["alpha_lr"] - free.coef_["alpha_lr"], abs=1e-9)
    assert law_from_record(tight.to_record()).prior_ == rec


def test_with_enough_data_the_data_win() -> None:
    # A wrong prior (DeepSeek's C-exponent as the N and D exponents: alpha_lr -0.125, the world's
    # is -0.7) moves a fit on little data a long way, and one on much data little.
    shifts = []
    for sizes, per_param in (((1e7, 2e7), (10, 20)), ((1e7, 3e7, 1e8, 3e8, 1e9), (5, 10, 20, 40, 80))):
        runs = basin_grid(sizes=sizes, per_param=per_param, noise=0.002, seeds=2, seed=5)
        law = HyperLaw(method="joint", n_bootstrap=0, on_edge="warn", prior="deepseek").fit(runs)
        shifts.append(abs(law.prior_["shift"]["alpha_lr"]))
    assert shifts[1] < 0.1 < shifts[0]
    assert law.coef_["alpha_lr"] == pytest.approx(TRUE_HYPER["alpha_lr"], abs=0.1)


def test_bootstrap_samples_carry_the_prior() -> None:
    small = basin_grid(sizes=(1e7, 2e7), per_param=(10, 20), noise=0.005, seed=6)
    free = HyperLaw(method="smooth", n_bootstrap=200, on_edge="warn").fit(small)
    tight = HyperLaw(method="smooth", n_bootstrap=200, on_edge="warn", prior="steplaw", prior_width=0.02).fit(small)
    width = lambda law: law.intervals_["alpha_lr"][1] - law.intervals_["alpha_lr"][0]  # noqa: E731
    assert width(tight) < width(free)
    assert tight.intervals_["alpha_lr"][0] < -0.713 < tight.intervals_["alpha_lr"][1]
