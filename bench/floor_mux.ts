/**
 * The floor for any Deno multiplexed tunnel (issue 20): the unavoidable work of depot `--mux`
 * and of the HTTP tunnel, with `Deno.listen`/`Deno.connect` and nothing of lib/. One long-lived
 * TCP connection between two processes carries many short streams as frames (an 8-byte header:
 * stream id u32, kind u8, length u24; kinds open, data, FIN). Frames queued during one turn of
 * the event loop leave in one write: the writer yields microtasks until 8 in a row brought no
 * frame (at most 64), as lib/mux's does, since a minimal program that wrote each frame at once
 * would make several writes per stream where one does.
 *
 * - `BENCH_MODE=depot-server`: SOCKS5 clients on one port, the exit's mux connection on another
 *   (prints `{"port":N,"tunnel":M}`). Per client: accept, SOCKS5 greeting and CONNECT to an IPv4
 *   address (as bench/floor_reverse.ts), an open frame carrying the 6-byte address, wait for
 *   the exit's open frame back, reply, relay (data frames, FIN frame) both ways, close.
 * - `BENCH_MODE=depot-local BENCH_SERVER=127.0.0.1:M`: dials the mux connection; per open
 *   frame: dial the address, answer with an open frame, relay, close.
 * - `BENCH_MODE=tunnel-server`: public HTTP connections on one port, the client's mux
 *   connection on another (prints the same JSON). A public connection is a stream opened by its
 *   first bytes (open frame with data); its bytes are relayed both ways, untouched.
 * - `BENCH_MODE=tunnel-client BENCH_SERVER=127.0.0.1:M BENCH_TARGET=127.0.0.1:P`: per open
 *   frame: dial the origin, write the request, relay both ways (a stream per public
 *   connection, so keep-alive requests follow on the same origin connection, as the tunnel's).
 *
 * What this leaves out (what depot and the tunnel do besides): authentication and the
 * control handshake; flow control (no windows, no window updates: a slow reader makes the
 * other side buffer without bound; only the sender's queue is bounded), keepalive pings, limits, timeouts, resets, error
 * replies, logs, metrics; the tunnel's HTTP head parsing, Host routing and X-Forwarded-*;
 * depot's request id and key. Not a proxy to run: the bar bench/depot.ts and bench/tunnel.ts
 * compare depot `--mux` and the tunnel with. Every socket gets TCP_NODELAY. A floor of the cost
 * per connection and per request only: its bulk rows are none (16 KiB reads, a copy per frame).
 *
 * Writer variants for experiments (environment, both processes; defaults as above):
 * `BENCH_IDLE_TICKS` and `BENCH_MAX_TICKS` (the quiet and most microtasks the writer yields),
 * `BENCH_FLUSH_FRAMES=N` (a batch of N frames is written at once, mid-turn, when no write is in
 * flight: a turn's frames leave in pieces of N instead of all after the turn).
 * @module
 */

/** Read buffer of a stream's TCP side. */
const bufBytes = 16 * 1024;
/** Read buffer of the mux connection. */
const muxReadBytes = 64 * 1024;
const headerBytes = 8;
/** Past this many queued bytes a pump waits for the writer (no windows, but bounded memory). */
const maxQueuedBytes = 1024 * 1024;
const kindOpen = 1, kindData = 2, kindFin = 3;
/** The writer writes once this many microtasks in a row brought no frame... */
const idleTicks = Number(Deno.env.get("BENCH_IDLE_TICKS") ?? 8);
/** ...or after this many, however busy the turn. */
const maxTicks = Number(Deno.env.get("BENCH_MAX_TICKS") ?? 64);
/** A batch this many frames long is written at once, mid-turn (with no write in flight). */
const flushFrames = Number(Deno.env.get("BENCH_FLUSH_FRAMES") ?? Infinity);

const noAuth = new Uint8Array([5, 0]);
const succeeded = new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);

/** One stream: its TCP side once known, writes to it in order, both directions' ends. */
interface Stream {
  conn?: Deno.TcpConn;
  /** Writes to `conn` in arrival order (and, until it is dialled, the dial). */
  chain: Promise<unknown>;
  /** Set on the server side until the peer's open frame comes back. */
  opened?: () => void;
  ends: number;
}

/** One side of the mux connection. */
class Mux {
  readonly streams = new Map<number, Stream>();
  #out = new Uint8Array(64 * 1024);
  #outLen = 0;
  #spare = new Uint8Array(64 * 1024);
  #queued = 0;
  #writing = false;
  /** Pumps waiting for the writer to catch up (a bulk stream). */
  #drained: (() => void)[] = [];
  #nextId = 1;

  constructor(
    readonly conn: Deno.TcpConn,
    readonly onOpen: (id: number, payload: Uint8Array) => void,
  ) {}

  newId(): number {
    return this.#nextId++;
  }

