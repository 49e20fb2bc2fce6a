/**
 * UDP over the QUIC link: each association still opens one QUIC stream (the UDP request of
 * udp_link.ts, its result, and its lifetime), but its datagrams travel as QUIC datagrams
 * (RFC 9221: unreliable, unordered, no retransmission -- UDP's own semantics), tagged with the
 * association id the near node chose:
 *
 * | QUIC datagram | u32 association id · SOCKS5 UDP header (FRAG 0, address) · payload |
 * | ------------- | ------------------------------------------------------------------- |
 *
 * A datagram whose packet does not fit the path (`maxDatagramSize`: about 1,160 bytes until
 * path MTU discovery raises it) goes as a frame on the association's stream instead, and is
 * counted (`onStream`); so does every datagram when the peer did not negotiate QUIC
 * datagrams (`maxDatagramSize` 0), which is logged once per connection.
 * @module
 */

import type { Logger } from "../log.ts";
import { type Duplex, errorMessage, type HostPort } from "../net/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../socks5/mod.ts";
import type { Flow, FlowTable, UdpChannel, UdpDrops } from "../udp/mod.ts";
import { StreamUdpChannel } from "./udp_link.ts";

/** Bytes of the association id in front of every QUIC datagram. */
const idBytes = 4;

/** Counters of one QUIC connection's datagrams. */
export interface QuicDatagramStats {
  /** Datagrams sent and received as QUIC datagrams. */
  sent: number;
  received: number;
  /** Datagrams too large for a QUIC datagram (or with datagrams off), sent on the stream. */
  onStream: number;
  /** Received for an association this connection does not hold (ended, or never opened). */
  unknownAssociation: number;
}

/** What {@linkcode QuicDatagrams} uses of a `Deno.QuicConn` (tests drive it in memory). */
export type QuicDatagramConn = Pick<
  Deno.QuicConn,
  "maxDatagramSize" | "readDatagram" | "sendDatagram" | "remoteAddr"
>;

/** An association's receiver of QUIC datagrams and the drops a throw of it counts in. */
interface DatagramReceiver {
  handler: (body: Uint8Array) => void;
  drops: UdpDrops;
}

/**
 * The QUIC datagrams of one connection, shared by its associations: one read loop hands each
 * datagram to its association by id. A handler that throws loses that datagram only (an
 * "internal" drop in its association's `UdpDrops`, logged): the loop serves the connection's
 * other associations and ends only with the connection (a throw escaping it would be an
 * unhandled rejection, which ends a Deno process).
 */
export class QuicDatagrams {
  readonly stats: QuicDatagramStats = { sent: 0, received: 0, onStream: 0, unknownAssociation: 0 };
  readonly #conn: QuicDatagramConn;
  readonly #peer: HostPort;
  readonly #receivers = new Map<number, DatagramReceiver>();
  #nextId = 1;

  /** Start reading `conn`'s datagrams (until it closes); says so once if it has none. */
  constructor(conn: QuicDatagramConn, log: Logger) {
    this.#conn = conn;
    this.#peer = { host: conn.remoteAddr.hostname, port: conn.remoteAddr.port };
    if (!this.enabled) {
      log.warn("quic link: the peer did not negotiate QUIC datagrams; UDP rides the streams");
    }
    void this.#readLoop(); // never rejects: it ends with the connection
  }

  /** Whether the connection carries QUIC datagrams at all. */
  get enabled(): boolean {
    return this.#conn.maxDatagramSize > idBytes;
  }

  /** A fresh association id (the near node chooses them). */
  nextId(): number {
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0 || 1;
    return id;
  }

  /**
   * Deliver datagrams tagged `id` to `handler`, a throw of it counted in `drops` (a later
   * registration of the same id wins).
   */
  register(id: number, drops: UdpDrops, handler: (body: Uint8Array) => void): void {
    this.#receivers.set(id, { handler, drops });
  }

