/**
 * UDP counters every relay keeps (lib/stats.ts, exported by lib/metrics.ts): datagrams and
 * payload bytes relayed each way, datagrams dropped by reason, and flows held now — all by
 * `relay` ("udp-forward", "socks5-udp", "depot-server", "depot-local", "tunnel-server",
 * "tunnel-client", "seaprox-link": associations a link carried, where they leave; "depot-cluster":
 * depot associations another instance handed over, at the one holding the exit). A datagram is counted
 * where it is sent on: "up" toward its destination, "down" toward the client; a dropped one
 * is counted once, by the half that dropped it, so in = relayed + dropped.
 * @module
 */

import { type Counter, counter, type Gauge, gauge } from "../stats.ts";
import type { RelayStats } from "../net/relay.ts";

/** Which relay a counter belongs to (the `relay` label). */
export type UdpRelayName =
  | "udp-forward"
  | "socks5-udp"
  | "depot-server"
  | "depot-local"
  | "tunnel-server"
  | "tunnel-client"
  | "seaprox-link"
  | "depot-cluster";

/** Datagrams relayed, by relay and direction. */
export const udpDatagramsTotal: Counter<"relay" | "direction"> = counter(
  "warren_udp_datagrams_total",
  "UDP datagrams relayed, by relay and direction (up = sent toward the destination, " +
    "down = sent toward the client)",
  ["relay", "direction"],
);

/** Payload bytes relayed (SOCKS5 headers and tunnel framing not counted). */
export const udpBytesTotal: Counter<"relay" | "direction"> = counter(
  "warren_udp_bytes_total",
  "UDP payload bytes relayed, by relay and direction (up = toward the destination)",
  ["relay", "direction"],
);

/** Datagrams dropped, by relay and reason (lib/udp `UdpDropReason`). */
export const udpDroppedTotal: Counter<"relay" | "reason"> = counter(
  "warren_udp_dropped_total",
  "UDP datagrams dropped, by relay and reason (too-big, fragmented, malformed, " +
    "wrong-source, flow-limit, queue-full, not-allowed, resolve, send-failed, refused)",
  ["relay", "reason"],
);

/** Live sources of the flows gauge: each running flow table adds its size while it lives. */
export const liveFlowSources: Set<{ relay: UdpRelayName; readonly size: number }> = new Set();

/** Flows held now, by relay (per-peer flows of a forward, destinations of an association). */
export const udpFlowsActive: Gauge<"relay"> = gauge(
  "warren_udp_flows_active",
  "UDP flows held now, by relay (peers of a udp:// forward, destinations of an association)",
  ["relay"],
  function () {
    this.reset();
    const sums = new Map<string, number>();
    for (const t of liveFlowSources) sums.set(t.relay, (sums.get(t.relay) ?? 0) + t.size);
    for (const [relay, n] of sums) this.set({ relay }, n);
  },
);

/**
 * The relayed-datagram counts of one relay instance (a forward, an association, one depot
 * side): the process's counters, plus the instance's own figures and, when given, the byte
 * counts of the connection it belongs to (`aToB` up, `bToA` down).
 */
export class UdpTally {
  datagramsUp = 0;
  bytesUp = 0;
  datagramsDown = 0;
  bytesDown = 0;
  constructor(readonly relay: UdpRelayName, readonly conn?: RelayStats) {}

  /** One datagram of `bytes` payload sent toward its destination. */
  up(bytes: number): void {
    this.datagramsUp++;
    this.bytesUp += bytes;
    if (this.conn) this.conn.aToB += bytes;
    udpDatagramsTotal.inc({ relay: this.relay, direction: "up" });
    udpBytesTotal.inc({ relay: this.relay, direction: "up" }, bytes);
  }

  /** One datagram of `bytes` payload sent toward the client. */
  down(bytes: number): void {
    this.datagramsDown++;
    this.bytesDown += bytes;
    if (this.conn) this.conn.bToA += bytes;
    udpDatagramsTotal.inc({ relay: this.relay, direction: "down" });
    udpBytesTotal.inc({ relay: this.relay, direction: "down" }, bytes);
  }
}
