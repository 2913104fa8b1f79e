import json

import numpy as np
import pytest

from hpscale.fitting.errors import FittingError, InsufficientDataError, NotFittedError
from hpscale.fitting.registry import law_from_record
from hpscale.fitting.trajectory import LossCurve, MomentumLaw, MultiPowerLaw
from fitting_synthetic import MOM_TRUE, MPL_TRUE, T, W, curves, known, schedules

def test_mpl_fit_on_three_schedules_predicts_the_others():
    truth = known(MultiPowerLaw, MPL_TRUE)
    law = MultiPowerLaw(prior_weight=0.0).fit(curves(truth, ["constant", "cosine", "step"]))
    score = law.score(curves(truth, ["wsd", "linear"]))
    assert score["mean"] < 2e-4 and score["worst"] < 1e-3
    assert law.coef_["alpha"] == pytest.approx(0.5, abs=0.02)


def test_momentum_law_recovers_its_parameters():
    truth = known(MomentumLaw, MOM_TRUE)
    law = MomentumLaw().fit(curves(truth, ["constant", "cosine", "step"]))
    for k, v in MOM_TRUE.items():
        assert law.coef_[k] == pytest.approx(v, rel=1e-3), k
    assert law.score(curves(truth, ["wsd"]))["worst"] < 1e-6


def test_momentum_law_keeps_its_terms_non_negative_on_log_shaped_curves():
    # A nearly log-shaped curve (alpha -> 0) is fitted equally well by L0 and A cancelling at
    # large magnitudes (here the generating law itself, L0 = -50, A = 55), which means nothing
    # physically and extrapolates badly: the fit keeps L0, A and C >= 0 and still fits.
    truth = known(MomentumLaw, {"L0": -50.0, "A": 55.0, "alpha": 0.005, "C": 1.0, "lam": 0.996})
    fitted = curves(truth, ["constant", "cosine", "wsd"])
    law = MomentumLaw().fit(fitted)
    assert min(law.coef_["L0"], law.coef_["A"], law.coef_["C"]) >= 0.0
    assert law.score(fitted)["mean"] < 2e-3


def test_binning_matches_the_exact_sum():
    lr = schedules()["cosine"]
    exact, binned = known(MultiPowerLaw, MPL_TRUE), known(MultiPowerLaw, MPL_TRUE)
    exact.bin_width = 1
    steps = np.arange(W, T + 1, 50)
    assert np.max(np.abs(binned.predict(lr, steps) / exact.predict(lr, steps) - 1)) < 1e-5


def test_predict_defaults_and_warmup_inference():
    law = known(MomentumLaw, MOM_TRUE)
    lr = schedules()["cosine"]
    full = law.predict(lr)
    assert full.shape == (T - W + 1,)
    assert np.all(np.diff(full) < 0)


def test_record_roundtrip():
    for cls, coef in ((MultiPowerLaw, MPL_TRUE), (MomentumLaw, MOM_TRUE)):
        law = cls().fit(curves(known(cls, coef), ["constant", "cosine", "step"]))
        back = law_from_record(json.loads(json.dumps(law.to_record())))
        assert type(back) is cls
        lr = schedules()["wsd"]
        np.testing.assert_allclose(back.predict(lr, np.arange(W, T, 100)), law.predict(lr, np.arange(W, T, 100)))
        assert back.to_record()["runs_used"] == ["constant", "cosine", "step"]


def test_failures():
    lr = schedules()["constant"]
    with pytest.raises(NotFittedError):
        MultiPowerLaw().predict(lr)
    with pytest.raises(InsufficientDataError, match="at least one"):
        MomentumLaw().fit([])
    bad = LossCurve("nan", lr, np.arange(W, T, 100), np.full(len(range(W, T, 100)), np.nan), W)
    with pytest.raises(InsufficientDataError, match="non-finite"):
        MultiPowerLaw().fit([bad])
    early_steps = np.arange(10, 3000, 200)
    early = LossCurve("early", lr, early_steps, np.linspace(5.0, 3.5, early_steps.size), W)
    with pytest.raises(FittingError, match="after warmup"):
        MomentumLaw().fit([early])
    beyond_steps = np.arange(400, T + 1000, 400)
    beyond = LossCurve("beyond", lr, beyond_steps, np.linspace(4.0, 3.5, beyond_steps.size), W)
    with pytest.raises(FittingError, match="within the schedule"):
        MomentumLaw().fit([beyond])
    few = LossCurve("few", lr, np.array([400, 800]), np.array([4.0, 3.9]), W)
    with pytest.raises(InsufficientDataError, match="coefficients"):
        MultiPowerLaw().fit([few])


def test_constant_only_warns_annealing_unidentified():
    law = MomentumLaw().fit(curves(known(MomentumLaw, MOM_TRUE), ["constant"]))
    assert any("anneal" in w for w in law.warnings_)
