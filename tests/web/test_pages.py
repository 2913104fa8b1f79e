"""The web UI in a real browser: every page against the app on loopback over seeded data.

Each test opens its page in a fresh browser context, waits for the page to settle (the pages set
``<body data-ready>`` when their work is done and ``data-busy`` while it runs), checks what it
shows against the API's own answers, saves a screenshot under ``artifacts/screenshots/``, and
fails on any console error or uncaught exception.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse
from urllib.request import urlopen

import pytest

pytestmark = pytest.mark.browser

# Chromium logs every non-2xx fetch as a console error; tests that provoke one allow it.
FAILED_FETCH = "Failed to load resource: the server responded with a status of"


def get_json(url: str) -> Any:
    with urlopen(url, timeout=10) as res:  # noqa: S310 - loopback only
        return json.loads(res.read())


def settle(page: Any) -> None:
    """Wait until the page's current work is done (see the module doc)."""
    page.wait_for_selector("body[data-ready]:not([data-busy])", state="attached")


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    settle(page)


def traces(page: Any, selector: str) -> list[dict[str, Any]]:
    """The Plotly traces drawn in the element ``selector`` (name, meta, type, fill, point count)."""
    return page.evaluate(
        """sel => (document.querySelector(sel).data || []).map(t => ({
            name: t.name, meta: t.meta ?? null, type: t.type ?? 'scatter', fill: t.fill ?? null,
            mode: t.mode ?? null, n: (t.x || []).length }))""",
        selector,
    )


