/**
 * The inspector's page: one self-contained HTML document (no external scripts or styles)
 * that polls `/api/requests`, lists the exchanges newest first, shows one in full when its
 * row is clicked, and replays one with its button.
 * @module
 */

/** How often the page asks for the list (ms). */
export const inspectorPollMs = 500;

/** The page served at `/`. */
export const inspectorPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunnel-client inspector</title>
<style>
body{font:14px system-ui,sans-serif;margin:1em;color:#222}
table{border-collapse:collapse;width:100%}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
tr.row{cursor:pointer}tr.row:hover{background:#f3f6fa}tr.sel{background:#e4ecf7}
.replay-mark{background:#fde68a;border-radius:3px;padding:0 4px;font-size:12px}
.s2{color:#15803d}.s3{color:#1d4ed8}.s4{color:#b45309}.s5{color:#b91c1c}
pre{background:#f6f6f6;padding:6px;white-space:pre-wrap;word-break:break-all;max-height:20em;overflow:auto}
#detail{margin-top:1em}.muted{color:#777}
</style></head><body>
<h1>Requests through the tunnel</h1>
<p class="muted" id="info">loading\u2026</p>
<table><thead><tr><th>#</th><th>time</th><th>method</th><th>path</th><th>status</th>
<th>duration</th><th>in</th><th>out</th><th></th></tr></thead><tbody id="rows"></tbody></table>
<div id="detail"></div>
<script>
"use strict";
let version = -1, selected = 0;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const size = (n) => n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
async function poll() {
  try {
    const r = await fetch("/api/requests", { cache: "no-store" });
    const d = await r.json();
    $("info").textContent = "the last " + d.maxRequests + " requests are kept, " + size(d.bodyBytes) + " of each body";
    if (d.version !== version) { version = d.version; render(d.requests); if (selected) show(selected); }
  } catch (e) { $("info").textContent = "cannot reach the inspector: " + e; }
  setTimeout(poll, ${inspectorPollMs});
}
function render(list) {
  $("rows").innerHTML = list.map((x) =>
    '<tr class="row' + (x.id === selected ? " sel" : "") + '" data-id="' + x.id + '">' +
    "<td>" + x.id + "</td><td>" + esc(x.startedAt.slice(11, 23)) + "</td><td>" + esc(x.method) + "</td>" +
    '<td class="path">' + esc(x.path) + (x.replayOf ? ' <span class="replay-mark">replay of #' + x.replayOf + "</span>" : "") + "</td>" +
    '<td class="status s' + String(x.status ?? "").charAt(0) + '">' + esc(x.status ?? x.state) + "</td>" +
    "<td>" + (x.durationMs === undefined ? "" : x.durationMs + " ms") + "</td>" +
    "<td>" + size(x.requestBytes) + "</td><td>" + size(x.responseBytes) + "</td>" +
    '<td><button class="replay" data-id="' + x.id + '">replay</button></td></tr>').join("");
}
function headers(h) { return esc((h ?? []).map(([k, v]) => k + ": " + v).join("\\n")); }
function body(b) {
  const what = b.kind === "empty" ? "no body" : b.kind === "compressed" ? "compressed (" + esc(b.encoding) + ")" : b.kind;
  const head = '<p class="muted">' + what + ", " + size(b.bytes) + (b.truncated ? ", first " + size(b.keptBytes) + " kept" : "") + "</p>";
  if (b.kind === "text") return head + '<pre class="body">' + esc(b.text) + "</pre>";
  if (b.kind === "empty") return head;
  return head + '<pre class="body">base64: ' + esc(b.base64) + "</pre>";
}
async function show(id) {
  const r = await fetch("/api/requests/" + id, { cache: "no-store" });
  if (!r.ok) { $("detail").innerHTML = ""; return; }
  const x = await r.json();
  $("detail").innerHTML = "<h2>#" + x.id + " " + esc(x.method) + " " + esc(x.path) + "</h2>" +
    (x.replayOf ? '<p><span class="replay-mark">replay of #' + x.replayOf + "</span></p>" : "") +
    '<p class="muted">to ' + esc(x.dest) + ", " + esc(x.state) + "</p>" +
    "<h3>Request</h3><pre>" + headers(x.requestHeaders) + "</pre>" + body(x.requestBody) +
    "<h3>Response " + esc(x.status ?? "") + " " + esc(x.reason ?? "") + "</h3><pre>" + headers(x.responseHeaders) + "</pre>" + body(x.responseBody);
}
$("rows").addEventListener("click", async (e) => {
  const t = e.target.closest("[data-id]");
  if (!t) return;
  const id = Number(t.dataset.id);
  if (e.target.classList.contains("replay")) {
    e.target.disabled = true;
    const r = await fetch("/api/requests/" + id + "/replay", { method: "POST", headers: { "x-warren-inspect": "replay" } });
    if (!r.ok) alert("replay failed: " + (await r.json()).message);
    return;
  }
  selected = id;
  for (const tr of document.querySelectorAll("tr.row")) tr.classList.toggle("sel", Number(tr.dataset.id) === id);
  show(id);
});
poll();
</script></body></html>
`;
