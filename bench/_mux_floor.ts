/**
 * The framing floor of lib/mux (issue 20), for bench/mux_streams.ts `--floor`: the least a Deno
 * program does to carry many streams over one connection, with lib/mux's `Session`/stream
 * surface (open with data, read, write, closeWrite, close, accept by iteration) and nothing of
 * lib/. Frames have yamux's 12-byte header (type, flags SYN/FIN, stream id, length) and are
 * queued into one buffer that leaves in one write once a turn stops queueing (8 microtasks in a
 * row without a frame, at most 64: lib/mux's writer and bench/floor_mux.ts's). The reader parses
 * whole frames from a growing buffer and copies each payload into the waiting reader's buffer,
 * or queues a copy.
 *
 * What this leaves out (what lib/mux does besides): flow control (windows, window updates,
 * growth; a reader that stops makes the other side buffer without bound), ACKs and the state
 * byte, resets, limits (streams, backlog, frame size, queued answers), keepalive and RTT,
 * go away and drain, protocol-error checks, lingering closes, stats and metrics, zero-copy bulk
 * paths. Not a multiplexer to use: the bar lib/mux's per-stream and per-frame cost is measured
 * against.
 * @module
 */

const headerBytes = 12;
const typeData = 0;
const flagSyn = 1;
const flagFin = 4;
/** The writer writes once this many microtasks in a row brought no frame... */
const idleTicks = 8;
/** ...or after this many, however busy the turn. */
const maxTicks = 64;
const readBufferBytes = 64 * 1024;

/** One stream of a {@linkcode Session}. */
export class Stream {
  #queue: Uint8Array[] = [];
  #finRx = false;
  #finTx = false;
  #closed = false;
  #waiter: { p: Uint8Array; resolve: (n: number | null) => void } | null = null;
  #viewWaiter: ((v: Uint8Array | null) => void) | null = null;

  constructor(readonly session: Session, readonly id: number, public synOwed: boolean) {}

  /** Read into `p`; null after the peer's FIN. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#queue.length > 0) return Promise.resolve(this.#take(p));
    if (this.#finRx || this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiter = { p, resolve });
  }

  /** The next received bytes themselves (a copy the floor made anyway); null after FIN. */
  readView(): Promise<Uint8Array | null> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    if (this.#finRx || this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#viewWaiter = resolve);
  }

  /** Nothing to release: every view is its own copy. */
  releaseView(): void {}

  /** Queue all of `p` (copied) as one frame. */
  write(p: Uint8Array): Promise<number> {
    if (this.#finTx) return Promise.reject(new Error("write after FIN"));
    this.session.send(this, 0, p);
    return Promise.resolve(p.length);
  }

  /** Send FIN. */
  closeWrite(): Promise<void> {
    if (!this.#finTx) {
      this.#finTx = true;
      this.session.send(this, flagFin, null);
      this.#maybeFree();
    }
    return Promise.resolve();
  }

  /** FIN if not sent; no more reads. */
  close(): void {
    this.#closed = true;
    this.#queue = [];
    void this.closeWrite();
    this.#waiter?.resolve(null);
    this.#waiter = null;
    this.#viewWaiter?.(null);
    this.#viewWaiter = null;
  }

  #take(p: Uint8Array): number {
    const head = this.#queue[0];
    const n = Math.min(p.length, head.length);
    p.set(n === head.length ? head : head.subarray(0, n));
    if (n === head.length) this.#queue.shift();
    else this.#queue[0] = head.subarray(n);
    return n;
  }

  /** A frame's payload (valid during the call) and whether it carried FIN. */
  _rx(payload: Uint8Array, fin: boolean): void {
    if (payload.length > 0 && !this.#closed) {
      const w = this.#waiter;
      const vw = this.#viewWaiter;
      if (vw !== null) {
        this.#viewWaiter = null;
        vw(payload.slice());
      } else if (w !== null) {
        this.#waiter = null;
        const n = Math.min(w.p.length, payload.length);
        w.p.set(n === payload.length ? payload : payload.subarray(0, n));
        if (n < payload.length) this.#queue.push(payload.slice(n));
        w.resolve(n);
      } else this.#queue.push(payload.slice());
    }
    if (fin) {
      this.#finRx = true;
      if (this.#queue.length === 0) {
        this.#waiter?.resolve(null);
        this.#waiter = null;
        this.#viewWaiter?.(null);
        this.#viewWaiter = null;
      }
      this.#maybeFree();
    }
  }

  #maybeFree(): void {
    if (this.#finRx && this.#finTx) this.session.streams.delete(this.id);
  }
}

/** Both ends of the floor's connection: frames out in one write per turn, frames in parsed. */
export class Session {
  readonly streams = new Map<number, Stream>();
  #out = new Uint8Array(64 * 1024);
  #outLen = 0;
  #spare = new Uint8Array(64 * 1024);
  #queued = 0;
  #writing = false;
  #nextId: number;
  #backlog: Stream[] = [];
  #acceptWaiter: ((s: Stream | null) => void) | null = null;
  #done = false;

