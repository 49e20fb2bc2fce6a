/**
 * Small frames are encoded straight into the session's next transport write (the batch) when
 * nothing is queued ahead of them, and queued behind anything that is (a large write sent from
 * the caller's buffer, frames waiting for a full batch to go out). Whatever the mix, each
 * stream's bytes must arrive in the order written, and a FIN added to a frame already in the
 * batch must end the stream there.
 */

import { assert, assertEquals } from "./_assert.ts";
import { acceptedHashes, rawPair, tcpPair, TrickleConn } from "./_mux.ts";
import { until, within } from "./_util.ts";
import { Flag, FrameType } from "../lib/mux/frame.ts";
import { Session } from "../lib/mux/mod.ts";
import { createHash } from "node:crypto";

Deno.test("mux batch: small writes after a large one (not awaited) arrive after it, in order", async () => {
  // Each stream starts a 24 KiB write (queued, sent from its buffer) and without waiting
  // for it writes small pieces (copied at once), now and then another large one, then FIN;
  // the transport trickles, so small frames come while large ones are queued or being written.
  const streams = 6, pieces = 60;
  const [a, b] = await tcpPair();
  const opts = { keepaliveIntervalMs: 0, drainTimeoutMs: 3000 };
  const writer = Session.client(new TrickleConn(a, 8000), opts);
  const reader = Session.server(b, opts);
  try {
    const sent = new Map<number, string>();
    const receiving = acceptedHashes(reader, streams);
    await Promise.all(Array.from({ length: streams }, async (_, k) => {
      const s = await writer.open();
      const h = createHash("sha256");
      const large: Promise<number>[] = [];
      const small = new Uint8Array(300);
      let seed = k + 7;
      for (let i = 0; i < pieces; i++) {
        seed = (seed * 1103515245 + 12345) >>> 0;
        if (i % 20 === 0) {
          const big = new Uint8Array(24 * 1024).fill(seed & 0xff);
          big[0] = i;
          h.update(big);
          large.push(s.write(big)); // not awaited: later pieces queue behind it
          continue;
        }
        const n = 1 + (seed % small.length);
        small.fill(seed & 0xff, 0, n);
        small[0] = i;
        h.update(small.subarray(0, n));
        await s.write(small.subarray(0, n));
        small.fill(0xee); // the write's bytes are ours again
      }
      await s.closeWrite();
      await Promise.all(large);
      sent.set(s.id, h.digest("hex"));
    }));
    const got = await within(receiving, "every stream's bytes and FIN");
    assertEquals(got, sent);
  } finally {
    await Promise.all([writer.close(), reader.close()]);
  }
});

Deno.test("mux batch: a FIN right after a small write rides on its frame; the stream is freed once written", async () => {
  const { session, peer } = await rawPair("client");
  try {
    const s = await session.open(); // its SYN leaves in a frame of its own
    const syn = await within(peer.next(), "the SYN");
    assertEquals([syn?.type, syn?.flags], [FrameType.windowUpdate, Flag.syn]);
    await s.write(new TextEncoder().encode("hello"));
    await s.closeWrite();
    const f = await within(peer.next(), "the stream's frame");
    assert(f, "a frame");
    assertEquals(
      { type: f.type, flags: f.flags, id: f.streamId, text: new TextDecoder().decode(f.payload) },
      { type: FrameType.data, flags: Flag.fin, id: s.id, text: "hello" },
    );
    // The peer ends its side too: once our FIN was written, the stream leaves the table.
    await peer.frame(FrameType.windowUpdate, Flag.ack | Flag.fin, s.id, 0);
    assertEquals(await within(s.read(new Uint8Array(8)), "our read's end"), null);
    await until("the stream freed", () => session.stats.streamsOpen === 0);
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("mux batch: a FIN after the write's batch has left goes in a frame of its own", async () => {
  const { session, peer } = await rawPair("client");
  try {
    const s = await session.open({ data: new TextEncoder().encode("request") });
    const f1 = await within(peer.next(), "the SYN with the request");
    assertEquals([f1?.type, f1?.flags, f1?.length], [FrameType.data, Flag.syn, 7]);
    await s.closeWrite(); // the request's batch was written: nothing left to add the FIN to
    const f2 = await within(peer.next(), "the FIN");
    assertEquals([f2?.type, f2?.flags, f2?.streamId], [FrameType.windowUpdate, Flag.fin, s.id]);
    await peer.frame(FrameType.data, Flag.ack | Flag.fin, s.id, new TextEncoder().encode("ok"));
    const buf = new Uint8Array(8);
    assertEquals(await within(s.read(buf), "the answer"), 2);
    assertEquals(await within(s.read(buf), "the answer's end"), null);
    await until("the stream freed", () => session.stats.streamsOpen === 0);
  } finally {
    peer.close();
    await session.close();
  }
});
