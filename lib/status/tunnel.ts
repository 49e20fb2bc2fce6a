/**
 * The status page provider of tunnel-server: hosts with their client (a group: its members
 * and how many are healthy) and traffic, connected clients with health, streams and RTT.
 * @module
 */

import type { ClientInfo } from "../tunnel/client_conn.ts";
import type { HostStatus, UnknownHost } from "../tunnel/stats.ts";
import type { ClusterInstanceInfo, PortStatus } from "../tunnel/cluster_view.ts";
import type { StatusProvider, StatusSeries } from "./hub.ts";

/** What the page shows of the hosts and clients: one instance's, or a cluster's. */
export interface TunnelStatusView {
  hosts: HostStatus[];
  clients: ClientInfo[];
  /** A cluster's live instances (its hosts and clients then name their holder). */
  instances?: ClusterInstanceInfo[];
  /**
   * The TCP and UDP ports: in a cluster the ports clients asked for name their holder, and one
   * this instance could not bind says why.
   */
  ports?: PortStatus[];
}

/**
 * A provider over the hosts and clients (`clusterView(server)`: the whole cluster when the
 * registry is shared) and, when given, the request counts
 * by host and outcome (`server.stats.outcomes()`): every outcome (proxied, 404, 502, 504 ...)
 * is charted and tabled beside the others; and the recent unknown hosts (the names behind
 * the 404s, `server.stats.recentUnknownHosts()`), so a typo'd DNS entry or a client that
 * never came shows by name.
 */
export function tunnelStatusProvider(
  view: () => Promise<TunnelStatusView>,
  outcomes?: () => [host: string, outcome: string, count: number][],
  unknownHosts?: () => UnknownHost[],
): StatusProvider {
  return async () => {
    const { hosts: hs, clients: cs, instances = [], ports = [] } = await view();
    const cluster = instances.length > 0;
    const sum = (f: (h: HostStatus) => number) => hs.reduce((n, h) => n + f(h), 0);
    const byOutcome = new Map<string, number>();
    for (const [, o, n] of outcomes?.() ?? []) byOutcome.set(o, (byOutcome.get(o) ?? 0) + n);
    const series: StatusSeries[] = [
      { chart: "clients and streams", name: "clients", value: cs.length },
      { chart: "clients and streams", name: "open streams", value: sum((h) => h.openStreams) },
      ...(outcomes
        ? [...byOutcome].map(([o, n]): StatusSeries => ({
          chart: "requests/s",
          name: o,
          value: n,
          kind: "rate",
        }))
        : [
          { chart: "requests/s", name: "requests", value: sum((h) => h.requests), kind: "rate" },
          { chart: "requests/s", name: "errors", value: sum((h) => h.errors), kind: "rate" },
        ] as StatusSeries[]),
      {
        chart: "bytes/s",
        name: "in (public\u2192client)",
        value: sum((h) => h.bytesIn),
        kind: "rate",
      },
      {
        chart: "bytes/s",
        name: "out (client\u2192public)",
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
      tables: [
        ...(cluster
          ? [{
            title: "instances",
            columns: ["instance", "advertise", "since", "clients", "this one"],
            rows: instances.map((i) => [
              i.name,
              i.advertise ?? null,
              new Date(i.since).toISOString(),
              i.clients,
              i.self,
            ]),
          }]
          : []),
        {
          title: "hosts",
          columns: [
            "host",
            "client",
            "connected",
            ...(cluster ? ["instance"] : []),
            "members",
            "requests",
            "errors",
            "streams",
            "in",
            "out",
          ],
          rows: hs.map((h) => [
            h.host,
            h.client,
            h.connected,
            ...(cluster ? [h.instance ?? null] : []),
            // A group: its clients, and how many of them are in rotation.
            h.members > 1 || h.healthy < h.members
              ? `${h.healthy}/${h.members} healthy`
              : h.members,
            h.requests,
            h.errors,
            h.openStreams,
            h.bytesIn,
            h.bytesOut,
          ]),
        },
        ...(ports.length > 0
          ? [{
            title: "ports",
            columns: [
              "proto",
              "port",
              "client",
              "source",
              ...(cluster ? ["instance"] : []),
              "bound here",
              "addr or error",
            ],
            rows: ports.map((p) => [
              p.proto,
              p.publicPort,
              p.client,
              p.source,
              ...(cluster ? [p.instance ?? null] : []),
              p.open,
              p.addr ?? p.error ?? null,
            ]),
          }]
          : []),
        ...(outcomes
          ? [{
            title: "outcomes",
            columns: ["outcome", "requests"],
            rows: [...byOutcome].sort((a, b) => b[1] - a[1]),
          }]
          : []),
        ...(unknownHosts
          ? [{
            title: "unknown hosts",
            columns: ["host", "404s", "last"],
            rows: unknownHosts().map((u) => [
              u.host || "(malformed)",
              u.requests,
              new Date(u.lastMs).toISOString(),
            ]),
          }]
          : []),
        {
          title: "clients",
          columns: [
            "id",
            "fingerprint",
            ...(cluster ? ["instance"] : []),
            "remote",
            "since",
            "hosts",
            "tcp ports",
            "udp ports",
            "health",
            "streams",
            "open",
            "RTT ms",
          ],
          rows: cs.map((c) => [
            c.id,
            c.fingerprint,
            ...(cluster ? [c.instance ?? null] : []),
            c.remote,
            new Date(c.since).toISOString(),
            c.hosts.join(" "),
            c.tcpPorts.join(" "),
            c.udpPorts.join(" "),
            c.healthy ? "healthy" : "out of rotation",
            c.streams,
            c.openStreams,
            c.rttMs === undefined ? null : Math.round(c.rttMs * 10) / 10,
          ]),
        },
      ],
      series,
    };
  };
}
