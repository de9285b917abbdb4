// The live page: one `update` server-sent event per refresh of `nnmon plot`, drawn with
// uPlot. No build step: this file is served as it is.
"use strict";

const $ = (id) => document.getElementById(id);
const THIN = "\u2009";
const group = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, THIN);
const num = (v, digits = 2) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(digits));
const signed = (v) => (v === null || v === undefined ? "–" : (v > 0 ? "+" : "") + v.toFixed(2));
const pValue = (p) => (p < 1e-4 ? p.toExponential(1) : p.toFixed(4));
const ago = (ms) => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
};
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

function setRows(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        if (typeof cell === "object" && cell !== null) {
          td.textContent = cell.text;
          if (cell.cls) td.className = cell.cls;
        } else {
          td.textContent = cell;
        }
        tr.appendChild(td);
      }
      return tr;
    }),
  );
}

// ---- charts ----------------------------------------------------------------------------

const charts = {};
const HEIGHT = 240;

function chart(id, opts, data) {
  const el = $(id);
  if (!charts[id]) {
    charts[id] = new uPlot({ width: el.clientWidth || 460, height: HEIGHT, legend: { live: false }, ...opts }, data, el);
  } else {
    charts[id].setData(data);
  }
}

window.addEventListener("resize", () => {
  for (const [id, u] of Object.entries(charts)) u.setSize({ width: $(id).clientWidth, height: HEIGHT });
});

const TIME_AXES = [
  { values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false })) },
  { size: 60 },
];

