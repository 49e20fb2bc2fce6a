/**
 * The client's half of a UDP tunnel: each tunnel stream the server opens for a public peer
 * gets its own UDP socket toward the local service (so the service's answers come back to
 * that peer only), datagrams framed both ways over the stream (lib/udp `DatagramStream`).
 * The flows live in one bounded lib/udp `FlowTable` per client: idle ones close, at most
 * `maxFlows` are held, and queued bytes are capped.
 * @module
 */

import type { Logger } from "../log.ts";
import {
  type BufferedReader,
  errorMessage,
  type HostPort,
  joinHostPort,
  withPrefix,
} from "../net/mod.ts";
import { resolveHost } from "../net/dial.ts";
import type { Stream } from "../mux/mod.ts";
import { DatagramStream, type FlowTable, sendCounted, UdpSocket, UdpTally } from "../udp/mod.ts";

/** A local UDP service exposed on a public UDP port of the server. */
export interface UdpTunnelSpec {
  /** Port the server opens publicly. */
  publicPort: number;
  /** Local address its datagrams are relayed to. */
  local: HostPort;
}

/** One flow on the client: the tunnel stream and the socket toward the local service. */
export class LocalUdpFlow {
  constructor(readonly stream: Stream, readonly sock: UdpSocket) {}
  close(): void {
    this.stream.close();
    void this.sock.close(); // the port is an ephemeral one: nobody waits to bind it again
  }
}

/** How one UDP tunnel stream ended, for the client's "stream closed" line. */
export interface UdpStreamResult {
  /** Datagrams and payload bytes to the local service and back. */
  up: number;
  down: number;
  bytesUp: number;
  bytesDown: number;
}

/**
 * A socket for a flow to `target`: bound on the wildcard address of its family, so the
 * kernel picks the source address the service answers to. Rejects when `target` does not
 * resolve or no socket can be bound (the caller replies "dial-failed").
 */
export async function openLocalUdp(target: HostPort): Promise<{ sock: UdpSocket; to: HostPort }> {
  const [ip] = await resolveHost(target.host, "ipv4");
  const sock = await UdpSocket.bind(ip.includes(":") ? "::" : "0.0.0.0", 0);
  return { sock, to: { host: ip, port: target.port } };
}

/**
 * Relay one UDP tunnel stream (its StreamReply already written; `reader` holds what was read
 * past the ControlMsg) to `to` through `sock`, as flow `key` of `table`, until either side
 * ends it: the server closes the stream (the peer's flow expired there) or the table closes
 * the flow (idle, evicted). Datagrams from any other source than `to` are dropped. Counted
 * in the `warren_udp_*` counters of relay "tunnel-client" (up: toward the local service).
 */
export async function relayUdpStream(
  stream: Stream,
  reader: BufferedReader,
  sock: UdpSocket,
  to: HostPort,
  key: string,
  table: FlowTable<LocalUdpFlow>,
  log: Logger,
): Promise<UdpStreamResult> {
  const ds = new DatagramStream(withPrefix(stream, reader.takeBuffered()), table);
  const flow = table.getOrOpen(key, () => new LocalUdpFlow(stream, sock));
  const toKey = joinHostPort(to.host, to.port);
  const tally = new UdpTally("tunnel-client");
  sock.onMessage = table.drops.guard((data, from) => {
    if (joinHostPort(from.host, from.port) !== toKey) {
      return table.drops.drop("wrong-source", `local datagram from ${from.host}:${from.port}`);
    }
    table.touch(key);
    if (ds.send(data)) tally.down(data.length);
  });
  try {
    for (let d; (d = await ds.read()) !== null;) {
      table.touch(key);
      if (sendCounted(sock, d, to, table)) tally.up(d.length);
    }
  } catch (err) {
    log.debug("udp tunnel stream failed", { dest: toKey, error: errorMessage(err) });
  } finally {
    if (table.peek(key) === flow) table.delete(key);
    else flow.close();
  }
  return {
    up: tally.datagramsUp,
    down: tally.datagramsDown,
    bytesUp: tally.bytesUp,
    bytesDown: tally.bytesDown,
  };
}
