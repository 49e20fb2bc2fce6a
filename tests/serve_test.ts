import { assertEquals } from "./_assert.ts";
import { dial, serve, writeAll } from "../lib/net/mod.ts";
import { listenLocal, readAll } from "./_util.ts";

Deno.test("serve: over maxConns the next connection is accepted and closed at once", async () => {
  const release = Promise.withResolvers<void>();
  const server = serve(listenLocal(), async (_conn, ctx) => {
    ctx.handshakeDone();
    await release.promise;
  }, { maxConns: 2, handshakeTimeoutMs: 0 });
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
