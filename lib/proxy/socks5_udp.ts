/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §7) for the socks5 proxy type: the relay socket the client
 * sends to (lib/udp `UdpAssociation`, bound on the address the client reached the TCP
 * listener at) and the way its datagrams leave -- from this host (lib/udp `UdpExit`,
 * ACL-checked on every resolved address) or through the chain's UDP carriage (a link, QUIC
 * datagrams, an upstream SOCKS5 relay: `opts.open`). They share one flow table
 * (destinations, idle timeout, queued bytes) and its drop counts, and count as
 * `warren_udp_*{relay="socks5-udp"}`.
 * @module
 */

import type { Logger } from "../log.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import type { Duplex } from "../net/duplex.ts";
import type { RelayStats } from "../net/relay.ts";
import {
  directUdpOpener,
  type Flow,
  type FlowLimits,
  FlowTable,
  UdpAssociation,
  type UdpAssociationEnd,
  type UdpChannel,
  type UdpChannelOpener,
  UdpDrops,
  type UdpExitOptions,
  udpListenerOf,
  UdpTally,
} from "../udp/mod.ts";
import type { ServedEnd } from "./proxy_type.ts";

/** What UDP ASSOCIATE needs beyond the listener: the ACL and the bounds of each association. */
export interface UdpAssociateOptions extends FlowLimits, UdpExitOptions {
  /**
   * Where datagrams leave (lib/proxy chain's `udp`: a link, QUIC, an upstream SOCKS5 relay);
   * `acl` is then checked here on names and IP literals, the far side resolving.
   * @default from this host (lib/udp `directUdpOpener` with `acl` and `prefer`)
   */
  open?: UdpChannelOpener;
}

/** A bound association of this process: where the client sends, and how to serve it. */
export interface LocalAssociation {
  /** The relay's address (the reply's BND.ADDR/BND.PORT). */
  addr: HostPort;
  /** Serve until the control connection ends, the idle timeout or `signal`; then close. */
  run(control: Duplex, signal: AbortSignal, idleTimeoutMs: number): Promise<ServedEnd>;
  /** Close without serving (the reply could not be sent). */
  close(): void;
}

/**
 * Open the way out (`opts.open`, or from this host) and bind an association for the client
 * at `socket.remote` (which said it sends from `requested`); bytes relayed count into
 * `bytes` (up = `aToB`). Rejects with a `NetError` when the relay cannot be bound or the way
 * out cannot be opened (lib/proxy `UdpUnsupportedError` names a hop that cannot carry UDP).
 */
export async function bindLocalAssociation(
  socket: { local: HostPort; remote: HostPort },
  requested: HostPort,
  opts: UdpAssociateOptions,
  bytes: RelayStats,
  log: Logger,
  signal: AbortSignal,
): Promise<LocalAssociation> {
  const listener = udpListenerOf(log);
  const table = new FlowTable<Flow>(opts, new UdpDrops(log, "socks5-udp", listener));
  const tally = new UdpTally("socks5-udp", bytes, listener);
  const open = opts.open ?? directUdpOpener(opts);
  let channel: UdpChannel;
  let assoc: UdpAssociation;
  try {
    channel = await open({ flows: table, tally, signal });
  } catch (err) {
    table.close();
    throw err;
  }
  try {
    assoc = await UdpAssociation.bind(socket, requested, table, tally, log);
  } catch (err) {
    channel.close();
    table.close();
    throw err;
  }
  // A bound method and a local, not arrows assigned in place: a function literal assigned to
  // a property is made in V8's old generation and keeps the association through scavenges
  // (tests/source_closure_test.ts).
  channel.onDatagram = assoc.deliver.bind(assoc);
  // Refused before a datagram moves on: by name or IP literal when the far side resolves;
  // here, literals and deny-by-name (UdpExit checks each resolved address).
  const acl = opts.acl && !opts.acl.empty ? opts.acl : undefined;
  const carried = opts.open !== undefined;
  const outward: UdpAssociation["onDatagram"] = (dest, payload) => {
    const refused = carried ? acl?.check(dest) : acl?.refusesName(dest);
    if (refused && !refused.allowed) {
      const target = joinHostPort(dest.host, dest.port);
      return table.drops.drop("not-allowed", `${target} refused by ${refused.rule}`);
    }
    channel.send(dest, payload);
  };
  assoc.onDatagram = outward;
  const close = () => {
    assoc.close();
    channel.close();
    table.close();
  };
  return {
    addr: assoc.addr,
    run: async (control, signal, idleTimeoutMs) => {
      try {
        const ended = channel.ended.then((why): UdpAssociationEnd => ({
          end: "error",
          failure: "udp-carrier",
          message: why,
        }));
        const end = await assoc.run(control, signal, idleTimeoutMs, ended);
        const counts = channel.counts?.();
        if (!counts) return end;
        const shown = Object.entries(counts).map(([k, v]) => `${k}=${v}`).join(" ");
        return { ...end, message: [end.message, shown].filter(Boolean).join("; ") };
      } finally {
        close();
      }
    },
    close,
  };
}
