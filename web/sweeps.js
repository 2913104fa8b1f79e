// The Sweeps page: every sweep with its progress, or one sweep's loss landscape.
// State in the query string:
//   sweeps.html                    the list
//   sweeps.html?sweep=3            one sweep (its first group in the heatmap)
//   sweeps.html?sweep=3&group=2    one sweep, group 2 (by position, groups sorted by N then D)
import {
  api, h, mount, emptyState, loading, readState, writeState, hrefFor,
  fmt, si, plot, figure, logAxis, linAxis, COLORS, start, settle,
} from "./app.js";

const content = document.getElementById("content");
const STATUSES = ["done", "diverged", "failed", "running", "queued"];
const START_COMMANDS = [
  "hpscale sweep run sweep.yaml        # plan a grid and train it (one worker per GPU)",
  "hpscale import runs runs.jsonl      # or import runs you already have",
];

// -- the list -------------------------------------------------------------------------------

function progressBar(counts, total) {
  const title = STATUSES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ") || "no runs";
  return h(
    "div", { class: "progress", role: "img", "aria-label": title, title },
    STATUSES.filter((s) => counts[s]).map((s) =>
      h("span", { class: `status-${s}`, style: `width:${(100 * counts[s]) / total}%` }),
    ),
  );
}

function finished(counts) {
  return (counts.done || 0) + (counts.diverged || 0) + (counts.failed || 0);
}

async function renderList() {
  mount(content, h("h1", {}, "Sweeps"), loading());
  const sweeps = await api("/sweeps");
  if (!sweeps.length) {
    mount(content, h("h1", {}, "Sweeps"), emptyState("No sweeps yet. Start one, or import runs to fit laws on:", ...START_COMMANDS));
    return;
  }
  mount(
    content,
    h("h1", {}, "Sweeps"),
    h(
      "section", { class: "card" },
      h("div", { class: "table-wrap" },
        h("table", {},
          h("thead", {}, h("tr", {},
            h("th", {}, "Sweep"), h("th", { class: "hide-narrow" }, "Status"), h("th", {}, "Progress"),
            h("th", { class: "num" }, "Finished"), h("th", { class: "num hide-narrow" }, "Diverged"),
            h("th", { class: "hide-narrow" }, "Created"))),
          h("tbody", {}, sweeps.map((sw) => {
            const counts = sw.runs_by_status || {};
            return h("tr", {},
              h("td", {}, h("a", { href: hrefFor("sweeps.html", { sweep: sw.id }) }, sw.name)),
              h("td", { class: "hide-narrow" }, sw.status),
              h("td", {}, progressBar(counts, Math.max(sw.n_runs, 1))),
              h("td", { class: "num" }, `${finished(counts)} / ${sw.n_runs}`),
              h("td", { class: "num hide-narrow" }, counts.diverged || 0),
              h("td", { class: "hide-narrow" }, new Date(sw.created_at).toLocaleString()));
          })),
        ),
      ),
    ),
  );
}

// -- one sweep ------------------------------------------------------------------------------

function groupLabel(g) {
  // A group is one optimizer's: AdamW's (the default) are labelled as before, others by name.
  const opt = g.optimizer && g.optimizer !== "adamw" ? `${g.optimizer} · ` : "";
  return `${opt}N ${si(g.n_params)} · D ${si(g.tokens)}`;
}

/** Batch sizes of a group, smallest first (one line each in the loss-vs-lr plot). */
function batchesOf(g) {
  return [...new Set(g.runs.filter((r) => r.batch_tokens !== null).map((r) => r.batch_tokens))].sort((a, b) => a - b);
}

function runHover(r) {
  const loss = r.final_loss === null ? `${r.status} (loss ${r.final_loss_status})` : `loss ${fmt(r.final_loss, 4)}`;
  return `${r.name}<br>lr ${fmt(r.lr)} · batch ${si(r.batch_tokens)} tokens<br>${loss}${r.near_optimal ? "<br>near-optimal" : ""}`;
}

/** Final loss against lr, one line per batch size; diverged runs as crosses along the top. A
 *  batch size has one colour in every group's panel: its place in `sweepBatches`, the batch
 *  sizes of the whole sweep. */
