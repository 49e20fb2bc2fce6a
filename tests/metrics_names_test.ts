/**
 * Every service's --metrics endpoint exports the documented names while traffic flows
 * (per-listener connections and errors by listener name, bytes, depot exits and RTT, tunnel
 * hosts/clients/requests, fusion paths, mux sessions, latency histograms, process figures),
 * passes `promtool check metrics` (Debian's prometheus package), exports nothing a service
 * does not have (no server gauges in a client, no mux series without mux sessions), and
 * its status page has the service's tables.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";
import { portOf, readWithin, type ServiceProcess, startService } from "./_util.ts";
import {
  socksDial,
  startDepotLocalService,
  startDepotServerService,
  startTarget,
} from "./_depot.ts";
import { rawGet, startApp } from "./_tunnel.ts";
import { dig, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { socks5Associate } from "./_socks5.ts";
import { encodeSocks5Udp } from "../lib/socks5/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";

/** The service's metrics text, after `promtool check metrics` found nothing to say. */
async function scrape(svc: ServiceProcess): Promise<string> {
  const line = await svc.waitFor(/msg="metrics listening"/);
  const addr = /addr=(\S+)/.exec(line)![1];
  const res = await fetch(`http://${addr}/metrics`);
  assert(res.headers.get("content-type")?.startsWith("text/plain"), "prometheus text");
  const text = await res.text();
  await promtool(text);
  return text;
}

/** `promtool check metrics` (lint included) must pass on `text`. */
async function promtool(text: string): Promise<void> {
  const p = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const out = await p.output();
  const dec = new TextDecoder();
  assert(
    out.success,
    `promtool check metrics: ${dec.decode(out.stdout)}${dec.decode(out.stderr)}\n${text}`,
  );
}

