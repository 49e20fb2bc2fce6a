/**
 * Property-based tests of the yamux codec (lib/mux): every frame type round-trips arbitrary
 * fields through the incremental decoder on any split; mutated and random input ends in
 * frames or a typed MuxError; a 4 GiB data length is refused at its header; a Session fed
 * garbage ends (go away / EOF) without an exception escaping or a hang.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import {
  encodeFrame,
  Flag,
  FrameDecoder,
  FrameType,
  GoAwayCode,
  headerBytes,
  MuxError,
} from "../lib/mux/frame.ts";
import { Session } from "../lib/mux/mod.ts";
import { bytesArb, cat, clean, fuzzParams, mutate, mutationArb, splitArb } from "./_fuzz.ts";
import { ChunkedSource } from "./_chunked.ts";

interface Decoded {
  type: number;
  flags: number;
  streamId: number;
  length: number;
  payload: number[];
}

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const flagsArb = fc.integer({ min: 0, max: 0xffff });
const frameArb: fc.Arbitrary<Decoded> = fc.oneof(
  fc.record({ streamId: u32, flags: flagsArb, payload: fc.uint8Array({ maxLength: 200 }) }).map((
    f,
  ) => ({
    type: FrameType.data,
    flags: f.flags,
    streamId: f.streamId,
    length: f.payload.length,
    payload: [...f.payload],
  })),
  fc.record({
    type: fc.constantFrom(FrameType.windowUpdate, FrameType.ping, FrameType.goAway),
    flags: flagsArb,
    streamId: u32,
    length: u32,
  }).map((f) => ({ ...f, payload: [] })),
);

/** Feed `data` to a decoder in pieces of the given sizes; collect frames. */
function decodeAll(data: Uint8Array, sizes: number[], maxFrameBytes = 1 << 20): Decoded[] {
  const dec = new FrameDecoder(maxFrameBytes);
  const out: Decoded[] = [];
  let cur: Decoded | undefined;
  const sink = {
    onFrame(type: number, flags: number, streamId: number, length: number) {
      cur = { type, flags, streamId, length, payload: [] };
      out.push(cur);
    },
    onPayload(chunk: Uint8Array) {
      cur!.payload.push(...chunk);
    },
  };
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = sizes[i % sizes.length];
    dec.push(data.subarray(off, off + n), sink);
    off += n;
  }
  return out;
}

function encode(f: Decoded): Uint8Array {
  return f.type === FrameType.data
    ? encodeFrame(f.type, f.flags, f.streamId, Uint8Array.from(f.payload))
    : encodeFrame(f.type, f.flags, f.streamId, f.length);
}

Deno.test("fuzz mux: every frame type round-trips through the decoder on any split", () => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 12 }), splitArb, (frames, sizes) => {
      const wire = cat(...frames.map(encode));
      assertEquals(decodeAll(wire, sizes), frames);
    }),
    fuzzParams(1000),
  );
});

Deno.test("fuzz mux: mutated and random input decodes or throws a typed MuxError", () => {
  const check = (data: Uint8Array, sizes: number[]) => {
    try {
      decodeAll(data, sizes, 4096);
    } catch (err) {
      assert(err instanceof MuxError, `escaped: ${err}`);
      assert(["bad-version", "bad-type", "frame-too-large"].includes(err.reason), err.reason);
    }
  };
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 6 }), mutationArb, splitArb, (fs, muts, s) => {
      check(mutate(cat(...fs.map(encode)), muts), s);
    }),
    fuzzParams(1000),
  );
  fc.assert(fc.property(bytesArb, splitArb, check), fuzzParams(500));
});

Deno.test("fuzz mux: a 4 GiB data length is refused at its header, before any payload", () => {
  const dec = new FrameDecoder(16 * 1024 * 1024);
  const hdr = encodeFrame(FrameType.data, Flag.syn, 1, 0);
  hdr.fill(0xff, 8, 12);
  let payloadSeen = false;
  const sink = {
    onFrame() {},
    onPayload() {
      payloadSeen = true;
    },
  };
  let err: unknown;
  try {
    dec.push(cat(hdr, new Uint8Array(64)), sink);
  } catch (e) {
    err = e;
  }
  assert(err instanceof MuxError && err.reason === "frame-too-large", String(err));
  assert(!payloadSeen);
  // Window updates and pings carry a u32 value, not a length: no payload follows them.
  const frames = decodeAll(encodeFrame(FrameType.windowUpdate, 0, 1, 0xffff_ffff), [5]);
  assertEquals(frames[0].payload.length, 0);
  assertEquals(headerBytes, 12);
});

/** Valid-looking traffic from a client peer: SYNs, data, window updates, pings, FIN/RST. */
const peerFrameArb: fc.Arbitrary<Decoded> = fc.oneof(
  fc.record({
    id: fc.integer({ min: 0, max: 9 }).map((i) => i * 2 + 1),
    flags: fc.constantFrom(0, Flag.syn, Flag.fin, Flag.rst, Flag.syn | Flag.fin, Flag.ack),
    payload: fc.uint8Array({ maxLength: 100 }),
  }).map((f) => ({
    type: FrameType.data,
    flags: f.flags,
    streamId: f.id,
    length: f.payload.length,
    payload: [...f.payload],
  })),
  fc.record({
    id: fc.integer({ min: 0, max: 9 }).map((i) => i * 2 + 1),
    flags: fc.constantFrom(0, Flag.syn, Flag.fin, Flag.rst),
    length: u32,
  }).map((f) => ({ type: FrameType.windowUpdate, ...f, streamId: f.id, payload: [] })),
  fc.record({ flags: fc.constantFrom(Flag.syn, Flag.ack), length: u32 }).map((f) => ({
    type: FrameType.ping,
    streamId: 0,
    ...f,
    payload: [],
  })),
  fc.constantFrom(GoAwayCode.normal, GoAwayCode.protocolError, 7).map((code) => ({
    type: FrameType.goAway,
    flags: 0,
    streamId: 0,
    length: code,
    payload: [],
  })),
);

const endReasons = [
  "eof",
  "remote-goaway",
  "protocol-error",
  "conn-error",
  "local-close",
];

Deno.test("fuzz mux: a session fed arbitrary or mutated frames ends cleanly", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(peerFrameArb, { maxLength: 20 }),
      fc.option(mutationArb, { nil: undefined }),
      splitArb,
      async (frames, muts, sizes) => {
        let wire = cat(...frames.map(encode));
        if (muts) wire = mutate(wire, muts);
        let i = 0;
        const src = new ChunkedSource(wire, () => sizes[i++ % sizes.length]);
        const session = Session.server(src, {
          keepaliveIntervalMs: 0,
          closeLingerMs: 0,
          drainTimeoutMs: 50,
          maxFrameBytes: 4096,
        });
        const reader = (async () => {
          // Accept and drain whatever streams the peer opens.
          for await (const s of session) {
            const buf = new Uint8Array(1024);
            void (async () => {
              try {
                while ((await s.read(buf)) !== null) { /* drain */ }
              } catch (err) {
                assert(err instanceof MuxError, `stream read escaped: ${err}`);
              }
            })();
          }
        })();
        const out = await clean(() => session.closed, "session end");
        assertEquals(out.kind, "ok");
        if (out.kind === "ok") assert(endReasons.includes(out.value.reason), out.value.reason);
        await session.close();
        await reader;
      },
    ),
    fuzzParams(200),
  );
});
