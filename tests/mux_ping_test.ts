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
