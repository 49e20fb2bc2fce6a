/**
 * Property-based tests of the tunnel's WebSocket framing (lib/tunnel/websocket.ts): bytes
 * written by one role come out of the other byte-exact on any read split, with pings mixed
 * in; mutated and random frames end in data, EOF or a typed ProtocolError; a 64-bit length
 * beyond the limit is refused at the header. (The tunnel's control messages are covered by
 * fuzz_control_test.ts.)
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import { encodeFrameHeader, maxFramePayloadBytes, Opcode, WsConn } from "../lib/transport/mod.ts";
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
import { ChunkedSource } from "./_chunked.ts";

/** What `role` puts on the wire for these writes (and a ping after the first). */
async function wireOf(role: "client" | "server", writes: Uint8Array[]): Promise<Uint8Array> {
  const sink = new ChunkedSource(new Uint8Array(0), 1);
  const ws = new WsConn(sink, { role });
  for (const [i, w] of writes.entries()) {
    if (w.length > 0) await ws.write(w);
    if (i === 0) await ws.ping(w.slice(0, 125));
  }
  await ws.closeWrite();
  return sink.output();
}

/** Read everything the other role delivers from `wire`. */
async function readAllWs(role: "client" | "server", wire: Uint8Array, sizes: number[]) {
  const src = splitSource(wire, sizes);
  const ws = new WsConn(src, { role });
  const got: number[] = [];
  const buf = new Uint8Array(97);
  const out = await clean(async () => {
    while (true) {
      const n = await ws.read(buf);
      if (n === null) return;
      got.push(...buf.subarray(0, n));
    }
  });
  return { out, got, src };
}

Deno.test("fuzz tunnel ws: bytes round-trip both ways on any split, pings answered", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ maxLength: 400 }), { maxLength: 6 }),
      fc.constantFrom("client" as const, "server" as const),
      splitArb,
      async (writes, role, sizes) => {
        const peer = role === "client" ? "server" : "client";
        const { out, got, src } = await readAllWs(peer, await wireOf(role, writes), sizes);
        assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
        assertEquals(got, [...cat(...writes)]);
        // The reader answered the ping with a pong and the close with a close.
        const answer = src.output();
        if (writes.length > 0) assertEquals(answer[0] & 0x0f, Opcode.pong);
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("fuzz tunnel ws: mutated and random frames end in data, EOF or a ProtocolError", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 4 }),
      fc.constantFrom("client" as const, "server" as const),
      mutationArb,
      splitArb,
      async (writes, role, muts, sizes) => {
        const peer = role === "client" ? "server" : "client";
        await readAllWs(peer, mutate(await wireOf(role, writes), muts), sizes);
      },
    ),
    fuzzParams(500),
  );
  await fc.assert(
    fc.asyncProperty(bytesArb, splitArb, async (input, sizes) => {
      await readAllWs("server", input, sizes);
      await readAllWs("client", input, sizes);
    }),
    fuzzParams(300),
  );
});

Deno.test("fuzz tunnel ws: a 64-bit length past the limit is refused at the header", async () => {
  for (const len of [2 ** 53, 2 ** 32, maxFramePayloadBytes + 1]) {
    const head = new Uint8Array(14);
    const hl = encodeFrameHeader(head, true, Opcode.binary, len, new Uint8Array(4));
    const { out } = await readAllWs("server", cat(head.subarray(0, hl), new Uint8Array(8)), [3]);
    assertEquals(out.kind, "error");
    if (out.kind === "error") assertEquals(out.error.reason, "too-large");
  }
  const huge = Uint8Array.of(
    0x82,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    1,
    2,
    3,
    4,
  );
  const { out } = await readAllWs("server", huge, [14]);
  assert(out.kind === "error" && out.error.reason === "too-large");
});
