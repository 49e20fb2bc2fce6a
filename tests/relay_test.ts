import { assert, assertEquals } from "./_assert.ts";
import { BufferPool, closeQuietly, dial, relay, writeAll } from "../lib/net/mod.ts";
import { blockStreamSha256, drainHash, listenLocal, readAll, sendBlocks } from "./_util.ts";

/** A TCP pair (client side, server side) on loopback. */
async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const l = listenLocal();
  const [a, b] = await Promise.all([dial("127.0.0.1", l.addr.port), l.accept()]);
  l.close();
  return [a, b];
}

Deno.test("relay: 64 MiB each way keeps bytes exact and counts them", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const total = 64 << 20;
  const r = relay(proxyIn, proxyOut);
  const [up, down] = await Promise.all([
    (async () => {
      const got = drainHash(server);
      await sendBlocks(server, total, 7);
      await server.closeWrite();
      return await got;
    })(),
    (async () => {
      const got = drainHash(client);
      await sendBlocks(client, total, 3);
      await client.closeWrite();
      return await got;
    })(),
  ]);
  const res = await r;
  assertEquals(up.sha256, blockStreamSha256(total, 3));
  assertEquals(down.sha256, blockStreamSha256(total, 7));
  assertEquals(res.aToB, total);
  assertEquals(res.bToA, total);
  assertEquals(res.end, "done");
  client.close();
  server.close();
});

Deno.test("relay: half-close — client shuts write, still receives the whole reply", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const r = relay(proxyIn, proxyOut);
  await writeAll(client, new TextEncoder().encode("question"));
  await client.closeWrite();
  // The server sees EOF only after the request, then answers slowly in pieces.
  const req = await readAll(server);
  assertEquals(new TextDecoder().decode(req), "question");
  for (let i = 0; i < 5; i++) {
    await writeAll(server, new TextEncoder().encode(`part${i};`));
    await new Promise((res) => setTimeout(res, 10));
  }
  await server.closeWrite();
  const reply = new TextDecoder().decode(await readAll(client));
  assertEquals(reply, "part0;part1;part2;part3;part4;");
  assertEquals((await r).end, "done");
  client.close();
  server.close();
});

Deno.test("relay: idle timeout closes both sides", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const res = await relay(proxyIn, proxyOut, { idleTimeoutMs: 100 });
  assertEquals(res.end, "idle");
  assertEquals(await client.read(new Uint8Array(1)), null);
  assertEquals(await server.read(new Uint8Array(1)), null);
  client.close();
  server.close();
});

Deno.test("relay: abort signal ends it and closes both sides", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const ac = new AbortController();
  const p = relay(proxyIn, proxyOut, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  assertEquals((await p).end, "aborted");
  assertEquals(await client.read(new Uint8Array(1)), null);
  client.close();
  server.close();
});

Deno.test("relay: a reset destination ends the relay as an error and frees the source", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const p = relay(proxyIn, proxyOut);
  server.close(); // the destination vanishes
  // Keep writing until the relay notices the dead destination and closes us.
  const chunk = new Uint8Array(64 * 1024);
  try {
    for (let i = 0; i < 1000; i++) await writeAll(client, chunk);
  } catch {
    // expected: our side gets reset once the relay closes it
  }
  const res = await p;
  assert(res.end === "error" || res.end === "done", `end=${res.end}`);
  closeQuietly(client);
});

Deno.test("buffer pool: grows by class, honours the budget, always grants the minimum", () => {
  const pool = new BufferPool(1 << 20, 16 << 10, 4 << 20);
  const a = pool.acquire(1 << 20);
  assertEquals(a.length, 1 << 20);
  const b = pool.acquire(4 << 20); // over budget: falls back to what fits
  assert(b.length <= 1 << 20);
  const c = pool.acquire(16 << 10);
  assertEquals(c.length, 16 << 10);
  pool.release(a);
  pool.release(b);
  pool.release(c);
  pool.trim();
  assertEquals(pool.heldBytes, 0);
});

Deno.test("closeQuietly: closes once, never throws, a second call does nothing", () => {
  let calls = 0;
  const c = {
    close() {
      if (++calls > 1) throw new Deno.errors.BadResource("closed twice");
    },
  };
  closeQuietly(c);
  closeQuietly(c);
  closeQuietly(null);
  assertEquals(calls, 1);
  const failing = {
    close(): void {
      throw new Error("already gone");
    },
  };
  closeQuietly(failing); // swallowed
});
