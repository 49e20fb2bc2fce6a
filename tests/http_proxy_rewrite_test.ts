/**
 * handleHttpProxy on the wire: what reaches the origin (origin form, Host, no hop-by-hop),
 * what reaches the client (chunked, close-delimited, 101 upgrade), upstream failures,
 * stale keep-alive, malformed heads, and random input.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { ChunkedSource } from "./_chunked.ts";
import { rawExchange, startHttpProxy, startRawOrigin } from "./_http.ts";
import { BufferedReader, closeQuietly, dial, NetError, sleep, writeAll } from "../lib/net/mod.ts";
import { copyBody, getHeader, handleHttpProxy, requestBodyFraming } from "../lib/http/mod.ts";
import { blockStreamSha256, drainHash, sendBlocks } from "./_util.ts";

const enc = new TextEncoder();

async function withClient<T>(port: number, fn: (c: Deno.Conn, r: BufferedReader) => Promise<T>) {
  const c = await dial("127.0.0.1", port);
  try {
    return await fn(c, new BufferedReader(c));
  } finally {
    closeQuietly(c);
  }
}

Deno.test("http proxy: origin sees origin form, rewritten Host, no hop-by-hop fields", async () => {
  const origin = startRawOrigin(async (head, r, conn) => {
    const body: Uint8Array[] = [];
    await copyBody(
      r,
      conn,
      requestBodyFraming(head),
      (p) => (body.push(p.slice()), Promise.resolve()),
    );
    const got = new TextDecoder().decode(body.length ? body[0] : new Uint8Array());
    await writeAll(
      conn,
      enc.encode(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Resp-Hop\r\n" +
          "X-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-End: 2\r\nTrailer: X-T\r\n\r\n" +
          `${got.length.toString(16)}\r\n${got}\r\n3\r\n!!!\r\n0\r\nX-T: done\r\n\r\n`,
      ),
    );
    return true;
  });
  const proxy = startHttpProxy();
  try {
    const port = origin.addr.port;
    await withClient(proxy.addr.port, async (c, r) => {
      const req = `POST http://127.0.0.1:${port}/echo?q=1 HTTP/1.1\r\nHost: wrong.example\r\n` +
        "Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nKeep-Alive: 300\r\n" +
        "TE: trailers\r\nX-Hop: secret\r\nConnection: X-Hop, keep-alive\r\nX-Keep: yes\r\n" +
        "Content-Length: 4\r\n\r\nbody";
      const res = await rawExchange(c, r, req, "POST");
      assertEquals(res.head.status, 200);
      assertEquals(res.body, "4\r\nbody\r\n3\r\n!!!\r\n0\r\nX-T: done\r\n\r\n");
      const names = res.head.headers.map(([k]) => k.toLowerCase());
      assertEquals(names, ["transfer-encoding", "x-end", "trailer"]);
      // The same client connection serves a second request (keep-alive both ways).
      const res2 = await rawExchange(
        c,
        r,
        `GET http://127.0.0.1:${port}/2 HTTP/1.1\r\nHost: x\r\n\r\n`,
      );
      assertEquals(res2.head.status, 200);
    });
    assertEquals(origin.stats.total, 1, "the upstream connection was reused");
    const seen = origin.heads[0];
    assertEquals([seen.method, seen.target, seen.version], ["POST", "/echo?q=1", "HTTP/1.1"]);
    assertEquals(seen.headers, [
      ["Host", `127.0.0.1:${port}`],
      ["X-Keep", "yes"],
      ["Content-Length", "4"],
    ]);
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: close-delimited responses end the client connection; HTTP/1.0 clients", async () => {
  const origin = startRawOrigin(async (head, _r, conn) => {
    if (head.target === "/close") {
      await writeAll(
        conn,
        enc.encode("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close"),
      );
      return false;
    }
    await writeAll(conn, enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    return true;
  });
  const proxy = startHttpProxy();
  try {
    const port = origin.addr.port;
    await withClient(proxy.addr.port, async (c, r) => {
      const res = await rawExchange(c, r, `GET http://127.0.0.1:${port}/close HTTP/1.1\r\n\r\n`);
      assertEquals(res.body, "until close");
      assertEquals(getHeader(res.head.headers, "connection"), "close");
    });
    await withClient(proxy.addr.port, async (c, r) => {
      // HTTP/1.0 with keep-alive asked: kept, and said so.
      const res = await rawExchange(
        c,
        r,
        `GET http://127.0.0.1:${port}/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`,
      );
      assertEquals([res.body, getHeader(res.head.headers, "connection")], ["ok", "keep-alive"]);
      // HTTP/1.0 without: the proxy closes after the response.
      const res2 = await rawExchange(c, r, `GET http://127.0.0.1:${port}/b HTTP/1.0\r\n\r\n`);
      assertEquals([res2.body, getHeader(res2.head.headers, "connection")], ["ok", "close"]);
      assertEquals(await r.readExactOrEof(1), null);
    });
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: a stale kept-alive upstream is re-dialled transparently", async () => {
  // This origin closes after every response although it never says so.
  const origin = startRawOrigin(async (_head, _r, conn) => {
    await writeAll(conn, enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"));
    return false;
  });
  const proxy = startHttpProxy();
  try {
    const port = origin.addr.port;
    await withClient(proxy.addr.port, async (c, r) => {
      for (let i = 0; i < 3; i++) {
        const res = await rawExchange(c, r, `GET http://127.0.0.1:${port}/${i} HTTP/1.1\r\n\r\n`);
        assertEquals([res.head.status, res.body], [200, "fresh"]);
        await sleep(i * 10); // 0 ms: the next request may race the FIN (reset); 10 ms: EOF
      }
    });
    assertEquals(origin.heads.length, 3);
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: 101 Switching Protocols becomes a raw relay (its Connection-named fields dropped)", async () => {
  const origin = startRawOrigin(async (head, r, conn) => {
    assertEquals(getHeader(head.headers, "upgrade"), "echo");
    await writeAll(
      conn,
      enc.encode(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\nX-Hop: secret\r\n" +
          "Keep-Alive: timeout=5\r\nUpgrade: echo\r\nX-Kept: 1\r\n\r\n",
      ),
    );
    const rest = r.takeBuffered();
    if (rest.length) await writeAll(conn, rest);
    const buf = new Uint8Array(1024);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      await writeAll(conn, buf.subarray(0, n));
    }
    return false;
  });
  const proxy = startHttpProxy();
  try {
    await withClient(proxy.addr.port, async (c, r) => {
      await writeAll(
        c,
        enc.encode(
          `GET http://127.0.0.1:${origin.addr.port}/ws HTTP/1.1\r\nConnection: Upgrade\r\n` +
            "Upgrade: echo\r\n\r\nearly ",
        ),
      );
      const { readResponseHead } = await import("../lib/http/mod.ts");
      const head = await readResponseHead(r);
      assertEquals(head.status, 101);
      // RFC 9110 §7.6.1: what the upstream's Connection names is for the proxy's hop only.
      assertEquals(head.headers, [["Upgrade", "echo"], ["X-Kept", "1"], ["Connection", "upgrade"]]);
      await writeAll(c, enc.encode("late"));
      await c.closeWrite();
      const echoed = new TextDecoder().decode(
        new Uint8Array(
          await (async () => {
            const out: number[] = [...r.takeBuffered()];
            const b = new Uint8Array(64);
            while (true) {
              const n = await c.read(b);
              if (n === null) return out;
              out.push(...b.subarray(0, n));
            }
          })(),
        ),
      );
      assertEquals(echoed, "early late");
    });
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: broken or silent upstreams answer 502 / 504", async () => {
  const origin = startRawOrigin(async (head, r, conn) => {
    if (head.target === "/garbage") await writeAll(conn, enc.encode("SPDY/9 what\r\n\r\n"));
    if (head.target === "/silent") await r.readExactOrEof(1); // says nothing until closed
    return false;
  });
  const proxy = startHttpProxy({ idleTimeoutMs: 200 });
  try {
    const port = origin.addr.port;
    await withClient(proxy.addr.port, async (c, r) => {
      const res = await rawExchange(c, r, `GET http://127.0.0.1:${port}/garbage HTTP/1.1\r\n\r\n`);
      assertEquals(res.head.status, 502);
      assertMatch(res.body, /^502 Bad Gateway: bad response/);
    });
    await withClient(proxy.addr.port, async (c, r) => {
      const res = await rawExchange(c, r, `GET http://127.0.0.1:${port}/closes HTTP/1.1\r\n\r\n`);
      assertEquals(res.head.status, 502);
    });
    await withClient(proxy.addr.port, async (c, r) => {
      const res = await rawExchange(c, r, `GET http://127.0.0.1:${port}/silent HTTP/1.1\r\n\r\n`);
      assertEquals(res.head.status, 504);
      assertMatch(res.body, /no response in time/);
    });
  } finally {
    await proxy.stop(100);
    await origin.stop(100);
  }
});

Deno.test("http proxy: malformed and oversize heads get 400 / 431 / 505 and a close", async () => {
  const proxy = startHttpProxy();
  try {
    const cases: [string, number][] = [
      ["GARBAGE\r\n\r\n", 400],
      ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400], // origin form: not a proxy request
      ["GET https://example.org/ HTTP/1.1\r\n\r\n", 400],
      ["GET http://u:p@example.org/ HTTP/1.1\r\n\r\n", 400],
      ["CONNECT example.org HTTP/1.1\r\n\r\n", 400], // no port
      ["GET http://x/ HTTP/2.0\r\n\r\n", 505],
      [`GET http://x/ HTTP/1.1\r\nX-Big: ${"a".repeat(70_000)}\r\n\r\n`, 431],
      [`GET http://x/ HTTP/1.1\r\n${"A: b\r\n".repeat(101)}\r\n`, 431],
      [`GET http://x/${"a".repeat(70_000)} HTTP/1.1\r\n\r\n`, 414],
      ["POST http://x/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ];
    for (const [req, status] of cases) {
      await withClient(proxy.addr.port, async (c, r) => {
        const res = await rawExchange(c, r, req);
        assertEquals(res.head.status, status, JSON.stringify(req.slice(0, 60)));
        assertEquals(getHeader(res.head.headers, "connection"), "close");
        assertEquals(await r.readExactOrEof(1), null, "closed after the error");
      });
    }
  } finally {
    await proxy.stop();
  }
});

Deno.test("http proxy: CONNECT keeps half-close and early bytes (64 MiB each way)", async () => {
  const total = 64 << 20;
  const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const targetDone = (async () => {
    const c = await target.accept();
    try {
      const got = await drainHash(c); // until the client's FIN
      await sendBlocks(c, total, 5); // then answer
      await c.closeWrite();
      return got;
    } finally {
      closeQuietly(c);
    }
  })();
  const proxy = startHttpProxy();
  try {
    await withClient(proxy.addr.port, async (c, r) => {
      const port = (target.addr as Deno.NetAddr).port;
      // The CONNECT and the first payload bytes arrive in one write.
      await writeAll(c, enc.encode(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: x\r\n\r\n`));
      const { readResponseHead } = await import("../lib/http/mod.ts");
      const head = await readResponseHead(r);
      assertEquals(head.status, 200);
      const up = (async () => {
        await sendBlocks(c, total, 9);
        await c.closeWrite();
      })();
      const { withPrefix } = await import("../lib/net/mod.ts");
      const down = await drainHash(withPrefix(c, r.takeBuffered()));
      await up;
      assertEquals(await targetDone, { bytes: total, sha256: blockStreamSha256(total, 9) });
      assertEquals(down, { bytes: total, sha256: blockStreamSha256(total, 5) });
    });
  } finally {
    target.close();
    await proxy.stop();
  }
});

Deno.test("http proxy: thousands of random client inputs end cleanly, never throw", async () => {
  const valid = enc.encode(
    "POST http://h:1/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
      "CONNECT h:2 HTTP/1.1\r\n\r\n",
  );
  let dials = 0;
  for (let i = 0; i < 2000; i++) {
    let input: Uint8Array;
    if (i % 3 === 0) {
      input = new Uint8Array(Math.floor(Math.random() * 300));
      crypto.getRandomValues(input);
    } else {
      input = valid.slice(0, Math.floor(Math.random() * (valid.length + 1)));
      for (let k = 0; k < 3 && input.length; k++) {
        input[Math.floor(Math.random() * input.length)] = [0x0d, 0x0a, 0x20, 0x3a, 0][k % 5];
      }
    }
    const src = new ChunkedSource(input, () => 1 + Math.floor(Math.random() * 13));
    await handleHttpProxy(src, {
      connect: () => {
        dials++;
        return Promise.reject(new NetError("refused", "no upstream in this test"));
      },
      idleTimeoutMs: 0,
      limits: { maxHeadBytes: 256, maxHeaders: 8 },
    });
    assert(src.closed, "the connection is closed when handleHttpProxy returns");
  }
  assert(dials > 0, "some inputs got as far as dialling");
});

Deno.test("http proxy: HTTP/1.0 clients get chunked responses de-chunked, then a close", async () => {
  const origin = startRawOrigin(async (_head, _r, conn) => {
    await writeAll(
      conn,
      enc.encode(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" +
          "5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
      ),
    );
    return true;
  });
  const proxy = startHttpProxy();
  try {
    await withClient(proxy.addr.port, async (c, r) => {
      const res = await rawExchange(
        c,
        r,
        `GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`,
      );
      assertEquals(res.body, "hello world"); // close-delimited: read to EOF
      assertEquals(getHeader(res.head.headers, "transfer-encoding"), undefined);
      assertEquals(getHeader(res.head.headers, "trailer"), undefined);
      assertEquals(getHeader(res.head.headers, "connection"), "close");
    });
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: an early final answer to Expect: 100-continue ends cleanly", async () => {
  const origin = startRawOrigin(async (head, _r, conn) => {
    assertEquals(getHeader(head.headers, "expect"), "100-continue");
    await writeAll(
      conn,
      enc.encode(
        "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!",
      ),
    );
    return false;
  });
  const proxy = startHttpProxy();
  try {
    await withClient(proxy.addr.port, async (c, r) => {
      // The client waits for 100 Continue before sending its body: it never gets one.
      const res = await rawExchange(
        c,
        r,
        `PUT http://127.0.0.1:${origin.addr.port}/up HTTP/1.1\r\nContent-Length: 1000000\r\n` +
          "Expect: 100-continue\r\n\r\n",
      );
      assertEquals([res.head.status, res.body], [413, "big!"]);
      assertEquals(await r.readExactOrEof(1), null, "the proxy closes: the body never came");
    });
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: an idle keep-alive client is closed after idleTimeoutMs", async () => {
  const origin = startRawOrigin(async (_head, _r, conn) => {
    await writeAll(conn, enc.encode("HTTP/1.1 204 No Content\r\n\r\n"));
    return true;
  });
  const proxy = startHttpProxy({ idleTimeoutMs: 150 });
  try {
    await withClient(proxy.addr.port, async (c, r) => {
      const res = await rawExchange(
        c,
        r,
        `GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.1\r\n\r\n`,
      );
      assertEquals(res.head.status, 204);
      assertEquals(await r.readExactOrEof(1), null, "closed by the idle timer");
    });
    assertEquals(proxy.stats.errors, 0);
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: without a handshake timer, a client silent from the start is closed after idleTimeoutMs", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    // No handshakeDone: nobody else times the first head.
    await handleHttpProxy(conn, {
      connect: () => Promise.reject(new Error("no dial")),
      idleTimeoutMs: 100,
    });
  })();
  try {
    await withClient(listener.addr.port, async (_c, r) => {
      assertEquals(await r.readExactOrEof(1), null, "closed by the idle timer");
    });
    await served;
  } finally {
    listener.close();
  }
});
