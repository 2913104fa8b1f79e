"""Readers of the published data under ../shared/data/external (see its README).

Shared by benchmarks/fit_*.py and tests/fitting: they turn other people's CSV files into the
fitting package's inputs. The learning-rate schedules of the multi-power-law curves are
rebuilt per step from the file names, as the MultiPowerLaw repository scores them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hpscale.fitting.runs import RunSet
from hpscale.fitting.schedules import lr_schedule
from hpscale.fitting.trajectory import LossCurve

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "external"

STEPLAW_SEQ_LEN = 2048  # Step Law's `bs` counts sequences of 2,048 tokens
MPL_PEAK_LR = 3e-4
MPL_WARMUP = 2160
MPL_TRAIN = ("constant_24000", "cosine_24000", "wsdcon_9")
MPL_TEST = ("constant_72000", "cosine_72000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_18")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def steplaw_runs(root: Path = DEFAULT_ROOT) -> RunSet:
    """The 1,911 Step Law dense runs; final_loss is the smoothed loss the paper fits."""
    rows = _rows(root / "steplaw" / "dense_lr_bs_loss.csv")
    return RunSet(
        n_params=np.array([float(r["N"]) for r in rows]),
        tokens=np.array([float(r["D"]) for r in rows]),
        lr=np.array([float(r["lr"]) for r in rows]),
        batch_tokens=np.array([float(r["bs"]) * STEPLAW_SEQ_LEN for r in rows]),
        final_loss=np.array([float(r["smooth loss"]) for r in rows]),
        diverged=np.zeros(len(rows), bool),
        names=[f"steplaw/{i}:{r['exp_name']}" for i, r in enumerate(rows)],
    )


def chinchilla_runs(root: Path = DEFAULT_ROOT, drop_highest: int = 5) -> RunSet:
    """Chinchilla's Fig. 4 points with the ``drop_highest`` highest-loss rows removed (Epoch
    AI's practice); D = C / (6 N)."""
    rows = _rows(root / "chinchilla" / "svg_extracted_data.csv")
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.sort(np.argsort(loss)[: len(rows) - drop_highest])
    return RunSet(
        n_params=n[keep], tokens=c[keep] / (6 * n[keep]), lr=np.full(keep.size, np.nan),
        batch_tokens=np.full(keep.size, np.nan), final_loss=loss[keep], diverged=np.zeros(keep.size, bool),
        names=[f"chinchilla/{i}" for i in keep],
    )


def mpl_lr(name: str, total_steps: int) -> np.ndarray:
    """Per-step lr of an MPL curve rebuilt from its file name (linear warmup from 0)."""
    kind, *args = name.split("_")
    common = dict(total_steps=total_steps, peak_lr=MPL_PEAK_LR, warmup_steps=MPL_WARMUP)
    if kind == "constant":
        return lr_schedule("constant", **common)
    if kind == "cosine":
        # The cosine runs decay to 3e-5 at the step in their name, then stay there.
        length = int(args[0])
        lr = lr_schedule("cosine", **{**common, "total_steps": length}, final_lr_ratio=0.1)
        return np.concatenate([lr, np.full(max(0, total_steps - length), lr[-1])])[:total_steps]
    if kind in ("wsd", "wsdld"):
        start, end = int(args[0]), int(args[1])
        lr = lr_schedule(
            "wsd", **{**common, "total_steps": end}, final_lr_ratio=0.1,
            cooldown_fraction=(end - start) / end, decay="exponential" if kind == "wsd" else "linear",
        )
        return np.concatenate([lr, np.full(max(0, total_steps - end), lr[-1])])[:total_steps]
    if kind == "wsdcon":
        # 3e-4 until step 8,000, then a constant {3, 9, 18}e-5.
        table = [(1, MPL_PEAK_LR), (8001, int(args[0]) * 1e-5)]
        return lr_schedule("table", **common, table=table)
    raise ValueError(f"unknown MPL schedule name {name!r}")


def mpl_curve(root: Path, size: str, name: str) -> LossCurve:
    """One MPL curve (size "25" or "100"); files named *_24000 are cut below step 24,000."""
    rows = _rows(root / "mpl" / f"csv_{size}" / f"{name}.csv")
    steps = np.array([int(float(r["step"])) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    if name.endswith("24000"):
        keep = steps < 24000
        steps, loss = steps[keep], loss[keep]
    return LossCurve(name=name, lr=mpl_lr(name, int(steps.max())), steps=steps, loss=loss, warmup_steps=MPL_WARMUP)


def zhang_critical_batch(root: Path = DEFAULT_ROOT) -> dict[str, np.ndarray]:
    """Zhang et al. steps-to-target table as arrays (batch converted to tokens)."""
    rows = _rows(root / "critical_batch" / "zhang2024_cbs_steps_to_target.csv")
    return {
        "n_params": np.array([float(r["model_size_M"]) * 1e6 for r in rows]),
        "target_loss": np.array([float(r["target_eval_loss_c4"]) for r in rows]),
        "batch_tokens": np.array([float(r["batch_size_seqs"]) * float(r["seq_len"]) for r in rows]),
        "steps": np.array([float(r["steps_to_target"]) for r in rows]),
    }


def demo_runs() -> tuple[RunSet, RunSet]:
    """Run 4 of the GPU validation, from the shipped demo file: the sweep's runs (val4) and every
    held-out run of the 4.72M model (its local grid, the batch x2 cells and the presets'
    recommendations; 3 seeds each)."""
    from hpscale.service.demo import read_demo  # the demo file ships inside the package

    doc = read_demo()

    def runs(sources: set[str]) -> RunSet:
        rows = [r for r in doc["runs"] if r["source"] in sources and r["status"] in ("done", "diverged")]
        return RunSet.from_records(
            {"name": f"{r['source']}/{r['name']}", "n_params": r["n_params"], "tokens": r["tokens"], "lr": r["lr"],
             "batch_tokens": r["batch_tokens"], "final_loss": r["final_loss"],
             "diverged": r["status"] == "diverged" or r["final_loss"] is None}
            for r in rows)

    return runs({"val4"}), runs({"val4-held", "val4-held-batch", "val4-held-steplaw", "val4-held-deepseek"})
