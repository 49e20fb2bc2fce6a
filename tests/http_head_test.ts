/** HTTP/1.1 head and body codec: every read split, truncated and random input, limits. */

import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { readAll } from "./_util.ts";
import { BufferedReader, ProtocolError, withPrefix } from "../lib/net/mod.ts";
import {
  basicCredentials,
  copyBody,
  copyChunked,
  decodeLatin1,
  encodeLatin1,
  getHeader,
  headerTokens,
  HttpError,
  parseAbsoluteTarget,
  parseAuthority,
  parseBasicCredentials,
  readRequestHead,
  readRequestHeadWithin,
  readResponseHead,
  readResponseHeadRaw,
  requestAuthority,
  requestBodyFraming,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
  serializeRequestHead,
  serializeResponseHead,
  statusForHttpError,
  takeBufferedResponseHead,
  withHeader,
  withoutHeaders,
} from "../lib/http/mod.ts";
import { concatBytes, concatList } from "../lib/net/bytes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const concat = concatBytes;
const concatAll = concatList;

/** Collect everything a copy writes. */
function collector(): {
  sink: (p: Uint8Array) => Promise<void>;
  text(): string;
  bytes(): Uint8Array;
} {
  const parts: Uint8Array[] = [];
  return {
    sink: (p) => (parts.push(p.slice()), Promise.resolve()),
    bytes: () => concatAll(parts),
    text: () => dec.decode(concatAll(parts)),
  };
}

const requestText = "\r\nPOST http://example.org:8080/up?x=1 HTTP/1.1\r\n" +
  "Host: example.org:8080\r\n" +
  "Content-Length: 5\r\n" +
  "X-Spaces:   padded value \t\r\n" +
  "X-Empty:\r\n" +
  "Connection: keep-alive, X-Spaces\r\n" +
  "\r\n" +
  "helloGET /next HTTP/1.0\n\n";

for (const [name, split] of splits) {
  Deno.test(`http head: request, body and the next request on ${name}`, async () => {
    const src = new ChunkedSource(enc.encode(requestText), split);
    const r = new BufferedReader(src, 64);
    const head = await readRequestHead(r);
    assert(head);
    assertEquals(head.method, "POST");
    assertEquals(head.target, "http://example.org:8080/up?x=1");
    assertEquals(head.version, "HTTP/1.1");
    assertEquals(head.headers, [
      ["Host", "example.org:8080"],
      ["Content-Length", "5"],
      ["X-Spaces", "padded value"],
      ["X-Empty", ""],
      ["Connection", "keep-alive, X-Spaces"],
    ]);
    assertEquals(headerTokens(head.headers, "connection"), ["keep-alive", "x-spaces"]);
    const framing = requestBodyFraming(head);
    assertEquals(framing, { kind: "length", length: 5 });
    const body = collector();
    await copyBody(r, src, framing, body.sink);
    assertEquals(body.text(), "hello");
    const next = await readRequestHead(r);
    assertEquals(next, { method: "GET", target: "/next", version: "HTTP/1.0", headers: [] });
    assertEquals(await readRequestHead(r), null);
  });

  Deno.test(`http head: response with chunked body kept raw and decoded on ${name}`, async () => {
    const chunked =
      "4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nTrail: yes\r\n\r\n";
    const text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n" + chunked +
      "EXTRA";
    for (const raw of [true, false]) {
      const src = new ChunkedSource(enc.encode(text), split);
      const r = new BufferedReader(src, 32);
      const head = await readResponseHead(r);
      assertEquals([head.version, head.status, head.reason], ["HTTP/1.1", 200, "OK"]);
      assertEquals(responseBodyFraming(head, "GET"), { kind: "chunked" });
      const out = collector();
      await copyChunked(r, src, out.sink, raw);
      const expected = raw
        ? chunked // framing and trailers kept byte for byte
        : "Wikipedia in \r\n\r\nchunks.";
      assertEquals(out.text(), expected);
      assertEquals(dec.decode(await readAll(withPrefix(src, r.takeBuffered()))), "EXTRA");
    }
  });

  Deno.test(`http head: close-delimited and length bodies stream exactly on ${name}`, async () => {
    const big = new Uint8Array(300_000).map((_, i) => (i * 7) % 251);
    const src = new ChunkedSource(
      concat(
        enc.encode("HTTP/1.0 200 OK\r\nContent-Length: 300000\r\n\r\n"),
        big,
        enc.encode("tail"),
      ),
      split,
    );
    const r = new BufferedReader(src, 1024);
    const head = await readResponseHead(r);
    const out = collector();
    await copyBody(r, src, responseBodyFraming(head, "GET"), out.sink);
    assertEquals(out.bytes(), big);
    const rest = collector();
    await copyBody(r, src, { kind: "close" }, rest.sink);
    assertEquals(rest.text(), "tail");
  });
}

