/**
 * lib/status StatusHub: gauges as sampled, rates from cumulative counters, shares as
 * percentages of their chart, bounded history, late and vanished series, failing providers.
 */

import { assert, assertEquals } from "./_assert.ts";
import { StatusHub, statusUiApp } from "../lib/status/mod.ts";

Deno.test("status hub: gauge, rate and share series; history bounded", async () => {
  const hub = new StatusHub({ service: "t", historySize: 3, rateWindowMs: 1000 });
  let bytes = 0;
  let a = 0, b = 0;
  hub.register(() => ({
    tables: [{ title: "x", columns: ["n"], rows: [[bytes]] }],
    series: [
      { chart: "g", name: "gauge", value: 7 },
      { chart: "r", name: "bytes", value: bytes, kind: "rate" },
      { chart: "s", name: "a", value: a, kind: "share" },
      { chart: "s", name: "b", value: b, kind: "share" },
    ],
  }));
  const t0 = 1_000_000;
  await hub.sample(t0);
  bytes = 2000;
  a = 300;
  b = 100;
  await hub.sample(t0 + 1000);
  bytes = 3000;
  a = 400;
  b = 400;
  await hub.sample(t0 + 2000);
  let d = await hub.data();
  const chart = (name: string) => d.charts.find((c) => c.chart === name)!;
  assertEquals(chart("g").values, [[7, 7, 7]]);
  assertEquals(chart("r").values, [[null, 2000, 1000]]);
  assertEquals(chart("s").names, ["a", "b"]);
  assertEquals(chart("s").values, [[null, 75, 25], [null, 25, 75]]);
  assertEquals(chart("g").times, [t0 / 1000, t0 / 1000 + 1, t0 / 1000 + 2]);
  assertEquals(d.tables[0].rows, [[3000]]);
  await hub.sample(t0 + 3000);
  d = await hub.data();
  assertEquals(chart("g").times.length, 3, "history keeps historySize samples");
  assertEquals(chart("r").values, [[2000, 1000, 0]]);
});

Deno.test("status hub: rates are smoothed over the window; a counter appearing mid-run starts at 0", async () => {
  const hub = new StatusHub({ service: "t", rateWindowMs: 4000 });
  let bytes = 0;
  let failures: number | undefined;
  hub.register(() => ({
    series: [
      { chart: "bytes/s", name: "down", value: bytes, kind: "rate" },
      ...(failures === undefined ? [] : [{
        chart: "closed/s",
        name: "refused",
        value: failures,
        kind: "rate" as const,
      }]),
    ],
  }));
  // 2 MB/s arriving in 4 MB bursts every other second (what raw deltas drew as 0, 4 MB/s …).
  const t0 = 5_000_000;
  for (let i = 0; i <= 12; i++) {
    if (i % 2 === 1) bytes += 4_000_000;
    if (i === 10) failures = 3; // first seen with three failures since the last sample
    await hub.sample(t0 + i * 1000);
  }
  const d = await hub.data();
  const down = d.charts.find((c) => c.chart === "bytes/s")!.values[0];
  for (const v of down.slice(5)) assert(v !== null && v >= 1.5e6 && v <= 2.5e6, `${down}`);
  assertEquals(d.charts.find((c) => c.chart === "closed/s")!.values[0].slice(-3), [3, 1.5, 1]);
});

Deno.test("status hub: late series padded, vanished ones dropped, provider errors shown", async () => {
  const hub = new StatusHub({ service: "t", historySize: 2 });
  let paths = ["p1"];
  hub.register(() => ({ series: paths.map((p) => ({ chart: "c", name: p, value: 1 })) }));
  hub.register(() => {
    throw new Error("boom");
  });
  await hub.sample(1000);
  paths = ["p1", "p2"];
  await hub.sample(2000);
  let d = await hub.data();
  assertEquals(d.charts[0].values, [[1, 1], [null, 1]]);
  assert(d.tables.some((t) => t.title === "status error" && String(t.rows[0][0]).includes("boom")));
  paths = [];
  await hub.sample(3000);
  await hub.sample(4000);
  d = await hub.data();
  assertEquals(d.charts, []);
});

Deno.test("status ui app: page, data and uPlot assets from node_modules", async () => {
  const hub = new StatusHub({ service: "svc <x>" });
  const app = statusUiApp(hub);
  const page = await app.request("/");
  assertEquals(page.status, 200);
  const html = await page.text();
  assert(html.includes("svc &#60;x&#62;"), "service name escaped");
  assert(!/https?:\/\//.test(html), "no external URL in the page");
  const js = await app.request("/status/ui/uplot.js");
  assertEquals(js.status, 200);
  assert((await js.text()).includes("uPlot"));
  const css = await app.request("/status/ui/uplot.css");
  assertEquals(css.status, 200);
  await css.body?.cancel();
  const data = await (await app.request("/status/ui/data")).json();
  assertEquals(data.service, "svc <x>");
});
