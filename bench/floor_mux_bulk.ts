/**
 * The floor for bulk through any Deno reverse SOCKS5 multiplexer (issue 20), beside the plain
 * reverse floor doing the same work with a TCP connection per stream: what depot `--mux`'s bulk
 * rate is compared with (bench/_mux_bulk_ab.ts `--floors`). `Deno.listen`/`Deno.connect` and
 * nothing of lib/. Two processes, each in one of two shapes:
 *
 * - `BENCH_MODE=server`: SOCKS5 clients on one port, the exit's connections on another (prints
 *   `{"port":N,"tunnel":M}`). Per client: the SOCKS5 greeting and a CONNECT to an IPv4 address,
 *   the 6-byte address to the exit, its answer, the reply, then the bytes both ways, half-close
 *   kept, close.
 * - `BENCH_MODE=local BENCH_SERVER=127.0.0.1:M`: the exit. Per address: dial it, answer, relay.
 *
 * `BENCH_FRAMED=1` (both processes): every stream rides ONE TCP connection as frames (a 12-byte
 * header as yamux's: stream id u32, kind u8, 3 unused, length u32; kinds open, data, FIN,
 * credit) with the least a multiplexer must do for bulk:
 * - a sender reads its TCP side straight into the frame (`BENCH_READ_KIB`, default 4,096, as
 *   lib/net's relay's and lib/mux's largest), at most the credit it holds, and writes header and
 *   payload in one write (a lock keeps frames whole on the shared connection);
 * - the receiver reads a header, then the payload straight into a buffer of its own (a free list
 *   of them), hands it to the stream's writer and reads on: one slow stream must not stop the
 *   others, so it cannot wait for that write;
 * - credit: each stream may have `BENCH_WINDOW_KIB` (default 16,384, lib/mux's largest window)
 *   unconsumed at the receiver; the receiver returns credit once half a window was written on,
 *   so a slow reader makes the sender wait instead of the receiver buffer without bound.
 * `BENCH_FRAMED=0` (default): the plain shape, a TCP connection per stream (the exit keeps two
 * spares dialled, one replaced as it is taken), the same `BENCH_READ_KIB` reads and a write of
 * each read (bench/floor_reverse.ts reads 16 KiB: a floor of the cost per connection, not of
 * bulk).
 *
 * No control connection, credentials, limits, timeouts, resets, pings, logs, metrics or error
 * replies: not a proxy to run. Every socket gets TCP_NODELAY, as any real proxy's do.
 * @module
 */

const kib = 1024;
/** Largest read of a stream's TCP side (and so the largest frame's payload). */
const readBytes = Number(Deno.env.get("BENCH_READ_KIB") ?? 4096) * kib;
/** Unconsumed bytes a receiver accepts per stream before the sender must wait for credit. */
const windowBytes = Number(Deno.env.get("BENCH_WINDOW_KIB") ?? 16 * 1024) * kib;
const framed = Deno.env.get("BENCH_FRAMED") === "1";
/**
 * `BENCH_SERIAL=1` (framed): the receiver waits for each payload's write before it reads the
 * next frame, as a plain relay does. Not a multiplexer (one slow stream stops every other):
 * a variant that shows what reading on while the write runs costs.
 */
const serialReceive = Deno.env.get("BENCH_SERIAL") === "1";
const headerBytes = 12;
const kindOpen = 1, kindData = 2, kindFin = 3, kindCredit = 4;
/** Free receive buffers kept for reuse (more are made while a window's worth waits). */
const maxFreeBuffers = 8;
/** Spare connections the plain exit keeps dialled. */
const plainSpares = 2;
/** The handshake buffer: a SOCKS5 greeting and CONNECT, or the 6-byte address. */
const handshakeBytes = 512;

const noAuth = new Uint8Array([5, 0]);
const succeeded = new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
const ok = new Uint8Array([0]);

/** Write all of `b` to `c`. */
async function writeAll(c: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let off = 0; off < b.length;) off += await c.write(b.subarray(off));
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

/** Fill `buf` from `c`; false at EOF before the first byte, an error at EOF inside. */
async function readFull(c: Deno.Conn, buf: Uint8Array): Promise<boolean> {
  for (let have = 0; have < buf.length;) {
    const n = await c.read(buf.subarray(have));
    if (n === null) {
      if (have === 0) return false;
      throw new Error("EOF inside a frame");
    }
    have += n;
  }
  return true;
}

/** The floor only closes what failed (a real proxy logs, replies, resets). */
function closeOnly(c: Deno.Conn | undefined): void {
  try {
    c?.close();
  } catch {
    // Already closed.
  }
}

/** The SOCKS5 greeting and CONNECT from `c`; the 6-byte IPv4 address and port asked for. */
async function socksConnect(c: Deno.Conn): Promise<Uint8Array> {
  const buf = new Uint8Array(handshakeBytes);
  let have = await need(c, buf, 0, 2);
  const greeting = 2 + buf[1];
  have = await need(c, buf, have, greeting);
  await c.write(noAuth);
  await need(c, buf, have, greeting + 10);
  const r = buf.subarray(greeting);
  if (r[1] !== 1 || r[3] !== 1) throw new Error("only CONNECT to IPv4 in the floor");
  return r.slice(4, 10);
}

