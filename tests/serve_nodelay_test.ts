/**
 * serve() sets TCP_NODELAY once on a TCP listener's socket (Linux copies it into every socket
 * accepted later) instead of a setsockopt per connection, and still one by one on the
 * connections the kernel had queued before it did. Read off the sockets with getsockopt
 * (tests/_nodelay.ts) and counted at the connections' `setNoDelay`: no timing.
 */

import { assert, assertEquals } from "./_assert.ts";
import { noDelayOf } from "./_nodelay.ts";
import { countDlopens, listenLocal, readWithin, within } from "./_util.ts";
import { closeQuietly, serve, type ServeOptions } from "../lib/net/mod.ts";
import { listenerNoDelay, maxScannedFds } from "../lib/net/tcp_nodelay.ts";

const hi = new TextEncoder().encode("hi");

/** `inner`, with every accepted connection's `setNoDelay` calls counted in `calls`. */
function countingListener(inner: Deno.TcpListener): Deno.TcpListener & { calls: number } {
  const counting = {
    calls: 0,
    addr: inner.addr,
    async accept(): Promise<Deno.TcpConn> {
      const conn = await inner.accept();
      const set = conn.setNoDelay.bind(conn);
      conn.setNoDelay = (on?: boolean) => {
        counting.calls++;
        set(on);
      };
      return conn;
    },
    close: () => inner.close(),
  };
  return counting as unknown as Deno.TcpListener & { calls: number };
}

/** A server that says "hi" on each connection and holds it until the client's EOF. */
function greeter(listener: Deno.TcpListener, opts: ServeOptions = {}) {
  return serve(listener, async (conn, ctx) => {
    ctx.handshakeDone();
    await conn.write(hi);
    const buf = new Uint8Array(16);
    while ((await readWithin(conn, buf, "the client's EOF at the server")) !== null) continue;
  }, opts);
}

/** Read the 2-byte greeting: the connection is accepted and set up on both sides. */
async function greeted(c: Deno.TcpConn): Promise<Deno.TcpConn> {
  const buf = new Uint8Array(2);
  for (let got = 0; got < 2;) {
    got += (await readWithin(c, buf.subarray(got), "the 2-byte greeting", got)) ?? Infinity;
  }
  return c;
}

function connect(port: number): Promise<Deno.TcpConn> {
  return within(Deno.connect({ hostname: "127.0.0.1", port }), `a connection to ${port}`);
}

/**
 * `n` connections to `port`, each greeted, added to `clients` (the caller closes them), and
 * then each checked for TCP_NODELAY on the server's side.
 */
async function greetedWithNoDelay(port: number, n: number, clients: Deno.TcpConn[]) {
  for (let i = 0; i < n; i++) clients.push(await greeted(await connect(port)));
  for (const c of clients) assertEquals(noDelayOf(port, (c.localAddr as Deno.NetAddr).port), 1);
}

Deno.test("serve(): TCP_NODELAY on the listening socket, no setsockopt per connection", async () => {
  const listener = countingListener(listenLocal());
  const server = greeter(listener);
  const clients: Deno.TcpConn[] = [];
  try {
    // More than the few serve() sets one by one for safety (one per CPU): the rest inherit it.
    await greetedWithNoDelay(server.addr.port, navigator.hardwareConcurrency + 3, clients);
    assertEquals(listener.calls, navigator.hardwareConcurrency);
  } finally {
    for (const c of clients) closeQuietly(c);
    await server.stop();
  }
});

Deno.test("serve(): connections queued before serve() started get TCP_NODELAY one by one", async () => {
  const listener = countingListener(listenLocal());
  const port = listener.addr.port;
  // Set up by the kernel before the listening socket has TCP_NODELAY: they do not inherit it.
  const early = [await connect(port), await connect(port), await connect(port)];
  const server = greeter(listener);
  try {
    for (const c of early) await greeted(c);
    for (const c of early) {
      assertEquals(noDelayOf(port, (c.localAddr as Deno.NetAddr).port), 1, "a queued one");
    }
    assert(listener.calls >= early.length, `${listener.calls} setNoDelay calls`);
  } finally {
    for (const c of early) closeQuietly(c);
    await server.stop();
  }
});

Deno.test("serve(): acceptedNoDelay false still sets TCP_NODELAY on every connection", async () => {
  const listener = countingListener(listenLocal());
  const server = greeter(listener, { acceptedNoDelay: false });
  const clients: Deno.TcpConn[] = [];
  try {
    await greetedWithNoDelay(server.addr.port, 3, clients);
    assertEquals(listener.calls, 3);
  } finally {
    for (const c of clients) closeQuietly(c);
    await server.stop();
  }
});

Deno.test("serve(): with more descriptors open than it looks through, TCP_NODELAY per connection", async () => {
  // A busy process: serve() does not look through them all (that held the event loop for
  // tens of ms at thousands of descriptors), so it cannot know the listener got it.
  const held = Array.from({ length: maxScannedFds }, () => Deno.openSync("/dev/null"));
  const listener = countingListener(listenLocal());
  const server = greeter(listener);
  const clients: Deno.TcpConn[] = [];
  try {
    await greetedWithNoDelay(server.addr.port, navigator.hardwareConcurrency + 2, clients);
    assertEquals(listener.calls, clients.length);
  } finally {
    for (const c of clients) closeQuietly(c);
    await server.stop();
    for (const f of held) f.close();
  }
});

Deno.test("serve(): a listener that set TCP_NODELAY itself (noDelay: true) gets no second look", async () => {
  // As lib/transport's TLS listeners do at their construction: serve() neither loads libc to
  // set it again nor sets it per connection.
  const inner = listenLocal();
  assert(listenerNoDelay(inner.addr.port), "TCP_NODELAY on the listening socket");
  const listener = Object.assign(countingListener(inner), { noDelay: true });
  const clients: Deno.TcpConn[] = [];
  let server: ReturnType<typeof greeter> | undefined;
  try {
    assertEquals(await countDlopens(() => Promise.resolve(void (server = greeter(listener)))), 0);
    await greetedWithNoDelay(listener.addr.port, 3, clients);
    assertEquals(listener.calls, 0);
  } finally {
    for (const c of clients) closeQuietly(c);
    await server?.stop();
  }
});