  /** The dialling side (odd ids). */
  static client(conn: Deno.Conn): Session {
    return new Session(conn, 1);
  }

  /** The accepting side (even ids). */
  static server(conn: Deno.Conn): Session {
    return new Session(conn, 2);
  }

  private constructor(readonly conn: Deno.Conn, firstId: number) {
    this.#nextId = firstId;
    (conn as Deno.TcpConn).setNoDelay?.(true);
    this.#read().catch(() => this.#end());
  }

  /** A new stream; `data` rides on its SYN. */
  open(opts: { data?: Uint8Array; fin?: boolean } = {}): Promise<Stream> {
    const s = new Stream(this, this.#nextId, true);
    this.#nextId += 2;
    this.streams.set(s.id, s);
    this.send(s, 0, opts.data ?? null);
    if (opts.fin) void s.closeWrite();
    return Promise.resolve(s);
  }

  /** Close the connection. */
  close(): Promise<void> {
    this.#end();
    try {
      this.conn.close();
    } catch {
      // Already closed by the read side's end: nothing else to release.
    }
    return Promise.resolve();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Stream> {
    while (true) {
      const s = this.#backlog.shift() ??
        await new Promise<Stream | null>((r) => this.#acceptWaiter = r);
      if (s === null) return;
      yield s;
    }
  }

  #end(): void {
    this.#done = true;
    this.#acceptWaiter?.(null);
    this.#acceptWaiter = null;
  }

  /** Queue one frame of `s` (its SYN if owed), the payload copied. */
  send(s: Stream, flags: number, payload: Uint8Array | null): void {
    if (s.synOwed) {
      s.synOwed = false;
      flags |= flagSyn;
    }
    const n = payload?.length ?? 0;
    if (this.#outLen + headerBytes + n > this.#out.length) {
      const grown = new Uint8Array(Math.max(2 * this.#out.length, this.#outLen + headerBytes + n));
      grown.set(this.#out.subarray(0, this.#outLen));
      this.#out = grown;
    }
    const o = this.#out, at = this.#outLen, id = s.id;
    o[at] = 0, o[at + 1] = typeData, o[at + 2] = 0, o[at + 3] = flags;
    o[at + 4] = id >>> 24, o[at + 5] = id >>> 16, o[at + 6] = id >>> 8, o[at + 7] = id;
    o[at + 8] = n >>> 24, o[at + 9] = n >>> 16, o[at + 10] = n >>> 8, o[at + 11] = n;
    if (payload !== null) o.set(payload, at + headerBytes);
    this.#outLen = at + headerBytes + n;
    this.#queued++;
    if (!this.#writing) this.#write();
  }

  async #write(): Promise<void> {
    this.#writing = true;
    try {
      while (!this.#done) {
        for (let idle = 0, ticks = 0; idle < idleTicks && ticks < maxTicks; ticks++) {
          const before = this.#queued;
          await null;
          idle = this.#queued === before ? idle + 1 : 0;
        }
        if (this.#outLen === 0) break;
        const buf = this.#out, len = this.#outLen;
        this.#out = this.#spare, this.#outLen = 0, this.#spare = buf;
        for (let off = 0; off < len;) off += await this.conn.write(buf.subarray(off, len));
      }
    } catch {
      this.#end(); // the connection failed: the bench reports the streams that did not finish
    } finally {
      this.#writing = false;
    }
  }

  async #read(): Promise<void> {
    let buf = new Uint8Array(readBufferBytes), have = 0;
    while (!this.#done) {
      if (have === buf.length) {
        const grown = new Uint8Array(2 * buf.length);
        grown.set(buf);
        buf = grown;
      }
      const n = await this.conn.read(buf.subarray(have));
      if (n === null) break;
      have += n;
      let at = 0;
      while (have - at >= headerBytes) {
        const len = ((buf[at + 8] << 24) | (buf[at + 9] << 16) | (buf[at + 10] << 8) |
          buf[at + 11]) >>> 0;
        if (have - at < headerBytes + len) break;
        const flags = buf[at + 3];
        const id = ((buf[at + 4] << 24) | (buf[at + 5] << 16) | (buf[at + 6] << 8) |
          buf[at + 7]) >>> 0;
        const payload = buf.subarray(at + headerBytes, at + headerBytes + len);
        at += headerBytes + len;
        let s = this.streams.get(id);
        if (s === undefined && (flags & flagSyn) !== 0) {
          s = new Stream(this, id, false);
          this.streams.set(id, s);
          const w = this.#acceptWaiter;
          this.#acceptWaiter = null;
          if (w !== null) w(s);
          else this.#backlog.push(s);
        }
        s?._rx(payload, (flags & flagFin) !== 0);
      }
      buf.copyWithin(0, at, have);
      have -= at;
    }
    this.#end();
  }
}
