import { Flag, FrameType, MuxError, Session } from "../lib/mux/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { muxPair, tcpPair } from "./_mux.ts";
import { readWithin, until, within } from "./_util.ts";

Deno.test("ping: returns an RTT and sets rttMs", async () => {
  const p = await muxPair();
  try {
    // The RTT is measured inside the call: never negative, never longer than the call took.
    const t0 = performance.now();
    const rtt = await within(p.client.ping(), "the client's ping answered");
    const callMs = performance.now() - t0;
    assert(rtt >= 0 && rtt <= callMs + 1, `rtt ${rtt} ms from a call of ${callMs} ms`);
    // A smoothed average of samples (pings, ACKs of opened streams): set, and not negative.
    assert(p.client.rttMs !== undefined && p.client.rttMs >= 0, `rttMs ${p.client.rttMs}`);
    await within(p.server.ping(), "the server's ping answered");
  } finally {
    await p.close();
  }
});

Deno.test("ping: keepalive detects a peer that stopped answering", async () => {
  const [a, b] = await tcpPair(); // b is a peer that never reads nor answers
  const session = Session.client(a, { keepaliveIntervalMs: 50, keepaliveTimeoutMs: 150 });
  try {
    const t0 = Date.now();
    const end = await within(session.closed, "the session's end");
    assertEquals(end.reason, "keepalive-timeout");
    assert(end.error instanceof MuxError);
    console.log(`dead session detected after ${Date.now() - t0} ms (interval 50, timeout 150)`);
  } finally {
    b.close();
  }
});

Deno.test("ping: keepalive keeps a healthy idle session open", async () => {
  // The timeout is a hang's bound: only a peer that stopped answering for a minute is dead.
  const p = await muxPair({ keepaliveIntervalMs: 20, keepaliveTimeoutMs: 60_000 });
  try {
    await until("several keepalive pings answered", () => p.client.stats.framesIn > 3);
    const s = await within(p.client.open({ data: new Uint8Array([1]), fin: true }), "an open");
    const accepted = await within(p.server.accept(), "the server's accept");
    assert(accepted !== null);
    accepted.close();
    s.close();
  } finally {
    await p.close();
  }
});

Deno.test("ping: a ping frame's value is echoed with ACK", async () => {
  const [a, b] = await tcpPair();
  const session = Session.server(a, { keepaliveIntervalMs: 0 });
  try {
    const { encodeFrame, decodeHeader } = await import("../lib/mux/frame.ts");
    await b.write(encodeFrame(FrameType.ping, Flag.syn, 0, 0xdeadbeef));
    const buf = new Uint8Array(12);
    let got = 0;
    while (got < 12) {
      const n = await readWithin(b, buf.subarray(got), "the ping's ACK", got);
      if (n === null) throw new Error(`EOF after ${got} bytes of the ping's ACK`);
      got += n;
    }
    const h = decodeHeader(buf);
    assertEquals([h.type, h.flags, h.streamId, h.length], [
      FrameType.ping,
      Flag.ack,
      0,
      0xdeadbeef,
    ]);
  } finally {
    b.close();
    await within(session.closed, "the session's end");
  }
});

Deno.test("ping: a peer that never answers pings but keeps sending is alive until it stops", async () => {
  // The peer (b) reads our frames and counts our pings; it answers none, but sends a frame
  // (a window update for a stream we do not know: ignored) every 5 ms. Each ping after the
  // second (the first is the session's early RTT sample) is sent only once a keepalive deadline
  // passed with that traffic as proof of life. The timeout is long beside the traffic's 5 ms:
  // only a process stalled for 2 s (no read, its timers late) could see no traffic in it.
  const [a, b] = await tcpPair();
  const session = Session.client(a, { keepaliveIntervalMs: 50, keepaliveTimeoutMs: 2_000 });
  const { encodeFrame, decodeHeader, headerBytes } = await import("../lib/mux/frame.ts");
  const frame = encodeFrame(FrameType.windowUpdate, 0, 2, 0);
  let sending = true;
  const traffic = (async () => {
    while (sending) {
      await b.write(frame);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    const buf = new Uint8Array(headerBytes);
    for (let pings = 0; pings < 3;) {
      let got = 0;
      while (got < headerBytes) {
        const n = await readWithin(b, buf.subarray(got), "the session's next frame", got);
        if (n === null) throw new Error(`the session ended after ${pings} pings`);
        got += n;
      }
      if (decodeHeader(buf).type === FrameType.ping) pings++;
    }
    assertEquals(session.stats.streamsOpen, 0);
    sending = false;
    await within(traffic, "the peer's traffic to stop");
    const end = await within(session.closed, "the session's end once the traffic stopped");
    assertEquals(end.reason, "keepalive-timeout");
  } finally {
    sending = false;
    await traffic.catch(() => {
      // The session closed the connection under the writer: only its end mattered here.
    });
    b.close();
    await within(session.closed, "the session's end");
  }
});
