/**
 * Prometheus metrics of depot, kept in lib/stats.ts (exported by lib/metrics.ts).
 * @module
 */

import { counter, gauge } from "../stats.ts";

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

/** One RTT sample for the gauge: which side measured it, for which exit. */
export interface RttSample {
  side: "server" | "local";
  exit: string;
  seconds: number;
}

/**
 * Live sources of RTT samples and exit counts, read at scrape time (RTTs change with every
 * pong, which the control layer consumes itself). Servers and locals add a source while
 * running and remove it when stopped.
 */
export const liveSources: Set<() => { exits?: number; rtts: RttSample[] }> = new Set();

/** depot-locals connected to this server. */
export const exitsConnected = gauge(
  "depot_exits_connected",
  "depot-local exits connected to this server",
  [],
  function () {
    let n = 0;
    for (const src of liveSources) n += src().exits ?? 0;
    this.set(n);
  },
);

/** Control connection round-trip time per exit. */
export const exitRttSeconds = gauge(
  "depot_exit_rtt_seconds",
  "control connection round-trip time by exit",
  ["side", "exit"],
  function () {
    this.reset();
    for (const src of liveSources) {
      for (const r of src().rtts) this.set({ side: r.side, exit: r.exit }, r.seconds);
    }
  },
);

/** Control sessions established (server: hellos accepted; local: connects). */
export const sessionsTotal = counter(
  "depot_control_sessions_total",
  "control sessions established",
  ["side"],
);