  /** Queue one frame (the payload is copied) and make sure the writer runs. */
  send(id: number, kind: number, payload?: Uint8Array): void {
    const n = payload?.length ?? 0;
    if (this.#outLen + headerBytes + n > this.#out.length) {
      const grown = new Uint8Array(Math.max(2 * this.#out.length, this.#outLen + headerBytes + n));
      grown.set(this.#out.subarray(0, this.#outLen));
      this.#out = grown;
    }
    const o = this.#out, at = this.#outLen;
    o[at] = id >>> 24, o[at + 1] = id >>> 16, o[at + 2] = id >>> 8, o[at + 3] = id;
    o[at + 4] = kind, o[at + 5] = n >>> 16, o[at + 6] = n >>> 8, o[at + 7] = n;
    if (payload) o.set(payload, at + headerBytes);
    this.#outLen = at + headerBytes + n;
    this.#queued++;
    this.#batchFrames++;
    if (!this.#writing) this.#write();
    else if (this.#batchFrames >= flushFrames && !this.#busy) this.#flushEarly();
  }

  /** Frames in the batch now (for `BENCH_FLUSH_FRAMES`). */
  #batchFrames = 0;
  /** A transport write is in flight. */
  #busy = false;
  /** The early flush in flight, if any. */
  #early: Promise<void> | null = null;

  /** `BENCH_FLUSH_FRAMES`: write the batch now, mid-turn, with no other write in flight. */
  #flushEarly(): void {
    const b = this.#out.slice(0, this.#outLen);
    this.#outLen = 0;
    this.#batchFrames = 0;
    this.#busy = true;
    this.#early = (async () => {
      for (let off = 0; off < b.length;) off += await this.conn.write(b.subarray(off));
      this.#busy = false;
      this.#early = null;
    })();
  }

  async #write(): Promise<void> {
    this.#writing = true;
    try {
      while (true) {
        for (let idle = 0, ticks = 0; idle < idleTicks && ticks < maxTicks; ticks++) {
          const before = this.#queued;
          await null;
          idle = this.#queued === before ? idle + 1 : 0;
        }
        while (this.#early) await this.#early;
        if (this.#outLen === 0) break;
        const buf = this.#out, len = this.#outLen;
        this.#out = this.#spare, this.#outLen = 0, this.#spare = buf;
        this.#batchFrames = 0;
        this.#busy = true;
        for (let off = 0; off < len;) off += await this.conn.write(buf.subarray(off, len));
        this.#busy = false;
        for (const d of this.#drained.splice(0)) d();
      }
    } finally {
      this.#writing = false;
    }
  }

  /** Wait while more than `maxQueuedBytes` wait for the writer (bulk backpressure). */
  backpressure(): Promise<void> | undefined {
    if (this.#outLen <= maxQueuedBytes) return;
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  /** Read frames until the connection ends; hand each to its stream. */
  async read(): Promise<void> {
    let buf = new Uint8Array(muxReadBytes), have = 0;
    while (true) {
      if (have === buf.length) {
        const grown = new Uint8Array(2 * buf.length);
        grown.set(buf);
        buf = grown;
      }
      const n = await this.conn.read(buf.subarray(have));
      if (n === null) return;
      have += n;
      let at = 0;
      while (have - at >= headerBytes) {
        const len = (buf[at + 5] << 16) | (buf[at + 6] << 8) | buf[at + 7];
        if (have - at < headerBytes + len) break;
        const id = ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
        const kind = buf[at + 4];
        const payload = buf.subarray(at + headerBytes, at + headerBytes + len);
        at += headerBytes + len;
        if (kind === kindOpen) this.onOpen(id, payload);
        else this.#deliver(id, kind, payload);
      }
      buf.copyWithin(0, at, have);
      have -= at;
    }
  }

  #deliver(id: number, kind: number, payload: Uint8Array): void {
    const s = this.streams.get(id);
    if (!s) return;
    if (kind === kindData) {
      const copy = payload.slice(); // the read buffer is reused before the write ends
      s.chain = s.chain.then(() => writeAll(s.conn!, copy));
    } else if (kind === kindFin) {
      s.chain = s.chain.then(async () => {
        await closeWrite(s.conn!);
        this.#ended(id, s);
      });
    }
  }

  /** One direction of `s` ended: with both, close and forget it. */
  #ended(id: number, s: Stream): void {
    if (++s.ends < 2) return;
    this.streams.delete(id);
    closeOnly(s.conn);
  }

  /** Copy `s.conn` into data frames until EOF, then a FIN frame. */
  async pump(id: number, s: Stream): Promise<void> {
    const buf = new Uint8Array(bufBytes);
    for (let n = await s.conn!.read(buf); n !== null; n = await s.conn!.read(buf)) {
      this.send(id, kindData, buf.subarray(0, n));
      const full = this.backpressure();
      if (full) await full;
    }
    this.send(id, kindFin);
    s.chain = s.chain.then(() => this.#ended(id, s));
  }
}

/** Write all of `b`; a peer that went away only closes (a real tunnel resets the stream). */
async function writeAll(c: Deno.Conn, b: Uint8Array): Promise<void> {
  try {
    for (let off = 0; off < b.length;) off += await c.write(b.subarray(off));
  } catch {
    closeOnly(c);
  }
}

/** Half-close `c`; as {@linkcode writeAll}, a failure only closes. */
async function closeWrite(c: Deno.Conn): Promise<void> {
  try {
    await c.closeWrite();
  } catch {
    closeOnly(c);
  }
}

/** Read until `buf` holds at least `n` bytes (`have` already there); the new count. */
async function need(c: Deno.Conn, buf: Uint8Array, have: number, n: number): Promise<number> {
  while (have < n) {
    const got = await c.read(buf.subarray(have));
    if (got === null) throw new Error("EOF in handshake");
    have += got;
  }
  return have;
}

/** The floor only closes a stream that failed (a real tunnel logs, replies, resets). */
function closeOnly(c: Deno.Conn | undefined): void {
  try {
    c?.close();
  } catch {
    // Already closed: nothing else to release.
  }
}

/** Listen for public connections and for the one mux connection; serve each public one. */
async function server(serve: (mux: Mux, c: Deno.TcpConn) => Promise<void>): Promise<void> {
  const pub = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tunnel = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: pub.addr.port, tunnel: tunnel.addr.port }));
  const conn = await tunnel.accept();
  conn.setNoDelay(true);
  const mux = new Mux(conn, (id) => mux.streams.get(id)?.opened?.());
  mux.read();
  for await (const c of pub) {
    c.setNoDelay(true);
    serve(mux, c).catch(() => closeOnly(c));
  }
}

async function depotServe(mux: Mux, c: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(bufBytes);
  let have = await need(c, buf, 0, 2);
  const greeting = 2 + buf[1];
  have = await need(c, buf, have, greeting);
  await c.write(noAuth);
  await need(c, buf, have, greeting + 10);
  const r = buf.subarray(greeting);
  if (r[1] !== 1 || r[3] !== 1) throw new Error("only CONNECT to IPv4 in the floor");
  const id = mux.newId();
  const s: Stream = { conn: c, chain: Promise.resolve(), ends: 0 };
  const opened = new Promise<void>((resolve) => s.opened = resolve);
  mux.streams.set(id, s);
  mux.send(id, kindOpen, r.subarray(4, 10));
  await opened;
  await c.write(succeeded);
  await mux.pump(id, s);
}

async function tunnelServe(mux: Mux, c: Deno.TcpConn): Promise<void> {
  const id = mux.newId();
  const s: Stream = { conn: c, chain: Promise.resolve(), ends: 0 };
  const buf = new Uint8Array(bufBytes);
  const n = await c.read(buf);
  if (n === null) return c.close();
  mux.streams.set(id, s);
  mux.send(id, kindOpen, buf.subarray(0, n));
  await mux.pump(id, s);
}

/** The exit / client side: dial the server's mux port, answer each open frame. */
async function local(open: (mux: Mux, id: number, payload: Uint8Array) => void): Promise<void> {
  const [hostname, port] = (Deno.env.get("BENCH_SERVER") ?? "").split(":");
  const conn = await Deno.connect({ hostname, port: Number(port) });
  conn.setNoDelay(true);
  const mux: Mux = new Mux(conn, (id, payload) => open(mux, id, payload));
  await mux.read();
}

/** Dial `to` for stream `id`; frames that arrive meanwhile wait on the stream's chain. */
function dialFor(
  mux: Mux,
  id: number,
  to: Deno.ConnectOptions,
  then: (s: Stream) => Promise<void> | void,
): void {
  const s: Stream = { chain: Promise.resolve(), ends: 0 };
  s.chain = (async () => {
    try {
      s.conn = await Deno.connect(to);
    } catch {
      mux.streams.delete(id); // the floor drops it (a real exit answers with the failure)
      return;
    }
    s.conn.setNoDelay(true);
    await then(s);
    mux.pump(id, s).catch(() => closeOnly(s.conn));
  })();
  mux.streams.set(id, s);
}

function depotOpen(mux: Mux, id: number, a: Uint8Array): void {
  dialFor(
    mux,
    id,
    { hostname: `${a[0]}.${a[1]}.${a[2]}.${a[3]}`, port: (a[4] << 8) | a[5] },
    () => mux.send(id, kindOpen),
  );
}

const [targetHost, targetPort] = (Deno.env.get("BENCH_TARGET") ?? "").split(":");

function tunnelOpen(mux: Mux, id: number, request: Uint8Array): void {
  const copy = request.slice();
  dialFor(
    mux,
    id,
    { hostname: targetHost, port: Number(targetPort) },
    (s) => writeAll(s.conn!, copy),
  );
}

if (import.meta.main) {
  const mode = Deno.env.get("BENCH_MODE");
  if (mode === "depot-server") await server(depotServe);
  else if (mode === "depot-local") await local(depotOpen);
  else if (mode === "tunnel-server") await server(tunnelServe);
  else if (mode === "tunnel-client") await local(tunnelOpen);
  else throw new Error("BENCH_MODE: depot-server, depot-local, tunnel-server or tunnel-client");
}
