/**
 * The status page provider of tunnel-client: its session (server, public URLs, local target,
 * RTT), streams relayed to the local
 * service beside the failed ones by reason (for an HTTP request, the server answers 502),
 * recent failures.
 * @module
 */

import type { TunnelClientFailure } from "../tunnel/client.ts";
import type { StatusProvider, StatusSeries } from "./hub.ts";

/** What the page shows of a tunnel-client: its `/status` JSON. */
export interface TunnelClientStatus {
  state: string;
  /** The server URL of the current (or last) attempt. */
  server?: string;
  /** The public URLs it serves (from the last handshake). */
  publicUrls?: string[];
  /** The local app it forwards to (`host:port`). */
  local?: string;
  /** The last mux ping round trip to the server, while connected. */
  rttMs?: number;
  connects: number;
  streams: number;
  /** Streams whose local dial succeeded. */
  relayed: number;
  failuresByReason: Record<string, number>;
  recentFailures: TunnelClientFailure[];
  /** With `--health-check`: the local app's health as last reported to the server. */
  health?: "healthy" | "out of rotation";
}

/** A provider over a tunnel-client's status. */
export function tunnelClientStatusProvider(status: () => TunnelClientStatus): StatusProvider {
  return () => {
    const s = status();
    const reasons = Object.entries(s.failuresByReason).sort((a, b) => b[1] - a[1]);
    const series: StatusSeries[] = [
      { chart: "streams/s", name: "ok", value: s.relayed, kind: "rate" },
      ...(s.rttMs === undefined ? [] : [{ chart: "server RTT ms", name: "rtt", value: s.rttMs }]),
      ...reasons.map(([reason, n]): StatusSeries => ({
        chart: "streams/s",
        name: reason,
        value: n,
        kind: "rate",
      })),
    ];
    return {
      tables: [{
        title: "session",
        columns: [
          "state",
          "server",
          "public URLs",
          "local",
          "connects",
          "streams",
          "RTT ms",
          ...(s.health ? ["health"] : []),
        ],
        rows: [[
          s.state,
          s.server ?? "",
          (s.publicUrls ?? []).join(" "),
          s.local ?? "",
          s.connects,
          s.streams,
          s.rttMs === undefined ? null : Math.round(s.rttMs * 10) / 10,
          ...(s.health ? [s.health] : []),
        ]],
      }, {
        title: "outcomes",
        columns: ["outcome", "streams"],
        rows: [["ok", s.relayed], ...reasons],
      }, {
        title: "recent failures",
        columns: ["at", "dest", "reason", "message"],
        rows: s.recentFailures.slice(-20).reverse().map((f) => [f.at, f.dest, f.reason, f.message]),
      }],
      series,
    };
  };
}
