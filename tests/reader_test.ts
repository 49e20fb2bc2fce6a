import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { BufferedReader, ProtocolError, UnexpectedEofError } from "../lib/net/mod.ts";
import { ChunkedSource, splits } from "./_chunked.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

for (const [name, split] of splits) {
  Deno.test(`reader: exact reads and lines on ${name}`, async () => {
    const big = new Uint8Array(100_000).map((_, i) => i % 251);
    const data = new Uint8Array([
      ...enc.encode("GET / HTTP/1.1\r\nHost: x\n\r\n"),
      1,
      2,
      3,
      ...big,
      9,
    ]);
    const r = new BufferedReader(new ChunkedSource(data, split), 64);
    assertEquals(dec.decode(await r.readLine(100)), "GET / HTTP/1.1");
    assertEquals(dec.decode(await r.readLine(100)), "Host: x");
    assertEquals(dec.decode(await r.readLine(100)), "");
    assertEquals([...await r.readExact(3)], [1, 2, 3]);
    assertEquals(await r.readExact(big.length), big);
    assertEquals(await r.readByte(), 9);
    assertEquals(await r.readExactOrEof(1), null);
  });
}

for (const [name, split] of splits) {
  Deno.test(`reader: reads of the caller's own into room() and filled() on ${name}`, async () => {
    // Frames consumed as they come, so the buffer both moves its rest to the front and grows.
    const data = new Uint8Array(5_000).map((_, i) => (i * 7) % 256);
    const src = new ChunkedSource(data, split);
    const r = new BufferedReader(src, 16);
    const got: number[] = [];
    for (let frame = 1; got.length < data.length; frame = (frame % 40) + 1) {
      const want = Math.min(frame, data.length - got.length);
      while (r.buffered < want) assert(r.filled(await src.read(r.room())), "no early EOF");
      got.push(...r.peek().subarray(0, want));
      r.skip(want);
    }
    assertEquals(new Uint8Array(got), data);
    assertEquals(r.filled(await src.read(r.room())), false, "EOF is false");
    assertEquals(r.buffered, 0);
  });
}

Deno.test("reader: EOF mid-frame is UnexpectedEofError, too-long line is a ProtocolError", async () => {
  const r = new BufferedReader(new ChunkedSource(new Uint8Array([1, 2]), 1));
  const e = await assertRejects(r.readExact(3));
  assert(e instanceof UnexpectedEofError);
  const r2 = new BufferedReader(new ChunkedSource(enc.encode("x".repeat(5000) + "\n"), 7), 16);
  const e2 = await assertRejects(r2.readLine(1000));
  assert(e2 instanceof ProtocolError && e2.reason === "too-long");
  const r3 = new BufferedReader(new ChunkedSource(enc.encode("no newline"), 2));
  assert((await assertRejects(r3.readLine(100))) instanceof UnexpectedEofError);
});

Deno.test("reader: takeBuffered hands over read-ahead bytes exactly once", async () => {
  const r = new BufferedReader(new ChunkedSource(enc.encode("head\npayload"), 1 << 10));
  assertEquals(dec.decode(await r.readLine(10)), "head");
  assertEquals(dec.decode(r.takeBuffered()), "payload");
  assertEquals(r.buffered, 0);
});

Deno.test("reader: readBufferedLine takes only whole buffered lines, peek consumes nothing", async () => {
  const r = new BufferedReader(new ChunkedSource(enc.encode("one\r\ntw"), 1 << 10));
  assertEquals(r.readBufferedLine(100), undefined); // nothing read yet
  assertEquals(dec.decode(await r.readLine(100)), "one");
  assertEquals(dec.decode(r.peek()), "tw");
  assertEquals(r.readBufferedLine(100), undefined); // a partial line stays buffered
  assertEquals(dec.decode(r.peek()), "tw");
  assertEquals(r.buffered, 2);
  const long = new BufferedReader(new ChunkedSource(enc.encode("x".repeat(50) + "\ny"), 1 << 10));
  await long.readExactOrEof(0);
  const e = (() => {
    try {
      long.readBufferedLine(10);
    } catch (err) {
      return err;
    }
  })();
  assert(e instanceof ProtocolError && e.reason === "too-long");
  const noLf = new BufferedReader(new ChunkedSource(enc.encode("x".repeat(50)), 1 << 10));
  await noLf.readExactOrEof(0);
  let threw = false;
  try {
    noLf.readBufferedLine(10);
  } catch (err) {
    threw = err instanceof ProtocolError && err.reason === "too-long";
  }
  assert(threw, "a buffered run past maxBytes without LF is too long");
});