Deno.test("http head: limits on head size, header count and request line", async () => {
  const manyHeaders = "GET / HTTP/1.1\r\n" + "A: b\r\n".repeat(101) + "\r\n";
  const e1 = await assertRejects(
    readRequestHead(new BufferedReader(new ChunkedSource(enc.encode(manyHeaders), 7))),
  );
  assert(e1 instanceof HttpError && e1.reason === "head-too-large", String(e1));
  assertEquals(statusForHttpError(e1), 431);
  const ok = await readRequestHead(
    new BufferedReader(new ChunkedSource(enc.encode(manyHeaders), 7)),
    { maxHeaders: 101 },
  );
  assertEquals(ok?.headers.length, 101);

  const bigHead = "GET / HTTP/1.1\r\nX-Big: " + "x".repeat(70_000) + "\r\n\r\n";
  const e2 = await assertRejects(
    readRequestHead(new BufferedReader(new ChunkedSource(enc.encode(bigHead), 4096))),
  );
  assert(e2 instanceof HttpError && e2.reason === "head-too-large", String(e2));
  // Many fields that together pass the limit, each small.
  const sum = "GET / HTTP/1.1\r\n" + `X: ${"y".repeat(900)}\r\n`.repeat(80) + "\r\n";
  const e3 = await assertRejects(
    readRequestHead(new BufferedReader(new ChunkedSource(enc.encode(sum), 999)), {
      maxHeadBytes: 32_000,
    }),
  );
  assert(e3 instanceof HttpError && e3.reason === "head-too-large", String(e3));
  const longLine = `GET /${"a".repeat(70_000)} HTTP/1.1\r\n\r\n`;
  const e4 = await assertRejects(
    readRequestHead(new BufferedReader(new ChunkedSource(enc.encode(longLine), 5000))),
  );
  assert(e4 instanceof HttpError && e4.reason === "uri-too-long", String(e4));
  assertEquals(statusForHttpError(e4), 414);
  // Exactly at the limit is fine.
  const exact = "GET / HTTP/1.1\r\nX: " + "z".repeat(100 - 16 - 5 - 2) + "\r\n\r\n";
  assertEquals(exact.length, 100);
  const h = await readRequestHead(new BufferedReader(new ChunkedSource(enc.encode(exact), 3)), {
    maxHeadBytes: 100,
  });
  assert(h);
  const e5 = await assertRejects(
    readRequestHead(new BufferedReader(new ChunkedSource(enc.encode(exact), 3)), {
      maxHeadBytes: 99,
    }),
  );
  assert(e5 instanceof HttpError && e5.reason === "head-too-large", String(e5));
});

Deno.test("http head: malformed heads are HttpErrors with the right status", async () => {
  const cases: [string, string, number | undefined][] = [
    ["GARBAGE\r\n\r\n", "bad-request", 400],
    ["GET  / HTTP/1.1\r\n\r\n", "bad-request", 400],
    ["GET / HTTP/1.1 \r\n\r\n", "bad-request", 400],
    ["GET / HTTP/2.0\r\n\r\n", "version", 505],
    ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "version", 505],
    ["GET / HTTP/1.1\r\nX : y\r\n\r\n", "bad-request", 400],
    ["GET / HTTP/1.1\r\n: y\r\n\r\n", "bad-request", 400],
    ["GET / HTTP/1.1\r\nNoColon\r\n\r\n", "bad-request", 400],
    ["GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", "bad-request", 400],
    ["GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", "bad-request", 400],
    ["GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", "bad-request", 400],
    ["G\x00T / HTTP/1.1\r\n\r\n", "bad-request", 400],
    ["\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", "bad-request", 400],
    ["GET / HTTP/1.1\r\nA: b", "eof", undefined],
    ["\r\n", "eof", undefined],
  ];
  for (const [input, reason, status] of cases) {
    const e = await assertRejects(
      readRequestHead(new BufferedReader(new ChunkedSource(enc.encode(input), 2))),
    );
    assert(e instanceof HttpError, `${JSON.stringify(input)}: ${e}`);
    assertEquals([e.reason, statusForHttpError(e)], [reason, status], JSON.stringify(input));
  }
  for (const bad of ["HTTP/1.1 20 OK\r\n\r\n", "HTTP/3 200 OK\r\n\r\n", "ICY 200 OK\r\n\r\n"]) {
    const e = await assertRejects(
      readResponseHead(new BufferedReader(new ChunkedSource(enc.encode(bad), 3))),
    );
    assert(e instanceof HttpError && e.reason === "bad-request", `${JSON.stringify(bad)}: ${e}`);
  }
  const noReason = await readResponseHead(
    new BufferedReader(new ChunkedSource(enc.encode("HTTP/1.1 204\r\n\r\n"), 1)),
  );
  assertEquals([noReason.status, noReason.reason], [204, ""]);
});

