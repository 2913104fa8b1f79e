// The Recommend page: a target run in, the law's lr and batch out, with the law drawn around
// the target. State (the form's inputs, as typed) lives in the query string:
//   index.html?n_params=7B&tokens=1.4T&seq_len=4096&law=steplaw
//   index.html?d_model=4096&n_layers=32&vocab_size=32000&compute=1e23
//   index.html?n_params=50M&tokens=1B&optimizer=lion   (only Lion's laws answer; none: AdamW)
import {
  API, api, h, mount, showError, errorBox, loading, readState, writeState, hrefFor, parseNumber,
  fmt, si, fmtInterval, plot, logAxis, bandTraces, COLORS, start, settle, ApiError,
  nearOptimalRuns,
} from "./app.js";

const FIELDS = ["n_params", "d_model", "n_layers", "vocab_size", "tokens", "compute", "seq_len", "optimizer", "law"];
// Fields that are menus: passed to the API as chosen, not read as numbers.
const CHOICE_FIELDS = new Set(["law", "optimizer"]);
const DEFAULT_OPTIMIZER = "adamw"; // the published laws' optimizer; the empty menu entry
// Which inputs must be whole numbers (the API takes them as integers).
const INTEGER_FIELDS = new Set(["d_model", "n_layers", "vocab_size", "seq_len"]);

const form = document.getElementById("recommend-form");
const answerEl = document.getElementById("answer");
const plotsEl = document.getElementById("law-plots");
const formError = document.getElementById("form-error");

let lawsPromise = null;
let boundsPromise = null;

/**
 * What the API accepts for each query parameter of /recommend (minimum, maximum, ...), read
 * from its own OpenAPI document: the form checks a value against the same bounds the server
 * enforces, and names the field by its label. Loaded once; unavailable: {} (the server still
 * checks, and its refusal is shown by field too).
 */
function paramBounds() {
  boundsPromise ??= fetch("/openapi.json", { headers: { Accept: "application/json" } })
    .then((res) => (res.ok ? res.json() : null))
    .then((doc) => Object.fromEntries((doc?.paths?.[`${API}/recommend`]?.get?.parameters || []).map((p) => [p.name, p.schema || {}])))
    .catch(() => {
      boundsPromise = null;
      return {};
    });
  return boundsPromise;
}

/** A field's label as the form shows it. */
function labelOf(field) {
  return document.querySelector(`label[for="${field}"]`)?.textContent || field;
}

/** A limit as people read it: 1, 4096, 1e16. */
function bound(x) {
  return Math.abs(x) >= 1e5 ? x.toExponential().replace("e+", "e") : String(x);
}

/** An input the form refuses, with its field (to mark) and its label (to name it by). */
function fieldError(field, message) {
  return Object.assign(new Error(`${labelOf(field)}: ${message}`), { field });
}

/** The hyper laws (published and fitted), for the law menu and the overlays. Loaded once. */
function hyperLaws() {
  // A failed load is forgotten, so that the next render asks again.
  lawsPromise ??= api("/laws", { params: { kind: "hyper" } }).catch((err) => {
    lawsPromise = null;
    throw err;
  });
  return lawsPromise;
}

/** The optimizer menu's value as the API names it ("" is AdamW). */
function chosenOptimizer() {
  return form.elements.optimizer.value || DEFAULT_OPTIMIZER;
}

/** Make sure the optimizer menu offers ``value`` (a shared URL, or a law fitted on an optimizer
 *  the menu does not list: imported runs may name any). */
function offerOptimizer(value) {
  const select = form.elements.optimizer;
  if (value && ![...select.options].some((o) => o.value === value)) select.append(h("option", { value }, value));
}

