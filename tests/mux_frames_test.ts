/** Frame codec and the session's reaction to malformed, split, truncated and random input. */
import {
  decodeHeader,
  encodeFrame,
  encodeHeader,
  FrameDecoder,
  type FrameSink,
  headerBytes,
} from "../lib/mux/frame.ts";
import { Flag, FrameType, GoAwayCode, MuxError, Session } from "../lib/mux/mod.ts";
import { Logger } from "../lib/log.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { rawPair } from "./_mux.ts";
import { acceptWithin, readWithin, within } from "./_util.ts";

type Event = [number, number, number, number, number[]];

function collect(): { sink: FrameSink; events: Event[] } {
  const events: Event[] = [];
  let cur: Event | null = null;
  return {
    events,
    sink: {
      onFrame(type, flags, id, length) {
        cur = [type, flags, id, length, []];
        events.push(cur);
      },
      onPayload(chunk) {
        cur![4].push(...chunk);
      },
    },
  };
}

function randomFrames(n: number): { bytes: Uint8Array; events: Event[] } {
  const parts: Uint8Array[] = [];
  const events: Event[] = [];
  for (let i = 0; i < n; i++) {
    const type = i % 4;
    const flags = (i * 7) & 0xf;
    const id = (i * 2654435761) >>> 0;
    if (type === FrameType.data) {
      const payload = crypto.getRandomValues(new Uint8Array((i * 37) % 300));
      parts.push(encodeFrame(type, flags, id, payload));
      events.push([type, flags, id, payload.length, [...payload]]);
    } else {
      const len = (i * 40503) >>> 0;
      parts.push(encodeFrame(type, flags, id, len));
      events.push([type, flags, id, len, []]);
    }
  }
  const bytes = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) (bytes.set(p, o), o += p.length);
  return { bytes, events };
}

Deno.test("frames: header encode/decode round trip at the u32 limits", () => {
  const b = new Uint8Array(headerBytes + 3);
  encodeHeader(b, 3, FrameType.goAway, 0xffff, 0xffffffff, 0xfffffffe);
  assertEquals(decodeHeader(b, 3), {
    version: 0,
    type: 3,
    flags: 0xffff,
    streamId: 0xffffffff,
    length: 0xfffffffe,
  });
  assertEquals(
    [...encodeFrame(FrameType.windowUpdate, Flag.syn | Flag.ack, 5, 262144)],
    [0, 1, 0, 3, 0, 0, 0, 5, 0, 4, 0, 0],
  );
});

for (const [name, split] of splits) {
  Deno.test(`frames: decoder gives the same frames on ${name}`, () => {
    const { bytes, events } = randomFrames(200);
    const { sink, events: got } = collect();
    const dec = new FrameDecoder(1 << 20);
    // The same pieces given as bounds in the whole buffer (as the session's read loop does).
    const { sink: boundsSink, events: gotBounds } = collect();
    const bounded = new FrameDecoder(1 << 20);
    const size = typeof split === "number" ? () => split : split;
    for (let o = 0; o < bytes.length;) {
      const n = Math.min(size(), bytes.length - o);
      dec.push(bytes.subarray(o, o + n), sink);
      bounded.push(bytes, boundsSink, o, o + n);
      o += n;
    }
    assertEquals(got, events);
    assertEquals(dec.payloadLeft, 0);
    assertEquals(gotBounds, events);
    assertEquals(bounded.payloadLeft, 0);
  });
}

Deno.test("frames: reads of exactly toNextHeader bytes end on header boundaries", () => {
  // The session reads this much amid bulk frames so no payload past the next header is copied.
  const { bytes, events } = randomFrames(200);
  const { sink, events: got } = collect();
  const dec = new FrameDecoder(1 << 20);
  let partial = 0; // a read that split a header (a short read), then completed it
  for (let o = 0; o < bytes.length;) {
    const want = dec.toNextHeader;
    // Every 7th read comes back short, as TCP reads may.
    const n = Math.min(o % 7 === 0 && want > 1 ? want - 1 : want, bytes.length - o);
    const before = got.length;
    dec.push(bytes.subarray(o, o + n), sink);
    o += n;
    if (n === want) {
      assertEquals(got.length, before + 1, "a full read completes exactly one header");
      assertEquals(dec.toNextHeader, dec.payloadLeft + headerBytes);
    } else partial++;
  }
  assertEquals(got, events);
  assert(partial > 0);
});

