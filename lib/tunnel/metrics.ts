/**
 * Prometheus metrics of the tunnel server, read at scrape time from the counters every live
 * {@linkcode TunnelServer} keeps (stats.ts): importing this module registers them in the
 * dependency-free lib/stats.ts, which lib/metrics.ts exports; nothing here loads prom-client.
 * @module
 */

import { collectedCounter, gauge } from "../stats.ts";
import { liveTunnelServers, type TunnelServer } from "./server.ts";

function sum<L extends string>(
  each: (s: TunnelServer) => [Partial<Record<L, string>>, number][],
): [Partial<Record<L, string>>, number][] {
  const totals = new Map<string, [Partial<Record<L, string>>, number]>();
  for (const s of liveTunnelServers) {
    for (const [labels, v] of each(s)) {
      const k = JSON.stringify(labels);
      const t = totals.get(k);
      if (t) t[1] += v;
      else totals.set(k, [labels, v]);
    }
  }
  return [...totals.values()];
}

collectedCounter(
  "warren_tunnel_requests_total",
  "Public requests by host and outcome",
  ["host", "outcome"],
  () => sum((s) => s.stats.outcomes().map(([host, outcome, n]) => [{ host, outcome }, n])),
);
collectedCounter(
  "warren_tunnel_unknown_host_requests_total",
  "Public requests answered 404 because no entry serves their Host",
  [],
  () => sum((s) => [[{}, s.stats.unknownHostRequests]]),
);
collectedCounter(
  "warren_tunnel_bytes_total",
  "Bytes relayed by host and direction",
  ["host", "direction"],
  () =>
    sum((s) =>
      s.allHostStats().flatMap(([host, st]) => [
        [{ host, direction: "in" }, st.bytesIn],
        [{ host, direction: "out" }, st.bytesOut],
      ])
    ),
);
gauge("warren_tunnel_clients", "Connected tunnel clients", [], function () {
  this.reset();
  if (liveTunnelServers.size === 0) return; // a tunnel-client has no clients to count
  let n = 0;
  for (const s of liveTunnelServers) n += s.clients().length;
  this.set(n);
});
gauge(
  "warren_tunnel_clients_unhealthy",
  "Connected tunnel clients out of rotation: their health check fails (or has not passed yet)",
  [],
  function () {
    this.reset();
    if (liveTunnelServers.size === 0) return;
    let n = 0;
    for (const s of liveTunnelServers) for (const c of s.clients()) if (!c.healthy) n++;
    this.set(n);
  },
);
gauge("warren_tunnel_open_streams", "Open tunnel streams by host", ["host"], function () {
  this.reset();
  for (const s of liveTunnelServers) {
    for (const [host, st] of s.allHostStats()) this.set({ host }, st.openStreams);
  }
});
gauge(
  "warren_tunnel_hosts",
  "Registered virtual hosts, by whether a ready client serves them",
  ["state"],
  async function () {
    this.reset();
    if (liveTunnelServers.size === 0) return;
    let connected = 0, waiting = 0;
    for (const s of liveTunnelServers) {
      for (const h of await s.status()) h.connected ? connected++ : waiting++;
    }
    this.set({ state: "connected" }, connected);
    this.set({ state: "waiting" }, waiting);
  },
);
collectedCounter(
  "warren_tunnel_client_events_total",
  "Client connects/disconnects",
  ["event"],
  () =>
    sum((s) => [
      [{ event: "connected" }, s.clientEvents.connected],
      [{ event: "disconnected" }, s.clientEvents.disconnected],
    ]),
);
