/**
 * Every service's --metrics endpoint exports the documented names (prom-client text):
 * per-listener connections and errors, bytes, and each service's own gauges, while traffic
 * flows (depot exits and RTT, tunnel hosts/clients/requests, fusion paths, mux sessions),
 * and its status page with the service's tables.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";
import { portOf, type ServiceProcess, startService } from "./_util.ts";
import { socksDial, startTarget } from "./_depot.ts";
import { rawGet, startApp } from "./_tunnel.ts";

async function scrape(svc: ServiceProcess): Promise<string> {
  const line = await svc.waitFor(/msg="metrics listening"/);
  const addr = /addr=(\S+)/.exec(line)![1];
  const res = await fetch(`http://${addr}/metrics`);
  assert(res.headers.get("content-type")?.startsWith("text/plain"), "prometheus text");
  return await res.text();
}

/** Each name declared (`# TYPE`); counters with labels and no events yet have no sample. */
/** Titles of the status page's tables (the JSON the page polls, beside /metrics). */
async function tableTitles(svc: ServiceProcess): Promise<string[]> {
  const line = await svc.waitFor(/msg="metrics listening"/);
  const addr = /addr=(\S+)/.exec(line)![1];
  const page = await fetch(`http://${addr}/`);
  assert((await page.text()).includes("/status/ui/data"), "the page polls its JSON");
  const data = await (await fetch(`http://${addr}/status/ui/data`)).json() as {
    tables: { title: string }[];
  };
  return data.tables.map((t) => t.title);
}

function expectNames(text: string, names: string[]): void {
  const missing = names.filter((n) => !new RegExp(`^# TYPE ${n} `, "m").test(text));
  assert(missing.length === 0, `missing metrics: ${missing.join(", ")}\n${text}`);
}

const listenerNames = [
  "warren_listener_connections_active",
  "warren_listener_connections_total",
  "warren_listener_errors_total",
];

Deno.test("metrics: seaprox and depot-server/local", async () => {
  const target = startTarget();
  const sp = await startService("seaprox.ts", [
    "--listen",
    `static://127.0.0.1:0?to=127.0.0.1:${target.port}`,
    "--metrics",
    "127.0.0.1:0",
  ]);
  const env = { DEPOT_TOKEN: "metrics-token" };
  const server = await startService("depot-server.ts", [
    ...["--control", ":0", "--socks", ":0", "--tunnel", ":0", "--metrics", "127.0.0.1:0"],
    ...["--heartbeat", "100ms"],
  ], { readyCount: 3, env });
  let local: ServiceProcess | undefined;
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: portOf(sp.addrs.get("static")!) });
    await writeAll(c, new TextEncoder().encode("Ehi"));
    await c.read(new Uint8Array(2));
    closeQuietly(c);
    expectNames(await scrape(sp), [
      ...listenerNames,
      "seaprox_connections_total",
      "seaprox_connections_active",
      "seaprox_bytes_in_total",
      "seaprox_bytes_out_total",
      "seaprox_errors_total",
    ]);

    local = await startService("depot-local.ts", [
      "--server",
      server.addrs.get("control")!,
      "--metrics",
      "127.0.0.1:0",
    ], { readyCount: 0, ready: /msg="connected"/, env });
    const s = await socksDial(portOf(server.addrs.get("socks")!), {
      host: "127.0.0.1",
      port: target.port,
    });
    await writeAll(s, new TextEncoder().encode("Ehi"));
    await s.read(new Uint8Array(2));
    closeQuietly(s);
    // RTT needs a heartbeat answered: wait for it rather than for a fixed time.
    let text = "";
    for (let i = 0; i < 100 && !/^depot_exit_rtt_seconds\{/m.test(text); i++) {
      text = await scrape(server);
      await new Promise((r) => setTimeout(r, 100));
    }
    expectNames(text, [
      ...listenerNames,
      "depot_requests_total",
      "depot_bytes_total",
      "depot_active_connections",
      "depot_exits_connected",
      "depot_exit_rtt_seconds",
    ]);
    expectNames(await scrape(local), ["depot_requests_total", "depot_bytes_total"]);
    assertEquals(await tableTitles(sp), ["listeners", "connections"]);
    assertEquals(await tableTitles(server), ["exits", "totals", "recent failures", "listeners"]);
    assert((await tableTitles(local)).includes("summary"));
  } finally {
    await local?.stop();
    await server.stop();
    await sp.stop();
    await target.close();
  }
});

