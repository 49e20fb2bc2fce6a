import { type AddressInfo, createServer } from "node:net";
import { assert, assertEquals } from "./_assert.ts";
import {
  acceptedFd,
  BufferPool,
  closeQuietly,
  dial,
  libcPath,
  relay,
  resetQuietly,
  withPrefix,
  writeAll,
} from "../lib/net/mod.ts";
import {
  blockStreamSha256,
  drainHash,
  listenLocal,
  readAll,
  readWithin,
  sendBlocks,
  within,
} from "./_util.ts";

/** A TCP pair (client side, server side) on loopback. */
async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const l = listenLocal();
  const [a, b] = await within(
    Promise.all([dial("127.0.0.1", l.addr.port), l.accept()]),
    "a loopback connection set up",
  );
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
      const got = drainHash(server, "the client's bytes at the server");
      await sendBlocks(server, total, 7);
      await server.closeWrite();
      return await got;
    })(),
    (async () => {
      const got = drainHash(client, "the server's bytes at the client");
      await sendBlocks(client, total, 3);
      await client.closeWrite();
      return await got;
    })(),
  ]);
  const res = await within(r, "the relay to end");
  assertEquals(up.sha256, blockStreamSha256(total, 3));
  assertEquals(down.sha256, blockStreamSha256(total, 7));
  assertEquals(res.aToB, total);
  assertEquals(res.bToA, total);
  assertEquals(res.end, "done");
  client.close();
  server.close();
});

/** `inner` whose writes take at most `most` bytes each (a short write, as Deno's may be). */
function shortWrites(inner: Deno.TcpConn, most: number) {
  return {
    inner,
    read: (p: Uint8Array) => inner.read(p),
    write: (p: Uint8Array) => inner.write(p.subarray(0, Math.min(p.length, most))),
    closeWrite: () => inner.closeWrite(),
    close: () => inner.close(),
  };
}

Deno.test("relay: short writes both ways still deliver every byte in order", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const total = 1 << 20;
  // 1,000 bytes a write: most chunks the relay reads need several writes.
  const r = relay(shortWrites(proxyIn, 1000), shortWrites(proxyOut, 1000));
  const [up, down] = await Promise.all([
    (async () => {
      const got = drainHash(server, "the client's bytes at the server");
      await sendBlocks(server, total, 11);
      await server.closeWrite();
      return await got;
    })(),
    (async () => {
      const got = drainHash(client, "the server's bytes at the client");
      await sendBlocks(client, total, 5);
      await client.closeWrite();
      return await got;
    })(),
  ]);
  const res = await within(r, "the relay to end");
  assertEquals(up, { bytes: total, sha256: blockStreamSha256(total, 5) });
  assertEquals(down, { bytes: total, sha256: blockStreamSha256(total, 11) });
  assertEquals([res.aToB, res.bToA, res.end], [total, total, "done"]);
  closeQuietly(client);
  closeQuietly(server);
});

Deno.test("relay: half-close — client shuts write, still receives the whole reply", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const r = relay(proxyIn, proxyOut);
  await writeAll(client, new TextEncoder().encode("question"));
  await client.closeWrite();
  // The server sees EOF only after the request, then answers slowly in pieces.
  const req = await readAll(server, "the request and EOF at the server");
  assertEquals(new TextDecoder().decode(req), "question");
  for (let i = 0; i < 5; i++) {
    await writeAll(server, new TextEncoder().encode(`part${i};`));
    await new Promise((res) => setTimeout(res, 10));
  }
  await server.closeWrite();
  const reply = new TextDecoder().decode(await readAll(client, "the reply and EOF at the client"));
  assertEquals(reply, "part0;part1;part2;part3;part4;");
  assertEquals((await within(r, "the relay to end")).end, "done");
  client.close();
  server.close();
});

/** The next read of `c` rejects with a connection reset (not EOF, not data). */
async function assertReset(c: Deno.TcpConn, what: string): Promise<void> {
  const err = await readWithin(c, new Uint8Array(1), `${what}'s reset`).then(
    (n) => n,
    (e: unknown) => e,
  );
  assert(err instanceof Deno.errors.ConnectionReset, `${what}: ${err}`);
}

