/**
 * A tunnel stream's counted body keeps the mux stream's fast paths (`writeFramed`,
 * `readView`) that `relay()` uses, and still counts every byte exactly: multi-MiB transfers
 * both ways with half-close arrive byte-exact (SHA-256) and the host's counters match; the
 * front's opaque copy (`readView`) gets the bytes read ahead with the reply first.
 */

import { assert, assertEquals } from "./_assert.ts";
import { muxPair, tcpPair } from "./_mux.ts";
import { createHash } from "node:crypto";
import { blockStream, blockStreamSha256, drainHash, sendBlocks, within } from "./_util.ts";
import { framedWriter, relay, viewReader, writeAll } from "../lib/net/mod.ts";
import { encodeMessage, type HostStats, TunnelStream } from "../lib/tunnel/mod.ts";

const MiB = 1 << 20;

Deno.test("tunnel stream: counted body passes writeFramed and readView through, counts exact", async () => {
  const p = await muxPair({ maxFrameBytes: 50_000 });
  const [user, front] = await tcpPair();
  try {
    const s = await p.client.open();
    const t = (await p.server.accept())!;
    const stats: HostStats = { requests: 0, bytesIn: 0, bytesOut: 0, openStreams: 0, errors: 0 };
    const ts = new TunnelStream(s, "r1", "h", stats);
    const body = ts.body();
    assertEquals(framedWriter(body)?.headroomBytes, 12);
    assert(viewReader(body) !== null);
    assertEquals(framedWriter(ts.out)?.headroomBytes, 12);
    const relaying = relay(front, body);
    const down = 8 * MiB + 17;
    const up = 6 * MiB + 5;
    const [got, sent] = await within(
      Promise.all([
        drainHash(user),
        drainHash(t),
        sendBlocks(t, down, 3).then(() => t.closeWrite()),
        sendBlocks(user, up, 4).then(() => user.closeWrite()),
      ]),
      "8 MiB down and 6 MiB up through the tunnel stream, each to its FIN",
    );
    assertEquals(got.bytes, down);
    assertEquals(got.sha256, blockStreamSha256(down, 3));
    assertEquals(sent.bytes, up);
    assertEquals(sent.sha256, blockStreamSha256(up, 4));
    assertEquals((await within(relaying, "the relay's end")).end, "done");
    assertEquals(stats.bytesIn, up, "public side → client");
    assertEquals(stats.bytesOut, down, "client → public side");
    t.close();
    ts.release();
  } finally {
    user.close();
    await p.close();
  }
});

Deno.test("tunnel stream: readView lends the bytes read ahead with the reply first, then the stream's, counted at release", async () => {
  const p = await muxPair({ maxFrameBytes: 50_000 });
  try {
    const s = await p.client.open();
    const t = (await p.server.accept())!;
    const stats: HostStats = { requests: 0, bytesIn: 0, bytesOut: 0, openStreams: 0, errors: 0 };
    const ts = new TunnelStream(s, "r1", "h", stats);
    const down = 3 * MiB + 11;
    const blocks = blockStream(down, 5);
    const first = blocks.next().value!;
    // The reply and the first response bytes in one write: the reply reader reads past it.
    const reply = encodeMessage({ type: "streamReply", requestId: "r1", ok: true });
    const sending = (async () => {
      await writeAll(t, concat(reply, first.subarray(0, 100)));
      await writeAll(t, first.subarray(100));
      for (const b of blocks) await writeAll(t, b);
      await t.closeWrite();
    })();
    await within(ts.reply(10_000), "the stream reply");
    assert(ts.reader.buffered > 0, "response bytes were read ahead with the reply");
    const h = createHash("sha256");
    let bytes = 0;
    await within(
      (async () => {
        for (let v = await ts.readView(); v !== null; v = await ts.readView()) {
          h.update(v);
          bytes += v.length;
          assertEquals(stats.bytesOut, bytes - v.length, "counted once released");
          ts.releaseView(v.length);
        }
      })(),
      "every response byte as views, then the stream's end",
    );
    await within(sending, "the sender's FIN");
    assertEquals(bytes, down);
    assertEquals(h.digest("hex"), blockStreamSha256(down, 5));
    assertEquals(stats.bytesOut, down);
    t.close();
    ts.release();
  } finally {
    await p.close();
  }
});

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