async function fillLawMenu(selected) {
  const select = form.elements.law;
  const laws = await hyperLaws();
  for (const l of laws) if (l.optimizer !== DEFAULT_OPTIMIZER) offerOptimizer(l.optimizer);
  const optimizer = chosenOptimizer();
  const label = form.elements.optimizer.selectedOptions[0]?.textContent || optimizer;
  // A law answers only for its own optimizer: the menu lists the chosen optimizer's laws.
  mount(
    select,
    h("option", { value: "" }, optimizer === DEFAULT_OPTIMIZER
      ? "Automatic: newest validated fit near the target, else Step Law"
      : `Automatic: newest validated ${label} fit (the published laws are AdamW's)`),
    laws.filter((l) => l.optimizer === optimizer).map((l) =>
      h("option", { value: l.name }, `${l.title} (${l.origin === "published" ? "published" : `fitted #${l.id}`})`),
    ),
  );
  // A shared URL may name a law that is gone: keep the choice visible so the API's 404 explains it.
  if (selected && !laws.some((l) => l.name === selected)) {
    select.append(h("option", { value: selected }, selected));
  }
  select.value = selected || "";
}

/** The form's raw inputs (as typed, so the URL shows "7B" rather than 7000000000). */
function formState() {
  const state = {};
  for (const k of FIELDS) state[k] = form.elements[k].value.trim();
  return state;
}

function fillForm(state) {
  for (const k of FIELDS) {
    if (k === "law") continue; // set once the menu is filled
    if (k === "optimizer") offerOptimizer(state[k]);
    const el = form.elements[k];
    el.value = state[k] ?? (k === "seq_len" ? "2048" : "");
    el.removeAttribute("aria-invalid");
  }
}

/** Turn raw inputs into API parameters; a number that cannot be read, or that lies outside what
 *  the API accepts (`bounds`, see paramBounds), is reported by its label. */
function toParams(state, bounds = {}) {
  const params = {};
  for (const k of FIELDS) {
    const raw = state[k];
    if (!raw) continue;
    if (CHOICE_FIELDS.has(k)) {
      params[k] = raw;
      continue;
    }
    const value = parseNumber(raw);
    if (!Number.isFinite(value) || (INTEGER_FIELDS.has(k) && !Number.isInteger(value))) {
      throw fieldError(k, `“${raw}” is not a ${INTEGER_FIELDS.has(k) ? "whole " : ""}number`);
    }
    const b = bounds[k] || {};
    if (b.minimum !== undefined && value < b.minimum) throw fieldError(k, `“${raw}” is too small: it must be at least ${bound(b.minimum)}`);
    if (b.exclusiveMinimum !== undefined && value <= b.exclusiveMinimum) throw fieldError(k, `“${raw}” must be more than ${bound(b.exclusiveMinimum)}`);
    if (b.maximum !== undefined && value > b.maximum) throw fieldError(k, `“${raw}” is too large: it must be at most ${bound(b.maximum)}`);
    params[k] = value;
  }
  return params;
}

/** Enough inputs to ask for an answer (otherwise a fresh page just shows the empty form). */
function hasTarget(state) {
  const size = state.n_params || (state.d_model && state.n_layers);
  return Boolean(size && (state.tokens || state.compute));
}

// -- the answer card ----------------------------------------------------------------------

/** One figure of the answer; data-value keeps the unrounded number (for copying and tests). */
function valueBox(label, number, interval, note, raw) {
  return h(
    "div",
    { class: "value" },
    h("div", { class: "label" }, label),
    h("div", { class: "number", "data-value": raw }, number),
    interval ? h("div", { class: "interval" }, `95% interval ${interval}`) : null,
    note ? h("div", { class: "interval" }, note) : null,
  );
}

/** A count written out whole, as the CLI writes it: 4,998,815 and 2,441. */
function whole(x) {
  return Math.round(x).toLocaleString("en-US");
}

const BASIS = {
  given: "given",
  "12 * n_layers * d_model^2": "12 · layers · d_model²",
  "6 * n_params * tokens": "6 N D",
  "compute / (6 * n_params)": "C / (6 N)",
};

function renderAnswer(rec) {
  const near = rec.near_optimal;
  const loss = rec.final_loss !== null && rec.final_loss !== undefined
    ? valueBox("Predicted final loss (nats/token)", fmt(rec.final_loss, 4), fmtInterval(rec.final_loss_interval, (x) => fmt(x, 4)),
        rec.loss_law ? `by ${rec.loss_law.title}` : null, rec.final_loss)
    : valueBox("Predicted final loss", "–", null, rec.final_loss_note
        // Far outside every loss law's data: no number, and why (which law would be needed).
        ? rec.final_loss_note
        : "No prediction: it comes from a fitted loss law (hpscale fit --kind loss, or POST /api/v1/fits).");
  mount(
    answerEl,
    h("h2", {}, "Answer"),
    h(
      "p", { class: "muted small" },
      `N = ${si(rec.n_params)} (${BASIS[rec.n_params_basis] || rec.n_params_basis}) · `,
      `D = ${si(rec.tokens)} tokens (${BASIS[rec.tokens_basis] || rec.tokens_basis}) · `,
      `C = ${fmt(rec.compute)} FLOPs (${BASIS[rec.compute_basis] || rec.compute_basis}) · seq_len ${rec.seq_len}`,
      rec.embedding_params ? ` · embedding ${si(rec.embedding_params)} params (not in N)` : "",
    ),
    rec.warnings.map((w) => h("div", { class: "warning", role: "status" }, h("strong", {}, "Warning: "), w)),
    h(
      "div", { class: "values" },
      valueBox("Peak learning rate", fmt(rec.lr), fmtInterval(rec.lr_interval), null, rec.lr),
      valueBox("Batch (tokens, the law's value)", whole(rec.batch_tokens), fmtInterval(rec.batch_tokens_interval, whole), null, rec.batch_tokens),
      valueBox(`Batch (whole sequences of ${rec.seq_len})`, whole(rec.batch_size), fmtInterval(rec.batch_size_interval, whole),
        rec.batch_size_rounding, rec.batch_size),
    ),
    h("div", { class: "values" }, loss),
    near
      ? h(
          "p", { class: "small" },
          h("strong", {}, "Near-optimal region: "),
          `lr ${fmtInterval(near.lr)}, batch ${fmtInterval(near.batch_tokens, si)} tokens `,
          `(${fmtInterval(near.batch_size)} sequences)`,
          near.basis === "law_data"
            ? ` — where the law's own sweeps landed within ${fmt((near.eps ?? 0.0025) * 100)}% of their best loss.`
            : " — the law's confidence interval (no loss landscape known).",
        )
      : null,
    h(
      "dl", { class: "meta" },
      h("dt", {}, "Optimizer"),
      h("dd", {}, rec.optimizer),
      h("dt", {}, "Law"),
      h("dd", {}, h("a", { href: hrefFor("laws.html", { law: rec.law.id }) }, rec.law.title), ` (${rec.law.name}, ${rec.law.origin}, form ${rec.law.form})`),
      h("dt", {}, "Source"),
      h("dd", {}, rec.law.source),
      h("dt", {}, "Outside the data"),
      h("dd", {}, rec.extrapolation_factor === null
        ? "unknown (a published law: its data range is not stored)"
        : rec.extrapolation_factor <= 1
          ? "no: the target lies inside the law's data"
          : rec.extrapolation_factor > rec.extrapolation_warning_factor
            ? "yes, far: see the warning above"
            : `${fmt(rec.extrapolation_factor)}× past the law's data (a warning from ${fmt(rec.extrapolation_warning_factor)}× on)`),
    ),
  );
}

// -- the plots ------------------------------------------------------------------------------

/** Log-spaced values from lo to hi (inclusive). */
function geomspace(lo, hi, n) {
  const a = Math.log(lo), b = Math.log(hi);
  return Array.from({ length: n }, (_, i) => Math.exp(a + ((b - a) * i) / (n - 1)));
}

/** Range around the target and the data, a decade of margin either side. */
function span(values) {
  const v = values.filter((x) => Number.isFinite(x) && x > 0);
  return [Math.min(...v) / 10, Math.max(...v) * 10];
}

async function renderPlots(rec) {
  const laws = await hyperLaws();
  const chosen = laws.find((l) => l.id === rec.law.id) || rec.law;
  // The chosen law with the published ones of its optimizer (AdamW's) overlaid for comparison.
  const published = laws.filter((l) => l.origin === "published" && l.id !== chosen.id && l.optimizer === chosen.optimizer);
  const shown = [chosen, ...published];
  plotsEl.hidden = false;
  const lrEl = document.getElementById("plot-lr");
  const bEl = document.getElementById("plot-batch");
  mount(lrEl, loading("Drawing…"));
  mount(bEl);

  // The chosen law's data fixes the range (so its points show); the target always lies within.
  const chosenDetail = await api(`/laws/${chosen.id}`, { params: { tokens: rec.tokens, points: 2, n_min: rec.n_params, n_max: rec.n_params } });
  const eps = chosenDetail.settings?.eps ?? 0.0025;
  const data = nearOptimalRuns(chosenDetail.data, eps);
  const [nLo, nHi] = span([rec.n_params, ...data.map((r) => r.n_params)]);
  const [dLo, dHi] = span([rec.tokens, ...data.map((r) => r.tokens)]);
  const dGrid = geomspace(dLo, dHi, 9); // power laws: straight on log axes, a few points draw them

  // lr* along N at the target's D: one request per law (the API's curve runs along N).
  const alongN = await Promise.all(
    shown.map((l) => api(`/laws/${l.id}`, { params: { tokens: rec.tokens, n_min: nLo, n_max: nHi, points: 60 } })),
  );
  // B* along D at the target's N: the API's curves run along N only, so sample D through
  // /recommend (a few light requests per law) rather than re-implementing the laws here.
  const alongD = await Promise.all(
    shown.map((l) =>
      Promise.all(dGrid.map((d) => api("/recommend", { params: { n_params: rec.n_params, tokens: d, seq_len: rec.seq_len, law: l.id } }))),
    ),
  );

  const lrTraces = [];
  const bTraces = [];
  shown.forEach((law, i) => {
    const color = COLORS[i % COLORS.length];
    // Fitted laws' titles are sentences; their short names keep the legend on one line.
    const label = law.origin === "published" ? law.title : law.name;
    const pts = alongN[i].curve?.points || [];
    const x = pts.map((p) => p.n_params);
    const isMain = i === 0;
    if (isMain && pts.length && pts.every((p) => p.lr_interval)) {
      lrTraces.push(...bandTraces(x, pts.map((p) => p.lr_interval.low), pts.map((p) => p.lr_interval.high),
        { name: "95% band", color: "rgba(37,99,235,0.18)" }));
    }
    lrTraces.push({
      x, y: pts.map((p) => p.lr), mode: "lines", name: label,
      line: { color, width: isMain ? 3 : 2, dash: isMain ? "solid" : "dash" },
    });
    const recs = alongD[i];
    const dx = recs.map((r) => r.tokens);
    if (isMain && recs.every((r) => r.batch_tokens_interval)) {
      bTraces.push(...bandTraces(dx, recs.map((r) => r.batch_tokens_interval.low), recs.map((r) => r.batch_tokens_interval.high),
        { name: "95% band", color: "rgba(37,99,235,0.18)" }));
    }
    bTraces.push({
      x: dx, y: recs.map((r) => r.batch_tokens), mode: "lines", name: label,
      line: { color, width: isMain ? 3 : 2, dash: isMain ? "solid" : "dash" },
    });
  });
  if (data.length) {
    const text = data.map((r) => `${r.name}<br>N ${si(r.n_params)}, D ${si(r.tokens)}<br>loss ${fmt(r.final_loss, 4)}`);
    lrTraces.push({ x: data.map((r) => r.n_params), y: data.map((r) => r.lr), mode: "markers", name: "near-optimal runs (law's data)",
      marker: { color: "#6b7280", size: 7, opacity: 0.7 }, text, hoverinfo: "text" });
    bTraces.push({ x: data.map((r) => r.tokens), y: data.map((r) => r.batch_tokens), mode: "markers", name: "near-optimal runs (law's data)",
      marker: { color: "#6b7280", size: 7, opacity: 0.7 }, text, hoverinfo: "text" });
  }
  const target = { mode: "markers", name: "target", marker: { symbol: "star", size: 16, color: "#f59e0b", line: { color: "#111827", width: 1 } } };
  lrTraces.push({ ...target, x: [rec.n_params], y: [rec.lr], text: [`target: lr ${fmt(rec.lr)}`], hoverinfo: "text" });
  bTraces.push({ ...target, x: [rec.tokens], y: [rec.batch_tokens], text: [`target: batch ${si(rec.batch_tokens)} tokens`], hoverinfo: "text" });

  document.getElementById("plots-note").textContent =
    `The optimal peak lr against N at the target's D = ${si(rec.tokens)} tokens, ` +
    `and the optimal batch against D at the target's N = ${si(rec.n_params)}. ` +
    (published.length ? "Dashed: published laws. " : "") +
    "Points: the near-optimal runs the chosen law was fitted on (at their own N and D).";
  mount(lrEl);
  await plot(lrEl, lrTraces, { title: { text: "Optimal learning rate vs N" }, xaxis: logAxis("N (non-embedding parameters)"), yaxis: logAxis("peak lr") });
  await plot(bEl, bTraces, { title: { text: "Optimal batch vs D" }, xaxis: logAxis("D (tokens)"), yaxis: logAxis("batch (tokens)") });
}

// -- flow -----------------------------------------------------------------------------------

/** Show refused inputs under the form, each named by its label, and mark their fields. */
function showFieldErrors(errors) {
  formError.textContent = errors.map((e) => e.message).join("\n");
  formError.hidden = false;
  for (const e of errors) if (e.field) form.elements[e.field]?.setAttribute("aria-invalid", "true");
  mount(answerEl, ...PLACEHOLDER.cloneNode(true).childNodes);
  plotsEl.hidden = true;
}

/** The fields a 422 problem from /recommend names (query.<field>), as form errors; null when
 *  it names none of the form's fields (then the problem is shown as it is). */
function fieldErrorsOf(err) {
  if (!(err instanceof ApiError) || err.status !== 422 || !err.errors?.length) return null;
  const out = err.errors.map((e) => {
    const field = e.loc?.[0] === "query" ? e.loc[1] : null;
    return FIELDS.includes(field) ? fieldError(field, e.msg) : null;
  });
  return out.every(Boolean) ? out : null;
}

async function answer(state) {
  formError.hidden = true;
  let params;
  try {
    params = toParams(state, await paramBounds());
  } catch (err) {
    showFieldErrors([err]);
    return;
  }
  mount(answerEl, h("h2", {}, "Answer"), loading("Asking the law…"));
  let rec;
  try {
    rec = await api("/recommend", { params });
  } catch (err) {
    const fields = fieldErrorsOf(err);
    if (fields) {
      showFieldErrors(fields);
      return;
    }
    plotsEl.hidden = true;
    mount(answerEl, h("h2", {}, "Answer"), errorBox(err));
    if (!(err instanceof ApiError)) console.warn(err);
    return;
  }
  renderAnswer(rec);
  try {
    await renderPlots(rec);
  } catch (err) {
    showError(document.getElementById("plot-lr"), err);
  }
}

const PLACEHOLDER = answerEl.cloneNode(true); // the empty card, for a URL with no target (Back)

async function main() {
  const state = readState();
  fillForm(state);
  await fillLawMenu(state.law);
  // A law named in the URL belongs to its optimizer: the menus follow it.
  if (state.law && !state.optimizer) {
    const law = (await hyperLaws()).find((l) => l.name === state.law);
    if (law && law.optimizer !== DEFAULT_OPTIMIZER) {
      offerOptimizer(law.optimizer);
      form.elements.optimizer.value = law.optimizer;
      await fillLawMenu(state.law);
    }
  }
  if (hasTarget(state)) {
    await answer(state);
  } else {
    answerEl.replaceChildren(...PLACEHOLDER.cloneNode(true).childNodes);
    plotsEl.hidden = true;
  }
}

// Another optimizer: its own laws in the law menu (an explicit law of the old one no longer applies).
form.elements.optimizer.addEventListener("change", () => {
  settle(() => fillLawMenu(""), answerEl);
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const state = formState();
  writeState(state, { push: true });
  settle(() => answer(state), answerEl);
});

start(main, answerEl);
