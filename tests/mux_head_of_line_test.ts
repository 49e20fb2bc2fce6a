import { defaultWindowBytes } from "../lib/mux/mod.ts";
import { assertEquals } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { acceptWithin, blockStreamSha256, drainHash, sendBlocks, until, within } from "./_util.ts";

const MiB = 1 << 20;

Deno.test("head of line: a stream whose reader stopped does not stall the others", async () => {
  const p = await muxPair();
  try {
    // Stream A: the writer pushes far more than a window, nobody reads on the server.
    const a = await p.client.open();
    const aServer = await acceptWithin(p.server, "the stream the peer opened");
    const aWrite = sendBlocks(a, 16 * MiB, 1).catch((e) => e);
    await until(
      "stream A's window full at its stopped reader",
      () => aServer.bufferedBytes >= defaultWindowBytes,
    );
    // Streams B, C: full transfers in both directions while A is stuck.
    const one = async (seed: number) => {
      const s = await p.client.open();
      const t = await acceptWithin(p.server, "the stream the peer opened");
      const [up, down] = await Promise.all([
        drainHash(t),
        drainHash(s),
        sendBlocks(s, 16 * MiB, seed).then(() => s.closeWrite()),
        sendBlocks(t, 16 * MiB, seed + 1).then(() => t.closeWrite()),
      ]);
      assertEquals(up.sha256, blockStreamSha256(16 * MiB, seed));
      assertEquals(down.sha256, blockStreamSha256(16 * MiB, seed + 1));
      s.close();
      t.close();
    };
    // A stall here is the bug this test is for: bounded, it fails naming it instead of hanging.
    await within(Promise.all([one(10), one(20)]), "streams B and C's transfers while A is stuck");
    // A's receiver holds no more than its window.
    assertEquals(aServer.bufferedBytes <= aServer.windowBytes, true);
    aServer.reset();
    await aWrite;
    a.close();
  } finally {
    await p.close();
  }
});
