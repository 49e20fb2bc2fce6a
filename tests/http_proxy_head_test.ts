/**
 * lib/http/proxy_head.ts against the slow, obvious construction: for random heads, the head
 * `buildHead` writes — copying runs of the received bytes, or field by field — is exactly
 * `serializeHead` of the fields left after `withoutHeaders` and `withHeader`, with the extras.
 * And `hopFacts` reads what `headerTokens` reads.
 */

import { assertEquals } from "./_assert.ts";
import fc from "./_fc.ts";
import { BufferedReader } from "../lib/net/mod.ts";
import {
  decodeLatin1,
  type HeaderFields,
  headerTokens,
  readResponseHeadRaw,
  serializeResponseHead,
  withHeader,
  withoutHeaders,
} from "../lib/http/head.ts";
import { buildHead, FieldNames, hopFacts } from "../lib/http/proxy_head.ts";

const names = [
  "Host",
  "host",
  "Connection",
  "connection",
  "Keep-Alive",
  "Proxy-Connection",
  "TE",
  "Upgrade",
  "Content-Length",
  "Transfer-Encoding",
  "X-A",
  "x-b",
  "User-Agent",
  "Accept",
  "X-Hop",
];
const field = fc.tuple(
  fc.constantFrom(...names),
  fc.stringMatching(/^[!-~]([ !-~]{0,12}[!-~])?$/).filter((v) => v.length > 0),
);
const fields = fc.array(field, { maxLength: 12 });
const dropNames = fc.subarray(names.map((n) => n.toLowerCase()));

/** A reader over `bytes` all buffered (as when a head came in one read). */
async function readerOf(bytes: Uint8Array): Promise<BufferedReader> {
  let given = false;
  const r = new BufferedReader({
    read: (p: Uint8Array) => {
      if (given) return Promise.resolve(null);
      given = true;
      p.set(bytes);
      return Promise.resolve(bytes.length);
    },
  });
  await r.readExactOrEof(0);
  return r;
}

Deno.test("proxy head: buildHead equals the filtered head re-serialised, raw or not", async () => {
  await fc.assert(
    fc.asyncProperty(
      fields,
      dropNames,
      fc.option(fc.constantFrom("a.test:80", "127.0.0.1:8080"), { nil: undefined }),
      fc.array(field, { maxLength: 2 }),
      fc.nat({ max: 40 }),
      async (fs, drop, host, extra, room) => {
        const start = "HTTP/1.1 200 OK";
        // The reference: the old way, copies and re-serialisation.
        let kept: HeaderFields = withoutHeaders(fs, drop);
        if (host !== undefined) kept = withHeader(kept, "Host", host);
        const expected = decodeLatin1(
          serializeResponseHead({
            version: "HTTP/1.1",
            status: 200,
            reason: "OK",
            headers: [...kept, ...extra],
          }),
        );
        const plan = { fields: fs, drop: new FieldNames(drop), host, extra, room };
        const fresh = buildHead({ ...plan, start });
        assertEquals(fresh.length, expected.length + room);
        assertEquals(decodeLatin1(fresh.subarray(0, expected.length)), expected);
        // The same head as received bytes, parsed back: copied in runs from them.
        const received = serializeResponseHead({
          version: "HTTP/1.1",
          status: 200,
          reason: "OK",
          headers: fs,
        });
        const { head, raw } = await readResponseHeadRaw(await readerOf(received));
        assertEquals(raw !== undefined, true, "a canonical head comes raw");
        const copied = buildHead({ ...plan, fields: head.headers, raw });
        assertEquals(decodeLatin1(copied.subarray(0, expected.length)), expected);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("proxy head: hopFacts reads what headerTokens reads", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.constantFrom("Connection", "proxy-connection", "Transfer-Encoding", "X-A"),
          fc.array(fc.constantFrom("close", "Keep-Alive", "upgrade", "X-Hop", " ", ",", "chunked"))
            .map((parts) => parts.join("")),
        ),
        { maxLength: 6 },
      ),
      fc.boolean(),
      (fs, proxy) => {
        const facts = hopFacts(fs, proxy);
        const conn = headerTokens(fs, "connection");
        const prox = proxy ? headerTokens(fs, "proxy-connection") : [];
        assertEquals(facts.connection, conn);
        assertEquals(facts.proxyConnection, prox);
        assertEquals(facts.close, [...conn, ...prox].includes("close"));
        assertEquals(facts.keepAlive, [...conn, ...prox].includes("keep-alive"));
        assertEquals(facts.upgrade, [...conn, ...prox].includes("upgrade"));
        assertEquals(facts.transferCoded, headerTokens(fs, "transfer-encoding").length > 0);
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("proxy head: FieldNames matches any case, and with() adds only new names", () => {
  const base = new FieldNames(["connection", "te"]);
  assertEquals([base.has("Connection"), base.has("TE"), base.has("te"), base.has("tee")], [
    true,
    true,
    true,
    false,
  ]);
  assertEquals(base.with(["te", "close"], new Set(["close"])), base);
  const more = base.with(["x-hop"], new Set());
  assertEquals([more.has("X-Hop"), base.has("X-Hop"), more.has("connection")], [true, false, true]);
});
