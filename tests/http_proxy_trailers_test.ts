/**
 * handleHttpProxy and chunked trailers (RFC 9110 §7.6.1, §6.5.1): a trailer field that is
 * hop-by-hop, named by the message's `Connection`, or one that cannot be a trailer (framing,
 * routing, authentication …) does not pass the proxy; the others do, byte for byte, with the
 * chunks before them — in the response (curl --raw reads what the proxy relayed) and in the
 * request (the origin reads what arrived), whether the trailer section came in the read that
 * held the last chunk or apart from it. Before, trailers were copied unchanged.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { rawExchange, startHttpProxy, startRawOrigin } from "./_http.ts";
import { run } from "./_util.ts";
import { BufferedReader, closeQuietly, concatBytes, dial, writeAll } from "../lib/net/mod.ts";
import { copyBody, HttpError, requestBodyFraming } from "../lib/http/mod.ts";

const enc = new TextEncoder();
/** A body's chunks, then trailer fields of every kind the proxy must drop among kept ones. */
const chunks = "5\r\nhello\r\n6\r\n world\r\n0\r\n";
const trailers = "X-Checksum: abc\r\nX-Secret-Hop: s3cret\r\nKeep-Alive: timeout=5\r\n" +
  "Content-Length: 99\r\nTransfer-Encoding: gzip\r\nAuthorization: Basic eDp5\r\n" +
  "x-secret-hop: again\r\nX-Tail: z\r\n\r\n";
/** What passes: the chunks as they came, the kept trailer fields in order. */
const relayed = chunks + "X-Checksum: abc\r\nX-Tail: z\r\n\r\n";

for (const apart of [false, true]) {
  const how = apart ? "the trailer section written apart" : "in one write";
  Deno.test(`http proxy: response trailers lose hop-by-hop and Connection-named fields (curl --raw, ${how})`, async () => {
    const origin = startRawOrigin(async (_head, _r, conn) => {
      const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" +
        "Connection: X-Secret-Hop\r\nTrailer: X-Checksum, X-Tail\r\n\r\n";
      if (apart) {
        await writeAll(conn, enc.encode(head + chunks));
        await writeAll(conn, enc.encode(trailers));
      } else {
        await writeAll(conn, enc.encode(head + chunks + trailers));
      }
      return true;
    });
    const proxy = startHttpProxy();
    try {
      const r = await run("curl", [
        "-sS",
        "--max-time",
        "20",
        "--raw",
        "-x",
        `http://127.0.0.1:${proxy.addr.port}`,
        `http://127.0.0.1:${origin.addr.port}/t`,
      ]);
      assertEquals([r.code, r.stdout], [0, relayed], r.stderr);
      assertEquals(proxy.exchanges.map((e) => [e.status, e.failure]), [[200, undefined]]);
    } finally {
      await proxy.stop();
      await origin.stop();
    }
  });

  Deno.test(`http proxy: request trailers lose hop-by-hop and Connection-named fields (${how}); the connection goes on`, async () => {
    const bodies: string[] = [];
    const origin = startRawOrigin(async (head, r, conn) => {
      let body = "";
      await copyBody(r, conn, requestBodyFraming(head), (p) => {
        body += new TextDecoder().decode(p);
        return Promise.resolve();
      });
      bodies.push(body);
      await writeAll(conn, enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
      return true;
    });
    const proxy = startHttpProxy();
    const c = await dial("127.0.0.1", proxy.addr.port);
    try {
      const r = new BufferedReader(c);
      const url = `http://127.0.0.1:${origin.addr.port}`;
      const head = `POST ${url}/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n` +
        "Connection: X-Secret-Hop\r\nTE: trailers\r\n\r\n";
      const request = head + chunks + trailers.replace("Keep-Alive", "TE");
      if (apart) await writeAll(c, enc.encode(head + chunks));
      const res = await rawExchange(
        c,
        r,
        apart ? request.slice(head.length + chunks.length) : request,
        "POST",
      );
      assertEquals([res.head.status, res.body], [200, "ok"]);
      // The same connection serves the next request: the body ended where it should.
      const next = await rawExchange(c, r, `GET ${url}/next HTTP/1.1\r\nHost: x\r\n\r\n`);
      assertEquals(next.head.status, 200);
      assertEquals(bodies, [relayed, ""]);
    } finally {
      closeQuietly(c);
      await proxy.stop();
      await origin.stop();
    }
  });
}

/** What `copyBody` with a trailer filter writes for `wire`, read in pieces of `split`. */
async function filtered(wire: string, split: number | (() => number)) {
  const src = new ChunkedSource(enc.encode(wire), split);
  const r = new BufferedReader(src);
  const out: Uint8Array[] = [];
  const drop = { has: (k: string) => /^(x-secret-hop|keep-alive|content-length)$/i.test(k) };
  await copyBody(
    r,
    src,
    { kind: "chunked" },
    (p) => {
      out.push(p.slice());
      return Promise.resolve();
    },
    undefined,
    drop,
  );
  const rest = r.takeBuffered().slice();
  return { body: new TextDecoder().decode(concatBytes(...out)), pieces: out.length, rest };
}

for (const [name, split] of splits) {
  Deno.test(`chunked copy with a trailer filter: fields dropped, the rest as it came (${name})`, async () => {
    const next = "GET /next HTTP/1.1\r\n\r\n";
    const got = await filtered(chunks + trailers + next, split);
    assertEquals(
      got.body,
      chunks + "X-Checksum: abc\r\nTransfer-Encoding: gzip\r\n" +
        "Authorization: Basic eDp5\r\nX-Tail: z\r\n\r\n",
    );
    // What follows the body stays unread (some of it may still be in the source).
    assert(next.startsWith(new TextDecoder().decode(got.rest)), JSON.stringify(got.rest));
    const plain = await filtered(chunks + "\r\n", split);
    assertEquals(plain.body, chunks + "\r\n");
    const kept = await filtered(chunks + "X-A: 1\r\n\r\n", split);
    assertEquals(kept.body, chunks + "X-A: 1\r\n\r\n");
    for (const bad of ["X-A: 1\r\n folded\r\n\r\n", "X A: 1\r\n\r\n"]) {
      const err = await assertRejects(() => filtered(chunks + bad, split));
      assert(err instanceof HttpError, String(err));
    }
  });
}

Deno.test("chunked copy with a trailer filter: a body without trailer fields whose end comes in one read is one piece", async () => {
  assertEquals((await filtered(chunks + "\r\n", 1 << 20)).pieces, 1);
});
