import { assertEquals } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { blockStreamSha256, drainHash, sendBlocks } from "./_util.ts";

const MiB = 1 << 20;

Deno.test("many streams: 1,000 concurrent streams each move 1 MiB both ways, checksums match", async () => {
  const n = 1000;
  const p = await muxPair({}, { acceptBacklog: n });
  try {
    const expected = new Map<number, string>();
    for (let i = 0; i < 4; i++) expected.set(i, blockStreamSha256(MiB, i));
    const server = (async () => {
      const work: Promise<void>[] = [];
      for (let i = 0; i < n; i++) {
        const s = (await p.server.accept())!;
        work.push((async () => {
          // Echo: everything read is written back, then FIN.
          const buf = new Uint8Array(64 * 1024);
          while (true) {
            const k = await s.read(buf);
            if (k === null) break;
            await s.write(buf.subarray(0, k));
          }
          await s.closeWrite();
          s.close();
        })());
      }
      await Promise.all(work);
    })();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, async (_, i) => {
      const s = await p.client.open();
      const [back] = await Promise.all([
        drainHash(s),
        sendBlocks(s, MiB, i % 4).then(() => s.closeWrite()),
      ]);
      assertEquals(back.sha256, expected.get(i % 4), `stream ${i}`);
      s.close();
    }));
    await server;
    const ms = performance.now() - t0;
    console.log(
      `1,000 x 1 MiB echoed in ${ms.toFixed(0)} ms (${
        (2 * n / (ms / 1000)).toFixed(0)
      } MiB/s both ways)`,
    );
    assertEquals(p.client.stats.streamsTotal, n);
  } finally {
    await p.close();
  }
});
