/** Tunnel codecs on any split of the input: HTTP/1 heads and bodies, control messages, WebSocket frames. */
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { BufferedReader, ProtocolError } from "../lib/net/mod.ts";
import { SimdMasker } from "../lib/transport/ws_mask.ts";
import {
  decodeMessage,
  encodeMessage,
  hostPort,
  MemoryRegistry,
  normalizeHost,
  readMessage,
} from "../lib/tunnel/mod.ts";
import {
  applyMask,
  encodeFrameHeader,
  maskCopy,
  webSocketAccept,
  WsConn,
} from "../lib/transport/mod.ts";
// The HTTP/1 codec is lib/http's; these cases pin what the tunnel relies on (chunk-exact
// raw copies, smuggling refusal, limits).
import {
  copyBody,
  copyChunked,
  HttpError,
  readRequestHead,
  readResponseHead,
  requestBodyFraming,
  serializeRequestHead,
} from "../lib/http/mod.ts";
import { concatList } from "../lib/net/bytes.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

const concat = concatList;

const twoRequests = "GET /a?x=1 HTTP/1.1\r\nHost: App.Test:8080\r\nX-A: 1\r\n\r\n" +
  "POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
  "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n";

for (const [name, split] of splits) {
  Deno.test(`tunnel codec: request heads and a chunked body, ${name}`, async () => {
    const src = new ChunkedSource(enc(twoRequests), split);
    const r = new BufferedReader(src);
    const h1 = await readRequestHead(r);
    assertEquals(h1?.method, "GET");
    assertEquals(h1?.target, "/a?x=1");
    assertEquals(h1?.headers, [["Host", "App.Test:8080"], ["X-A", "1"]]);
    assertEquals(requestBodyFraming(h1!), { kind: "none" });
    const h2 = (await readRequestHead(r))!;
    assertEquals(requestBodyFraming(h2), { kind: "chunked" });
    const raw: Uint8Array[] = [];
    await copyBody(r, src, { kind: "chunked" }, (p) => (raw.push(p.slice()), Promise.resolve()));
    assertEquals(dec(concat(raw)), "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n");
    assertEquals(await readRequestHead(r), null);
  });

  Deno.test(`tunnel codec: response head, length body and de-chunking, ${name}`, async () => {
    const text = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" +
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n";
    const src = new ChunkedSource(enc(text), split);
    const r = new BufferedReader(src);
    const a = await readResponseHead(r);
    assertEquals(a.status, 200);
    const body: Uint8Array[] = [];
    await copyBody(
      r,
      src,
      { kind: "length", length: 3 },
      (p) => (body.push(p.slice()), Promise.resolve()),
    );
    assertEquals(dec(concat(body)), "abc");
    await readResponseHead(r);
    const data: Uint8Array[] = [];
    await copyChunked(r, src, (p) => (data.push(p.slice()), Promise.resolve()), false);
    assertEquals(dec(concat(data)), "xyz");
  });

  Deno.test(`tunnel codec: control messages, ${name}`, async () => {
    const msgs = [
      encodeMessage({ type: "handshakeRequest", client: "t", tcp: [{ publicPort: 9000 }] }),
      encodeMessage({
        type: "controlMsg",
        action: "RequestClientSession",
        transportProtocol: "http",
        localPort: "3000",
        requestId: "r.1",
      }),
      encodeMessage({ type: "streamReply", requestId: "r.1", ok: true }),
    ];
    const r = new BufferedReader(new ChunkedSource(concat(msgs), split));
    assertEquals((await readMessage(r))?.type, "handshakeRequest");
    const m = await readMessage(r);
    assert(m?.type === "controlMsg" && m.localPort === "3000" && m.requestId === "r.1");
    assertEquals((await readMessage(r))?.type, "streamReply");
    assertEquals(await readMessage(r), null);
  });

  Deno.test(`tunnel codec: WebSocket frames (masked client -> server), ${name}`, async () => {
    const payloads = [enc("hi"), new Uint8Array(300).fill(7), new Uint8Array(70_000).fill(9)];
    const wire: Uint8Array[] = [];
    // A ping in the middle must be answered and skipped.
    const key = new Uint8Array([1, 2, 3, 4]);
    for (const [i, p] of payloads.entries()) {
      const h = new Uint8Array(14);
      const hl = encodeFrameHeader(h, true, 2, p.length, key);
      const body = p.slice();
      applyMask(body, key);
      wire.push(h.slice(0, hl), body);
      if (i === 0) {
        const ph = new Uint8Array(14);
        const pl = encodeFrameHeader(ph, true, 9, 0, key);
        wire.push(ph.slice(0, pl));
      }
    }
    const src = new ChunkedSource(concat(wire), split);
    const ws = new WsConn(src, { role: "server" });
    const got: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await ws.read(buf);
      if (n === null) break;
      got.push(buf.slice(0, n));
    }
    assertEquals(concat(got), concat(payloads));
    // The ping was answered with an unmasked pong.
    assertEquals([...src.output()], [0x8a, 0]);
  });
}

