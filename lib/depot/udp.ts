/**
 * SOCKS5 UDP ASSOCIATE through depot: the client sends its datagrams to a relay socket on
 * depot-server (lib/udp `UdpAssociation`), and they leave from the depot-local it chose (lib/udp
 * `UdpExit`, under the local's ACL). Between the two they ride one ordinary tunnel -- a TCP
 * tunnel connection or a mux stream, opened and authenticated like a CONNECT's (`associate
 * {id,key}` instead of `connect`) -- as `DatagramStream` frames, each holding a SOCKS5 UDP
 * datagram: the destination's address and the payload up, the source's and the answer down.
 * The tunnel is reliable and ordered, so what is lost or reordered is lost at the UDP ends,
 * counted there; a backlog past the queued-byte bound is dropped ("queue-full"), not buffered.
 * The association ends with the client's TCP connection, on the idle timeout, with the tunnel
 * or with the exit's control connection.
 * @module
 */

import type { Logger } from "../log.ts";
import { closeQuietly, type Duplex, errorMessage, type HostPort } from "../net/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../socks5/mod.ts";
import {
  DatagramStream,
  type Flow,
  type FlowLimits,
  FlowTable,
  type UdpAssociation,
  type UdpAssociationEnd,
  UdpDrops,
  UdpExit,
  type UdpExitOptions,
  UdpTally,
} from "../udp/mod.ts";

/** How the tunnel ended: at a frame boundary ("done"), or not ("error", with why). */
interface TunnelEnd {
  end: "done" | "error";
  message?: string;
}

/**
 * Read the tunnel's frames into `onDatagram` until it ends; a frame that is not a SOCKS5 UDP
 * datagram of fragment 0 ends it too (the peer does not speak the protocol). `frame` is the
 * whole datagram (header and payload), for a relay that passes it on as it came. A throw of
 * `onDatagram` (a bug, or a policy hook's) loses that datagram only: an "internal" drop in
 * `drops`, logged by the error; before, it ended the whole association.
 */
async function readTunnel(
  stream: DatagramStream,
  drops: UdpDrops,
  onDatagram: (addr: HostPort, payload: Uint8Array, frame: Uint8Array) => void,
): Promise<TunnelEnd> {
  try {
    for (let frame = await stream.read(); frame !== null; frame = await stream.read()) {
      const d = decodeSocks5Udp(frame);
      if (d.frag !== 0) return { end: "error", message: "fragment on the tunnel" };
      try {
        onDatagram(d.dest, d.data, frame);
      } catch (err) {
        drops.failed(d.dest, err);
      }
    }
    return { end: "done" };
  } catch (err) {
    return { end: "error", message: errorMessage(err) };
  }
}

/**
 * depot-server's side: relay `assoc`'s datagrams over `tunnel` (up), and the tunnel's answers
 * to the client (down), until the client's `control` connection ends, `idleTimeoutMs` passes,
 * `signal` fires or the tunnel ends. Closes the tunnel and the association.
 */
export async function relayAssociation(
  assoc: UdpAssociation,
  tunnel: Duplex,
  table: FlowTable<Flow>,
  tally: UdpTally,
  control: Duplex,
  signal: AbortSignal,
  idleTimeoutMs: number,
): Promise<UdpAssociationEnd> {
  const stream = new DatagramStream(tunnel, table);
  // A local first: a function literal assigned to a property is made in V8's old generation
  // and keeps the association through scavenges (tests/source_closure_test.ts).
  const toTunnel: UdpAssociation["onDatagram"] = (dest, payload) => {
    if (stream.send(encodeSocks5Udp(dest, payload))) tally.up(payload.length);
  };
  assoc.onDatagram = toTunnel;
  const ended = new AbortController();
  const onAbort = () => ended.abort();
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) onAbort();
  let tunnelEnd: TunnelEnd | undefined;
  const reading = readTunnel(stream, table.drops, (src, payload) => assoc.deliver(src, payload))
    .then((e) => {
      tunnelEnd = e;
      ended.abort();
    });
  try {
    const r = await assoc.run(control, ended.signal, idleTimeoutMs);
    if (r.end !== "aborted" || !tunnelEnd) return r;
    // The tunnel ended first: the exit's side went away.
    return tunnelEnd.end === "done"
      ? { ...r, end: "done", failure: "exit-closed" }
      : { ...r, end: "done", failure: "exit-error", message: tunnelEnd.message };
  } finally {
    signal.removeEventListener("abort", onAbort);
    closeQuietly(tunnel);
    await reading;
    table.close();
  }
}

/**
 * A SOCKS5 UDP ASSOCIATE bound at depot-server: its relay socket, flow table and counts, so the
 * request paths (an exit held here, or one handed over to the instance holding it) close, relay
 * and log it the same way.
 */
export class BoundAssociation {
  constructor(
    readonly assoc: UdpAssociation,
    readonly table: FlowTable<Flow>,
    readonly tally: UdpTally,
  ) {}

