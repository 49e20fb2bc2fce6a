/**
 * The floor for any Deno proxy (issue 20): only the unavoidable work per connection, with
 * `Deno.listen`/`Deno.connect` and nothing of lib/ — accept, (SOCKS5: read the greeting,
 * answer "no auth", read a CONNECT to an IPv4 address), connect, (SOCKS5: reply), relay both
 * ways with half-close, close. No limits, timeouts, logs, metrics or error replies: not a
 * proxy to run, the bar a warren path is compared with in bench/seaprox.ts and bench/depot.ts.
 *
 *   BENCH_MODE=socks5 deno run -A bench/floor_proxy.ts                 # prints {"port":N}
 *   BENCH_MODE=static BENCH_TARGET=127.0.0.1:8080 deno run -A bench/floor_proxy.ts
 *
 * `BENCH_FLOOR_EXTRAS=1` adds what any real proxy pays on top: TCP_NODELAY on both sockets and
 * an abort signal on the dial (its timeout). `BENCH_FLOOR_EXTRAS=book` (static and SOCKS5) adds, as
 * cheaply as it can be kept, the bookkeeping seaprox's behaviour needs per connection: a record
 * (id, sides' states, bytes each way, start and set-up time, end) in a live set counted per
 * source, a controller of its own whose abort cuts it (hard stop), the dial's and the relay's
 * idle deadline (one sweep a second over the live set), byte counting and activity per read,
 * totals and a log-level check at the end: the bar for a proxy that keeps seaprox's behaviour.
 * (SOCKS5 with `book`: the handshake above first, the record's dial from its CONNECT, the reply
 * once connected; the handshake is not timed, as seaprox's is: one more deadline on the sweep
 * would cost the floor nothing measurable.)
 * @module
 */

/** Read buffer per direction: the small exchanges the floor is measured with fit at once. */
const bufBytes = 16 * 1024;
/**
 * Buffers given back by finished connections, reused by the next ones: a new pair of 16 KiB
 * buffers per connection made GC 8.6 % of the floor's busy time (seaprox's relay pool reuses
 * its own), so without a pool the floor was not the bar. Bounded: a burst leaves at most this
 * many behind.
 */
const poolMax = 256;
const pool: Uint8Array[] = [];
const acquire = (): Uint8Array => pool.pop() ?? new Uint8Array(bufBytes);
const release = (buf: Uint8Array): void => {
  if (pool.length < poolMax) pool.push(buf);
};
const noAuth = new Uint8Array([5, 0]);
const succeeded = new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);

/** Copy `from` to `to` until EOF, then half-close `to`. */
async function pump(from: Deno.TcpConn, to: Deno.TcpConn, buf: Uint8Array): Promise<void> {
  for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
    for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
  }
  await to.closeWrite();
}

/** The SOCKS5 greeting and an IPv4 CONNECT (possibly in one segment): the target's address. */
async function socksTarget(c: Deno.TcpConn, buf: Uint8Array): Promise<Deno.ConnectOptions> {
  let have = 0;
  const need = async (n: number) => {
    while (have < n) {
      const got = await c.read(buf.subarray(have));
      if (got === null) throw new Error("EOF in SOCKS5 handshake");
      have += got;
    }
  };
  await need(2);
  const greeting = 2 + buf[1];
  await need(greeting);
  await c.write(noAuth);
  await need(greeting + 10);
  const r = buf.subarray(greeting);
  if (r[1] !== 1 || r[3] !== 1) throw new Error("only CONNECT to IPv4 in the floor");
  return { hostname: `${r[4]}.${r[5]}.${r[6]}.${r[7]}`, port: (r[8] << 8) | r[9] };
}

/** With BENCH_FLOOR_EXTRAS: TCP_NODELAY and a dial signal (never aborted). */
const extras = Deno.env.get("BENCH_FLOOR_EXTRAS") === "1";
const dialSignal = new AbortController().signal;

async function handle(c: Deno.TcpConn, target: Deno.ConnectOptions | undefined): Promise<void> {
  let up: Deno.TcpConn | undefined;
  const down = acquire();
  let back: Uint8Array | undefined;
  try {
    if (extras) c.setNoDelay(true);
    const to = target ?? await socksTarget(c, down);
    up = await Deno.connect(extras ? { ...to, signal: dialSignal } : to);
    if (extras) up.setNoDelay(true);
    if (!target) await c.write(succeeded);
    back = acquire();
    await Promise.all([pump(c, up, down), pump(up, c, back)]);
    // Both pumps ended: no read is pending on either buffer (after a failure one may be, and
    // they are left to the GC, as seaprox's relay does).
    release(down);
    release(back);
  } catch {
    // A peer that reset or misbehaved: the floor only closes (a real proxy logs and replies).
  } finally {
    c.close();
    up?.close();
  }
}

