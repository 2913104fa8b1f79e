// A run's page: its configuration, outcome and provenance, and its loss curve with the
// learning rate it was trained at. State: run.html?run=42
import { api, h, mount, emptyState, loading, readState, hrefFor, fmt, si, plot, figure, linAxis, logAxis, start } from "./app.js";

const content = document.getElementById("content");

function meta(run) {
  const rows = [
    ["Source", run.sweep_id !== null ? h("a", { href: hrefFor("sweeps.html", { sweep: run.sweep_id }) }, run.source) : run.source],
    ["Status", run.status],
    ["Final loss", run.final_loss === null ? `none (${run.final_loss_status})` : `${fmt(run.final_loss, 4)} nats/token`],
    ["N", `${si(run.n_params)} non-embedding parameters`],
    ["D", `${si(run.tokens)} tokens`],
    ["Compute", `${fmt(run.compute)} FLOPs`],
    ["Optimizer", run.optimizer],
    ["Peak lr", fmt(run.lr)],
    ["Batch", run.batch_tokens === null ? "–" : `${si(run.batch_tokens)} tokens${run.batch_size !== null ? ` (${fmt(run.batch_size)} × ${run.seq_len ?? "?"})` : ""}`],
    ["Schedule", run.schedule ?? "–"],
    ["Seed", run.seed ?? "–"],
    ["Corpus", run.corpus_hash ?? "–"],
    ["Code", run.code_version],
    ["Finished", run.finished_at ? new Date(run.finished_at).toLocaleString() : "–"],
  ];
  return h("dl", { class: "meta" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function lrRange(points) {
  const logs = points.map((p) => Math.log10(p.lr)).filter(Number.isFinite);
  if (!logs.length) return {};
  const lo = Math.min(...logs), hi = Math.max(...logs);
  return hi - lo < 0.2 ? { range: [lo - 0.5, hi + 0.5] } : {};
}

async function renderCurve(el, points) {
  const val = points.filter((p) => p.val_loss !== null);
  const train = points.filter((p) => p.train_loss !== null);
  const bad = points.filter((p) => p.nonfinite);
  const withLr = points.filter((p) => p.lr !== null);
  const traces = [];
  if (train.length) traces.push({ x: train.map((p) => p.step), y: train.map((p) => p.train_loss), mode: "lines", name: "train loss", line: { color: "#93c5fd" } });
  if (val.length) traces.push({ x: val.map((p) => p.step), y: val.map((p) => p.val_loss), mode: "lines+markers", name: "validation loss", line: { color: "#2563eb", width: 2 }, marker: { size: 5 } });
  const finiteLosses = [...val.map((p) => p.val_loss), ...train.map((p) => p.train_loss)];
  if (bad.length) {
    // A NaN/inf loss has no value to plot: mark its step along the top of the loss axis.
    const top = finiteLosses.length ? Math.max(...finiteLosses) : 1;
    traces.push({ x: bad.map((p) => p.step), y: bad.map(() => top), mode: "markers", name: "non-finite loss", marker: { symbol: "x", size: 10, color: "#dc2626" } });
  }
  if (withLr.length) traces.push({ x: withLr.map((p) => p.step), y: withLr.map((p) => p.lr), mode: "lines", name: "learning rate", yaxis: "y2", line: { color: "#9ca3af", dash: "dot" } });
  await plot(el, traces, {
    xaxis: linAxis("step"),
    yaxis: linAxis("loss (nats/token)"),
    // A constant lr would give the log axis no span (and odd minor ticks): widen it to a decade.
    yaxis2: logAxis("lr", { overlaying: "y", side: "right", showgrid: false, nticks: 4, tickformat: ".1e", ...lrRange(withLr) }),
    margin: { l: 60, r: 60, t: 36, b: 40 },
  });
}

async function main() {
  const { run: id } = readState();
  if (!id) {
    mount(content, h("h1", {}, "Run"), emptyState("No run chosen. Open one from a sweep's page, or list runs with:", "hpscale runs list"));
    return;
  }
  mount(content, h("h1", {}, "Run"), loading());
  const [run, curve] = await Promise.all([api(`/runs/${encodeURIComponent(id)}`), api(`/runs/${encodeURIComponent(id)}/curve`)]);
  const fig = figure({ id: "curve", "aria-label": "Loss curve" });
  document.title = `${run.name} · hpscale`;
  mount(
    content,
    h("p", { class: "crumbs" }, run.sweep_id !== null ? h("a", { href: hrefFor("sweeps.html", { sweep: run.sweep_id }) }, "← its sweep") : h("a", { href: "sweeps.html" }, "← sweeps")),
    h("h1", {}, run.name),
    h("div", { class: "plots two" },
      h("section", { class: "card" }, h("h2", {}, "Loss curve"),
        curve.points.length ? fig.box : emptyState("This run logged no curve points (imported runs carry a curve only when their file has one).")),
      h("section", { class: "card" }, h("h2", {}, "Run"), meta(run)),
    ),
  );
  if (curve.points.length) await renderCurve(fig.el, curve.points);
}

start(main, content);
