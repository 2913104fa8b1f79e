"""Bounded work per request (service/api/limits.py): the HPSCALE_MAX_* caps are refused with a
422 naming the field and the setting, stated in the OpenAPI document, and fits run off the
event loop so that the server keeps answering while they run."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from test_api_support import API_KEY, app_db, assert_problem, client, make_client, seed_grid  # noqa: F401

from hpscale.service.api import create_app
from hpscale.service.api.glue import fits as fit_glue
from hpscale.service.errors import InputError
from hpscale.service.settings import Settings

KEY = {"X-API-Key": API_KEY}
RUN = {"n_params": 1e6, "tokens": 2e7, "final_loss": 3.5}


def test_caps_are_refused_naming_field_and_setting(make_client) -> None:
    c = make_client(max_runs_per_request=3, max_curve_points=10, max_fit_bootstrap=50, max_curve_steps=20)
    runs = [{**RUN, "name": f"r{i}"} for i in range(4)]
    assert_problem(c.post("/api/v1/runs", json={"source": "s", "runs": runs}, headers=KEY), 422,
                   detail_has="HPSCALE_MAX_RUNS_PER_REQUEST")
    curve = [{"step": i, "loss": 4.0} for i in range(6)]
    two = [{**RUN, "name": "a", "curve": curve}, {**RUN, "name": "b", "curve": curve}]
    body = assert_problem(c.post("/api/v1/runs", json={"source": "s", "runs": two}, headers=KEY), 422,
                          detail_has="HPSCALE_MAX_CURVE_POINTS")
    assert body["errors"][0]["loc"] == ["body", "runs"]
    assert c.get("/api/v1/runs").json()["total"] == 0
    assert c.post("/api/v1/runs", json={"source": "s", "runs": runs[:3]}, headers=KEY).status_code == 200
    fit = {"kind": "hyper", "sources": ["s"], "bootstrap": 51}
    assert_problem(c.post("/api/v1/fits", json=fit, headers=KEY), 422, detail_has="body.bootstrap: at most 50")
    schedule = {"kind": "cosine", "total_steps": 21, "peak_lr": 1e-3}
    assert_problem(c.post("/api/v1/predict/curve", json={"law": 1, "schedule": schedule}), 422,
                   detail_has="body.schedule.total_steps: 21 steps exceed the limit of 20 on this server")
    # 20 steps fit, but not as 20 points: a larger `every` does.
    schedule["total_steps"] = 20
    assert_problem(c.post("/api/v1/predict/curve", json={"law": 1, "schedule": schedule}), 422,
                   detail_has="body.every: 20 predicted points: at most 10 per answer on this server "
                              "(HPSCALE_MAX_CURVE_POINTS); ask for every >= 2")


def test_the_openapi_document_states_the_caps_in_force(make_client) -> None:
    c = make_client(max_runs_per_request=7, max_curve_points=1234, max_fit_bootstrap=99, max_curve_steps=5678)
    components = c.get("/openapi.json").json()["components"]["schemas"]
    assert components["FitRequest"]["properties"]["bootstrap"]["maximum"] == 99
    assert components["RunsImport"]["properties"]["runs"]["maxItems"] == 7
    rules = c.get("/openapi.json").json()["paths"]["/api/v1/predict/curve"]["post"]["responses"]["422"]["x-rules"]
    assert any("HPSCALE_MAX_CURVE_STEPS" in rule for rule in rules)


def test_defaults_bound_a_request() -> None:
    s = Settings()
    assert s.max_body_bytes == 8 * 1024 * 1024 and s.max_runs_per_request == 10_000
    assert s.max_curve_points == 100_000 and s.max_fit_bootstrap == 2_000 and s.max_concurrent_fits == 1


def test_a_long_schedule_is_answered_at_the_points_asked_for(client) -> None:
    # 50,000 steps: evaluated in linear time (it once needed a 50,000 x 50,000 matrix, 20 GB);
    # the answer holds every 50th step and the last.
    from hpscale.db import storage
    from hpscale.fitting.trajectory import MultiPowerLaw

    law = MultiPowerLaw()
    law.coef_ = {"L0": 3.0, "A": 0.5, "alpha": 0.5, "B": 300.0, "C": 2.0, "beta": 0.6, "gamma": 0.6}
    row = storage.add_law(app_db(client), {
        "name": "mpl", "kind": "trajectory", "form": law.form, "origin": "fitted", "title": "MPL", "source": "runs",
        "record": law.to_record(), "code_version": "t"})
    schedule = {"kind": "cosine", "total_steps": 50_000, "peak_lr": 3e-4, "warmup_steps": 500}
    r = client.post("/api/v1/predict/curve", json={"law": row.id, "schedule": schedule, "every": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["steps"]) == len(body["loss"]) == 991 and body["steps"][-1] == 50_000
    assert body["steps"] == sorted(body["steps"]) and body["loss"][0] > body["loss"][-1]


def test_fits_run_off_the_event_loop_and_healthz_answers_meanwhile(tmp_path, monkeypatch) -> None:
    # More fits in flight than the server has worker threads (anyio's 40): before, every one
    # held a thread and /healthz queued behind them until they finished. Now at most
    # max_concurrent_fits run (each in a thread of its own limiter) and the rest wait without one.
    n_fits = 45
    started, release = threading.Semaphore(0), threading.Event()
    running = {"now": 0, "most": 0}
    lock = threading.Lock()

    def slow_fit(db, body):  # type: ignore[no-untyped-def]
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        started.release()
        release.wait()
        with lock:
            running["now"] -= 1
        raise InputError("stub fit: nothing to fit")

    monkeypatch.setattr(fit_glue, "fit_law", slow_fit)
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'api.db'}", api_key=API_KEY))
    order: list[str] = []

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            fits = [asyncio.create_task(ac.post("/api/v1/fits", json={"kind": "loss", "bootstrap": 0}, headers=KEY))
                    for _ in range(n_fits)]
            await asyncio.to_thread(started.acquire)  # a fit is running now
            health = asyncio.create_task(ac.get("/healthz"))

            async def watchdog() -> None:  # on a blocked server: release the fits, and the order shows it
                await asyncio.sleep(60)
                order.append("released by the watchdog")
                release.set()

            dog = asyncio.create_task(watchdog())
            r = await health
            order.append(f"healthz {r.status_code}")
            dog.cancel()
            if not release.is_set():
                order.append("released")
                release.set()
            return [(await f).status_code for f in fits]

    with TestClient(app):  # the lifespan: schema and published laws
        statuses = asyncio.run(scenario())
    assert order == ["healthz 200", "released"]
    assert statuses == [422] * n_fits and running["most"] == 1
