// What every page shares: talking to the API, showing its errors, keeping page state in the
// URL, formatting numbers, and the Plotly conventions (log axes, responsive figures).
// Pages import what they need; nothing here knows about a particular page.

export const API = "/api/v1";

// -- the API --------------------------------------------------------------------------------

/** An API refusal, carrying the RFC 9457 problem body the server sent. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || "";
    this.errors = problem.errors || null;
  }
}

/**
 * GET (or POST, with `body`) an API path and return its JSON. Errors come back as ApiError
 * whatever their shape: a problem+json body, a non-JSON body (a proxy's HTML page), or a
 * network failure (status 0), so that every page can show them the same way.
 */
export async function api(path, { params, body, signal } = {}) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const init = { headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { title: "Network error", detail: `the server did not answer (${err.message})` });
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const problem = data && typeof data === "object" ? data : { detail: text.slice(0, 300) };
    throw new ApiError(res.status, { title: res.statusText, ...problem });
  }
  return data;
}

// -- DOM helpers ----------------------------------------------------------------------------

/** document.createElement with attributes and children; strings become text (never HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace an element's contents. */
export function mount(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** The box that shows an API error: its title, its `detail`, and any invalid fields. */
export function errorBox(err) {
  const api = err instanceof ApiError;
  const title = api ? `${err.status ? err.status + " " : ""}${err.title}` : "Something went wrong";
  const fields = api && err.errors ? err.errors : [];
  return h(
    "div",
    { class: "error", role: "alert" },
    h("strong", {}, title),
    h("p", { class: "detail" }, err.detail || err.message || String(err)),
    fields.length > 1
      ? h("ul", {}, fields.map((f) => h("li", {}, `${(f.loc || []).join(".")}: ${f.msg}`)))
      : null,
  );
}

/** Show an error in `el` (and log non-API errors: they are bugs in the page). */
export function showError(el, err) {
  if (!(err instanceof ApiError)) console.warn(err);
  mount(el, errorBox(err));
}

/** An empty state: what is missing, and the command that fills it. */
export function emptyState(message, ...commands) {
  return h(
    "div",
    { class: "empty" },
    h("p", {}, message),
    commands.map((c) => h("pre", {}, h("code", {}, c))),
  );
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", "aria-live": "polite" }, text);
}

// -- URL state ------------------------------------------------------------------------------
// A page's state (which sweep, group, law; the form's inputs) lives in the query string, so a
// URL can be shared or bookmarked and loading it restores the page.

/** The current query string as a plain object of strings. */
export function readState() {
  return Object.fromEntries(new URLSearchParams(location.search));
}

/**
 * Write `state` to the query string (empty values dropped). `push` adds a history entry (a
 * user's navigation, so Back returns); otherwise the entry is replaced (a refinement).
 */
export function writeState(state, { push = false } = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const search = q.toString() ? `?${q}` : "";
  if (search === location.search) return;
  const url = location.pathname + search + location.hash;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

/** A link to `page` with `state` in its query string. */
export function hrefFor(page, state = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `${page}?${s}` : page;
}

// -- numbers --------------------------------------------------------------------------------

/** Parse a number as people write them: 7e9, 7B, 1.4T, 125M, 2,048. NaN when unreadable. */
export function parseNumber(text) {
  if (text === undefined || text === null) return NaN;
  const s = String(text).trim().replace(/[,_\s]/g, "");
  if (!s) return NaN;
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)([kmbtgp]?)$/i.exec(s);
  if (!m) return NaN;
  const scale = { "": 1, k: 1e3, m: 1e6, b: 1e9, g: 1e9, t: 1e12, p: 1e15 }[m[2].toLowerCase()];
  return Number(m[1]) * scale;
}

/** Three significant figures, plain for ordinary magnitudes and 1.23e-4 style otherwise. */
export function fmt(x, digits = 3) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) {
    const [m, e] = x.toExponential(digits - 1).split("e");
    return `${m}e${Number(e)}`;
  }
  return Number(x.toPrecision(digits)).toString();
}

/** Counts (N, D, batch tokens, FLOPs) with SI suffixes: 7.0B, 1.4T, 4.19M. */
export function si(x, digits = 3) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  const units = [
    [1e24, "Y"], [1e21, "Z"], [1e18, "E"], [1e15, "P"], [1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"],
  ];
  for (const [scale, unit] of units) {
    if (Math.abs(x) >= scale) return `${Number((x / scale).toPrecision(digits))}${unit}`;
  }
  return Number(x.toPrecision(digits)).toString();
}