/** One connection's record (BENCH_FLOOR_EXTRAS=book); it is its own abort listener. */
class Rec {
  src = "connected";
  dst = "idle";
  bytesUp = 0;
  bytesDown = 0;
  end = "done";
  setupMs = 0;
  readonly startMs = performance.now();
  activeMs = Date.now();
  readonly ac = new AbortController();
  upstream: Deno.TcpConn | undefined;
  /** Its place in `live`. */
  index = -1;
  constructor(readonly id: number, readonly c: Deno.TcpConn, readonly source: string) {}
  /** The abort (hard stop, a deadline): both sockets cut. */
  handleEvent(): void {
    this.end = "aborted";
    try {
      this.c.close();
      this.upstream?.close();
    } catch {
      // Closed already: the abort has nothing left to cut.
    }
  }
}
/**
 * The live records, each knowing its index (removed by moving the last into its place): not a
 * Set, whose table rebuilt under per-connection churn makes V8's scavenges keep finished
 * connections once one table is old (lib/net/live_list.ts; 1,050 B/conn promoted with a Set).
 */
const live: Rec[] = [];
const addLive = (r: Rec) => {
  r.index = live.length;
  live.push(r);
};
const removeLive = (r: Rec) => {
  const last = live.pop()!;
  if (last !== r) {
    live[r.index] = last;
    last.index = r.index;
  }
  r.index = -1;
};
const perSource = new Map<string, number>();
const totals = { opened: 0, closed: 0, up: 0, down: 0, failed: 0 };
let nextId = 0;
const dialTimeoutMs = 10_000, idleTimeoutMs = 300_000;
/** The log level's check a connection's closing line costs when it is not written. */
const infoLogged = Deno.env.get("BENCH_FLOOR_LOG") === "1";

/** Copy counting bytes and activity into `rec`. */
async function bookedPump(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  buf: Uint8Array,
  rec: Rec,
  up: boolean,
): Promise<void> {
  for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
    rec.activeMs = Date.now();
    for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
    if (up) rec.bytesUp += n;
    else rec.bytesDown += n;
  }
  await to.closeWrite();
}

async function handleBooked(
  c: Deno.TcpConn,
  target: Deno.ConnectOptions | undefined,
): Promise<void> {
  const source = (c.remoteAddr as Deno.NetAddr).hostname;
  const rec = new Rec(++nextId, c, source);
  addLive(rec);
  perSource.set(source, (perSource.get(source) ?? 0) + 1);
  totals.opened++;
  const signal = rec.ac.signal;
  signal.addEventListener("abort", rec);
  const down = acquire();
  let back: Uint8Array | undefined;
  try {
    c.setNoDelay(true);
    const to = target ?? await socksTarget(c, down);
    rec.dst = "connecting";
    const up = rec.upstream = await Deno.connect({ ...to, signal });
    up.setNoDelay(true);
    rec.dst = "connected";
    rec.setupMs = performance.now() - rec.startMs;
    if (!target) await c.write(succeeded);
    back = acquire();
    await Promise.all([bookedPump(c, up, down, rec, true), bookedPump(up, c, back, rec, false)]);
    release(down);
    release(back);
  } catch {
    if (rec.end === "done") rec.end = "error";
  } finally {
    signal.removeEventListener("abort", rec);
    if (rec.end !== "aborted") {
      // An abort closed both already (a second close throws).
      c.close();
      rec.upstream?.close();
    }
    removeLive(rec);
    const n = (perSource.get(source) ?? 1) - 1;
    if (n > 0) perSource.set(source, n);
    else perSource.delete(source);
    rec.src = rec.dst = "closed";
    totals.closed++;
    totals.up += rec.bytesUp;
    totals.down += rec.bytesDown;
    if (rec.end !== "done") totals.failed++;
    const ms = Math.round(performance.now() - rec.startMs);
    if (infoLogged) {
      console.log(`conn=${rec.id} end=${rec.end} up=${rec.bytesUp} down=${rec.bytesDown} ms=${ms}`);
    }
  }
}

if (Deno.env.get("BENCH_FLOOR_EXTRAS") === "book") {
  // The deadlines, swept once a second: a dial past its timeout, a relay idle past its own.
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const r of live) {
      const limit = r.dst === "connecting" ? dialTimeoutMs : idleTimeoutMs;
      if (now - r.activeMs > limit) r.ac.abort();
    }
  }, 1000);
  Deno.unrefTimer(sweep);
}

if (import.meta.main) {
  const [host, port] = (Deno.env.get("BENCH_TARGET") ?? "").split(":");
  const target = Deno.env.get("BENCH_MODE") === "static"
    ? { hostname: host, port: Number(port) }
    : undefined;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: listener.addr.port }));
  if (Deno.env.get("BENCH_FLOOR_EXTRAS") === "book") {
    for await (const c of listener) handleBooked(c, target);
  } else for await (const c of listener) handle(c, target);
}