/** The dial options a 6-byte address names. */
function target(a: Uint8Array): Deno.ConnectOptions {
  return { hostname: `${a[0]}.${a[1]}.${a[2]}.${a[3]}`, port: (a[4] << 8) | a[5] };
}

// ---------------------------------------------------------------- plain: a connection per stream

/** Copy `from` to `to` in reads of up to `readBytes` until EOF, then half-close `to`. */
async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(readBytes);
  for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
    await writeAll(to, buf.subarray(0, n));
  }
  await to.closeWrite();
}

/** Relay `a` and `b` both ways, then close both. */
async function relayBoth(a: Deno.Conn, b: Deno.Conn): Promise<void> {
  try {
    await Promise.all([pump(a, b), pump(b, a)]);
  } finally {
    closeOnly(a);
    closeOnly(b);
  }
}

async function plainServer(): Promise<void> {
  const socks = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tunnel = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: socks.addr.port, tunnel: tunnel.addr.port }));
  const spares: Deno.Conn[] = [];
  const waiters: ((t: Deno.Conn) => void)[] = [];
  (async () => {
    for await (const t of tunnel) {
      t.setNoDelay(true);
      const w = waiters.shift();
      if (w) w(t);
      else spares.push(t);
    }
  })();
  for await (const c of socks) {
    (async () => {
      let t: Deno.Conn | undefined;
      try {
        c.setNoDelay(true);
        const address = await socksConnect(c);
        t = spares.pop() ?? await new Promise<Deno.Conn>((resolve) => waiters.push(resolve));
        await writeAll(t, address);
        if (await t.read(new Uint8Array(1)) !== 1) throw new Error("exit failed");
        await writeAll(c, succeeded);
      } catch {
        closeOnly(c);
        closeOnly(t);
        return;
      }
      await relayBoth(c, t).catch(() => {});
    })();
  }
}

async function plainSpare(to: Deno.ConnectOptions): Promise<void> {
  const t = await Deno.connect(to);
  let up: Deno.TcpConn | undefined;
  try {
    t.setNoDelay(true);
    const a = new Uint8Array(6);
    await need(t, a, 0, 6);
    plainSpare(to); // the replacement
    up = await Deno.connect(target(a));
    up.setNoDelay(true);
    await writeAll(t, ok);
  } catch {
    closeOnly(t);
    closeOnly(up);
    return;
  }
  await relayBoth(t, up).catch(() => {});
}

// ---------------------------------------------------------------- framed: one shared connection

/** One stream of the session: its TCP side and both directions' flow control. */
interface Stream {
  conn?: Deno.TcpConn;
  /** Bytes this side may still send (the peer's unconsumed room). */
  credit: number;
  /** A sender waiting for credit. */
  creditWaiter?: () => void;
  /** Writes of received payloads to `conn`, in order. */
  chain: Promise<void>;
  /** Received bytes written on to `conn` and not yet credited back. */
  consumed: number;
  /** Received bytes not yet credited back (at most a window). */
  held: number;
  /** The server side waits here for the exit's answer. */
  opened?: () => void;
  /** Directions ended (2: close). */
  ends: number;
}

/** One end of the shared connection. */
class Session {
  readonly streams = new Map<number, Stream>();
  #lock: Promise<void> = Promise.resolve();
  #free: Uint8Array[] = [];
  #nextId = 1;

  constructor(
    readonly conn: Deno.TcpConn,
    readonly onOpen: (id: number, payload: Uint8Array) => void,
  ) {}

  newId(): number {
    return this.#nextId++;
  }

  /** A new stream with a full window both ways. */
  stream(conn?: Deno.TcpConn): Stream {
    return { conn, credit: windowBytes, chain: Promise.resolve(), consumed: 0, held: 0, ends: 0 };
  }

  /** Write `frame` (its header in its first 12 bytes) whole, after any frame already writing. */
  writeFrame(frame: Uint8Array): Promise<void> {
    const p = this.#lock.then(() => writeAll(this.conn, frame));
    this.#lock = p.catch(() => {});
    return p;
  }

  /** A frame of its own: header and a copy of `payload`. */
  send(id: number, kind: number, n: number, payload?: Uint8Array): Promise<void> {
    const f = new Uint8Array(headerBytes + (payload?.length ?? 0));
    header(f, id, kind, n);
    if (payload) f.set(payload, headerBytes);
    return this.writeFrame(f);
  }

