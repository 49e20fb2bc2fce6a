/**
 * `startUdpForward`: a static UDP forward (seaprox's `udp://host:port?to=host:port`). Every
 * peer that sends to the listening socket gets a flow: its own upstream socket, so the
 * target's answers find their way back to that peer. Flows expire when idle and are bounded
 * in number and in queued bytes; every dropped datagram is counted by reason.
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import type { Acl } from "../net/acl.ts";
import { resolveHost } from "../net/dial.ts";
import { errorMessage, NetError } from "../net/errors.ts";
import type { UdpChannel, UdpChannelOpener } from "./channel.ts";
import { UdpDrops } from "./drops.ts";
import { type Flow, type FlowLimits, FlowTable } from "./flows.ts";
import { sendCounted } from "./send.ts";
import { UdpSocket } from "./socket.ts";
import { udpListenerOf, UdpTally } from "./metrics.ts";

/** How long a peer's channel may take to open (a link round trip, an upstream handshake). */
const channelOpenTimeoutMs = 10_000;

/** One peer's way to the target: its socket here, or its channel. */
interface PeerFlow extends Flow {
  /** Send one datagram to the target (counted, or dropped and counted). */
  send(data: Uint8Array): void;
}

/** `opts.to` resolved and checked against the ACL (datagrams leaving from this host). */
async function checkedTarget(opts: UdpForwardOptions): Promise<HostPort> {
  const [targetIp] = await resolveHost(opts.to.host, opts.prefer ?? "ipv4");
  const decision = opts.acl?.check(opts.to, targetIp);
  if (decision && !decision.allowed) {
    throw new NetError(
      "not-allowed",
      `udp forward to ${joinHostPort(opts.to.host, opts.to.port)} refused by ${decision.rule}`,
    );
  }
  return { host: targetIp, port: opts.to.port };
}

/** Options of {@linkcode startUdpForward}. */
export interface UdpForwardOptions extends FlowLimits {
  /** Where to listen (port 0: kernel-chosen). */
  listen: HostPort;
  /** Where every datagram goes; a name is resolved once, at start. */
  to: HostPort;
  /** Checked once on `to`, by name and resolved address: a refusal is `NetError("not-allowed")`. */
  acl?: Acl;
  /** Address family tried first when resolving `to`. @default "ipv4" */
  prefer?: "ipv6" | "ipv4";
  /**
   * Carry each peer's datagrams elsewhere (a link, a chain: one channel per peer flow, `to`
   * sent unresolved and checked there) instead of from this host.
   */
  open?: UdpChannelOpener;
  log?: Logger;
}

/** Counters of a running forward (also in `warren_udp_*{relay="udp-forward"}`). */
export interface UdpForwardStats {
  /** Datagrams and payload bytes from peers to the target. */
  datagramsUp: number;
  bytesUp: number;
  /** Datagrams and payload bytes from the target back to peers. */
  datagramsDown: number;
  bytesDown: number;
}

/** A running UDP forward. */
export interface UdpForward {
  /** The listening address (the real port when 0 was asked). */
  readonly addr: HostPort;
  /** The target as resolved. */
  readonly target: HostPort;
  readonly flows: FlowTable<Flow>;
  readonly drops: UdpDrops;
  readonly stats: UdpForwardStats;
  /** Close the listening socket and every flow. */
  stop(): void;
}

/**
 * Bind `opts.listen` and forward to `opts.to`. Rejects with a `NetError` when the address
 * cannot be bound, `to` does not resolve or the ACL refuses it.
 *
 * @example
 * ```ts
 * import { startUdpForward, UdpSocket } from "./mod.ts";
 * const echo = await UdpSocket.bind("127.0.0.1", 0);
 * echo.onMessage = (d, from) => void echo.send(d, from);
 * const fwd = await startUdpForward({ listen: { host: "127.0.0.1", port: 0 }, to: echo.addr });
 * const client = await UdpSocket.bind("127.0.0.1", 0);
 * const answer = new Promise<Uint8Array>((r) => client.onMessage = r);
 * await client.send(new TextEncoder().encode("ping"), fwd.addr);
 * console.assert(new TextDecoder().decode(await answer) === "ping");
 * client.close();
 * fwd.stop();
 * echo.close();
 * ```
 */
