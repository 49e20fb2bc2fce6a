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
 * an abort signal on the dial (its timeout).
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

if (import.meta.main) {
  const [host, port] = (Deno.env.get("BENCH_TARGET") ?? "").split(":");
  const target = Deno.env.get("BENCH_MODE") === "static"
    ? { hostname: host, port: Number(port) }
    : undefined;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: listener.addr.port }));
  for await (const c of listener) handle(c, target);
}
