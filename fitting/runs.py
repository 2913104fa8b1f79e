"""The input every hyperparameter and loss law is fitted on: a set of finished runs.

A ``RunSet`` holds one row per run as parallel numpy arrays. Units: ``n_params`` non-embedding
parameters (count), ``tokens`` training tokens, ``lr`` peak learning rate, ``batch_tokens`` batch
in tokens, ``final_loss`` nats/token. Unknown ``lr`` / ``batch_tokens`` are NaN; a diverged run
may carry a NaN or infinite loss, any other run must have a finite one. ``names`` identify the
runs so that a fit can report exactly which runs it used. ``arch`` optionally labels each run's
architecture (for a mixture-of-experts model, its total parameter count): runs of different
labels never share a group, even at equal N (the active parameters) and D.

Repeats (the same N, D, lr and batch trained with several seeds) are one measurement of that
configuration: the laws fit on ``average_repeats()``, one row per configuration with the mean
loss, so that a group's optimum is not the luckiest seed (the minimum over seeds is biased low,
and picks whichever configuration drew the best noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpscale.fitting.errors import FittingError, InsufficientDataError


class InvalidRunsError(FittingError):
    """The runs handed to a fit are malformed (wrong shapes, negative sizes, NaN loss ...)."""


@dataclass(frozen=True)
class RunSet:
    """Finished runs as parallel arrays; build with ``RunSet(...)`` or ``from_records``."""

    n_params: np.ndarray
    tokens: np.ndarray
    lr: np.ndarray
    batch_tokens: np.ndarray
    final_loss: np.ndarray
    diverged: np.ndarray
    names: list[str]
    # Row i averages the runs members[i] (see average_repeats); None: every row is one run.
    members: list[tuple[str, ...]] | None = None
    # Architecture label of every run ("" for the default architecture); None: all one.
    arch: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        arrays = {}
        for field_name in ("n_params", "tokens", "lr", "batch_tokens", "final_loss"):
            arr = np.asarray(getattr(self, field_name), dtype=float).reshape(-1)
            if arr.shape != (n,):
                raise InvalidRunsError(f"{field_name} has {arr.size} values but there are {n} run names")
            arrays[field_name] = arr
        div = np.asarray(self.diverged, dtype=bool).reshape(-1)
        if div.shape != (n,):
            raise InvalidRunsError(f"diverged has {div.size} values but there are {n} run names")
        arrays["diverged"] = div
        for key, arr in arrays.items():
            object.__setattr__(self, key, arr)
        object.__setattr__(self, "names", [str(x) for x in self.names])
        if self.members is not None:
            members = [tuple(str(x) for x in m) for m in self.members]
            if len(members) != n or not all(members):
                raise InvalidRunsError(f"members must list the runs of each of the {n} rows")
            object.__setattr__(self, "members", members)
        if self.arch is not None:
            arch = [str(a) for a in self.arch]
            if len(arch) != n:
                raise InvalidRunsError(f"arch has {len(arch)} labels but there are {n} run names")
            object.__setattr__(self, "arch", arch)
        self._validate()

    def _validate(self) -> None:
        for key in ("n_params", "tokens"):
            arr = getattr(self, key)
            bad = ~(np.isfinite(arr) & (arr > 0))
            if bad.any():
                raise InvalidRunsError(f"{key} must be finite and > 0; run {self.names[int(np.argmax(bad))]!r} has {arr[bad][0]}")
        for key in ("lr", "batch_tokens"):
            arr = getattr(self, key)
            bad = ~np.isnan(arr) & ~(np.isfinite(arr) & (arr > 0))
            if bad.any():
                raise InvalidRunsError(f"{key} must be > 0 or NaN (unknown); run {self.names[int(np.argmax(bad))]!r} has {arr[bad][0]}")
        bad = ~np.isfinite(self.final_loss) & ~self.diverged
        if bad.any():
            raise InvalidRunsError(
                f"run {self.names[int(np.argmax(bad))]!r} has a non-finite final_loss but is not marked diverged"
            )
        if len(set(self.names)) != len(self.names):
            raise InvalidRunsError("run names must be unique (they are the fit's provenance)")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "RunSet":
        """Build from dicts with keys n_params, tokens, final_loss and optionally lr,
        batch_tokens, diverged, name (defaults to ``run-<index>``), arch (default "")."""
        rows = list(records)
        arch = [str(row.get("arch") or "") for row in rows]
        cols: dict[str, list[Any]] = {k: [] for k in ("n_params", "tokens", "lr", "batch_tokens", "final_loss", "diverged", "names")}
        for i, row in enumerate(rows):
            try:
                cols["n_params"].append(float(row["n_params"]))
                cols["tokens"].append(float(row["tokens"]))
            except KeyError as exc:
                raise InvalidRunsError(f"run record {i} lacks {exc.args[0]!r}") from exc
            except (TypeError, ValueError) as exc:
                raise InvalidRunsError(f"run record {i}: {exc}") from exc
            div = bool(row.get("diverged", False))
            loss = row.get("final_loss")
            if loss is None and not div:
                raise InvalidRunsError(f"run record {i} has no final_loss and is not marked diverged")
            cols["final_loss"].append(float("nan") if loss is None else float(loss))
            cols["lr"].append(_float_or_nan(row.get("lr")))
            cols["batch_tokens"].append(_float_or_nan(row.get("batch_tokens")))
            cols["diverged"].append(div)
            cols["names"].append(str(row.get("name", f"run-{i}")))
        return cls(**{k: (v if k == "names" else np.asarray(v)) for k, v in cols.items()},
                   arch=arch if any(arch) else None)

    def subset(self, mask_or_index: np.ndarray | Sequence[int]) -> "RunSet":
        """The runs selected by a boolean mask or an index array, in that order."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return RunSet(
            n_params=self.n_params[idx], tokens=self.tokens[idx], lr=self.lr[idx],
            batch_tokens=self.batch_tokens[idx], final_loss=self.final_loss[idx],
            diverged=self.diverged[idx], names=[self.names[int(i)] for i in idx],
            members=None if self.members is None else [self.members[int(i)] for i in idx],
            arch=None if self.arch is None else [self.arch[int(i)] for i in idx],
        )

    def arch_of(self, i: int) -> str:
        """The architecture label of row i ("" by default)."""
        return "" if self.arch is None else self.arch[i]

    def run_names(self, mask_or_index: np.ndarray | Sequence[int]) -> list[str]:
        """The names of the runs behind the selected rows: every repeat of an averaged row."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if self.members is None:
            return [self.names[int(i)] for i in idx]
        return [name for i in idx for name in self.members[int(i)]]

    def average_repeats(self) -> "RunSet":
        """One row per configuration (N, D, lr, batch_tokens): the mean final loss of its runs.

        A configuration with a diverged run is diverged (an lr that diverges for one seed in
        two is no recommendation). Runs of one configuration with the very same finite loss are
        one run stored twice (a duplicated row), counted once. The row keeps its first run's
        name and lists the runs it counts in ``members``. Runs of unknown lr or batch are never merged: nothing says they repeat one
        configuration. Without repeats this is the RunSet itself.
        """
        rows: dict[tuple[Any, ...], list[int]] = {}
        arch = self.arch or [""] * len(self)
        for i, key in enumerate(zip(self.n_params.tolist(), self.tokens.tolist(), self.lr.tolist(),
                                    self.batch_tokens.tolist(), arch)):
            known = not (math.isnan(key[2]) or math.isnan(key[3]))
            ids = rows.setdefault(key if known else ("unknown lr or batch", i), [])
            # The very same finite loss again is one run stored twice, not another seed.
            loss = self.final_loss[i]
            if not (math.isfinite(loss) and any(self.final_loss[j] == loss for j in ids)):
                ids.append(i)
        if len(rows) == len(self):
            return self
        first = np.array([ids[0] for ids in rows.values()])
        diverged = np.array([bool(self.diverged[ids].any()) for ids in rows.values()])
        loss = np.array([float(np.mean(self.final_loss[ids])) for ids in rows.values()])
        return RunSet(
            n_params=self.n_params[first], tokens=self.tokens[first], lr=self.lr[first],
            batch_tokens=self.batch_tokens[first], final_loss=np.where(diverged, np.nan, loss),
            diverged=diverged, names=[self.names[int(i)] for i in first],
            members=[tuple(self.run_names(ids)) for ids in rows.values()],
            arch=None if self.arch is None else [self.arch[int(i)] for i in first],
        )

    @property
    def usable(self) -> np.ndarray:
        """Runs that finished with a finite loss (diverged runs carry no optimum information)."""
        return ~self.diverged & np.isfinite(self.final_loss)

    def group_keys(self) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """Group index of every run and the (N, D) of every group, sorted by N, D, then
        architecture. Runs of different ``arch`` labels are different groups, so two groups
        may share an (N, D)."""
        arch = self.arch or [""] * len(self)
        full = list(zip(self.n_params.tolist(), self.tokens.tolist(), arch))
        keys = sorted(set(full))
        lookup = {k: i for i, k in enumerate(keys)}
        gid = np.array([lookup[k] for k in full], dtype=int)
        return gid, [(n, d) for n, d, _ in keys]

    def require_usable(self) -> "RunSet":
        """The finite-loss runs, or InsufficientDataError when every run diverged."""
        if len(self) == 0:
            raise InsufficientDataError("no runs given")
        ok = self.usable
        if not ok.any():
            raise InsufficientDataError(f"all {len(self)} runs diverged or have no finite loss: nothing to fit")
        return self.subset(ok)


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def fit_range(n_params: np.ndarray, tokens: np.ndarray) -> dict[str, list[float]]:
    """[min, max] of N, D and C = 6 N D over the runs a law was fitted on (JSON-safe)."""
    with np.errstate(over="ignore"):  # beyond double precision: inf, an honest bound
        compute = 6.0 * n_params * tokens
    return {
        "n_params": [float(n_params.min()), float(n_params.max())],
        "tokens": [float(tokens.min()), float(tokens.max())],
        "compute": [float(compute.min()), float(compute.max())],
    }
