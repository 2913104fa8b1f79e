import json

import numpy as np
import pytest

from hpscale.fitting.errors import FittingError, InsufficientDataError, NotFittedError
from hpscale.fitting.registry import law_from_record
from hpscale.fitting.trajectory import LossCurve, MomentumLaw, MultiPowerLaw
from fitting_synthetic import MOM_TRUE, MPL_TRUE, PEAK, T, W, curves, known, schedules
from hpscale.fitting.schedules import lr_schedule

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
    # An lr of 0 everywhere (a run logged with lr 0): named, not a scipy error from an inf term.
    zero = LossCurve("zero", np.zeros(T), np.arange(W, T, 100), np.linspace(4.0, 3.5, len(range(W, T, 100))), W)
    for cls in (MultiPowerLaw, MomentumLaw):
        with pytest.raises(InsufficientDataError, match="'zero': its learning rate is 0 at every step"):
            cls().fit([zero])
    with pytest.raises(FittingError, match="0 at every step"):
        known(MultiPowerLaw, MPL_TRUE).predict(np.zeros(1000))


def test_floor_and_fit_range_say_what_the_law_covers():
    law = MultiPowerLaw().fit(curves(known(MultiPowerLaw, MPL_TRUE), ["constant", "cosine", "wsd"]))
    assert law.fit_range_ == {"steps": [W, T - (T - W) % 64], "peak_lr": [PEAK, PEAK]}
    assert law.floor(PEAK) == pytest.approx(MPL_TRUE["L0"] - MPL_TRUE["B"] * PEAK)
    mom = known(MomentumLaw, MOM_TRUE)
    assert mom.floor(PEAK) == pytest.approx(MOM_TRUE["L0"] - MOM_TRUE["C"] * PEAK / (1 - MOM_TRUE["lam"]))


def test_constant_only_warns_annealing_unidentified():
    law = MomentumLaw().fit(curves(known(MomentumLaw, MOM_TRUE), ["constant"]))
    assert any("anneal" in w for w in law.warnings_)
    # The multi-power law's annealing term has nothing to fit on: it says so (it once asked
    # whether a plainly decreasing curve was a loss curve at all).
    with pytest.raises(InsufficientDataError, match="keeps its peak lr from warmup to its last measured step; add a curve measured while"):
        MultiPowerLaw().fit(curves(known(MultiPowerLaw, MPL_TRUE), ["constant"]))


def _direct_mpl(law, lr, steps, warmup):
    """The multi-power law summed term by term (O(steps^2)): the reference for the fast sum.
    A drop to a zero lr has eta^-gamma = inf: G = 1 once any lr follows it, else 0."""
    c = law.coef_
    post = lr[warmup:]
    cum = np.concatenate([[0.0], np.cumsum(post)])
    delta = np.concatenate([[lr[warmup - 1]], post[:-1]]) - post
    out = []
    for s in steps:
        t = s - warmup
        k = np.arange(1, t + 1)
        k = k[delta[k - 1] != 0]
        span, eta = cum[t] - cum[k - 1], post[k - 1]
        with np.errstate(divide="ignore"):
            x = np.where(eta > 0, np.where(eta > 0, eta, 1.0) ** -c["gamma"] * span, np.where(span > 0, np.inf, 0.0))
        g = 1.0 - (1.0 + c["C"] * x) ** -c["beta"]
        out.append(c["L0"] + c["A"] * (cum[t] + lr[:warmup].sum()) ** -c["alpha"] - c["B"] * np.sum(delta[k - 1] * g))
    return np.array(out)


def _awkward_schedules() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    base = schedules()
    jitter = np.abs(base["cosine"] * (1 + 0.3 * rng.standard_normal(T)))  # rises and falls every step
    jitter[:W] = base["cosine"][:W]
    paused = base["cosine"].copy()
    paused[3000:3500] = 0.0  # lr dropped to zero, then resumed
    return {"cosine": base["cosine"], "wsd": base["wsd"], "to_zero": base["linear"], "jitter": jitter, "paused": paused}


@pytest.mark.parametrize("coef", [MPL_TRUE, {**MPL_TRUE, "C": 40.0, "beta": 2.5, "gamma": 1.5},
                                  {**MPL_TRUE, "C": 0.05, "beta": 0.1, "gamma": 0.05}])
def test_mpl_sum_equals_the_direct_sum(coef):
    # Every step a drop, drops of both signs, drops to zero and back: the linear-time sum
    # equals the term-by-term sum (bin_width 1 merges nothing; the default merges only smooth,
    # same-signed drops: within 1e-5, far below loss noise).
    exact, default = known(MultiPowerLaw, coef), known(MultiPowerLaw, coef)
    exact.bin_width = 1
    steps = np.arange(W, T + 1, 37)
    for name, lr in _awkward_schedules().items():
        ref = _direct_mpl(exact, lr, steps, W)
        np.testing.assert_allclose(exact.predict(lr, steps, W), ref, rtol=1e-7, err_msg=name)
        np.testing.assert_allclose(default.predict(lr, steps, W), ref, rtol=1e-5, err_msg=name)
    dense = np.arange(W, T + 1)  # every step evaluated: each drop alone
    lr = _awkward_schedules()["jitter"]
    np.testing.assert_allclose(default.predict(lr, dense, W)[::97], _direct_mpl(exact, lr, dense[::97], W), rtol=1e-7)


def test_trajectory_predictions_at_real_lengths_take_linear_memory():
    # A 72,000-step schedule evaluated at every step needed a (69841 x 69839) matrix (36 GiB);
    # now the laws' sums take memory linear in the steps.
    import tracemalloc

    steps_total = 72_000
    lr = lr_schedule("cosine", steps_total, 3e-4, 2160, final_lr_ratio=0.1)
    for law in (known(MultiPowerLaw, MPL_TRUE), known(MomentumLaw, MOM_TRUE)):
        tracemalloc.start()
        try:
            loss = law.predict(lr)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert loss.shape == (steps_total - 2160 + 1,) and np.all(np.isfinite(loss))
        assert peak < 200 * 2**20, f"{type(law).__name__}: {peak / 2**20:.0f} MiB"
    # The chunked sum gives the values of the direct one on this long schedule too.
    sample = np.array([2160, 2161, 30_001, 71_999, 72_000])
    np.testing.assert_allclose(loss[sample - 2160], law.predict(lr, sample), rtol=1e-12)
    mpl = known(MultiPowerLaw, MPL_TRUE)
    np.testing.assert_allclose(mpl.predict(lr)[sample - 2160], _direct_mpl(mpl, lr, sample, 2160), rtol=1e-8)


def test_absurd_coefficients_are_refused_not_overflowed():
    law = known(MultiPowerLaw, {**MPL_TRUE, "C": 1e-320})
    with pytest.raises(FittingError, match="annealing term cannot be evaluated"):
        law.predict(schedules()["cosine"])
