/**
 * `writerFlushFrames`: a turn that keeps queueing frames leaves in several transport writes
 * once that many more frames came after the one that woke the writer, instead of one write at
 * the turn's end (the tunnel sets it: bench/RESULTS.md twave); unset, the turn's frames still
 * leave together. Counted in transport writes of frames queued one per microtask: no clock.
 */

import { assert, assertEquals } from "./_assert.ts";
import { tcpPair } from "./_mux.ts";
import { within } from "./_util.ts";
import { Session, type SessionOptions } from "../lib/mux/mod.ts";
import type { Duplex } from "../lib/net/mod.ts";

/** A transport counting the writes asked of it. */
class CountingConn implements Duplex {
  writes = 0;
  constructor(readonly inner: Deno.TcpConn) {}
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    this.writes++;
    return this.inner.write(p);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

/**
 * One-byte writes on eight open streams, one per microtask (a turn that keeps queueing
 * frames): the transport writes they took, and the byte each peer stream read.
 */
async function eightInOneTurn(opts: SessionOptions): Promise<{ writes: number; got: number[] }> {
  const [a, b] = await tcpPair();
  const counted = new CountingConn(a);
  const client = Session.client(counted, opts);
  const server = Session.server(b, { keepaliveIntervalMs: 0, drainTimeoutMs: 0 });
  try {
    const streams = [], peers = [];
    for (let i = 0; i < 8; i++) {
      const s = await client.open();
      await within(s.write(new Uint8Array([100 + i])), "a stream's first byte");
      const peer = await within(server.accept(), "the accepted stream");
      assert(peer, "a stream");
      streams.push(s);
      peers.push(peer);
    }
    const buf = new Uint8Array(16);
    for (const p of peers) await within(p.read(buf), "a stream's first byte read");
    await new Promise((r) => setTimeout(r, 0)); // the writer is idle again
    const before = counted.writes;
    const queued: Promise<number>[] = [];
    for (let i = 0; i < 8; i++) {
      queued.push(streams[i].write(new Uint8Array([i])));
      await null;
    }
    await within(Promise.all(queued), "the eight writes");
    await new Promise((r) => setTimeout(r, 0)); // all written
    const writes = counted.writes - before;
    const got: number[] = [];
    for (const p of peers) {
      const n = await within(p.read(buf), "a stream's second byte");
      got.push(...buf.subarray(0, n ?? 0));
    }
    return { writes, got };
  } finally {
    await Promise.all([client.close(), server.close()]);
  }
}

const bytes = [0, 1, 2, 3, 4, 5, 6, 7];

Deno.test("mux writer: writerFlushFrames 2 writes a busy turn's frames in pieces, in order", async () => {
  const opts: SessionOptions = { keepaliveIntervalMs: 0, drainTimeoutMs: 0, writerFlushFrames: 2 };
  const { writes, got } = await eightInOneTurn(opts);
  assertEquals(got, bytes);
  // The first write once two frames came after the first: 3 frames a write, so 3 writes for
  // 8 (or one more where a write's await let the turn's next frame start a new batch).
  assert(writes >= 3, `8 frames one per microtask took ${writes} transport writes`);
});

Deno.test("mux writer: unset, a busy turn's frames leave in one write", async () => {
  const { writes, got } = await eightInOneTurn({ keepaliveIntervalMs: 0, drainTimeoutMs: 0 });
  assertEquals(got, bytes);
  assertEquals(writes, 1);
});
