/**
 * handleHttpProxy byte for byte: the exact head and body each side receives for heads the
 * proxy copies from the received bytes (canonical `name: value` lines) and for those it has to
 * write afresh (odd spacing, bare LF, split reads), with every body framing (Content-Length,
 * chunked, close-delimited, HEAD, 204, 1xx), and upstream heads that are broken.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startHttpProxy } from "./_http.ts";
import { closeQuietly, dial, relayPool, sleep, writeAll } from "../lib/net/mod.ts";
import { decodeLatin1, encodeLatin1 } from "../lib/http/mod.ts";
import { until, within } from "./_util.ts";

/** What the origin does with one request (its head as received, latin-1). */
interface Answer {
  /** Bytes to send back. */
  bytes: string;
  /** Close the connection afterwards. */
  close?: boolean;
  /** Send the answer one byte per write, with a pause, so the proxy reads it in pieces. */
  split?: boolean;
}

/**
 * A raw origin: reads request heads (and Content-Length bodies) byte for byte, records them,
 * answers what `answer` says. One connection at a time is enough here.
 */
function scriptedOrigin(answer: (request: string) => Answer) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const requests: string[] = [];
  let connections = 0;
  const conns = new Set<Deno.Conn>();
  const serveOne = async (c: Deno.Conn) => {
    conns.add(c);
    connections++;
    let buf = "";
    const chunk = new Uint8Array(4096);
    try {
      while (true) {
        let end = buf.indexOf("\r\n\r\n");
        while (end < 0) {
          const n = await c.read(chunk);
          if (n === null) return;
          buf += decodeLatin1(chunk.subarray(0, n));
          end = buf.indexOf("\r\n\r\n");
        }
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
        while (buf.length < end + 4 + length) {
          const n = await c.read(chunk);
          if (n === null) return;
          buf += decodeLatin1(chunk.subarray(0, n));
        }
        const request = buf.slice(0, end + 4 + length);
        buf = buf.slice(request.length);
        requests.push(request);
        const a = answer(request);
        const bytes = encodeLatin1(a.bytes);
        if (a.split) {
          for (let i = 0; i < bytes.length; i++) {
            await writeAll(c, bytes.subarray(i, i + 1));
            await sleep(1);
          }
        } else {
          await writeAll(c, bytes);
        }
        if (a.close) return;
      }
    } catch {
      // The proxy closed the upstream connection under a read: the test checks what arrived.
    } finally {
      conns.delete(c);
      closeQuietly(c);
    }
  };
  const accepting = (async () => {
    const all: Promise<void>[] = [];
    try {
      for await (const c of listener) all.push(serveOne(c));
    } catch {
      // The listener was closed by stop().
    }
    await Promise.all(all);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    requests,
    get connections() {
      return connections;
    },
    async stop() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await accepting;
    },
  };
}

/** A client of the proxy that sends raw bytes and reads exact byte counts back. */
async function proxyClient(port: number) {
  const c = await dial("127.0.0.1", port);
  const chunk = new Uint8Array(64 * 1024);
  let pending = "";
  return {
    /** Send `s`, whole or (split) one byte per write with a pause. */
    async send(s: string, split = false) {
      const bytes = encodeLatin1(s);
      if (!split) return await writeAll(c, bytes);
      for (let i = 0; i < bytes.length; i++) {
        await writeAll(c, bytes.subarray(i, i + 1));
        await sleep(1);
      }
    },
    /** Exactly `n` bytes, or fewer when the proxy closes first. */
    async read(n: number): Promise<string> {
      await within(
        (async () => {
          while (pending.length < n) {
            const got = await c.read(chunk);
            if (got === null) break;
            pending += decodeLatin1(chunk.subarray(0, got));
          }
        })(),
        () => `${n} bytes or a close from the proxy (got ${JSON.stringify(pending)})`,
      );
      const out = pending.slice(0, n);
      pending = pending.slice(out.length);
      return out;
    },
    /** Everything until the proxy closes. */
    async rest(): Promise<string> {
      await within(
        (async () => {
          while (true) {
            const got = await c.read(chunk);
            if (got === null) break;
            pending += decodeLatin1(chunk.subarray(0, got));
          }
        })(),
        () => `the proxy's close (got ${JSON.stringify(pending)})`,
      );
      const out = pending;
      pending = "";
      return out;
    },
    /** Half-close: the proxy sees the end of requests. */
    end: () => c.closeWrite(),
    close: () => closeQuietly(c),
  };
}

