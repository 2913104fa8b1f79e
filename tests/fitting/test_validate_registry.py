import json

import numpy as np
import pytest

from fitting_synthetic import synthetic_grid, with_seeds
from hpscale.fitting.critical import CriticalBatchLaw
from hpscale.fitting.errors import FittingError, InsufficientDataError, InvalidLawRecordError
from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.loss import LossLaw
from hpscale.fitting.presets import PRESETS
from hpscale.fitting.registry import extrapolation_factor, law_from_record
from hpscale.fitting.runs import RunSet
from hpscale.fitting.trajectory import MomentumLaw
from hpscale.fitting.validate import extrapolation_check, seed_regret
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


def _seeded_grid(noise: float, seeds: int = 3, rng: int = 0, diverged_lr: float | None = None):
    """A held-out lr line (batch fixed, plus one batch off it): loss 3 * (1 + 0.01 * (log2 lr/0.01)^2)
    per configuration, each seed with relative noise ``noise``."""
    from hpscale.fitting.runs import RunSet

    r = np.random.default_rng(rng)
    lrs = 0.01 * 2.0 ** np.array([-2, -1, -0.5, 0, 0.5, 1, 2])
    cfg = [(lr, 65536.0) for lr in lrs] + [(0.01, 131072.0)]
    lr, b, loss, div = [], [], [], []
    for c_lr, c_b in cfg:
        true = 3.0 * (1 + 0.01 * np.log2(c_lr / 0.01) ** 2) * (1.004 if c_b > 65536 else 1.0)
        for s in range(seeds):
            gone = diverged_lr is not None and c_lr == diverged_lr and s == 0
            lr.append(c_lr), b.append(c_b), div.append(gone)
            loss.append(np.nan if gone else true * (1 + noise * r.standard_normal()))
    n = len(lr)
    return RunSet(n_params=np.full(n, 4.7e6), tokens=np.full(n, 4.7e7), lr=lr, batch_tokens=b, final_loss=loss,
                  diverged=div, names=[f"run{i}" for i in range(n)])


def test_seed_regret_reads_seed_means_with_an_interval():
    runs = _seeded_grid(noise=1e-4)
    at_best = seed_regret(runs, 0.01, 65536.0)
    assert at_best["regret"] == 0.0 and at_best["p_best"] > 0.99
    seeds = runs.final_loss[(runs.lr == 0.01) & (runs.batch_tokens == 65536.0)]
    assert at_best["config"] == {"lr": 0.01, "batch_tokens": 65536.0, "n": 3, "diverged": False,
                                 "mean": pytest.approx(seeds.mean())}
    assert at_best["interval"][0] == 0.0 and at_best["interval"][1] < 1e-3
    assert at_best["smooth"] < 1e-3 and at_best["nearest"] == 0.0
    # The noise is the basin bottom's: lr x/÷ 4 (4% above the best) are left out, 6 configurations remain.
    assert at_best["noise"]["rel_std"] == pytest.approx(1e-4, rel=0.5) and at_best["noise"]["dof"] == 12
    # Twice the best lr costs 1% (the landscape's own number); an off-grid lr maps to its nearest.
    double = seed_regret(runs, 0.021, 60000.0)
    assert double["config"]["lr"] == pytest.approx(0.02)
    assert double["regret"] == pytest.approx(0.01, abs=5e-4)
    assert double["interval"][0] > 0.008 and double["interval"][1] < 0.012 and double["p_best"] == 0.0
    assert [c["mean"] for c in double["configs"]] == sorted(c["mean"] for c in double["configs"])
    json.dumps(double, allow_nan=False)
    # The batch counts in the match: the best lr at twice the batch is the 0.4% worse configuration.
    wide = seed_regret(runs, 0.01, 131072.0)
    assert wide["config"]["batch_tokens"] == 131072.0 and wide["regret"] == pytest.approx(0.004, abs=3e-4)
    seeds = runs.final_loss[(runs.lr == 0.01) & (runs.batch_tokens == 131072.0)]
    (row,) = [c for c in wide["configs"] if c["batch_tokens"] == 131072.0]
    assert row["sd"] == pytest.approx(np.std(seeds, ddof=1)) and row["mean"] == pytest.approx(seeds.mean())


