/**
 * Property-based tests of the sequencer's frames (lib/sequencer, carried by fusion paths):
 * every frame type round-trips arbitrary fields through the incremental decoder on any
 * split; mutated and random input yields frames or a typed ProtocolError; length fields
 * set to 4 GiB (data), 65535 (token) or 65535 (NACK count) are refused before buffering.
 * The receiver, fed arbitrary sequence numbers and lengths, stays within a memory budget
 * (frames and bytes held) and a work budget (NACK scan steps), counted, not timed.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import {
  encodeAck,
  encodeData,
  encodeFin,
  encodeHeartbeat,
  encodeHello,
  encodeReset,
  encodeWelcome,
  type Frame,
  FrameDecoder,
  inOrderOverrunFactor,
  maxNackRanges,
  Receiver,
  SeqFrameType,
  SequenceError,
  sequencerVersion,
} from "../lib/sequencer/mod.ts";
import { ProtocolError } from "../lib/net/mod.ts";
import { bytesArb, cat, fuzzParams, mutate, mutationArb, splitArb } from "./_fuzz.ts";

const u53 = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const rangeArb = fc.tuple(u53, fc.integer({ min: 1, max: 1 << 20 }))
  .filter(([f, n]) => f + n <= Number.MAX_SAFE_INTEGER)
  .map(([from, n]) => ({ from, to: from + n }));

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ seq: u53, data: fc.uint8Array({ maxLength: 300 }) }).map((f) => ({
    type: SeqFrameType.data,
    ...f,
  })),
  u53.map((seq) => ({ type: SeqFrameType.fin, seq })),
  fc.record({ pathBytes: u53, cum: u53, nacks: fc.array(rangeArb, { maxLength: 20 }) }).map((
    f,
  ) => ({ type: SeqFrameType.ack, ...f })),
  fc.record({
    reply: fc.boolean(),
    ts: fc.double({ noNaN: true, noDefaultInfinity: true }),
  }).map((f) => ({ type: SeqFrameType.heartbeat, ...f })),
  fc.record({
    rejoin: fc.boolean(),
    sessionId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    pathId: u32,
    receiveBound: u32,
    token: fc.uint8Array({ maxLength: 1024 }),
  }).map((f) => ({ type: SeqFrameType.hello, version: sequencerVersion, ...f })),
  fc.record({ status: fc.integer({ min: 0, max: 255 }), receiveBound: u32 }).map((f) => ({
    type: SeqFrameType.welcome,
    ...f,
  })),
  fc.integer({ min: 0, max: 255 }).map((code) => ({ type: SeqFrameType.reset, code })),
);

function encode(f: Frame): Uint8Array {
  switch (f.type) {
    case SeqFrameType.data:
      return encodeData(f.seq, f.data);
    case SeqFrameType.fin:
      return encodeFin(f.seq);
    case SeqFrameType.ack:
      return encodeAck(f.pathBytes, f.cum, f.nacks);
    case SeqFrameType.heartbeat:
      return encodeHeartbeat(f.ts, f.reply);
    case SeqFrameType.hello:
      return encodeHello(f.sessionId, f.pathId, f.token, f.rejoin, f.receiveBound);
    case SeqFrameType.welcome:
      return encodeWelcome(f.status, f.receiveBound);
    case SeqFrameType.reset:
      return encodeReset(f.code);
  }
}

/** Push `data` in pieces, draining frames after each push. */
function decodeAll(data: Uint8Array, sizes: number[], maxDataBytes?: number): Frame[] {
  const dec = new FrameDecoder(maxDataBytes, 64);
  const out: Frame[] = [];
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = sizes[i % sizes.length];
    dec.push(data.subarray(off, off + n));
    off += n;
    for (let f = dec.next(); f !== null; f = dec.next()) out.push(f);
  }
  return out;
}

/** Plain values for deep comparison (typed arrays as arrays). */
function plain(f: Frame): unknown {
  return JSON.parse(JSON.stringify(f, (_, v) => v instanceof Uint8Array ? [...v] : v));
}

Deno.test("fuzz sequencer: every frame type round-trips on any split", () => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 10 }), splitArb, (frames, sizes) => {
      const got = decodeAll(cat(...frames.map(encode)), sizes);
      assertEquals(got.map(plain), frames.map(plain));
    }),
    fuzzParams(1000),
  );
});