function drawHistogram(h) {
  const centres = h.counts.map((_, i) => (i + 0.5) * h.width);
  const end = h.width * h.counts.length;
  chart(
    "histogram",
    {
      scales: { x: { time: false, range: [0, end] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [{ label: "absolute error" }, { label: "rows", size: 60 }],
      legend: { show: false },
      series: [
        {},
        { label: "rows", fill: "rgba(70,110,190,0.75)", stroke: "rgb(70,110,190)", paths: uPlot.paths.bars({ size: [1, Infinity], gap: 1 }), points: { show: false } },
      ],
    },
    [centres, h.counts],
  );
}

function drawTrend(history) {
  const t = history.map((p) => p.t_ms / 1000);
  chart(
    "trend",
    {
      scales: { x: { time: true } },
      axes: TIME_AXES,
      series: [
        {},
        { label: "MAE", stroke: "#c81e1e", width: 2 },
        { label: "RMSE", stroke: "#465fbe", width: 2 },
        { label: "bias", stroke: "#667085", width: 1.5, dash: [6, 4] },
      ],
    },
    [t, history.map((p) => p.mae), history.map((p) => p.rmse), history.map((p) => p.bias)],
  );
}

function drawPairs(pairs) {
  // uPlot wants ascending x: sort by y_true and draw points only, with y = x for reference.
  const sorted = [...pairs].sort((a, b) => a[0] - b[0]);
  const x = sorted.map((p) => p[0]);
  chart(
    "pairs",
    {
      scales: { x: { time: false } },
      axes: [{ label: "y_true" }, { label: "y_pred", size: 60 }],
      series: [
        { label: "y_true" },
        { label: "y_pred", stroke: "rgba(70,110,190,0.9)", fill: "rgba(70,110,190,0.5)", paths: () => null, points: { show: true, size: 5, fill: "rgba(70,110,190,0.6)" } },
        { label: "y = x", stroke: "#888", width: 1.5, dash: [5, 4], points: { show: false } },
      ],
    },
    [x, sorted.map((p) => p[1]), [...x]],
  );
}

function drawLatency(history, summary) {
  const t = history.map((p) => p.t_ms / 1000);
  chart(
    "latency",
    {
      scales: { x: { time: true } },
      axes: TIME_AXES,
      series: [
        {},
        { label: "p50 ms", stroke: "#067647", width: 2 },
        { label: "p99 ms", stroke: "#b54708", width: 2 },
      ],
    },
    [t, history.map((p) => p.latency_p50_ms), history.map((p) => p.latency_p99_ms)],
  );
  const total = summary.latency_total;
  $("latency-note").textContent = total
    ? `All ${group(total.count)} rows with a latency: p50 ${num(total.p50_ms, 1)} ms, p90 ${num(total.p90_ms, 1)} ms, p99 ${num(total.p99_ms, 1)} ms.`
    : "No latency logged yet (rows from producers that do not say when they published have none).";
}

// ---- tables ----------------------------------------------------------------------------

function drawStats(s) {
  $("window-head").textContent = `last ${group(s.window_size)} rows`;
  const w = s.window || {};
  const t = s.total || {};
  const row = (name, key, format = num) => [name, format(w[key]), format(t[key])];
  setRows($("stats").tBodies[0], [
    ["rows", w.count === undefined ? "–" : group(w.count), t.count === undefined ? "–" : group(t.count)],
    row("MAE", "mae"),
    row("RMSE", "rmse"),
    row("bias (mean error)", "bias", signed),
    row("R²", "r2", (v) => num(v, 3)),
    row("max |error|", "max_abs_error"),
    row("p50 |error|", "p50"),
    row("p90 |error|", "p90"),
    row("p99 |error|", "p99"),
    row("baseline MAE", "baseline_mae"),
  ]);
}

function drawDrift(s) {
  const alarms = [];
  const report = s.feature_drift;
  const tbody = $("drift").tBodies[0];
  if (!report) {
    setRows(tbody, []);
    $("drift-note").textContent = "Input drift: not reported yet (model writes feature_drift.json).";
  } else if (report.features.length === 0) {
    setRows(tbody, []);
    $("drift-note").textContent = `Input drift: ${group(report.items)} items seen; the first test runs once ${group(report.window)} have arrived (${ago(report.updated_ms)}).`;
  } else {
    setRows(
      tbody,
      report.features.map((f) => [f.name, num(f.statistic, 3), pValue(f.p_value), f.alarm ? { text: "DRIFT", cls: "alarm" } : { text: "ok", cls: "ok" }]),
    );
    for (const f of report.features) if (f.alarm) alarms.push(`input drift on ${f.name}`);
    $("drift-note").textContent = `Kolmogorov–Smirnov test of the last ${group(report.window)} items against the 442 training rows; ${group(report.items)} items seen; updated ${ago(report.updated_ms)}.`;
  }
  const metric = s.metric;
  if (!metric) {
    $("error-drift").textContent = "Error drift: not reported yet (metric writes metric_status.json).";
  } else {
    const d = metric.error_drift;
    // With its age: a stopped metric's last verdict must not look current.
    $("error-drift").textContent = `Error drift (CUSUM on the absolute error): ${d.alarm ? "ALARM" : "ok"}, score ${num(d.score, 2)} (alarm at 1); reported ${ago(metric.updated_ms)}.`;
    $("error-drift").className = d.alarm ? "note alarm" : "note";
    if (d.alarm) alarms.push("the absolute error has drifted up");
  }
  const banner = $("alarms");
  banner.hidden = alarms.length === 0;
  banner.textContent = alarms.length ? `Alarm: ${alarms.join("; ")}.` : "";
}

function drawJoin(s) {
  const m = s.metric;
  const tbody = $("join").tBodies[0];
  if (!m) {
    setRows(tbody, []);
    $("join-note").textContent = "Not reported yet (metric writes metric_status.json).";
    return;
  }
  setRows(tbody, [
    ["rows written", group(m.rows)],
    ["waiting for their prediction", group(m.waiting_truths)],
    ["waiting for their true value", group(m.waiting_predictions)],
    ["orphans (partner never came)", group(m.orphans)],
    ["duplicates dropped", group(m.duplicates)],
    ["dead-lettered messages", m.dead_lettered > 0 ? { text: group(m.dead_lettered), cls: "alarm" } : group(m.dead_lettered)],
  ]);
  const sharded = s.shards ? `The ${s.shards.status.filter(Boolean).length} of ${s.shards.shards} shards that reported, added up; the oldest updated` : "Updated";
  $("join-note").textContent = `${sharded} ${ago(m.updated_ms)}.`;
}

// ---- updates ---------------------------------------------------------------------------

function apply(update) {
  const s = update.summary;
  const rows = $("rows");
  rows.textContent = group(s.rows);
  rows.dataset.rows = String(s.rows);
  if (rows.dataset.firstRows === "") rows.dataset.firstRows = String(s.rows);
  rows.dataset.updates = String(Number(rows.dataset.updates) + 1);
  document.title = `nnmon: ${group(s.rows)} rows`;
  // One line per update in the browser console: what the end-to-end test reads.
  console.info(`nnmon update: rows=${rows.dataset.rows} updated_ms=${s.updated_ms} shown=${rows.textContent}`);
  // A sharded pipeline: how many shards sent rows, and each one's share.
  $("shards-box").hidden = !s.shards;
  if (s.shards) {
    $("shards").textContent = `${s.shards.reported} of ${s.shards.shards} reported`;
    $("shards").title = `rows per shard: ${s.shards.rows.map(group).join(", ")}`;
  }
  $("window-size").textContent = `${group(s.window_size)} rows`;
  $("updated").textContent = clock(s.updated_ms);
  $("updated").dataset.updatedMs = String(s.updated_ms);
  $("trend-sub").textContent = `last ${group(s.window_size)} rows, one point per refresh`;
  $("pairs-sub").textContent = `last ${group(update.pairs.length)} rows`;
  drawStats(s);
  drawHistogram(s.histogram);
  drawTrend(update.history);
  drawPairs(update.pairs);
  drawLatency(update.history, s);
  drawDrift(s);
  drawJoin(s);
}

// The server inlines the latest update in the page, so the first paint already has data.
const initial = document.getElementById("initial");
if (initial) apply(JSON.parse(initial.textContent));

const events = new EventSource("/events");
events.addEventListener("update", (e) => {
  $("connection").textContent = "live";
  $("connection").className = "live";
  apply(JSON.parse(e.data));
});
events.onerror = () => {
  $("connection").textContent = "reconnecting…";
  $("connection").className = "lost";
};
