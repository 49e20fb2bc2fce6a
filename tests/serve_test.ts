import { connect as nodeConnect, type Socket } from "node:net";
import { assertEquals } from "./_assert.ts";
import { dial, serve, writeAll } from "../lib/net/mod.ts";
import { listenLocal, readAll } from "./_util.ts";

Deno.test("serve: over maxConns the next connection is accepted and closed at once", async () => {
  const release = Promise.withResolvers<void>();
  const server = serve(listenLocal(), async (_conn, ctx) => {
    ctx.handshakeDone();
    await release.promise;
  }, { maxConns: 2, handshakeTimeoutMs: 0, shedIdleMs: Infinity }); // refusal, never shedding
  const port = server.addr.port;
  const held = [await dial("127.0.0.1", port), await dial("127.0.0.1", port)];
  await new Promise((r) => setTimeout(r, 50));
  const extra = await dial("127.0.0.1", port);
  assertEquals(await extra.read(new Uint8Array(1)), null); // closed by the server
  assertEquals(server.stats.rejected, 1);
  extra.close();
  release.resolve();
  for (const c of held) c.close();
  await server.stop();
});

Deno.test("serve: handshake timeout closes a silent client", async () => {
  const server = serve(listenLocal(), async (conn) => {
    await conn.read(new Uint8Array(10)); // never calls handshakeDone
  }, { handshakeTimeoutMs: 100 });
  const c = await dial("127.0.0.1", server.addr.port);
  assertEquals(await c.read(new Uint8Array(1)), null);
  assertEquals(server.stats.handshakeTimeouts, 1);
  c.close();
  await server.stop();
});

Deno.test("serve: stop() lets a live connection finish, then cuts past the deadline", async () => {
  const server = serve(listenLocal(), async (conn, ctx) => {
    ctx.handshakeDone();
    await new Promise((r) => setTimeout(r, 100));
    await writeAll(conn, new TextEncoder().encode("finished"));
  });
  const c = await dial("127.0.0.1", server.addr.port);
  await new Promise((r) => setTimeout(r, 20));
  await server.stop(2000);
  assertEquals(new TextDecoder().decode(await readAll(c)), "finished");
  c.close();

  const stuck = serve(listenLocal(), async (conn, ctx) => {
    ctx.handshakeDone();
    await conn.read(new Uint8Array(1)); // waits forever
  });
  const c2 = await dial("127.0.0.1", stuck.addr.port);
  await new Promise((r) => setTimeout(r, 20));
  await stuck.stop(100);
  assertEquals(await c2.read(new Uint8Array(1)), null);
  c2.close();
});

Deno.test("serve: a source over maxConnsPerSource is closed at once, another source still gets in", async () => {
  const server = serve(listenLocal(), async (conn) => {
    await conn.write(Uint8Array.of(42));
    await conn.read(new Uint8Array(1)); // hold until the client leaves
  }, { maxConns: 4, maxConnsPerSource: 2, shedIdleMs: Infinity }); // refusal, never shedding
  const port = server.addr.port;
  const mine: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      assertEquals(await c.read(new Uint8Array(1)), 1, "served");
      mine.push(c);
    }
    const third = await Deno.connect({ hostname: "127.0.0.1", port });
    assertEquals(await third.read(new Uint8Array(1)).catch(() => null), null, "closed at once");
    third.close();
    const other = await new Promise<Socket>((resolve, reject) => {
      const s = nodeConnect(
        { host: "127.0.0.1", port, localAddress: "127.0.0.2" },
        () => resolve(s),
      );
      s.once("error", reject);
    });
    try {
      const first = await new Promise<number>((resolve) =>
        other.once("data", (d) => resolve(d[0]))
      );
      assertEquals(first, 42, "another source is served");
    } finally {
      other.destroy();
    }
    assertEquals(server.stats.rejected, 1);
  } finally {
    for (const c of mine) c.close();
    await server.stop(500);
  }
});