Deno.test("frames: bad version, unknown type, oversize data length throw typed errors", () => {
  const { sink } = collect();
  const bad = (bytes: Uint8Array, reason: string) => {
    const e = assertThrows(() => new FrameDecoder(1024).push(bytes, sink));
    assert(e instanceof MuxError && e.reason === reason, `${reason}: ${e}`);
  };
  const v = encodeFrame(FrameType.ping, Flag.syn, 0, 1);
  v[0] = 1;
  bad(v, "bad-version");
  const t = encodeFrame(FrameType.ping, Flag.syn, 0, 1);
  t[1] = 4;
  bad(t, "bad-type");
  bad(encodeFrame(FrameType.data, 0, 1, 1025), "frame-too-large");
  // A window update's length is a delta, not a size: any value is fine.
  new FrameDecoder(1024).push(encodeFrame(FrameType.windowUpdate, 0, 1, 0xffffffff), sink);
});

/** Send `frames` from a raw peer; expect go away (protocol error) and a closed session. */
async function expectProtocolError(frames: Uint8Array[], reason: string): Promise<void> {
  const { session, peer } = await rawPair("server");
  try {
    await peer.send(...frames).catch(() => {});
    const f = await peer.until((h) => h.type === FrameType.goAway);
    assert(f !== null, "go away received");
    assertEquals(f.length, GoAwayCode.protocolError);
    assertEquals(await peer.next(), null, "then the connection closes");
    const end = await within(session.closed, "the session's end");
    assertEquals(end.reason, "protocol-error");
    assert(end.error instanceof MuxError && end.error.reason === reason, String(end.error));
  } finally {
    peer.close();
    await session.close();
  }
}

Deno.test("frames: unknown version -> go away (protocol error) + close", async () => {
  const f = encodeFrame(FrameType.ping, Flag.syn, 0, 1);
  f[0] = 7;
  await expectProtocolError([f], "bad-version");
});

Deno.test("frames: unknown type -> go away (protocol error) + close", async () => {
  const f = encodeFrame(FrameType.ping, Flag.syn, 0, 1);
  f[1] = 9;
  await expectProtocolError([f], "bad-type");
});

Deno.test("frames: oversize length -> go away (protocol error), nothing buffered", async () => {
  await expectProtocolError(
    [encodeFrame(FrameType.data, Flag.syn, 1, 0xfffffff0)],
    "frame-too-large",
  );
});

Deno.test("frames: window overrun -> go away (protocol error) + close", async () => {
  await expectProtocolError(
    [
      encodeFrame(FrameType.data, Flag.syn, 1, new Uint8Array(200 * 1024)),
      encodeFrame(FrameType.data, 0, 1, new Uint8Array(100 * 1024)),
    ],
    "window-exceeded",
  );
});

Deno.test("frames: stream id 0, our own id parity, duplicate SYN -> protocol error", async () => {
  await expectProtocolError(
    [encodeFrame(FrameType.data, 0, 0, new Uint8Array(3))],
    "bad-stream-id",
  );
  await expectProtocolError([encodeFrame(FrameType.windowUpdate, Flag.syn, 2, 0)], "bad-stream-id");
  await expectProtocolError(
    [
      encodeFrame(FrameType.windowUpdate, Flag.syn, 1, 0),
      encodeFrame(FrameType.windowUpdate, Flag.syn, 1, 0),
    ],
    "duplicate-stream",
  );
});

