/**
 * `readView()` of small payloads: a waiting view reader is lent a copy from the session's
 * small-view arena (see Session.lendSmall) instead of a pooled receive buffer. The bytes of a
 * lent view must stay as they were while its reader holds it, however many frames of other
 * streams arrive meanwhile, and every byte must arrive in order exactly once.
 */

import { assertEquals } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { acceptWithin, within } from "./_util.ts";
import type { Stream } from "../lib/mux/mod.ts";

/** A deterministic byte stream for stream `k`: frame sizes on both sides of 4 KiB. */
function plan(k: number): { bytes: Uint8Array; sizes: number[] } {
  let x = 0x9e3779b9 ^ (k * 7919);
  const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const sizes: number[] = [];
  for (let i = 0; i < 300; i++) sizes.push(1 + (next() % (i % 7 === 0 ? 9000 : 600)));
  const bytes = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  for (let i = 0; i < bytes.length; i++) bytes[i] = next() >>> 24;
  return { bytes, sizes };
}

Deno.test("mux small views: a held view keeps its bytes while another stream's are lent", async () => {
  const p = await muxPair();
  try {
    const [a, b] = [await p.client.open(), await p.client.open()];
    await a.write(new Uint8Array([1])); // the SYNs, so the server can accept both
    await b.write(new Uint8Array([2]));
    const ra = await acceptWithin(p.server, "stream a");
    const rb = await acceptWithin(p.server, "stream b");
    assertEquals(await within(ra.readView(), "a's first byte"), new Uint8Array([1]));
    assertEquals(await within(rb.readView(), "b's first byte"), new Uint8Array([2]));
    const pa = plan(0), pb = plan(1);
    let offA = 0, offB = 0;
    for (let i = 0; i < pa.sizes.length; i++) {
      // Each view is asked for before its frame is sent: a reader waits, as in a relay.
      const wantA = pa.bytes.subarray(offA, offA += pa.sizes[i]);
      const wantB = pb.bytes.subarray(offB, offB += pb.sizes[i]);
      const va = ra.readView();
      await a.write(wantA);
      const viewA = await within(va, `a's view ${i}`);
      const vb = rb.readView.call(rb); // a's view is still held
      await b.write(wantB);
      const viewB = await within(vb, `b's view ${i}`);
      assertEquals(viewA, wantA.subarray(0, viewA!.length), `a's view ${i} changed while held`);
      assertEquals(viewB, wantB.subarray(0, viewB!.length), `b's view ${i}`);
      // A large frame may have come in pieces: read the rest of it.
      for (const [s, want, v] of [[ra, wantA, viewA], [rb, wantB, viewB]] as const) {
        let got = v!.length;
        s.releaseView();
        while (got < want.length) {
          const w = await within(s.readView(), "the rest of a frame");
          assertEquals(w, want.subarray(got, got + w!.length));
          got += w!.length;
          s.releaseView();
        }
      }
    }
    for (const s of [a, b, ra, rb]) s.close();
  } finally {
    await p.close();
  }
});

/** Read `s` by views, holding each across a timer turn before checking it; returns the count. */
async function readViews(s: Stream, want: Uint8Array): Promise<number> {
  let pos = 0;
  for (let v = await s.readView(); v !== null; v = await s.readView()) {
    const at = pos;
    pos += v.length;
    // Other streams' frames arrive meanwhile, and are lent from the same arena.
    await new Promise((r) => setTimeout(r, 0));
    assertEquals(v, want.subarray(at, at + v.length), `view at ${at} changed while held`);
    s.releaseView();
  }
  return pos;
}

Deno.test("mux small views: held views keep their bytes while other streams' frames arrive", async () => {
  const p = await muxPair();
  const n = 4;
  const plans = Array.from({ length: n }, (_, k) => plan(k));
  try {
    const sending = plans.map(async ({ bytes, sizes }) => {
      const s = await p.client.open();
      let off = 0;
      for (const size of sizes) {
        await s.write(bytes.subarray(off, off + size)); // one frame each
        off += size;
      }
      await s.closeWrite();
      return s;
    });
    const got: Promise<number>[] = [];
    for (let k = 0; k < n; k++) {
      const s = await acceptWithin(p.server, `stream ${k}`);
      got.push(readViews(s, plans[(s.id - 1) / 2].bytes).finally(() => s.close()));
    }
    const counts = await within(Promise.all(got), "every stream read to its end");
    assertEquals(counts, plans.map((q) => q.bytes.length));
    for (const s of await within(Promise.all(sending), "every stream sent")) s.close();
  } finally {
    await p.close();
  }
});