Deno.test("http head: every truncated prefix of a head is an EOF error (empty: null)", async () => {
  const full = enc.encode(
    "GET http://a/ HTTP/1.1\r\nHost: a\r\nX-Long: " + "v".repeat(50) + "\r\n\r\n",
  );
  assertEquals(
    await readRequestHead(new BufferedReader(new ChunkedSource(new Uint8Array(), 1))),
    null,
  );
  for (let len = 1; len < full.length; len++) {
    const e = await assertRejects(
      readRequestHead(new BufferedReader(new ChunkedSource(full.slice(0, len), 3))),
    );
    assert(e instanceof HttpError && e.reason === "eof", `prefix ${len}: ${e}`);
  }
  const res = enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  for (let len = 0; len < res.length; len++) {
    const e = await assertRejects(
      readResponseHead(new BufferedReader(new ChunkedSource(res.slice(0, len), 1))),
    );
    assert(e instanceof HttpError && e.reason === "eof", `prefix ${len}: ${e}`);
  }
  const chunked = enc.encode("5\r\nhello\r\n0\r\n\r\n");
  for (let len = 0; len < chunked.length; len++) {
    const src = new ChunkedSource(chunked.slice(0, len), 2);
    const e = await assertRejects(
      copyChunked(new BufferedReader(src), src, () => Promise.resolve(), true),
    );
    assert(e instanceof HttpError && e.reason === "eof", `chunked prefix ${len}: ${e}`);
  }
});

function randomInput(valid: Uint8Array): Uint8Array {
  if (Math.random() < 0.3) {
    const out = new Uint8Array(Math.floor(Math.random() * 200));
    crypto.getRandomValues(out);
    return out;
  }
  const out = valid.slice(0, Math.floor(Math.random() * (valid.length + 10)));
  const flips = 1 + Math.floor(Math.random() * 4);
  const specials = [0x0d, 0x0a, 0x20, 0x3a, 0x09, 0x00, 0x30, 0x3b, 0xff];
  for (let i = 0; i < flips && out.length > 0; i++) {
    const at = Math.floor(Math.random() * out.length);
    out[at] = Math.random() < 0.5
      ? specials[Math.floor(Math.random() * specials.length)]
      : Math.floor(Math.random() * 256);
  }
  return out;
}

Deno.test("http head: thousands of random heads and chunked bodies end cleanly", async () => {
  const validReq = enc.encode(
    "POST http://h:1/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
  );
  const validRes = enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
  for (let i = 0; i < 3000; i++) {
    const input = randomInput(i % 2 ? validReq : validRes);
    const src = new ChunkedSource(input, () => 1 + Math.floor(Math.random() * 9));
    const r = new BufferedReader(src, 16);
    try {
      if (i % 2) {
        const head = await readRequestHead(r, { maxHeadBytes: 120, maxHeaders: 4 });
        if (head) await copyBody(r, src, requestBodyFraming(head), () => Promise.resolve());
      } else {
        const head = await readResponseHead(r, { maxHeadBytes: 120, maxHeaders: 4 });
        await copyBody(r, src, responseBodyFraming(head, "GET"), () => Promise.resolve());
      }
    } catch (e) {
      assert(e instanceof ProtocolError, `input ${JSON.stringify(decodeLatin1(input))}: ${e}`);
    }
  }
});

