/**
 * The status page provider of fusion-server and fusion-client: sessions and paths tables,
 * each path's share of the traffic, its delivery rate and RTT.
 * @module
 */

import { fusionMetrics } from "../fusion/metrics.ts";
import type { SessionStatus } from "../fusion/session.ts";
import type { StatusProvider, StatusSeries } from "./hub.ts";

/**
 * A provider over the live fusion sessions. Paths are charted by id and label (where they
 * go), so a path keeps its line across sessions.
 */
export function fusionStatusProvider(sessions: () => SessionStatus[]): StatusProvider {
  return async () => {
    const list = sessions();
    // Ended sessions by how they ended: done beside each failure (no-paths, peer-reset ...).
    const ends = (await fusionMetrics().sessionEnds.samples())
      .map(([labels, n]) => [String(labels.end), n] as [string, number])
      .sort((a, b) => (a[0] === "done" ? -1 : b[0] === "done" ? 1 : b[1] - a[1]));
    const byLabel = new Map<string, { bytes: number; rate: number; rtt: number }>();
    const pathRows: (string | number)[][] = [];
    for (const s of list) {
      for (const p of s.paths) {
        const key = `path ${p.id} ${p.label}`;
        const e = byLabel.get(key) ?? { bytes: 0, rate: 0, rtt: 0 };
        e.bytes += p.bytesIn + p.bytesOut;
        e.rate += p.rateBytesPerSec;
        e.rtt = Math.max(e.rtt, p.rttMs);
        byLabel.set(key, e);
        pathRows.push([
          s.id,
          p.id,
          p.label,
          Math.round(p.rateBytesPerSec),
          Math.round(p.rttMs * 10) / 10,
          p.inflightBytes,
          p.capBytes,
          p.bytesIn,
          p.bytesOut,
          p.resentFrames,
        ]);
      }
    }
    const series: StatusSeries[] = [
      { chart: "sessions", name: "open", value: list.length },
      {
        chart: "resent frames/s",
        name: "resent",
        value: list.reduce((n, s) => n + s.framesResent, 0),
        kind: "rate",
      },
    ];
    for (const [end, n] of ends) {
      series.push({ chart: "ended sessions/s", name: end, value: n, kind: "rate" });
    }
    for (const [label, e] of byLabel) {
      series.push({ chart: "path share of traffic %", name: label, value: e.bytes, kind: "share" });
      series.push({ chart: "path bytes/s", name: label, value: e.bytes, kind: "rate" });
      series.push({ chart: "path RTT ms", name: label, value: e.rtt });
    }
    return {
      tables: [{
        title: "outcomes",
        columns: ["end", "sessions"],
        rows: ends,
      }, {
        title: "sessions",
        columns: ["id", "state", "bytes out", "bytes in", "resent frames", "reorder peak", "paths"],
        rows: list.map((s) => [
          s.id,
          s.state,
          s.bytesOut,
          s.bytesIn,
          s.framesResent,
          s.reorderPeakBytes,
          s.paths.length,
        ]),
      }, {
        title: "paths",
        columns: [
          "session",
          "path",
          "label",
          "rate B/s",
          "RTT ms",
          "in flight",
          "cap",
          "wire in",
          "wire out",
          "resent",
        ],
        rows: pathRows,
      }],
      series,
    };
  };
}
