import json

import numpy as np
import pytest

from fitting_synthetic import synthetic_grid
from hpscale.fitting.critical import CriticalBatchLaw
from hpscale.fitting.errors import FittingError, InsufficientDataError, InvalidLawRecordError
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.loss import LossLaw
from hpscale.fitting.presets import PRESETS
from hpscale.fitting.registry import extrapolation_factor, law_from_record
from hpscale.fitting.trajectory import MomentumLaw
from hpscale.fitting.validate import extrapolation_check
from fitting_synthetic import MOM_TRUE, chinchilla_like, critical_data, curves, known


def test_hyper_extrapolation_small_regret_and_json_safe():
    rs = synthetic_grid()
    for holdout in ("n_params", "tokens"):
        report = extrapolation_check(HyperLaw(method="smooth", n_bootstrap=10), rs, holdout)
        json.dumps(report)
        assert report["holdout"] == holdout and report["kind"] == "hyper"
        assert np.isfinite(report["mean_abs_lr_log_error"])
        assert report["mean_loss_regret"] < 1e-3
        assert report["n_fit_runs"] + report["n_held_out_runs"] == len(rs)


def test_wrong_law_of_regret_is_detected():
    # A law fitted on a grid whose lr optimum moved: the check must show a real regret.
    rs = synthetic_grid()
    shifted = synthetic_grid(coef={"a_lr": 2.0, "alpha_lr": -0.3, "beta_lr": 0.3, "a_b": 0.5, "beta_b": 0.55})
    mixed = rs.subset(rs.n_params < 3e8)
    big = shifted.subset(shifted.n_params == 3e8)
    from hpscale.fitting.runs import RunSet
    combo = RunSet(**{k: np.concatenate([getattr(mixed, k), getattr(big, k)]) for k in
                      ("n_params", "tokens", "lr", "batch_tokens", "final_loss", "diverged")},
                   names=mixed.names + [n + "-shifted" for n in big.names])
    report = extrapolation_check(HyperLaw(method="smooth", n_bootstrap=0, on_edge="warn"), combo)
    assert report["mean_loss_regret"] > 5e-3


def test_loss_trajectory_and_critical_reports():
    loss_report = extrapolation_check(LossLaw(n_bootstrap=0), chinchilla_like())
    assert loss_report["max_abs_rel_error"] < 1e-4
    traj = extrapolation_check(MomentumLaw(), curves(known(MomentumLaw, MOM_TRUE), ["constant", "cosine", "step"]))
    assert traj["max_rel_error"] < 1e-5 and traj["held_out_curve"] in {"constant", "cosine", "step"}
    crit = extrapolation_check(CriticalBatchLaw(), critical_data())
    assert crit["mean_abs_log_error"] < 1e-4
    for r in (loss_report, traj, crit):
        json.dumps(r)


def test_validation_failures():
    rs = synthetic_grid(sizes=(1e7,), tokens=(1e9, 4e9, 1.6e10, 6.4e10))
    with pytest.raises(InsufficientDataError):
        extrapolation_check(HyperLaw(form="compute", n_bootstrap=0), rs.subset(rs.tokens == 1e9), "tokens")
    with pytest.raises(ValueError):
        extrapolation_check(HyperLaw(), rs, "depth")
    with pytest.raises(FittingError):
        extrapolation_check(object(), rs)


def test_registry_dispatch_and_presets():
    for preset in PRESETS.values():
        back = law_from_record(json.loads(json.dumps(preset.law.to_record())))
        assert back.predict(7e9, 1.4e12) == preset.law.predict(7e9, 1.4e12)
    for bad in ({"kind": "astrology"}, {"kind": "trajectory", "form": "spline", "coefficients": {}}, [],
                {"kind": "loss", "coefficients": {"E": 1.0}}, {"kind": "critical_batch"}):
        with pytest.raises(InvalidLawRecordError):
            law_from_record(bad)


def test_extrapolation_factor():
    fr = {"n_params": [1e7, 1e9], "tokens": [1e9, 1e11], "compute": [6e16, 6e20]}
    assert extrapolation_factor(fr, 1e8, 1e10) == 1.0
    assert extrapolation_factor(fr, 1e10, 1e11) == pytest.approx(10.0)  # N x10, C x10
    assert extrapolation_factor(fr, 1e10, 1e12) == pytest.approx(100.0)  # C x100
    assert extrapolation_factor(fr, 1e6, 1e10) == pytest.approx(10.0)
    assert extrapolation_factor(None, 1e12, 1e13) == 1.0


def test_regret_needs_a_grid():
    rs = synthetic_grid()
    big = rs.n_params == 3e8
    keep = ~big | (rs.final_loss == np.array([rs.final_loss[big & (rs.tokens == d)].min() for d in rs.tokens]))
    report = extrapolation_check(HyperLaw(method="smooth", n_bootstrap=0), rs.subset(keep))
    assert report["mean_loss_regret"] is None and all(g["loss_regret"] is None for g in report["groups"])
    assert np.isfinite(report["mean_abs_lr_log_error"])
