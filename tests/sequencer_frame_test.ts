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
  SeqFrameType,
} from "../lib/sequencer/mod.ts";
import { ProtocolError } from "../lib/net/mod.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { splits } from "./_chunked.ts";

function sample(): { bytes: Uint8Array; frames: Frame[] } {
  const sid = crypto.getRandomValues(new Uint8Array(16));
  const token = new TextEncoder().encode("s3cret");
  const data = crypto.getRandomValues(new Uint8Array(5000));
  const frames: Frame[] = [
    {
      type: SeqFrameType.hello,
      version: 1,
      rejoin: true,
      sessionId: sid,
      pathId: 7,
      receiveBound: 16 << 20,
      token,
    },
    { type: SeqFrameType.welcome, status: 0, receiveBound: 1 << 20 },
    { type: SeqFrameType.data, seq: 0, data },
    { type: SeqFrameType.data, seq: 2 ** 40 + 3, data: new Uint8Array(0) },
    { type: SeqFrameType.fin, seq: 9 },
    {
      type: SeqFrameType.ack,
      pathBytes: 2 ** 33,
      cum: 5,
      nacks: [{ from: 6, to: 8 }, { from: 9, to: 10 }],
    },
    { type: SeqFrameType.heartbeat, reply: true, ts: 1234.5 },
    { type: SeqFrameType.reset, code: 2 },
  ];
  const parts = [
    encodeHello(sid, 7, token, true, 16 << 20),
    encodeWelcome(0, 1 << 20),
    encodeData(0, data),
    encodeData(2 ** 40 + 3, new Uint8Array(0)),
    encodeFin(9),
    encodeAck(2 ** 33, 5, [{ from: 6, to: 8 }, { from: 9, to: 10 }]),
    encodeHeartbeat(1234.5, true),
    encodeReset(2),
  ];
  const bytes = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) (bytes.set(p, o), o += p.length);
  return { bytes, frames };
}

for (const [name, split] of splits) {
  Deno.test(`sequencer frames decode on ${name}`, () => {
    const { bytes, frames } = sample();
    const dec = new FrameDecoder();
    const got: Frame[] = [];
    const size = typeof split === "number" ? () => split : split;
    for (let o = 0; o < bytes.length;) {
      const n = Math.min(size(), bytes.length - o);
      dec.push(bytes.subarray(o, o + n));
      o += n;
      for (let f = dec.next(); f; f = dec.next()) got.push(f);
    }
    assertEquals(got, frames);
    assertEquals(dec.buffered, 0);
  });
}

Deno.test("sequencer frames: truncated input yields no frame", () => {
  const { bytes } = sample();
  for (const cut of [1, 5, 12, 30, 60, 100]) {
    const dec = new FrameDecoder();
    dec.push(bytes.subarray(0, Math.min(cut, 20)));
    // hello is 35 bytes: any prefix shorter is incomplete
    assertEquals(dec.next(), null);
  }
  const d = new FrameDecoder();
  d.push(encodeData(1, new Uint8Array(100)).subarray(0, 50));
  assertEquals(d.next(), null);
});

Deno.test("sequencer frames: oversize and unknown frames are protocol errors", () => {
  const dec = new FrameDecoder(1000);
  dec.push(encodeData(1, new Uint8Array(1001)).subarray(0, 13));
  assert(assertThrows(() => dec.next()) instanceof ProtocolError);
  const bad = new FrameDecoder();
  bad.push(Uint8Array.of(99, 1, 2));
  assert(assertThrows(() => bad.next()) instanceof ProtocolError);
  const hb = new FrameDecoder();
  const f = encodeHeartbeat(0, false);
  new DataView(f.buffer).setFloat64(2, NaN);
  hb.push(f);
  assert(assertThrows(() => hb.next()) instanceof ProtocolError);
});

Deno.test("sequencer frames: random input never crashes the decoder", () => {
  for (let i = 0; i < 2000; i++) {
    const dec = new FrameDecoder(64 * 1024);
    dec.push(crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 64))));
    try {
      while (dec.next()) { /* drain */ }
    } catch (e) {
      assert(e instanceof ProtocolError, `unexpected ${e}`);
    }
  }
});
