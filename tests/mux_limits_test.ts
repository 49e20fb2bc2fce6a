import { Flag, FrameType, MuxError } from "../lib/mux/mod.ts";
import { encodeFrame } from "../lib/mux/frame.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { muxPair, rawPair } from "./_mux.ts";
import { within } from "./_util.ts";

Deno.test("limits: streams past maxStreams get RST, the session and other streams live on", async () => {
  const p = await muxPair({}, { maxStreams: 4 });
  try {
    const streams = await Promise.all(Array.from({ length: 6 }, () => p.client.open()));
    const accepted = [];
    for (let i = 0; i < 4; i++) accepted.push((await within(p.server.accept(), "a stream"))!);
    // Streams 5 and 6 were refused: their readers see a reset.
    for (const s of streams.slice(4)) {
      const err = await within(
        assertRejects(s.read(new Uint8Array(1))),
        "a refused stream's reset",
      );
      assert(err instanceof MuxError && err.reason === "reset", String(err));
    }
    // The first four still work.
    await streams[0].write(new Uint8Array([42]));
    const b = new Uint8Array(1);
    assertEquals(await within(accepted[0].read(b), "the byte on the first stream"), 1);
    assertEquals(b[0], 42);
    for (const s of [...streams, ...accepted]) s.close();
  } finally {
    await p.close();
  }
});

Deno.test("limits: the accept backlog refuses SYNs nobody accepts", async () => {
  const { session, peer } = await rawPair("server", { acceptBacklog: 2 });
  try {
    for (const id of [1, 3, 5]) await peer.frame(FrameType.windowUpdate, Flag.syn, id, 0);
    const f = await within(peer.next(), "the RST of the SYN past the backlog");
    assertEquals([f?.type, f?.flags, f?.streamId], [FrameType.windowUpdate, Flag.rst, 5]);
    assertEquals(session.stats.streamsOpen, 2);
    const a = await within(session.accept(), "the first SYN's stream");
    assertEquals(a?.id, 1);
    a?.reset();
    (await within(session.accept(), "the second SYN's stream"))?.reset();
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("limits: opening past maxStreams locally rejects with too-many-streams", async () => {
  const p = await muxPair({ maxStreams: 2 });
  try {
    const a = await p.client.open();
    const b = await p.client.open();
    const err = await assertRejects(p.client.open());
    assert(err instanceof MuxError && err.reason === "too-many-streams");
    a.reset();
    b.reset();
  } finally {
    await p.close();
  }
});

Deno.test("limits: a data frame above maxFrameBytes is a protocol error", async () => {
  const { session, peer } = await rawPair("server", { maxFrameBytes: 1024 });
  try {
    await peer.send(encodeFrame(FrameType.data, Flag.syn, 1, new Uint8Array(1025)));
    const end = await within(session.closed, "the session to end on the oversized frame");
    assertEquals(end.reason, "protocol-error");
    assert(end.error instanceof MuxError && end.error.reason === "frame-too-large");
  } finally {
    peer.close();
  }
});

Deno.test("limits: 10,000 idle streams open at once, then all closed", async () => {
  const n = 10_000;
  const p = await muxPair({}, { acceptBacklog: n });
  try {
    const heap0 = Deno.memoryUsage().heapUsed;
    const opened = await Promise.all(Array.from({ length: n }, () => p.client.open()));
    const accepted = [];
    for (let i = 0; i < n; i++) accepted.push((await within(p.server.accept(), `stream ${i}`))!);
    const heap1 = Deno.memoryUsage().heapUsed;
    assertEquals(p.client.stats.streamsOpen, n);
    assertEquals(p.server.stats.streamsOpen, n);
    console.log(
      `10,000 idle streams: ~${Math.round((heap1 - heap0) / (2 * n))} bytes of heap per stream ` +
        `per side`,
    );
    // Still responsive with all of them open.
    await p.client.ping();
    for (const s of opened) s.close();
    for (const s of accepted) s.close();
    const end = Date.now() + 60_000; // a bound for a hang, far above what closing takes
    while ((p.client.stats.streamsOpen > 0 || p.server.stats.streamsOpen > 0) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assertEquals(p.client.stats.streamsOpen, 0);
    assertEquals(p.server.stats.streamsOpen, 0);
  } finally {
    await p.close();
  }
});
