/**
 * The floor for any Deno HTTP CONNECT proxy (issue 20), beside bench/floor_proxy.ts (static
 * and SOCKS5): only the unavoidable work per connection, with `Deno.listen`/`Deno.connect` and
 * nothing of lib/ — accept, read the request head up to its empty line, take the authority of
 * `CONNECT host:port` (an IPv4 literal), connect, answer `200`, pass on any bytes that came
 * after the head, relay both ways with half-close, close. No limits, timeouts, logs, metrics,
 * header checks or error replies: not a proxy to run, the bar seaprox's HTTP CONNECT row is
 * compared with in bench/seaprox.ts.
 *
 *   deno run -A bench/floor_connect.ts        # prints {"port":N}
 *
 * `BENCH_FLOOR_EXTRAS=1` adds TCP_NODELAY on both sockets and an abort signal on the dial, as
 * floor_proxy.ts does.
 * @module
 */

/** Read buffer per direction: a CONNECT head and the small exchanges fit at once. */
const bufBytes = 16 * 1024;
/**
 * Buffers given back by finished connections, reused by the next ones (as floor_proxy.ts does:
 * without a pool, GC was a share of the floor's time that seaprox, with its relay pool, does
 * not pay). Bounded: a burst leaves at most this many behind.
 */
const poolMax = 256;
const pool: Uint8Array[] = [];
const acquire = (): Uint8Array => pool.pop() ?? new Uint8Array(bufBytes);
const release = (buf: Uint8Array): void => {
  if (pool.length < poolMax) pool.push(buf);
};
const established = new TextEncoder().encode("HTTP/1.1 200 Connection Established\r\n\r\n");
const decoder = new TextDecoder();

/** Copy `from` to `to` until EOF, then half-close `to`. */
async function pump(from: Deno.TcpConn, to: Deno.TcpConn, buf: Uint8Array): Promise<void> {
  for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
    for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
  }
  await to.closeWrite();
}

/** Where the head in `b[0, n)` ends (after its CRLFCRLF), or -1 when it is not all there. */
function headEnd(b: Uint8Array, n: number): number {
  for (let i = b.indexOf(0x0a); i >= 0 && i < n; i = b.indexOf(0x0a, i + 1)) {
    if (i + 2 < n && b[i + 1] === 0x0d && b[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}

/** Read the CONNECT head into `buf`: the target and how many bytes of `buf` are in use. */
async function connectTarget(
  c: Deno.TcpConn,
  buf: Uint8Array,
): Promise<{ to: Deno.ConnectOptions; end: number; have: number }> {
  let have = 0;
  let end = -1;
  while (end < 0) {
    const got = await c.read(buf.subarray(have));
    if (got === null) throw new Error("EOF in the CONNECT head");
    have += got;
    end = headEnd(buf, have);
  }
  // "CONNECT 127.0.0.1:1234 HTTP/1.1": the authority between the first two spaces.
  const sp = buf.indexOf(0x20);
  const authority = decoder.decode(buf.subarray(sp + 1, buf.indexOf(0x20, sp + 1)));
  const colon = authority.lastIndexOf(":");
  return {
    to: { hostname: authority.slice(0, colon), port: Number(authority.slice(colon + 1)) },
    end,
    have,
  };
}

/** With BENCH_FLOOR_EXTRAS: TCP_NODELAY and a dial signal (never aborted). */
const extras = Deno.env.get("BENCH_FLOOR_EXTRAS") === "1";
const dialSignal = new AbortController().signal;

async function handle(c: Deno.TcpConn): Promise<void> {
  let up: Deno.TcpConn | undefined;
  const down = acquire();
  let back: Uint8Array | undefined;
  try {
    if (extras) c.setNoDelay(true);
    const { to, end, have } = await connectTarget(c, down);
    up = await Deno.connect(extras ? { ...to, signal: dialSignal } : to);
    if (extras) up.setNoDelay(true);
    await c.write(established);
    // Bytes the client sent right behind its head belong to the tunnel.
    for (let off = end; off < have;) off += await up.write(down.subarray(off, have));
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
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: listener.addr.port }));
  for await (const c of listener) handle(c);
}
