/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §7) for the socks5 proxy type: both halves of lib/udp's
 * association in this process — the relay socket the client sends to (`UdpAssociation`,
 * bound on the address the client reached the TCP listener at) and the outbound sockets
 * its datagrams leave from (`UdpExit`, ACL-checked on every resolved address). They share
 * one flow table (destinations, idle timeout, queued bytes) and its drop counts, and count
 * as `warren_udp_*{relay="socks5-udp"}`.
 * @module
 */

import type { Logger } from "../log.ts";
import type { HostPort } from "../net/addr.ts";
import type { Duplex } from "../net/duplex.ts";
import type { RelayStats } from "../net/relay.ts";
import {
  type Flow,
  type FlowLimits,
  FlowTable,
  UdpAssociation,
  UdpDrops,
  UdpExit,
  type UdpExitOptions,
  UdpTally,
} from "../udp/mod.ts";
import type { ServedEnd } from "./proxy_type.ts";

/** What UDP ASSOCIATE needs beyond the listener: the ACL and the bounds of each association. */
export interface UdpAssociateOptions extends FlowLimits, UdpExitOptions {}

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
 * Bind an association for the client at `socket.remote` (which said it sends from
 * `requested`); bytes relayed count into `bytes` (up = `aToB`). Rejects with a `NetError`
 * when the relay cannot be bound.
 */
export async function bindLocalAssociation(
  socket: { local: HostPort; remote: HostPort },
  requested: HostPort,
  opts: UdpAssociateOptions,
  bytes: RelayStats,
  log: Logger,
): Promise<LocalAssociation> {
  const table = new FlowTable<Flow>(opts, new UdpDrops(log, "socks5-udp"));
  const tally = new UdpTally("socks5-udp", bytes);
  let assoc: UdpAssociation;
  try {
    assoc = await UdpAssociation.bind(socket, requested, table, tally, log);
  } catch (err) {
    table.close();
    throw err;
  }
  const exit = new UdpExit(table, tally, opts, (src, payload) => assoc.deliver(src, payload));
  assoc.onDatagram = (dest, payload) => exit.send(dest, payload);
  return {
    addr: assoc.addr,
    run: async (control, signal, idleTimeoutMs) => {
      try {
        return await assoc.run(control, signal, idleTimeoutMs);
      } finally {
        exit.close();
      }
    },
    close: () => {
      assoc.close();
      exit.close();
    },
  };
}