Deno.test("metrics: tunnel-server/client and fusion-server/client", async () => {
  const app = startApp();
  const id = "metrics-identifier-1234";
  const ts = await startService("tunnel-server.ts", [
    ...["--listen", "127.0.0.1:0", "--host", "m.test=env:APP_ID", "--metrics", "127.0.0.1:0"],
  ], { env: { APP_ID: id } });
  const port = portOf(ts.addrs.get("http")!);
  let tc: ServiceProcess | undefined;
  const target = startTarget();
  const fenv = { FUSION_TOKEN: "metrics-fusion-token" };
  let fs: ServiceProcess | undefined;
  let fc: ServiceProcess | undefined;
  try {
    tc = await startService("tunnel-client.ts", [
      ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
      ...["--metrics", "127.0.0.1:0"],
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
    for (let i = 0; i < 100; i++) {
      if ((await rawGet(port, "m.test", "/hello?id=1")).body === "hello 1") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expectNames(await scrape(ts), [
      ...listenerNames,
      "warren_tunnel_requests_total",
      "warren_tunnel_bytes_total",
      "warren_tunnel_clients",
      "warren_tunnel_hosts",
      "warren_tunnel_open_streams",
      "warren_mux_sessions",
      "warren_mux_streams_open",
      "warren_mux_streams_total",
      "warren_mux_recv_window_bytes",
      "warren_mux_bytes_total",
    ]);
    expectNames(await scrape(tc), ["warren_tunnel_client_connected", "warren_mux_sessions"]);
    assertEquals(await tableTitles(ts), ["hosts", "clients"]);
    assertEquals(await tableTitles(tc), ["summary"]);

    fs = await startService("fusion-server.ts", [
      ...["--listen", "127.0.0.1:0", "--target", `127.0.0.1:${target.port}`],
      ...["--metrics", "127.0.0.1:0"],
    ], { env: fenv });
    fc = await startService("fusion-client.ts", [
      ...["--listen", "127.0.0.1:0", "--server", fs.addrs.get("listen")!, "--paths", "2"],
      ...["--metrics", "127.0.0.1:0"],
    ], { env: fenv });
    const c = await Deno.connect({ hostname: "127.0.0.1", port: portOf(fc.addrs.get("listen")!) });
    try {
      await writeAll(c, new TextEncoder().encode("Ehi"));
      await c.read(new Uint8Array(2));
      // Scraped while the session is open: the live path gauges have samples.
      for (const svc of [fc, fs]) {
        const text = await scrape(svc);
        assert(/^warren_fusion_path_rtt_seconds\{path="1 /m.test(text), text);
        assert(/^warren_mux_sessions /m.test(await scrape(ts)), "mux gauge sampled");
        assert((await tableTitles(svc)).includes("paths"));
        expectNames(text, [
          ...listenerNames,
          "warren_fusion_sessions_active",
          "warren_fusion_paths_active",
          "warren_fusion_path_rate_bytes_per_second",
          "warren_fusion_path_rtt_seconds",
          "warren_fusion_path_inflight_bytes",
          "warren_fusion_live_reorder_peak_bytes",
          "warren_fusion_live_resent_frames",
          "warren_fusion_resent_frames_total",
        ]);
      }
    } finally {
      closeQuietly(c);
    }
  } finally {
    await fc?.stop();
    await fs?.stop();
    await tc?.stop();
    await ts.stop();
    await app.close();
    await target.close();
  }
});
