/**
 * The status page's HTML and script: tables and uPlot charts refreshed by polling the JSON
 * snapshot once a second. No CDN: uPlot's files are served by the service itself.
 * @module
 */

/** Polling period of the page. */
export const pagePollIntervalMs = 1000;

const style = `
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px}
#meta{color:#666;font-size:12px}#charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:#fff;border:1px solid #ddd;padding:6px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#eee}
td.num{text-align:right;font-variant-numeric:tabular-nums}.empty{color:#888}
#error{color:#b00}`;

// Runs in the browser; kept small and dependency-free apart from uPlot. Values are shown in
// human units by the chart's or column's name (see lib/status/hub.ts), legends show the
// latest values until the cursor picks another point, times are local.
const script = `
const colors = ["#1f77b4","#d62728","#2ca02c","#ff7f0e","#9467bd","#8c564b","#e377c2","#17becf"];
const charts = new Map();
function num(v, digits) { return (+v.toFixed(digits)).toLocaleString(); }
function si(v) {
  const a = Math.abs(v);
  for (const [d, s] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (a >= d) return num(v / d, 1) + s;
  return num(v, a < 10 ? 2 : 1);
}
function bytes(v) {
  const a = Math.abs(v);
  for (const [d, s] of [[2 ** 30, " GiB"], [2 ** 20, " MiB"], [2 ** 10, " KiB"]]) if (a >= d) return num(v / d, 1) + s;
  return num(v, 0) + " B";
}
function duration(ms) {
  const a = Math.abs(ms);
  if (a < 1000) return num(ms, a < 10 ? 2 : 0) + " ms";
  if (a < 60000) return num(ms / 1000, 1) + " s";
  if (a < 3600000) return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  return Math.floor(ms / 3600000) + " h " + Math.round((ms % 3600000) / 60000) + " min";
}
/** The formatter of a chart, by its name's unit. */
function chartFormat(name) {
  if (/bytes\\/s$/.test(name)) return (v) => bytes(v) + "/s";
  if (/bytes$/.test(name)) return bytes;
  if (/ ms$/.test(name)) return duration;
  if (/%$/.test(name)) return (v) => num(v, 0) + " %";
  if (/\\/s$/.test(name)) return (v) => si(v) + "/s";
  return si;
}
/** The formatter of a table column, by its name. */
function columnFormat(col) {
  if (/^(up|down|in|out)$|bytes/i.test(col)) return bytes;
  if (/(^| )ms$/.test(col)) return duration;
  if (/(^| )s$/.test(col)) return (v) => duration(v * 1000);
  return null;
}
const isoTime = /^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d/;
let polls = 0;
function cell(v, col) {
  const td = document.createElement("td");
  const f = columnFormat(col);
  if (typeof v === "number") { td.className = "num"; td.textContent = f ? f(v) : Number.isInteger(v) ? v.toLocaleString() : num(v, 2); }
  else if (typeof v === "string" && isoTime.test(v) && !isNaN(Date.parse(v))) { td.textContent = new Date(v).toLocaleString(); td.title = v; }
  else td.textContent = v === null || v === undefined ? "" : String(v);
  return td;
}
function renderTables(tables) {
  const root = document.getElementById("tables");
  root.replaceChildren();
  for (const t of tables) {
    const h = document.createElement("h2"); h.textContent = t.title + " (" + t.rows.length + ")";
    const table = document.createElement("table"); table.dataset.title = t.title;
    const head = document.createElement("tr");
    for (const c of t.columns) { const th = document.createElement("th"); th.textContent = c; head.append(th); }
    table.append(head);
    if (t.rows.length === 0) {
      const tr = document.createElement("tr"); const td = document.createElement("td");
      td.colSpan = t.columns.length; td.className = "empty"; td.textContent = "none"; tr.append(td); table.append(tr);
    }
    for (const r of t.rows) { const tr = document.createElement("tr"); r.forEach((v, i) => tr.append(cell(v, t.columns[i]))); table.append(tr); }
    root.append(h, table);
  }
}
/** Show the latest point in the legend while the cursor is not on the chart. */
function latestInLegend(u) {
  if (u.cursor.idx === null || u.cursor.idx === undefined) u.setLegend({ idx: u.data[0].length - 1 });
}
const clock = (u, vals) => vals.map((v) => new Date(v * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }));
function renderCharts(list) {
  const root = document.getElementById("charts");
  if (typeof uPlot === "undefined") { root.textContent = "charts unavailable (uPlot not served)"; return; }
  const live = new Set();
  for (const c of list) {
    live.add(c.chart);
    const data = [c.times, ...c.values];
    const key = c.names.join("\\u0000");
    let entry = charts.get(c.chart);
    if (entry && entry.key !== key) { entry.plot.destroy(); entry.box.remove(); entry = undefined; }
    if (!entry) {
      const box = document.createElement("div"); box.className = "chart"; box.dataset.chart = c.chart;
      root.append(box);
      const f = chartFormat(c.chart);
      const plot = new uPlot({
        title: c.chart, width: 460, height: 220,
        scales: { x: { time: true }, ...(c.chart.endsWith("%") ? { y: { range: [0, 100] } } : {}) },
        series: [{ value: (u, v) => v === null ? "" : new Date(v * 1000).toLocaleTimeString() },
          ...c.names.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 1.5, spanGaps: false, value: (u, v) => v === null ? "" : f(v) }))],
        axes: [{ space: 90, values: clock }, { size: 96, values: (u, vals) => vals.map(f) }],
        hooks: { setCursor: [latestInLegend] },
      }, data, box);
      entry = { plot, box, key };
      charts.set(c.chart, entry);
    } else entry.plot.setData(data);
    latestInLegend(entry.plot);
  }
  for (const [name, e] of charts) if (!live.has(name)) { e.plot.destroy(); e.box.remove(); charts.delete(name); }
}
async function poll() {
  try {
    const res = await fetch("DATA_URL", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const d = await res.json();
    polls++;
    document.title = d.service + " status";
    document.getElementById("service").textContent = d.service;
    document.getElementById("meta").textContent = "up " + duration(d.uptimeMs) + " · updated " +
      new Date(d.nowMs).toLocaleTimeString() + " · poll " + polls;
    document.getElementById("error").textContent = "";
    renderTables(d.tables);
    renderCharts(d.charts);
  } catch (err) {
    document.getElementById("error").textContent = "status unavailable: " + err.message;
  }
  setTimeout(poll, POLL_MS);
}
poll();
`;

/** The page, given where its assets and data live. */
export function statusPageHtml(
  service: string,
  urls: { uplotJs: string; uplotCss: string; data: string },
): string {
  const esc = service.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc} status</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${urls.uplotCss}"><style>${style}</style>
<script src="${urls.uplotJs}"></script></head>
<body><h1 id="service">${esc}</h1><div id="meta">loading\u2026</div><div id="error"></div>
<div id="charts"></div><div id="tables"></div>
<script>${
    script.replace("DATA_URL", urls.data).replace("POLL_MS", String(pagePollIntervalMs))
  }</script></body></html>`;
}
