/**
 * Prometheus metrics of depot, in the process-wide registry of lib/metrics.ts.
 * @module
 */

import { counter, gauge } from "../metrics.ts";

/** SOCKS requests by exit and result ("ok" or a failure reason). */
export const requestsTotal = counter(
  "depot_requests_total",
  "SOCKS CONNECT requests handled by depot, by exit and result",
  ["side", "exit", "result"],
);

/** Relayed payload bytes by direction ("up": client to target, "down": back). */
export const bytesTotal = counter(
  "depot_bytes_total",
  "payload bytes relayed by depot, by direction (up = client to target)",
  ["side", "direction"],
);

/** Tunnelled connections currently relaying. */
export const activeConnections = gauge(
  "depot_active_connections",
  "tunnelled connections currently relaying",
  ["side"],
);

/** depot-locals connected to this server. */
export const exitsConnected = gauge(
  "depot_exits_connected",
  "depot-local exits connected to this server",
);

/** Control connection round-trip time per exit. */
export const exitRttSeconds = gauge(
  "depot_exit_rtt_seconds",
  "control connection round-trip time by exit",
  ["side", "exit"],
);

/** Control sessions established (server: hellos accepted; local: connects). */
export const sessionsTotal = counter(
  "depot_control_sessions_total",
  "control sessions established",
  ["side"],
);
