/**
 * A tapped relay (the tunnel client's inspector) keeps the mux stream's fast paths that
 * `relay()` uses: one write per frame (`writeFramed`) and lent reads (`readView`), and the
 * tap still sees every byte: multi-MiB transfers both ways with half-close arrive byte-exact
 * (SHA-256), and what each tap saw is exactly what went its way.
 */

import { assert, assertEquals } from "./_assert.ts";
import { muxPair, tcpPair } from "./_mux.ts";
import { createHash } from "node:crypto";
import { blockStream, blockStreamSha256, drainHash, sendBlocks } from "./_util.ts";
import type { Stream } from "../lib/mux/mod.ts";
import { framedWriter, relay, TappedDuplex, viewReader, withPrefix } from "../lib/net/mod.ts";

const MiB = 1 << 20;

/** What a tap saw: bytes and SHA-256 (each piece copied at once, as an observer must). */
function tapHash() {
  const h = createHash("sha256");
  const seen = {
    bytes: 0,
    see(p: Uint8Array): void {
      seen.bytes += p.length;
      h.update(p.slice());
    },
  };
  return { seen, digest: () => h.digest("hex") };
}

/** Counts the calls of `s`'s read paths and write paths while it relays. */
function spy(s: Stream) {
  const calls = { read: 0, readView: 0, write: 0, writeFramed: 0 };
  const { read, readView, write, writeFramed } = s;
  s.read = (p) => (calls.read++, read.call(s, p));
  s.readView = () => (calls.readView++, readView.call(s));
  s.write = (p) => (calls.write++, write.call(s, p));
  s.writeFramed = (p) => (calls.writeFramed++, writeFramed.call(s, p));
  return calls;
}

Deno.test("tapped relay: writeFramed and readView pass through the tap, every byte seen", async () => {
  const p = await muxPair({ maxFrameBytes: 50_000 });
  const [user, local] = await tcpPair();
  try {
    const s = await p.client.open();
    const t = (await p.server.accept())!;
    const calls = spy(s);
    const up = tapHash();
    const down = tapHash();
    // As tunnel-client relays a watched request: the stream (behind the bytes a handshake
    // read past its end) on one side, the local app's connection on the other.
    const prefix = new TextEncoder().encode("GET / HTTP/1.1\r\n");
    const a = new TappedDuplex(withPrefix(s, prefix), up.seen.see);
    const b = new TappedDuplex(local, down.seen.see);
    assertEquals(framedWriter(a)?.headroomBytes, 12);
    assert(viewReader(a) !== null);
    assertEquals(framedWriter(b), null, "a TCP connection has neither path");
    assertEquals(viewReader(b), null);
    const relaying = relay(a, b);
    const upBytes = 8 * MiB + 17;
    const downBytes = 6 * MiB + 5;
    const [atUser, atPeer] = await Promise.all([
      drainHash(user),
      drainHash(t),
      sendBlocks(t, upBytes, 3).then(() => t.closeWrite()),
      sendBlocks(user, downBytes, 4).then(() => user.closeWrite()),
    ]);
    const head = createHash("sha256").update(prefix);
    for (const c of blockStream(upBytes, 3)) head.update(c);
    const upSha = head.digest("hex");
    assertEquals(atUser.bytes, prefix.length + upBytes);
    assertEquals(atUser.sha256, upSha);
    assertEquals(atPeer.bytes, downBytes);
    assertEquals(atPeer.sha256, blockStreamSha256(downBytes, 4));
    const r = await relaying;
    assertEquals(r.end, "done");
    assertEquals([r.aToB, r.bToA], [prefix.length + upBytes, downBytes]);
    assertEquals(up.seen.bytes, prefix.length + upBytes, "the up tap saw every byte once");
    assertEquals(up.digest(), upSha);
    assertEquals(down.seen.bytes, downBytes, "the down tap saw every byte once");
    assertEquals(down.digest(), blockStreamSha256(downBytes, 4));
    // The fast paths were taken, and only they: no buffer read, no header written alone.
    assert(calls.readView > 0, `readView taken (${JSON.stringify(calls)})`);
    assert(calls.writeFramed > 0, `writeFramed taken (${JSON.stringify(calls)})`);
    assertEquals([calls.read, calls.write], [0, 0], JSON.stringify(calls));
    t.close();
  } finally {
    user.close();
    await p.close();
  }
});