def test_seed_regret_interval_covers_the_truth_at_the_measured_noise():
    # 0.5% seed noise, 3 seeds: the truth (0 at the best lr, 1% at twice it) lies inside the 95%
    # interval in at least 85 of 100 synthetic held-out grids (measured: 98 and 89), and the
    # interval is as wide as the noise makes it (measured: 0.015 at the 1% regret).
    for lr_rec, truth in ((0.01, 0.0), (0.02, 0.01)):
        inside, widths = 0, []
        for k in range(100):
            r = seed_regret(_seeded_grid(noise=0.005, rng=k), lr_rec, 65536.0, n_bootstrap=500)
            inside += r["interval"][0] - 1e-12 <= truth <= r["interval"][1] + 1e-12
            widths.append(r["interval"][1] - r["interval"][0])
        assert inside >= 85, (lr_rec, inside)
        if truth > 0:  # an interval far too wide (noise not divided by the seeds) covers everything
            assert inside <= 98 and 0.010 < np.mean(widths) < 0.022, (inside, np.mean(widths))


def test_seed_regret_diverged_and_bad_input():
    runs = _seeded_grid(noise=1e-3, diverged_lr=0.04)
    gone = seed_regret(runs, 0.04, 65536.0)
    assert gone["regret"] is None and gone["interval"] is None and gone["config"]["diverged"]
    assert gone["nearest"] is None and gone["smooth"] is None
    assert seed_regret(runs, 0.01, 65536.0)["regret"] == pytest.approx(0.0, abs=3e-3)
    json.dumps(gone, allow_nan=False)
    # One configuration (or none finite) leaves nothing to compare: no score, not a perfect one.
    one = seed_regret(runs.subset((runs.lr == 0.01) & (runs.batch_tokens == 65536.0)), 0.01, 65536.0)
    assert one["regret"] is None and one["interval"] is None and one["p_best"] is None
    dead = seed_regret(runs.subset(runs.lr == 0.04), 0.04, 65536.0)
    assert dead["best"] is None and dead["regret"] is None
    json.dumps(dead, allow_nan=False)
    with pytest.raises(FittingError, match="positive lr"):
        seed_regret(runs, 0.0, 65536.0)
    with pytest.raises(InsufficientDataError):
        seed_regret(runs.subset(np.zeros(len(runs), bool)), 0.01, 65536.0)
    two_sizes = _seeded_grid(noise=1e-3)
    object.__setattr__(two_sizes, "n_params", np.where(np.arange(len(two_sizes)) % 2 == 0, 4.7e6, 9.4e6))
    with pytest.raises(FittingError, match="one model size"):
        seed_regret(two_sizes, 0.01, 65536.0)


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


def test_a_check_that_cannot_refit_says_it_is_the_data_without_the_held_out_part() -> None:
    # Two model sizes: the refit without the largest sees one size, and once said "every group has
    # n_params=..." of a fit over two sizes.
    rs = synthetic_grid(sizes=(1e7, 3e7), tokens=(1e9, 2e9, 4e9, 8e9))
    with pytest.raises(InsufficientDataError, match="^without the held-out largest model size, .*every group has n_params"):
        extrapolation_check(HyperLaw(n_bootstrap=0), rs)
    with pytest.raises(InsufficientDataError, match="^a trajectory extrapolation check needs at least two curves"):
        extrapolation_check(MomentumLaw(), curves(known(MomentumLaw, MOM_TRUE), ["constant"]))


def test_the_held_out_part_is_named_for_each_kind_of_check() -> None:
    from hpscale.fitting.trajectory import MultiPowerLaw
    from fitting_synthetic import MPL_TRUE

    # The longest curve (the first of equal length) decays; without it only a constant lr is left.
    mpl = curves(known(MultiPowerLaw, MPL_TRUE), ["cosine", "constant"])
    with pytest.raises(InsufficientDataError, match="^without the held-out longest curve, the multi-power law"):
        extrapolation_check(MultiPowerLaw(), mpl)
    # The split's own refusal is not a refit's, and says what it is.
    one_size = synthetic_grid(sizes=(1e7,))
    with pytest.raises(InsufficientDataError) as err:
        extrapolation_check(HyperLaw(form="compute", n_bootstrap=0, on_edge="warn"), one_size)
    assert not str(err.value).startswith("without the held-out")


@pytest.mark.parametrize("method", ["near_optimal", "smooth", "joint"])
def test_a_law_fitted_on_seeds_is_checked(method):
    # The check refits on configuration means; their repeats are gone, so the refit measures no
    # repeat noise (it raised a KeyError on the seeds' names, for every hyper fit with seeds).
    runs = with_seeds(synthetic_grid(noise=0.0), spread=0.004, seed=1)
    law = HyperLaw(form="steplaw", method=method, n_bootstrap=0).fit(runs)
    assert law.noise_.source == "repeats"
    report = extrapolation_check(law, runs)
    assert report["holdout"] == "n_params" and report["mean_loss_regret"] < 0.01