Deno.test("http head: serialise round-trips, latin-1 bytes included", async () => {
  const req: RequestHead = {
    method: "PUT",
    target: "/a%20b?c=d",
    version: "HTTP/1.1",
    headers: [["Host", "x"], ["X-Latin", "caf\u00e9 \u00ff"], ["X-Dup", "1"], ["x-dup", "2"]],
  };
  const bytes = serializeRequestHead(req);
  assertEquals(bytes[bytes.indexOf(0xe9)], 0xe9);
  assertEquals(await readRequestHead(new BufferedReader(new ChunkedSource(bytes, 1))), req);
  // In one read: the lines are decoded in place from the reader's buffer.
  assertEquals(await readRequestHead(new BufferedReader(new ChunkedSource(bytes, 1 << 16))), req);
  const res: ResponseHead = {
    version: "HTTP/1.1",
    status: 404,
    reason: "Not Found",
    headers: [["A", "b"]],
  };
  assertEquals(
    await readResponseHead(new BufferedReader(new ChunkedSource(serializeResponseHead(res), 2))),
    res,
  );
  assertEquals(decodeLatin1(encodeLatin1("\u00e9\u0001A")), "\u00e9\u0001A");
  assertThrows(() => encodeLatin1("\u20ac"));
  const h: [string, string][] = [["A", "1"], ["Connection", "close"], ["a", "2"]];
  assertEquals(getHeader(h, "a"), "1");
  assertEquals(withoutHeaders(h, ["A"]), [["Connection", "close"]]);
  assertEquals(withHeader(h, "a", "9"), [["A", "9"], ["Connection", "close"]]);
  assertEquals(withHeader(h, "New", "v").at(-1), ["New", "v"]);
});

Deno.test("http head: readResponseHeadRaw hands back a head's bytes only where serialising gives them back", async () => {
  const heads: [string, boolean][] = [
    ["HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 2\r\n\r\n", true],
    ["HTTP/1.1 200 OK\r\n\r\n", true],
    ["HTTP/1.1 200 \r\nA: \r\n\r\n", true],
    ["HTTP/1.0 204 No Content\r\nX-Latin: caf\u00e9\r\n\r\n", true],
    ["HTTP/1.1 200 OK\r\nA:\r\n\r\n", false],
    ["HTTP/1.1 200 OK\r\nA:b\r\n\r\n", false],
    ["HTTP/1.1 200 OK\r\nA:  b\r\n\r\n", false],
    ["HTTP/1.1 200 OK\r\nA: b \r\n\r\n", false],
    ["HTTP/1.1 200 OK\r\nA:\tb\r\n\r\n", false],
    ["HTTP/1.1 200\r\n\r\n", false],
    ["HTTP/1.1 099 Low\r\n\r\n", false],
    ["HTTP/1.1 200 OK\nA: b\r\n\r\n", false],
    ["HTTP/1.1 200 OK\r\nA: b\r\n\n", false],
  ];
  for (const [text, canonical] of heads) {
    const bytes = encodeLatin1(text);
    const body = encodeLatin1("hi");
    // All in one read (the reader filled before the head is read): the head's own bytes.
    const r = new BufferedReader(new ChunkedSource(concat(bytes, body), 1 << 16));
    await r.readExactOrEof(0);
    const { head, raw } = await readResponseHeadRaw(r);
    assertEquals(head, await readResponseHead(new BufferedReader(new ChunkedSource(bytes, 3))));
    const same = dec.decode(serializeResponseHead(head)) === dec.decode(bytes);
    assertEquals(same, canonical, text);
    assertEquals(raw === undefined ? undefined : decodeLatin1(raw), canonical ? text : undefined);
    assertEquals(decodeLatin1(r.takeBuffered()), "hi");
    // Arriving a byte at a time (not buffered when the read began): parsed, no bytes.
    const slow = await readResponseHeadRaw(new BufferedReader(new ChunkedSource(bytes, 1)));
    assertEquals([slow.head, slow.raw], [head, undefined]);
  }
  const bad = await assertRejects(
    readResponseHeadRaw(
      new BufferedReader(new ChunkedSource(encodeLatin1("HTTP/1.1 200 OK\r\nA : b\r\n\r\n"), 64)),
    ),
  );
  assert(bad instanceof HttpError && bad.reason === "bad-request", String(bad));
});