function groupTraces(g, sweepBatches) {
  const traces = [];
  const batches = batchesOf(g);
  const finite = g.runs.filter((r) => r.final_loss !== null);
  const top = finite.length ? Math.max(...finite.map((r) => r.final_loss)) : 1;
  batches.forEach((bt) => {
    const i = sweepBatches.indexOf(bt);
    const runs = g.runs.filter((r) => r.batch_tokens === bt && r.lr !== null && r.final_loss !== null && r.status === "done")
      .sort((a, b) => a.lr - b.lr);
    traces.push({
      x: runs.map((r) => r.lr), y: runs.map((r) => r.final_loss), customdata: runs.map((r) => r.id),
      text: runs.map(runHover), hoverinfo: "text", mode: "lines+markers", meta: "batch",
      name: `batch ${si(bt)} tok`, line: { color: COLORS[i % COLORS.length] }, legendgroup: `b${i}`,
      marker: { size: runs.map((r) => (r.near_optimal ? 11 : 6)), line: { width: runs.map((r) => (r.near_optimal ? 2 : 0)), color: "#111827" } },
    });
  });
  const diverged = g.runs.filter((r) => (r.status === "diverged" || r.final_loss === null) && r.lr !== null && r.status !== "queued" && r.status !== "running");
  if (diverged.length) {
    traces.push({
      x: diverged.map((r) => r.lr), y: diverged.map(() => top), customdata: diverged.map((r) => r.id),
      text: diverged.map(runHover), hoverinfo: "text", mode: "markers", name: "diverged", meta: "diverged",
      marker: { symbol: "x", size: 11, color: "#dc2626" },
    });
  }
  return traces;
}

/** Unique values of a grid axis in log10, merging values that differ only by rounding. */
function logGrid(values) {
  const logs = [...new Set(values.map((v) => Math.round(Math.log10(v) * 1000) / 1000))].sort((a, b) => a - b);
  return logs;
}

function nearestIndex(grid, v) {
  const lv = Math.log10(v);
  let best = 0;
  for (let i = 1; i < grid.length; i++) if (Math.abs(grid[i] - lv) < Math.abs(grid[best] - lv)) best = i;
  return best;
}

/** Half the gap to the neighbouring grid values: the extent of a heatmap cell. */
function cellEdges(grid, i) {
  const lo = i > 0 ? (grid[i] + grid[i - 1]) / 2 : grid[i] - (grid.length > 1 ? (grid[1] - grid[0]) / 2 : 0.15);
  const hi = i < grid.length - 1 ? (grid[i] + grid[i + 1]) / 2 : grid[i] + (grid.length > 1 ? (grid[i] - grid[i - 1]) / 2 : 0.15);
  return [lo, hi];
}

/** The (log lr, log batch) heatmap of one group: final loss per cell, the near-optimal cells
 *  outlined, diverged runs crossed, the smooth optimum starred. Axes are log10 values with
 *  ticks labelled in lr and tokens (a heatmap's cells need an evenly indexed grid). */