def test_held_out_groups_on_their_grids_edge_are_not_scored():
    # A held-out group whose lr grid stops below its optimum: a law predicting beyond the edge
    # would score no regret there whatever it says. Such groups are left out of the scores; with
    # only such groups the check is inconclusive.
    runs = synthetic_grid()
    big = runs.n_params == runs.n_params.max()
    best_lr = {d: runs.lr[big & (runs.tokens == d)][np.argmin(runs.final_loss[big & (runs.tokens == d)])]
               for d in np.unique(runs.tokens)}
    law = HyperLaw(form="steplaw", n_bootstrap=0, on_edge="warn")

    def cut(tokens):  # drop the best lr and all above it in the largest size's groups at these D
        keep = ~(big & np.isin(runs.tokens, tokens) & (runs.lr >= np.array([best_lr.get(d, np.inf) for d in runs.tokens])))
        return runs.subset(keep)

    some = cut([runs.tokens.max()])
    report = extrapolation_check(law.fit(some), some)
    assert report["groups_on_lr_edge"] == 1 and report["inconclusive"] is None
    scored = [g for g in report["groups"] if not g["lr_edge"]]
    assert report["mean_loss_regret"] == pytest.approx(np.mean([g["loss_regret"] for g in scored]))
    every = cut(list(best_lr))
    report = extrapolation_check(law.fit(every), every)
    assert report["groups_on_lr_edge"] == len(report["groups"]) and "all 3 held-out groups" in report["inconclusive"]


def test_the_check_sees_seeds_and_diverged_runs_as_the_fit_does():
    # Every run above its group's best lr diverged: the fit calls the optima bracketed, and so must
    # the check (it once dropped the diverged runs and found every held-out group on its edge).
    grid = synthetic_grid()
    diverged = np.zeros(len(grid), bool)
    for n, d, b in set(zip(grid.n_params, grid.tokens, grid.batch_tokens)):
        cell = (grid.n_params == n) & (grid.tokens == d) & (grid.batch_tokens == b)
        diverged |= cell & (grid.lr > grid.lr[cell][np.argmin(grid.final_loss[cell])])
    runs = RunSet(n_params=grid.n_params, tokens=grid.tokens, lr=grid.lr, batch_tokens=grid.batch_tokens,
                  final_loss=np.where(diverged, np.nan, grid.final_loss), diverged=diverged, names=grid.names)
    law = HyperLaw(form="steplaw", n_bootstrap=0).fit(runs)
    report = extrapolation_check(law, runs)
    assert report["groups_on_lr_edge"] == 0 and report["inconclusive"] is None
    # The refit gets the kept runs as they are (seeds too, to measure their noise as the fit did).
    seeded = with_seeds(grid, spread=0.004)
    report = extrapolation_check(HyperLaw(form="steplaw", n_bootstrap=0).fit(seeded), seeded)
    held = seeded.n_params == seeded.n_params.max()
    assert report["n_fit_runs"] == int((~held).sum()) and report["n_held_out_runs"] == int(held.sum()) // 2


def test_a_held_out_group_searched_at_one_lr_is_not_scored():
    grid = synthetic_grid()
    big = grid.n_params == grid.n_params.max()
    one_lr = np.zeros(len(grid), bool)
    for d in np.unique(grid.tokens):
        g = big & (grid.tokens == d)
        one_lr |= g & (grid.lr == np.unique(grid.lr[g])[0])  # the group's lowest lr only, 7 batches
    runs = grid.subset(~big | one_lr)
    report = extrapolation_check(HyperLaw(form="steplaw", n_bootstrap=0, on_edge="warn").fit(runs), runs)
    assert report["groups_on_lr_edge"] == 3 and "only lr searched" in report["inconclusive"]
    assert report["mean_loss_regret"] is None


def test_two_architectures_of_one_size_are_scored_apart():
    # Two architectures of each (N, D) (MoE layouts of one active size), the second 0.1 nats better
    # everywhere: each held-out group is scored against its own best run, not the other's (the
    # first's runs were once scored against the second's best: a 3% regret for a perfect law).
    grid = synthetic_grid()
    both = RunSet(n_params=np.tile(grid.n_params, 2), tokens=np.tile(grid.tokens, 2), lr=np.tile(grid.lr, 2),
                  batch_tokens=np.tile(grid.batch_tokens, 2),
                  final_loss=np.concatenate([grid.final_loss, grid.final_loss - 0.1]),
                  diverged=np.zeros(2 * len(grid), bool), names=[f"{n}-{a}" for a in "ab" for n in grid.names],
                  arch=["a"] * len(grid) + ["b"] * len(grid))
    report = extrapolation_check(HyperLaw(form="steplaw", n_bootstrap=0).fit(both), both)
    assert len(report["groups"]) == 6 and report["max_loss_regret"] < 0.01