/** "low – high" of an API Interval ({low, high}), formatted with `f`. */
export function fmtInterval(iv, f = fmt) {
  return iv ? `${f(iv.low)} – ${f(iv.high)}` : "";
}

// -- plots ----------------------------------------------------------------------------------
// Plotly.js is the classic script /static/plotly.min.js (served from the installed plotly
// package), so it is a global rather than an import.

export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];

/** A log axis titled `title` (lr, batch, N, D and compute are always shown on log axes). */
export function logAxis(title, extra = {}) {
  return { title: { text: title }, type: "log", exponentformat: "power", automargin: true, ...extra };
}

export function linAxis(title, extra = {}) {
  return { title: { text: title }, automargin: true, ...extra };
}

/**
 * Draw a figure that follows its container's width (phones included). The title goes in an
 * HTML heading above the figure and the legend above the plot area: Plotly reserves margin
 * for each separately, so a legend wrapping onto several rows on a phone cannot run into the
 * x axis title or the title, as a legend below the axis does.
 */
export async function plot(el, traces, layout = {}) {
  const { title, ...rest } = layout;
  plotTitle(el, typeof title === "string" ? title : title?.text);
  const narrow = el.clientWidth < 560;
  const base = {
    margin: { l: 60, r: 16, t: 10, b: 40 },
    legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" },
    font: { family: "system-ui, sans-serif", size: narrow ? 11 : 12 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    hovermode: "closest",
    autosize: true,
  };
  // On a phone the mode bar's buttons crowd the legend and pinch-zoom does their job.
  const config = { responsive: true, displaylogo: false, displayModeBar: narrow ? false : "hover" };
  await window.Plotly.newPlot(el, traces, { ...base, ...rest }, config);
  return el;
}

/** The heading just before a figure (created once, updated on redraw). */
function plotTitle(el, text) {
  let heading = el.previousElementSibling;
  if (!heading || !heading.classList.contains("plot-title")) {
    if (!text) return;
    heading = h("h3", { class: "plot-title" });
    el.before(heading);
  }
  heading.textContent = text || "";
}

/** A figure's element, in a box that also holds its title (a grid cell when figures sit side by side). */
export function figure(attrs) {
  const el = h("div", { class: "plot", role: "img", ...attrs });
  return { el, box: h("div", { class: "plot-box" }, el) };
}

/** A shaded band between `low` and `high` along `x`: two traces, the second filling to the first. */
export function bandTraces(x, low, high, { name, color = "rgba(37,99,235,0.18)", legendgroup } = {}) {
  const group = legendgroup || name;
  return [
    { x, y: low, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: group, name: `${name} low` },
    { x, y: high, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: color, name, legendgroup: group, hoverinfo: "skip" },
  ];
}

// -- page chrome ----------------------------------------------------------------------------

/** Mark the current page's link in the navigation (aria-current, for styling and readers). */
export function markNav() {
  const page = location.pathname.split("/").pop() || "index.html";
  for (const a of document.querySelectorAll("nav.site a")) {
    const target = a.getAttribute("href").split("?")[0].replace(/^\.?\//, "") || "index.html";
    if (target === page || (page === "run.html" && target === "sweeps.html")) a.setAttribute("aria-current", "page");
  }
}

/**
 * Run a piece of page work, showing any error it throws in `el` instead of leaving a blank
 * page. While it runs, <body data-busy> is set: scripts (and the browser tests) wait for the
 * page to settle on it rather than guessing with timeouts.
 */
export async function settle(work, el) {
  document.body.dataset.busy = "true";
  try {
    await work();
  } catch (err) {
    showError(el, err);
  } finally {
    delete document.body.dataset.busy;
    document.body.dataset.ready = "true";
  }
}

/** Run a page's entry point now, and again whenever Back/Forward changes its URL state. */
export function start(main, el) {
  markNav();
  const go = () => settle(main, el);
  window.addEventListener("popstate", go);
  go();
}

/** The runs of each (N, D) group within `eps` (relative) of the group's best final loss: the
 *  points a hyper law's regression saw (the rest of the grid says where the optimum is not). */
export function nearOptimalRuns(data, eps) {
  const groups = new Map();
  for (const r of data) {
    if (r.final_loss === null || r.lr === null || r.status !== "done") continue;
    const key = `${r.n_params}|${r.tokens}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(r);
  }
  const out = [];
  for (const runs of groups.values()) {
    const best = Math.min(...runs.map((r) => r.final_loss));
    out.push(...runs.filter((r) => r.final_loss <= best * (1 + eps)));
  }
  return out;
}
