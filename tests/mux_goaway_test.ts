import { MuxError } from "../lib/mux/mod.ts";
import { Flag, type FrameHeader, FrameType, GoAwayCode } from "../lib/mux/frame.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { muxPair, rawPair, type RawPeer } from "./_mux.ts";
import {
  acceptWithin,
  blockStreamSha256,
  drainHash,
  readWithin,
  sendBlocks,
  until,
  within,
} from "./_util.ts";

Deno.test("goaway: close('normal') refuses new streams but lets open ones finish", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    const s = await acceptWithin(p.server, "the stream the peer opened");
    const closing = p.server.close("normal");
    await p.client.ping(); // the reply comes after the go away: the client has seen it
    // The client learned of the go away: new opens fail with a typed error.
    const err = await assertRejects(p.client.open());
    assert(err instanceof MuxError && err.reason === "goaway", String(err));
    // The open stream still carries data both ways until both FINs.
    const [got] = await Promise.all([
      drainHash(s),
      sendBlocks(c, 4 << 20, 2).then(() => c.closeWrite()),
    ]);
    assertEquals(got.sha256, blockStreamSha256(4 << 20, 2));
    await s.closeWrite();
    assertEquals(await readWithin(c, new Uint8Array(1), "the acceptor's FIN"), null);
    await closing;
    assertEquals((await p.server.closed).reason, "local-close");
    assertEquals((await p.client.closed).reason, "remote-goaway");
    assertEquals(await p.server.accept(), null, "accept() returns null once closed");
  } finally {
    await p.close();
  }
});

Deno.test("goaway: close('protocol-error') ends at once; the peer's streams fail", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    await p.server.accept();
    const reading = c.read(new Uint8Array(10));
    await p.server.close("protocol-error");
    const err = await assertRejects(within(reading, "the pending read to end at the GOAWAY"));
    assert(err instanceof MuxError && err.reason === "session-closed", String(err));
    const end = await p.client.closed;
    assertEquals(end.reason, "remote-goaway");
    assertEquals((await p.server.closed).reason, "protocol-error");
    const e2 = await assertRejects(p.client.open());
    assert(e2 instanceof MuxError && e2.reason === "session-closed");
  } finally {
    await p.close();
  }
});

Deno.test("goaway: async iteration over accepted streams ends when the session closes", async () => {
  const p = await muxPair();
  try {
    const seen: number[] = [];
    const loop = (async () => {
      for await (const s of p.server) {
        seen.push(s.id);
        s.close();
      }
    })();
    for (let i = 0; i < 3; i++) (await p.client.open()).close();
    await until("the server to accept the 3 streams", () => seen.length === 3);
    await p.client.close();
    await loop;
    assertEquals(seen, [1, 3, 5]);
  } finally {
    await p.close();
  }
});

Deno.test("goaway: a draining close('normal') can be escalated to an immediate close", async () => {
  const p = await muxPair({ drainTimeoutMs: 60_000 });
  try {
    const c = await p.client.open();
    await p.server.accept();
    const draining = p.client.close("normal"); // would wait for c for a minute
    await new Promise((r) => setTimeout(r, 20));
    await p.client.close("internal-error");
    await draining;
    assertEquals((await p.client.closed).reason, "internal-error");
    const err = await assertRejects(c.write(new Uint8Array(1)));
    assert(err instanceof MuxError && err.reason === "session-closed", String(err));
  } finally {
    await p.close();
  }
});

/** Frames a raw peer reads until the warren side closes the connection. */
async function framesToEof(peer: RawPeer): Promise<FrameHeader[]> {
  const seen: FrameHeader[] = [];
  await within(
    (async () => {
      for (let f = await peer.next(); f !== null; f = await peer.next()) seen.push(f);
    })(),
    "the session to close the connection",
  );
  return seen;
}

Deno.test("goaway: close('normal') with no stream open writes go away before the connection closes", async () => {
  // Fails on the old code: close() set the session shut before its writer ran, and the writer
  // dropped the queued go away; the peer saw only EOF.
  const { session, peer } = await rawPair("client");
  try {
    await session.close();
    assertEquals((await session.closed).reason, "local-close");
    const frames = await framesToEof(peer);
    assertEquals(frames.map((f) => [f.type, f.length]), [[FrameType.goAway, GoAwayCode.normal]]);
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("goaway: a session peer sees remote-goaway, not eof, after close('normal') with no stream open", async () => {
  const p = await muxPair();
  try {
    for (let i = 0; i < 3; i++) {
      const c = await p.client.open({ data: new Uint8Array([i]), fin: true });
      const s = await acceptWithin(p.server, "the stream the client opened");
      await s.closeWrite();
      assertEquals(await readWithin(c, new Uint8Array(1), "the server's FIN"), null);
      s.close();
      c.close();
    }
    await until(
      "both sides to free the streams",
      () => p.client.stats.streamsOpen === 0 && p.server.stats.streamsOpen === 0,
    );
    await p.client.close();
    assertEquals((await within(p.server.closed, "the server's end")).reason, "remote-goaway");
  } finally {
    await p.close();
  }
});

Deno.test("goaway: a stream reset as the drain ends still reaches the peer before the connection closes", async () => {
  // The reset frees the last stream, which ends the drain at once: its RST must not be dropped.
  const { session, peer } = await rawPair("client");
  try {
    const c = await session.open();
    assertEquals((await peer.next())?.flags, Flag.syn);
    await peer.frame(FrameType.windowUpdate, Flag.ack, c.id, 0);
    await until("the ACK to be in", () => session.stats.framesIn === 1);
    const closing = session.close();
    c.reset();
    await closing;
    const frames = await framesToEof(peer);
    // Either order: the RST is encoded into the batch ahead of the queued go away.
    assertEquals(frames.map((f) => [f.type, f.flags, f.streamId]).sort(), [
      [FrameType.windowUpdate, Flag.rst, c.id],
      [FrameType.goAway, 0, 0],
    ]);
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("goaway: close('normal') ends within its bounds when the peer stops reading with our writes queued", async () => {
  const { session, peer } = await rawPair("server", { drainTimeoutMs: 100 });
  try {
    // A stream with 4 GiB of credit and a writer far ahead of a peer that never reads.
    await peer.frame(FrameType.windowUpdate, Flag.syn, 1, 0xffff_ffff);
    const s = await acceptWithin(session, "the raw peer's stream");
    const writing = (async () => {
      // 64 KiB writes: with TCP_NOTSENT_LOWAT the kernel takes only what the peer's receive
      // buffer holds and 64 KiB more, which a whole 256 KiB frame may not fit in.
      const chunk = new Uint8Array(64 * 1024);
      for (let i = 0; i < 4096; i++) await s.write(chunk);
    })().then(() => "written", (e) => e instanceof MuxError ? e.reason : String(e));
    // 256 MiB cannot all fit in the socket buffers: the writer's queue stays full from here.
    await until("the first 64 KiB to leave", () => session.stats.bytesOut >= 64 * 1024);
    // drainTimeoutMs, then at most the go away's flush bound: never waits on the peer.
    await within(session.close(), "close() with a peer that does not read", 30_000);
    assertEquals((await session.closed).reason, "local-close");
    assertEquals(await writing, "session-closed");
  } finally {
    peer.close();
    await session.close();
  }
});