export async function startUdpForward(opts: UdpForwardOptions): Promise<UdpForward> {
  const log = opts.log ?? silentLogger;
  const target = opts.open ? opts.to : await checkedTarget(opts);
  const targetKey = joinHostPort(target.host, target.port);
  const listener = await UdpSocket.bind(opts.listen.host, opts.listen.port);
  const drops = new UdpDrops(log, "udp-forward", udpListenerOf(log));
  const flows = new FlowTable<PeerFlow>(opts, drops);
  const stats = new UdpTally("udp-forward", undefined, drops.listener);
  /** Upstream sockets or channels still opening, by peer: datagrams wait on them in order. */
  const pending = new Map<string, Promise<PeerFlow | undefined>>();
  let stopped = false;

  const back = (peer: HostPort, key: string) => (data: Uint8Array) => {
    flows.touch(key);
    if (sendCounted(listener, data, peer, flows)) stats.down(data.length);
  };

  /** A peer's own upstream socket on this host: the target's answers find the peer back. */
  const openSocket = async (peer: HostPort, key: string): Promise<PeerFlow | undefined> => {
    let up: UdpSocket;
    try {
      up = await UdpSocket.bind(target.host.includes(":") ? "::" : "0.0.0.0", 0);
    } catch (err) {
      drops.drop("send-failed", `no upstream socket for ${key}: ${err}`);
      return undefined;
    }
    if (stopped) return void up.close();
    const toPeer = back(peer, key);
    up.onMessage = drops.guard((data, from) => {
      if (joinHostPort(from.host, from.port) !== targetKey) {
        return drops.drop("wrong-source", `upstream datagram from ${from.host}:${from.port}`);
      }
      toPeer(data);
    });
    return flows.getOrOpen(key, () => ({
      send: (data) => {
        if (sendCounted(up, data, target, flows)) stats.up(data.length);
      },
      close: () => void up.close(),
    }));
  };

  /**
   * What the channels share: their queued-bytes bound and drop counts (peers are bounded by
   * `flows`; no sweep timer here, a channel lives as long as its peer's flow).
   */
  const carried = new FlowTable<Flow>(
    { idleTimeoutMs: 0, maxQueuedBytes: opts.maxQueuedBytes },
    drops,
  );

  /** A peer's own channel through `opts.open` (its association at the far end). */
  const openChannel = async (peer: HostPort, key: string): Promise<PeerFlow | undefined> => {
    let ch: UdpChannel;
    try {
      const signal = AbortSignal.timeout(channelOpenTimeoutMs);
      ch = await opts.open!({ flows: carried, tally: stats, signal });
    } catch (err) {
      drops.drop("send-failed", `no channel for ${key}: ${errorMessage(err)}`);
      return undefined;
    }
    if (stopped) return void ch.close();
    const toPeer = back(peer, key);
    // A local first: a function literal assigned to a property is made in V8's old generation
    // and keeps the flow through scavenges (tests/source_closure_test.ts).
    const onDatagram: UdpChannel["onDatagram"] = (_from, data) => toPeer(data);
    ch.onDatagram = onDatagram;
    const flow = flows.getOrOpen(key, () => ({
      send: (data) => void ch.send(target, data),
      close: () => ch.close(),
      // Evicted under a flood of peers: its carrier is freed at once, not after an end.
      evict: () => ch.cut ? ch.cut() : ch.close(),
    }));
    // The channel ending (its link went away) ends the flow: the next datagram opens another.
    void ch.ended.then(() => flows.peek(key) === flow && flows.delete(key));
    return flow;
  };
  const openFlow = opts.open ? openChannel : openSocket;

  listener.onMessage = drops.guard((data, peer) => {
    const key = joinHostPort(peer.host, peer.port);
    const send = (up: PeerFlow | undefined) => up?.send(data);
    const flow = flows.get(key);
    if (flow) return send(flow);
    // A datagram that arrives while its flow's socket is binding waits behind the first one,
    // so a peer's datagrams leave in the order they came. The wait costs queue budget.
    let p = pending.get(key);
    if (!p) {
      // Sockets still binding are bounded too (eviction makes room among bound ones only).
      if (!flows.canOpen(key, pending.size)) return;
      p = openFlow(peer, key).catch((err) => void drops.failed(peer, err))
        .finally(() => pending.delete(key));
      pending.set(key, p);
    }
    if (!flows.reserve(data.length)) return;
    void p.then((up) => {
      flows.release(data.length);
      send(up);
    }).catch((err) => drops.failed(peer, err));
  });

  log.debug("udp forward started", {
    via: opts.open ? "channel" : "direct",
    addr: joinHostPort(listener.addr.host, listener.addr.port),
    to: targetKey,
  });
  return {
    addr: listener.addr,
    target,
    flows,
    drops,
    stats,
    stop: () => {
      stopped = true;
      listener.close();
      flows.close();
      carried.close();
    },
  };
}