  /** Stop delivering `id`'s datagrams. */
  unregister(id: number, handler: (body: Uint8Array) => void): void {
    if (this.#receivers.get(id)?.handler === handler) this.#receivers.delete(id);
  }

  /** Whether a body of `n` bytes fits one QUIC datagram on this path now. */
  fits(n: number): boolean {
    return idBytes + n <= this.#conn.maxDatagramSize;
  }

  /**
   * Send `body` (it {@linkcode fits}) for association `id` as one QUIC datagram, within
   * `flows`' queued-bytes bound: false when dropped at once; later failures are counted in
   * `flows`' drops.
   */
  send(id: number, body: Uint8Array, flows: FlowTable<Flow>): boolean {
    const packet = new Uint8Array(idBytes + body.length);
    new DataView(packet.buffer).setUint32(0, id);
    packet.set(body, idBytes);
    if (!flows.reserve(packet.length)) return false;
    this.stats.sent++;
    this.#conn.sendDatagram(packet).then(
      () => flows.release(packet.length),
      (err) => {
        flows.release(packet.length);
        const msg = errorMessage(err);
        flows.drops.drop(
          /too large/i.test(msg) ? "too-big" : "send-failed",
          `quic datagram: ${msg}`,
        );
      },
    );
    return true;
  }

  async #readLoop(): Promise<void> {
    while (true) {
      let d: Uint8Array;
      try {
        d = await this.#conn.readDatagram();
      } catch {
        return; // the connection closed: its associations end with their streams
      }
      if (d.length < idBytes) continue; // not ours to parse: nothing to deliver
      this.stats.received++;
      const id = new DataView(d.buffer, d.byteOffset).getUint32(0);
      const r = this.#receivers.get(id);
      if (!r) {
        this.stats.unknownAssociation++;
        continue;
      }
      try {
        r.handler(d.subarray(idBytes));
      } catch (err) {
        r.drops.failed(this.#peer, err);
      }
    }
  }
}

/**
 * One association over the QUIC link: datagrams as QUIC datagrams when they fit, as frames on
 * the association's stream when they do not; answers from either. Ends with the stream.
 */
export class QuicUdpChannel implements UdpChannel {
  onDatagram: UdpChannel["onDatagram"] = () => {};
  readonly ended: Promise<string>;
  readonly #id: number;
  readonly #stream: StreamUdpChannel;
  readonly #dgrams: QuicDatagrams;
  readonly #flows: FlowTable<Flow>;
  readonly #counted: (bytes: number) => void;
  readonly #handler: (body: Uint8Array) => void;
  /** Datagrams this association sent as QUIC datagrams, and on its stream (too big). */
  #asDatagrams = 0;
  #onStream = 0;
  #closed = false;

  /**
   * Association `id` on `dgrams`' connection, `stream` its QUIC stream (after the result);
   * `counted` counts each datagram's payload sent on, whichever way it went.
   */
  constructor(
    id: number,
    stream: Duplex,
    dgrams: QuicDatagrams,
    flows: FlowTable<Flow>,
    counted: (bytes: number) => void,
  ) {
    this.#id = id;
    this.#dgrams = dgrams;
    this.#flows = flows;
    this.#counted = counted;
    this.#stream = new StreamUdpChannel(stream, flows, counted);
    // Bound methods, not arrows: a function literal assigned to a property is made in V8's
    // old generation and keeps the channel through scavenges (tests/source_closure_test.ts).
    this.#stream.onDatagram = this.#fromStream.bind(this);
    this.#handler = this.#fromDatagram.bind(this);
    dgrams.register(id, flows.drops, this.#handler);
    this.ended = this.#stream.ended;
  }

  /** A datagram that came as a frame on the association's stream. */
  #fromStream(from: HostPort, data: Uint8Array): void {
    this.onDatagram(from, data);
  }

  /** A QUIC datagram of this association (a SOCKS5 UDP datagram). */
  #fromDatagram(body: Uint8Array): void {
    let d;
    try {
      d = decodeSocks5Udp(body);
    } catch (err) {
      return this.#flows.drops.drop("malformed", `quic datagram: ${errorMessage(err)}`);
    }
    if (d.frag !== 0) return this.#flows.drops.drop("fragmented", "quic datagram");
    this.onDatagram(d.dest, d.data);
  }

  send(dest: HostPort, data: Uint8Array): boolean {
    if (this.#closed) return false;
    let body: Uint8Array;
    try {
      body = encodeSocks5Udp(dest, data);
    } catch (err) {
      this.#flows.drops.drop("malformed", errorMessage(err));
      return false;
    }
    if (this.#dgrams.fits(body.length)) {
      if (!this.#dgrams.send(this.#id, body, this.#flows)) return false;
      this.#asDatagrams++;
      this.#counted(data.length);
      return true;
    }
    if (!this.#stream.send(dest, data)) return false;
    this.#dgrams.stats.onStream++;
    this.#onStream++;
    return true;
  }

  counts(): Record<string, number> {
    return { quicDatagrams: this.#asDatagrams, onStream: this.#onStream };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dgrams.unregister(this.#id, this.#handler);
    this.#stream.close();
  }
}
