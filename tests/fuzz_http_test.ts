/**
 * Property-based tests of the HTTP/1.1 codec (lib/http): request and response heads and
 * chunked bodies round-trip arbitrary fields on any read split; mutated, random and
 * truncated input ends in a result or a typed HttpError, never a hang or another exception.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import {
  copyBody,
  copyChunked,
  type HeadLimits,
  HttpError,
  readRequestHead,
  readRequestHeadRawWithin,
  readResponseHead,
  readResponseHeadRaw,
  requestBodyFraming,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
  responsePersistent,
  scanRequestHead,
  scanResponseHead,
  serializeRequestHead,
  serializeResponseHead,
  statusForHttpError,
} from "../lib/http/mod.ts";
import { BufferedReader } from "../lib/net/mod.ts";
import { forwardHeadBytes, forwardHeaders } from "../lib/tunnel/forward.ts";
import {
  bytesArb,
  cat,
  clean,
  fuzzParams,
  mutate,
  mutationArb,
  splitArb,
  splitSource,
} from "./_fuzz.ts";

const enc = new TextEncoder();

const tokenArb = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}$/);
const valueArb = fc.stringMatching(/^([!-~]([ !-~]{0,40}[!-~])?)?$/);
const headersArb = fc.array(fc.tuple(tokenArb, valueArb), { maxLength: 20 }) as fc.Arbitrary<
  [string, string][]
>;
const targetArb = fc.oneof(
  fc.stringMatching(/^\/[!-~]{0,80}$/),
  fc.webUrl(),
  fc.constant("*"),
  fc.tuple(fc.domain(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `${h}:${p}`),
);
const versionArb = fc.constantFrom("HTTP/1.1" as const, "HTTP/1.0" as const);
const requestArb: fc.Arbitrary<RequestHead> = fc.record({
  method: tokenArb,
  target: targetArb,
  version: versionArb,
  headers: headersArb,
});
const responseArb: fc.Arbitrary<ResponseHead> = fc.record({
  version: versionArb,
  status: fc.integer({ min: 100, max: 999 }),
  reason: fc.stringMatching(/^([!-~]([ !-~]{0,30}[!-~])?)?$/),
  headers: headersArb,
});

/** fast-check records have a null prototype; compare plain JSON. */
function plain(x: unknown): unknown {
  return JSON.parse(JSON.stringify(x));
}

/** `b` with every CR LF as a bare LF (which the parser accepts too). */
function lf(b: Uint8Array): Uint8Array {
  return b.filter((x, i) => !(x === 0x0d && b[i + 1] === 0x0a));
}

/**
 * What `read` makes of `wire` served whole in one read or a byte at a time: the head (or its
 * error) and every byte after it, which must start at the same place either way.
 */
async function headOutcome(
  wire: Uint8Array,
  whole: boolean,
  read: (r: BufferedReader) => Promise<unknown>,
): Promise<{ error: string } | { ok: unknown; rest: number[] }> {
  const src = splitSource(wire, [whole ? wire.length + 1 : 1]);
  const r = new BufferedReader(src);
  const out = await clean(() => read(r));
  if (out.kind === "error") return { error: `${out.error.reason}: ${out.error.message}` };
  const rest = [...r.takeBuffered()];
  for (let b = new Uint8Array(64), n = await src.read(b); n !== null; n = await src.read(b)) {
    rest.push(...b.subarray(0, n));
  }
  return { ok: plain(out.value), rest };
}

function isHttpClean(out: { kind: string; error?: Error }): void {
  if (out.kind !== "error") return;
  const e = out.error!;
  if (e instanceof HttpError) {
    const s = statusForHttpError(e);
    assert(s === undefined || (s >= 400 && s < 600), `status ${s}`);
  }
}

Deno.test("fuzz http: request heads round-trip on any split", async () => {
  await fc.assert(
    fc.asyncProperty(requestArb, fc.uint8Array({ maxLength: 32 }), splitArb, async (h, body, s) => {
      const src = splitSource(cat(serializeRequestHead(h), body), s);
      const r = new BufferedReader(src);
      const out = await clean(() => readRequestHead(r));
      assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
      if (out.kind !== "ok") return;
      assertEquals(plain(out.value), plain(h));
      assertEquals(r.buffered <= body.length, true);
    }),
    fuzzParams(400),
  );
});

