"""Run-to-run noise: measured from seeds when there are repeats, else from residuals; the
near-optimal band it implies."""

from __future__ import annotations

import numpy as np
import pytest
from fitting_synthetic import basin_grid

from hpscale.fitting.noise import NO_NOISE, estimate_noise, near_optimal_band, repeat_noise
from hpscale.fitting.optimum import group_optima


@pytest.mark.parametrize("seeds, source", [(1, "residuals"), (2, "repeats")])
def test_noise_estimate_is_within_30_percent_of_the_truth(seeds: int, source: str) -> None:
    for trial in range(3):
        noise = estimate_noise(basin_grid(noise=0.005, seeds=seeds, seed=trial))
        assert noise.source == source and noise.dof >= 20
        assert noise.rel_std == pytest.approx(0.005, rel=0.3)


def test_repeats_need_degrees_of_freedom_and_ignore_diverged_runs() -> None:
    runs = basin_grid(noise=0.005, seeds=2, sizes=(1e7,), per_param=(10,))
    assert repeat_noise(runs.subset(np.arange(4))) is None  # 2 configurations x 2 seeds: 2 dof < 3
    assert repeat_noise(runs.subset(np.arange(6))).dof == 3
    # A diverged seed is no repeat: with it marked, one configuration has one finite run left.
    six = runs.subset(np.arange(6))
    broken = type(six)(n_params=six.n_params, tokens=six.tokens, lr=six.lr, batch_tokens=six.batch_tokens,
                       final_loss=np.where(np.arange(6) == 5, np.nan, six.final_loss),
                       diverged=np.arange(6) == 5, names=six.names)
    assert repeat_noise(broken) is None


def test_band_widens_with_noise_and_narrows_with_seeds_never_below_eps() -> None:
    noise = estimate_noise(basin_grid(noise=0.005, seeds=2))
    one, four = near_optimal_band(noise, 0.0025, np.array([1.0, 4.0]), 1)
    assert one > four > 0.0025  # a mean of 4 seeds is known better than a single run
    assert one == pytest.approx(np.expm1(1.645 * noise.rel_std * np.sqrt(2)), rel=1e-9)
    assert near_optimal_band(NO_NOISE, 0.0025, 1, 1) == pytest.approx(0.0025)
    quiet = estimate_noise(basin_grid(noise=1e-5, seeds=2))
    assert near_optimal_band(quiet, 0.0025, 1, 1) == pytest.approx(0.0025)


def test_noisy_groups_get_wider_near_optimal_sets() -> None:
    runs = basin_grid(noise=0.005)
    noise = estimate_noise(runs)
    fixed = group_optima(runs, 0.0025)
    aware = group_optima(runs, 0.0025, noise)
    assert sum(g.near_optimal.size for g in aware) > sum(g.near_optimal.size for g in fixed)
    assert all(g.band > 0.0025 for g in aware) and all(g.band == 0.0025 for g in fixed)


def test_duplicated_rows_are_not_repeats() -> None:
    # 100 rows of a published grid stored twice under new names once read as "noise 0.00% from
    # 100 repeated configurations" and moved the law.
    runs = basin_grid(noise=0.005, seeds=2, seed=4)
    truth = repeat_noise(runs)
    def stored_twice(rs, idx):
        return type(rs)(n_params=rs.n_params[idx], tokens=rs.tokens[idx], lr=rs.lr[idx],
                        batch_tokens=rs.batch_tokens[idx], final_loss=rs.final_loss[idx],
                        diverged=rs.diverged[idx], names=[f"copy{i}" for i in range(len(idx))])

    again = repeat_noise(stored_twice(runs, np.concatenate([np.arange(len(runs)), np.arange(0, len(runs), 3)])))
    assert again.rel_std == pytest.approx(truth.rel_std) and again.dof == truth.dof
    one_seed = basin_grid(noise=0.005, seeds=1, seed=4)
    assert repeat_noise(stored_twice(one_seed, np.concatenate([np.arange(len(one_seed))] * 2))) is None


def test_a_duplicated_row_is_not_a_second_seed_of_its_configuration() -> None:
    # Counted as a seed it would narrow the configuration's near-optimal band and move its mean.
    runs = basin_grid(noise=0.005, seeds=1, seed=4)
    idx = np.concatenate([np.arange(len(runs)), [0]])
    twice = type(runs)(n_params=runs.n_params[idx], tokens=runs.tokens[idx], lr=runs.lr[idx],
                       batch_tokens=runs.batch_tokens[idx], final_loss=runs.final_loss[idx],
                       diverged=runs.diverged[idx], names=[f"r{i}" for i in range(len(idx))])
    configs = twice.average_repeats()
    assert len(configs) == len(runs) and configs.members[0] == ("r0",)
    assert configs.final_loss[0] == runs.final_loss[0]


def test_two_architectures_of_one_active_size_are_not_repeats() -> None:
    runs = basin_grid(noise=0.005, seeds=2, seed=5)
    arch = type(runs)(n_params=runs.n_params, tokens=runs.tokens, lr=runs.lr, batch_tokens=runs.batch_tokens,
                      final_loss=runs.final_loss, diverged=runs.diverged, names=runs.names,
                      arch=[f"moe:{i % 2}" for i in range(len(runs))])
    assert repeat_noise(runs) is not None and repeat_noise(arch) is None


def test_noise_is_measured_at_the_basin_bottom_where_it_is_used() -> None:
    # Up the basin's walls, near divergence, seeds spread far more (run 4: 0.97% within 2% of a
    # group's best, 2.88% over all configurations); the bands and regrets need the bottom's.
    runs = basin_grid(noise=0.005, seeds=2, seed=6)
    configs = runs.average_repeats()
    gid, keys = configs.group_keys()
    best = np.array([configs.final_loss[gid == g].min() for g in range(len(keys))])
    # The two seeds of every configuration more than 3% above its group's best move apart by
    # +-3% in log loss, their mean kept: a wider spread on the walls, the same basin.
    push = {}
    for c, members in enumerate(configs.members):
        if configs.final_loss[c] > 1.03 * best[gid[c]]:
            push.update({members[0]: 0.03, members[1]: -0.03})
    assert 20 < len(push) < len(runs)
    walls = type(runs)(n_params=runs.n_params, tokens=runs.tokens, lr=runs.lr, batch_tokens=runs.batch_tokens,
                       final_loss=runs.final_loss * np.exp([push.get(n, 0.0) for n in runs.names]),
                       diverged=runs.diverged, names=runs.names)
    bottom = repeat_noise(walls)
    assert bottom.rel_std == pytest.approx(repeat_noise(runs).rel_std, rel=1e-6)
    assert bottom.rel_std == pytest.approx(0.005, rel=0.3) and bottom.dof >= 20
    everything = repeat_noise(walls, basin=None)
    assert everything.rel_std > 3 * bottom.rel_std and everything.dof > bottom.dof
