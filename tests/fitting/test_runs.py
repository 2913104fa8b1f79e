import numpy as np
import pytest

from hpscale.fitting.errors import FittingError, InsufficientDataError
from hpscale.fitting.runs import InvalidRunsError, RunSet


def test_from_records_fills_unknowns_and_names():
    rs = RunSet.from_records([
        {"n_params": 1e6, "tokens": 2e7, "final_loss": 3.0, "lr": 1e-3, "name": "a"},
        {"n_params": 1e6, "tokens": 2e7, "final_loss": None, "diverged": True},
    ])
    assert len(rs) == 2 and rs.names == ["a", "run-1"]
    assert np.isnan(rs.batch_tokens).all() and np.isnan(rs.final_loss[1])
    assert rs.usable.tolist() == [True, False]
    assert rs.require_usable().names == ["a"]


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"tokens": 1e7, "final_loss": 3.0}], "lacks 'n_params'"),
        ([{"n_params": 1e6, "tokens": 1e7}], "no final_loss"),
        ([{"n_params": -1, "tokens": 1e7, "final_loss": 3.0}], "n_params must be finite and > 0"),
        ([{"n_params": 1e6, "tokens": 1e7, "final_loss": float("nan")}], "not marked diverged"),
        ([{"n_params": 1e6, "tokens": 1e7, "final_loss": 3.0, "lr": 0.0}], "lr must be > 0 or NaN"),
        ([{"n_params": 1e6, "tokens": 1e7, "final_loss": 3.0, "name": "x"}] * 2, "unique"),
        ([{"n_params": "big", "tokens": 1e7, "final_loss": 3.0}], "run record 0"),
    ],
)
def test_invalid_records_raise_fitting_errors(records, message):
    with pytest.raises(InvalidRunsError, match=message):
        RunSet.from_records(records)
    assert issubclass(InvalidRunsError, FittingError)


def test_shape_mismatch_is_reported():
    with pytest.raises(InvalidRunsError, match="3 run names"):
        RunSet(n_params=np.ones(2), tokens=np.ones(3), lr=np.ones(3), batch_tokens=np.ones(3),
               final_loss=np.ones(3), diverged=np.zeros(3, bool), names=["a", "b", "c"])


def test_all_diverged_and_empty_are_insufficient():
    rs = RunSet.from_records([{"n_params": 1e6, "tokens": 1e7, "final_loss": float("inf"), "diverged": True}])
    with pytest.raises(InsufficientDataError, match="all 1 runs diverged"):
        rs.require_usable()
    with pytest.raises(InsufficientDataError, match="no runs"):
        RunSet.from_records([]).require_usable()


def _seeds() -> RunSet:
    return RunSet(
        n_params=[1e6, 1e6, 1e6, 1e6, 2e6, 1e6, 1e6], tokens=[1e7] * 7,
        lr=[1e-3, 1e-3, 2e-3, 2e-3, 1e-3, np.nan, np.nan], batch_tokens=[512, 512, 512, 512, 512, 512, 512],
        final_loss=[3.0, 3.2, 2.9, np.nan, 2.5, 4.0, 4.1], diverged=[False, False, False, True, False, False, False],
        names=["a0", "a1", "b0", "b1", "c0", "u0", "u1"],
    )


def test_average_repeats_merges_seeds_of_one_configuration():
    avg = _seeds().average_repeats()
    assert avg.names == ["a0", "b0", "c0", "u0", "u1"]
    assert avg.members == [("a0", "a1"), ("b0", "b1"), ("c0",), ("u0",), ("u1",)]
    assert avg.final_loss[0] == pytest.approx(3.1)
    # One diverged seed makes the configuration diverged; unknown lrs are never merged.
    assert avg.diverged.tolist() == [False, True, False, False, False] and np.isnan(avg.final_loss[1])
    assert avg.run_names([0, 2]) == ["a0", "a1", "c0"] and avg.run_names(avg.usable) == ["a0", "a1", "c0", "u0", "u1"]
    assert avg.subset([1]).members == [("b0", "b1")]
    assert avg.average_repeats().members == avg.members  # idempotent


def test_average_repeats_without_repeats_is_the_same_set():
    rs = _seeds().subset([0, 2, 4])
    assert rs.average_repeats() is rs and rs.run_names([1]) == ["b0"]
