"""The lr-batch coupling: the exponent of lr* on the batch at fixed (N, D), with its interval."""

from __future__ import annotations

import numpy as np
import pytest
from fitting_synthetic import synthetic_grid

from hpscale.fitting.coupling import THEORY, LrBatchCoupling, cell_optima
from hpscale.fitting.errors import InsufficientDataError
from hpscale.fitting.runs import RunSet


def coupled_grid(k: float, noise: float = 0.0, seed: int = 0, batches: tuple[float, ...] = (2**15, 2**16, 2**17, 2**18),
                 lr_points: int = 9) -> RunSet:
    """Groups (N, D) whose optimal lr is 0.3 N^-0.5 (B / 2^16)^k; the loss a basin in (log lr,
    log B) around it (the best batch 2^16.5 tokens), scaled by a per-group level (which the
    within-group estimate must ignore)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {c: [] for c in ("n_params", "tokens", "lr", "batch_tokens", "final_loss", "names")}
    for n in (1e6, 4e6, 1.6e7):
        for d in (2e8, 8e8):
            grid = 2.0 ** np.arange(-18, 0, 0.5)  # a fixed lattice, as a real sweep's
            for b in batches:
                lr_star = 0.3 * n ** -0.5 * (b / 2**16) ** k
                nearest = int(np.argmin(np.abs(np.log(grid / lr_star))))
                lrs = grid[nearest - lr_points // 2: nearest + lr_points // 2 + 1]
                for lr in lrs:
                    basin = 0.03 * np.log(lr / lr_star) ** 2 + 0.01 * (np.log(b) - 16.5 * np.log(2)) ** 2
                    loss = (2.0 + 30 / n ** 0.3 + 0.1 * np.log(d / 2e8)) * np.exp(basin)
                    loss *= 1 + noise * rng.standard_normal()
                    for c, v in zip(rows, (n, d, lr, b, loss, f"{n:g}-{d:g}-{b:g}-{lr:.4g}")):
                        rows[c].append(v)
    size = len(rows["names"])
    return RunSet(**{c: (v if c == "names" else np.array(v)) for c, v in rows.items()}, diverged=np.zeros(size, bool))


@pytest.mark.parametrize("k", [0.0, 0.5, 1.0])
def test_the_exponent_of_a_noiseless_grid_is_exact(k: float) -> None:
    fit = LrBatchCoupling(n_bootstrap=200).fit(coupled_grid(k))
    # The loss is the basin model itself: its tilt is the truth.
    assert fit.exponent_ == pytest.approx(k, abs=1e-4)
    assert fit.groups_ == 6 and len(fit.cells_) == 24 and fit.excluded_ == 0
    assert fit.interval_ == pytest.approx((k, k), abs=1e-3)
    # The per-group table: each cell's parabola vertex in (log lr, loss), near its optimum.
    assert all(g["slope"] == pytest.approx(k, abs=0.02) for g in fit.group_slopes_)


@pytest.mark.parametrize("k", [0.5, 1.0])
def test_noisy_grids_give_an_interval_around_the_truth(k: float) -> None:
    fit = LrBatchCoupling(n_bootstrap=500, seed=1).fit(coupled_grid(k, noise=0.0005, seed=3))
    lo, hi = fit.interval_  # type: ignore[misc]
    assert lo < k < hi and hi - lo < 0.3
    assert abs(fit.exponent_ - k) < 0.1  # type: ignore[operator]
    again = LrBatchCoupling(n_bootstrap=500, seed=1).fit(coupled_grid(k, noise=0.0005, seed=3))
    assert again.interval_ == fit.interval_  # seeded: reproducible


def test_a_grid_without_coupling_reads_zero() -> None:
    fit = LrBatchCoupling(n_bootstrap=100).fit(synthetic_grid())  # lr* independent of the batch there
    assert fit.exponent_ == pytest.approx(0.0, abs=0.02)


def test_cells_with_the_optimum_on_the_grid_edge_are_left_out() -> None:
    runs = coupled_grid(0.5)
    # Drop the lrs above each cell's optimum in the largest-batch cells: their best is the top edge.
    lr_star = 0.3 * runs.n_params ** -0.5 * (runs.batch_tokens / 2**16) ** 0.5
    keep = ~((runs.batch_tokens == 2**18) & (runs.lr > lr_star * 1.01))
    fit = LrBatchCoupling(n_bootstrap=0).fit(runs.subset(keep))
    assert fit.excluded_ == 6 and len(fit.cells_) == 18
    # Their runs still count: one wall of the basin, placed by the shared curvature.
    assert fit.exponent_ == pytest.approx(0.5, abs=1e-3) and fit.interval_ is None


def test_a_diverged_neighbour_brackets_the_optimum_at_its_grid_point() -> None:
    lr = np.array([1e-3, 2e-3, 4e-3, 8e-3])
    runs = RunSet(n_params=np.ones(4), tokens=np.ones(4), lr=lr, batch_tokens=np.full(4, 1024.0),
                  final_loss=np.array([3.2, 3.1, 3.0, np.nan]), diverged=np.array([False, False, False, True]),
                  names=list("abcd"))
    (cell,), excluded, _ = cell_optima(runs)
    assert (cell.lr, cell.method, excluded) == (4e-3, "grid", 0)


def test_too_little_data_says_why_and_records_the_theory() -> None:
    one_batch = coupled_grid(0.5, batches=(2**16,))
    fit = LrBatchCoupling(optimizer="sgd").fit(one_batch)
    rec = fit.to_record()
    assert rec["exponent"] is None and rec["interval"] is None and "two or more batch sizes" in rec["note"]
    assert (rec["theory"], rec["optimizer"]) == (1.0, "sgd") and "linear" in rec["theory_basis"]
    assert LrBatchCoupling(optimizer="adafactor").fit(one_batch).to_record()["theory"] is None
    assert {k: v[0] for k, v in THEORY.items()} == {"sgd": 1.0, "sgd_sai": 1.0, "adamw": 0.5, "lamb": 0.5,
                                                     "lion": 0.5, "muon": 0.5}
    with pytest.raises(InsufficientDataError):
        LrBatchCoupling().fit(one_batch.subset(np.zeros(len(one_batch), bool)))


def test_the_record_is_json_safe() -> None:
    import json

    rec = LrBatchCoupling(optimizer="lion", n_bootstrap=50).fit(coupled_grid(0.5)).to_record()
    assert json.loads(json.dumps(rec)) == rec
    assert rec["groups"] == 6 and rec["cells"] == 24 and rec["theory"] == 0.5 and len(rec["per_group"]) == 6


def test_one_lr_grid_for_every_batch_is_measured_without_bias_and_warns() -> None:
    # One lr grid of 5 points per group, centred on the middle batch: at the smallest and largest
    # batches lr* (k = 0.5) reaches the grid's edge. A regression of the cells' optima would
    # leave those cells out and keep only the ones whose noise pulled the optimum inward (0.32
    # for 0.5 on such grids, BENCHMARKS.md); the basin's tilt uses their runs too.
    rng = np.random.default_rng(4)
    rows = []
    for n in (1e6, 4e6, 1.6e7):
        centre = 0.3 * n ** -0.5
        for b in (2**14, 2**15, 2**16, 2**17, 2**18):
            for lr in centre * 2.0 ** np.arange(-1.0, 1.5, 0.5):
                basin = 0.03 * np.log(lr / (centre * (b / 2**16) ** 0.5)) ** 2 + 0.01 * np.log(b / 2**16) ** 2
                rows.append({"name": f"{n:g}-{b}-{lr:.4g}", "n_params": n, "tokens": 2e8, "lr": lr, "batch_tokens": float(b),
                             "final_loss": 2.0 * np.exp(basin) * (1 + 0.002 * rng.standard_normal())})
    fit = LrBatchCoupling(n_bootstrap=300).fit(RunSet.from_records(rows))
    assert fit.excluded_ >= 6 and "cells have their best lr on the lr grid's edge" in fit.to_record()["warning"]
    lo, hi = fit.interval_  # type: ignore[misc]
    assert lo < 0.5 < hi and abs(fit.exponent_ - 0.5) < 0.1  # type: ignore[operator]
    assert LrBatchCoupling(n_bootstrap=0).fit(coupled_grid(0.5)).to_record()["warning"] is None


def test_runs_that_cannot_determine_the_tilt_give_no_exponent_and_say_why() -> None:
    def sweep(n_lr: int, lr_effect: float, seed: int) -> RunSet:
        rng = np.random.default_rng(seed)
        rows = []
        for n in (1e6, 4e6, 1.6e7):
            centre = 0.3 * n ** -0.5
            for b in (2**15, 2**17):
                for lr in centre * 2.0 ** (0.5 * (np.arange(n_lr) - (n_lr - 1) / 2)):
                    basin = lr_effect * np.log(lr / (centre * (b / 2**16) ** 0.5)) ** 2 + 0.01 * np.log(b / 2**16) ** 2
                    rows.append({"name": f"{n:g}-{b}-{lr:.5g}", "n_params": n, "tokens": 2e8, "lr": lr,
                                 "batch_tokens": float(b), "final_loss": 2.5 * np.exp(basin) * (1 + 0.008 * rng.standard_normal())})
        return RunSet.from_records(rows)

    # Two lrs per batch: 12 runs for the basin's 14 parameters (before, a confident exponent of
    # whatever the noise said, with an interval of zero width).
    thin = LrBatchCoupling(n_bootstrap=100).fit(sweep(2, 0.03, 0))
    assert thin.exponent_ is None and thin.interval_ is None and "too few for the basin's 14 parameters" in thin.note_
    # Enough runs, but the loss does not depend on the lr: the tilt is free, whatever it fits to.
    for seed in range(3):
        flat = LrBatchCoupling(n_bootstrap=100, seed=seed).fit(sweep(6, 0.0, seed))
        assert flat.exponent_ is None and flat.interval_ is None and flat.note_
        assert flat.to_record()["exponent"] is None


def test_the_group_by_group_solver_takes_the_dense_solvers_steps() -> None:
    # The basin's per-group lr* and B* are eliminated with the floors, group by group; the same
    # damped system as the dense Schur step, so the same fits and resample fits to rounding.
    from dataclasses import replace

    from hpscale.fitting import joint
    from hpscale.fitting.coupling import basin_data, basin_starts

    data = basin_data(coupled_grid(0.5, noise=0.003, seed=5), 0.003)
    assert data is not None and data.local and data.n_groups == 6
    dense = replace(data, local=False)
    weights, _ = joint.bootstrap_weights(data.group, data.n_groups, 6, np.random.default_rng(0))
    weights = np.vstack([np.ones(data.log_loss.size), weights])
    start = basin_starts(data)[0]
    for it in (1, 3, 200):  # after one step, a few, and at convergence
        fast, cost_fast = joint.solve(start, data, weights, 0.003, max_iter=it)
        slow, cost_slow = joint.solve(start, dense, weights, 0.003, max_iter=it)
        assert np.allclose(fast, slow, rtol=1e-7, atol=1e-9) and np.allclose(cost_fast, cost_slow, rtol=1e-9)
    assert np.abs(fast[0] - start).max() > 1e-3  # it moved


def test_the_group_step_holds_for_a_group_drawn_as_copies_of_one_run() -> None:
    # A resample can draw a group's runs as copies of one run: its 3 x 3 block is then nearly
    # rank 1, and at the small damping near convergence a closed-form inverse lost every digit.
    from dataclasses import replace

    from hpscale.fitting import joint
    from hpscale.fitting.coupling import basin_data, basin_starts

    data = basin_data(coupled_grid(0.5, noise=0.003, seed=5), 0.003)
    assert data is not None
    dense = replace(data, local=False)
    weights = np.ones(data.log_loss.size)
    first = np.flatnonzero(data.group == 0)
    weights[first] = 0.0
    weights[first[0]] = first.size  # group 0: one run, drawn every time
    theta = basin_starts(data)[:1]
    r, jac_local = joint.residuals(theta, data, jac=True)
    _, jac_dense = joint.residuals(theta, dense, jac=True)
    onehot = np.eye(data.n_groups)[data.group]
    order = np.argsort(data.group, kind="stable")
    segments = np.searchsorted(data.group[order], np.arange(data.n_groups))
    w = weights[None, :]
    for la in (1e-3, 1e-9):
        lam = np.array([la])
        fast_j, fast_f = joint._local_step(jac_local, r, w, w, segments, order, lam)
        slow_j, slow_f = joint._law_step(jac_dense, r, w, w, onehot, lam)
        assert np.allclose(fast_j, slow_j, rtol=1e-6, atol=1e-9) and np.allclose(fast_f, slow_f, rtol=1e-6, atol=1e-9)