Deno.test("frames: data and window updates on unknown streams are discarded; session lives", async () => {
  const { session, peer } = await rawPair("server");
  try {
    await peer.send(
      encodeFrame(FrameType.data, 0, 41, new Uint8Array(5000)),
      encodeFrame(FrameType.windowUpdate, Flag.fin, 43, 100),
      encodeFrame(FrameType.ping, Flag.syn, 0, 77),
    );
    const f = await peer.until((h) => h.type === FrameType.ping);
    assertEquals([f?.flags, f?.length], [Flag.ack, 77], "ping answered after the junk");
    assertEquals(session.stats.streamsOpen, 0);
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("frames: go away with an error code ends the session (remote-goaway), logged as the peer's end, not our protocol error", async () => {
  const lines: { level: string; text: string }[] = [];
  const log = new Logger("debug", {}, (text, level) => void lines.push({ level, text }));
  const { session, peer } = await rawPair("client", { log });
  try {
    await peer.frame(FrameType.goAway, 0, 0, GoAwayCode.internalError);
    const end = await within(session.closed, "the session's end");
    assertEquals(end.reason, "remote-goaway");
    assert(end.error instanceof MuxError && end.error.reason === "remote-error");
    assertEquals(lines.filter((l) => l.level === "warn" || l.level === "error"), []);
    assert(
      lines.some((l) => /mux peer went away.*internal error/.test(l.text)),
      `${lines.map((l) => l.text)}`,
    );
  } finally {
    peer.close();
  }
});

Deno.test("frames: truncated input ends the session (eof); a stream mid-frame gets an error", async () => {
  const frame = encodeFrame(FrameType.data, Flag.syn, 1, new Uint8Array(1000).fill(7));
  const src = new ChunkedSource(frame.subarray(0, 500), 64);
  const session = Session.server(src, { keepaliveIntervalMs: 0 });
  const s = await acceptWithin(session, "the stream the peer opened");
  const end = await within(session.closed, "the session's end");
  assertEquals(end.reason, "eof");
  const buf = new Uint8Array(2000);
  let got = 0;
  let err: unknown;
  try {
    while (true) {
      const n = await readWithin(s, buf, "what arrived, then the session's end", got);
      if (n === null) break;
      got += n;
    }
  } catch (e) {
    err = e;
  }
  assertEquals(got, 500 - headerBytes, "what arrived is readable");
  assert(err instanceof MuxError && err.reason === "session-closed", String(err));
  assert(src.closed);
});

Deno.test("frames: 300 random inputs with random splits never crash or hang", async () => {
  for (let i = 0; i < 300; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(1 + (i * 97) % 4096));
    if (i % 3 === 0) bytes[0] = 0; // valid version more often
    if (i % 5 === 0) bytes[1] = i % 4; // valid type more often
    const src = new ChunkedSource(bytes, () => 1 + Math.floor(Math.random() * 50));
    const session = i % 2 ? Session.client(src) : Session.server(src, { keepaliveIntervalMs: 0 });
    const end = await within(session.closed, "the session's end");
    assert(
      ["eof", "protocol-error", "remote-goaway"].includes(end.reason),
      `input ${i}: ${end.reason} ${end.error}`,
    );
    assert(src.closed, "transport closed");
  }
});

Deno.test("frames: 200 random sequences of well-formed frames (random flags/ids) never crash", async () => {
  for (let round = 0; round < 200; round++) {
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 60; i++) {
      const r = Math.random();
      const type = r < 0.5
        ? FrameType.data
        : r < 0.85
        ? FrameType.windowUpdate
        : r < 0.95
        ? FrameType.ping
        : FrameType.goAway;
      const flags = Math.floor(Math.random() * 16);
      const id = type >= FrameType.ping ? 0 : 1 + 2 * Math.floor(Math.random() * 4);
      if (type === FrameType.data) {
        parts.push(encodeFrame(type, flags, id, new Uint8Array(Math.floor(Math.random() * 3000))));
      } else {
        const len = type === FrameType.goAway
          ? (Math.random() < 0.9 ? 0 : 1)
          : Math.floor(Math.random() * 70000);
        parts.push(encodeFrame(type, flags, id, len));
      }
    }
    const bytes = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) (bytes.set(p, o), o += p.length);
    const src = new ChunkedSource(bytes, () => 1 + Math.floor(Math.random() * 700));
    const session = Session.server(src, { keepaliveIntervalMs: 0, synAckDelayMs: round % 2 });
    // Use the streams the way an application would while frames arrive.
    const user = (async () => {
      for await (const s of session) {
        s.read(new Uint8Array(100)).then(() => s.write(new Uint8Array(10))).catch(() => {})
          .finally(() => Math.random() < 0.5 ? s.close() : s.reset());
      }
    })();
    const end = await within(session.closed, "the session's end");
    await user;
    assert(
      ["eof", "protocol-error", "remote-goaway"].includes(end.reason),
      `round ${round}: ${end.reason} ${end.error}`,
    );
  }
});

Deno.test("frames: a big payload trickling in reaches a waiting reader intact (direct reads)", async () => {
  const { session, peer } = await rawPair("server");
  try {
    const payload = new Uint8Array(200 * 1024).map((_, i) => (i * 31) & 0xff);
    const frame = encodeFrame(FrameType.data, Flag.syn | Flag.fin, 1, payload);
    const cuts = [0, 1012, 70_000, 140_000, frame.length];
    const got: number[] = [];
    const reading = (async () => {
      const s = await acceptWithin(session, "the stream the peer opened");
      const buf = new Uint8Array(256 * 1024);
      while (true) {
        const n = await readWithin(s, buf, "the trickling payload and FIN", got.length);
        if (n === null) break;
        got.push(...buf.subarray(0, n));
      }
      s.close();
    })();
    for (let i = 0; i + 1 < cuts.length; i++) {
      await peer.send(frame.subarray(cuts[i], cuts[i + 1]));
      await new Promise((r) => setTimeout(r, 20));
    }
    await within(reading, "the reader to end");
    assertEquals(got.length, payload.length);
    assert(got.every((b, i) => b === payload[i]), "payload intact");
  } finally {
    peer.close();
    await session.close();
  }
});