  /** Read frames until the connection ends; hand each to its stream. */
  async read(): Promise<void> {
    const h = new Uint8Array(headerBytes);
    while (await readFull(this.conn, h)) {
      const id = ((h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]) >>> 0;
      const kind = h[4];
      const len = ((h[8] << 24) | (h[9] << 16) | (h[10] << 8) | h[11]) >>> 0;
      const s = this.streams.get(id);
      if (kind === kindData) {
        if (len > readBytes) throw new Error(`frame of ${len} bytes`);
        const buf = this.#free.pop() ?? new Uint8Array(readBytes);
        if (!await readFull(this.conn, buf.subarray(0, len))) throw new Error("EOF in a frame");
        if (!s) {
          this.#give(buf);
          continue;
        }
        s.held += len;
        if (s.held > windowBytes) throw new Error("peer sent past its credit");
        // The chain starts with the exit's dial: `conn` is set before this write runs.
        s.chain = s.chain.then(() => this.#writeOn(id, s, buf, len));
        if (serialReceive) await s.chain;
      } else if (kind === kindCredit) {
        if (!s) continue;
        s.credit += len;
        const w = s.creditWaiter;
        s.creditWaiter = undefined;
        w?.();
      } else if (kind === kindFin) {
        if (s) s.chain = s.chain.then(() => this.#finish(id, s));
      } else if (kind === kindOpen) {
        const payload = new Uint8Array(len);
        if (!await readFull(this.conn, payload)) throw new Error("EOF in a frame");
        this.onOpen(id, payload);
      }
    }
  }

  /** Write a received payload on to the stream's TCP side, then credit it back. */
  async #writeOn(id: number, s: Stream, buf: Uint8Array, len: number): Promise<void> {
    try {
      await writeAll(s.conn!, buf.subarray(0, len));
    } catch {
      closeOnly(s.conn);
    }
    this.#give(buf);
    s.consumed += len;
    if (s.consumed >= windowBytes / 2) {
      const n = s.consumed;
      s.consumed = 0;
      s.held -= n;
      await this.send(id, kindCredit, n).catch(() => {});
    }
  }

  #give(buf: Uint8Array): void {
    if (this.#free.length < maxFreeBuffers) this.#free.push(buf);
  }

  /** The peer's FIN, after its data: half-close the TCP side. */
  async #finish(id: number, s: Stream): Promise<void> {
    try {
      await s.conn!.closeWrite();
    } catch {
      closeOnly(s.conn);
    }
    this.#ended(id, s);
  }

  /** One direction of `s` ended: with both, close and forget it. */
  #ended(id: number, s: Stream): void {
    if (++s.ends < 2) return;
    this.streams.delete(id);
    closeOnly(s.conn);
  }

  /** Read `s.conn` straight into data frames within credit until EOF, then a FIN frame. */
  async pump(id: number, s: Stream): Promise<void> {
    const buf = new Uint8Array(headerBytes + readBytes);
    while (true) {
      while (s.credit === 0) await new Promise<void>((r) => s.creditWaiter = r);
      const want = Math.min(readBytes, s.credit);
      const n = await s.conn!.read(buf.subarray(headerBytes, headerBytes + want));
      if (n === null) break;
      s.credit -= n;
      header(buf, id, kindData, n);
      await this.writeFrame(buf.subarray(0, headerBytes + n));
    }
    await this.send(id, kindFin, 0);
    s.chain = s.chain.then(() => this.#ended(id, s));
  }
}

/** Write a frame header into `f`'s first 12 bytes. */
function header(f: Uint8Array, id: number, kind: number, n: number): void {
  f[0] = id >>> 24, f[1] = id >>> 16, f[2] = id >>> 8, f[3] = id;
  f[4] = kind, f[5] = 0, f[6] = 0, f[7] = 0;
  f[8] = n >>> 24, f[9] = n >>> 16, f[10] = n >>> 8, f[11] = n;
}

async function framedServer(): Promise<void> {
  const socks = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tunnel = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: socks.addr.port, tunnel: tunnel.addr.port }));
  const conn = await tunnel.accept();
  conn.setNoDelay(true);
  const session = new Session(conn, (id) => session.streams.get(id)?.opened?.());
  session.read();
  for await (const c of socks) {
    (async () => {
      c.setNoDelay(true);
      const address = await socksConnect(c);
      const id = session.newId();
      const s = session.stream(c);
      const opened = new Promise<void>((resolve) => s.opened = resolve);
      session.streams.set(id, s);
      await session.send(id, kindOpen, address.length, address);
      await opened;
      await writeAll(c, succeeded);
      await session.pump(id, s);
    })().catch(() => closeOnly(c));
  }
}

async function framedLocal(to: Deno.ConnectOptions): Promise<void> {
  const conn = await Deno.connect(to);
  conn.setNoDelay(true);
  const session: Session = new Session(conn, (id, a) => {
    const s = session.stream();
    session.streams.set(id, s);
    s.chain = (async () => {
      try {
        s.conn = await Deno.connect(target(a));
      } catch {
        session.streams.delete(id); // the floor drops it (a real exit answers the failure)
        return;
      }
      s.conn.setNoDelay(true);
      await session.send(id, kindOpen, 0);
      session.pump(id, s).catch(() => closeOnly(s.conn));
    })();
  });
  await session.read();
}

if (import.meta.main) {
  if (Deno.env.get("BENCH_MODE") === "local") {
    const [hostname, port] = (Deno.env.get("BENCH_SERVER") ?? "").split(":");
    const to = { hostname, port: Number(port) };
    if (framed) await framedLocal(to);
    else {
      for (let i = 0; i < plainSpares; i++) plainSpare(to);
      await new Promise(() => {});
    }
  } else if (framed) await framedServer();
  else await plainServer();
}