Deno.test("relay: idle timeout closes both sides", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const res = await within(relay(proxyIn, proxyOut, { idleTimeoutMs: 100 }), "the idle relay end");
  assertEquals(res.end, "idle");
  assertEquals(await readWithin(client, new Uint8Array(1), "the client's EOF"), null);
  assertEquals(await readWithin(server, new Uint8Array(1), "the server's EOF"), null);
  client.close();
  server.close();
});

Deno.test("relay: abort signal ends it and resets both sides", async () => {
  const [client, proxyIn] = await tcpPair();
  const [proxyOut, server] = await tcpPair();
  const ac = new AbortController();
  const p = relay(proxyIn, proxyOut, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  assertEquals((await within(p, "the aborted relay to end")).end, "aborted");
  await assertReset(client, "client");
  client.close();
  server.close();
});

Deno.test("relay: a far side that dies mid-transfer resets the client, it does not end it", async () => {
  // The far side sends part of a close-delimited reply, then its connection is reset (the
  // process behind it died). The client must read the part, then an error: a FIN would make
  // the half reply look complete.
  const [client, proxyIn] = await tcpPair();
  const far = new Promise<void>((resolve) => {
    const srv = createServer((sock) => {
      sock.write(new Uint8Array(10_000), () => setTimeout(() => sock.resetAndDestroy(), 50));
      sock.on("close", () => srv.close(() => resolve()));
      sock.on("error", () => {}); // the reset we asked for
    }).listen(0, "127.0.0.1", async () => {
      const { port } = srv.address() as AddressInfo;
      const up = await dial("127.0.0.1", port);
      const r = await relay(proxyIn, up);
      assertEquals(r.end, "error");
    });
  });
  let got = 0;
  let err: unknown;
  try {
    const buf = new Uint8Array(65536);
    for (let n = await readWithin(client, buf, "the part, then a reset"); n !== null;) {
      got += n;
      n = await readWithin(client, buf, "the part, then a reset", got);
    }
  } catch (e) {
    err = e;
  }
  await within(far, "the far side's close");
  assertEquals(got, 10_000);
  assert(err instanceof Deno.errors.ConnectionReset, `the client read ${err ?? "EOF"}`);
  client.close();
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
  const res = await within(p, "the relay to a reset destination to end");
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

Deno.test("resetQuietly: a conn closed already never resets the connection that took its descriptor number", async () => {
  const l = listenLocal();
  const [a, b] = [
    await Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
    await Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
  ];
  const first = await l.accept();
  const firstFd = acceptedFd(first);
  first.close(); // its Deno field keeps the number
  const second = await l.accept();
  try {
    assertEquals(
      acceptedFd(second),
      firstFd,
      "the kernel gave the freed number to the next accept",
    );
    // A wrapper over the closed conn, as a relay cut short holds it (a shed or timed-out client).
    resetQuietly(withPrefix(first, new Uint8Array([1])));
    // Asked of the kernel first (a socket released under Deno's feet can hang a read): the
    // number still holds the second connection.
    assertEquals(peerPortOf(firstFd!), second.remoteAddr.port, "the second socket is intact");
    await writeAll(second, new TextEncoder().encode("still here"));
    await second.closeWrite();
    const peer = second.remoteAddr.port === a.localAddr.port ? a : b;
    assertEquals(
      new TextDecoder().decode(await readAll(peer, "the second socket's text")),
      "still here",
    );
  } finally {
    second.close();
    a.close();
    b.close();
    l.close();
  }
});

/** The peer port of descriptor `fd` (getpeername through libc), or -1 if it is no socket. */
function peerPortOf(fd: number): number {
  const lib = Deno.dlopen(libcPath()!, {
    getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  });
  try {
    const addr = new Uint8Array(128);
    const len = new Uint8Array(new Uint32Array([addr.length]).buffer);
    return lib.symbols.getpeername(fd, addr, len) === 0 ? (addr[2] << 8) | addr[3] : -1;
  } finally {
    lib.close();
  }
}