def query(page: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


# -- recommend ------------------------------------------------------------------------------
def test_recommend_form_round_trips(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    open_page(page, f"{base_url}/")
    page.get_by_label("Parameters N").fill("7B")
    page.get_by_label("Tokens D").fill("1.4T")
    page.get_by_label("Sequence length").fill("4096")
    page.get_by_label("Law").select_option("grid-demo-steplaw")
    page.get_by_role("button", name="Recommend").click()
    settle(page)

    assert query(page) == {"n_params": "7B", "tokens": "1.4T", "seq_len": "4096", "law": "grid-demo-steplaw"}
    api = get_json(f"{base_url}/api/v1/recommend?" + urlencode(
        {"n_params": 7e9, "tokens": 1.4e12, "seq_len": 4096, "law": "grid-demo-steplaw"}))
    values = page.locator(".answer .number[data-value]")
    shown = [float(v) for v in values.evaluate_all("els => els.map(e => e.dataset.value)")]
    # lr, batch in tokens and in sequences, unrounded; no final loss: the target lies millions
    # of times outside the seeded loss law's data, and the loss card says so instead.
    expected = [api["lr"], api["batch_tokens"], api["batch_size"]]
    assert api["final_loss"] is None and api["loss_law"] is None
    assert shown == pytest.approx(expected, rel=1e-12)
    assert api["final_loss_note"] and "grid-demo-loss" in api["final_loss_note"]
    assert api["final_loss_note"] in page.locator(".answer").inner_text()
    # A whole number of sequences, written out as the CLI writes it, saying how it was rounded;
    # the law's exact batch in tokens beside it.
    boxes = page.locator(".answer .value")
    sequences = boxes.filter(has_text="whole sequences of 4096")
    assert isinstance(api["batch_size"], int)
    assert sequences.locator(".number").inner_text() == f"{api['batch_size']:,}"
    assert "rounded to the nearest whole sequence" in sequences.inner_text()
    assert boxes.filter(has_text="the law's value").locator(".number").inner_text() == f"{round(api['batch_tokens']):,}"
    assert "outside the law's data" not in page.locator(".answer dl").inner_text()  # said once, in the warning
    # The target lies millions of times outside the sweep the law was fitted on: warned.
    assert api["warnings"]
    assert page.locator(".answer .warning").first.inner_text().endswith(api["warnings"][0])
    assert "95% interval" in page.locator(".answer").inner_text()

    lr_traces = traces(page, "#plot-lr")
    names = [t["name"] for t in lr_traces]
    assert "target" in names
    assert any(t["fill"] == "tonexty" for t in lr_traces), "the chosen law's interval band is drawn"
    assert {"Step Law", "DeepSeek LLM"} <= set(names), "the published laws are overlaid"
    assert next(t for t in lr_traces if t["name"] == "near-optimal runs (law's data)")["n"] > 0
    assert "target" in [t["name"] for t in traces(page, "#plot-batch")]
    page.shot("recommend")

    # Loading the URL again restores the inputs and the answer.
    page.reload()
    settle(page)
    assert page.get_by_label("Parameters N").input_value() == "7B"
    assert page.get_by_label("Tokens D").input_value() == "1.4T"
    assert page.get_by_label("Sequence length").input_value() == "4096"
    assert page.get_by_label("Law").input_value() == "grid-demo-steplaw"
    assert float(values.first.get_attribute("data-value")) == pytest.approx(api["lr"], rel=1e-12)

    # Back returns to the empty form (the URL before the submit), answer cleared.
    page.go_back()
    settle(page)
    assert query(page) == {}
    assert page.get_by_label("Parameters N").input_value() == ""
    assert page.locator(".answer .number").count() == 0
    assert page.locator("#law-plots").is_hidden()
    page.assert_clean()


def test_recommend_for_another_optimizer_uses_only_its_laws(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    open_page(page, f"{base_url}/")
    page.get_by_label("Parameters N").fill("3M")
    page.get_by_label("Tokens D").fill("100M")
    page.get_by_label("Optimizer").select_option("lion")
    settle(page)
    # The law menu lists Lion's laws only: the published ones (and the AdamW fit) are AdamW's.
    options = page.locator("#law option").evaluate_all("els => els.map(e => e.value)")
    assert options == ["", "lion-demo-steplaw"]
    page.get_by_role("button", name="Recommend").click()
    settle(page)
    assert query(page) == {"n_params": "3M", "tokens": "100M", "seq_len": "2048", "optimizer": "lion"}
    api = get_json(f"{base_url}/api/v1/recommend?" + urlencode({"n_params": 3e6, "tokens": 1e8, "optimizer": "lion"}))
    assert api["law"]["id"] == seeded["lion_law_id"] and api["optimizer"] == "lion"
    shown = float(page.locator(".answer .number[data-value]").first.get_attribute("data-value"))
    assert shown == pytest.approx(api["lr"], rel=1e-12)
    assert "Optimizer\nlion" in page.locator(".answer dl.meta").inner_text()
    names = [t["name"] for t in traces(page, "#plot-lr")]
    assert "Step Law" not in names, "AdamW's published laws are not drawn for Lion"
    page.shot("recommend-lion")

    # An optimizer with no law: the API's 404 detail, not an AdamW answer.
    page.get_by_label("Optimizer").select_option("sgd")
    settle(page)
    page.get_by_role("button", name="Recommend").click()
    settle(page)
    assert "no fitted hyper law for optimizer 'sgd'" in page.locator(".answer .error .detail").inner_text()
    page.assert_clean(allow=(FAILED_FETCH,))


def test_recommend_from_model_shape_and_compute(page: Any, base_url: str) -> None:
    query_string = "d_model=4096&n_layers=32&vocab_size=32000&compute=1e23&law=steplaw"
    open_page(page, f"{base_url}/index.html?{query_string}")
    api = get_json(f"{base_url}/api/v1/recommend?{query_string}")
    assert api["n_params"] == 12 * 32 * 4096**2
    text = page.locator(".answer").inner_text()
    assert "12 · layers · d_model²" in text and "C / (6 N)" in text
    assert "embedding 131M params" in text
    assert float(page.locator(".answer .number[data-value]").first.get_attribute("data-value")) == pytest.approx(api["lr"])
    assert page.get_by_label("d_model").input_value() == "4096"
    assert len(traces(page, "#plot-lr")) >= 3
    page.assert_clean()


def test_api_errors_show_their_detail(page: Any, base_url: str) -> None:
    # No training budget: the API refuses with a problem whose detail the page shows as is.
    open_page(page, f"{base_url}/")
    page.get_by_label("Parameters N").fill("7e9")
    page.get_by_role("button", name="Recommend").click()
    settle(page)
    with pytest.raises(Exception) as exc:
        urlopen(f"{base_url}/api/v1/recommend?n_params=7e9", timeout=10)  # noqa: S310
    problem = json.loads(exc.value.read())  # type: ignore[attr-defined]
    assert exc.value.code == 422  # type: ignore[attr-defined]
    box = page.locator(".answer .error")
    assert box.get_attribute("role") == "alert"
    assert box.locator(".detail").inner_text() == problem["detail"]
    page.shot("recommend-error")

    # A number the page cannot read is caught before asking the API, and named by its label.
    page.get_by_label("Tokens D").fill("lots")
    page.get_by_role("button", name="Recommend").click()
    settle(page)
    assert "Tokens D" in page.locator("#form-error").inner_text()
    assert page.get_by_label("Tokens D").get_attribute("aria-invalid") == "true"

    # Unknown sweep and law in a shared URL: the 404 problem's detail.
    open_page(page, f"{base_url}/sweeps.html?sweep=999")
    assert "no sweep" in page.locator(".error .detail").inner_text()
    open_page(page, f"{base_url}/laws.html?law=no-such-law")
    assert "no law 'no-such-law'" in page.locator(".error .detail").inner_text()
    page.assert_clean(allow=(FAILED_FETCH,))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("Parameters N", "-5", "Parameters N: “-5” is too small: it must be at least 1"),
    ("Parameters N", "0", "Parameters N: “0” is too small: it must be at least 1"),
    ("Parameters N", "1e30", "Parameters N: “1e30” is too large: it must be at most 1e16"),
    ("Sequence length", "0", "Sequence length: “0” is too small: it must be at least 1"),
])
def test_out_of_range_inputs_are_refused_by_the_form(page: Any, base_url: str, field: str, value: str,
                                                       message: str) -> None:
    # The form checks the API's own bounds (its OpenAPI document) and names the field by its
    # label, before asking for a recommendation: no raw "query.n_params: Input should be ...".
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/recommend" in r.url else None)
    open_page(page, f"{base_url}/")
    page.get_by_label("Parameters N").fill("7e9")
    page.get_by_label("Tokens D").fill("1.4T")
    page.get_by_label(field).fill(value)
    page.get_by_role("button", name="Recommend").click()
    settle(page)
    assert page.locator("#form-error").inner_text() == message
    assert page.get_by_label(field).get_attribute("aria-invalid") == "true"
    assert asked == [] and page.locator(".answer .error").count() == 0
    page.assert_clean()


# -- sweeps ---------------------------------------------------------------------------------
def test_sweep_list_shows_progress(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    open_page(page, f"{base_url}/sweeps.html")
    rows = page.locator("tbody tr")
    assert rows.count() == 2
    running = rows.filter(has_text="grid-running")
    assert "2 / 6" in running.inner_text()
    assert running.locator(".progress").get_attribute("aria-label") == "2 done, 1 running, 3 queued"
    page.shot("sweeps")
    assert rows.first.get_by_role("link").get_attribute("href") == f"sweeps.html?sweep={seeded['sweep_id']}"
    page.assert_clean()


def test_sweep_page_plots_every_group(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    groups = get_json(f"{base_url}/api/v1/sweeps/{seeded['sweep_id']}/groups")
    open_page(page, f"{base_url}/sweeps.html?sweep={seeded['sweep_id']}&group=1")
    plots = page.locator(".group-plot")
    assert plots.count() == len(groups) == seeded["n_groups"]
    for i, group in enumerate(groups):
        drawn = traces(page, f"#group-{i}")
        # One line per batch size, and the diverged runs marked.
        assert sum(t["meta"] == "batch" for t in drawn) == seeded["n_batches"]
        diverged = [r for r in group["runs"] if r["status"] == "diverged"]
        assert [t["n"] for t in drawn if t["meta"] == "diverged"] == [len(diverged)]

    g = groups[1]
    heat = traces(page, "#heatmap")
    assert heat[0]["type"] == "heatmap"
    assert "diverged" in [t["name"] for t in heat]
    outlined = page.evaluate("document.getElementById('heatmap').layout.shapes.length")
    assert outlined == len(g["near_optimal_run_ids"]) > 0
    assert page.locator(".group-nav a[aria-current=true]").count() == 1
    # A batch size has one colour in every group's panel.
    colours: dict[str, set[str]] = {}
    for i in range(len(groups)):
        for t in page.evaluate(f"document.getElementById('group-{i}').data.filter(t => t.meta === 'batch')"
                               ".map(t => [t.name, t.line.color])"):
            colours.setdefault(t[0], set()).add(t[1])
    # (and two batch sizes, of the same group or not, two colours: the seeded sweep has 8)
    assert len(colours) == 2 * seeded["n_batches"] and all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == len(colours), colours
    page.shot("sweep")

    # Choosing another group updates the URL; loading that URL restores the choice.
    page.locator(".group-nav a").nth(3).click()
    settle(page)
    assert query(page)["group"] == "3"
    page.reload()
    settle(page)
    assert page.locator(".group-nav a").nth(3).get_attribute("aria-current") == "true"
    page.assert_clean()


def test_run_page_shows_its_loss_curve(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    groups = get_json(f"{base_url}/api/v1/sweeps/{seeded['sweep_id']}/groups")
    diverged = next(r for r in groups[0]["runs"] if r["status"] == "diverged")
    curve = get_json(f"{base_url}/api/v1/runs/{diverged['id']}/curve")["points"]
    open_page(page, f"{base_url}/run.html?run={diverged['id']}")
    drawn = {t["name"]: t["n"] for t in traces(page, "#curve")}
    assert drawn["validation loss"] == sum(p["val_loss"] is not None for p in curve)
    assert drawn["non-finite loss"] == sum(p["nonfinite"] for p in curve) > 0
    assert drawn["learning rate"] == len(curve)
    assert diverged["name"] in page.locator("h1").inner_text()
    page.shot("run")
    page.assert_clean()


# -- laws -----------------------------------------------------------------------------------
def test_hyper_law_page_shows_band_and_held_out_points(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    law = get_json(f"{base_url}/api/v1/laws/{seeded['hyper_law_id']}")
    open_page(page, f"{base_url}/laws.html?law={seeded['hyper_law_id']}")
    lr = traces(page, "#plot-lr")
    assert sum(t["fill"] == "tonexty" for t in lr) == 2, "a bootstrap band per D of the data"
    assert sum(t["meta"] == "fit" for t in lr) == 2
    assert sum(t["n"] for t in lr if t["meta"] == "data") > 0
    # The extrapolation check: the held-out groups' optima and the refit's predictions of them.
    held_out = law["extrapolation"]["groups"]
    assert [t["n"] for t in lr if t["meta"] in ("held_out", "held_out_pred")] == [len(held_out)] * 2
    assert page.locator("#held-out tbody tr").count() == len(held_out)
    rows = page.locator("#parameters tbody tr")
    assert rows.count() == len(law["parameters"])
    assert rows.first.locator("td").nth(2).inner_text() != "–", "parameters carry intervals"
    # How the fit treated noise: the estimate and the band it used.
    treatment = page.locator("#fit-treatment").inner_text()
    assert law["noise"]["description"] in treatment and "Near-optimal band" in treatment
    page.shot("law-hyper")
    page.assert_clean()


def test_hyper_law_page_shows_the_lr_batch_coupling(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    law = get_json(f"{base_url}/api/v1/laws/{seeded['lion_law_id']}")
    coupling = law["lr_batch_coupling"]
    open_page(page, f"{base_url}/laws.html?law={seeded['lion_law_id']}")
    text = " ".join(page.locator("#coupling").inner_text().split())
    assert f"k = {coupling['exponent']:.3g}" in text and "theory: 0.5 (Adam-type" in text
    assert f"from {coupling['groups']} (N, D) groups" in text
    assert "lion (recommendations use this law for lion only)" in page.locator("dl.meta").first.inner_text()
    drawn = traces(page, "#plot-coupling")
    assert [t["meta"] for t in drawn].count("group") == len(coupling["per_group"]) == 6
    assert {t["meta"] for t in drawn} == {"group", "measured", "theory"}
    page.shot("law-coupling")
    page.assert_clean()


def test_trajectory_law_page_compares_curves(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    open_page(page, f"{base_url}/laws.html?law={seeded['trajectory_law_id']}")
    drawn = traces(page, "#plot-trajectory")
    observed = [t for t in drawn if t["meta"] == "observed"]
    predicted = [t for t in drawn if t["meta"] == "predicted"]
    assert len(observed) == len(predicted) == 3, "one observed and one predicted curve per schedule"
    assert all(t["n"] > 0 for t in observed + predicted)
    # The runs share a name (one per schedule's sweep): the curves are labelled by schedule, one
    # legend entry each, and the plot keeps most of its height for the curves.
    assert sorted(t["name"].removesuffix(" (held out)") for t in predicted) == ["constant", "cosine", "wsd"]
    legend = page.evaluate("document.getElementById('plot-trajectory').data.filter(t => t.showlegend !== false).length")
    assert legend == 3
    plot_area = page.evaluate("document.getElementById('plot-trajectory')._fullLayout._size.h")
    assert plot_area >= 300, f"the plot area is {plot_area}px tall"
    page.shot("law-trajectory")
    page.assert_clean()


def test_critical_batch_law_page_shows_each_target(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    law = get_json(f"{base_url}/api/v1/laws/{seeded['critical_law_id']}")
    open_page(page, f"{base_url}/laws.html?law={seeded['critical_law_id']}")
    drawn = traces(page, "#plot-critical")
    assert [t["n"] for t in drawn if t["meta"] == "data"] == [len(law["critical_batch"]["targets"])] == [3]
    assert [t["meta"] for t in drawn].count("fit") == 1
    assert page.locator("#critical-targets tbody tr").count() == 3
    assert "p = 0.5 on N, p = 1 on E_min" in page.locator("#law-detail").inner_text()
    page.shot("law-critical")
    page.assert_clean()


def test_loss_law_page_shows_its_data(page: Any, base_url: str, seeded: dict[str, Any]) -> None:
    law = get_json(f"{base_url}/api/v1/laws/{seeded['loss_law_id']}")
    open_page(page, f"{base_url}/laws.html?law={seeded['loss_law_id']}")
    drawn = traces(page, "#plot-loss")
    # The best run of each (N, D) group, one trace per D.
    assert sum(t["n"] for t in drawn if t["meta"] == "data") == len(law["data"]) == seeded["n_groups"]
    assert page.locator("#parameters tbody tr").count() == len(law["parameters"]) == 5
    assert f"{len(law['data'])} runs (the best run of each (N, D) group)" in page.locator("#law-detail dl").first.inner_text()
    page.shot("law-loss")
    page.assert_clean()


def test_laws_page_opens_the_law_recommend_uses_and_published_laws(page: Any, base_url: str,
                                                                    seeded: dict[str, Any]) -> None:
    open_page(page, f"{base_url}/laws.html")
    laws = get_json(f"{base_url}/api/v1/laws")
    # The newest fitted lr/batch law of AdamW (the default optimizer) failed its check: the page
    # opens on the one recommendations use (the newest that passed, else Step Law), not on it.
    hyper = [law for law in laws if law["origin"] == "fitted" and law["kind"] == "hyper" and law["optimizer"] == "adamw"]
    assert hyper[-1]["id"] == seeded["failed_hyper_law_id"] and hyper[-1]["extrapolation_passed"] is False
    passed = [law for law in hyper if law["extrapolation_passed"]]
    expected = passed[-1] if passed else next(law for law in laws if law["name"] == "steplaw")
    assert query(page) == {"law": str(expected["id"])}
    assert page.locator(".law-list li").count() == len(laws)
    # Two fits of one form are told apart by their method, in the list and in the recommend form.
    titles = page.locator(".law-list li a").all_inner_texts()
    assert len(set(titles)) == len(titles), titles
    assert any("from near-optimal runs" in t for t in titles) and any("from smoothed group optima" in t for t in titles)
    open_page(page, f"{base_url}/")
    options = page.locator("#law option").all_inner_texts()
    assert len(set(options)) == len(options), options
    open_page(page, f"{base_url}/laws.html?law=steplaw")
    lr = traces(page, "#plot-lr")
    assert [t["meta"] for t in lr] == ["fit"] and lr[0]["n"] > 1, "a published law: its line, no band, no data"
    assert "published" in page.locator("h1").inner_text()
    page.shot("law-published")
    page.assert_clean()


# -- layout and empty states ----------------------------------------------------------------
PAGES = {
    "recommend": "/index.html?n_params=1.3B&tokens=26B",
    "sweeps": "/sweeps.html",
    "sweep": "/sweeps.html?sweep={sweep_id}",
    "run": "/run.html?run={run_id}",
    "law": "/laws.html?law={hyper_law_id}",
}


def test_laws_page_on_a_phone_shows_the_law_before_the_list(phone: Any, base_url: str, seeded: dict[str, Any]) -> None:
    open_page(phone, f"{base_url}/laws.html?law={seeded['hyper_law_id']}")
    title = phone.locator("#law-detail h1").bounding_box()
    law_list = phone.locator("nav[aria-label=Laws]").bounding_box()
    assert title["y"] < 400 and title["y"] < law_list["y"], (title, law_list)
    phone.assert_clean()


def test_phone_width_has_no_horizontal_overflow(phone: Any, base_url: str, seeded: dict[str, Any]) -> None:
    for name, path in PAGES.items():
        open_page(phone, base_url + path.format(**seeded))
        width = phone.evaluate("document.documentElement.clientWidth")
        assert width == 375
        overflow = phone.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, f"{name}: the page scrolls sideways ({overflow}px wide on a {width}px screen)"
        phone.shot(f"phone-{name}")
    phone.assert_clean()


def test_empty_database_says_what_to_do(page: Any, empty_base_url: str) -> None:
    open_page(page, f"{empty_base_url}/sweeps.html")
    empty = page.locator(".empty").inner_text()
    assert "hpscale sweep run" in empty and "hpscale import runs" in empty
    page.shot("empty-sweeps")
    open_page(page, f"{empty_base_url}/laws.html")
    assert "/api/v1/fits" in page.locator(".empty").inner_text()
    assert query(page) == {"law": str(get_json(f"{empty_base_url}/api/v1/laws")[0]["id"])}
    # With no fitted law the recommendation falls back on Step Law, and still draws.
    open_page(page, f"{empty_base_url}/index.html?n_params=7e9&tokens=1.4e12")
    assert "Step Law" in page.locator(".answer").inner_text()
    assert re.search(r"\d", page.locator(".answer .number").first.inner_text())
    assert len(traces(page, "#plot-lr")) >= 3
    page.shot("empty-recommend")
    page.assert_clean()


def test_api_docs_render_with_no_network(page: Any, base_url: str) -> None:
    # Any request off this server is refused: /docs must render from the package's own files.
    foreign: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{base_url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "hpscale" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".opblock-summary-path", has_text="/api/v1/recommend").count() >= 1
    assert not foreign, foreign
    page.shot("api-docs")
    page.assert_clean()