Deno.test("fuzz http: response heads round-trip on any split", async () => {
  await fc.assert(
    fc.asyncProperty(responseArb, splitArb, async (h, s) => {
      const r = new BufferedReader(splitSource(serializeResponseHead(h), s));
      const out = await clean(() => readResponseHead(r));
      assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
      if (out.kind === "ok") assertEquals(plain(out.value), plain(h));
    }),
    fuzzParams(400),
  );
});

/** Chunked encoding of `chunks` (empty ones skipped: a zero chunk ends the body). */
function chunked(chunks: Uint8Array[], ext: string, trailers: [string, string][]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const c of chunks) {
    if (c.length === 0) continue;
    parts.push(enc.encode(`${c.length.toString(16)}${ext}\r\n`), c, enc.encode("\r\n"));
  }
  parts.push(enc.encode(`0\r\n${trailers.map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`));
  return cat(...parts);
}

async function decodeChunked(data: Uint8Array, sizes: number[], raw: boolean) {
  const src = splitSource(data, sizes);
  const r = new BufferedReader(src);
  const got: Uint8Array[] = [];
  const out = await clean(() =>
    copyChunked(r, src, (p) => (got.push(p.slice()), Promise.resolve()), raw)
  );
  return { out, data: cat(...got) };
}

Deno.test("fuzz http: chunked bodies decode to their data and relay byte-exact", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
      fc.constantFrom("", ";a=b", ";x"),
      fc.array(fc.tuple(tokenArb, valueArb), { maxLength: 3 }) as fc.Arbitrary<[string, string][]>,
      splitArb,
      async (chunks, ext, trailers, sizes) => {
        const wire = chunked(chunks, ext, trailers);
        const dec = await decodeChunked(wire, sizes, false);
        assertEquals(dec.out.kind, "ok");
        assertEquals([...dec.data], [...cat(...chunks)]);
        const relayed = await decodeChunked(wire, sizes, true);
        assertEquals(relayed.out.kind, "ok");
        assertEquals([...relayed.data], [...wire]);
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("fuzz http: mutated heads and bodies end in a result or a typed HttpError", async () => {
  await fc.assert(
    fc.asyncProperty(
      requestArb,
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 100 }), { maxLength: 4 }),
      mutationArb,
      splitArb,
      async (h, chunks, muts, sizes) => {
        const head = {
          ...h,
          headers: [...h.headers, ["Transfer-Encoding", "chunked"]],
        } as RequestHead;
        const wire = mutate(cat(serializeRequestHead(head), chunked(chunks, "", [])), muts);
        const src = splitSource(wire, sizes);
        const r = new BufferedReader(src);
        const out = await clean(async () => {
          const got = await readRequestHead(r, { maxHeadBytes: 2048, maxHeaders: 16 });
          if (!got) return null;
          await copyBody(r, src, requestBodyFraming(got), () => Promise.resolve());
          return got;
        });
        isHttpClean(out);
      },
    ),
    fuzzParams(500),
  );
});

