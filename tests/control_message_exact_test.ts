// readMessageExact (lib/control): one message and not a byte past it, so what follows stays in
// the source for its next reader (tunnel-client reads a stream's ControlMsg this way and relays
// the request behind it from the stream). Checked against ControlReader on every split, every
// cut and random input, for what it leaves in the source, and on real lib/mux streams.

import {
  BufferedReader,
  ControlError,
  ControlReader,
  encodeFrame,
  readMessageExact,
} from "../lib/control/mod.ts";
import type { Duplex } from "../lib/net/mod.ts";
import { tunnelProtocol } from "../lib/tunnel/protocol.ts";
import { assert, assertEquals } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { concat } from "./_depot.ts";
import { eachSynSplit, muxPair, type SynSplit } from "./_mux.ts";
import { readAll } from "./_util.ts";

const msg = {
  v: 1,
  type: "controlMsg" as const,
  action: "RequestClientSession" as const,
  transportProtocol: "http" as const,
  localPort: "",
  requestId: "r.17",
};
const frame = encodeFrame(msg);
const tail = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
const maxMessageBytes = 1024;

/** Every byte `src` still has (read by whoever reads it next). */
async function rest(src: Pick<Duplex, "read">): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(7);
  for (let n = await src.read(buf); n !== null; n = await src.read(buf)) {
    parts.push(buf.slice(0, n));
  }
  return concat(...parts);
}

/** What ControlReader makes of the same bytes: the message or the error's reason. */
async function reference(bytes: Uint8Array): Promise<unknown> {
  const r = new ControlReader(
    new BufferedReader(new ChunkedSource(bytes, 1 << 20)),
    tunnelProtocol,
    { maxMessageBytes },
  );
  return await r.read().catch((e) => e instanceof ControlError ? e.reason : String(e));
}

/** readMessageExact's message (or error reason), and every byte it left in `src`. */
async function exact(src: ChunkedSource): Promise<{ msg: unknown; after: Uint8Array }> {
  let got: unknown;
  try {
    got = await readMessageExact(src, tunnelProtocol, { maxMessageBytes });
  } catch (e) {
    got = e instanceof ControlError ? e.reason : String(e);
  }
  return { msg: got, after: await rest(src) };
}

for (const [name, split] of splits) {
  Deno.test(`readMessageExact on ${name}: the message, and every byte after it left in the source`, async () => {
    const got = await exact(new ChunkedSource(concat(frame, tail), split));
    assertEquals(got.msg, msg);
    assertEquals(got.after, tail);
  });
}

Deno.test("readMessageExact: two messages in a row are read one at a time", async () => {
  const second = encodeFrame({ ...msg, requestId: "r.18" });
  const src = new ChunkedSource(concat(frame, second, tail), 1 << 20);
  assertEquals(await readMessageExact(src, tunnelProtocol), msg);
  assertEquals(await readMessageExact(src, tunnelProtocol), { ...msg, requestId: "r.18" });
  assertEquals(await rest(src), tail);
});

Deno.test("readMessageExact: a frame cut anywhere is what ControlReader makes of it", async () => {
  for (let cut = 0; cut <= frame.length; cut++) {
    for (const split of [1, 5, 1 << 20]) {
      const got = await exact(new ChunkedSource(frame.subarray(0, cut), split));
      assertEquals(got.msg, await reference(frame.subarray(0, cut)), `cut ${cut}`);
      if (cut === 0) assertEquals(got.msg, null);
      else if (cut < frame.length) assertEquals(got.msg, "truncated", `cut ${cut}`);
    }
  }
});

Deno.test("readMessageExact: mutated frames end as in ControlReader, and leave the bytes after the frame", async () => {
  for (let i = 0; i < 500; i++) {
    const bytes = concat(frame, tail);
    for (let k = 0; k < 1 + (i % 4); k++) {
      bytes[Math.floor(Math.random() * bytes.length)] = Math.floor(Math.random() * 256);
    }
    const split = 1 + Math.floor(Math.random() * bytes.length);
    const got = await exact(new ChunkedSource(bytes, split));
    const want = await reference(bytes);
    assertEquals(got.msg, want, `bytes ${bytes}, split ${split}`);
    if (typeof want === "object" && want !== null) {
      // Read whole: what is left is exactly what came after the frame the prefix declared.
      const len = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
      assertEquals(got.after, bytes.subarray(4 + len), `bytes ${bytes}`);
    }
  }
});

Deno.test("readMessageExact: random input ends as in ControlReader", async () => {
  for (let i = 0; i < 300; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 64)));
    // Every other one with a length it may hold: random JSON bodies, not only "too-large".
    if (i % 2 === 0 && bytes.length >= 4) bytes.set([0, 0, 0, Math.min(bytes[3], bytes.length)]);
    const got = await exact(new ChunkedSource(bytes, 1 + (i % 9)));
    const want = await reference(bytes);
    assertEquals(got.msg, want, `bytes ${bytes}`);
    assert(want === null || typeof want === "string", "random bytes are no message");
  }
});

Deno.test("readMessageExact: an over-long length is refused before any body byte is read", async () => {
  const src = new ChunkedSource(concat(Uint8Array.of(0, 0, 0x10, 0), tail), 1 << 20); // 4 KiB
  const got = await exact(src);
  assertEquals(got.msg, "too-large");
  assertEquals(got.after, tail); // nothing of what followed the prefix was taken
});

Deno.test("readMessageExact on lib/mux streams: the frame in the SYN, split from it, with bytes behind", async () => {
  const { client, server } = await muxPair();
  try {
    const cases: SynSplit[] = [
      ["whole in the SYN", frame, []],
      ["with bytes behind it in the SYN", concat(frame, tail), []],
      ["split: part in the SYN, the rest later", frame.subarray(0, 9), [frame.subarray(9), tail]],
      ["nothing in the SYN", new Uint8Array(0), [frame, tail]],
      [
        "one byte a frame",
        new Uint8Array(0),
        [...concat(frame, tail)].map((b) => Uint8Array.of(b)),
      ],
    ];
    await eachSynSplit(client, server, cases, async (stream, name, sent) => {
      assertEquals(await readMessageExact(stream, tunnelProtocol), msg, name);
      const expected = sent.subarray(frame.length);
      assertEquals(await readAll(stream, `${name}: the bytes after the message`), expected, name);
    });
  } finally {
    await Promise.all([client.close(), server.close()]);
  }
});
