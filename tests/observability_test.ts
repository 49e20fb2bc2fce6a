/**
 * The metrics and status layers in-process: stats kept in the dependency-free lib/stats.ts
 * (before or after lib/metrics.ts is loaded) reach the Prometheus text with their labels and
 * collect hooks; `serveObservability` answers /metrics (with warren_build_info), /status,
 * /healthz and the page's data on one listener, and stops cleanly.
 */

import { assert, assertEquals } from "./_assert.ts";
import { collectedCounter, counter, gauge, histogram } from "../lib/stats.ts";
import { Logger, silentLogger } from "../lib/log.ts";
import meta from "../deno.json" with { type: "json" };

// Registered before lib/metrics.ts is loaded: the registry must still export it.
const early = counter("test_early_total", "counted before the registry existed", ["kind"]);
early.inc({ kind: "a" }, 3);

Deno.test("stats: counters and gauges reach the Prometheus text at scrape time", async () => {
  const { metricsText } = await import("../lib/metrics.ts");
  const late = counter("test_late_total", "counted after", ["side", "result"]);
  late.inc({ side: "server", result: "ok" });
  late.inc({ result: "ok", side: "server" }, 2); // label order does not matter
  late.inc({ side: "local", result: "refused" });
  // A bound series counts into the same series as inc(labels), in any label order.
  const bound = late.series({ result: "ok", side: "server" });
  bound.inc();
  bound.inc(4);
  let live = 7;
  gauge("test_live", "read at scrape", [], function () {
    this.set(live);
  });
  const g = gauge("test_gauge", "set and moved", ["host"]);
  g.set({ host: "a" }, 5);
  g.dec({ host: "a" }, 2);
  collectedCounter("test_collected_total", "from live state", ["x"], () => [[{ x: "1" }, 42]]);
  assertEquals(counter("test_late_total", "again", ["side", "result"]), late, "one per name");

  let text = await metricsText();
  for (
    const line of [
      'test_early_total{kind="a"} 3',
      'test_late_total{side="server",result="ok"} 8',
      'test_late_total{side="local",result="refused"} 1',
      "test_live 7",
      'test_gauge{host="a"} 3',
      'test_collected_total{x="1"} 42',
      "# TYPE test_late_total counter",
      "# TYPE test_live gauge",
    ]
  ) assert(text.includes(line), `${line} in:\n${text}`);
  live = 9;
  text = await metricsText();
  assert(text.includes("test_live 9"), "collect runs at each scrape");
  let threw = false;
  try {
    late.inc({ side: "x" }, -1);
  } catch (err) {
    threw = err instanceof RangeError;
  }
  assert(threw, "a counter refuses to go down");
  threw = false;
  try {
    bound.inc(-1);
  } catch (err) {
    threw = err instanceof RangeError;
  }
  assert(threw, "a bound counter series refuses to go down");
});

Deno.test("stats: histograms, families without series left out, deprecated names", async () => {
  const { metricsText } = await import("../lib/metrics.ts");
  const h = histogram("test_wait_seconds", "waits", ["side"], [0.1, 1]);
  h.observe({ side: "a" }, 0.05);
  h.series({ side: "a" }).observe(0.5); // the same series as observe({ side: "a" }, …)
  h.observe({ side: "a" }, 7);
  histogram("test_never_seconds", "never observed");
  gauge("test_absent", "a server gauge in a client", [], function () {
    this.reset(); // no live server: no series
  });
  counter("test_renamed_total", "new name", ["k"], undefined, { deprecatedName: "old_total" })
    .inc({ k: 'a"b\\' }, 2);
  const text = await metricsText();
  for (
    const line of [
      "# TYPE test_wait_seconds histogram",
      'test_wait_seconds_bucket{side="a",le="0.1"} 1',
      'test_wait_seconds_bucket{side="a",le="1"} 2',
      'test_wait_seconds_bucket{side="a",le="+Inf"} 3',
      'test_wait_seconds_sum{side="a"} 7.55',
      'test_wait_seconds_count{side="a"} 3',
      'test_renamed_total{k="a\\"b\\\\"} 2',
      'old_total{k="a\\"b\\\\"} 2',
      "# HELP old_total Deprecated, removed in the next release: use test_renamed_total. new name",
    ]
  ) assert(text.includes(line), `${line} in:\n${text}`);
  assert(!text.includes("test_never_seconds"), "a histogram without observations is left out");
  assert(!text.includes("test_absent"), "a gauge without series is left out");
});

Deno.test("serveObservability: /metrics, /status, /healthz and the page on one listener", async () => {
  const { serveObservability } = await import("../lib/status/mod.ts");
  const obs = serveObservability({ host: "127.0.0.1", port: 0 }, {
    service: "test-svc",
    log: silentLogger,
    status: () => ({ state: "connected", streams: 4 }),
  });
  try {
    const base = `http://127.0.0.1:${obs.addr.port}`;
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const build = `warren_build_info{version="${meta.version}",deno="${Deno.version.deno}"} 1`;
    assert(metrics.includes(build), `${build} in:\n${metrics}`);
    assert(
      metrics.includes(
        `warren_listener_connections_total{listener="metrics",addr="127.0.0.1:${obs.addr.port}"}`,
      ),
      "its own listener is counted like every serve() loop",
    );
    assertEquals(await (await fetch(`${base}/status`)).json(), { state: "connected", streams: 4 });
    assertEquals(await (await fetch(`${base}/healthz`)).text(), "ok\n");
    const data = await (await fetch(`${base}/status/ui/data`)).json() as {
      service: string;
      tables: { title: string; rows: unknown[][] }[];
    };
    assertEquals(data.service, "test-svc");
    assert(
      data.tables[0].rows.some((r) => r[0] === "state" && r[1] === "connected"),
      JSON.stringify(data.tables),
    );
    const missing = await fetch(`${base}/nope`);
    assertEquals(missing.status, 404);
    await missing.body?.cancel();
  } finally {
    await obs.shutdown();
  }
});