Deno.test("fuzz sequencer: mutated and random input yields frames or a ProtocolError", () => {
  const check = (data: Uint8Array, sizes: number[]) => {
    try {
      decodeAll(data, sizes, 4096);
    } catch (err) {
      assert(err instanceof ProtocolError, `escaped: ${err}`);
      assert(["bad-frame", "too-long"].includes(err.reason), err.reason);
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

Deno.test("fuzz sequencer: oversize length fields are refused before their bytes arrive", () => {
  const refuse = (frame: Uint8Array, reason: string) => {
    const dec = new FrameDecoder(1 << 20, 64);
    dec.push(frame);
    let err: unknown;
    try {
      dec.next();
    } catch (e) {
      err = e;
    }
    assert(err instanceof ProtocolError && err.reason === reason, String(err));
    assert(dec.buffered === frame.length, "the decoder consumed or grew past the header");
  };
  const data = encodeData(1, new Uint8Array(0));
  data.fill(0xff, 9, 13); // len = 4 GiB - 1
  refuse(data, "too-long");
  const hello = encodeHello(new Uint8Array(16), 1, new Uint8Array(0), false);
  hello.fill(0xff, hello.length - 2); // token length 65535
  refuse(hello, "too-long");
  const ack = encodeAck(0, 0, []);
  new DataView(ack.buffer).setUint16(17, maxNackRanges + 1);
  refuse(ack, "too-long");
  const seq = encodeFin(0);
  seq.fill(0xff, 1, 9); // 2^64 - 1: beyond a safe integer
  refuse(seq, "bad-frame");
});

/** One step of a hostile peer and a reader: a frame (seq relative to the ack or absolute). */
type RxStep =
  | { kind: "frame"; near: boolean; seq: number; len: number; fin: boolean }
  | { kind: "read"; n: number }
  | { kind: "nack"; dtMs: number };

const rxStepArb: fc.Arbitrary<RxStep> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("frame" as const),
      near: fc.boolean(),
      seq: u53,
      len: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 400 })),
      fin: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("read" as const), n: fc.nat(40) }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("nack" as const), dtMs: fc.nat(500) }),
  },
);

Deno.test("fuzz sequencer: arbitrary seqs and lengths stay within the receiver's budgets", () => {
  const maxFramesAhead = 64;
  const maxBufferedBytes = 4096;
  fc.assert(
    fc.property(fc.array(rxStepArb, { maxLength: 400 }), (steps) => {
      const r = new Receiver({ maxFramesAhead, maxBufferedBytes, nackGapFrames: 3 });
      let now = 0, nackCalls = 0, frames = 0, cut = 0;
      for (const st of steps) {
        if (st.kind === "read") {
          for (let i = 0; i < st.n && r.shift(); i++);
        } else if (st.kind === "nack") {
          now += st.dtMs;
          nackCalls++;
          const ranges = r.nacks(now);
          assert(ranges.length <= maxNackRanges);
          for (const g of ranges) assert(g.from >= r.cumAck && g.to - g.from > 0);
        } else {
          // Near: within twice the window of the ack (both sides of the bound); else anywhere.
          const seq = st.near ? r.cumAck + (st.seq % (2 * maxFramesAhead)) : st.seq;
          const before = [r.cumAck, r.nextSeq, r.heldFrames, r.reorderBytes, r.readyBytes];
          frames++;
          try {
            r.accept(seq, st.fin ? null : new Uint8Array(st.len), now);
          } catch (err) {
            assert(err instanceof SequenceError, String(err));
            cut++;
            // A refused frame changes nothing (the caller cuts the peer).
            assertEquals([r.cumAck, r.nextSeq, r.heldFrames, r.reorderBytes, r.readyBytes], before);
          }
        }
        // Memory budget: frames and bytes held.
        assert(r.heldFrames <= maxFramesAhead, `${r.heldFrames} frames held`);
        assert(r.reorderBytes <= maxBufferedBytes);
        assert(r.reorderBytes + r.readyBytes <= inOrderOverrunFactor * maxBufferedBytes);
      }
      // Work budget: every NACK scan covers at most the frame window.
      assert(r.stats.nackScanSteps <= nackCalls * maxFramesAhead, `${r.stats.nackScanSteps} steps`);
      assert(r.stats.heldFramesPeak <= maxFramesAhead);
      assertEquals(r.stats.framesReceived, frames);
      assert(cut <= frames);
    }),
    fuzzParams(300),
  );
});

Deno.test("sequencer receiver: 100,000 hostile frames cost bounded frames, bytes and scan steps", () => {
  // A counted budget with the default bounds: whatever the peer sends, the receiver holds at
  // most defaultMaxFramesAhead frames and scans at most that many seqs per NACK round.
  const r = new Receiver();
  let refused = 0;
  let x = 12345;
  const rand = () => (x = (x * 1103515245 + 12345) % 2 ** 31);
  for (let i = 0; i < 100_000; i++) {
    const seq = i % 3 === 0 ? rand() * 2 ** 21 : 1 + (rand() % (2 * r.maxFramesAhead));
    try {
      r.accept(seq, new Uint8Array(i % 5 === 0 ? 0 : 1), i);
    } catch (err) {
      assert(err instanceof SequenceError, String(err));
      refused++;
    }
    if (i % 100 === 0) r.nacks(i * 1000);
  }
  assert(refused > 30_000, `${refused} refused`);
  assert(r.heldFrames <= r.maxFramesAhead, `${r.heldFrames} frames held`);
  assert(r.stats.nackScanSteps <= 1000 * r.maxFramesAhead, `${r.stats.nackScanSteps} steps`);
});
