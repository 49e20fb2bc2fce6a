import { Flag, FrameType, MuxError, Session } from "../lib/mux/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { muxPair, tcpPair } from "./_mux.ts";
import { within } from "./_util.ts";

Deno.test("ping: returns an RTT and sets rttMs", async () => {
  const p = await muxPair();
  try {
    const rtt = await p.client.ping();
    assert(rtt >= 0 && rtt < 10_000, `rtt ${rtt}`);
    assert(p.client.rttMs !== undefined);
    await p.server.ping();
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
  const p = await muxPair({ keepaliveIntervalMs: 20, keepaliveTimeoutMs: 15_000 });
  try {
    await new Promise((r) => setTimeout(r, 200));
    const s = await p.client.open({ data: new Uint8Array([1]), fin: true });
    const accepted = await p.server.accept();
    assert(accepted !== null);
    accepted.close();
    s.close();
    assert(p.client.stats.framesIn > 3, "pings were answered");
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
    while (got < 12) got += (await b.read(buf.subarray(got)))!;
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
