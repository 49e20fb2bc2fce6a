/**
 * The front's write gathering onto a tunnel stream: pieces queued and flushed at once while the
 * mux stream takes them (`addNow`, `flushNow`: no promise), and, once its send window is used up
 * (the app reads nothing), a flush that cannot go at once leaves every byte queued for `flush()`:
 * all arrive, in order, counted once as the host's bytes in.
 */

import { assert, assertEquals } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { within } from "./_util.ts";
import { WriteCoalescer } from "../lib/tunnel/coalescer.ts";
import { type HostStats, TunnelStream } from "../lib/tunnel/mod.ts";

const pieceBytes = 10_000;

Deno.test("tunnel coalescer: immediate flushes while the window lasts, then a waiting flush loses and reorders nothing", async () => {
  const p = await muxPair();
  try {
    const s = await p.client.open();
    const t = (await p.server.accept())!;
    const stats: HostStats = { requests: 0, bytesIn: 0, bytesOut: 0, openStreams: 0, errors: 0 };
    const ts = new TunnelStream(s, "r1", "h", stats);
    const out = new WriteCoalescer();
    out.target = ts.out;
    let pieces = 0;
    let immediate = 0;
    // Piece k is k's low byte repeated: the reader checks order byte by byte.
    const piece = (k: number) => new Uint8Array(pieceBytes).fill(k & 0xff);
    while (true) {
      assert(out.addNow(piece(pieces)), "a small piece is queued without a promise");
      pieces++;
      if (!out.flushNow()) break;
      immediate++;
      assert(!out.pending, "an immediate flush gives the buffer back");
      assert(pieces < 1000, "the send window never ran out");
    }
    assert(immediate > 0, "the first flushes went at once");
    assert(out.pending, "a flush that could not go keeps the bytes queued");
    assertEquals(stats.bytesIn, immediate * pieceBytes, "only what went is counted");
    const flushed = out.flush();
    const total = pieces * pieceBytes;
    const got = new Uint8Array(total);
    await within(
      (async () => {
        for (let n = 0; n < total;) {
          const r = await t.read(got.subarray(n));
          assert(r !== null, "the stream ended early");
          n += r;
        }
      })(),
      `all ${total} gathered bytes at the app`,
    );
    await within(flushed, "the waiting flush");
    for (let k = 0; k < pieces; k++) {
      assertEquals(got[k * pieceBytes], k & 0xff, `piece ${k} in its place`);
      assertEquals(got[(k + 1) * pieceBytes - 1], k & 0xff, `piece ${k} whole`);
    }
    assertEquals(stats.bytesIn, total);
    assert(!out.pending);
    t.close();
    ts.release();
  } finally {
    await p.close();
  }
});