/** One case: the request the client sends, what the origin answers, what the client gets. */
interface Case {
  name: string;
  request: (origin: number) => string;
  answer: Answer;
  /** The exact bytes the client must receive. */
  expect: string;
  /** The exact request the origin must see. */
  upstream?: (origin: number) => string;
  /** Whether the proxy closes the client connection after this response. */
  closes?: boolean;
  /** Send the request one byte at a time. */
  splitRequest?: boolean;
}

const nginxHead = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 14:00:00 GMT\r\n" +
  'Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\nETag: "x"\r\n' +
  "Accept-Ranges: bytes\r\n\r\n";
const nginxExpect = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 14:00:00 GMT\r\n" +
  'Content-Type: text/plain\r\nContent-Length: 5\r\nETag: "x"\r\nAccept-Ranges: bytes\r\n\r\n';
const big = "0123456789abcdef".repeat(6000); // 96,000 bytes: larger than one coalesced write

const cases: Case[] = [
  {
    name: "canonical head, Connection removed, Content-Length body",
    request: (o) =>
      `GET http://127.0.0.1:${o}/a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:${o}\r\n` +
      "User-Agent: curl/8\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n",
    upstream: (o) =>
      `GET /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:${o}\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n`,
    answer: { bytes: nginxHead + "hello" },
    expect: nginxExpect + "hello",
  },
  {
    name: "the same head read in pieces (written afresh, same bytes)",
    request: (o) => `GET http://127.0.0.1:${o}/b HTTP/1.1\r\nHost: 127.0.0.1:${o}\r\n\r\n`,
    answer: { bytes: nginxHead + "hello", split: true },
    expect: nginxExpect + "hello",
  },
  {
    name: "a request read in pieces; Host rewritten in place, a second Host dropped",
    request: (o) =>
      `GET http://127.0.0.1:${o}/c HTTP/1.1\r\nX-First: 1\r\nHost: wrong\r\nX-Mid: 2\r\n` +
      "Host: again\r\n\r\n",
    upstream: (o) => `GET /c HTTP/1.1\r\nX-First: 1\r\nHost: 127.0.0.1:${o}\r\nX-Mid: 2\r\n\r\n`,
    splitRequest: true,
    answer: { bytes: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n" },
    expect: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
  },
  {
    name: "no Host: added after the fields; odd spacing written canonical",
    request: (o) => `GET http://127.0.0.1:${o}/d HTTP/1.1\r\nX-Sp:   padded  \r\nX-No:gap\r\n\r\n`,
    upstream: (o) => `GET /d HTTP/1.1\r\nX-Sp: padded\r\nX-No: gap\r\nHost: 127.0.0.1:${o}\r\n\r\n`,
    answer: { bytes: "HTTP/1.1 200 OK\r\nServer:  odd \r\nContent-Length: 2\r\n\r\nok" },
    expect: "HTTP/1.1 200 OK\r\nServer: odd\r\nContent-Length: 2\r\n\r\nok",
  },
  {
    name: "bare LF line ends from the origin come out as CRLF",
    request: (o) => `GET http://127.0.0.1:${o}/e HTTP/1.1\r\n\r\n`,
    answer: { bytes: "HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok" },
    expect: "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok",
  },
  {
    name: "Connection names a field: both dropped, in requests and responses",
    request: (o) =>
      `GET http://127.0.0.1:${o}/f HTTP/1.1\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n`,
    upstream: (o) => `GET /f HTTP/1.1\r\nX-Keep: 2\r\nHost: 127.0.0.1:${o}\r\n\r\n`,
    answer: {
      bytes: "HTTP/1.1 200 OK\r\nX-R-Hop: 1\r\nConnection: x-r-hop, Keep-Alive\r\n" +
        "Keep-Alive: timeout=5\r\nX-R: 2\r\nContent-Length: 0\r\n\r\n",
    },
    expect: "HTTP/1.1 200 OK\r\nX-R: 2\r\nContent-Length: 0\r\n\r\n",
  },
  {
    name: "chunked with a Content-Length beside it: the length goes, the chunks stay exact",
    request: (o) => `GET http://127.0.0.1:${o}/g HTTP/1.1\r\n\r\n`,
    answer: {
      bytes: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n",
    },
    expect: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n",
  },
  {
    name: "HEAD: a length but no body follows",
    request: (o) => `HEAD http://127.0.0.1:${o}/h HTTP/1.1\r\n\r\n`,
    answer: { bytes: "HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n" },
    expect: "HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
  },
  {
    name: "103 Early Hints passed on, then the answer",
    request: (o) => `GET http://127.0.0.1:${o}/i HTTP/1.1\r\n\r\n`,
    answer: {
      bytes: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    },
    expect: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
  },
  {
    name: "103 Early Hints: hop-by-hop fields and those its Connection names stay behind",
    request: (o) => `GET http://127.0.0.1:${o}/z HTTP/1.1\r\n\r\n`,
    answer: {
      bytes: "HTTP/1.1 103 Early Hints\r\nConnection: X-Hint-Hop, keep-alive\r\n" +
        "X-Hint-Hop: secret\r\nKeep-Alive: timeout=5\r\nLink: </s.css>; rel=preload\r\n\r\n" +
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    },
    expect: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
  },
  {
    name: "an HTTP/1.0 answer goes out as HTTP/1.1, the body exact past one write",
    request: (o) => `GET http://127.0.0.1:${o}/j HTTP/1.1\r\n\r\n`,
    answer: { bytes: `HTTP/1.0 200 OK\r\nX-V: 1\r\nContent-Length: ${big.length}\r\n\r\n${big}` },
    expect: `HTTP/1.1 200 OK\r\nX-V: 1\r\nContent-Length: ${big.length}\r\n\r\n${big}`,
  },
  {
    name: "HTTP/1.0 client asking keep-alive: kept, and told",
    request: (o) => `GET http://127.0.0.1:${o}/k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`,
    upstream: (o) => `GET /k HTTP/1.1\r\nHost: 127.0.0.1:${o}\r\n\r\n`,
    answer: { bytes: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" },
    expect: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
  },
  {
    name: "close-delimited: Connection: close added, everything until the close",
    request: (o) => `GET http://127.0.0.1:${o}/l HTTP/1.1\r\n\r\n`,
    answer: { bytes: `HTTP/1.1 200 OK\r\nX-C: 1\r\n\r\n${big}`, close: true },
    expect: `HTTP/1.1 200 OK\r\nX-C: 1\r\nConnection: close\r\n\r\n${big}`,
    closes: true,
  },
];

Deno.test("http proxy: heads and bodies arrive byte for byte, copied or written afresh", async () => {
  // Each case asks for its own path, /a, /b ...: the origin answers by its letter.
  const origin = scriptedOrigin((req) => {
    const letter = /^\S+ \/(\w)/.exec(req)![1];
    return cases.find((c) => c.request(0).includes(`:0/${letter}`))!.answer;
  });
  const proxy = startHttpProxy();
  try {
    let client = await proxyClient(proxy.addr.port);
    for (const c of cases) {
      const before = origin.requests.length;
      await client.send(c.request(origin.port), c.splitRequest);
      const got = await client.read(c.expect.length);
      assertEquals(got, c.expect, c.name);
      assertEquals(origin.requests.length, before + 1, c.name);
      if (c.upstream) assertEquals(origin.requests[before], c.upstream(origin.port), c.name);
      if (c.closes) {
        assertEquals(await client.rest(), "", `${c.name}: closed after the response`);
        client.close();
        client = await proxyClient(proxy.addr.port);
      }
    }
    await client.end();
    assertEquals(await client.rest(), "", "nothing more, and a close after the last request");
    client.close();
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: broken upstream heads answer 502 with the reason, then close", async () => {
  const broken: [string, RegExp][] = [
    ["HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", /header field without a name or colon/],
    ["HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", /obsolete line folding/],
    ["HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n", /control character in header X-A/],
    ["HTTP/1.1 2000 OK\r\n\r\n", /malformed status line/],
    ["HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", /bad Content-Length/],
    [`HTTP/1.1 200 OK\r\nX-Big: ${"a".repeat(70_000)}\r\n\r\n`, /head too large/],
    ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", /connection closed inside the head/],
  ];
  let next = 0;
  const origin = scriptedOrigin(() => ({ bytes: broken[next][0], close: true }));
  const proxy = startHttpProxy();
  try {
    for (; next < broken.length; next++) {
      const client = await proxyClient(proxy.addr.port);
      try {
        await client.send(`GET http://127.0.0.1:${origin.port}/x HTTP/1.1\r\n\r\n`);
        const got = await client.rest();
        assertMatch(got, /^HTTP\/1\.1 502 Bad Gateway\r\n/, broken[next][0].slice(0, 40));
        assertMatch(got, /\r\nConnection: close\r\n/);
        assertMatch(got, broken[next][1]);
      } finally {
        client.close();
      }
    }
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: a body cut short by the origin closes the client without a complete answer", async () => {
  const origin = scriptedOrigin(() => ({
    bytes: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    close: true,
  }));
  const proxy = startHttpProxy();
  try {
    const client = await proxyClient(proxy.addr.port);
    try {
      await client.send(`GET http://127.0.0.1:${origin.port}/x HTTP/1.1\r\n\r\n`);
      // The head and the 3 bytes that came, then the close: never a 10-byte body.
      assertEquals(await client.rest(), "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    } finally {
      client.close();
    }
    assertEquals(proxy.exchanges.at(-1)?.failure, "upstream-protocol");
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: a connection that ends with its kept-alive upstream gives that upstream's buffer back to the pool", async () => {
  // Each upstream's reader borrows a 16 KiB buffer from the relay pool. One still attached
  // when the client left (the usual end: the last request's upstream is kept for the next)
  // stayed counted in the pool's budget for good: 4,096 such connections and no relay could
  // grow its buffer past the smallest class.
  const origin = scriptedOrigin(() => ({
    bytes: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
  }));
  const proxy = startHttpProxy();
  try {
    const request = `GET http://127.0.0.1:${origin.port}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
    const expect = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    const one = async () => {
      const client = await proxyClient(proxy.addr.port);
      await client.send(request);
      assertEquals(await client.read(expect.length), expect);
      await client.end();
      assertEquals(await client.rest(), "", "a close after the last request");
      client.close();
      await until("the proxy's handler to end", () => proxy.stats.active === 0);
    };
    await one(); // the pool's buffers for one connection exist from here on
    const before = relayPool.heldBytes;
    for (let i = 0; i < 40; i++) await one();
    const grew = relayPool.heldBytes - before;
    assert(grew <= 32 * 1024, `the relay pool holds ${grew} bytes more after 40 connections`);
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});

Deno.test("http proxy: a switched (101) or cut response gives its upstream's buffer back to the pool", async () => {
  // As above, for the two ends that let the upstream go without #dropUpstream: the relay after
  // a 101 (a WebSocket through the proxy), and a response the upstream cut short.
  const switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n";
  const cut = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhi";
  let answer = switched;
  const origin = scriptedOrigin(() => ({ bytes: answer, close: true }));
  const proxy = startHttpProxy();
  try {
    const one = async (request: string, expect: string) => {
      const client = await proxyClient(proxy.addr.port);
      await client.send(request);
      assertEquals(await client.read(expect.length), expect);
      await client.end();
      await client.rest();
      client.close();
      await until("the proxy's handler to end", () => proxy.stats.active === 0);
    };
    const target = `http://127.0.0.1:${origin.port}/x`;
    const upgrade =
      `GET ${target} HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n`;
    const plain = `GET ${target} HTTP/1.1\r\nHost: h\r\n\r\n`;
    for (const [what, request, expect] of [["101", upgrade, switched], ["cut", plain, cut]]) {
      answer = expect;
      await one(request, expect);
      const before = relayPool.heldBytes;
      for (let i = 0; i < 40; i++) await one(request, expect);
      const grew = relayPool.heldBytes - before;
      assert(grew <= 32 * 1024, `${what}: the relay pool holds ${grew} bytes more after 40`);
    }
  } finally {
    await proxy.stop();
    await origin.stop();
  }
});
