"""The joint hyper fit: one basin model over every run recovers the law where per-group argmins
drown in noise, with honest intervals, quickly."""

from __future__ import annotations

import numpy as np
import pytest
from fitting_synthetic import TRUE_HYPER, basin_grid, synthetic_grid

from hpscale.fitting.errors import InsufficientDataError
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.registry import law_from_record

EXPONENTS = ("alpha_lr", "beta_lr", "beta_b")


def test_joint_recovers_exponents_within_intervals_at_half_percent_noise_where_argmin_does_not() -> None:
    errors: dict[str, list[float]] = {"joint": [], "argmin": []}
    for trial in range(3):
        runs = basin_grid(noise=0.005, seed=10 + trial)
        joint = HyperLaw(method="joint", n_bootstrap=100, seed=trial, on_edge="warn").fit(runs)
        argmin = HyperLaw(method="near_optimal", noise_band=False, n_bootstrap=0, on_edge="warn").fit(runs)
        for k in EXPONENTS:
            lo, hi = joint.intervals_[k]
            assert lo <= TRUE_HYPER[k] <= hi, (trial, k, lo, hi)
        errors["joint"].append(abs(joint.coef_["alpha_lr"] - TRUE_HYPER["alpha_lr"]))
        errors["argmin"].append(abs(argmin.coef_["alpha_lr"] - TRUE_HYPER["alpha_lr"]))
        assert joint.landscape_["k"] == pytest.approx(0.5, abs=0.15)  # the basin's tilt
        assert joint.landscape_["A_hi"] > joint.landscape_["A_lo"]  # steeper on the high-lr side
    assert np.mean(errors["joint"]) < 0.05
    assert np.mean(errors["joint"]) < 0.5 * np.mean(errors["argmin"])


def test_joint_is_exact_without_noise_and_round_trips() -> None:
    law = HyperLaw(method="joint", n_bootstrap=20, on_edge="warn").fit(basin_grid(noise=0.0))
    for k in EXPONENTS:
        assert law.coef_[k] == pytest.approx(TRUE_HYPER[k], abs=1e-3)
    again = law_from_record(law.to_record())
    assert again.landscape_ == law.landscape_ and again.method == "joint"
    assert again.predict(3e8, 6e9).lr == pytest.approx(law.predict(3e8, 6e9).lr)
    assert len(law.runs_used_) == law.landscape_["runs_in_band"]


def test_joint_uses_every_seed_and_resamples_them() -> None:
    runs = basin_grid(noise=0.005, seeds=2, seed=3)
    law = HyperLaw(method="joint", n_bootstrap=50, on_edge="warn").fit(runs)
    assert law.noise_.source == "repeats"
    assert len(law.runs_used_) > 200 and all(name.endswith(("-s0", "-s1")) for name in law.runs_used_)
    assert len(law.coef_samples_) == 50


def test_joint_needs_a_batch_grid() -> None:
    one_batch = synthetic_grid()
    keep = one_batch.batch_tokens == np.array([
        one_batch.batch_tokens[(one_batch.n_params == n) & (one_batch.tokens == d)].min()
        for n, d in zip(one_batch.n_params, one_batch.tokens)])
    with pytest.raises(InsufficientDataError, match="two batch sizes"):
        HyperLaw(method="joint", n_bootstrap=0, on_edge="warn").fit(one_batch.subset(keep))


def test_joint_fits_every_form() -> None:
    # The full and compute forms share one design for both equations; centring it twice (one
    # array, two names) once left the fit at its start: zero-width intervals, tilt 0.
    full = HyperLaw(form="full", method="joint", n_bootstrap=20, on_edge="warn").fit(basin_grid(noise=0.0))
    for k in EXPONENTS:
        assert full.coef_[k] == pytest.approx(TRUE_HYPER[k], abs=1e-3)
    assert full.coef_["alpha_b"] == pytest.approx(0.0, abs=1e-3)  # the true B* does not depend on N
    compute = HyperLaw(form="compute", method="joint", n_bootstrap=20, on_edge="warn").fit(basin_grid(noise=0.005, seed=1))
    assert compute.landscape_["k"] == pytest.approx(0.5, abs=0.15)
    assert all(hi > lo for lo, hi in compute.intervals_.values())
