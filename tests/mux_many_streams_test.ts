import { Session } from "../lib/mux/mod.ts";
import type { Duplex } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { muxPair, tcpPair } from "./_mux.ts";
import { acceptWithin, blockStreamSha256, drainHash, sendBlocks, within } from "./_util.ts";

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
        const s = await acceptWithin(p.server, "the stream the peer opened");
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
    // Bounded far above a loaded box's time (a stalled stream fails naming the wait).
    await within(
      Promise.all(Array.from({ length: n }, async (_, i) => {
        const s = await p.client.open();
        const [back] = await Promise.all([
          drainHash(s),
          sendBlocks(s, MiB, i % 4).then(() => s.closeWrite()),
        ]);
        assertEquals(back.sha256, expected.get(i % 4), `stream ${i}`);
        s.close();
      })),
      "1,000 streams' echoes",
      240_000,
    );
    await within(server, "the server side's 1,000 echoes to end");
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

Deno.test("many streams: small frames of 200 streams are coalesced into a few transport writes", async () => {
  const [a, b] = await tcpPair();
  let writes = 0;
  const counting: Duplex = {
    read: (p) => a.read(p),
    write: (p) => (writes++, a.write(p)),
    closeWrite: () => a.closeWrite(),
    close: () => a.close(),
  };
  const client = Session.client(counting, { keepaliveIntervalMs: 0 });
  const server = Session.server(b, { keepaliveIntervalMs: 0, acceptBacklog: 200 });
  try {
    const streams = await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) => client.open({ data: new TextEncoder().encode(`request ${i}`), fin: true }),
      ),
    );
    for (let i = 0; i < 200; i++) {
      const s = await acceptWithin(server, "the stream the peer opened");
      s.close();
    }
    console.log(`200 small SYN+data+FIN frames went out in ${writes} transport writes`);
    assert(writes <= 20, `${writes} writes`);
    for (const s of streams) s.close();
  } finally {
    await Promise.all([client.close(), server.close()]);
  }
});
