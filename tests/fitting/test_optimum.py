import numpy as np
import pytest

from fitting_synthetic import TRUE_HYPER, synthetic_grid, with_seeds
from hpscale.fitting.errors import InsufficientDataError
from hpscale.fitting.optimum import group_optima, smooth_optimum
from hpscale.fitting.runs import RunSet


def test_smooth_optimum_recovers_the_bowl_minimum():
    rs = synthetic_grid()
    for g in group_optima(rs):
        lr_star = TRUE_HYPER["a_lr"] * g.n_params ** TRUE_HYPER["alpha_lr"] * g.tokens ** TRUE_HYPER["beta_lr"]
        b_star = TRUE_HYPER["a_b"] * g.tokens ** TRUE_HYPER["beta_b"]
        assert g.method == "quadratic2d"
        assert g.lr == pytest.approx(lr_star, rel=1e-6) and g.batch_tokens == pytest.approx(b_star, rel=1e-6)
        assert not g.at_edge
        near = rs.final_loss[g.near_optimal]
        assert near.max() <= g.best_loss * 1.0025 and g.best_loss == near.min()


def test_edge_is_flagged_with_its_side():
    # Shift every lr of the grid down by a factor e^2: the optimum lies above the grid.
    rs = synthetic_grid(lr_shift=-2.0)
    edges = {e for g in group_optima(rs) for e in g.edges}
    assert edges == {"lr_high"}


def test_single_batch_size_falls_back_to_1d():
    lr = np.exp(np.linspace(-8, -4, 9))
    loss = 3.0 + 0.05 * (np.log(lr) + 6.3) ** 2
    s_lr, s_b, method = smooth_optimum(lr, np.full(9, 1024.0), loss, 0.0025)
    assert method == "quadratic1d" and np.log(s_lr) == pytest.approx(-6.3, abs=1e-9) and s_b == 1024.0


def test_non_convex_surface_falls_back_to_near_optimal_mean():
    x, y = np.meshgrid(np.linspace(-2, 2, 5), np.linspace(-2, 2, 5))
    loss = 3.0 + 0.01 * (x ** 2 - y ** 2).ravel() + 0.2
    lr, b = np.exp(x.ravel() - 6), np.exp(y.ravel() + 10)
    assert smooth_optimum(lr, b, loss, 0.0025)[2] == "near_optimal_mean"


def test_unknown_lr_is_refused():
    rs = RunSet.from_records([{"n_params": 1e6, "tokens": 1e7, "final_loss": 3.0}])
    with pytest.raises(InsufficientDataError, match="no learning rate"):
        group_optima(rs)


def test_repeats_count_by_their_mean_not_their_luckiest_seed():
    # lr 1e-3: seeds 3.00 and 3.10 (mean 3.05); lr 2e-3: 3.039 and 3.041 (mean 3.04; two seeds
    # of one loss to the bit would be one run stored twice). The single best run is at 1e-3, the
    # best configuration at 2e-3.
    rs = RunSet(n_params=[1e6] * 6, tokens=[1e7] * 6, lr=[1e-3, 1e-3, 2e-3, 2e-3, 4e-3, 5e-4],
                batch_tokens=[512] * 6, final_loss=[3.00, 3.10, 3.039, 3.041, 3.5, 3.5],
                diverged=[False] * 6, names=["a0", "a1", "b0", "b1", "c", "d"])
    (g,) = group_optima(rs, eps=0.001)
    assert g.best_lr == 2e-3 and g.best_loss == pytest.approx(3.04)
    assert sorted(g.near_optimal.tolist()) == [2, 3]  # both seeds, as indices of the caller's runs


def test_seeds_with_mean_zero_noise_give_the_single_seed_optima():
    base = synthetic_grid()
    seeded = with_seeds(base, spread=0.01)
    for a, b in zip(group_optima(base), group_optima(seeded)):
        assert (a.best_lr, a.best_batch_tokens, a.lr, a.batch_tokens) == pytest.approx(
            (b.best_lr, b.best_batch_tokens, b.lr, b.batch_tokens), rel=1e-9)
        assert len(b.near_optimal) == 2 * len(a.near_optimal)


def test_diverged_runs_above_the_best_lr_bracket_it():
    # lrs 1e-3..8e-3 at one batch; the best finite run is 2e-3 and everything above 2e-3 diverged:
    # the optimum is bracketed (those lrs are worse), not on the edge of what was searched.
    lr = np.array([1e-3, 2e-3, 4e-3, 8e-3])
    runs = RunSet(n_params=np.full(4, 1e6), tokens=np.full(4, 2e7), lr=lr, batch_tokens=np.full(4, 8192.0),
                  final_loss=np.array([3.2, 3.1, np.nan, np.nan]), diverged=np.array([False, False, True, True]),
                  names=[f"r{i}" for i in range(4)])
    (g,) = group_optima(runs)
    assert g.best_lr == 2e-3 and "lr_high" not in g.edges
    # Without the diverged runs in the set, 2e-3 is the highest lr searched: an edge.
    (g,) = group_optima(runs.subset(runs.usable))
    assert "lr_high" in g.edges
