/**
 * Prometheus metrics of every mux session in the process (depot --mux, tunnel, seaprox
 * links): sessions, streams, transport bytes, receive windows. Read at scrape time from the
 * live sessions; ended sessions' counts are folded into the totals.
 * @module
 */

import { collectedCounter, gauge } from "../stats.ts";
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

gauge("warren_mux_sessions", "Mux sessions open now", [], function () {
  this.set(liveSessions.size);
});
gauge("warren_mux_streams_open", "Mux streams open now, all sessions", [], function () {
  this.set(sum((s) => s.streamsOpen));
});
gauge(
  "warren_mux_recv_window_bytes",
  "Sum of the open mux streams' receive windows (grow while readers keep up)",
  [],
  function () {
    this.set(sum((s) => s.recvWindowBytes));
  },
);
collectedCounter(
  "warren_mux_streams_total",
  "Mux streams opened by either side",
  [],
  () => [[{}, ended.streams + sum((s) => s.streamsTotal)]],
);
collectedCounter("warren_mux_sessions_total", "Mux sessions ended", [], () => [[
  {},
  ended.sessions,
]]);
collectedCounter(
  "warren_mux_bytes_total",
  "Mux transport bytes (headers included)",
  ["direction"],
  () => [
    [{ direction: "in" }, ended.bytesIn + sum((s) => s.bytesIn)],
    [{ direction: "out" }, ended.bytesOut + sum((s) => s.bytesOut)],
  ],
);