Deno.test("http head: takeBufferedResponseHead takes a whole buffered head as readResponseHeadRaw does, and nothing of a partial one", async () => {
  const heads = [
    "HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 2\r\n\r\n",
    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
    "HTTP/1.1 200 OK\r\nA:b\r\n\r\n",
    "HTTP/1.1 200 OK\nA: b\r\n\n",
  ];
  for (const text of heads) {
    const bytes = concat(encodeLatin1(text), encodeLatin1("hi"));
    const whole = new BufferedReader(new ChunkedSource(bytes, 1 << 16));
    await whole.readExactOrEof(0);
    const taken = takeBufferedResponseHead(whole);
    const read = new BufferedReader(new ChunkedSource(bytes, 1 << 16));
    await read.readExactOrEof(0);
    assertEquals(taken, await readResponseHeadRaw(read), text);
    assertEquals(decodeLatin1(whole.takeBuffered()), "hi");
    // Every split short of the empty line's end: nothing taken, nothing consumed.
    for (let k = 1; k < text.length; k++) {
      const part = new BufferedReader(new ChunkedSource(bytes.subarray(0, k), 1 << 16));
      await part.readExactOrEof(0);
      assertEquals(takeBufferedResponseHead(part), undefined, `${text} at ${k}`);
      assertEquals(part.buffered, k);
    }
  }
  const bad = new BufferedReader(
    new ChunkedSource(encodeLatin1("HTTP/1.1 200 OK\r\nA : b\r\n\r\n"), 64),
  );
  await bad.readExactOrEof(0);
  const err = assertThrows(() => takeBufferedResponseHead(bad));
  assert(err instanceof HttpError && err.reason === "bad-request", String(err));
});

Deno.test("http body framing: RFC 9112 rules, smuggling refused", () => {
  const req = (headers: [string, string][]): RequestHead => ({
    method: "POST",
    target: "/",
    version: "HTTP/1.1",
    headers,
  });
  const res = (status: number, headers: [string, string][]): ResponseHead => ({
    version: "HTTP/1.1",
    status,
    reason: "",
    headers,
  });
  assertEquals(requestBodyFraming(req([])), { kind: "none" });
  assertEquals(requestBodyFraming(req([["Content-Length", "0"]])), { kind: "none" });
  assertEquals(requestBodyFraming(req([["Content-Length", "7, 7"]])), {
    kind: "length",
    length: 7,
  });
  assertEquals(requestBodyFraming(req([["Transfer-Encoding", "gzip, chunked"]])), {
    kind: "chunked",
  });
  for (
    const bad of [
      [["Content-Length", "7"], ["Transfer-Encoding", "chunked"]],
      [["Transfer-Encoding", "gzip"]],
      [["Content-Length", "-1"]],
      [["Content-Length", "1e3"]],
      [["Content-Length", "5"], ["Content-Length", "6"]],
      // Only SP and HTAB are whitespace around a value or a list element: NBSP (0xA0) is not,
      // so these are not "chunked" and "7" (the next hop gets them as sent).
      [["Transfer-Encoding", "chunked\xa0"]],
      [["Content-Length", "7\xa0"]],
    ] as [string, string][][]
  ) {
    const e = assertThrows(() => requestBodyFraming(req(bad)));
    assert(e instanceof HttpError && e.reason === "bad-request", JSON.stringify(bad));
  }
  assertEquals(responseBodyFraming(res(200, [["Content-Length", "9"]]), "HEAD"), { kind: "none" });
  assertEquals(responseBodyFraming(res(204, []), "GET"), { kind: "none" });
  assertEquals(responseBodyFraming(res(304, [["Content-Length", "9"]]), "GET"), { kind: "none" });
  assertEquals(responseBodyFraming(res(100, []), "GET"), { kind: "none" });
  assertEquals(responseBodyFraming(res(200, []), "CONNECT"), { kind: "none" });
  assertEquals(responseBodyFraming(res(200, []), "GET"), { kind: "close" });
  assertEquals(responseBodyFraming(res(200, [["Transfer-Encoding", "gzip"]]), "GET"), {
    kind: "close",
  });
  assertEquals(responseBodyFraming(res(200, [["Transfer-Encoding", "chunked\xa0"]]), "GET"), {
    kind: "close",
  });
  assertEquals(
    responseBodyFraming(
      res(200, [["Transfer-Encoding", "chunked"], ["Content-Length", "3"]]),
      "GET",
    ),
    {
      kind: "chunked",
    },
  );
});

