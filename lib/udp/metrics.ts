/**
 * UDP counters every relay keeps (lib/stats.ts, exported by lib/metrics.ts): datagrams and
 * payload bytes relayed each way, datagrams dropped by reason, and flows held now -- all by
 * `relay` ("udp-forward", "socks5-udp", "depot-server", "depot-local", "tunnel-server",
 * "tunnel-client", "seaprox-link": associations a link carried, where they leave; "depot-cluster":
 * depot associations another instance handed over, at the one holding the exit). A datagram is counted
 * where it is sent on: "up" toward its destination, "down" toward the client; a dropped one
 * is counted once, by the half that dropped it, so in = relayed + dropped. seaprox's relays
 * (udp://, SOCKS5 UDP ASSOCIATE, a link's far node) add the `listener` label its other series
 * carry (`udp`, `socks5`, `link` ...); the other services' series have none.
 * @module
 */

import { type Counter, counter, type Gauge, gauge, type Labels } from "../stats.ts";
import type { RelayStats } from "../net/relay.ts";
import type { Logger } from "../log.ts";

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
export const udpDatagramsTotal: Counter<"relay" | "direction" | "listener"> = counter(
  "warren_udp_datagrams_total",
  "UDP datagrams relayed, by relay and direction (up = sent toward the destination, " +
    "down = sent toward the client)",
  ["relay", "direction", "listener"],
);

/** Payload bytes relayed (SOCKS5 headers and tunnel framing not counted). */
export const udpBytesTotal: Counter<"relay" | "direction" | "listener"> = counter(
  "warren_udp_bytes_total",
  "UDP payload bytes relayed, by relay and direction (up = toward the destination)",
  ["relay", "direction", "listener"],
);

/** Datagrams dropped, by relay and reason (lib/udp `UdpDropReason`). */
export const udpDroppedTotal: Counter<"relay" | "reason" | "listener"> = counter(
  "warren_udp_dropped_total",
  "UDP datagrams dropped, by relay and reason (too-big, fragmented, malformed, " +
    "wrong-source, flow-limit, queue-full, not-allowed, resolve, send-failed, refused, internal)",
  ["relay", "reason", "listener"],
);

/**
 * The labels of a relay's series: `relay`, and `listener` only when it has one (a label
 * given as undefined would make a second series that prints like the first).
 */
export function udpLabels(
  relay: UdpRelayName,
  listener: string | undefined,
): { relay: UdpRelayName; listener?: string } {
  return listener === undefined ? { relay } : { relay, listener };
}

/**
 * The `listener` label of a seaprox relay: the listener name in its log's context (seaprox
 * names each listener there, as its other series do); undefined when there is none.
 */
export function udpListenerOf(log: Logger): string | undefined {
  const name = log.field("listener");
  return name === undefined || name === null ? undefined : String(name);
}

/** Live sources of the flows gauge: each running flow table adds its size while it lives. */
export const liveFlowSources: Set<
  { relay: UdpRelayName; listener?: string; readonly size: number }
> = new Set();

/** Flows held now, by relay (per-peer flows of a forward, destinations of an association). */
export const udpFlowsActive: Gauge<"relay" | "listener"> = gauge(
  "warren_udp_flows_active",
  "UDP flows held now, by relay (peers of a udp:// forward, destinations of an association)",
  ["relay", "listener"],
  function () {
    this.reset();
    const sums = new Map<string, [ReturnType<typeof udpLabels>, number]>();
    for (const t of liveFlowSources) {
      const k = `${t.relay}\u0000${t.listener ?? ""}`;
      const labels = udpLabels(t.relay, t.listener);
      sums.set(k, [labels, (sums.get(k)?.[1] ?? 0) + t.size]);
    }
    for (const [labels, n] of sums.values()) this.set(labels, n);
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
  readonly #up: Labels<"relay" | "direction" | "listener">;
  readonly #down: Labels<"relay" | "direction" | "listener">;
  /** Counted as `relay` (and `listener`, a seaprox listener's name, when given). */
  constructor(readonly relay: UdpRelayName, readonly conn?: RelayStats, listener?: string) {
    this.#up = { ...udpLabels(relay, listener), direction: "up" };
    this.#down = { ...udpLabels(relay, listener), direction: "down" };
  }

  /** One datagram of `bytes` payload sent toward its destination. */
  up(bytes: number): void {
    this.datagramsUp++;
    this.bytesUp += bytes;
    if (this.conn) this.conn.aToB += bytes;
    udpDatagramsTotal.inc(this.#up);
    udpBytesTotal.inc(this.#up, bytes);
  }

  /** One datagram of `bytes` payload sent toward the client. */
  down(bytes: number): void {
    this.datagramsDown++;
    this.bytesDown += bytes;
    if (this.conn) this.conn.bToA += bytes;
    udpDatagramsTotal.inc(this.#down);
    udpBytesTotal.inc(this.#down, bytes);
  }
}
