"""Synthetic data with known parameters, shared by the fitting tests."""

from __future__ import annotations

import numpy as np

from hpscale.fitting.runs import RunSet
from hpscale.fitting.schedules import lr_schedule
from hpscale.fitting.trajectory import LossCurve

# The law the synthetic hyperparameter grids are drawn from.
TRUE_HYPER = {"a_lr": 2.0, "alpha_lr": -0.7, "beta_lr": 0.3, "a_b": 0.5, "beta_b": 0.55}


def synthetic_grid(
    sizes: tuple[float, ...] = (1e7, 3e7, 1e8, 3e8),
    tokens: tuple[float, ...] = (1e9, 4e9, 1.6e10),
    coef: dict[str, float] = TRUE_HYPER,
    lr_shift: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> RunSet:
    """Full lr x batch grids centred (up to ``lr_shift`` in log) on a known power law, with a
    loss bowl L = L(N, D) + 0.02 (log lr - log lr*)^2 + 0.01 (log B - log B*)^2."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("n_params", "tokens", "lr", "batch_tokens", "final_loss", "names")}
    for n in sizes:
        for d in tokens:
            lr_star = coef["a_lr"] * n ** coef["alpha_lr"] * d ** coef["beta_lr"]
            b_star = coef["a_b"] * d ** coef["beta_b"]
            # Grid values on a fixed lattice (not centred on the optimum), like a real sweep.
            lr_c = 2.0 ** np.round(np.log2(lr_star))
            b_c = 2.0 ** np.round(np.log2(b_star))
            for i in range(-4, 5):
                for j in range(-3, 4):
                    lr = lr_c * 2.0 ** (i / 2) * np.exp(lr_shift)
                    b = b_c * 2.0 ** j
                    base = 1.7 + 400 / n ** 0.34 + 400 / d ** 0.28
                    loss = base + 0.02 * np.log(lr / lr_star) ** 2 + 0.01 * np.log(b / b_star) ** 2
                    loss *= 1 + noise * rng.standard_normal()
                    for key, v in zip(cols, (n, d, lr, b, loss, f"n{n:.0e}-d{d:.0e}-lr{lr:.3e}-b{b:.0f}")):
                        cols[key].append(v)
    size = len(cols["names"])
    return RunSet(**{k: (v if k == "names" else np.array(v)) for k, v in cols.items()}, diverged=np.zeros(size, bool))


TRUE_LOSS = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


def chinchilla_like(noise: float = 0.0, seed: int = 0) -> RunSet:
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(np.geomspace(1e7, 3e9, 8), np.geomspace(1e9, 3e11, 8))
    n, d = n.ravel(), d.ravel()
    loss = TRUE_LOSS["E"] + TRUE_LOSS["A"] / n ** TRUE_LOSS["alpha"] + TRUE_LOSS["B"] / d ** TRUE_LOSS["beta"]
    loss = loss * np.exp(noise * rng.standard_normal(loss.size))
    return RunSet(n_params=n, tokens=d, lr=np.full(n.size, np.nan), batch_tokens=np.full(n.size, np.nan),
                  final_loss=loss, diverged=np.zeros(n.size, bool), names=[f"p{i}" for i in range(n.size)])


MPL_TRUE = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "B": 450.0, "C": 1.5, "beta": 0.5, "gamma": 0.5}
MOM_TRUE = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "C": 1.2, "lam": 0.998}
T, W, PEAK = 6000, 300, 3e-4


def schedules() -> dict[str, np.ndarray]:
    return {
        "constant": lr_schedule("constant", T, PEAK, W),
        "cosine": lr_schedule("cosine", T, PEAK, W, final_lr_ratio=0.1),
        "wsd": lr_schedule("wsd", T, PEAK, W, final_lr_ratio=0.1, cooldown_fraction=0.2, decay="exponential"),
        "linear": lr_schedule("linear", T, PEAK, W, final_lr_ratio=0.0),
        "step": lr_schedule("table", T, PEAK, W, table=[(1, PEAK), (3001, 0.3 * PEAK), (4501, 0.1 * PEAK)]),
    }


def curves(law, names) -> list[LossCurve]:
    steps = np.arange(W, T + 1, 64)
    out = []
    for name in names:
        lr = schedules()[name]
        out.append(LossCurve(name=name, lr=lr, steps=steps, loss=law.predict(lr, steps, W), warmup_steps=W))
    return out


def known(cls, coef):
    law = cls()
    law.coef_ = dict(coef)
    return law



def critical_data(p: float = 0.5):
    rows = {"n_params": [], "target_loss": [], "batch_tokens": [], "steps": []}
    for n, loss in ((1e8, 3.4), (3e8, 3.1), (1e9, 2.9), (3e9, 2.7)):
        b_crit = 2e3 * n ** p
        s_min = 1e-2 * n ** 0.5
        for b in 2.0 ** np.arange(14, 24):
            rows["n_params"].append(n)
            rows["target_loss"].append(loss)
            rows["batch_tokens"].append(b)
            rows["steps"].append(s_min * (1 + b_crit / b))
    return {k: np.array(v) for k, v in rows.items()}




def with_seeds(runs: RunSet, spread: float, seed: int = 0) -> RunSet:
    """Every run of ``runs`` twice (two seeds), at loss x (1 + e) and x (1 - e) with e ~ N(0,
    ``spread``) per configuration: the seeds' mean is the original loss exactly, while the better
    seed of each configuration is off by up to a few ``spread``."""
    rng = np.random.default_rng(seed)
    e = spread * rng.standard_normal(len(runs))
    return RunSet(n_params=np.tile(runs.n_params, 2), tokens=np.tile(runs.tokens, 2), lr=np.tile(runs.lr, 2),
                  batch_tokens=np.tile(runs.batch_tokens, 2),
                  final_loss=np.tile(runs.final_loss, 2) * np.concatenate([1 + e, 1 - e]),
                  diverged=np.tile(runs.diverged, 2),
                  names=[f"{n}-s0" for n in runs.names] + [f"{n}-s1" for n in runs.names])


def basin_grid(
    sizes: tuple[float, ...] = (1e7, 2e7, 4e7, 8e7),
    per_param: tuple[float, ...] = (10, 20, 40),
    noise: float = 0.005,
    seeds: int = 1,
    seed: int = 0,
    tilt: float = 0.5,
) -> RunSet:
    """Sweeps drawn from the joint model's world: each (N, D) group a grid of 9 lrs (sqrt(2)
    apart) x 3 batches (2x apart) on a fixed lattice around the TRUE_HYPER optimum, with an
    asymmetric basin tilted by ``tilt`` (the best lr moves as batch^tilt), and multiplicative
    run-to-run noise of relative std ``noise`` (each of ``seeds`` seeds drawn separately)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for ratio in per_param:
            d = n * ratio
            lr_star = TRUE_HYPER["a_lr"] * n ** TRUE_HYPER["alpha_lr"] * d ** TRUE_HYPER["beta_lr"]
            b_star = TRUE_HYPER["a_b"] * d ** TRUE_HYPER["beta_b"]
            lr_c = np.sqrt(2.0) ** np.round(np.log(lr_star) / np.log(np.sqrt(2.0)))
            b_c = 2.0 ** np.round(np.log2(b_star))
            base = 1.7 + 400 / n ** 0.34 + 400 / d ** 0.28
            for i in range(-4, 5):
                for j in (-1, 0, 1):
                    lr, b = lr_c * np.sqrt(2.0) ** i, b_c * 2.0 ** j
                    u, v = np.log(lr / lr_star), np.log(b / b_star)
                    w = u - tilt * v
                    shape = (0.01 if w < 0 else 0.03) * w * w + 0.012 * v * v
                    for s in range(seeds):
                        loss = base * np.exp(shape + noise * rng.standard_normal())
                        rows.append({"n_params": n, "tokens": d, "lr": lr, "batch_tokens": b, "final_loss": loss,
                                     "name": f"n{n:.0e}-r{ratio:g}-i{i}-j{j}-s{s}"})
    return RunSet.from_records(rows)