/** Names that must not be exported at all (a family with no series is left out). */
function expectAbsent(text: string, names: string[]): void {
  const there = names.filter((n) => new RegExp(`^# TYPE ${n} `, "m").test(text));
  assert(there.length === 0, `exported but not this service's: ${there.join(", ")}\n${text}`);
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

/** The rows of one table of the status page's data. */
async function tableRows(svc: ServiceProcess, title: string): Promise<unknown[][]> {
  const line = await svc.waitFor(/msg="metrics listening"/);
  const addr = /addr=(\S+)/.exec(line)![1];
  const data = await (await fetch(`http://${addr}/status/ui/data`)).json() as {
    tables: { title: string; rows: unknown[][] }[];
  };
  return data.tables.find((t) => t.title === title)?.rows ?? [];
}

function expectNames(text: string, names: string[]): void {
  const missing = names.filter((n) => !new RegExp(`^# TYPE ${n} `, "m").test(text));
  assert(missing.length === 0, `missing metrics: ${missing.join(", ")}\n${text}`);
}

const listenerNames = [
  "warren_listener_connections_active",
  "warren_listener_connections_total",
  "warren_listener_errors_total",
  "process_resident_memory_bytes",
  "process_cpu_seconds_total",
  "process_open_fds",
  "process_start_time_seconds",
  "warren_build_info",
];
const muxNames = ["warren_mux_sessions", "warren_mux_streams_total", "warren_mux_bytes_total"];

Deno.test("metrics: seaprox and depot-server/local", async () => {
  const target = startTarget();
  const sp = await startService("seaprox.ts", [
    "--listen",
    `static://127.0.0.1:0?to=127.0.0.1:${target.port}`,
    "--listen",
    "socks5://127.0.0.1:0",
    "--metrics",
    "127.0.0.1:0",
  ], { readyCount: 2 });
  const env = { DEPOT_TOKEN: "metrics-token" };
  const server = await startDepotServerService(
    ["--metrics", "127.0.0.1:0", "--heartbeat", "100ms"],
    { env },
  );
  let local: ServiceProcess | undefined;
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: portOf(sp.addrs.get("static")!) });
    await writeAll(c, new TextEncoder().encode("Ehi"));
    await readWithin(c, new Uint8Array(2), "the echo through seaprox");
    closeQuietly(c);
    // A refused connection: a failure by reason beside the successes.
    const bad = await Deno.connect({
      hostname: "127.0.0.1",
      port: portOf(sp.addrs.get("socks5")!),
    });
    await writeAll(bad, new Uint8Array([7, 1, 0, 80])); // no SOCKS version
    // The refusal or the close (a peer that does neither: the metric below is waited for).
    await readWithin(bad, new Uint8Array(16), "the refusal").catch(() => null);
    closeQuietly(bad);
    let spText = "";
    for (
      const deadline = Date.now() + 60_000;
      !/^warren_seaprox_errors_total\{/m.test(spText) && Date.now() < deadline;
    ) {
      spText = await scrape(sp);
      await new Promise((r) => setTimeout(r, 50));
    }
    expectNames(spText, [
      ...listenerNames,
      "warren_seaprox_connections_total",
      "warren_seaprox_connections_active",
      "warren_seaprox_bytes_total",
      "warren_seaprox_errors_total",
      "warren_seaprox_connect_seconds",
      // the first release's names, kept for one more
      "seaprox_connections_total",
      "seaprox_connections_active",
      "seaprox_bytes_in_total",
      "seaprox_bytes_out_total",
      "seaprox_errors_total",
    ]);
    assert(
      /^warren_listener_connections_total\{listener="static",addr="127\.0\.0\.1:\d+"\} 1$/m.test(
        spText,
      ),
      spText,
    );
    assert(/^warren_seaprox_connect_seconds_count\{listener="static"\} 1$/m.test(spText), spText);
    expectAbsent(spText, [...muxNames, "warren_tunnel_clients", "warren_depot_exits_connected"]);

    local = await startDepotLocalService(server, ["--metrics", "127.0.0.1:0"], { env });
    const s = await socksDial(portOf(server.addrs.get("socks")!), {
      host: "127.0.0.1",
      port: target.port,
    });
    await writeAll(s, new TextEncoder().encode("Ehi"));
    await readWithin(s, new Uint8Array(2), "the echo through depot");
    closeQuietly(s);
    // Bytes are counted when a relay ends: each side logs that line.
    await local.waitFor(/msg="connection closed"/);
    await server.waitFor(/msg="connection closed"/);
    // RTT needs a heartbeat answered: wait for it rather than for a fixed time.
    let text = "";
    for (
      const deadline = Date.now() + 60_000;
      !/^warren_depot_exit_rtt_seconds\{/m.test(text) && Date.now() < deadline;
    ) {
      text = await scrape(server);
      await new Promise((r) => setTimeout(r, 100));
    }
    expectNames(text, [
      ...listenerNames,
      "warren_depot_requests_total",
      "warren_depot_bytes_total",
      "warren_depot_connections_active",
      "warren_depot_exits_connected",
      "warren_depot_exit_rtt_seconds",
      "warren_depot_connect_seconds",
      "depot_requests_total",
      "depot_exits_connected",
    ]);
    assert(/^warren_listener_connections_active\{listener="socks",/m.test(text), text);
    const localText = await scrape(local);
    expectNames(localText, [
      ...listenerNames,
      "warren_depot_requests_total",
      "warren_depot_bytes_total",
      "warren_depot_connect_seconds",
    ]);
    expectAbsent(localText, ["warren_depot_exits_connected"]);
    assertEquals(await tableTitles(sp), ["listeners", "outcomes", "connections"]);
    assertEquals(await tableTitles(server), [
      "exits",
      "totals",
      "outcomes",
      "recent failures",
      "listeners",
    ]);
    const localTitles = await tableTitles(local);
    for (const t of ["session", "totals", "outcomes", "recent failures"]) {
      assert(localTitles.includes(t), `depot-local page lacks ${t}: ${localTitles}`);
    }
  } finally {
    await local?.stop();
    await server.stop();
    await sp.stop();
    await target.close();
  }
});

/** The UDP counters every UDP relay exports (lib/udp metrics.ts). */
const udpNames = [
  "warren_udp_datagrams_total",
  "warren_udp_bytes_total",
  "warren_udp_dropped_total",
  "warren_udp_flows_active",
];

/**
 * One DNS query through a SOCKS5 UDP ASSOCIATE at `socksPort` (answered), one fragment and one
 * datagram to `denied` (dropped); returns the control connection, held open until closed.
 */
async function udpThroughSocks(
  socksPort: number,
  dnsPort: number,
  denied: string,
): Promise<Deno.TcpConn> {
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const a = await socks5Associate(socksPort, client.addr.port);
  try {
    assertEquals(a.reply, 0);
    const answered = new Promise<void>((resolve) => client.onMessage = () => resolve());
    const dns = { host: "127.0.0.1", port: dnsPort };
    const frag = encodeSocks5Udp(dns, dnsQuery(2, "frag.example.test"));
    frag[2] = 1;
    await client.send(frag, a.relay);
    await client.send(encodeSocks5Udp({ host: denied, port: 53 }, new Uint8Array(4)), a.relay);
    await client.send(encodeSocks5Udp(dns, dnsQuery(1, "udp.example.test")), a.relay);
    await answered;
    return a.control;
  } catch (err) {
    closeQuietly(a.control);
    throw err;
  } finally {
    client.close();
  }
}

/** The value of one series (`name{labels}`) in a metrics text (undefined when absent). */
function valueOf(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("metrics: UDP counters of seaprox (udp://, SOCKS5 UDP ASSOCIATE) and depot-server/local", async () => {
  const dns = await startDnsmasq();
  const sp = await startService("seaprox.ts", [
    ...["--listen", `udp://127.0.0.1:0?to=127.0.0.1:${dns.port}`],
    ...["--listen", "socks5://127.0.0.1:0", "--deny", "10.0.0.0/8", "--metrics", "127.0.0.1:0"],
  ], { readyCount: 2 });
  const env = { DEPOT_TOKEN: "metrics-token" };
  const server = await startDepotServerService(["--metrics", "127.0.0.1:0"], { env });
  let local: ServiceProcess | undefined;
  const controls: Deno.TcpConn[] = [];
  try {
    local = await startDepotLocalService(
      server,
      ["--deny", "10.0.0.0/8", "--metrics", "127.0.0.1:0"],
      { env },
    );
    assertEquals(await dig(portOf(sp.addrs.get("udp")!), "fwd.example.test"), exampleTestAddress);
    controls.push(await udpThroughSocks(portOf(sp.addrs.get("socks5")!), dns.port, "10.0.0.1"));
    controls.push(await udpThroughSocks(portOf(server.addrs.get("socks")!), dns.port, "10.0.0.1"));
    // Scraped while the associations are open: their flows are held now.
    const spText = await scrape(sp);
    const serverText = await scrape(server);
    const localText = await scrape(local);
    for (const text of [spText, serverText, localText]) expectNames(text, udpNames);
    // seaprox's relays carry the listener's name, as its other series do; depot's none.
    const series = (relay: string, rest: string) => {
      const listener = { "udp-forward": "udp", "socks5-udp": "socks5" }[relay];
      return `{relay="${relay}",${listener ? `listener="${listener}",` : ""}${rest}}`;
    };
    const dg = (relay: string, direction: string) =>
      `warren_udp_datagrams_total${series(relay, `direction="${direction}"`)}`;
    const dropped = (relay: string, reason: string) =>
      `warren_udp_dropped_total${series(relay, `reason="${reason}"`)}`;
    // dig may have retried on a busy machine: at least one each way through the forward.
    assert((valueOf(spText, dg("udp-forward", "up")) ?? 0) >= 1, spText);
    assert((valueOf(spText, dg("udp-forward", "down")) ?? 0) >= 1, spText);
    assertEquals(valueOf(spText, `warren_udp_flows_active{relay="udp-forward",listener="udp"}`), 1);
    assertEquals(valueOf(spText, dg("socks5-udp", "up")), 1);
    assertEquals(valueOf(spText, dg("socks5-udp", "down")), 1);
    assertEquals(valueOf(spText, dropped("socks5-udp", "fragmented")), 1);
    assertEquals(valueOf(spText, dropped("socks5-udp", "not-allowed")), 1);
    assertEquals(
      valueOf(spText, `warren_udp_flows_active{relay="socks5-udp",listener="socks5"}`),
      1,
    );
    // No seaprox UDP series without its listener.
    assert(
      !/^warren_udp_\w+\{relay="(udp-forward|socks5-udp)",(?!listener=)/m.test(spText),
      spText,
    );
    // depot: the server passes on what it cannot judge; the exit's ACL drops at the local.
    assertEquals(valueOf(serverText, dg("depot-server", "up")), 2);
    assertEquals(valueOf(serverText, dg("depot-server", "down")), 1);
    assertEquals(valueOf(serverText, dropped("depot-server", "fragmented")), 1);
    assertEquals(valueOf(localText, dg("depot-local", "up")), 1);
    assertEquals(valueOf(localText, dg("depot-local", "down")), 1);
    assertEquals(valueOf(localText, dropped("depot-local", "not-allowed")), 1);
    assertEquals(valueOf(localText, `warren_udp_flows_active{relay="depot-local"}`), 1);
    assert(
      (valueOf(localText, `warren_udp_bytes_total${series("depot-local", 'direction="down"')}`) ??
        0) > 12,
      localText,
    );
  } finally {
    for (const c of controls) closeQuietly(c);
    await local?.stop();
    await server.stop();
    await sp.stop();
    await dns.stop();
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
      "warren_mux_buffer_bytes",
      "warren_mux_bytes_total",
      "warren_mux_rtt_seconds",
      "warren_tunnel_request_duration_seconds",
      "warren_tunnel_unknown_host_requests_total",
    ]);
    const tcText = await scrape(tc);
    expectNames(tcText, [
      ...listenerNames,
      "warren_tunnel_client_connected",
      "warren_tunnel_client_streams_total",
      "warren_mux_sessions",
    ]);
    expectAbsent(tcText, ["warren_tunnel_clients", "warren_tunnel_hosts"]);
    assertEquals(await tableTitles(ts), ["hosts", "outcomes", "unknown hosts", "clients"]);
    // A request for an unknown host: its 404 shows beside the proxied ones on the page, is
    // counted on its own, and its name is listed.
    assertEquals((await rawGet(port, "unknown.test", "/")).status, 404);
    assertEquals((await rawGet(port, "Unknown.test:8080", "/")).status, 404);
    assertEquals(
      (await tableRows(ts, "outcomes")).map((r) => r[0]).sort(),
      ["404", "proxied"],
    );
    assertEquals((await tableRows(ts, "unknown hosts")).map((r) => r.slice(0, 2)), [
      ["unknown.test", 2],
    ]);
    assert(
      /^warren_tunnel_unknown_host_requests_total 2$/m.test(await scrape(ts)),
      "unknown-host 404s counted",
    );
    assertEquals(await tableTitles(tc), ["session", "outcomes", "recent failures"]);
    // The client's page names its server, the public URL it serves and its local target.
    const [session] = await tableRows(tc, "session");
    assertEquals(session.slice(0, 4), [
      "connected",
      `http://127.0.0.1:${port}`,
      `http://m.test:${port}`,
      `127.0.0.1:${app.port}`,
    ]);

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
      await readWithin(c, new Uint8Array(2), "the echo through fusion");
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
          "warren_fusion_rtt_seconds",
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
