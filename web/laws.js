// The Laws page: every stored law, and one law judged against its data. State:
//   laws.html            the list, with the law recommendations use opened (see defaultLaw)
//   laws.html?law=7      law 7 (by id; a name works too)
import {
  api, h, mount, showError, emptyState, loading, readState, writeState, hrefFor,
  fmt, si, fmtInterval, plot, figure, logAxis, linAxis, bandTraces, COLORS, start,
  nearOptimalRuns,
} from "./app.js";

const content = document.getElementById("content");
const KIND_TITLES = {
  hyper: "Learning rate and batch", loss: "Loss", trajectory: "Loss curve (trajectory)",
  critical_batch: "Critical batch", "critical-batch": "Critical batch",
};
// How to fit a law: the CLI on the server's machine, or the API from anywhere (with the key).
const FIT_COMMANDS = [
  "hpscale fit --kind hyper --source my-sweep",
  `curl -X POST ${location.origin}/api/v1/fits -H "X-API-Key: $HPSCALE_API_KEY" \\\n  -H "Content-Type: application/json" -d '{"kind": "hyper", "sources": ["my-sweep"]}'`,
];
const MAX_CURVES = 5; // distinct D drawn as their own fitted line; more would be unreadable

// -- the list -------------------------------------------------------------------------------

function badge(law) {
  if (law.origin === "published") return h("span", { class: "badge" }, "published");
  if (law.failure?.length) return h("span", { class: "badge bad" }, "failed fit");
  if (law.extrapolation_passed === true) return h("span", { class: "badge ok" }, "extrapolation ok");
  if (law.extrapolation_passed === false) return h("span", { class: "badge bad" }, "extrapolation failed");
  return h("span", { class: "badge" }, "fitted");
}

function lawList(laws, current) {
  const kinds = [...new Set(laws.map((l) => l.kind))];
  return h("nav", { class: "card", "aria-label": "Laws" },
    kinds.map((kind) => [
      h("h2", {}, KIND_TITLES[kind] || kind),
      h("ul", { class: "law-list" }, laws.filter((l) => l.kind === kind).map((l) =>
        h("li", {},
          h("a", { href: hrefFor("laws.html", { law: l.id }), "aria-current": current && current.id === l.id ? "true" : null }, l.title),
          " ", badge(l),
          h("div", { class: "muted small" }, `${l.name} · ${l.form} · ${l.optimizer}`)))),
    ]),
    laws.some((l) => l.origin === "fitted")
      ? null
      : emptyState("No fitted laws yet: only the published ones. Fit one from your runs (the API needs the server's key):", ...FIT_COMMANDS),
  );
}

// -- pieces every law shows -----------------------------------------------------------------

function header(law) {
  return h("section", { class: "card" },
    h("h1", {}, law.title, " ", badge(law)),
    h("dl", { class: "meta" },
      h("dt", {}, "Name"), h("dd", {}, `${law.name} (id ${law.id})`),
      h("dt", {}, "Kind"), h("dd", {}, `${law.kind}, form ${law.form}`),
      h("dt", {}, "Optimizer"), h("dd", {}, law.origin === "published"
        ? `${law.optimizer} (the published laws were fitted on AdamW runs)`
        : `${law.optimizer} (recommendations use this law for ${law.optimizer} only)`),
      h("dt", {}, "Source"), h("dd", {}, law.source),
      law.fit_range?.n_params ? [h("dt", {}, "Fitted on"), h("dd", {}, fitRangeText(law.fit_range))] : null,
      h("dt", {}, "Data"), h("dd", {}, law.data.length
        ? `${law.data.length} runs${law.kind === "loss" ? " (the best run of each (N, D) group)" : ""}`
        : "none stored (a published law)"),
      h("dt", {}, "Created"), h("dd", {}, `${new Date(law.created_at).toLocaleString()}, code ${law.code_version}`),
    ),
    law.failure?.length
      ? h("div", { class: "warning", id: "failure" }, `Failed fit, never used by default: ${law.failure.join("; ")}`)
      : null,
    law.warnings.map((w) => h("div", { class: "warning" }, w)),
  );
}

