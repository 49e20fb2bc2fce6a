import { Flag, FrameType, StreamState } from "../lib/mux/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { deadlines } from "../lib/net/deadline.ts";
import { muxPair, rawPair } from "./_mux.ts";
import { acceptWithin, readAll, until } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** One small request/response; returns frames written by each side for it. */
async function exchange(
  optimized: boolean,
): Promise<{ client: number; server: number }> {
  const p = await muxPair({}, { synAckDelayMs: optimized ? 10_000 : 0 });
  try {
    const c = optimized
      ? await p.client.open({ data: enc.encode("GET /"), fin: true })
      : await p.client.open();
    if (!optimized) {
      await c.write(enc.encode("GET /"));
      await c.closeWrite();
    }
    const s = await acceptWithin(p.server, "the stream the peer opened");
    assertEquals(dec.decode(await readAll(s)), "GET /");
    await s.write(enc.encode("404"));
    await s.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "404");
    c.close();
    s.close();
    return { client: p.client.stats.framesOut, server: p.server.stats.framesOut };
  } finally {
    await p.close();
  }
}

Deno.test("open-with-data: a small request/response is 2 frames with QuRe + optional SYN response", async () => {
  const plain = await exchange(false);
  const qure = await exchange(true);
  console.log(
    `frames per request/response: plain yamux ${plain.client}+${plain.server}, ` +
      `QuRe + delayed ACK ${qure.client}+${qure.server}`,
  );
  assertEquals(qure, { client: 1, server: 1 }, "SYN+data+FIN, then ACK+data+FIN");
  assert(plain.client + plain.server >= 4, JSON.stringify(plain));
});

Deno.test("open-with-data: the accepting side sees the data at once, in the SYN frame", async () => {
  const { session, peer } = await rawPair("client");
  try {
    const s = await session.open({ data: enc.encode("hello"), fin: true });
    const f = await peer.next();
    assert(f !== null);
    assertEquals(f.type, FrameType.data);
    assertEquals(f.flags, Flag.syn | Flag.fin);
    assertEquals(f.streamId, s.id);
    assertEquals(dec.decode(f.payload), "hello");
    assertEquals(s.state & 0x4f, 0x44, "SYN_TX + FIN_TX before any answer (QuRe)");
    // The peer answers ACK + data + FIN in one frame.
    await peer.frame(FrameType.data, Flag.ack | Flag.fin, s.id, enc.encode("world"));
    assertEquals(dec.decode(await readAll(s)), "world");
    assertEquals(s.state, StreamState.CLOSED);
  } finally {
    await session.close();
    peer.close();
  }
});

Deno.test("open-with-data: a held-back ACK is sent alone once synAckDelayMs passes", async () => {
  const { session, peer } = await rawPair("server", { synAckDelayMs: 30 });
  try {
    await peer.frame(FrameType.data, Flag.syn, 1, enc.encode("req"));
    const s = await acceptWithin(session, "the stream the peer opened");
    assertEquals(s.state, StreamState.SYN_RX, "ACK held back");
    const f = await peer.next();
    assert(f !== null);
    assertEquals([f.type, f.flags, f.streamId], [FrameType.windowUpdate, Flag.ack, 1]);
    assertEquals(s.state & 0x07, StreamState.SYN_RECEIVED, "ACK sent: seed SYN,ACK");
    s.reset();
  } finally {
    await session.close();
    peer.close();
  }
});

Deno.test("open-with-data: more data than the initial window is split and still arrives", async () => {
  const p = await muxPair();
  try {
    const big = new Uint8Array(600 * 1024).map((_, i) => i & 0xff);
    const opening = p.client.open({ data: big, fin: true });
    const s = await acceptWithin(p.server, "the stream the peer opened");
    const got = await readAll(s);
    const c = await opening;
    assertEquals(got.length, big.length);
    assertEquals(got, big);
    s.close();
    c.close();
  } finally {
    await p.close();
  }
});

