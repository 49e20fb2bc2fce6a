/**
 * `DatagramStream`: datagrams carried over a byte stream (a TCP connection, a mux stream),
 * each as one frame -- u16 BE length, then the datagram -- so message boundaries survive the
 * stream. Reliable and in order, unlike UDP: loss and reordering on such a path can only come
 * from the ends. Sends are queued one after another within a flow table's queued-byte bound
 * (over it: dropped, counted "queue-full"), so a slow stream holds a bounded backlog instead
 * of memory without end.
 * @module
 */

import type { Duplex } from "../net/duplex.ts";
import { writeAll } from "../net/duplex.ts";
import { BufferedReader } from "../net/reader.ts";
import type { Flow, FlowTable } from "./flows.ts";

/** Largest datagram a frame carries (its length is a u16). */
export const maxDatagramFrameBytes = 65_535;
/** Bytes of a frame before its datagram. */
const frameHeadBytes = 2;

/** One datagram as a frame (`datagram` over {@linkcode maxDatagramFrameBytes}: RangeError). */
export function encodeDatagramFrame(datagram: Uint8Array): Uint8Array {
  if (datagram.length > maxDatagramFrameBytes) {
    throw new RangeError(`datagram of ${datagram.length} bytes does not fit a frame`);
  }
  const out = new Uint8Array(frameHeadBytes + datagram.length);
  out[0] = datagram.length >> 8;
  out[1] = datagram.length & 0xff;
  out.set(datagram, frameHeadBytes);
  return out;
}

/** Framed datagrams both ways over `conn`. */
export class DatagramStream {
  readonly #conn: Duplex;
  readonly #reader: BufferedReader;
  readonly #table: FlowTable<Flow>;
  #chain: Promise<void> = Promise.resolve();
  #failed = false;

  /** Frames over `conn`; sends wait within `table`'s queued-byte bound. */
  constructor(conn: Duplex, table: FlowTable<Flow>) {
    this.#conn = conn;
    this.#reader = new BufferedReader(conn);
    this.#table = table;
  }

  /**
   * Queue `datagram` for the stream. False when it is not sent, each counted as a drop: too
   * big for a frame ("too-big"), over the queued-byte bound ("queue-full") or the stream
   * already failed ("send-failed"); a write failure ends every later send (the reader sees
   * the end).
   */
  send(datagram: Uint8Array): boolean {
    if (this.#failed) {
      this.#table.drops.drop("send-failed", "the stream carrying datagrams is gone");
      return false;
    }
    if (datagram.length > maxDatagramFrameBytes) {
      this.#table.drops.drop("too-big", `${datagram.length}-byte datagram over a stream`);
      return false;
    }
    const frame = encodeDatagramFrame(datagram);
    if (!this.#table.reserve(frame.length)) return false;
    this.#chain = this.#chain.then(async () => {
      try {
        if (!this.#failed) await writeAll(this.#conn, frame);
      } catch {
        // The stream is gone: its reader sees the end and ends the association.
        this.#failed = true;
      } finally {
        this.#table.release(frame.length);
      }
    });
    return true;
  }

  /**
   * The next datagram (a copy the caller owns), or null when the stream ended between
   * frames. Rejects with a `ProtocolError` ("eof") when it ends inside one.
   */
  async read(): Promise<Uint8Array | null> {
    const head = await this.#reader.readExactOrEof(frameHeadBytes);
    if (head === null) return null;
    return await this.#reader.readExact((head[0] << 8) | head[1]);
  }

  /** Wait until every queued frame is written (or the stream failed). */
  flushed(): Promise<void> {
    return this.#chain;
  }
}
