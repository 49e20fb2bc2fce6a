/**
 * Nagle stays off on both sockets of a proxied connection now that serveProxy sets TCP_NODELAY
 * once on the listening socket (Linux copies it into every accepted socket) instead of a
 * setsockopt per connection: read off the sockets themselves with getsockopt (tests/_nodelay.ts),
 * no timing. The serve() cases show the option really skips the per-connection call.
 */

import { assertEquals } from "./_assert.ts";
import { noDelayOf } from "./_nodelay.ts";
import { rawServer } from "./_seaprox.ts";
import { readWithin, within } from "./_util.ts";
import { closeQuietly, serve } from "../lib/net/mod.ts";
import { directDialer, serveProxy, staticProxy } from "../lib/proxy/mod.ts";

const hi = new TextEncoder().encode("hi");

/** An origin that says "hi" and holds the connection until the client leaves. */
function holdingOrigin(onPeer: (port: number) => void) {
  return rawServer(async (c) => {
    onPeer((c.remoteAddr as Deno.NetAddr).port);
    await c.write(hi);
    const buf = new Uint8Array(16);
    while ((await readWithin(c, buf, "the client's EOF at the origin")) !== null) continue;
  });
}

/** Connect to `port` and read the 2-byte greeting: the connection is set up on both sides. */
async function greeted(port: number): Promise<Deno.TcpConn> {
  const c = await within(Deno.connect({ hostname: "127.0.0.1", port }), `a connection to ${port}`);
  const buf = new Uint8Array(2);
  for (let got = 0; got < 2;) {
    got += (await readWithin(c, buf.subarray(got), "the 2-byte greeting", got)) ?? Infinity;
  }
  return c;
}

Deno.test("serveProxy: the accepted and the dialled socket have TCP_NODELAY", async () => {
  let dialledPort = 0;
  const origin = holdingOrigin((p) => dialledPort = p);
  const proxy = serveProxy(
    Deno.listen({ hostname: "127.0.0.1", port: 0 }),
    staticProxy({ host: "127.0.0.1", port: origin.port }),
    { dialer: directDialer({ prefer: "ipv4" }) },
  );
  const c = await greeted(proxy.addr.port);
  try {
    const clientPort = (c.localAddr as Deno.NetAddr).port;
    assertEquals(noDelayOf(proxy.addr.port, clientPort), 1, "accepted socket");
    assertEquals(noDelayOf(dialledPort, origin.port), 1, "dialled socket");
  } finally {
    closeQuietly(c);
    await proxy.stop();
    await origin.close();
  }
});

Deno.test("serve(): TCP_NODELAY per connection, unless acceptedNoDelay says the listener has it", async () => {
  for (const acceptedNoDelay of [false, true]) {
    const server = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn, ctx) => {
      ctx.handshakeDone();
      await conn.write(hi);
      const buf = new Uint8Array(16);
      while ((await readWithin(conn, buf, "the client's EOF at the server")) !== null) continue;
    }, { acceptedNoDelay });
    const c = await greeted(server.addr.port);
    try {
      const clientPort = (c.localAddr as Deno.NetAddr).port;
      // This listener never got TCP_NODELAY: with the option set, nobody sets it.
      assertEquals(noDelayOf(server.addr.port, clientPort), acceptedNoDelay ? 0 : 1);
    } finally {
      closeQuietly(c);
      await server.stop();
    }
  }
});
