import { assert, assertEquals } from "./_assert.ts";
import { socksDial, startDepot, startTarget } from "./_depot.ts";
import { blockStreamSha256, drainHash, readAll, sendBlocks } from "./_util.ts";
import { writeAll } from "../lib/net/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const bigBytes = 256 * 1024 * 1024;

for (const mux of [false, true]) {
  const label = mux ? " --mux" : "";
  Deno.test(`depot${label}: 256 MiB upload and download keep their SHA-256`, async () => {
    const target = startTarget();
    const depot = await startDepot({ locals: [{ mux }] });
    const dest = { host: "127.0.0.1", port: target.port };
    try {
      // Upload: send, half-close, and still read the target's answer (half-close kept).
      const up = await socksDial(depot.socksPort, dest);
      await writeAll(up, enc.encode("U"));
      await sendBlocks(up, bigBytes, 1);
      await up.closeWrite();
      const answer = dec.decode(await readAll(up)).trim();
      up.close();
      assertEquals(answer, `${bigBytes} ${blockStreamSha256(bigBytes, 1)}`);

      const down = await socksDial(depot.socksPort, dest);
      await writeAll(down, enc.encode(`D${bigBytes}\n`));
      const got = await drainHash(down);
      down.close();
      assertEquals(got, { bytes: bigBytes, sha256: blockStreamSha256(bigBytes, 0) });
      const st = depot.server.status();
      assert(st.bytesUp >= bigBytes && st.bytesDown >= bigBytes, JSON.stringify(st));
    } finally {
      await depot.close();
      await target.close();
    }
  });

  Deno.test(`depot${label}: half-close in both directions through the tunnel`, async () => {
    const target = startTarget();
    const depot = await startDepot({ locals: [{ mux }] });
    try {
      assertEquals(depot.locals[0].status().transport, mux ? "mux" : "tcp");
      const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
      await writeAll(c, enc.encode("Ehello "));
      await writeAll(c, enc.encode("world"));
      await c.closeWrite(); // our FIN reaches the target; its echo and its FIN come back
      assertEquals(dec.decode(await readAll(c)), "hello world");
      c.close();
    } finally {
      await depot.close();
      await target.close();
    }
  });

  Deno.test(`depot${label}: 200 concurrent connections each carry their own bytes`, async () => {
    const target = startTarget();
    const depot = await startDepot({ locals: [{ mux }] });
    try {
      const results = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
          const size = 1000 + i * 997;
          await writeAll(c, enc.encode("U"));
          await sendBlocks(c, size, i);
          await c.closeWrite();
          const answer = dec.decode(await readAll(c)).trim();
          c.close();
          return answer === `${size} ${blockStreamSha256(size, i)}`;
        }),
      );
      assertEquals(results.filter((ok) => !ok).length, 0);
      assertEquals(depot.server.status().total, 200);
    } finally {
      await depot.close();
      await target.close();
    }
  });
}
