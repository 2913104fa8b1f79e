"""POST /api/v1/predict/curve: a trajectory law's loss curve for a named schedule or a table."""

from __future__ import annotations

import numpy as np
import pytest
from test_api_support import app_db, assert_problem, client, make_client  # noqa: F401  (fixtures)

from hpscale.db import storage
from hpscale.fitting.schedules import lr_schedule
from hpscale.fitting.trajectory import MultiPowerLaw

URL = "/api/v1/predict/curve"
# Multi-power-law coefficients of the order of the paper's 25M model.
COEF = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "B": 300.0, "C": 2.0, "beta": 0.6, "gamma": 0.6}


@pytest.fixture
def mpl(client) -> int:
    law = MultiPowerLaw()
    law.coef_ = dict(COEF)
    law.fit_range_ = {"steps": [100.0, 24000.0]}
    row = storage.add_law(app_db(client), {
        "name": "mpl-25m", "kind": "trajectory", "form": law.form, "origin": "fitted", "title": "MPL 25M",
        "source": "runs", "record": law.to_record(), "code_version": "t"})
    return row.id


def test_named_schedule(client, mpl) -> None:
    schedule = {"kind": "cosine", "total_steps": 2000, "peak_lr": 3e-4, "warmup_steps": 100, "final_lr_ratio": 0.1}
    r = client.post(URL, json={"law": mpl, "schedule": schedule})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["law"]["id"] == mpl and body["law"]["kind"] == "trajectory"
    assert len(body["steps"]) == len(body["lr"]) == len(body["loss"]) > 0
    assert body["steps"][-1] == 2000
    expected_lr = lr_schedule("cosine", 2000, 3e-4, warmup_steps=100, final_lr_ratio=0.1)
    assert body["lr"][-1] == pytest.approx(expected_lr[-1])
    assert body["loss"][-1] < body["loss"][0]  # a cosine run keeps improving to its end
    assert body["warnings"] == [] and body["warmup_steps"] == 100
    assert body["held_out"] is None  # this law was stored without a held-out check
    law = MultiPowerLaw.from_record({"kind": "trajectory", "coefficients": COEF})
    # The law's own prediction at every step after warmup (1,901 of them).
    assert len(body["steps"]) == 1901 and body["steps"][0] == 100
    assert body["loss"] == pytest.approx(law.predict(expected_lr, steps=np.array(body["steps"])).tolist(), rel=1e-9)
    assert body["loss"][-1] == pytest.approx(float(law.predict(expected_lr)[-1]), rel=1e-5)


def test_table_schedule_by_law_name(client, mpl) -> None:
    table = [{"step": 1, "lr": 1e-3}, {"step": 800, "lr": 3e-4}, {"step": 900, "lr": 1e-4}]
    body = client.post(URL, json={"law": "mpl-25m", "schedule": {"kind": "table", "table": table, "total_steps": 1000}}).json()
    lr = dict(zip(body["steps"], body["lr"]))
    assert lr[799] == pytest.approx(1e-3) and lr[800] == pytest.approx(3e-4) and lr[1000] == pytest.approx(1e-4)
    loss = np.array(body["loss"])
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[np.array(body["steps"]) == 799][0]  # the drop anneals


def test_a_stated_warmup_is_the_schedules_and_a_rise_after_it_is_said(client, mpl) -> None:
    table = [{"step": 1, "lr": 1e-4}, {"step": 4001, "lr": 3e-4}]
    body = client.post(URL, json={"law": mpl, "every": 100, "schedule": {
        "kind": "table", "table": table, "total_steps": 8000, "warmup_steps": 500}}).json()
    assert body["warmup_steps"] == 500 and body["steps"][0] == 500
    assert any("rises after warmup (first at step 4001)" in w for w in body["warnings"])
    # Without a stated warmup the highest lr ends it, as inference has it.
    body = client.post(URL, json={"law": mpl, "every": 100, "schedule": {
        "kind": "table", "table": table, "total_steps": 8000}}).json()
    assert body["warmup_steps"] == 4001 and body["steps"][0] == 4001


@pytest.mark.parametrize(
    ("schedule", "where"),
    [
        ({"kind": "cosine", "total_steps": 100, "peak_lr": 1e-3, "warmup_steps": 200}, "warmup_steps"),
        ({"kind": "wsd", "total_steps": 100, "peak_lr": 1e-3, "cooldown_fraction": 0}, "cooldown_fraction"),
        ({"kind": "table", "table": [{"step": 5, "lr": 1e-3}]}, "step 1"),
        ({"kind": "table", "table": [{"step": 1, "lr": 0.0}]}, "lr must be > 0"),
        ({"kind": "sawtooth", "total_steps": 10, "peak_lr": 1e-3}, "body.schedule"),
        ({"kind": "constant", "total_steps": 0, "peak_lr": 1e-3}, "total_steps"),
    ],
)
def test_bad_schedules_are_422(client, mpl, schedule, where) -> None:
    assert_problem(client.post(URL, json={"law": mpl, "schedule": schedule}), 422, detail_has=where)


def test_law_errors(client, mpl) -> None:
    schedule = {"kind": "constant", "total_steps": 100, "peak_lr": 1e-3}
    assert_problem(client.post(URL, json={"law": 999, "schedule": schedule}), 404)
    assert_problem(client.post(URL, json={"law": "steplaw", "schedule": schedule}), 422, detail_has="not a trajectory law")


def test_no_key_needed(make_client) -> None:
    c = make_client(api_key=None)
    r = c.post(URL, json={"law": "steplaw", "schedule": {"kind": "constant", "total_steps": 10, "peak_lr": 1e-3}})
    assert r.status_code == 422  # refused for the law's kind, not for a missing key


def test_every_nth_step_and_the_last(client, mpl) -> None:
    schedule = {"kind": "wsd", "total_steps": 10_000, "peak_lr": 3e-4, "warmup_steps": 500, "decay": "exponential"}
    full = client.post(URL, json={"law": mpl, "schedule": schedule}).json()
    sparse = client.post(URL, json={"law": mpl, "schedule": schedule, "every": 2000}).json()
    assert sparse["steps"] == [500, 2500, 4500, 6500, 8500, 10_000]
    by_step = dict(zip(full["steps"], full["loss"]))
    assert sparse["loss"] == pytest.approx([by_step[s] for s in sparse["steps"]], rel=1e-6)


def test_oversized_schedules_are_422_before_any_work(make_client) -> None:
    # The default limit (2,000,000 steps) and a configured one, for named and table schedules.
    for c, steps in ((make_client(), 3_000_000), (make_client(max_curve_steps=5000), 6000)):
        law = MultiPowerLaw()
        law.coef_ = dict(COEF)
        storage.add_law(app_db(c), {"name": "m", "kind": "trajectory", "form": law.form, "origin": "fitted",
                                    "title": "m", "source": "t", "record": law.to_record(), "code_version": "t"})
        for schedule in ({"kind": "constant", "total_steps": steps, "peak_lr": 1e-3},
                         {"kind": "table", "table": [{"step": 1, "lr": 1e-3}, {"step": steps, "lr": 1e-4}]}):
            body = assert_problem(c.post(URL, json={"law": "m", "schedule": schedule}), 422, detail_has="HPSCALE_MAX_CURVE_STEPS")
            assert f"{steps:,} steps exceed the limit" in body["detail"]
    ok = c.post(URL, json={"law": "m", "schedule": {"kind": "constant", "total_steps": 5000, "peak_lr": 1e-3}})
    assert ok.status_code == 200
