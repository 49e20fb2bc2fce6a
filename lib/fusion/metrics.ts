/**
 * Prometheus metrics of fusion sessions and paths (served by `--metrics`).
 * @module
 */

import type client from "prom-client";
import { counter, gauge } from "../metrics.ts";

/** The fusion metric handles. */
export interface FusionMetrics {
  /** Sessions open now. */
  sessionsActive: client.Gauge<string>;
  /** Paths joined now. */
  pathsActive: client.Gauge<string>;
  /** Ended sessions by end (done, no-paths, peer-reset, ...). */
  sessionEnds: client.Counter<"end">;
  /** Ended paths by why (eof, error, silent, ...). */
  pathEnds: client.Counter<"end">;
  /** Application bytes of ended sessions, by direction. */
  bytes: client.Counter<"direction">;
  /** Frames sent again. */
  resentFrames: client.Counter<string>;
  /** Wire bytes sent again. */
  resentBytes: client.Counter<string>;
  /** Reorder buffer peak of the last ended session. */
  reorderPeak: client.Gauge<string>;
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
  };
  return metrics;
}
