/**
 * UDP through a chain of hops: how each hop kind carries datagrams, composed like the TCP
 * chain (hop k reached through hops 1...k-1).
 *
 * - a link hop (`link://`, `quic://`) carries them inside its own session, whatever reaches it;
 * - a SOCKS5 hop carries them through its own UDP ASSOCIATE: the control connection goes
 *   through the earlier hops' TCP path, the datagrams (SOCKS5-wrapped, to its relay) through
 *   the earlier hops' UDP path -- so every hop before it must carry UDP too;
 * - an HTTP CONNECT hop cannot carry UDP.
 *
 * A chain that cannot carry UDP refuses with {@linkcode UdpUnsupportedError} naming the hop
 * (SOCKS5 reply 0x07); a hop that fails at run time names itself the same way.
 * @module
 */

import type { Acl } from "../net/acl.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import { closeQuietly, type Duplex } from "../net/duplex.ts";
import { errorMessage, NetError } from "../net/errors.ts";
import { decodeSocks5Udp, encodeSocks5Udp, socks5UdpAssociate } from "../socks5/mod.ts";
import {
  type Flow,
  type FlowTable,
  maxUdpPayloadBytes,
  type UdpChannel,
  type UdpChannelOpener,
  type UdpTally,
} from "../udp/mod.ts";
import type { Dialer } from "./dialer.ts";
import { UdpUnsupportedError } from "./udp_link.ts";
import type { Credentials, ForwardSpec } from "./url.ts";

/** Why an HTTP CONNECT hop (`name`: "hop k/n URL") cannot carry UDP. */
export function httpNoUdp(name: string): string {
  return `${name} (HTTP CONNECT) cannot carry UDP`;
}

/**
 * Why the chain `hops` cannot carry UDP, naming the hop, or undefined when every hop's kind
 * can (a SOCKS5 server may still refuse at run time). Pure: a config check calls it. A
 * SOCKS5 hop needs UDP up to it; a link hop carries it whatever is before it. `base` is why
 * the first hop's UDP cannot leave this host (the egress proxy), if so.
 */
export function chainUdpRefusal(
  hops: readonly ForwardSpec[],
  base?: string,
): string | undefined {
  let why = base;
  hops.forEach((h, i) => {
    const name = `hop ${i + 1}/${hops.length} ${h.display}`;
    if (h.scheme === "link" || h.scheme === "quic") why = undefined;
    else if (h.scheme === "http") why = httpNoUdp(name);
  });
  return why;
}

/**
 * `open`'s channels with every datagram's destination checked by name and IP literal against
 * `acl` (the far side resolves; refusals are counted "not-allowed").
 */
export function nameCheckedUdp(acl: Acl, open: UdpChannelOpener): UdpChannelOpener {
  return async (ctx) => {
    const { flows } = ctx;
    const ch = await open(ctx);
    const send = ch.send.bind(ch);
    // A local first: a function literal assigned to a property is made in V8's old generation
    // and keeps the channel through scavenges (tests/source_closure_test.ts).
    const checked: UdpChannel["send"] = (dest, data) => {
      const d = acl.check(dest);
      if (d.allowed) return send(dest, data);
      flows.drops.drop("not-allowed", `${joinHostPort(dest.host, dest.port)} refused by ${d.rule}`);
      return false;
    };
    ch.send = checked;
    return ch;
  };
}

/** An opener that always refuses with `why` (a chain that cannot carry UDP). */
export function refusingUdpOpener(why: string): UdpChannelOpener {
  return () => Promise.reject(new UdpUnsupportedError(why));
}

/**
 * A link hop's UDP: `open` (the hop's client), failures named after the hop -- a far node
 * without UDP stays {@linkcode UdpUnsupportedError}, the link being down is a NetError.
 */
export function linkHopUdp(name: string, open: UdpChannelOpener): UdpChannelOpener {
  return async (ctx) => {
    try {
      return await open(ctx);
    } catch (err) {
      if (err instanceof UdpUnsupportedError) {
        throw new UdpUnsupportedError(`${name}: ${err.message}`, { cause: err });
      }
      const reason = err instanceof NetError ? err.reason : "other";
      throw new NetError(reason, `${name} udp: ${errorMessage(err)}`, { cause: err });
    }
  };
}

