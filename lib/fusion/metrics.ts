/**
 * Prometheus metrics of fusion sessions and paths (kept in lib/stats.ts, served by `--metrics`).
 * @module
 */

import { type Counter, counter, type Gauge, gauge, type Histogram, histogram } from "../stats.ts";
import type { PathStatus, SessionStatus } from "./session.ts";

/** The fusion metric handles. */
export interface FusionMetrics {
  /** Sessions open now. */
  sessionsActive: Gauge<string>;
  /** Paths joined now. */
  pathsActive: Gauge<string>;
  /** Ended sessions by end (done, no-paths, peer-reset, ...). */
  sessionEnds: Counter<"end">;
  /** Ended paths by why (eof, error, silent, ...). */
  pathEnds: Counter<"end">;
  /** Application bytes of ended sessions, by direction. */
  bytes: Counter<"direction">;
  /** Frames sent again. */
  resentFrames: Counter<string>;
  /** Wire bytes sent again. */
  resentBytes: Counter<string>;
  /** Reorder buffer peak of the last ended session. */
  reorderPeak: Gauge<string>;
  /** Heartbeat round trips, every path of every session. */
  rtt: Histogram<string>;
}

let metrics: FusionMetrics | undefined;

/** The fusion metrics, registered in the shared registry on first use. */
export function fusionMetrics(): FusionMetrics {
  metrics ??= {
    sessionsActive: gauge("warren_fusion_sessions_active", "Fusion sessions open now"),
    pathsActive: gauge("warren_fusion_paths_active", "Fusion paths joined now"),
    sessionEnds: counter("warren_fusion_sessions_total", "Fusion sessions ended, by end", ["end"]),
    pathEnds: counter("warren_fusion_paths_total", "Fusion paths ended, by why", ["end"]),
    bytes: counter(
      "warren_fusion_bytes_total",
      "Application bytes through ended fusion sessions (out = sent, in = received)",
      ["direction"],
    ),
    resentFrames: counter("warren_fusion_resent_frames_total", "Frames sent again"),
    resentBytes: counter("warren_fusion_resent_bytes_total", "Wire bytes sent again"),
    reorderPeak: gauge(
      "warren_fusion_reorder_peak_bytes",
      "Reorder buffer peak of the last ended session",
    ),
    rtt: histogram("warren_fusion_rtt_seconds", "Heartbeat round-trip time, every path"),
  };
  return metrics;
}

/**
 * Gauges over the live sessions' paths, read at scrape time from `source` (the service
 * passes its sessions' `status()`): per path (`path="<id> <label>"`, summed over sessions)
 * the delivery rate, bytes in flight, the worst RTT; per process the largest reorder buffer
 * peak and the frames resent by live sessions. Call once per process.
 */
export function livePathMetrics(source: () => SessionStatus[]): void {
  const byPath = (f: (p: PathStatus) => number, combine: (a: number, b: number) => number) =>
    function (this: Gauge<"path">): void {
      this.reset();
      const acc = new Map<string, number>();
      for (const s of source()) {
        for (const p of s.paths) {
          const key = `${p.id} ${p.label}`;
          const prev = acc.get(key);
          acc.set(key, prev === undefined ? f(p) : combine(prev, f(p)));
        }
      }
      for (const [path, v] of acc) this.set({ path }, v);
    };
  gauge(
    "warren_fusion_path_rate_bytes_per_second",
    "Delivery rate of each live path (windowed max), summed over sessions",
    ["path"],
    byPath((p) => p.rateBytesPerSec, (a, b) => a + b),
  );
  gauge(
    "warren_fusion_path_rtt_seconds",
    "Smoothed heartbeat RTT of each live path (worst over sessions)",
    ["path"],
    byPath((p) => p.rttMs / 1000, Math.max),
  );
  gauge(
    "warren_fusion_path_inflight_bytes",
    "Bytes assigned to each live path and not yet acknowledged",
    ["path"],
    byPath((p) => p.inflightBytes, (a, b) => a + b),
  );
  gauge(
    "warren_fusion_live_reorder_peak_bytes",
    "Largest reorder buffer peak among live sessions",
    [],
    function () {
      this.set(source().reduce((m, s) => Math.max(m, s.reorderPeakBytes), 0));
    },
  );
  gauge(
    "warren_fusion_live_resent_frames",
    "Frames resent by the live sessions so far (ended ones are in warren_fusion_resent_frames_total)",
    [],
    function () {
      this.set(source().reduce((n, s) => n + s.framesResent, 0));
    },
  );
}