/** How a fitted law treated run-to-run noise, its published prior and (joint fits) the basin. */
function fitCard(law) {
  const rows = [];
  if (law.noise) rows.push(["Run-to-run noise", law.noise.description]);
  if (law.near_optimal_band !== null && law.near_optimal_band !== undefined) {
    rows.push(["Near-optimal band", `${fmt(100 * law.near_optimal_band, 3)}% above a group's best, for a single-seed `
      + "configuration (narrower for seed means; never under Step Law's 0.25%)"]);
  }
  const b = law.landscape;
  if (b) {
    rows.push(["Joint basin", `lr-batch tilt k = ${fmt(b.k, 3)}; curvature along lr ${fmt(b.A_lo, 3)} (low side) / `
      + `${fmt(b.A_hi, 3)} (high side), along batch ${fmt(b.C_lo, 3)} / ${fmt(b.C_hi, 3)}; ${b.runs_in_band} runs `
      + `within ${fmt(100 * b.window, 2)}% of their group's best`]);
  }
  const p = law.prior;
  if (p) {
    const moved = Object.entries(p.shift).map(([k, v]) => `${k} ${v >= 0 ? "+" : ""}${fmt(v, 3)}`).join(", ");
    rows.push(["Prior", `${p.name}, width ${fmt(p.width)} on each exponent; it moved ${moved}`]);
  }
  if (!rows.length) return null;
  return h("section", { class: "card", id: "fit-treatment" },
    h("h2", {}, "Noise and prior"),
    h("dl", { class: "meta" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}

function fitRangeText(fr) {
  const part = (iv, f, unit) => (iv ? `${f(iv.low)} – ${f(iv.high)}${unit}` : null);
  return [part(fr.n_params, si, " params"), part(fr.tokens, si, " tokens"), part(fr.compute, fmt, " FLOPs")].filter(Boolean).join(", ");
}

function parameterTable(law) {
  const names = Object.keys(law.parameters);
  if (!names.length) return null;
  const level = law.settings?.level ? `${fmt(law.settings.level * 100)}%` : "95%";
  return h("section", { class: "card" },
    h("h2", {}, "Parameters"),
    h("div", { class: "table-wrap" },
      h("table", { id: "parameters" },
        h("thead", {}, h("tr", {}, h("th", {}, "Parameter"), h("th", { class: "num" }, "Value"), h("th", { class: "num" }, `${level} bootstrap interval`))),
        h("tbody", {}, names.map((k) => h("tr", {},
          h("td", {}, k), h("td", { class: "num" }, fmt(law.parameters[k], 4)),
          h("td", { class: "num" }, law.intervals?.[k] ? fmtInterval(law.intervals[k], (x) => fmt(x, 4)) : "–")))),
      )),
    law.intervals ? null : h("p", { class: "muted small" }, law.origin === "published"
      ? "No intervals: published laws come without their bootstrap samples."
      : "No intervals: this law was fitted without a bootstrap."),
  );
}

/** The held-out rows of an extrapolation report (fitting.validate): per held-out (N, D) group
 *  for hyper and loss laws (`groups`), per target for critical-batch laws (`targets`). */
function heldOutRows(report) {
  const rows = report?.groups ?? report?.targets;
  return Array.isArray(rows) ? rows.filter((r) => r && typeof r === "object" && "n_params" in r) : [];
}

const HOLDOUT_TEXT = {
  n_params: "the largest model size was held out",
  tokens: "each model size's largest token count was held out",
  steps: "the longest curve was held out",
};

/** Report fields in words; the rest show under their own names. */
const REPORT_LABELS = {
  n_fit_runs: "runs refitted on", n_held_out_runs: "runs held out",
  mean_abs_lr_log_error: "mean |log error| of lr*", mean_abs_batch_log_error: "mean |log error| of B*",
  mean_loss_regret: "mean loss regret", max_loss_regret: "worst loss regret",
  mean_abs_rel_error: "mean |relative error|", max_abs_rel_error: "worst |relative error|",
  mean_rel_error: "mean relative error", max_rel_error: "worst relative error",
  mean_abs_log_error: "mean |log error|", held_out_curve: "held-out curve",
  groups_on_lr_edge: "groups on the lr edge", inconclusive: "not conclusive",
};

function extrapolationCard(law) {
  const report = law.extrapolation;
  if (!report) {
    return law.origin === "fitted"
      ? h("section", { class: "card" }, h("h2", {}, "Extrapolation check"),
          h("p", { class: "muted" }, "No held-out check was stored with this law (the data had no larger scale to hold out)."))
      : null;
  }
  const skip = new Set(["kind", "form", "holdout", "passed"]);
  // A loss law is fitted on each group's best run; its check's run counts are of all the runs.
  const labels = law.kind === "loss"
    ? { ...REPORT_LABELS, n_fit_runs: "runs of the smaller sizes (the refit takes each group's best)",
        n_held_out_runs: "runs of the held-out size" }
    : REPORT_LABELS;
  const scalars = Object.entries(report).filter(([k, v]) => !skip.has(k) && (v === null || ["number", "string", "boolean"].includes(typeof v)));
  const held = heldOutRows(report);
  const cols = held.length ? Object.keys(held[0]) : [];
  const cell = (v) => (typeof v === "number" ? (Math.abs(v) >= 1e3 ? si(v) : fmt(v, 3)) : String(v ?? "–"));
  const verdict = report.passed === true ? "Passed. " : report.passed === false ? "Failed. " : "";
  return h("section", { class: "card" },
    h("h2", {}, "Extrapolation check"),
    h("p", {}, verdict, `To test how the law extrapolates, ${HOLDOUT_TEXT[report.holdout] || `the largest ${report.holdout} was held out`}, `,
      "the law refitted on the rest, and the refit scored on what was held out."),
    h("dl", { class: "meta" }, scalars.flatMap(([k, v]) => [h("dt", {}, labels[k] || k), h("dd", {}, cell(v))])),
    held.length
      ? h("div", { class: "table-wrap" }, h("table", { id: "held-out" },
          h("thead", {}, h("tr", {}, cols.map((c) => h("th", { class: "num" }, c)))),
          h("tbody", {}, held.map((p) => h("tr", {}, cols.map((c) => h("td", { class: "num" }, cell(p[c]))))))))
      : null,
  );
}

// -- hyper laws -----------------------------------------------------------------------------

/** At most `n` of the values, spread evenly in log space (always the smallest and largest). */
function spread(values, n) {
  const v = [...new Set(values)].sort((a, b) => a - b);
  if (v.length <= n) return v;
  return Array.from({ length: n }, (_, i) => v[Math.round((i * (v.length - 1)) / (n - 1))]);
}

async function renderHyper(law, el) {
  const eps = law.settings?.eps ?? 0.0025;
  const near = nearOptimalRuns(law.data, eps);
  const held = heldOutRows(law.extrapolation);
  // One fitted line per D of the data (a law with no data: the API's own rule, D = 20 N).
  const ds = spread(near.map((r) => r.tokens), MAX_CURVES);
  const details = ds.length
    ? await Promise.all(ds.map((d) => api(`/laws/${law.id}`, { params: { tokens: d, points: 60 } })))
    : [law];
  const lrTraces = [], bTraces = [];
  details.forEach((detail, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = detail.curve?.points || [];
    const x = pts.map((p) => p.n_params);
    const label = ds.length ? `D = ${si(ds[i])}` : detail.curve?.tokens_rule || law.title;
    if (pts.length && pts.every((p) => p.lr_interval)) {
      lrTraces.push(...bandTraces(x, pts.map((p) => p.lr_interval.low), pts.map((p) => p.lr_interval.high),
        { name: `band, ${label}`, color: `${color}2e`, legendgroup: label }));
    }
    if (pts.length && pts.every((p) => p.batch_tokens_interval)) {
      bTraces.push(...bandTraces(x, pts.map((p) => p.batch_tokens_interval.low), pts.map((p) => p.batch_tokens_interval.high),
        { name: `band, ${label}`, color: `${color}2e`, legendgroup: label }));
    }
    lrTraces.push({ x, y: pts.map((p) => p.lr), mode: "lines", name: `fit, ${label}`, line: { color, width: 2 }, legendgroup: label, meta: "fit" });
    bTraces.push({ x, y: pts.map((p) => p.batch_tokens), mode: "lines", name: `fit, ${label}`, line: { color, width: 2 }, legendgroup: label, meta: "fit" });
    const mine = near.filter((r) => r.tokens === ds[i]);
    if (mine.length) {
      const text = mine.map((r) => `${r.name}<br>N ${si(r.n_params)}, D ${si(r.tokens)}<br>loss ${fmt(r.final_loss, 4)}`);
      lrTraces.push({ x: mine.map((r) => r.n_params), y: mine.map((r) => r.lr), mode: "markers", name: `near-optimal runs, ${label}`,
        marker: { color, size: 7, opacity: 0.75 }, text, hoverinfo: "text", legendgroup: label, showlegend: false, meta: "data" });
      bTraces.push({ x: mine.map((r) => r.n_params), y: mine.map((r) => r.batch_tokens), mode: "markers", name: `near-optimal runs, ${label}`,
        marker: { color, size: 7, opacity: 0.75 }, text, hoverinfo: "text", legendgroup: label, showlegend: false, meta: "data" });
    }
  });
  const rest = near.filter((r) => !ds.includes(r.tokens));
  if (rest.length) {
    lrTraces.push({ x: rest.map((r) => r.n_params), y: rest.map((r) => r.lr), mode: "markers", name: "near-optimal runs, other D", marker: { color: "#9ca3af", size: 6 }, meta: "data" });
    bTraces.push({ x: rest.map((r) => r.n_params), y: rest.map((r) => r.batch_tokens), mode: "markers", name: "near-optimal runs, other D", marker: { color: "#9ca3af", size: 6 }, meta: "data" });
  }
  // The extrapolation check: each held-out group's optimum, and where the law refitted
  // without them put it.
  const observed = { mode: "markers", name: "held-out optimum", meta: "held_out",
    marker: { symbol: "diamond-open", size: 14, color: "#111827", line: { width: 2 } } };
  const predicted = { mode: "markers", name: "refit's prediction for it", meta: "held_out_pred",
    marker: { symbol: "x-thin-open", size: 12, color: "#111827", line: { width: 2 } } };
  for (const [traceList, opt, pred] of [[lrTraces, "lr_opt", "lr_pred"], [bTraces, "batch_tokens_opt", "batch_tokens_pred"]]) {
    const rows = held.filter((p) => Number.isFinite(p[opt]));
    if (!rows.length) continue;
    const text = rows.map((p) => `held out: N ${si(p.n_params)}, D ${si(p.tokens)}<br>optimum ${fmt(p[opt])}, refit predicts ${fmt(p[pred])}`);
    traceList.push({ ...observed, x: rows.map((p) => p.n_params), y: rows.map((p) => p[opt]), text, hoverinfo: "text" });
    traceList.push({ ...predicted, x: rows.map((p) => p.n_params), y: rows.map((p) => p[pred]), text, hoverinfo: "text" });
  }

  const lr = figure({ id: "plot-lr", "aria-label": "Optimal lr against N" });
  const batch = figure({ id: "plot-batch", "aria-label": "Optimal batch against N" });
  mount(el, h("section", { class: "card" },
    h("h2", {}, ds.length ? "Fit against its data" : "The law"),
    h("p", { class: "muted small" }, ds.length
      ? "Lines: the law at each D of its data, with its bootstrap band; points: each group's near-optimal runs (the regression's data), coloured by D; open diamonds: the optima held out by the extrapolation check, crosses: where the law refitted without them predicts them."
      : `A published law: no data stored. Drawn along ${details[0].curve?.tokens_rule ?? "N"}.`),
    h("div", { class: "plots two" }, lr.box, batch.box)));
  await plot(lr.el, lrTraces, { title: { text: "Optimal peak lr vs N" }, xaxis: logAxis("N (non-embedding parameters)"), yaxis: logAxis("peak lr") });
  await plot(batch.el, bTraces, { title: { text: "Optimal batch vs N" }, xaxis: logAxis("N (non-embedding parameters)"), yaxis: logAxis("batch (tokens)") });
}

/** The lr-batch coupling of a fitted hyper law: the exponent of lr* on the batch at fixed
 *  (N, D), its interval and the theory's value, and each group's per-batch optima. */
async function couplingCard(law, el) {
  const c = law.lr_batch_coupling;
  if (!c) return;
  const theory = c.theory === null ? c.theory_basis : `theory: ${fmt(c.theory)} (${c.theory_basis})`;
  const measured = c.exponent === null
    ? `Not measured: ${c.note}.`
    : `k = ${fmt(c.exponent, 3)}` + (c.interval
      ? `, ${fmt(c.level * 100)}% interval ${fmtInterval(c.interval, (x) => fmt(x, 3))}`
      : ` (no interval: ${c.note || "fitted without a bootstrap"})`) +
      ` from ${c.groups} (N, D) groups, ${c.runs ?? 0} runs near their group's best; ${c.cells_excluded} of ` +
      `${c.cells + c.cells_excluded} (N, D, batch) cells without a bracketed lr optimum (best lr on the grid's edge, under 3 lrs, or every run diverged).`;
  const fig = figure({ id: "plot-coupling", "aria-label": "Optimal lr against batch within each group" });
  mount(el, h("section", { class: "card", id: "coupling" },
    h("h2", {}, "How the optimal lr grows with the batch"),
    h("p", {}, h("strong", {}, "lr* ∝ B", h("sup", {}, "k"), " at fixed N and D: "), measured),
    h("p", { class: "muted small" }, theory, `. Method: ${c.method}.`),
    c.warning ? h("div", { class: "warning" }, c.warning) : null,
    c.per_group.length ? fig.box : null));
  if (!c.per_group.length) return;
  // Each group's optima relative to its own geometric means: every group on one scale, the
  // slope is what they share.
  const gm = (v) => Math.exp(v.reduce((a, x) => a + Math.log(x), 0) / v.length);
  const traces = c.per_group.map((g, i) => {
    const b0 = gm(g.batch_tokens), l0 = gm(g.lr);
    return { x: g.batch_tokens.map((b) => b / b0), y: g.lr.map((l) => l / l0), mode: "lines+markers",
      name: `N ${si(g.n_params)}, D ${si(g.tokens)}`, line: { color: COLORS[i % COLORS.length], width: 1 }, meta: "group",
      text: g.batch_tokens.map((b, j) => `batch ${si(b)} tokens: lr* ${fmt(g.lr[j])}<br>group slope ${fmt(g.slope, 3)}`), hoverinfo: "text" };
  });
  const xs = c.per_group.flatMap((g) => { const b0 = gm(g.batch_tokens); return g.batch_tokens.map((b) => b / b0); });
  const span = [Math.min(...xs), Math.max(...xs)];
  const line = (k, name, dash, meta) => ({ x: span, y: span.map((x) => x ** k), mode: "lines", name, meta,
    line: { color: "#111827", width: 2, dash } });
  if (c.exponent !== null) traces.push(line(c.exponent, `measured k = ${fmt(c.exponent, 3)}`, "solid", "measured"));
  if (c.theory !== null) traces.push(line(c.theory, `theory k = ${fmt(c.theory)}`, "dash", "theory"));
  await plot(fig.el, traces, { title: { text: "Per-batch optimal lr, within each group" },
    xaxis: logAxis("batch / group's geometric mean"), yaxis: logAxis("lr* / group's geometric mean") });
}

// -- loss laws ------------------------------------------------------------------------------

/** A curve point's predicted loss and its interval, whichever name the API gives them. */
const lossOf = (p) => p.final_loss ?? p.loss;
const lossIntervalOf = (p) => p.final_loss_interval ?? p.loss_interval;

async function renderLoss(law, el) {
  const fig = figure({ id: "plot-loss", "aria-label": "Final loss against N" });
  const byD = new Map();
  for (const r of law.data.filter((r) => r.final_loss !== null)) {
    if (!byD.has(r.tokens)) byD.set(r.tokens, []);
    byD.get(r.tokens).push(r);
  }
  const ds = spread([...byD.keys()], MAX_CURVES);
  // The API's law detail carries plotting curves for hyper laws; for a loss law, ask for its
  // curve at each D of the data and draw it wherever the API gives one.
  const details = law.curve ? await Promise.all(ds.map((d) => api(`/laws/${law.id}`, { params: { tokens: d, points: 60 } }))) : [];
  const traces = [];
  let fitted = false;
  [...byD.entries()].sort((a, b) => a[0] - b[0]).forEach(([d, runs], i) => {
    const color = COLORS[i % COLORS.length];
    const pts = (details[ds.indexOf(d)]?.curve?.points || []).filter((p) => lossOf(p) !== undefined);
    if (pts.length && pts.every(lossIntervalOf)) {
      traces.push(...bandTraces(pts.map((p) => p.n_params), pts.map((p) => lossIntervalOf(p).low), pts.map((p) => lossIntervalOf(p).high),
        { name: `band, D = ${si(d)}`, color: `${color}2e`, legendgroup: `D${i}` }));
    }
    if (pts.length) {
      fitted = true;
      traces.push({ x: pts.map((p) => p.n_params), y: pts.map(lossOf), mode: "lines", name: `fit, D = ${si(d)}`,
        line: { color, width: 2 }, legendgroup: `D${i}`, meta: "fit" });
    }
    traces.push({
      x: runs.map((r) => r.n_params), y: runs.map((r) => r.final_loss), mode: "markers", name: `data, D = ${si(d)}`,
      marker: { color, size: 8 }, meta: "data", legendgroup: `D${i}`,
      text: runs.map((r) => `${r.name}<br>loss ${fmt(r.final_loss, 4)}`), hoverinfo: "text",
    });
  });
  const held = heldOutRows(law.extrapolation).filter((p) => Number.isFinite(p.loss));
  if (held.length) {
    const text = held.map((p) => `held out: N ${si(p.n_params)}, D ${si(p.tokens)}<br>loss ${fmt(p.loss, 4)}, refit predicts ${fmt(p.loss_pred, 4)}`);
    traces.push({ x: held.map((p) => p.n_params), y: held.map((p) => p.loss), mode: "markers", name: "held-out loss", meta: "held_out",
      marker: { symbol: "diamond-open", size: 14, color: "#111827", line: { width: 2 } }, text, hoverinfo: "text" });
    traces.push({ x: held.map((p) => p.n_params), y: held.map((p) => p.loss_pred), mode: "markers", name: "refit's prediction for it",
      meta: "held_out_pred", marker: { symbol: "x-thin-open", size: 12, color: "#111827", line: { width: 2 } }, text, hoverinfo: "text" });
  }
  mount(el, h("section", { class: "card" },
    h("h2", {}, "Fit against its data"),
    h("p", { class: "muted small" }, fitted
      ? "Points: the best run of each (N, D) group; lines: the law at each D, with its bootstrap band."
      : "Points: the best run of each (N, D) group the law was fitted on, by D. (The API gives no fitted curve for loss laws yet, so only the data is drawn.)"),
    traces.length ? fig.box : emptyState("This law stores no data points.")));
  if (traces.length) await plot(fig.el, traces, { title: { text: "Final loss vs N" }, xaxis: logAxis("N (non-embedding parameters)"), yaxis: logAxis("final loss (nats/token)") });
}

// -- trajectory laws ------------------------------------------------------------------------

/** A run's schedule as the API's step table, from the lr its curve logged (each logged lr
 *  holds until the next logged step; exact when the run logged every step's lr). */
function tableFromCurve(points) {
  const withLr = points.filter((p) => p.lr !== null && p.step >= 1);
  if (!withLr.length) return null;
  const table = [{ step: 1, lr: withLr[0].lr }];
  for (const p of withLr) {
    if (p.step === 1) table[0].lr = p.lr;
    else if (p.lr !== table[table.length - 1].lr) table.push({ step: p.step, lr: p.lr });
  }
  return { kind: "table", table, total_steps: withLr[withLr.length - 1].step };
}

/** Each run's curve label: its schedule's kind ("cosine", "wsd": the stored schedule up to its
 *  parameters), with its token count when two runs share a kind, and its source when they share
 *  that too. Run names repeat across sources (one sweep per schedule), schedules do not. */
function scheduleLabels(runs) {
  const kindOf = (r) => (r.schedule || r.name).split("(")[0].trim() || r.name;
  const count = (key) => runs.reduce((m, r) => m.set(key(r), (m.get(key(r)) || 0) + 1), new Map());
  const kinds = count(kindOf);
  const withD = (r) => (kinds.get(kindOf(r)) > 1 ? `${kindOf(r)}, D = ${si(r.tokens)}` : kindOf(r));
  const labels = count(withD);
  return runs.map((r) => (labels.get(withD(r)) > 1 ? `${withD(r)} (${r.source})` : withD(r)));
}

async function renderTrajectory(law, el) {
  const curvesFig = figure({ id: "plot-trajectory", "aria-label": "Observed and predicted loss curves" });
  const runs = law.data;
  if (!runs.length) {
    mount(el, emptyState("This law stores no runs, so there are no observed curves to compare with."));
    return;
  }
  const curves = await Promise.all(runs.map((r) => api(`/runs/${r.run_id}/curve`)));
  const preds = await Promise.all(curves.map((c) => {
    const schedule = tableFromCurve(c.points);
    return schedule ? api("/predict/curve", { body: { law: law.id, schedule } }) : null;
  }));
  const lrFig = figure({ id: "plot-schedules", "aria-label": "Learning-rate schedules" });
  const traces = [], lrTraces = [];
  // The extrapolation check refits without the longest curve: say which one that was.
  const heldOut = law.extrapolation?.held_out_curve;
  const labels = scheduleLabels(runs);
  runs.forEach((r, i) => {
    const color = COLORS[i % COLORS.length];
    const obs = curves[i].points.filter((p) => p.val_loss !== null);
    const label = `${labels[i]}${heldOut === `${r.source}/${r.name}` ? " (held out)" : ""}`;
    const hover = `${label}<br>${r.source}/${r.name}`;
    // One legend entry per run (its predicted line); its observed points share it.
    traces.push({ x: obs.map((p) => p.step), y: obs.map((p) => p.val_loss), mode: "markers", name: `${label}, observed`,
      marker: { color, size: 5, opacity: 0.7 }, legendgroup: label, meta: "observed", showlegend: !preds[i],
      text: obs.map(() => hover), hoverinfo: "text+x+y" });
    if (preds[i]) {
      // Drawn over the steps the run logged: before them (warmup, the first steps) the law's
      // prediction has nothing to be compared with and would only stretch the loss axis.
      const first = obs.length ? obs[0].step : 0;
      const keep = preds[i].steps.map((st, j) => (st >= first ? j : -1)).filter((j) => j >= 0);
      traces.push({ x: keep.map((j) => preds[i].steps[j]), y: keep.map((j) => preds[i].loss[j]), mode: "lines",
        name: label, line: { color, width: 2 }, legendgroup: label, meta: "predicted" });
      lrTraces.push({ x: preds[i].steps, y: preds[i].lr, mode: "lines", name: label, line: { color } });
    }
  });
  mount(el, h("section", { class: "card" },
    h("h2", {}, "Observed against predicted, per schedule"),
    h("p", { class: "muted small" }, "Points: each run's logged validation loss; lines: the law's prediction for the same learning-rate schedule (rebuilt from the lr the run logged). Curves are named by their schedule."),
    h("div", { class: "plots two" }, curvesFig.box, lrFig.box)));
  curvesFig.el.classList.add("tall");
  lrFig.el.classList.add("tall");
  await plot(curvesFig.el, traces, { title: { text: "Loss curves" }, xaxis: linAxis("step"), yaxis: linAxis("loss (nats/token)") });
  await plot(lrFig.el, lrTraces, { title: { text: "Learning-rate schedules" }, xaxis: linAxis("step"), yaxis: logAxis("lr") });
}

// -- critical-batch laws --------------------------------------------------------------------

/** The variable a critical-batch law's power law is on, with each target's value of it. */
const CRITICAL_X = {
  n_params: { name: "N", label: "N (non-embedding parameters)", of: (t) => t.n_params },
  tokens: { name: "E_min", label: "E_min (fewest tokens to the target)", of: (t) => t.e_min },
  target_loss: { name: "target loss", label: "target loss (nats/token)", of: (t) => t.target_loss },
};

async function renderCritical(law, el) {
  const info = law.critical_batch;
  if (!info?.targets.length) {
    mount(el, h("p", { class: "muted" }, "This critical-batch law carries no per-target fits."));
    return;
  }
  const axis = CRITICAL_X[info.by] ?? CRITICAL_X.n_params;
  const xs = info.targets.map(axis.of);
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const line = Array.from({ length: 40 }, (_, i) => lo * (hi / lo) ** (i / 39));
  const fig = figure({ id: "plot-critical", "aria-label": "Critical batch against the fitted variable" });
  const exps = Object.entries(info.exponents).map(([k, v]) => `p = ${fmt(v, 3)} on ${CRITICAL_X[k]?.name ?? k}`).join(", ");
  mount(el, h("section", { class: "card" },
    h("h2", {}, "Critical batch per target"),
    h("p", { class: "muted small" }, "Points: each target's B_crit from S = S_min (1 + B_crit / B) fitted on its batch sizes; line: the law B_crit = k x^p across targets.",
      exps ? ` Exponent of B_crit on each variable the targets vary in: ${exps}.` : ""),
    fig.box,
    h("div", { class: "table-wrap" },
      h("table", { id: "critical-targets" },
        h("thead", {}, h("tr", {}, ["N", "target loss", "B_crit (tokens)", "S_min (steps)", "E_min (tokens)", "B at 20% overhead", "mean rel. error"]
          .map((c, i) => h("th", { class: i ? "num" : null }, c)))),
        h("tbody", {}, info.targets.map((t) => h("tr", {},
          h("td", {}, si(t.n_params)), h("td", { class: "num" }, fmt(t.target_loss, 4)), h("td", { class: "num" }, si(t.b_crit)),
          h("td", { class: "num" }, fmt(t.s_min)), h("td", { class: "num" }, si(t.e_min)), h("td", { class: "num" }, si(t.b_overhead20)),
          h("td", { class: "num" }, `${fmt(100 * t.rel_error, 2)}%`))))))));
  await plot(fig.el, [
    { x: xs, y: info.targets.map((t) => t.b_crit), mode: "markers", name: "targets", meta: "data", marker: { size: 9 },
      text: info.targets.map((t) => `N ${si(t.n_params)}, target ${fmt(t.target_loss, 4)}<br>B_crit ${si(t.b_crit)} tokens`), hoverinfo: "text" },
    { x: line, y: line.map((x) => law.parameters.k * x ** law.parameters.p), mode: "lines", name: "fit", meta: "fit", line: { color: "#111827", width: 2 } },
  ], { title: { text: "Critical batch" }, xaxis: logAxis(axis.label), yaxis: logAxis("B_crit (tokens)") });
}

// -- flow -----------------------------------------------------------------------------------

/** The law a recommendation near its data comes from (the API's rule, for its default
 *  optimizer AdamW: the newest fitted lr/batch law whose extrapolation check passed, else Step
 *  Law), else the first stored. */
function defaultLaw(laws) {
  const passed = laws.filter((l) => l.origin === "fitted" && l.kind === "hyper" && l.extrapolation_passed === true
    && (l.optimizer ?? "adamw") === "adamw");
  return passed[passed.length - 1] || laws.find((l) => l.name === "steplaw") || laws[0];
}

const RENDERERS = { hyper: renderHyper, loss: renderLoss, trajectory: renderTrajectory, critical_batch: renderCritical };

async function main() {
  const state = readState();
  mount(content, h("h1", {}, "Laws"), loading());
  const laws = await api("/laws");
  let current = null;
  if (state.law) current = laws.find((l) => String(l.id) === state.law || l.name === state.law) || { id: state.law };
  else {
    current = defaultLaw(laws);
    if (current) writeState({ law: current.id });
  }
  const detailEl = h("div", { id: "law-detail" }, loading());
  mount(content, h("div", { class: "layout-laws" }, lawList(laws, current), detailEl));
  if (!current) {
    mount(detailEl, emptyState("No laws stored. Starting the server stores the published ones; fit your own with:", ...FIT_COMMANDS));
    return;
  }
  let law;
  try {
    law = await api(`/laws/${encodeURIComponent(current.id)}`);
  } catch (err) {
    showError(detailEl, err);
    return;
  }
  document.title = `${law.title} · hpscale`;
  const plotsEl = h("div", {}, loading("Drawing…"));
  const couplingEl = h("div", {});
  mount(detailEl, header(law), plotsEl, parameterTable(law), fitCard(law), couplingEl, extrapolationCard(law));
  const render = RENDERERS[law.kind];
  if (render) {
    try {
      await render(law, plotsEl);
    } catch (err) {
      showError(plotsEl, err);
    }
  } else {
    mount(plotsEl, h("p", { class: "muted" }, `No plot for ${law.kind} laws yet; their parameters are below.`));
  }
  try {
    await couplingCard(law, couplingEl);
  } catch (err) {
    showError(couplingEl, err);
  }
}

start(main, content);
