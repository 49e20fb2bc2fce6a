/**
 * The status page provider of tunnel-server: hosts with their client and traffic, connected
 * clients with RTT.
 * @module
 */

import type { ClientInfo } from "../tunnel/client_conn.ts";
import type { HostStatus } from "../tunnel/stats.ts";
import type { StatusProvider, StatusSeries } from "./hub.ts";

/** A provider over `TunnelServer.status()` and `.clients()`. */
export function tunnelStatusProvider(
  hosts: () => Promise<HostStatus[]>,
  clients: () => ClientInfo[],
): StatusProvider {
  return async () => {
    const hs = await hosts();
    const cs = clients();
    const sum = (f: (h: HostStatus) => number) => hs.reduce((n, h) => n + f(h), 0);
    const series: StatusSeries[] = [
      { chart: "clients and streams", name: "clients", value: cs.length },
      { chart: "clients and streams", name: "open streams", value: sum((h) => h.openStreams) },
      { chart: "requests/s", name: "requests", value: sum((h) => h.requests), kind: "rate" },
      { chart: "requests/s", name: "errors (502/504)", value: sum((h) => h.errors), kind: "rate" },
      { chart: "bytes/s", name: "in (public→client)", value: sum((h) => h.bytesIn), kind: "rate" },
      {
        chart: "bytes/s",
        name: "out (client→public)",
        value: sum((h) => h.bytesOut),
        kind: "rate",
      },
    ];
    for (const c of cs) {
      if (c.rttMs !== undefined) {
        series.push({ chart: "client RTT ms", name: `${c.id} ${c.remote}`, value: c.rttMs });
      }
    }
    return {
      tables: [{
        title: "hosts",
        columns: ["host", "client", "connected", "requests", "errors", "streams", "in", "out"],
        rows: hs.map((h) => [
          h.host,
          h.client,
          h.connected,
          h.requests,
          h.errors,
          h.openStreams,
          h.bytesIn,
          h.bytesOut,
        ]),
      }, {
        title: "clients",
        columns: ["id", "fingerprint", "remote", "since", "hosts", "tcp ports", "RTT ms"],
        rows: cs.map((c) => [
          c.id,
          c.fingerprint,
          c.remote,
          new Date(c.since).toISOString(),
          c.hosts.join(" "),
          c.tcpPorts.join(" "),
          c.rttMs === undefined ? null : Math.round(c.rttMs * 10) / 10,
        ]),
      }],
      series,
    };
  };
}