  /** Close an association that will not be relayed: its socket and its flows. */
  close(): void {
    this.assoc.close();
    this.table.close();
  }

  /** {@linkcode relayAssociation} over `tunnel`; closes the tunnel and the association. */
  relay(
    tunnel: Duplex,
    control: Duplex,
    signal: AbortSignal,
    idleTimeoutMs: number,
  ): Promise<UdpAssociationEnd> {
    return relayAssociation(
      this.assoc,
      tunnel,
      this.table,
      this.tally,
      control,
      signal,
      idleTimeoutMs,
    );
  }
}

/** How a handed-over association ended at the holder: which side ended it, and how. */
export interface HandedAssociationEnd extends TunnelEnd {
  /** "instance": the one the client reached ended it (or its link went); "exit": the exit. */
  by: "instance" | "exit";
}

/**
 * The holder's side of an association another depot-server instance handed over (lib/cluster):
 * the frames that instance's relay sends on `link` go on to the exit's `tunnel` as they came,
 * and the exit's answers back, each checked (a SOCKS5 UDP datagram of fragment 0) and counted
 * in `tally`, every write within `table`'s queued-byte bound (over it: dropped, "queue-full").
 * The client, its relay socket and the idle timeout stay with the other instance: this ends
 * when either stream ends or `signal` fires, and closes both and the table.
 */
export async function passAssociation(
  link: Duplex,
  tunnel: Duplex,
  table: FlowTable<Flow>,
  tally: UdpTally,
  signal: AbortSignal,
): Promise<HandedAssociationEnd> {
  const toExit = new DatagramStream(tunnel, table);
  const toInstance = new DatagramStream(link, table);
  const closeBoth = () => {
    closeQuietly(link);
    closeQuietly(tunnel);
  };
  signal.addEventListener("abort", closeBoth, { once: true });
  if (signal.aborted) closeBoth();
  try {
    // Whichever side ends first ends the other: closing both ends the second reader too.
    const [up, down] = [
      readTunnel(toInstance, table.drops, (_dest, payload, frame) => {
        if (toExit.send(frame)) tally.up(payload.length);
      }),
      readTunnel(toExit, table.drops, (_src, payload, frame) => {
        if (toInstance.send(frame)) tally.down(payload.length);
      }),
    ].map((p, i) =>
      p.then((e): HandedAssociationEnd => {
        closeBoth();
        return { ...e, by: i === 0 ? "instance" : "exit" };
      })
    );
    const first = await Promise.race([up, down]);
    await Promise.all([up, down]);
    return first;
  } finally {
    signal.removeEventListener("abort", closeBoth);
    closeBoth();
    table.close();
  }
}

/** What a depot-local's UDP exit needs: the ACL, name resolution and its bounds. */
export interface DepotUdpExitOptions extends FlowLimits, UdpExitOptions {
  /** The local's policy hook: false refuses a destination ("not-allowed"). */
  allow?: (dest: HostPort) => boolean;
}

/** Counters of one association at the local, for its log line. */
export interface ExitAssociationResult {
  end: "done" | "error";
  /** Why it ended in error; the drops by reason otherwise (when any). */
  message?: string;
  datagramsUp: number;
  datagramsDown: number;
  bytesUp: number;
  bytesDown: number;
  drops: number;
}

/**
 * depot-local's side: send the tunnel's datagrams to their destinations and their answers
 * back, until the tunnel ends (the server ended the association) or `signal` fires.
 * `bytes` receives the payload counts (up = `aToB`). Closes the tunnel.
 */
export async function serveExitAssociation(
  tunnel: Duplex,
  opts: DepotUdpExitOptions,
  bytes: { aToB: number; bToA: number },
  signal: AbortSignal,
  log: Logger,
): Promise<ExitAssociationResult> {
  const drops = new UdpDrops(log, "depot-local");
  const table = new FlowTable<Flow>(opts, drops);
  const tally = new UdpTally("depot-local", bytes);
  const stream = new DatagramStream(tunnel, table);
  const exit = new UdpExit(table, tally, opts, (src, payload) => {
    if (stream.send(encodeSocks5Udp(src, payload))) tally.down(payload.length);
  });
  const onAbort = () => closeQuietly(tunnel);
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) onAbort();
  try {
    const r = await readTunnel(stream, drops, (dest, payload) => {
      if (opts.allow && !opts.allow(dest)) {
        return drops.drop("not-allowed", `${dest.host}:${dest.port} refused by the policy`);
      }
      // The frame is the reader's own copy: the payload view stays valid until sent.
      exit.send(dest, payload);
    });
    return {
      ...r,
      datagramsUp: tally.datagramsUp,
      datagramsDown: tally.datagramsDown,
      bytesUp: tally.bytesUp,
      bytesDown: tally.bytesDown,
      drops: drops.total,
      ...(drops.total > 0 && !r.message ? { message: JSON.stringify(drops.snapshot()) } : {}),
    };
  } finally {
    signal.removeEventListener("abort", onAbort);
    exit.close();
    closeQuietly(tunnel);
  }
}