Deno.test("http targets: absolute URIs, authorities, Host routing; Basic credentials", () => {
  assertEquals(parseAbsoluteTarget("http://example.org"), {
    scheme: "http",
    authority: "example.org",
    dest: { host: "example.org", port: 80 },
    path: "/",
  });
  assertEquals(parseAbsoluteTarget("HTTP://[::1]:8080/a/b?c#frag"), {
    scheme: "http",
    authority: "[::1]:8080",
    dest: { host: "::1", port: 8080 },
    path: "/a/b?c",
  });
  assertEquals(parseAbsoluteTarget("http://h?q=1").path, "/?q=1");
  assertEquals(parseAbsoluteTarget("https://h/").dest.port, 443);
  for (
    const bad of [
      "/relative",
      "ftp://h/",
      "http://u:p@h/",
      "http://h:99999/",
      "http://h:0/",
      "http://[::1/",
      "http:///x",
    ]
  ) {
    assert(assertThrows(() => parseAbsoluteTarget(bad)) instanceof HttpError, bad);
  }
  assertEquals(parseAuthority("example.org:443"), { host: "example.org", port: 443 });
  assertEquals(parseAuthority("[2001:db8::1]:443"), { host: "2001:db8::1", port: 443 });
  for (const bad of ["example.org", "h:", "h:x", "[::1]", "a b:1", "[zz]:1", ":80"]) {
    assert(assertThrows(() => parseAuthority(bad)) instanceof HttpError, bad);
  }
  const head = (target: string, headers: [string, string][]): RequestHead => ({
    method: "GET",
    target,
    version: "HTTP/1.1",
    headers,
  });
  assertEquals(requestAuthority(head("/x", [["Host", "app.example:81"]])), {
    host: "app.example",
    port: 81,
  });
  assertEquals(requestAuthority(head("/x", [["Host", "app.example"]])), {
    host: "app.example",
    port: 80,
  });
  assertEquals(requestAuthority(head("http://b/x", [["Host", "a"]])), { host: "b", port: 80 });
  assertEquals(requestAuthority(head("/x", [])), undefined);

  assertEquals(parseBasicCredentials(basicCredentials("alice", "pa:ss \u00e9")), {
    username: "alice",
    password: "pa:ss \u00e9",
  });
  assertEquals(parseBasicCredentials("basic YTpi"), { username: "a", password: "b" });
  for (
    const bad of [
      undefined,
      "",
      "Bearer x",
      "Basic",
      "Basic !!!",
      "Basic YWJj", /* "abc", no colon */
      "Basic /w==",
    ]
  ) {
    assertEquals(parseBasicCredentials(bad), undefined, String(bad));
  }
});

/** Hands out `first`, then hangs until `cut()` (as a stalled peer would, until closed). */
function stalledSource(
  first: string,
): { read(p: Uint8Array): Promise<number | null>; cut(): void } {
  let bytes: Uint8Array | undefined = enc.encode(first);
  let cut = () => {};
  const hung = new Promise<null>((resolve) => cut = () => resolve(null));
  return {
    read(p) {
      if (!bytes) return hung;
      const n = Math.min(p.length, bytes.length);
      p.set(bytes.subarray(0, n));
      bytes = n < bytes.length ? bytes.subarray(n) : undefined;
      return Promise.resolve(n);
    },
    cut: () => cut(),
  };
}

Deno.test("http head: readRequestHeadWithin times only heads that are not complete yet", async () => {
  const whole = stalledSource("\r\nGET / HTTP/1.1\r\nHost: a\n\r\nGET /next");
  let fired = 0;
  const head = await readRequestHeadWithin(new BufferedReader(whole), 20, () => fired++);
  assertEquals(head?.target, "/");
  await new Promise((r) => setTimeout(r, 40));
  assertEquals(fired, 0);
  // Leading empty lines and whole header lines, but no empty line after them yet: a stalled
  // head (slowloris) must still meet the deadline.
  for (const partial of ["\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\n", "GE"]) {
    const src = stalledSource(partial);
    let timedOut = false;
    const safety = setTimeout(() => src.cut(), 2_000); // a missed deadline fails, not hangs
    const e = await assertRejects(
      readRequestHeadWithin(new BufferedReader(src), 20, () => (timedOut = true, src.cut())),
    );
    clearTimeout(safety);
    assert(timedOut, JSON.stringify(partial));
    assert(e instanceof HttpError && e.reason === "eof", `${JSON.stringify(partial)}: ${e}`);
  }
});
