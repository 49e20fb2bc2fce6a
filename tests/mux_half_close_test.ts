import { MuxError, StreamState } from "../lib/mux/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { deadlines } from "../lib/net/deadline.ts";
import {
  acceptWithin,
  blockStreamSha256,
  drainHash,
  readAll,
  readWithin,
  sendBlocks,
  until,
  within,
} from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Poll until `cond` holds (60 s bound, a hang's; the failure quotes the condition). */
function waitFor(cond: () => boolean): Promise<void> {
  return until(String(cond), cond);
}

Deno.test("half-close: the opener's FIN ends the acceptor's reads, the reply still flows back", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    await c.write(enc.encode("request"));
    await c.closeWrite();
    assertEquals(c.state & 0xf0, 0x40, "FIN_TX set (FIN_WAIT_1 or later)");
    const s = await acceptWithin(p.server, "the stream the peer opened");
    assertEquals(dec.decode(await readAll(s)), "request");
    assertEquals(s.state & 0xf0, 0x30, "acceptor: FIN_RX + FIN_ACK_TX (CLOSE_WAIT)");
    const [got] = await Promise.all([
      drainHash(c),
      sendBlocks(s, 3 << 20, 7).then(() => s.closeWrite()),
    ]);
    assertEquals(got.sha256, blockStreamSha256(3 << 20, 7));
    await waitFor(() => p.client.stats.streamsOpen === 0 && p.server.stats.streamsOpen === 0);
    assertEquals(c.state, StreamState.CLOSED);
    assertEquals(s.state, StreamState.CLOSED);
  } finally {
    await p.close();
  }
});

Deno.test("half-close: the acceptor closes first, the opener keeps sending 32 MiB (no stall)", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    const s = await acceptWithin(p.server, "the stream the peer opened");
    await s.closeWrite(); // server says it will not write; it still reads everything
    assertEquals(await readWithin(c, new Uint8Array(10), "the acceptor's FIN"), null);
    assertEquals(c.state, StreamState.CLOSE_WAIT);
    // Far more than one window: would stall if the half-closed side stopped crediting.
    const [got] = await Promise.all([
      drainHash(s),
      sendBlocks(c, 32 << 20, 3).then(() => c.closeWrite()),
    ]);
    assertEquals(got.sha256, blockStreamSha256(32 << 20, 3));
    await waitFor(() => p.server.stats.streamsOpen === 0);
  } finally {
    await p.close();
  }
});

Deno.test("half-close: both sides half-close at once and both see EOF", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    const s = await acceptWithin(p.server, "the stream the peer opened");
    await Promise.all([
      c.write(enc.encode("ping")).then(() => c.closeWrite()),
      s.write(enc.encode("pong")).then(() => s.closeWrite()),
    ]);
    const [a, b] = await Promise.all([readAll(c), readAll(s)]);
    assertEquals(dec.decode(a), "pong");
    assertEquals(dec.decode(b), "ping");
    await waitFor(() => p.client.stats.streamsOpen === 0 && p.server.stats.streamsOpen === 0);
  } finally {
    await p.close();
  }
});

Deno.test("half-close: write after closeWrite rejects with stream-closed", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    await c.closeWrite();
    const err = await assertRejects(c.write(enc.encode("x")));
    assert(err instanceof MuxError && err.reason === "stream-closed", String(err));
    await c.closeWrite(); // idempotent
  } finally {
    await p.close();
  }
});

Deno.test("reset: readers and writers on both sides get a clear 'reset' error", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    const s = await acceptWithin(p.server, "the stream the peer opened");
    // The client writes far past the window while nobody reads: its write waits for window.
    const blocked = c.write(new Uint8Array(4 << 20));
    const pendingRead = c.read(new Uint8Array(16));
    await new Promise((r) => setTimeout(r, 50));
    s.reset();
    const e1 = await assertRejects(within(blocked, "the blocked write to end at the reset"));
    const e2 = await assertRejects(within(pendingRead, "the pending read to end at the reset"));
    assert(e1 instanceof MuxError && e1.reason === "reset", String(e1));
    assert(e2 instanceof MuxError && e2.reason === "reset", String(e2));
    const e3 = await assertRejects(s.read(new Uint8Array(1)));
    const e4 = await assertRejects(s.write(new Uint8Array(1)));
    assert(e3 instanceof MuxError && e3.reason === "reset");
    assert(e4 instanceof MuxError && e4.reason === "reset");
    assertEquals(c.state, StreamState.CLOSED);
    await waitFor(() => p.client.stats.streamsOpen === 0 && p.server.stats.streamsOpen === 0);
  } finally {
    await p.close();
  }
});