async function renderHeatmap(el, g) {
  const runs = g.runs.filter((r) => r.lr !== null && r.batch_tokens !== null);
  if (!runs.length) {
    mount(el, emptyState("This group's runs record no lr and batch: there is no landscape to draw."));
    return;
  }
  const xs = logGrid(runs.map((r) => r.lr));
  const ys = logGrid(runs.map((r) => r.batch_tokens));
  const z = ys.map(() => xs.map(() => null));
  const text = ys.map(() => xs.map(() => ""));
  for (const r of runs) {
    const i = nearestIndex(ys, r.batch_tokens), j = nearestIndex(xs, r.lr);
    if (r.final_loss !== null && r.status === "done") z[i][j] = r.final_loss;
    text[i][j] = runHover(r);
  }
  const shapes = runs.filter((r) => r.near_optimal).map((r) => {
    const [x0, x1] = cellEdges(xs, nearestIndex(xs, r.lr));
    const [y0, y1] = cellEdges(ys, nearestIndex(ys, r.batch_tokens));
    return { type: "rect", x0, x1, y0, y1, line: { color: "#111827", width: 3 }, fillcolor: "rgba(0,0,0,0)" };
  });
  const diverged = runs.filter((r) => r.status === "diverged" || (r.final_loss === null && r.status !== "queued" && r.status !== "running"));
  const traces = [
    {
      type: "heatmap", x: xs, y: ys, z, text, hoverinfo: "text", colorscale: "Viridis", reversescale: true,
      colorbar: { title: { text: "final loss" }, thickness: 12 }, hoverongaps: false, name: "final loss",
    },
  ];
  if (diverged.length) {
    traces.push({
      x: diverged.map((r) => Math.log10(r.lr)), y: diverged.map((r) => Math.log10(r.batch_tokens)), mode: "markers",
      name: "diverged", marker: { symbol: "x", size: 14, color: "#dc2626", line: { width: 2 } },
      text: diverged.map(runHover), hoverinfo: "text",
    });
  }
  if (g.optimum && g.optimum.batch_tokens) {
    traces.push({
      x: [Math.log10(g.optimum.lr)], y: [Math.log10(g.optimum.batch_tokens)], mode: "markers", name: "smooth optimum",
      marker: { symbol: "star", size: 16, color: "#f59e0b", line: { color: "#111827", width: 1 } },
      text: [`optimum (${g.optimum.method}): lr ${fmt(g.optimum.lr)}, batch ${si(g.optimum.batch_tokens)}`], hoverinfo: "text",
    });
  }
  // An outline legend entry: shapes have none of their own.
  traces.push({ x: [null], y: [null], mode: "markers", name: `near-optimal (within ${fmt(g.eps * 100)}% of best)`,
    marker: { symbol: "square-open", size: 14, color: "#111827", line: { width: 2 } } });
  const tick = (grid, f) => ({ tickvals: grid, ticktext: grid.map((v) => f(10 ** v)) });
  await plot(el, traces, {
    title: { text: `${groupLabel(g)}: final loss over (lr, batch)` },
    xaxis: linAxis("lr (log scale)", { ...tick(xs, fmt), showgrid: false, zeroline: false }),
    yaxis: linAxis("batch, tokens (log scale)", { ...tick(ys, si), showgrid: false, zeroline: false }),
    shapes,
  });
}

function groupSummary(g) {
  const edges = g.optimum?.edges?.length
    ? h("div", { class: "warning" }, `The best run lies ${g.optimum.edges_text || "on the edge of the searched grid"}: the true optimum may lie outside the searched grid; widen the sweep there.`)
    : null;
  return h(
    "div", {},
    h("dl", { class: "meta" },
      h("dt", {}, "Best loss"), h("dd", {}, g.best_loss === null ? "no finished run yet" : fmt(g.best_loss, 4)),
      h("dt", {}, "Near-optimal runs"), h("dd", {}, `${g.near_optimal_run_ids.length} within ${fmt(g.eps * 100)}% of the best`),
      h("dt", {}, "Smooth optimum"),
      h("dd", {}, g.optimum ? `lr ${fmt(g.optimum.lr)}, batch ${si(g.optimum.batch_tokens)} tokens (${g.optimum.method})` : "too few finished runs"),
      h("dt", {}, "Compute"), h("dd", {}, `${fmt(g.compute)} FLOPs per run`),
    ),
    edges,
  );
}

function runsTable(g) {
  const rows = [...g.runs].sort((a, b) => (a.batch_tokens ?? 0) - (b.batch_tokens ?? 0) || (a.lr ?? 0) - (b.lr ?? 0));
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", { class: "num" }, "lr"), h("th", { class: "num" }, "Batch (tokens)"),
        h("th", { class: "num" }, "Batch (seqs)"), h("th", { class: "num" }, "Final loss"), h("th", {}, "Status"))),
      h("tbody", {}, rows.map((r) => h("tr", { class: r.near_optimal ? "selected" : null },
        h("td", {}, h("a", { href: hrefFor("run.html", { run: r.id }) }, r.name)),
        h("td", { class: "num" }, fmt(r.lr)), h("td", { class: "num" }, si(r.batch_tokens)),
        h("td", { class: "num" }, fmt(r.batch_size)),
        h("td", { class: "num" }, r.final_loss === null ? r.final_loss_status : fmt(r.final_loss, 4)),
        h("td", {}, r.status, r.near_optimal ? " ★" : "")))),
    ),
  );
}

