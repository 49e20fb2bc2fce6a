/**
 * lib/mux `Session.serveEach`: streams the peer opens go to a handler in the read that brings
 * their SYN frame whole, its payload queued (`Stream.takeView`), instead of to `accept()`.
 * depot-local `--mux` serves its requests this way (the target is dialled in that turn).
 */

import type { Stream } from "../lib/mux/mod.ts";
import { encodeFrame, Flag, FrameType } from "../lib/mux/frame.ts";
import { assert, assertEquals } from "./_assert.ts";
import { rawPair } from "./_mux.ts";
import { until, within } from "./_util.ts";

const text = (b: Uint8Array | null) => b === null ? null : new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("mux serveEach: a stream's SYN payload is there when it is handed over, however the frame was split", async () => {
  const { session, peer } = await rawPair("server");
  const handed: { id: number; first: string | null }[] = [];
  const streams: Stream[] = [];
  session.serveEach((s) => {
    handed.push({ id: s.id, first: text(s.takeView()) }); // synchronous: no turn, no read
    s.releaseView();
    streams.push(s);
  });
  try {
    // Whole in one write.
    await peer.frame(FrameType.data, Flag.syn, 1, bytes("connect example:80"));
    await within(until("stream 1 handed over", () => handed.length === 1), "stream 1");
    assertEquals(handed[0], { id: 1, first: "connect example:80" });

    // The SYN frame split: its header and 3 payload bytes read first, the rest later. The
    // stream goes to the handler only with the whole payload.
    const frame = encodeFrame(FrameType.data, Flag.syn, 3, bytes("split request"));
    const firstPart = 12 + 3;
    const before = session.stats.bytesIn;
    await peer.send(frame.subarray(0, firstPart));
    await within(
      until("the first part read", () => session.stats.bytesIn >= before + firstPart),
      "the first part",
    );
    assertEquals(handed.length, 1, "not handed over before its payload is whole");
    await peer.send(frame.subarray(firstPart));
    await within(until("stream 3 handed over", () => handed.length === 2), "stream 3");
    assertEquals(handed[1], { id: 3, first: "split request" });

    // A SYN without data: handed over at once, nothing queued.
    await peer.frame(FrameType.windowUpdate, Flag.syn, 5, 0);
    await within(until("stream 5 handed over", () => handed.length === 3), "stream 5");
    assertEquals(handed[2], { id: 5, first: null });

    // The stream is an ordinary one afterwards: more data, its FIN, an answer with the ACK.
    await peer.frame(FrameType.data, Flag.fin, 1, bytes(" more"));
    const s1 = streams[0];
    assertEquals(text(await within(s1.readView(), "stream 1's data")), " more");
    assertEquals(await within(s1.readView(), "stream 1's FIN"), null);
    await s1.write(bytes("ok"));
    let acked = false;
    const answer = await within(
      peer.until((f) => {
        if (f.streamId === 1 && (f.flags & Flag.ack) !== 0) acked = true;
        return f.streamId === 1 && f.type === FrameType.data;
      }),
      "the answer",
    );
    assert(acked, "stream 1 was acknowledged");
    assertEquals(text(answer?.payload ?? null), "ok");
    assertEquals(await session.accept(), null, "accept() has nothing once serveEach serves");
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("mux serveEach: streams waiting for accept() are handed over; a throwing handler resets its stream only", async () => {
  const { session, peer } = await rawPair("server");
  try {
    await peer.frame(FrameType.data, Flag.syn, 1, bytes("early"));
    await within(until("stream 1 arrived", () => session.stats.streamsTotal === 1), "stream 1");
    const handed: { id: number; first: string | null }[] = [];
    session.serveEach((s) => {
      const first = text(s.takeView());
      handed.push({ id: s.id, first });
      if (first === "throw") throw new Error("a broken handler");
    });
    assertEquals(handed, [{ id: 1, first: "early" }], "the waiting stream, at serveEach");

    await peer.frame(FrameType.data, Flag.syn, 3, bytes("throw"));
    const rst = await within(
      peer.until((f) => f.streamId === 3 && (f.flags & Flag.rst) !== 0),
      "stream 3's reset",
    );
    assert(rst !== null, "the stream whose handler threw is reset");

    await peer.frame(FrameType.data, Flag.syn, 5, bytes("after"));
    await within(until("stream 5 handed over", () => handed.length === 3), "stream 5");
    assertEquals(handed[2], { id: 5, first: "after" }, "the session serves on");
  } finally {
    peer.close();
    await session.close();
  }
});
