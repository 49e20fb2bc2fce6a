/**
 * A tunnel stream's counted body keeps the mux stream's fast paths (`writeFramed`,
 * `readView`) that `relay()` uses, and still counts every byte exactly: multi-MiB transfers
 * both ways with half-close arrive byte-exact (SHA-256) and the host's counters match.
 */

import { assert, assertEquals } from "./_assert.ts";
import { muxPair, tcpPair } from "./_mux.ts";
import { blockStreamSha256, drainHash, sendBlocks, within } from "./_util.ts";
import { framedWriter, relay, viewReader } from "../lib/net/mod.ts";
import { type HostStats, TunnelStream } from "../lib/tunnel/mod.ts";

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
