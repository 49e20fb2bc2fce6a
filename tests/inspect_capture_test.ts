/**
 * lib/inspect's passive tap on any split of the bytes: a keep-alive conversation (a GET, a
 * chunked POST, an interim 100, a chunked response, a close-delimited last response) is
 * recorded the same whichever way reads cut it; bodies are cut at the cap; truncated,
 * mutated and random input never throws and keeps the ring within its bounds.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import { bytesArb, fuzzParams, mutate, mutationArb, splitArb } from "./_fuzz.ts";
import { dechunk, ExchangeRing, HttpTap, Inspector } from "../lib/inspect/mod.ts";

const enc = (s: string) => new TextEncoder().encode(s);

const up = enc(
  "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n" +
    "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n" +
    "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n" +
    "PUT /c HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n0123456789ab",
);
const down = enc(
  "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" +
    "HTTP/1.1 100 Continue\r\n\r\n" +
    "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n" +
    "HTTP/1.0 500 Oops\r\nContent-Type: text/plain\r\n\r\nuntil the close",
);

function feed(tap: HttpTap, side: "up" | "down", data: Uint8Array, sizes: number[]): void {
  let i = 0, k = 0;
  while (i < data.length) {
    const n = sizes[k++ % sizes.length];
    tap[side](data.subarray(i, i + n));
    i += n;
  }
}

function record(sizes: number[], cap: number) {
  const ring = new ExchangeRing(10);
  const tap = new HttpTap({ ring, dest: "127.0.0.1:1", bodyBytes: cap });
  feed(tap, "up", up, sizes);
  feed(tap, "down", down, sizes);
  tap.end();
  return ring.list().reverse().map((x) => ({
    line: `${x.method} ${x.path} ${x.status} ${x.state}`,
    req: [
      x.requestBody.bytes,
      new TextDecoder().decode(x.requestBody.kept),
      x.requestBody.truncated,
    ],
    res: [
      x.responseBody.bytes,
      new TextDecoder().decode(x.responseBody.kept),
      x.responseBody.truncated,
    ],
  }));
}

Deno.test("inspect tap: a keep-alive conversation recorded the same on any split", () => {
  const whole = record([1 << 20], 1024);
  assertEquals(whole.map((x) => x.line), [
    "GET /a?x=1 200 done",
    "POST /b 201 done",
    "PUT /c 500 done",
  ]);
  assertEquals(whole[1].req, [40, "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n", false]);
  assertEquals(whole[1].res, [13, "3\r\nxyz\r\n0\r\n\r\n", false]);
  assertEquals(whole[2].res, [15, "until the close", false]);
  assertEquals(new TextDecoder().decode(dechunk(enc(whole[1].req[1] as string))), "hello world");
  fc.assert(
    fc.property(splitArb, (sizes) => assertEquals(record(sizes, 1024), whole)),
    fuzzParams(50),
  );
  // The cap: 4 bytes of each body kept, all counted.
  const capped = record([7], 4);
  assertEquals(capped[2].req, [12, "0123", true]);
  assertEquals(capped[2].res, [15, "unti", true]);
});

Deno.test("inspect tap: a response cut short leaves its exchange aborted; a 101 stops parsing", () => {
  const ring = new ExchangeRing(10);
  const tap = new HttpTap({ ring, dest: "127.0.0.1:1", bodyBytes: 64 });
  tap.up(enc("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"));
  tap.down(enc("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"));
  tap.up(enc("GET /not-http HTTP/1.1\r\n\r\n")); // frames after the upgrade: not a request
  tap.end();
  assertEquals(ring.list().map((x) => `${x.path} ${x.status} ${x.state}`), ["/ws 101 done"]);
  const tap2 = new HttpTap({ ring, dest: "127.0.0.1:1", bodyBytes: 64 });
  tap2.up(enc("GET /cut HTTP/1.1\r\nHost: h\r\n\r\n"));
  tap2.down(enc("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"));
  tap2.end();
  assertEquals(ring.list()[0].state, "aborted");
  assertEquals(ring.list()[0].responseBody.bytes, 3);
});

Deno.test("inspect tap: truncated, mutated and random input never throws; the ring stays bounded", () => {
  const ring = new ExchangeRing(5);
  fc.assert(
    fc.property(mutationArb, mutationArb, bytesArb, splitArb, (mu, md, junk, sizes) => {
      const tap = new HttpTap({ ring, dest: "127.0.0.1:1", bodyBytes: 8 });
      feed(tap, "up", mutate(up, mu), sizes);
      feed(tap, "down", mutate(down, md), sizes);
      feed(tap, "up", junk, sizes);
      feed(tap, "down", junk, sizes);
      tap.end();
      const list = ring.list();
      assert(list.length <= 5);
      for (const x of list) {
        assert(x.requestBody.kept.length <= 8 && x.responseBody.kept.length <= 8);
      }
      dechunk(junk);
    }),
    fuzzParams(100),
  );
});

Deno.test("inspect: a head over the limit stops observing without holding more than the limit", () => {
  const ring = new ExchangeRing(5);
  const tap = new HttpTap({ ring, dest: "127.0.0.1:1", bodyBytes: 8 });
  const line = enc(`X-Long: ${"a".repeat(1000)}\r\n`);
  tap.up(enc("GET / HTTP/1.1\r\n"));
  for (let i = 0; i < 200; i++) tap.up(line);
  tap.up(enc("\r\n"));
  tap.end();
  assertEquals(ring.list(), []);
  assertEquals(new Inspector({ maxRequests: 3 }).ring.maxRequests, 3);
});

Deno.test("inspect tap: unanswered pipelined requests are followed up to the ring's size only", () => {
  const ring = new ExchangeRing(3);
  const tap = new HttpTap({ ring, dest: "127.0.0.1:1", bodyBytes: 8 });
  for (let i = 0; i < 10; i++) tap.up(enc(`GET /${i} HTTP/1.1\r\nHost: h\r\n\r\n`));
  assertEquals(ring.list().map((x) => x.path), ["/2", "/1", "/0"]);
  tap.end();
  assertEquals(ring.list().map((x) => x.state), ["aborted", "aborted", "aborted"]);
});