Deno.test("tunnel codec: truncated input is a typed error, never a hang or crash", async () => {
  const full = enc(twoRequests);
  for (let cut = 1; cut < 50; cut++) {
    const r = new BufferedReader(new ChunkedSource(full.subarray(0, cut), 7));
    const err = await assertRejects(() => readRequestHead(r));
    assert(err instanceof HttpError && err.reason === "eof", `cut ${cut}: ${err}`);
  }
  const msg = encodeMessage({ type: "streamReply", requestId: "x", ok: false });
  for (let cut = 1; cut < msg.length; cut++) {
    const r = new BufferedReader(new ChunkedSource(msg.subarray(0, cut), 3));
    const err = await assertRejects(() => readMessage(r));
    assert(err instanceof ProtocolError, `cut ${cut}`);
  }
});

Deno.test("tunnel codec: malformed and random input is rejected", async () => {
  const bad = [
    "GET / HTTP/2.0\r\n\r\n",
    "GET  / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nNo Colon\r\n\r\n",
    "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
    "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    "G\x00T / HTTP/1.1\r\n\r\n",
  ];
  for (const b of bad) {
    const err = await assertRejects(() =>
      readRequestHead(new BufferedReader(new ChunkedSource(enc(b), 5)))
    );
    assert(err instanceof HttpError, JSON.stringify(b));
  }
  const smuggle = await readRequestHead(
    new BufferedReader(
      new ChunkedSource(
        enc("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        9,
      ),
    ),
  );
  assert(smuggle);
  assert(requestBodyFraming.length === 1);
  let threw = false;
  try {
    requestBodyFraming(smuggle);
  } catch (e) {
    threw = e instanceof HttpError;
  }
  assert(threw, "CL + TE must be rejected");
  const big = "GET / HTTP/1.1\r\n" + "X: " + "a".repeat(70_000) + "\r\n\r\n";
  const tooBig = await assertRejects(() =>
    readRequestHead(new BufferedReader(new ChunkedSource(enc(big), 4096)))
  );
  assert(tooBig instanceof HttpError && tooBig.reason === "head-too-large");
  for (let i = 0; i < 300; i++) {
    const junk = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 200)));
    try {
      await readRequestHead(new BufferedReader(new ChunkedSource(junk, 13)));
    } catch (e) {
      assert(e instanceof ProtocolError, String(e));
    }
    try {
      decodeMessage(junk);
    } catch (e) {
      assert(e instanceof ProtocolError, String(e));
    }
    try {
      const ws = new WsConn(new ChunkedSource(junk, 11), { role: "server" });
      await ws.read(new Uint8Array(512));
    } catch (e) {
      assert(e instanceof ProtocolError, String(e));
    }
  }
  // Wrong version / type / fields (a client's own rules included: wrong types, too many).
  const hs = { v: 1, type: "handshakeRequest" };
  for (
    const obj of [
      { v: 2, type: "streamReply" },
      { v: 1, type: "nope" },
      {
        v: 1,
        type: "streamReply",
        ok: 1,
      },
      { ...hs, access: { basic: "user:pw" } },
      { ...hs, access: { allow: [1] } },
      {
        ...hs,
        access: { bearer: Array.from({ length: 17 }, () => "token-1234") },
      },
      { ...hs, rewrite: { request: { set: [[1, 2]] } } },
      {
        ...hs,
        rewrite: { request: { set: [["X-A", "1", "extra"]] } },
      },
      { ...hs, rewrite: { response: { remove: "Server" } } },
      {
        ...hs,
        rewrite: { host: "h".repeat(256) },
      },
    ]
  ) {
    const body = enc(JSON.stringify(obj));
    const f = new Uint8Array(4 + body.length);
    new DataView(f.buffer).setUint32(0, body.length);
    f.set(body, 4);
    let ok = false;
    try {
      decodeMessage(f);
    } catch (e) {
      ok = e instanceof ProtocolError;
    }
    assert(ok, JSON.stringify(obj));
  }
  const huge = new Uint8Array([0xff, 0xff, 0xff, 0xff]);
  const e = await assertRejects(() => readMessage(new BufferedReader(new ChunkedSource(huge, 4))));
  assert(e instanceof ProtocolError && e.reason === "too-large");
});

