/**
 * `UdpDrops`: counters of datagrams a relay dropped, by reason, logged without flooding the
 * log (the 1st, 10th, 100th ... drop of each reason is a warn line with the running count).
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import { udpDroppedTotal, udpLabels, type UdpRelayName } from "./metrics.ts";
import type { DatagramHandler } from "./socket.ts";

/** How much of a thrown error's message a drop's log line keeps. */
const maxErrorDetailChars = 200;

/**
 * Why a datagram was dropped.
 * - "too-big": larger than the relay takes, or the kernel refused its size (EMSGSIZE);
 * - "fragmented": a SOCKS5 datagram with FRAG != 0 (reassembly is not supported);
 * - "malformed": a SOCKS5 UDP header that does not parse;
 * - "wrong-source": from an address that is not the relay's client (or its destination);
 * - "flow-limit": a new flow while as many flows as the bound are still being opened;
 * - "queue-full": the bytes waiting to be sent are at their bound;
 * - "not-allowed": the destination is refused by the ACL;
 * - "resolve": the destination name does not resolve;
 * - "send-failed": the kernel refused the send for another reason;
 * - "refused": the far end refused this flow's port a moment ago (a tunnel client that does
 *   not serve it): dropped without asking it again;
 * - "internal": handling it threw (a bug in warren; the log line names the error).
 */
export type UdpDropReason =
  | "too-big"
  | "fragmented"
  | "malformed"
  | "wrong-source"
  | "flow-limit"
  | "queue-full"
  | "not-allowed"
  | "resolve"
  | "send-failed"
  | "refused"
  | "internal";

/**
 * Counts dropped datagrams by reason and logs them sparsely; with `relay`, the process's
 * `warren_udp_dropped_total` counts them too.
 */
export class UdpDrops {
  readonly #counts = new Map<UdpDropReason, number>();
  /**
   * Drops logged to `log`; with `relay` counted in `warren_udp_dropped_total` too (with
   * `listener`, a seaprox listener's name, when given).
   */
  constructor(
    readonly log: Logger = silentLogger,
    readonly relay?: UdpRelayName,
    readonly listener?: string,
  ) {}

  /** Count one drop; log it when the count of `reason` is 1, 10, 100 ... */
  drop(reason: UdpDropReason, detail?: string): void {
    const n = (this.#counts.get(reason) ?? 0) + 1;
    this.#counts.set(reason, n);
    if (this.relay) udpDroppedTotal.inc({ ...udpLabels(this.relay, this.listener), reason });
    if (/^10*$/.test(String(n))) {
      this.log.warn("udp datagram dropped", { failure: reason, count: n, detail });
    }
  }

  /**
   * `handler`, guarded: a throw while handling one datagram drops that datagram ("internal",
   * logged like every drop, by the error's name and message, never the bytes) and the socket
   * goes on with the next. Every relay's `onMessage` is set through it: Deno 2.9.6's
   * node:dgram swallows what a "message" listener throws, so the datagram vanished
   * uncounted and unlogged (cf08e35's malformed SOCKS5 datagram in depot-server).
   */
  guard(handler: DatagramHandler): DatagramHandler {
    return (data, from) => {
      try {
        handler(data, from);
      } catch (err) {
        this.failed(from, err);
      }
    };
  }

  /**
   * A datagram from `from` lost to a throw or rejection of ours: dropped as "internal", logged
   * by the error's name and message (never the bytes). Also the end of a flow's opening that
   * failed unexpectedly, so a bug there costs datagrams, never the process (an unhandled
   * rejection ends a Deno process).
   */
  failed(from: HostPort, err: unknown): void {
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const peer = joinHostPort(from.host, from.port);
    this.drop("internal", `from ${peer}: ${what.slice(0, maxErrorDetailChars)}`);
  }

  /** Drops of one reason so far. */
  count(reason: UdpDropReason): number {
    return this.#counts.get(reason) ?? 0;
  }

  /** All counts, for status and tests. */
  snapshot(): Partial<Record<UdpDropReason, number>> {
    return Object.fromEntries(this.#counts);
  }

  /** Total drops. */
  get total(): number {
    let t = 0;
    for (const n of this.#counts.values()) t += n;
    return t;
  }
}
