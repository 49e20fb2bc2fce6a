/**
 * Prometheus metrics of depot, kept in lib/stats.ts (exported by lib/metrics.ts). The
 * `depot_*` names of the first release stay for one more (`deprecatedName`).
 * @module
 */

import { counter, gauge, type Histogram, histogram } from "../stats.ts";

/** SOCKS requests by exit and result ("ok" or a failure reason). */
export const requestsTotal = counter(
  "warren_depot_requests_total",
  "SOCKS CONNECT requests handled by depot, by exit and result",
  ["side", "exit", "result"],
  undefined,
  { deprecatedName: "depot_requests_total" },
);

/** Relayed payload bytes by direction ("up": client to target, "down": back). */
export const bytesTotal = counter(
  "warren_depot_bytes_total",
  "Payload bytes relayed by depot, by direction (up = client to target)",
  ["side", "direction"],
  undefined,
  { deprecatedName: "depot_bytes_total" },
);

/** Tunnelled connections currently relaying. */
export const activeConnections = gauge(
  "warren_depot_connections_active",
  "Tunnelled connections relaying now",
  ["side"],
  undefined,
  { deprecatedName: "depot_active_connections" },
);

/** From the SOCKS request read to the tunnel ready (server), or to the target dialled (local). */
export const connectSeconds: Histogram<"side"> = histogram(
  "warren_depot_connect_seconds",
  "Connection set-up: SOCKS request to tunnel ready (server), target dial (local)",
  ["side"],
);

/**
 * The series one relayed connection counts into on `side`, label keys built once (they were
 * built on every count: five per connection and side).
 */
function connectionSeries(side: "server" | "local") {
  return {
    active: activeConnections.series({ side }),
    connect: connectSeconds.series({ side }),
    up: bytesTotal.series({ side, direction: "up" }),
    down: bytesTotal.series({ side, direction: "down" }),
    /** The "ok" requests of exit `exit`, bound once per exit. */
    ok: (exit: string) => requestsTotal.series({ side, exit, result: "ok" }),
  };
}

/** {@linkcode connectionSeries} of depot-server. */
export const serverSeries: ReturnType<typeof connectionSeries> = connectionSeries("server");
/** {@linkcode connectionSeries} of depot-local. */
export const localSeries: ReturnType<typeof connectionSeries> = connectionSeries("local");

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
  "warren_depot_exits_connected",
  "depot-local exits connected to this server",
  [],
  function () {
    this.reset();
    let n: number | undefined;
    for (const src of liveSources) {
      const e = src().exits;
      if (e !== undefined) n = (n ?? 0) + e; // only a server counts exits
    }
    if (n !== undefined) this.set(n);
  },
  { deprecatedName: "depot_exits_connected" },
);

/** Control connection round-trip time per exit. */
export const exitRttSeconds = gauge(
  "warren_depot_exit_rtt_seconds",
  "Control connection round-trip time by exit (latest smoothed)",
  ["side", "exit"],
  function () {
    this.reset();
    for (const src of liveSources) {
      for (const r of src().rtts) this.set({ side: r.side, exit: r.exit }, r.seconds);
    }
  },
  { deprecatedName: "depot_exit_rtt_seconds" },
);

/** Control sessions established (server: hellos accepted; local: connects). */
export const sessionsTotal = counter(
  "warren_depot_control_sessions_total",
  "Control sessions established",
  ["side"],
  undefined,
  { deprecatedName: "depot_control_sessions_total" },
);