Deno.test("close: full close sends FIN, ends local reads, and late peer data gets RST", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    const s = await acceptWithin(p.server, "the stream the peer opened");
    const pending = c.read(new Uint8Array(8));
    c.close();
    assertEquals(
      await within(pending, "the pending read to end at close()"),
      null,
      "a pending read ends with EOF on close()",
    );
    assertEquals(
      await readWithin(s, new Uint8Array(8), "the opener's FIN"),
      null,
      "the peer sees our FIN",
    );
    await s.write(enc.encode("too late")).catch(() => {});
    // The late data is answered with RST: the peer's next write fails with reset.
    await waitFor(() => s.error !== null);
    assertEquals(s.error?.reason, "reset");
    await waitFor(() => p.client.stats.streamsOpen === 0 && p.server.stats.streamsOpen === 0);
  } finally {
    await p.close();
  }
});

Deno.test("close: after both FINs the stream is freed on both sides", async () => {
  const p = await muxPair();
  try {
    for (let i = 0; i < 20; i++) {
      const c = await p.client.open({ data: enc.encode(`req ${i}`), fin: true });
      const s = await acceptWithin(p.server, "the stream the peer opened");
      assertEquals(dec.decode(await readAll(s)), `req ${i}`);
      await s.write(enc.encode(`resp ${i}`));
      s.close();
      assertEquals(dec.decode(await readAll(c)), `resp ${i}`);
      c.close();
    }
    await waitFor(() => p.client.stats.streamsOpen === 0 && p.server.stats.streamsOpen === 0);
    assertEquals(p.client.stats.streamsTotal, 20);
  } finally {
    await p.close();
  }
});

Deno.test("close: a read pending on a big frame (read straight into its buffer) ends with EOF", async () => {
  const { rawPair } = await import("./_mux.ts");
  const { encodeFrame } = await import("../lib/mux/frame.ts");
  const { FrameType, Flag } = await import("../lib/mux/mod.ts");
  const { session, peer } = await rawPair("server");
  try {
    const frame = encodeFrame(FrameType.data, Flag.syn, 1, new Uint8Array(200 * 1024).fill(9));
    await peer.send(frame.subarray(0, 100_000)); // header + part of a 200 KiB payload
    const s = await acceptWithin(session, "the stream the peer opened");
    const buf = new Uint8Array(1 << 20);
    let got = 0;
    while (got < 100_000 - 12) {
      got += (await readWithin(s, buf, "the first part of the frame", got))!;
    }
    const pending = s.read(buf); // waits for the rest of the frame
    await new Promise((r) => setTimeout(r, 20));
    s.close();
    await peer.send(frame.subarray(100_000)); // the rest arrives after close()
    assertEquals(await within(pending, "the read pending on the frame to end at close()"), null);
    assertEquals(await s.read(buf), null);
    // The session is fine: a ping still works.
    await peer.frame(FrameType.ping, Flag.syn, 0, 5);
    const f = await peer.until((h) => h.type === FrameType.ping);
    assertEquals(f?.length, 5);
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("close: a peer that never sends its FIN is reset after closeLingerMs", async () => {
  const p = await muxPair({ closeLingerMs: 100 }, {});
  try {
    const c = await p.client.open();
    const s = await acceptWithin(p.server, "the stream the peer opened");
    c.close(); // our FIN goes out; the server's application never closes its side
    assertEquals(await readWithin(s, new Uint8Array(1), "the opener's FIN"), null);
    await waitFor(() => p.client.stats.streamsOpen === 0);
    await waitFor(() => s.error !== null);
    assertEquals(s.error?.reason, "reset");
    assertEquals(p.server.stats.streamsOpen, 0);
  } finally {
    await p.close();
  }
});

Deno.test("close: a stream closed before the peer's FIN leaves the wheel once that FIN comes", async () => {
  // A linger far beyond the test: one left behind is still pending at the end.
  const p = await muxPair({ closeLingerMs: 60_000 }, {});
  try {
    const before = deadlines.size;
    for (let i = 0; i < 10; i++) {
      const s = await p.client.open({ data: new Uint8Array([i]) });
      const r = await acceptWithin(p.server, "the stream the peer opened");
      s.close(); // before the server's FIN: the client lingers for it
      assertEquals(deadlines.size - before, 1, "the closed stream's linger");
      assertEquals((await readWithin(r, new Uint8Array(4), "the byte"))!, 1);
      assertEquals(await readWithin(r, new Uint8Array(1), "the opener's FIN"), null);
      r.close(); // the server's FIN: the client's stream is freed
      await waitFor(() => p.client.stats.streamsOpen === 0);
      assertEquals(deadlines.size - before, 0, "a linger left after the peer's FIN came");
      assertEquals(s.error, null, "closed cleanly, not reset");
    }
  } finally {
    await p.close();
  }
});
