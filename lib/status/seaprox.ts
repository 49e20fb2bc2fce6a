/**
 * seaprox on the status page and `/status`: listeners (proxy and link), live connections
 * with both sides, connection and byte-rate charts.
 * @module
 */

import { formatAddr, type Server } from "../net/serve.ts";
import type { Seaprox, SeaproxStats } from "../proxy/mod.ts";
import type { StatusProvider } from "./hub.ts";

/** What seaprox's status shows. */
export interface SeaproxStatusSource {
  proxy: Seaprox;
  /** `link://` listeners (they are not part of `proxy`). */
  links: readonly Server[];
  stats: SeaproxStats;
  maxConns: number;
  startedMs: number;
}

/** `/status` JSON: listeners and live connections (no secrets: users only). */
export function seaproxStatusJson(src: SeaproxStatusSource): unknown {
  const { proxy } = src;
  return {
    uptimeMs: Date.now() - src.startedMs,
    maxConns: src.maxConns,
    listeners: proxy.servers.map((s, i) => ({
      url: proxy.specs[i].display,
      addr: formatAddr(s.addr),
      ...s.server.stats,
    })),
    connections: proxy.table.list().map((c) => c.snapshot()),
    closedOk: src.stats.closedOk,
    failures: Object.fromEntries(src.stats.failures),
  };
}

/** The status page's listeners and connections tables and its charts. */
export function seaproxStatusProvider(src: SeaproxStatusSource): StatusProvider {
  return () => {
    const { proxy, stats } = src;
    const conns = proxy.table.list().map((c) => c.snapshot());
    const up = stats.closedBytes.up + conns.reduce((s, c) => s + c.bytesUp, 0);
    const down = stats.closedBytes.down + conns.reduce((s, c) => s + c.bytesDown, 0);
    const failures = [...stats.failures].sort((a, b) => b[1] - a[1]);
    const closed = stats.closedOk + failures.reduce((n, [, c]) => n + c, 0);
    return {
      tables: [{
        title: "listeners",
        columns: ["name", "url", "addr", "active", "total", "over limit"],
        rows: [
          ...proxy.servers.map((s, i) => [
            s.server.name ?? s.scheme,
            proxy.specs[i].display,
            formatAddr(s.addr),
            s.server.stats.active,
            s.server.stats.total,
            s.server.stats.rejected,
          ]),
          ...src.links.map((s) => [
            s.name === "quic-link" ? "quic" : "link",
            s.name === "quic-link" ? "quic://" : "link://",
            formatAddr(s.addr),
            s.stats.active,
            s.stats.total,
            s.stats.rejected,
          ]),
        ],
      }, {
        title: "outcomes",
        columns: ["outcome", "connections", "share %"],
        rows: ([["ok", stats.closedOk], ...failures] as [string, number][]).map(([outcome, n]) => [
          outcome,
          n,
          closed > 0 ? Math.round((1000 * n) / closed) / 10 : 0,
        ]),
      }, {
        title: "connections",
        columns: ["id", "scheme", "from \u2192 to", "up", "down", "age s"],
        rows: conns.slice(0, 200).map((c) => [
          c.id,
          c.scheme,
          c.description,
          c.bytesUp,
          c.bytesDown,
          Math.round(c.ageMs / 1000),
        ]),
      }],
      series: [
        { chart: "connections", name: "active", value: conns.length },
        { chart: "bytes/s", name: "up (client\u2192dest)", value: up, kind: "rate" },
        { chart: "bytes/s", name: "down (dest\u2192client)", value: down, kind: "rate" },
        { chart: "closed connections/s", name: "ok", value: stats.closedOk, kind: "rate" },
        ...failures.map(([reason, n]) => ({
          chart: "closed connections/s",
          name: reason,
          value: n,
          kind: "rate" as const,
        })),
      ],
    };
  };
}