Deno.test("fuzz http: a head parsed whole from one read equals it parsed line by line", async () => {
  // readRequestHead parses a head that came whole in one read from the buffer at once
  // (takeBufferedRequestHead), and one that trickles in line by line: both must give the same
  // head, or the same error, for valid, mutated and random input, CR/LF variants included.
  const outcome = (wire: Uint8Array, whole: boolean, limits: HeadLimits) =>
    headOutcome(wire, whole, (r) => readRequestHead(r, limits));
  await fc.assert(
    fc.asyncProperty(
      requestArb,
      mutationArb,
      fc.boolean(),
      bytesArb,
      // A head-size limit around the head's own size: each side of the boundary is hit.
      fc.record({ slack: fc.integer({ min: -6, max: 6 }), maxHeaders: fc.nat(24) }),
      async (h, muts, bareLf, junk, { slack, maxHeaders }) => {
        const headBytes = serializeRequestHead(h);
        const limits = { maxHeadBytes: Math.max(1, headBytes.length + slack), maxHeaders };
        let wire = cat(headBytes, enc.encode("body"));
        if (bareLf) wire = lf(wire);
        for (const input of [wire, mutate(wire, muts), junk]) {
          assertEquals(await outcome(input, true, limits), await outcome(input, false, limits));
        }
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("fuzz http: a request head's raw bytes come only when they serialise back to themselves", async () => {
  // readRequestHeadRawWithin hands out the head's bytes for a gateway to pass on (the tunnel
  // splices X-Forwarded-* into them): they must be exactly what serialising the parsed head
  // gives, for valid, mutated and random input, bare LFs, leading empty lines, odd spacing;
  // and the head must be what readRequestHead parses.
  // A leading empty line (2 bytes more than counted) and two bare LFs (2 less) balance out:
  // still not the bytes a serialiser writes (found by this test's random search).
  const balanced = enc.encode("\r\nGET / HTTP/1.1\nHost: a.test\nX: y\r\n\r\n");
  const read = await readRequestHeadRawWithin(
    new BufferedReader(splitSource(balanced, [balanced.length])),
    1000,
    () => {},
  );
  assertEquals(read?.head.target, "/");
  assertEquals(read?.raw, undefined);
  let given = 0;
  await fc.assert(
    fc.asyncProperty(
      requestArb,
      mutationArb,
      fc.constantFrom("none", "bare-lf", "leading-crlf", "space-after-colon", "no-space"),
      bytesArb,
      async (h, muts, variant, junk) => {
        let wire = cat(serializeRequestHead(h), enc.encode("body"));
        const text = new TextDecoder("latin1").decode(wire);
        if (variant === "bare-lf") wire = lf(wire);
        if (variant === "leading-crlf") wire = cat(enc.encode("\r\n"), wire);
        if (variant === "space-after-colon") wire = enc.encode(text.replace(": ", ":  "));
        if (variant === "no-space") wire = enc.encode(text.replace(": ", ":"));
        for (const input of [wire, mutate(wire, muts), junk]) {
          const one = () => new BufferedReader(splitSource(input, [input.length + 1]));
          const want = await clean(() => readRequestHead(one()));
          const got = await clean(() => readRequestHeadRawWithin(one(), 1000, () => {}));
          if (want.kind === "error" || got.kind === "error") {
            assertEquals(got.kind, want.kind);
            continue;
          }
          assertEquals(plain(got.value?.head ?? null), plain(want.value));
          const raw = got.value?.raw;
          if (raw && got.value) {
            given++;
            assertEquals([...raw], [...serializeRequestHead(got.value.head)]);
          }
          if (input === wire && variant === "none") assert(raw, "a canonical head without raw");
        }
      },
    ),
    fuzzParams(300),
  );
  assert(given > 0, "no raw head was ever given");
});

Deno.test("fuzz http: a scanned request head agrees with the parser, and is scanned when canonical", async () => {
  // scanRequestHead (every buffered request head goes through it first) splits a head at byte
  // level when it is written as a serialiser writes it, and sends everything else to the
  // parser. It must accept exactly the heads the parser accepts and serialises back to their
  // own bytes (within the limits), with the parser's method, target, version and fields, and
  // nothing the parser refuses: request smuggling's spellings (bare LF, obs-fold, whitespace
  // before a colon, control bytes, duplicate Content-Length, TE with CL), odd spacing, other
  // versions, leading empty lines, random bytes. The reference is the parser line by line
  // (the head trickles in a byte at a time, so the scan is never asked).
  const framingArb = fc.array(
    fc.tuple(
      fc.constantFrom("Content-Length", "content-length", "Transfer-Encoding", "Connection"),
      fc.constantFrom("0", "5", "5, 5", "5,6", "chunked", "gzip, chunked", "close", "upgrade"),
    ),
    { maxLength: 3 },
  ) as fc.Arbitrary<[string, string][]>;
  let scanned = 0;
  await fc.assert(
    fc.asyncProperty(
      requestArb,
      framingArb,
      mutationArb,
      fc.constantFrom(
        "none",
        "bare-lf",
        "leading-crlf",
        "obs-fold",
        "space-before-colon",
        "space-after-colon",
        "no-space",
        "trailing-space",
        "version",
        "odd-byte",
      ),
      // The odd byte and where it goes: controls, DEL, bare CR/LF, HTAB, space, latin-1.
      fc.tuple(
        fc.constantFrom(0x00, 0x09, 0x0a, 0x0d, 0x1f, 0x20, 0x3a, 0x7f, 0x80, 0xff),
        fc.nat(),
      ),
      bytesArb,
      fc.record({ slack: fc.integer({ min: -6, max: 6 }), maxHeaders: fc.nat(24) }),
      async (h, fields, muts, variant, [odd, at], junk, { slack, maxHeaders }) => {
        const head = { ...h, headers: [...h.headers, ...fields] };
        const headBytes = serializeRequestHead(head);
        const limits = { maxHeadBytes: Math.max(1, headBytes.length + slack), maxHeaders };
        let wire = cat(headBytes, enc.encode("body"));
        const text = new TextDecoder("latin1").decode(wire);
        const edit = (s: string) => new Uint8Array([...s].map((c) => c.charCodeAt(0)));
        if (variant === "bare-lf") wire = lf(wire);
        if (variant === "leading-crlf") wire = cat(enc.encode("\r\n"), wire);
        if (variant === "obs-fold") wire = edit(text.replace("\r\n", "\r\n X: y\r\n"));
        if (variant === "space-before-colon") wire = edit(text.replace(": ", " : "));
        if (variant === "space-after-colon") wire = edit(text.replace(": ", ":  "));
        if (variant === "no-space") wire = edit(text.replace(": ", ":"));
        if (variant === "trailing-space") wire = edit(text.replace(/\r\n(?!\r\n)/, " \r\n"));
        if (variant === "version") wire = edit(text.replace(/HTTP\/1\.[01]\r/, "HTTP/2.0\r"));
        if (variant === "odd-byte") {
          const i = at % headBytes.length;
          wire = cat(wire.subarray(0, i), Uint8Array.of(odd), wire.subarray(i));
        }
        for (const input of [wire, mutate(wire, muts), junk]) {
          const scan = scanRequestHead(input, limits);
          const r = new BufferedReader(splitSource(input, [1]));
          const parsed = await clean(() => readRequestHead(r, limits));
          const own = parsed.kind === "ok" && parsed.value
            ? serializeRequestHead(parsed.value)
            : undefined;
          const canonical = own !== undefined && own.length <= input.length &&
            own.every((x, i) => x === input[i]);
          assertEquals(scan !== undefined, canonical, `scan ${JSON.stringify(scan)}`);
          if (!scan || parsed.kind !== "ok" || !parsed.value) continue;
          scanned++;
          assertEquals(plain(scan.head), plain(parsed.value));
          assertEquals(scan.length, own!.length);
          assertEquals(
            plain(await clean(() => requestBodyFraming(scan.head))),
            plain(await clean(() => requestBodyFraming(parsed.value!))),
          );
          if (
            input === wire && variant === "none" && slack >= 0 && maxHeaders >= head.headers.length
          ) {
            assert(scan, "a canonical head within the limits was not scanned");
          }
        }
      },
    ),
    fuzzParams(400),
  );
  assert(scanned > 0, "no head was ever scanned");
});

Deno.test("fuzz http: the tunnel's spliced X-Forwarded-* head equals the serialised one", async () => {
  // The standalone tunnel front splices X-Forwarded-* into a head's own bytes
  // (forwardHeadBytes) instead of serialising forwardHeaders' list: the bytes must be the
  // same, with any Host and field case; a head with X-Forwarded-* of its own is serialised.
  const nameArb = fc.oneof(
    tokenArb,
    fc.constantFrom(
      "Host",
      "host",
      "HOST",
      "X-Forwarded-For",
      "x-forwarded-proto",
      "X-FORWARDED-HOST",
    ),
  );
  const fieldsArb = fc.array(fc.tuple(nameArb, valueArb), { maxLength: 8 }) as fc.Arbitrary<
    [string, string][]
  >;
  const peerArb = fc.oneof(fc.ipV4(), fc.ipV6()).map((ip) => ({ ip, remote: `${ip}:1` }));
  let spliced = 0;
  await fc.assert(
    fc.asyncProperty(
      requestArb,
      fieldsArb,
      peerArb,
      fc.constantFrom("http", "https"),
      async (h, fields, peer, proto) => {
        const wire = serializeRequestHead({ ...h, headers: fields });
        const read = await readRequestHeadRawWithin(
          new BufferedReader(splitSource(wire, [wire.length])),
          1000,
          () => {},
        );
        assert(read?.raw, "a serialised head comes back with its bytes");
        const own = fields.some(([k]) => k.toLowerCase().startsWith("x-forwarded-"));
        const got = forwardHeadBytes(read.raw, read.head, peer, proto);
        assertEquals(got === undefined, own);
        if (!got) return;
        spliced++;
        for (const trust of [false, true]) {
          const headers = forwardHeaders(read.head, peer, proto, trust);
          assertEquals([...got], [...serializeRequestHead({ ...read.head, headers })]);
        }
      },
    ),
    fuzzParams(300),
  );
  assert(spliced > 0, "no head was spliced");
});

Deno.test("fuzz http: a response head parsed whole from one read equals it parsed line by line", async () => {
  // As the request test above, for response heads (parsed at once when all buffered).
  // As the proxy and the tunnel read one: a first fill, then the head (all buffered or not).
  const outcome = (wire: Uint8Array, whole: boolean, limits: HeadLimits) =>
    headOutcome(
      wire,
      whole,
      async (r) => (await r.fill()) ? await readResponseHead(r, limits) : null,
    );
  await fc.assert(
    fc.asyncProperty(
      responseArb,
      mutationArb,
      fc.boolean(),
      bytesArb,
      // A head-size limit around the head's own size: each side of the boundary is hit.
      fc.record({ slack: fc.integer({ min: -6, max: 6 }), maxHeaders: fc.nat(24) }),
      async (h, muts, bareLf, junk, { slack, maxHeaders }) => {
        const headBytes = serializeResponseHead(h);
        const limits = { maxHeadBytes: Math.max(1, headBytes.length + slack), maxHeaders };
        let wire = cat(headBytes, enc.encode("body"));
        if (bareLf) wire = lf(wire);
        for (const input of [wire, mutate(wire, muts), junk]) {
          assertEquals(await outcome(input, true, limits), await outcome(input, false, limits));
        }
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("fuzz http: a scanned response head agrees with the parser, and is scanned when canonical", async () => {
  // scanResponseHead (the tunnel's access-log path) passes a head on as it came, knowing only
  // its status and framing fields. It must accept exactly the heads whose bytes the parser
  // would hand out as raw (all buffered, within the limits, as a serialiser writes them),
  // with the parser's status, length and framing (or framing error), and nothing the parser
  // rejects: for valid, mutated and random input, bare LFs, odd spacing and odd framing
  // fields around the limits.
  const framingArb = fc.array(
    fc.tuple(
      fc.constantFrom(
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "Transfer-Encoding",
        "Connection",
        "connection",
      ),
      fc.constantFrom(
        "0",
        "5",
        "ten",
        "5, 5",
        "5,6",
        "chunked",
        "gzip, chunked",
        "gzip",
        "",
        "close",
        "Keep-Alive",
        "keep-alive, close",
        "upgrade,\tCLOSE",
        "closed",
        "keep-alive",
      ),
    ),
    { maxLength: 3 },
  ) as fc.Arbitrary<[string, string][]>;
  const framing = (head: { status: number; headers: [string, string][] }, method: string) =>
    clean(() => responseBodyFraming(head, method));
  let scanned = 0;
  await fc.assert(
    fc.asyncProperty(
      responseArb,
      framingArb,
      mutationArb,
      fc.constantFrom(
        "none",
        "bare-lf",
        "space-after-colon",
        "no-space",
        "trailing-space",
        "status-0xx",
        "odd-byte",
      ),
      // The odd byte and where it goes: controls, DEL, bare CR/LF, HTAB, latin-1.
      fc.tuple(fc.constantFrom(0x00, 0x09, 0x0a, 0x0d, 0x1f, 0x20, 0x7f, 0x80, 0xff), fc.nat()),
      bytesArb,
      fc.record({ slack: fc.integer({ min: -6, max: 6 }), maxHeaders: fc.nat(24) }),
      async (h, fields, muts, variant, [odd, at], junk, { slack, maxHeaders }) => {
        const head = { ...h, headers: [...h.headers, ...fields] };
        const headBytes = serializeResponseHead(head);
        const limits = { maxHeadBytes: Math.max(1, headBytes.length + slack), maxHeaders };
        let wire = cat(headBytes, enc.encode("body"));
        const text = new TextDecoder("latin1").decode(wire);
        if (variant === "bare-lf") wire = lf(wire);
        if (variant === "space-after-colon") wire = enc.encode(text.replace(": ", ":  "));
        if (variant === "no-space") wire = enc.encode(text.replace(": ", ":"));
        if (variant === "trailing-space") wire = enc.encode(text.replace("\r\n", " \r\n"));
        if (variant === "status-0xx") {
          wire = enc.encode(text.replace(/^(HTTP\/1\.[01]) \d/, "$1 0"));
        }
        if (variant === "odd-byte") {
          const i = at % headBytes.length;
          wire = cat(wire.subarray(0, i), Uint8Array.of(odd), wire.subarray(i));
        }
        for (const input of [wire, mutate(wire, muts), junk]) {
          const scan = scanResponseHead(input, limits);
          const r = new BufferedReader(splitSource(input, [input.length + 1]));
          const parsed = await clean(async () =>
            (await r.fill()) ? await readResponseHeadRaw(r, limits) : null
          );
          const raw = parsed.kind === "ok" ? parsed.value?.raw : undefined;
          assertEquals(scan !== undefined, raw !== undefined, `scan ${JSON.stringify(scan)}`);
          if (!scan || parsed.kind !== "ok" || !parsed.value) continue;
          scanned++;
          assertEquals([scan.status, scan.length], [parsed.value.head.status, raw!.length]);
          assertEquals(scan.persistent, responsePersistent(parsed.value.head), "persistent");
          assertEquals([...raw!], [...input.subarray(0, scan.length)]);
          for (const method of ["GET", "HEAD"]) {
            const want = await framing(parsed.value.head, method);
            const got = await framing({ status: scan.status, headers: scan.framingFields }, method);
            assertEquals(plain(got), plain(want));
          }
          if (
            input === wire && variant === "none" && slack >= 0 && maxHeaders >= head.headers.length
          ) {
            assert(scan, "a canonical head within the limits was not scanned");
          }
        }
      },
    ),
    fuzzParams(400),
  );
  assert(scanned > 0, "no head was ever scanned");
});

Deno.test("fuzz http: random bytes as request, response and chunked body end cleanly", async () => {
  await fc.assert(
    fc.asyncProperty(bytesArb, splitArb, async (input, sizes) => {
      const prefixed = cat(enc.encode("GET / HTTP/1.1\r\n"), input);
      for (const data of [input, prefixed]) {
        isHttpClean(
          await clean(() => readRequestHead(new BufferedReader(splitSource(data, sizes)))),
        );
        await clean(() => readResponseHead(new BufferedReader(splitSource(data, sizes))));
        await decodeChunked(data, sizes, true);
      }
    }),
    fuzzParams(300),
  );
});

Deno.test("fuzz http: huge length fields stream or fail, never allocate their size", async () => {
  // A 48-bit chunk size and a 15-digit Content-Length with a few real bytes behind them:
  // the copy streams what arrives and fails with "eof"; nothing is sized by the field.
  const before = Deno.memoryUsage().rss;
  const c = await decodeChunked(enc.encode("ffffffffffff\r\nabc"), [7], false);
  assertEquals(c.out.kind, "error");
  if (c.out.kind === "error") assertEquals(c.out.error.reason, "eof");
  const tooBig = await decodeChunked(enc.encode("1000000000000\r\nabc"), [7], false);
  assertEquals(tooBig.out.kind, "error"); // 13 hex digits: a bad size line
  const resp = enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 999999999999999\r\n\r\nxyz");
  const src = splitSource(resp, [5]);
  const r = new BufferedReader(src);
  const out = await clean(async () => {
    const h = await readResponseHead(r);
    const framing = responseBodyFraming(h, "GET");
    assertEquals(framing, { kind: "length", length: 999999999999999 });
    await copyBody(r, src, framing, () => Promise.resolve());
  });
  assertEquals(out.kind, "error");
  if (out.kind === "error") assertEquals(out.error.reason, "eof");
  const grew = Deno.memoryUsage().rss - before;
  assert(grew < 64 * 1024 * 1024, `rss grew ${grew} bytes`);
});