/** Where a SOCKS5 hop's relay is: its reply's address, or the hop's when it says "any". */
function relayAddr(bound: HostPort, hop: HostPort): HostPort {
  const any = bound.host === "0.0.0.0" || bound.host === "::";
  return { host: any ? hop.host : bound.host, port: bound.port };
}

/**
 * A SOCKS5 hop's UDP: a UDP ASSOCIATE on a control connection reached through `via` (the
 * earlier hops' TCP), datagrams wrapped for its relay and sent through `udpVia` (the earlier
 * hops' UDP). A hop that refuses UDP ASSOCIATE is named in an {@linkcode UdpUnsupportedError}.
 */
export function socks5HopUdp(
  name: string,
  hop: HostPort,
  auth: Credentials | undefined,
  via: Dialer,
  udpVia: UdpChannelOpener,
): UdpChannelOpener {
  return async ({ flows, tally, signal }) => {
    // The way to its relay first: a path that cannot carry UDP refuses before any dial. It
    // counts nothing itself (its datagrams carry a SOCKS5 header): the payload is counted here.
    const base = await udpVia({ flows, tally: { up: () => {} }, signal });
    let control: Duplex;
    try {
      control = await via(hop, signal);
    } catch (err) {
      base.close();
      // As for TCP (chain.ts): the hop's failure is "other" (0x01) unless it timed out.
      const reason =
        err instanceof NetError && (err.reason === "timeout" || err.reason === "aborted")
          ? err.reason
          : "other";
      throw new NetError(reason, `${name} unreachable: ${errorMessage(err)}`, { cause: err });
    }
    try {
      const res = await socks5UdpAssociate(control, { ...auth, signal });
      return new Socks5RelayChannel(control, base, relayAddr(res.bound, hop), flows, tally);
    } catch (err) {
      closeQuietly(control);
      base.close();
      throw new UdpUnsupportedError(`${name} refused UDP ASSOCIATE: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  };
}

/** Datagrams through an upstream SOCKS5 relay (see {@linkcode socks5HopUdp}). */
class Socks5RelayChannel implements UdpChannel {
  onDatagram: UdpChannel["onDatagram"] = () => {};
  readonly ended: Promise<string>;
  readonly #control: Duplex;
  readonly #base: UdpChannel;
  readonly #relay: HostPort;
  readonly #flows: FlowTable<Flow>;
  readonly #tally: Pick<UdpTally, "up">;
  #closed = false;

  constructor(
    control: Duplex,
    base: UdpChannel,
    relay: HostPort,
    flows: FlowTable<Flow>,
    tally: Pick<UdpTally, "up">,
  ) {
    this.#control = control;
    this.#base = base;
    this.#relay = relay;
    this.#flows = flows;
    this.#tally = tally;
    // Bound, not an arrow: see tests/source_closure_test.ts.
    base.onDatagram = this.#fromRelay.bind(this);
    this.ended = Promise.race([
      drainUntilEnd(control).then((why) => `upstream SOCKS5 control connection ${why}`),
      base.ended,
    ]);
  }

  send(dest: HostPort, data: Uint8Array): boolean {
    if (this.#closed) return false;
    let packet: Uint8Array;
    try {
      packet = encodeSocks5Udp(dest, data);
    } catch (err) {
      this.#flows.drops.drop("malformed", errorMessage(err));
      return false;
    }
    if (packet.length > maxUdpPayloadBytes) {
      this.#flows.drops.drop("too-big", `${data.length} bytes do not fit with the SOCKS5 header`);
      return false;
    }
    if (!this.#base.send(this.#relay, packet)) return false;
    this.#tally.up(data.length);
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#control);
    this.#base.close();
  }

  #fromRelay(_from: HostPort, packet: Uint8Array): void {
    let d;
    try {
      d = decodeSocks5Udp(packet);
    } catch (err) {
      return this.#flows.drops.drop("malformed", `from the upstream relay: ${errorMessage(err)}`);
    }
    if (d.frag !== 0) return this.#flows.drops.drop("fragmented", "from the upstream relay");
    this.onDatagram(d.dest, d.data);
  }
}

/** Read `conn` to its end (a control connection carries nothing more); resolves how it ended. */
async function drainUntilEnd(conn: Duplex): Promise<string> {
  const buf = new Uint8Array(256);
  try {
    while (await conn.read(buf) !== null) {
      // RFC 1928 gives the control connection no further messages: bytes are discarded.
    }
    return "closed";
  } catch (err) {
    return `failed: ${errorMessage(err)}`;
  }
}
