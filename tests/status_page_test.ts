/**
 * The live status page in a real browser: seaprox relays a steady trickle while headless
 * chromium (playwright-core) loads the page from --metrics; the numbers change without a
 * reload, the charts draw, and no console error appears. A screenshot is saved. With a
 * failure injected, seaprox's, depot-server's, depot-local's and tunnel-client's pages show it
 * by reason beside the successes
 * (compared with what /status says), bytes and times in human units, current values in the
 * legends without hovering, listeners by name; depot's page sits behind --status-auth.
 */

import { assert, assertEquals } from "./_assert.ts";
import { portOf, type ServiceProcess, startService, until, within } from "./_util.ts";
import { rawGet, startApp } from "./_tunnel.ts";
import { type Page, sink, trickle, withBrowser } from "./_status.ts";
import { socksDial, startDepotLocalService, startDepotServerService } from "./_depot.ts";
import { closeQuietly } from "../lib/net/mod.ts";

Deno.test({
  name: "status page: tables and charts update live in chromium while seaprox relays",
  async fn() {
    const target = sink();
    const svc = await startService("seaprox.ts", [
      "--listen",
      `static://127.0.0.1:0?to=127.0.0.1:${target.port}`,
      "--metrics",
      "127.0.0.1:0",
    ]);
    const stopTraffic = new AbortController();
    const traffic: Promise<void>[] = [];
    const dir = await Deno.makeTempDir({ prefix: "warren-status-page-" });
    try {
      const metricsLine = await svc.waitFor(/msg="metrics listening"/);
      const base = `http://${/addr=(\S+)/.exec(metricsLine)![1]}`;
      const port = Number(svc.addrs.get("static")!.split(":").pop());
      for (let i = 0; i < 2; i++) traffic.push(trickle(port, 100, stopTraffic.signal));

      await withBrowser(async (browser) => {
        const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
        const errors: string[] = [];
        page.on("console", (m) => {
          if (m.type() === "error") errors.push(m.text());
        });
        page.on("pageerror", (e) => errors.push(e.message));
        const res = await page.goto(`${base}/`);
        assertEquals(res?.status(), 200);
        // Expressions as strings: they run in the page (no DOM types in Deno).
        await page.waitForFunction(
          `document.querySelectorAll("table[data-title=connections] td.num").length >= 2`,
        );
        const bytesOf = () =>
          page.$$eval(
            "table[data-title=connections] tr",
            (rows) => rows.slice(1).map((r) => r.children[3]?.textContent ?? "").join("|"),
          );
        const before = await bytesOf();
        // Three more polls later the per-connection byte counts have moved.
        const pollNow = async () =>
          Number(/poll (\d+)/.exec(await page.textContent("#meta") ?? "")?.[1] ?? 0);
        const target = (await pollNow()) + 3;
        await page.waitForFunction(
          `Number((/poll (\\d+)/.exec(document.getElementById("meta").textContent) ?? [0, 0])[1]) >= ${target}`,
        );
        const after = await bytesOf();
        assert(before !== after, `byte counts did not change: ${before} → ${after}`);
        // The charts drawn (uPlot served by the service itself): connections, bytes/s and
        // closed connections/s.
        assertEquals(await page.locator("#charts .chart canvas").count(), 3);
        const title = await page.title();
        assertEquals(title, "seaprox status");
        await page.screenshot({ path: `${dir}/status.png`, fullPage: true });
        console.log(`screenshot: ${dir}/status.png`);
        assertEquals(errors, []);
        await page.close();
      });
      const shot = await Deno.stat(`${dir}/status.png`);
      assert(shot.size > 10_000, `screenshot is ${shot.size} bytes`);
    } finally {
      stopTraffic.abort();
      await Promise.allSettled(traffic);
      await svc.stop();
      await target.close();
      if (!Deno.env.get("WARREN_KEEP_SCREENSHOT")) await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "status page: fusion-client shows its paths and each path's share of the traffic",
  async fn() {
    const target = sink();
    const env = { FUSION_TOKEN: "status-page-token" };
    const server = await startService("fusion-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${target.port}`,
    ], { env });
    const stopTraffic = new AbortController();
    let traffic: Promise<void> | undefined;
    const dir = await Deno.makeTempDir({ prefix: "warren-status-fusion-" });
    try {
      const client = await startService("fusion-client.ts", [
        "--listen",
        "127.0.0.1:0",
        "--server",
        server.addrs.get("listen")!,
        "--paths",
        "2",
        "--metrics",
        "127.0.0.1:0",
      ], { env });
      try {
        const metricsLine = await client.waitFor(/msg="metrics listening"/);
        const base = `http://${/addr=(\S+)/.exec(metricsLine)![1]}`;
        traffic = trickle(portOf(client.addrs.get("listen")!), 50, stopTraffic.signal);
        await withBrowser(async (browser) => {
          const page = await browser.newPage({ viewport: { width: 1000, height: 1100 } });
          const errors: string[] = [];
          page.on("console", (m) => {
            if (m.type() === "error") errors.push(m.text());
          });
          page.on("pageerror", (e) => errors.push(e.message));
          await page.goto(`${base}/status/ui`);
          await page.waitForFunction(
            `document.querySelectorAll("table[data-title=paths] tr").length >= 3`,
          );
          await page.waitForFunction(
            `document.querySelector('.chart[data-chart="path share of traffic %"] canvas') !== null`,
          );
          // One line per path in the share chart (the legend lists time + each series).
          await page.waitForFunction(
            `document.querySelectorAll('.chart[data-chart="path share of traffic %"] .u-series').length >= 3`,
          );
          // Let the share lines get a few points, then keep a picture of them.
          await new Promise((r) => setTimeout(r, 3000));
          await page.screenshot({ path: `${dir}/fusion.png`, fullPage: true });
          console.log(`screenshot: ${dir}/fusion.png`);
          // The session ends with its connection: the outcomes table says how, as /status does.
          stopTraffic.abort();
          await traffic?.catch(() => {});
          await client.waitFor(/msg="session closed"/);
          const recent = (await (await fetch(`${base}/status`)).json() as {
            recent: { end: string }[];
          }).recent.map((r) => r.end);
          assertEquals(recent, ["done"]);
          await page.waitForFunction(
            `[...document.querySelectorAll('table[data-title="outcomes"] tr')].some((tr) => tr.textContent === "done1")`,
          );
          assertEquals(errors, []);
          await page.close();
        });
      } finally {
        stopTraffic.abort();
        await traffic?.catch(() => {});
        await client.stop();
      }
    } finally {
      await server.stop();
      await target.close();
      if (!Deno.env.get("WARREN_KEEP_SCREENSHOT")) await Deno.remove(dir, { recursive: true });
    }
  },
});

/** seaprox's log lines of a refused dial. */
function refusals(lines: string[]): number {
  return lines.filter((l) => /msg="connection closed".* end=dial-failed failure=refused/.test(l))
    .length;
}

/** The page's rows of one table, as the browser shows them. */
function tableText(page: Page, title: string): Promise<string[][]> {
  return page.$$eval(
    `table[data-title="${title}"] tr`,
    (rows) => rows.slice(1).map((r) => [...r.children].map((c) => c.textContent ?? "")),
  );
}

Deno.test({
  name: "status page: seaprox shows failures by reason beside successes, in human units",
  async fn() {
    const target = sink();
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closedPort = probe.addr.port;
    probe.close(); // nothing listens there: every dial is refused
    const svc = await startService("seaprox.ts", [
      ...["--listen", `static://127.0.0.1:0?to=127.0.0.1:${target.port}`],
      ...["--listen", `static://127.0.0.1:0?to=127.0.0.1:${closedPort}`],
      ...["--metrics", "127.0.0.1:0"],
    ], { readyCount: 2 });
    const stopTraffic = new AbortController();
    const traffic: Promise<void>[] = [];
    const dir = await Deno.makeTempDir({ prefix: "warren-status-failures-" });
    try {
      const metricsLine = await svc.waitFor(/msg="metrics listening"/);
      const base = `http://${/addr=(\S+)/.exec(metricsLine)![1]}`;
      traffic.push(trickle(portOf(svc.addrs.get("static")!), 100, stopTraffic.signal));
      // The injected failure: three connections to the listener whose target refuses.
      for (let i = 0; i < 3; i++) {
        const c = await Deno.connect({
          hostname: "127.0.0.1",
          port: portOf(svc.addrs.get("static-2")!),
        });
        // closed by seaprox
        await within(c.read(new Uint8Array(8)).catch(() => null), "seaprox to close a refused one");
        closeQuietly(c);
      }
      await until("three refusal lines", () => refusals(svc.lines) >= 3);
      assertEquals(refusals(svc.lines), 3, svc.lines.join("\n"));
      const json = await (await fetch(`${base}/status`)).json() as {
        failures: Record<string, number>;
        closedOk: number;
      };
      assertEquals(json.failures, { "dial-failed:refused": 3 });
      const metrics = await (await fetch(`${base}/metrics`)).text();
      for (
        const line of [
          'warren_seaprox_connections_total{listener="static-2"} 3',
          'warren_seaprox_errors_total{reason="dial-failed:refused"} 3',
        ]
      ) assert(metrics.includes(line), `${line} in:\n${metrics}`);

      await withBrowser(async (browser) => {
        const page = await browser.newPage({ viewport: { width: 1000, height: 1400 } });
        const errors: string[] = [];
        page.on("pageerror", (e) => errors.push(e.message));
        await page.goto(`${base}/`);
        await page.waitForFunction(
          `document.querySelectorAll('table[data-title="outcomes"] tr').length >= 3`,
        );
        // The outcomes table says what /status says: the reason and its count beside "ok".
        const outcomes = await tableText(page, "outcomes");
        assertEquals(outcomes.map((r) => r.slice(0, 2)), [
          ["ok", String(json.closedOk)],
          ["dial-failed:refused", "3"],
        ]);
        // Listeners by name, bytes in human units, the failure reason in the chart's legend.
        const listeners = await tableText(page, "listeners");
        assertEquals(listeners.map((r) => r[0]).sort(), ["static", "static-2"]);
        await page.waitForFunction(
          `[...document.querySelectorAll('table[data-title="connections"] td')].some((td) => /^[\\d.,]+ (KiB|MiB)$/.test(td.textContent))`,
        );
        const legend = (chart: string) =>
          page.$$eval(
            `.chart[data-chart="${chart}"] .u-series`,
            (rows) =>
              rows.slice(1).map((r) => [
                r.querySelector(".u-label")?.textContent ?? "",
                r.querySelector(".u-value")?.textContent ?? "",
              ]),
          );
        // Current values without hovering (uPlot shows "--" for none), with units.
        await page.waitForFunction(
          `[...document.querySelectorAll('.chart[data-chart="bytes/s"] .u-series .u-value')].slice(1).every((v) => / (B|KiB|MiB)\\/s$/.test(v.textContent))`,
        );
        // A rate needs two samples: then every legend has its current value.
        await page.waitForFunction(
          `[...document.querySelectorAll('.chart[data-chart="closed connections/s"] .u-series .u-value')].slice(1).every((v) => /\\/s$/.test(v.textContent))`,
        );
        const closed = await legend("closed connections/s");
        assertEquals(closed.map(([label]) => label), ["ok", "dial-failed:refused"]);
        for (const [label, value] of [...closed, ...await legend("bytes/s")]) {
          assert(value !== "--" && value !== "", `${label} shows its value: ${value}`);
        }
        // The uptime and the axis in local time, not raw seconds.
        assert(/^up \d/.test(await page.textContent("#meta") ?? ""), "uptime");
        await page.screenshot({ path: `${dir}/failures.png`, fullPage: true });
        console.log(`screenshot: ${dir}/failures.png`);
        assertEquals(errors, []);
        await page.close();
      });
    } finally {
      stopTraffic.abort();
      await Promise.allSettled(traffic);
      await svc.stop();
      await target.close();
      if (!Deno.env.get("WARREN_KEEP_SCREENSHOT")) await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "status page: depot-server behind --status-auth shows failures in real columns",
  async fn() {
    const env = { DEPOT_TOKEN: "status-depot-token", WARREN_STATUS_AUTH: "ops:page-secret" };
    const svc = await startDepotServerService(["--metrics", "127.0.0.1:0"], { env });
    try {
      const metricsLine = await svc.waitFor(/msg="metrics listening"/);
      const base = `http://${/addr=(\S+)/.exec(metricsLine)![1]}`;
      const open = await within(fetch(`${base}/`), "the page without a password");
      assertEquals(open.status, 401, "the page needs the password");
      await open.body?.cancel();
      // The injected failure: a SOCKS request while no exit is connected.
      const refused = await within(
        socksDial(portOf(svc.addrs.get("socks")!), { host: "127.0.0.1", port: 9 })
          .then((c) => (closeQuietly(c), false), () => true),
        "the SOCKS answer with no exit connected",
      );
      assert(refused, "no exit: refused");
      await withBrowser(async (browser) => {
        const ctx = await browser.newContext({
          httpCredentials: { username: "ops", password: "page-secret" },
          viewport: { width: 1000, height: 1200 },
        });
        const page = await ctx.newPage();
        await page.goto(`${base}/`);
        await page.waitForFunction(
          `document.querySelectorAll('table[data-title="recent failures"] td').length >= 5`,
        );
        const head = await page.$$eval(
          'table[data-title="recent failures"] th',
          (ths) => ths.map((t) => t.textContent),
        );
        assertEquals(head, ["at", "exit", "dest", "reason", "message"]);
        const [row] = await tableText(page, "recent failures");
        assertEquals(row.slice(1, 4), ["default", "127.0.0.1:9", "no-exit"]);
        assert(!/T\d\d:\d\d/.test(row[0]), `a local time, not ISO: ${row[0]}`);
        assertEquals(await tableText(page, "outcomes"), [["ok", "0"], ["no-exit", "1"]]);
        const names = (await tableText(page, "listeners")).map((r) => r[0]).sort();
        assertEquals(names, ["control", "metrics", "socks", "tunnel"]);
        await ctx.close();
      });
    } finally {
      await svc.stop();
    }
  },
});

Deno.test({
  name: "status page: tunnel-server shows a 404 beside the proxied requests",
  async fn() {
    const app = startApp();
    const id = "status-page-identifier-1234";
    const ts = await startService("tunnel-server.ts", [
      ...["--listen", "127.0.0.1:0", "--host", "p.test=env:APP_ID", "--metrics", "127.0.0.1:0"],
    ], { env: { APP_ID: id } });
    let tc: ServiceProcess | undefined;
    try {
      const port = portOf(ts.addrs.get("http")!);
      tc = await startService("tunnel-client.ts", [
        ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
      ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
      for (let i = 0; i < 3; i++) {
        assertEquals((await rawGet(port, "p.test", `/hello?id=${i}`)).body, `hello ${i}`);
      }
      assertEquals((await rawGet(port, "nobody.test", "/")).status, 404); // the failure
      const metricsLine = await ts.waitFor(/msg="metrics listening"/);
      const base = `http://${/addr=(\S+)/.exec(metricsLine)![1]}`;
      const data = await (await fetch(`${base}/status/ui/data`)).json() as {
        tables: { title: string; rows: (string | number)[][] }[];
      };
      const want = data.tables.find((t) => t.title === "outcomes")!.rows
        .map((r) => [String(r[0]), String(r[1])]);
      assertEquals(want.find((r) => r[0] === "404"), ["404", "1"]);
      await withBrowser(async (browser) => {
        const page = await browser.newPage({ viewport: { width: 1000, height: 1000 } });
        await page.goto(`${base}/`);
        await page.waitForFunction(
          `document.querySelectorAll('table[data-title="outcomes"] tr').length >= 3`,
        );
        assertEquals(await tableText(page, "outcomes"), want);
        await page.waitForFunction(
          `[...document.querySelectorAll('.chart[data-chart="requests/s"] .u-series .u-label')].some((l) => l.textContent === "404")`,
        );
        await page.close();
      });
    } finally {
      await tc?.stop();
      await ts.stop();
      await app.close();
    }
  },
});

Deno.test({
  name: "status page: depot-local shows a refused destination by reason beside the successes",
  async fn() {
    const env = { DEPOT_TOKEN: "status-depot-local-token" };
    const server = await startDepotServerService([], { env });
    let local: ServiceProcess | undefined;
    const target = sink();
    try {
      local = await startDepotLocalService(server, ["--status", "127.0.0.1:0"], { env });
      const statusLine = await local.waitFor(/msg="listening" name=status/);
      const base = `http://${/addr=(\S+)/.exec(statusLine)![1]}`;
      const socks = portOf(server.addrs.get("socks")!);
      // One relayed connection, then the injected failure: a destination that refuses.
      const ok = await socksDial(socks, { host: "127.0.0.1", port: target.port });
      closeQuietly(ok);
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const closedPort = probe.addr.port;
      probe.close(); // nothing listens there: the exit's dial is refused
      const refused = await socksDial(socks, { host: "127.0.0.1", port: closedPort })
        .then((c) => (closeQuietly(c), false), () => true);
      assert(refused, "a refused destination fails the SOCKS request");
      type LocalStatus = {
        total: number;
        failures: number;
        failuresByReason: Record<string, number>;
        recentFailures: { dest: string; reason: string; message: string }[];
      };
      const read = async () => await (await fetch(`${base}/status`)).json() as LocalStatus;
      // The exit counts each request as it settles there, which may trail the SOCKS answer.
      let json = await read();
      await until("the exit's count of both requests", async () => {
        json = await read();
        return json.total + json.failures >= 2;
      });
      assertEquals(json.total, 1);
      assertEquals(json.failuresByReason, { refused: 1 });
      assertEquals(json.recentFailures.map((f) => [f.dest, f.reason]), [
        [`127.0.0.1:${closedPort}`, "refused"],
      ]);
      await withBrowser(async (browser) => {
        const page = await browser.newPage({ viewport: { width: 1000, height: 1200 } });
        await page.goto(`${base}/`);
        await page.waitForFunction(
          `document.querySelectorAll('table[data-title="recent failures"] td').length >= 4`,
        );
        const head = await page.$$eval(
          'table[data-title="recent failures"] th',
          (ths) => ths.map((t) => t.textContent),
        );
        assertEquals(head, ["at", "dest", "reason", "message"]);
        const [row] = await tableText(page, "recent failures");
        assertEquals(row.slice(1, 4), [
          `127.0.0.1:${closedPort}`,
          "refused",
          json.recentFailures[0].message,
        ]);
        assertEquals(await tableText(page, "outcomes"), [["ok", "1"], ["refused", "1"]]);
        await page.waitForFunction(
          `[...document.querySelectorAll('.chart[data-chart="requests/s"] .u-series .u-label')].some((l) => l.textContent === "refused")`,
        );
        await page.close();
      });
    } finally {
      await local?.stop();
      await server.stop();
      await target.close();
    }
  },
});

Deno.test({
  name: "status page: tunnel-client shows a down local app (a 502) by reason beside the streams",
  async fn() {
    const app = startApp();
    let appUp = true;
    const id = "status-page-client-1234";
    const ts = await startService("tunnel-server.ts", [
      ...["--listen", "127.0.0.1:0", "--host", "p.test=env:APP_ID", "--metrics", "127.0.0.1:0"],
      // The client's relayed count is a stream per public connection here (a kept stream would
      // carry the three requests as one).
      ...["--idle-streams", "0"],
    ], { env: { APP_ID: id } });
    let tc: ServiceProcess | undefined;
    try {
      const port = portOf(ts.addrs.get("http")!);
      tc = await startService("tunnel-client.ts", [
        ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
        ...["--metrics", "127.0.0.1:0"],
      ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
      for (let i = 0; i < 3; i++) {
        assertEquals((await rawGet(port, "p.test", `/hello?id=${i}`)).body, `hello ${i}`);
      }
      await app.close(); // the injected failure: the local app is down
      appUp = false;
      assertEquals((await rawGet(port, "p.test", "/")).status, 502);
      // The server counted the 502 (after answering it: wait for the count) …
      const serverLine = await ts.waitFor(/msg="metrics listening"/);
      const serverOutcomes = async () => {
        const data = await (await fetch(
          `http://${/addr=(\S+)/.exec(serverLine)![1]}/status/ui/data`,
        )).json() as { tables: { title: string; rows: (string | number)[][] }[] };
        return data.tables.find((t) => t.title === "outcomes")!.rows;
      };
      const has502 = (rows: (string | number)[][]) => rows.some((r) => r[0] === "502");
      let outcomes = await serverOutcomes();
      await until(
        "the server's 502 outcome",
        async () => has502(outcomes = await serverOutcomes()),
      );
      assert(outcomes.some((r) => r[0] === "502" && r[1] === 1), `${outcomes}`);
      // … and the client says why: its local dial was refused.
      const metricsLine = await tc.waitFor(/msg="metrics listening"/);
      const base = `http://${/addr=(\S+)/.exec(metricsLine)![1]}`;
      const json = await (await fetch(`${base}/status`)).json() as {
        relayed: number;
        failuresByReason: Record<string, number>;
        recentFailures: { dest: string; reason: string; message: string }[];
      };
      assertEquals(json.relayed, 3);
      assertEquals(json.failuresByReason, { refused: 1 });
      assertEquals(json.recentFailures.map((f) => [f.dest, f.reason]), [
        [`127.0.0.1:${app.port}`, "refused"],
      ]);
      await withBrowser(async (browser) => {
        const page = await browser.newPage({ viewport: { width: 1000, height: 1000 } });
        await page.goto(`${base}/`);
        await page.waitForFunction(
          `document.querySelectorAll('table[data-title="recent failures"] td').length >= 4`,
        );
        const head = await page.$$eval(
          'table[data-title="recent failures"] th',
          (ths) => ths.map((t) => t.textContent),
        );
        assertEquals(head, ["at", "dest", "reason", "message"]);
        const [row] = await tableText(page, "recent failures");
        assertEquals(row.slice(1, 4), [
          `127.0.0.1:${app.port}`,
          "refused",
          json.recentFailures[0].message,
        ]);
        assertEquals(await tableText(page, "outcomes"), [["ok", "3"], ["refused", "1"]]);
        await page.waitForFunction(
          `[...document.querySelectorAll('.chart[data-chart="streams/s"] .u-series .u-label')].some((l) => l.textContent === "refused")`,
        );
        await page.close();
      });
    } finally {
      await tc?.stop();
      await ts.stop();
      if (appUp) await app.close();
    }
  },
});
