/**
 * Prometheus metrics of every mux session in the process (depot --mux, tunnel, seaprox
 * links): sessions, streams, transport bytes, receive windows, the sessions' own buffers. Read
 * at scrape time from the live sessions; ended sessions' counts are folded into the totals.
 * @module
 */

import { collectedCounter, gauge, type Histogram, histogram } from "../stats.ts";
import type { SessionStats } from "./session.ts";

/** What the metrics read from a session. */
export interface MeteredSession {
  readonly stats: SessionStats;
}

/** Sessions running now (the session adds itself when created, `sessionEnded` removes it). */
export const liveSessions: Set<MeteredSession> = new Set();

const ended = { streams: 0, bytesIn: 0, bytesOut: 0, sessions: 0 };

/** Fold an ended session's counts into the totals and forget it. */
export function sessionEnded(s: MeteredSession): void {
  if (!liveSessions.delete(s)) return;
  const st = s.stats;
  ended.streams += st.streamsTotal;
  ended.bytesIn += st.bytesIn;
  ended.bytesOut += st.bytesOut;
  ended.sessions++;
}

function sum(f: (s: SessionStats) => number): number {
  let n = 0;
  for (const s of liveSessions) n += f(s.stats);
  return n;
}

/** Whether this process ever ran a mux session (a seaprox without links exports no mux series). */
function used(): boolean {
  return liveSessions.size > 0 || ended.sessions > 0;
}

/** A gauge of the live sessions, without series in a process that never had one. */
function sessionGauge(name: string, help: string, read: () => number): void {
  gauge(name, help, [], function () {
    this.reset();
    if (used()) this.set(read());
  });
}

sessionGauge("warren_mux_sessions", "Mux sessions open now", () => liveSessions.size);
sessionGauge(
  "warren_mux_streams_open",
  "Mux streams open now, all sessions",
  () => sum((s) => s.streamsOpen),
);
sessionGauge(
  "warren_mux_recv_window_bytes",
  "Sum of the open mux streams' receive windows (grow while readers keep up)",
  () => sum((s) => s.recvWindowBytes),
);
sessionGauge(
  "warren_mux_buffer_bytes",
  "Bytes of the mux sessions' own buffers (read, write batches, staging, small views)",
  () => sum((s) => s.bufferBytes),
);
collectedCounter(
  "warren_mux_streams_total",
  "Mux streams opened by either side",
  [],
  () => used() ? [[{}, ended.streams + sum((s) => s.streamsTotal)]] : [],
);
collectedCounter(
  "warren_mux_sessions_total",
  "Mux sessions ended",
  [],
  () => used() ? [[{}, ended.sessions]] : [],
);
collectedCounter(
  "warren_mux_bytes_total",
  "Mux transport bytes (headers included)",
  ["direction"],
  () =>
    used()
      ? [
        [{ direction: "in" }, ended.bytesIn + sum((s) => s.bytesIn)],
        [{ direction: "out" }, ended.bytesOut + sum((s) => s.bytesOut)],
      ]
      : [],
);

/** Round-trip time of mux pings (keepalive and explicit), every session of the process. */
export const muxRttSeconds: Histogram<string> = histogram(
  "warren_mux_rtt_seconds",
  "Round-trip time of answered mux pings",
);
