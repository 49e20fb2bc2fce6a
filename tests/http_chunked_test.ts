/**
 * lib/http ChunkedScanner and the raw chunked relay built on it: every split, every
 * truncated prefix, strict CRLF framing, limits, and random input checked against the
 * line-by-line decoder (whatever the scanner accepts, the decoder reads to the same end).
 */

import fc from "./_fc.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  ChunkedScanner,
  copyChunked,
  HttpError,
  maxChunkLineBytes,
  maxTrailerBytes,
} from "../lib/http/mod.ts";
import { BufferedReader } from "../lib/net/mod.ts";
import { ChunkedSource } from "./_chunked.ts";
import { readAll } from "./_util.ts";
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
const dec = new TextDecoder();

const body = '4\r\nWiki\r\n6;ext=1;q="a b"\r\npedia \r\nE  \t\r\nin \r\n\r\nchunks.\r\n' +
  "a\r\n0123456789\r\n0\r\nTrail: yes\r\nX-Two: 2\r\n\r\n";
const next = "GET /next HTTP/1.1\r\n\r\n";

/** Scan `wire` in pieces of `size`; returns the body bytes counted and whether it ended. */
function scanIn(wire: Uint8Array, size: number): { used: number; done: boolean } {
  const s = new ChunkedScanner();
  let used = 0;
  for (let off = 0; off < wire.length && !s.done; off += size) {
    const piece = wire.subarray(off, Math.min(off + size, wire.length));
    const n = s.scan(piece);
    assert(n === piece.length || s.done, "a piece is consumed whole unless the body ends in it");
    used += n;
  }
  return { used, done: s.done };
}

Deno.test("chunked scanner: the body ends at the same byte on every split", () => {
  const wire = enc.encode(body + next);
  for (let size = 1; size <= wire.length; size++) {
    assertEquals(scanIn(wire, size), { used: body.length, done: true }, `pieces of ${size}`);
  }
});

Deno.test("chunked scanner: every truncated prefix is accepted as far as it goes, not done", () => {
  const wire = enc.encode(body);
  for (let len = 0; len < wire.length; len++) {
    assertEquals(scanIn(wire.subarray(0, len), 3), { used: len, done: false }, `prefix ${len}`);
  }
});

Deno.test("chunked scanner: smuggling-prone and oversize framing is refused", () => {
  const bad: [string, string][] = [
    ["3\nabc\r\n0\r\n\r\n", "bare LF after a size"],
    ["3;x\nabc\r\n0\r\n\r\n", "bare LF after an extension"],
    ["3\rabc\r\n0\r\n\r\n", "CR without LF"],
    ["3\r\nabcd\r\n0\r\n\r\n", "data longer than its size"],
    ["3\r\nabc\n0\r\n\r\n", "bare LF after data"],
    ["\r\nabc\r\n0\r\n\r\n", "no size"],
    [" 3\r\nabc\r\n0\r\n\r\n", "space before the size"],
    ["3 x\r\nabc\r\n0\r\n\r\n", "junk after the size"],
    ["-3\r\nabc\r\n0\r\n\r\n", "a sign"],
    ["0x3\r\nabc\r\n0\r\n\r\n", "a 0x prefix"],
    ["1000000000000\r\n", "13 hex digits"],
    ["0\r\nA: b\n\r\n", "bare LF in a trailer"],
    ["0\r\n\r\r", "CR without LF at the end"],
    [`1;${"e".repeat(maxChunkLineBytes)}\r\n`, "size line too long"],
    [`0\r\nX: ${"v".repeat(maxTrailerBytes)}\r\n\r\n`, "trailers too large"],
  ];
  for (const [wire, why] of bad) {
    for (const size of [1, 2, 7, wire.length]) {
      const e = assertThrows(() => scanIn(enc.encode(wire), size), `${why} (${size})`);
      assert(e instanceof HttpError && e.reason === "bad-request", `${why}: ${e}`);
    }
  }
  // Twelve hex digits are still a size (the decoder's limit too).
  const s = new ChunkedScanner();
  assertEquals(s.scan(enc.encode("FFFFFFFFFFFF\r\n")), 14);
});

Deno.test("chunked relay: each read is forwarded whole; bytes past the body stay in the reader", async () => {
  const wire = enc.encode(body + next);
  for (const split of [1, 5, 64, 1 << 20]) {
    for (const readerBytes of [16, 4096]) {
      const src = new ChunkedSource(wire, split);
      const r = new BufferedReader(src, readerBytes);
      await r.readExactOrEof(0); // as after a head: some body bytes already buffered
      const pieces: Uint8Array[] = [];
      await copyChunked(r, src, (p) => (pieces.push(p.slice()), Promise.resolve()), true);
      assertEquals(dec.decode(cat(...pieces)), body, `split ${split}, reader ${readerBytes}`);
      if (split >= wire.length && readerBytes >= wire.length) {
        assertEquals(pieces.length, 1, "one read, one write");
      }
      assertEquals(dec.decode(await r.readLine(100)), "GET /next HTTP/1.1");
    }
  }
});

Deno.test("fuzz chunked: whatever the scanner accepts, the decoder reads to the same end", async () => {
  const valid = enc.encode(body + next);
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(bytesArb, mutationArb.map((m) => mutate(valid, m))),
      splitArb,
      async (wire, sizes) => {
        const s = new ChunkedScanner();
        let used = 0;
        const scanned = await clean(async () => {
          const src = splitSource(wire, sizes);
          const buf = new Uint8Array(64);
          while (!s.done) {
            const n = await src.read(buf);
            if (n === null) return;
            used += s.scan(buf.subarray(0, n));
          }
        });
        if (scanned.kind !== "ok" || !s.done) return; // refused or incomplete: nothing to agree on
        const src = new ChunkedSource(wire, 7);
        const r = new BufferedReader(src);
        const decoded = await clean(() => copyChunked(r, src, () => Promise.resolve(), false));
        assertEquals(decoded.kind, "ok", "the decoder accepts what the scanner accepted");
        const rest = r.takeBuffered().length + (await readAll(src)).length;
        assertEquals(wire.length - rest, used, "both end the body at the same byte");
      },
    ),
    fuzzParams(1000),
  );
});
