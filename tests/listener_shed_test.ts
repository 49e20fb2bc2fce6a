/**
 * A full serve() listener sheds its longest-idle connection for a newcomer instead of refusing
 * everybody until the idle timeout (issue 16: it was seaprox's table only). Checked on
 * depot-server's SOCKS listener with real relays, and on a bare serve() for the per-source
 * share and for "nothing idle enough: refused".
 */
import { assert, assertEquals } from "./_assert.ts";
import { socksDial, startDepot, startTarget } from "./_depot.ts";
import { dial, type Duplex, serve, writeAll } from "../lib/net/mod.ts";
import { listenLocal, readWithin, TimedOutError } from "./_util.ts";

const enc = new TextEncoder();
const shedIdleMs = 300;
/**
 * The per-source test's idle bound: from the touch of the first connection to the refused
 * dial, both of the source's connections must stay fresh, so a stall of the box that long
 * would have the test shed where it expects a refusal (at 300 ms, a loaded box could).
 */
const freshMs = 3_000;

/** Send `text` through an echo relay and read it back. */
async function echo(c: Duplex, text: string): Promise<string> {
  await writeAll(c, enc.encode(text));
  const buf = new Uint8Array(text.length);
  let got = 0;
  while (got < buf.length) {
    const n = await readWithin(c, buf.subarray(got), `the echo of ${JSON.stringify(text)}`, got);
    if (n === null) throw new Error(`EOF after ${got} bytes`);
    got += n;
  }
  return new TextDecoder().decode(buf);
}

/** Whether `c` was ended by the far side (EOF or reset) rather than still answering. */
async function ended(c: Duplex): Promise<boolean> {
  try {
    return (await readWithin(c, new Uint8Array(1), "the relay's end")) === null;
  } catch (err) {
    if (err instanceof TimedOutError) throw err;
    return true; // a reset is an end too
  }
}

Deno.test("shed: depot-server's full SOCKS listener sheds the longest-idle relay for a newcomer", async () => {
  const target = startTarget();
  // One mux tunnel connection carries every relay: only the SOCKS listener fills up.
  const depot = await startDepot({ server: { maxConns: 4, shedIdleMs }, locals: [{ mux: true }] });
  const dest = { host: "127.0.0.1", port: target.port };
  const conns: Duplex[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const c = await socksDial(depot.socksPort, dest);
      conns.push(c);
      await writeAll(c, enc.encode("E")); // the target's echo mode
      assertEquals(await echo(c, `hello ${i}`), `hello ${i}`);
    }
    // All four idle past shedIdleMs; then three of them move bytes again: the second one is
    // the longest idle, whatever the clock did meanwhile.
    await new Promise((r) => setTimeout(r, shedIdleMs + 100));
    for (const i of [0, 2, 3]) assertEquals(await echo(conns[i], "again"), "again");
    const newcomer = await socksDial(depot.socksPort, dest); // refused (EOF) before the fix
    conns.push(newcomer);
    await writeAll(newcomer, enc.encode("E"));
    assertEquals(await echo(newcomer, "new"), "new");
    assert(await ended(conns[1]), "the longest-idle relay was closed");
    for (const i of [0, 2, 3]) assertEquals(await echo(conns[i], "still"), "still");
  } finally {
    for (const c of conns) c.close();
    await depot.close();
    await target.close();
  }
});

Deno.test("shed: at its per-source share a source sheds its own longest-idle; nothing idle enough is refused", async () => {
  const server = serve(listenLocal(), async (conn, ctx) => {
    ctx.handshakeDone();
    const buf = new Uint8Array(64);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      await writeAll(conn, buf.subarray(0, n));
    }
  }, { maxConns: 8, maxConnsPerSource: 2, shedIdleMs: freshMs });
  const port = server.addr.port;
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      conns.push(await dial("127.0.0.1", port));
      assertEquals(await echo(conns[i], "hi"), "hi");
    }
    await new Promise((r) => setTimeout(r, freshMs + 100));
    assertEquals(await echo(conns[0], "touch"), "touch"); // the second is now the longest idle
    conns.push(await dial("127.0.0.1", port));
    assertEquals(await echo(conns[2], "in"), "in");
    assert(await ended(conns[1]), "the source's longest-idle connection was closed");
    assertEquals(server.stats.shed, 1);
    // Both of the source's places are now fresh: the next one is refused, nothing is shed.
    const refused = await dial("127.0.0.1", port);
    conns.push(refused);
    assert(await ended(refused), "refused at the share");
    assertEquals(await echo(conns[0], "kept"), "kept");
    assertEquals(server.stats.shed, 1);
    assertEquals(server.stats.rejected, 1);
  } finally {
    for (const c of conns) c.close();
    await server.stop();
  }
});