Deno.test("open-with-data: an ACK that rode on the answer leaves no deadline behind", async () => {
  const n = 20;
  // A delay far beyond the test: a deadline left behind is still pending at the end.
  const p = await muxPair({}, { synAckDelayMs: 60_000 });
  try {
    const before = deadlines.size;
    for (let i = 0; i < n; i++) {
      const c = await p.client.open({ data: enc.encode("GET /"), fin: true });
      const s = await acceptWithin(p.server, "the stream the peer opened");
      assertEquals(dec.decode(await readAll(s)), "GET /");
      await s.write(enc.encode("404")); // the held-back ACK rides on this frame
      await s.closeWrite();
      assertEquals(dec.decode(await readAll(c)), "404");
      c.close();
      s.close();
      assertEquals(s.state, StreamState.CLOSED);
    }
    assertEquals(p.server.stats.framesOut, n, "ACK + data + FIN in one frame per stream");
    assertEquals(deadlines.size - before, 0, "held-back ACK deadlines still pending");
    // Reset by the peer before any answer: the ACK is never sent, its deadline goes too.
    const c = await p.client.open({ data: enc.encode("GET /") });
    const s = await acceptWithin(p.server, "the stream the peer opened");
    c.reset();
    await assertRejects(() => readAll(s), "reset");
    assertEquals(s.state, StreamState.CLOSED);
    assertEquals(deadlines.size - before, 0, "the reset stream's held-back ACK still pending");
  } finally {
    await p.close();
  }
});

Deno.test("open-with-data: held-back ACKs keep the wheel's timer between streams, not after", async () => {
  // Each accepted stream adds its held-back ACK to the shared wheel and most take it off at
  // once; a wheel left empty stops its timer, so without the session's hold every stream
  // stopped and restarted it (a timer set and cleared: several µs per stream).
  assertEquals(deadlines.size, 0, "the wheel is empty before the test");
  const p = await muxPair({}, { synAckDelayMs: 60_000 });
  try {
    for (let i = 0; i < 3; i++) {
      const c = await p.client.open({ data: enc.encode("GET /"), fin: true });
      const s = await acceptWithin(p.server, "the stream the peer opened");
      assertEquals(dec.decode(await readAll(s)), "GET /");
      await s.write(enc.encode("404")); // the held-back ACK rides on this frame
      await s.closeWrite();
      assertEquals(dec.decode(await readAll(c)), "404");
      c.close();
      s.close();
      assertEquals(deadlines.size, 0, "held-back ACK deadlines still pending");
      assert(deadlines.ticking, "the wheel's timer stopped between streams");
    }
  } finally {
    await p.close();
  }
  // Released with the session: the idle wheel lets its timer go (after its linger).
  await until("the wheel's timer to stop after the session ended", () => !deadlines.ticking);
});

Deno.test("open-with-data: openNow returns the stream at once, its data in the SYN frame; it throws where open() rejects", async () => {
  const { session, peer } = await rawPair("client", { maxStreams: 1 });
  try {
    const s = session.openNow(enc.encode("hello"));
    assertEquals(s.state & 0x0f, 0x04, "SYN_TX queued before any await");
    const f = await peer.next();
    assert(f !== null);
    assertEquals([f.type, f.flags, f.streamId], [FrameType.data, Flag.syn, s.id]);
    assertEquals(dec.decode(f.payload), "hello");
    await peer.frame(FrameType.data, Flag.ack | Flag.fin, s.id, enc.encode("world"));
    assertEquals(dec.decode(await readAll(s)), "world");
    // One stream allowed and one open: refused as open() refuses, nothing sent.
    let err: unknown;
    try {
      session.openNow(enc.encode("two"));
    } catch (e) {
      err = e;
    }
    assertEquals((err as { reason?: string }).reason, "too-many-streams");
    await assertRejects(() => session.open({ data: enc.encode("two") }));
    s.close();
    await session.close();
    try {
      session.openNow(enc.encode("late"));
      err = undefined;
    } catch (e) {
      err = e;
    }
    assertEquals((err as { reason?: string }).reason, "session-closed");
  } finally {
    await session.close();
    peer.close();
  }
});
