import numpy as np
import pytest

from hpscale.fitting.schedules import infer_warmup, lr_schedule


def test_warmup_then_constant():
    lr = lr_schedule("constant", 100, 1e-3, warmup_steps=10)
    assert lr.shape == (100,)
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3) and np.all(lr[10:] == 1e-3)
    assert infer_warmup(lr) == 10


def test_cosine_and_linear_end_at_final_ratio():
    for kind in ("cosine", "linear"):
        lr = lr_schedule(kind, 1000, 1.0, warmup_steps=100, final_lr_ratio=0.1)
        assert lr[99] == pytest.approx(1.0) and lr[-1] == pytest.approx(0.1)
        assert np.all(np.diff(lr[100:]) <= 1e-15)
    cos = lr_schedule("cosine", 1000, 1.0, warmup_steps=100, final_lr_ratio=0.0)
    assert cos[100 + 450 - 1] == pytest.approx(0.5, abs=2e-3)  # half-way down at mid-decay


@pytest.mark.parametrize("decay", ["linear", "exponential"])
def test_wsd_cooldown(decay):
    lr = lr_schedule("wsd", 1000, 1.0, warmup_steps=50, final_lr_ratio=0.01, cooldown_fraction=0.2, decay=decay)
    assert np.all(lr[50:800] == 1.0)
    assert lr[-1] == pytest.approx(0.01)
    mid = lr[899]
    assert mid == pytest.approx(0.505 if decay == "linear" else 0.1, rel=1e-2)


def test_table_is_step_wise_with_warmup():
    lr = lr_schedule("table", 20, 1.0, warmup_steps=4, table=[(1, 1.0), (11, 0.3), (16, 0.1)])
    assert lr[:4].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr[9] == 1.0 and lr[10] == 0.3 and lr[15] == 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "sawtooth"},
        {"kind": "constant", "total_steps": 0},
        {"kind": "constant", "warmup_steps": 200},
        {"kind": "table"},
        {"kind": "table", "table": [(5, 1.0)]},
        {"kind": "wsd", "cooldown_fraction": 0.0},
        {"kind": "wsd", "decay": "cubic"},
        {"kind": "wsd", "decay": "exponential", "final_lr_ratio": 0.0},
    ],
)
def test_bad_schedules_raise(kwargs):
    args = {"kind": "constant", "total_steps": 100, "peak_lr": 1.0, **kwargs}
    with pytest.raises(ValueError):
        lr_schedule(**args)
