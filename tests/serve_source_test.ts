/**
 * serve()'s per-source share counts connections per source only while the listener holds at
 * least the share in all (until it holds half of it again): the count must then take in the
 * connections accepted before it began, and start afresh after it stopped.
 */

import { connect as nodeConnect, type Socket } from "node:net";
import { assertEquals } from "./_assert.ts";
import { serve } from "../lib/net/mod.ts";
import { listenLocal, until, within } from "./_util.ts";

/** A connection from `localAddress`, and whether the server served it (its byte) or closed it. */
async function open(port: number, localAddress: string): Promise<{ s: Socket; served: boolean }> {
  const s = await within(
    new Promise<Socket>((resolve, reject) => {
      const s = nodeConnect({ host: "127.0.0.1", port, localAddress }, () => resolve(s));
      s.once("error", reject);
    }),
    `a connection from ${localAddress}`,
  );
  s.on("error", () => {}); // a refused one may be reset: told apart by its missing byte
  const served = await within(
    new Promise<boolean>((resolve) => {
      s.once("data", () => resolve(true));
      s.once("close", () => resolve(false));
      s.once("end", () => resolve(false));
    }),
    `the server's byte or close to ${localAddress}`,
  );
  return { s, served };
}

Deno.test("serve: the per-source count starts with the connections already held and restarts clean", async () => {
  const server = serve(listenLocal(), async (conn) => {
    await conn.write(Uint8Array.of(42));
    await conn.read(new Uint8Array(1)); // hold until the client leaves
  }, { maxConns: 8, maxConnsPerSource: 2, shedIdleMs: Infinity }); // refusal, never shedding
  const port = server.addr.port;
  const held: Socket[] = [];
  const served = async (from: string, expected: boolean, what: string) => {
    const { s, served } = await open(port, from);
    if (served) held.push(s);
    else s.destroy();
    assertEquals(served, expected, what);
    return s;
  };
  const leave = async (s: Socket, active: number) => {
    s.destroy();
    await until(`the server to hold ${active}`, () => server.stats.active === active);
  };
  try {
    const a1 = await served("127.0.0.1", true, "A's first (1 held: nothing counted)");
    const b1 = await served("127.0.0.2", true, "B's first (1 held)");
    // 2 held: counting begins, with A's and B's first.
    await served("127.0.0.1", true, "A's second");
    await served("127.0.0.1", false, "A's third: over A's share of 2");
    assertEquals(server.stats.rejected, 1);
    // Down to 1 held (half the share): counting stops; A's second is still there.
    await leave(b1, 2);
    await leave(a1, 1);
    await served("127.0.0.2", true, "B's first again (1 held: nothing counted)");
    // 2 held: counting begins afresh (A 1, B 1), not on top of the count before.
    await served("127.0.0.1", true, "A's second again");
    await served("127.0.0.1", false, "A's third again");
    assertEquals(server.stats.rejected, 2);
  } finally {
    for (const s of held) s.destroy();
    await server.stop(500);
  }
});
