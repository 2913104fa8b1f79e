import json

import numpy as np
import pytest

from fitting_synthetic import TRUE_HYPER, synthetic_grid, with_seeds
from hpscale.fitting.errors import InsufficientDataError, InvalidLawRecordError, NotFittedError
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.registry import law_from_record
from hpscale.fitting.runs import RunSet
from hpscale.fitting.sanity import design_notes


def test_smooth_method_recovers_known_coefficients():
    law = HyperLaw(form="steplaw", method="smooth", n_bootstrap=0).fit(synthetic_grid())
    for k, v in TRUE_HYPER.items():
        assert law.coef_[k] == pytest.approx(v, rel=1e-5), k


def test_near_optimal_method_recovers_exponents():
    # The near-optimal set sits on a lattice not centred on the optimum: exponents are
    # recovered to within the lattice's resolution, not exactly.
    law = HyperLaw(form="steplaw", n_bootstrap=0).fit(synthetic_grid())
    assert law.coef_["alpha_lr"] == pytest.approx(-0.7, abs=0.12)
    assert law.coef_["beta_lr"] == pytest.approx(0.3, abs=0.12)
    assert law.coef_["beta_b"] == pytest.approx(0.55, abs=0.12)
    pred = law.predict(1e8, 4e9)
    truth = TRUE_HYPER["a_lr"] * 1e8 ** -0.7 * 4e9 ** 0.3
    assert abs(np.log(pred.lr / truth)) < 0.3


def test_full_and_compute_forms():
    rs = synthetic_grid()
    full = HyperLaw(form="full", method="smooth", n_bootstrap=0).fit(rs)
    assert full.coef_["alpha_b"] == pytest.approx(0.0, abs=1e-5)
    assert full.coef_["beta_b"] == pytest.approx(0.55, rel=1e-5)
    comp = HyperLaw(form="compute", method="smooth", n_bootstrap=0).fit(rs)
    assert set(comp.coef_) == {"a_lr", "gamma_lr", "a_b", "gamma_b"}
    assert comp.predict(1e8, 4e9).lr == pytest.approx(comp.predict(0, 0, compute=6 * 1e8 * 4e9).lr)


def test_bootstrap_is_seeded_and_intervals_cover_truth():
    rs = synthetic_grid(noise=0.002, seed=3)
    a = HyperLaw(method="smooth", n_bootstrap=200, seed=7).fit(rs)
    b = HyperLaw(method="smooth", n_bootstrap=200, seed=7).fit(rs)
    assert a.coef_samples_ == b.coef_samples_ and len(a.coef_samples_) == 200
    for k in ("alpha_lr", "beta_lr", "beta_b"):
        lo, hi = a.intervals_[k]
        assert lo <= TRUE_HYPER[k] <= hi, (k, lo, hi)
    pred = a.predict(3e8, 1.6e10)
    assert pred.lr_interval[0] < pred.lr < pred.lr_interval[1]
    assert pred.batch_tokens_interval[0] < pred.batch_tokens < pred.batch_tokens_interval[1]


def test_fit_range_provenance_and_record_roundtrip():
    rs = synthetic_grid()
    law = HyperLaw(n_bootstrap=20).fit(rs)
    assert law.fit_range_["n_params"] == [1e7, 3e8]
    assert law.fit_range_["compute"] == [6 * 1e7 * 1e9, 6 * 3e8 * 1.6e10]
    assert law.runs_used_ == rs.names
    record = json.loads(json.dumps(law.to_record()))
    back = law_from_record(record)
    assert isinstance(back, HyperLaw) and back.coef_ == pytest.approx(law.coef_)
    assert back.predict(1e9, 1e11) == law.predict(1e9, 1e11)


def test_diverged_runs_are_ignored():
    rs = synthetic_grid()
    div = rs.final_loss > np.quantile(rs.final_loss, 0.8)
    broken = RunSet(n_params=rs.n_params, tokens=rs.tokens, lr=rs.lr, batch_tokens=rs.batch_tokens,
                    final_loss=np.where(div, np.inf, rs.final_loss), diverged=div, names=rs.names)
    law = HyperLaw(method="smooth", n_bootstrap=0).fit(broken)
    assert law.coef_["alpha_lr"] == pytest.approx(-0.7, rel=1e-4)
    assert len(law.runs_used_) == int((~div).sum())


def test_too_few_groups():
    with pytest.raises(InsufficientDataError, match="at least 4 \\(N, D\\) groups"):
        HyperLaw(n_bootstrap=0).fit(synthetic_grid(sizes=(1e7,), tokens=(1e9, 4e9, 1.6e10)))


