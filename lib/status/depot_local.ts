/**
 * The status page provider of depot-local (one exit): its control session, outcomes by
 * reason beside the successes, recent failures in real columns.
 * @module
 */

import type { DepotLocalStatus } from "../depot/local.ts";
import type { StatusProvider, StatusSeries } from "./hub.ts";

/** A provider over `DepotLocal.status()`. */
export function depotLocalStatusProvider(status: () => DepotLocalStatus): StatusProvider {
  return () => {
    const s = status();
    const reasons = Object.entries(s.failuresByReason).sort((a, b) => b[1] - a[1]);
    const ok = s.total; // relayed connections (the dial succeeded); failures count apart
    const series: StatusSeries[] = [
      { chart: "connections", name: "active", value: s.active },
      { chart: "bytes/s", name: "up (client\u2192target)", value: s.bytesUp, kind: "rate" },
      { chart: "bytes/s", name: "down (target\u2192client)", value: s.bytesDown, kind: "rate" },
      { chart: "requests/s", name: "ok", value: ok, kind: "rate" },
      ...reasons.map(([reason, n]): StatusSeries => ({
        chart: "requests/s",
        name: reason,
        value: n,
        kind: "rate",
      })),
    ];
    if (s.rttMs !== null) series.push({ chart: "server RTT ms", name: "rtt", value: s.rttMs });
    return {
      tables: [{
        title: "session",
        columns: ["server", "connected", "transport", "since", "RTT ms", "sessions", "last error"],
        rows: [[
          s.server,
          s.connected,
          s.transport,
          s.connectedSince,
          s.rttMs,
          s.sessions,
          s.lastError,
        ]],
      }, {
        title: "totals",
        columns: ["active", "total", "failures", "up", "down"],
        rows: [[s.active, s.total, s.failures, s.bytesUp, s.bytesDown]],
      }, {
        title: "outcomes",
        columns: ["outcome", "requests"],
        rows: [["ok", ok], ...reasons],
      }, {
        title: "recent failures",
        columns: ["at", "dest", "reason", "message"],
        rows: s.recentFailures.slice(-20).reverse().map((f) => [f.at, f.dest, f.reason, f.message]),
      }],
      series,
    };
  };
}
