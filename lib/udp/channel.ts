/**
 * `UdpChannel`: where the datagrams of one UDP association (or one peer flow of a forward)
 * leave, and where their answers come back -- from this host ({@linkcode directUdpOpener},
 * lib/udp `UdpExit`), or over a carrier that takes them elsewhere (a seaprox link stream,
 * QUIC datagrams, an upstream SOCKS5 relay; lib/proxy). A relay keeps its client side and
 * asks a {@linkcode UdpChannelOpener} for the other, so every carrier serves every UDP relay.
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import { UdpExit, type UdpExitOptions } from "./exit.ts";
import type { Flow, FlowTable } from "./flows.ts";
import type { UdpTally } from "./metrics.ts";

/** One association's way out for datagrams, and in for their answers. */
export interface UdpChannel {
  /**
   * Hand one datagram on toward `dest` (an IP literal or a name). True when it was taken;
   * false when it was dropped at once. Every drop is counted in the opener's table; never
   * throws. The channel may keep `data` past the call (callers hand over their copy).
   */
  send(dest: HostPort, data: Uint8Array): boolean;
  /** Called for every answer; `from` is the address that sent it. */
  onDatagram: (from: HostPort, data: Uint8Array) => void;
  /**
   * Settles with a reason when the channel ended by itself (its carrier closed or failed);
   * never settles for a channel only `close()` ends.
   */
  readonly ended: Promise<string>;
  /** Release the channel (idempotent); a carrier may end it gracefully. */
  close(): void;
  /** Release it at once, without a graceful end (its flow was evicted); `close()` if absent. */
  cut?(): void;
  /** The carrier's own counts for the association's log line (QUIC: datagrams vs stream). */
  counts?(): Record<string, number>;
}

/** What a channel is opened with: the association's bounds, counters and deadline. */
export interface UdpChannelContext {
  /**
   * Bounds the channel (destinations it tracks, bytes it queues) and counts its drops; the
   * opener's caller closes it.
   */
  flows: FlowTable<Flow>;
  /**
   * Counts each datagram the channel sent on, by payload bytes (a `UdpTally`'s `up`; answers
   * are counted where they are delivered).
   */
  tally: Pick<UdpTally, "up">;
  /** Gives up opening (a link round trip, an upstream handshake) when it fires. */
  signal: AbortSignal;
}

/**
 * Opens a channel for one association; rejects with a `NetError` naming why it cannot be
 * had (a hop that cannot carry UDP, a far node that refused).
 */
export type UdpChannelOpener = (ctx: UdpChannelContext) => Promise<UdpChannel>;

/**
 * Datagrams leave from this host: lib/udp `UdpExit` (ACL on every destination, by name and
 * resolved address; answers only from destinations sent to; in order).
 */
export function directUdpOpener(opts: UdpExitOptions = {}): UdpChannelOpener {
  return ({ flows, tally }) => {
    const ended = new Promise<string>(() => {});
    const ch: UdpChannel = {
      onDatagram: () => {},
      ended,
      send: (dest, data) => {
        exit.send(dest, data);
        return true;
      },
      close: () => exit.close(),
    };
    const exit = new UdpExit(flows, tally, opts, (src, payload) => ch.onDatagram(src, payload));
    return Promise.resolve(ch);
  };
}
