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
  };
}

/** The status page's listeners and connections tables and its charts. */
export function seaproxStatusProvider(src: SeaproxStatusSource): StatusProvider {
  return () => {
    const { proxy, stats } = src;
    const conns = proxy.table.list().map((c) => c.snapshot());
    const up = stats.closedBytes.up + conns.reduce((s, c) => s + c.bytesUp, 0);
    const down = stats.closedBytes.down + conns.reduce((s, c) => s + c.bytesDown, 0);
    return {
      tables: [{
        title: "listeners",
        columns: ["url", "addr", "active", "total", "rejected"],
        rows: [
          ...proxy.servers.map((s, i) => [
            proxy.specs[i].display,
            formatAddr(s.addr),
            s.server.stats.active,
            s.server.stats.total,
            s.server.stats.rejected,
          ]),
          ...src.links.map((s) => [
            "link://",
            formatAddr(s.addr),
            s.stats.active,
            s.stats.total,
            s.stats.rejected,
          ]),
        ],
      }, {
        title: "connections",
        columns: ["id", "scheme", "from → to", "up bytes", "down bytes", "age s"],
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
        { chart: "bytes/s", name: "in (client→dest)", value: up, kind: "rate" },
        { chart: "bytes/s", name: "out (dest→client)", value: down, kind: "rate" },
      ],
    };
  };
}
