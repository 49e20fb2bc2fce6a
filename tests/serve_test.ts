import { connect as nodeConnect, type Socket } from "node:net";
import { assertEquals } from "./_assert.ts";
import { dial, serve, writeAll } from "../lib/net/mod.ts";
import { listenLocal, readAll, until, within } from "./_util.ts";

Deno.test("serve: over maxConns the next connection is accepted and closed at once", async () => {
  const release = Promise.withResolvers<void>();
  const server = serve(listenLocal(), async (_conn, ctx) => {
    ctx.handshakeDone();
    await release.promise;
  }, { maxConns: 2, handshakeTimeoutMs: 0, shedIdleMs: Infinity }); // refusal, never shedding
  const port = server.addr.port;
  const held = [await dial("127.0.0.1", port), await dial("127.0.0.1", port)];
  // Both held ones counted before the next comes: the state itself, not a 50 ms sleep.
  await until("the server to hold 2 connections", () => server.stats.active === 2);
  const extra = await dial("127.0.0.1", port);
  assertEquals(await within(extra.read(new Uint8Array(1)), "the server to close the third"), null);
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
  assertEquals(await within(c.read(new Uint8Array(1)), "the handshake timeout's close"), null);
  assertEquals(server.stats.handshakeTimeouts, 1);
  c.close();
  await server.stop();
});

Deno.test("serve: stop() lets a live connection finish, then cuts past the deadline", async () => {
  // Each handler says when it runs: stop() must meet a live connection (a 20 ms sleep stood
  // for that before, which a loaded box could outlast before the accept).
  const live = Promise.withResolvers<void>();
  const server = serve(listenLocal(), async (conn, ctx) => {
    ctx.handshakeDone();
    live.resolve();
    await new Promise((r) => setTimeout(r, 100));
    await writeAll(conn, new TextEncoder().encode("finished"));
  });
  const c = await dial("127.0.0.1", server.addr.port);
  await within(live.promise, "the handler of the connection");
  await server.stop(2000);
  assertEquals(new TextDecoder().decode(await within(readAll(c), "the answer to EOF")), "finished");
  c.close();

  const stuckLive = Promise.withResolvers<void>();
  const stuck = serve(listenLocal(), async (conn, ctx) => {
    ctx.handshakeDone();
    stuckLive.resolve();
    await conn.read(new Uint8Array(1)); // waits forever
  });
  const c2 = await dial("127.0.0.1", stuck.addr.port);
  await within(stuckLive.promise, "the handler of the stuck connection");
  await stuck.stop(100);
  assertEquals(await within(c2.read(new Uint8Array(1)), "the stuck connection's cut"), null);
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
      assertEquals(await within(c.read(new Uint8Array(1)), "the byte"), 1, "served");
      mine.push(c);
    }
    const third = await Deno.connect({ hostname: "127.0.0.1", port });
    const cut = within(third.read(new Uint8Array(1)).catch(() => null), "the third's close");
    assertEquals(await cut, null, "closed at once");
    third.close();
    const other = await new Promise<Socket>((resolve, reject) => {
      const s = nodeConnect(
        { host: "127.0.0.1", port, localAddress: "127.0.0.2" },
        () => resolve(s),
      );
      s.once("error", reject);
    });
    try {
      const first = await within(
        new Promise<number>((resolve) => other.once("data", (d) => resolve(d[0]))),
        "the byte to another source",
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

Deno.test("serve: a timed-out handshake aborts the signal with a TimeoutError, also one first read after it", async () => {
  // One handler reads ctx.signal before the timeout, the other only after its read ended
  // (the signal's controller is made when first asked for): both see the same abort.
  const reasons: string[] = [];
  const server = serve(listenLocal(), async (conn, ctx) => {
    const early = ctx.id % 2 === 1 ? ctx.signal : undefined;
    await conn.read(new Uint8Array(10)).catch(() => null); // ends when the timeout closes it
    const signal = early ?? ctx.signal;
    reasons.push(`${early ? "early" : "late"} ${signal.aborted} ${(signal.reason as Error).name}`);
  }, { handshakeTimeoutMs: 100 });
  const clients = [
    await dial("127.0.0.1", server.addr.port),
    await dial("127.0.0.1", server.addr.port),
  ];
  for (const c of clients) {
    assertEquals(await within(c.read(new Uint8Array(1)), "the handshake timeout's close"), null);
  }
  await until("both handlers to end", () => reasons.length === 2);
  assertEquals(reasons.sort(), ["early true TimeoutError", "late true TimeoutError"]);
  assertEquals(server.stats.handshakeTimeouts, 2);
  for (const c of clients) c.close();
  await server.stop();
});

Deno.test("serve: a connection is closed at its handler's end, whether the handler closed it or not", async () => {
  // Closed by the handler (conn.close(), not closeQuietly), left open, or closed before a throw:
  // each client reads its end, no close fails, only the throw counts as an error, and the
  // sanitizers find no resource left.
  const server = serve(listenLocal(), async (conn, ctx) => {
    ctx.handshakeDone();
    await conn.write(Uint8Array.of(ctx.id));
    if (ctx.id === 1) conn.close();
    if (ctx.id === 3) {
      conn.close();
      throw new Error("after its close");
    }
  }, { handshakeTimeoutMs: 0 });
  for (let i = 1; i <= 3; i++) {
    const c = await dial("127.0.0.1", server.addr.port);
    assertEquals(
      new TextDecoder().decode(await within(readAll(c), `client ${i}'s end`)),
      String.fromCharCode(i),
    );
    c.close();
  }
  await until("every handler to end", () => server.stats.active === 0);
  assertEquals(server.stats.errors, 1);
  await server.stop();
});