def test_single_model_size():
    with pytest.raises(InsufficientDataError, match="every group has n_params=1e\\+07.*only says how lr\\* moves with D"):
        HyperLaw(n_bootstrap=0).fit(synthetic_grid(sizes=(1e7,), tokens=(1e9, 2e9, 4e9, 8e9)))
    # The compute form fits, and says that with one size C moves only through D (the warning
    # travels to every recommendation, as a design note).
    law = HyperLaw(form="compute", n_bootstrap=0).fit(synthetic_grid(sizes=(1e7,), tokens=(1e9, 2e9, 4e9, 8e9)))
    assert any(w.startswith("every group has one model size: C = 6ND varies only through the other")
               for w in law.warnings_)
    assert design_notes(law.to_record())[1] == [w for w in law.warnings_ if w.startswith("every group has one")]


def test_all_diverged():
    rs = synthetic_grid()
    dead = RunSet(n_params=rs.n_params, tokens=rs.tokens, lr=rs.lr, batch_tokens=rs.batch_tokens,
                  final_loss=np.full(len(rs), np.nan), diverged=np.ones(len(rs), bool), names=rs.names)
    with pytest.raises(InsufficientDataError, match="all .* runs diverged"):
        HyperLaw().fit(dead)


def test_edge_error_names_group_and_edge_and_warn_records_it():
    rs = synthetic_grid(lr_shift=-2.0)
    with pytest.raises(InsufficientDataError, match="group N=1e\\+07, D=1e\\+09: .*at the highest learning rate searched"):
        HyperLaw(n_bootstrap=0).fit(rs)
    law = HyperLaw(n_bootstrap=0, on_edge="warn").fit(rs)
    assert len(law.warnings_) == 12 and all("at the highest learning rate searched" in w for w in law.warnings_)
    assert not any("lr_high" in w or "on_edge" in w for w in law.warnings_)  # words, not internal names
    assert law.to_record()["warnings"] == law.warnings_


def test_missing_batch_and_bad_settings():
    rs = synthetic_grid()
    no_batch = RunSet(n_params=rs.n_params, tokens=rs.tokens, lr=rs.lr, batch_tokens=np.full(len(rs), np.nan),
                      final_loss=rs.final_loss, diverged=rs.diverged, names=rs.names)
    with pytest.raises(InsufficientDataError, match="batch_tokens"):
        HyperLaw(n_bootstrap=0).fit(no_batch)
    with pytest.raises(ValueError, match="method"):
        HyperLaw(method="magic").fit(rs)
    with pytest.raises(ValueError, match="on_edge"):
        HyperLaw(on_edge="ignore").fit(rs)
    with pytest.raises(InvalidLawRecordError):
        HyperLaw(form="cubic").fit(rs)


def test_not_fitted_and_bad_records():
    with pytest.raises(NotFittedError):
        HyperLaw().predict(1e9, 1e10)
    with pytest.raises(NotFittedError):
        HyperLaw().to_record()
    with pytest.raises(InvalidLawRecordError):
        law_from_record({"kind": "hyper", "form": "steplaw", "coefficients": {"a_lr": 1.0}})
    with pytest.raises(InvalidLawRecordError):
        law_from_record({"kind": "hyper", "form": "steplaw"})


@pytest.mark.parametrize("method", ["near_optimal", "smooth"])
def test_seeds_are_averaged_before_the_fit(method):
    # Two seeds per configuration whose mean is the one-seed loss: the same law, fitted on
    # (and crediting) every seed's run. Without averaging, each group's optimum would be its
    # luckiest seed, 1% noise apart.
    # (The fixed band: the seeds' spread would otherwise, rightly, widen the noise band.)
    base = synthetic_grid()
    one = HyperLaw(method=method, n_bootstrap=20, seed=3, noise_band=False).fit(base)
    two = HyperLaw(method=method, n_bootstrap=20, seed=3, noise_band=False).fit(with_seeds(base, spread=0.01))
    assert two.coef_ == pytest.approx(one.coef_, rel=1e-9)
    samples = [np.array([[c[k] for k in sorted(c)] for c in law.coef_samples_]) for law in (one, two)]
    np.testing.assert_allclose(samples[1], samples[0], rtol=1e-9)
    assert len(two.runs_used_) == 2 * len(one.runs_used_)


@pytest.mark.parametrize("method", ["near_optimal", "smooth", "joint"])
def test_groups_on_one_tokens_per_parameter_line_say_so(method) -> None:
    # Every group at 20 tokens a parameter: lr* on N and on D cannot be told apart. The error
    # says so and names what answers (the compute form, which fits).
    grid = synthetic_grid(sizes=(1e7, 4e7, 1.6e8, 6.4e8), tokens=(1e9,))
    runs = RunSet(n_params=grid.n_params, tokens=20 * grid.n_params, lr=grid.lr, batch_tokens=grid.batch_tokens,
                  final_loss=grid.final_loss, diverged=grid.diverged, names=grid.names)
    with pytest.raises(InsufficientDataError, match="one line D = c N\\^k.*--form compute"):
        HyperLaw(form="steplaw", method=method, n_bootstrap=0, on_edge="warn").fit(runs)
    assert HyperLaw(form="compute", method=method, n_bootstrap=0, on_edge="warn").fit(runs).coef_["gamma_lr"] < 0
