/**
 * The live status page in a real browser: seaprox relays a steady trickle while headless
 * chromium (playwright-core) loads the page from --metrics; the numbers change without a
 * reload, the charts draw, and no console error appears. A screenshot is saved.
 */

import { assert, assertEquals } from "./_assert.ts";
import { portOf, startService } from "./_util.ts";
import { sink, trickle, withBrowser } from "./_status.ts";

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
        // Both charts drawn (uPlot served by the service itself), with the byte rate above 0.
        assertEquals(await page.locator("#charts .chart canvas").count(), 2);
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