/** Clicking a run's point opens its page (its loss curve). */
function linkPoints(el) {
  el.on("plotly_click", (ev) => {
    const id = ev.points?.[0]?.customdata;
    if (id !== undefined && id !== null) location.href = hrefFor("run.html", { run: id });
  });
}

async function renderSweep(state) {
  mount(content, h("p", { class: "crumbs" }, h("a", { href: "sweeps.html" }, "← all sweeps")), loading());
  const [sweep, groups] = await Promise.all([api(`/sweeps/${encodeURIComponent(state.sweep)}`), api(`/sweeps/${encodeURIComponent(state.sweep)}/groups`)]);
  const gi = Math.min(Math.max(Number.parseInt(state.group ?? "0", 10) || 0, 0), Math.max(groups.length - 1, 0));
  const counts = sweep.runs_by_status || {};
  const header = h(
    "section", { class: "card" },
    h("h1", {}, sweep.name),
    h("p", { class: "muted small" }, `${sweep.status} · ${finished(counts)} of ${sweep.n_runs} runs finished`,
      counts.diverged ? ` · ${counts.diverged} diverged` : "", ` · code ${sweep.code_version}`),
    progressBar(counts, Math.max(sweep.n_runs, 1)),
    h("details", {}, h("summary", {}, "Spec"), h("pre", {}, JSON.stringify(sweep.spec, null, 2))),
  );
  if (!groups.length) {
    mount(content, h("p", { class: "crumbs" }, h("a", { href: "sweeps.html" }, "← all sweeps")), header,
      emptyState("This sweep has no runs yet. Train it from its spec, or join it from another machine:",
        "hpscale sweep run sweep.yaml", `hpscale worker --sweep ${sweep.name}`));
    return;
  }
  const smallMultiples = groups.map((grp, i) => figure({ class: "plot group-plot", id: `group-${i}`, "aria-label": `Final loss against lr for ${groupLabel(grp)}` }).box);
  const landscape = h("div", { id: "landscape" });
  mount(
    content,
    h("p", { class: "crumbs" }, h("a", { href: "sweeps.html" }, "← all sweeps")),
    header,
    h("section", { class: "card" },
      h("h2", {}, "Final loss against learning rate, per (N, D) group"),
      h("p", { class: "muted small" }, "One line per batch size; ringed points are near-optimal; red crosses diverged. Click a point for its loss curve."),
      h("div", { class: "plots two" }, smallMultiples)),
    landscape,
  );
  const sweepBatches = [...new Set(groups.flatMap(batchesOf))].sort((a, b) => a - b);
  await Promise.all(groups.map(async (grp, i) => {
    const el = document.getElementById(`group-${i}`);
    await plot(el, groupTraces(grp, sweepBatches), {
      title: { text: groupLabel(grp) }, xaxis: logAxis("peak lr"), yaxis: linAxis("final loss (nats/token)"),
    });
    linkPoints(el);
  }));
  await renderLandscape(landscape, state.sweep, groups, gi);
}

/** The chosen group's heatmap, summary and runs. Choosing another group redraws only this
 *  part (the data is already here) and records the choice in the URL. */
async function renderLandscape(el, sweepRef, groups, gi) {
  const g = groups[gi];
  const choose = (i) => (ev) => {
    ev.preventDefault();
    writeState({ sweep: sweepRef, group: i }, { push: true });
    settle(() => renderLandscape(el, sweepRef, groups, i), el);
  };
  const groupNav = h("nav", { class: "group-nav", "aria-label": "Groups" }, groups.map((grp, i) =>
    h("a", { href: hrefFor("sweeps.html", { sweep: sweepRef, group: i }), "aria-current": i === gi ? "true" : null, onclick: choose(i) },
      groupLabel(grp))));
  const heat = figure({ id: "heatmap", "aria-label": `Loss heatmap of ${groupLabel(g)}` });
  mount(
    el,
    h("section", { class: "card" },
      h("h2", {}, "Landscape of one group"),
      groupNav,
      h("div", { class: "plots two" }, heat.box, groupSummary(g)),
    ),
    h("section", { class: "card" }, h("h2", {}, `Runs of ${groupLabel(g)}`), runsTable(g)),
  );
  await renderHeatmap(heat.el, g);
}

async function main() {
  const state = readState();
  if (state.sweep) await renderSweep(state);
  else await renderList();
}

start(main, content);