Deno.test("tunnel codec: serialised heads round-trip; WebSocket accept key (RFC 6455 example)", async () => {
  const head = {
    method: "GET",
    target: "/x",
    version: "HTTP/1.1" as const,
    headers: [["Host", "a.test"], ["X-L", "caf\u00e9"]] as [string, string][],
  };
  const bytes = serializeRequestHead(head);
  assertEquals(bytes[bytes.length - 5], 0xe9); // latin-1 octet kept byte for byte
  const back = await readRequestHead(new BufferedReader(new ChunkedSource(bytes, 2)));
  assertEquals(back, head);
  assertEquals(await webSocketAccept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  // Web Crypto's SHA-1 replaced node:crypto's: the same answer for any key.
  for (let i = 0; i < 200; i++) {
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    const want = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
      .digest("base64");
    assertEquals(await webSocketAccept(key), want, key);
  }
});

Deno.test("tunnel registry: hosts, identifiers, normalisation", async () => {
  const reg = new MemoryRegistry();
  await reg.addHost("App.Test.", "secret-one-123");
  await reg.addHost("b.test", "secret-one-123");
  await reg.addHost("c.test", "secret-two-456");
  assertEquals(await reg.lookup("app.test:8080"), "secret-one-123");
  assertEquals((await reg.hostsOf("secret-one-123")).sort(), ["app.test", "b.test"]);
  assert(await reg.isKnown("secret-two-456"));
  assert(!(await reg.isKnown("secret-two-457")));
  assert(await reg.removeHost("c.test"));
  assert(!(await reg.isKnown("secret-two-456")));
  assert(!(await reg.removeHost("c.test")));
  await reg.addHost("app.test", "secret-three-789"); // re-pointing a host
  assertEquals(await reg.lookup("APP.TEST"), "secret-three-789");
  assertEquals(normalizeHost("[::1]:80"), "[::1]");
  assertEquals(normalizeHost("bad host"), "");
  assertEquals(hostPort("a.test:3000"), "3000");
  assertEquals(hostPort("a.test"), "");
  await assertRejects(() => reg.addHost("", "x"));
});

Deno.test("tunnel codec: WebSocket masking equals the byte-wise definition at any alignment", () => {
  const key = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  const backing = crypto.getRandomValues(new Uint8Array(4096));
  for (let trial = 0; trial < 200; trial++) {
    const start = Math.floor(Math.random() * 64);
    const len = Math.floor(Math.random() * 2000);
    const offset = Math.floor(Math.random() * 8);
    const view = backing.slice().subarray(start, start + len);
    const expect = view.map((b, i) => b ^ key[(offset + i) % 4]);
    applyMask(view, key, offset);
    assertEquals(view, expect);
    const src = backing.subarray(start, start + len);
    const dst = new Uint8Array(4200).subarray(start % 8, start % 8 + len);
    maskCopy(dst, src, key);
    assertEquals(dst, src.map((b, i) => b ^ key[i % 4]));
  }
});

Deno.test("tunnel codec: SIMD masking (WebAssembly) equals the byte-wise definition", () => {
  const m = SimdMasker.create(1024);
  const noise = crypto.getRandomValues(new Uint8Array(65536));
  assert(m !== null, "WebAssembly SIMD is available in Deno");
  for (let trial = 0; trial < 200; trial++) {
    const key = crypto.getRandomValues(new Uint8Array(4));
    const len = trial < 40 ? trial : Math.floor(Math.random() * 300_000);
    const src = new Uint8Array(len + 3).map((_, i) => noise[i % noise.length] ^ (i >> 16))
      .subarray(trial % 4, trial % 4 + len);
    const offset = 4 * (trial % 8);
    m.maskInto(offset, src, key);
    assertEquals(m.buffer.slice(offset, offset + len), src.map((b, i) => b ^ key[i % 4]));
  }
});