Deno.test("logs: logfmt and JSON lines, no placeholder for missing values", () => {
  const lines: string[] = [];
  const text = new Logger("info", { svc: "t" }, (l) => lines.push(l));
  const json = new Logger("info", { svc: "t" }, (l) => lines.push(l), "json");
  for (const log of [text, json]) {
    log.child({ conn: 3 }).info("connection closed", {
      remote: "127.0.0.1:5",
      up: 10,
      down: 20,
      end: "done",
      failure: undefined,
      error: null,
      msg: "not the message",
    });
  }
  assert(
    /^ts=\S+ level=info svc=t conn=3 msg="connection closed" remote=127\.0\.0\.1:5 up=10 down=20 end=done msg="not the message"$/
      .test(lines[0]),
    lines[0],
  );
  const o = JSON.parse(lines[1]);
  assertEquals({ ...o, ts: "" }, {
    ts: "",
    level: "info",
    svc: "t",
    conn: 3,
    msg: "connection closed",
    remote: "127.0.0.1:5",
    up: 10,
    down: 20,
    end: "done",
  });
});

Deno.test("logs: a tail (fields rendered once) ends each line as the same fields passed inline", () => {
  // The tunnel's access log renders a connection's own fields once and appends them to each
  // of its lines: the lines must be the ones passing them with the line's fields would give.
  for (const format of ["logfmt", "json"] as const) {
    const lines: string[] = [];
    const log = new Logger("info", { svc: "t" }, (l) => lines.push(l), format).child({ w: 1 });
    const own = { client: "c 1", cid: 7, remote: "127.0.0.1:5", gone: undefined, msg: "no" };
    const tail = log.tail(own);
    for (const i of [1, 2]) {
      log.info("access", { status: 200, rid: `4.${i}` }, tail);
      log.info("access", { status: 200, rid: `4.${i}`, ...own });
    }
    log.debug("below the level", {}, tail);
    assertEquals(lines.length, 4, lines.join("\n"));
    const noTs = lines.map((l) => l.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/, "T"));
    assertEquals([noTs[0], noTs[2]], [noTs[1], noTs[3]]);
    if (format === "logfmt") {
      assertEquals(
        noTs[2],
        'ts=T level=info svc=t w=1 msg="access" status=200 rid=4.2 client="c 1" cid=7 ' +
          "remote=127.0.0.1:5 msg=no",
      );
    } else {
      assertEquals(JSON.parse(noTs[2]), {
        ts: "T",
        level: "info",
        svc: "t",
        w: 1,
        msg: "access",
        status: 200,
        rid: "4.2",
        client: "c 1",
        cid: 7,
        remote: "127.0.0.1:5",
      });
    }
  }
});

Deno.test("logs: each kind of value as logfmt writes it (numbers bare, the rest quoted unless plain)", () => {
  const lines: string[] = [];
  const log = new Logger("info", { svc: "t" }, (l) => lines.push(l));
  const typed = Object.assign(new Error("short read"), { reason: "eof" });
  log.info("values", {
    n: -0,
    nan: NaN,
    big: 1e21,
    neg: -2.5,
    inf: -Infinity,
    bi: 2n ** 70n,
    t: true,
    s: "a b",
    q: 'say "hi"',
    path: "/p/a:b@c[1]+-_.",
    empty: "",
    err: new Error("boom"),
    typed,
  });
  assertEquals(
    lines[0].replace(/^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /, "ts=T "),
    'ts=T level=info svc=t msg="values" n=0 nan=NaN big=1e+21 neg=-2.5 inf=-Infinity ' +
      'bi=1180591620717411303424 t=true s="a b" q="say \\"hi\\"" path=/p/a:b@c[1]+-_. empty="" ' +
      'err=boom typed="eof: short read"',
  );
});

Deno.test("serveObservability: --status-auth protects the page, /status and /metrics", async () => {
  const { serveObservability } = await import("../lib/status/mod.ts");
  for (const auth of ["ops:pa:ss", "bearer:tok-123"]) {
    const obs = serveObservability({ host: "127.0.0.1", port: 0 }, {
      service: "test-svc",
      log: silentLogger,
      status: () => ({ ok: true }),
      auth,
    });
    try {
      const base = `http://127.0.0.1:${obs.addr.port}`;
      const good = auth.startsWith("bearer:") ? "Bearer tok-123" : `Basic ${btoa("ops:pa:ss")}`;
      for (const path of ["/", "/status", "/metrics", "/status/ui/data"]) {
        for (const bad of [undefined, "Basic " + btoa("ops:wrong"), "Bearer nope", "Basic !!"]) {
          const res = await fetch(base + path, bad ? { headers: { authorization: bad } } : {});
          assertEquals(res.status, 401, `${path} with ${bad}`);
          await res.body?.cancel();
        }
        const res = await fetch(base + path, { headers: { authorization: good } });
        assertEquals(res.status, 200, path);
        await res.body?.cancel();
      }
      assertEquals(await (await fetch(`${base}/healthz`)).text(), "ok\n", "health stays open");
    } finally {
      await obs.shutdown();
    }
  }
});
