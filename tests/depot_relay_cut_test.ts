/**
 * depot-server ends an exit's relays when the exit's control connection ends, although their
 * tunnel connections are still open (README "Exits, auth, liveness"): each relay's controller
 * is aborted by the exit's one listener on the control connection. Driven by hand on the
 * local's side; every wait is bounded and names what it waited for.
 */
import { type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { fakeLocal, rawTunnel, socksDial, startDepot } from "./_depot.ts";
import { until, within } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Read `r` until its end: "eof" on a FIN, "reset" when the read fails. */
async function endOf(r: { read(p: Uint8Array): Promise<number | null> }): Promise<string> {
  const buf = new Uint8Array(1024);
  try {
    while ((await r.read(buf)) !== null) continue;
    return "eof";
  } catch {
    return "reset";
  }
}

Deno.test("depot server: the end of an exit's control connection cuts its relays, tunnels still open", async () => {
  // A long heartbeat: the hand-driven local answers no ping while the test runs.
  const depot = await startDepot({ locals: [], server: { heartbeatMs: 60_000 } });
  const ctl = await fakeLocal(depot.controlPort);
  const opened: { client: Duplex; tunnel: Deno.TcpConn }[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const client = socksDial(depot.socksPort, { host: "app.invalid", port: 80 + i });
      const req = await ctl.expect("connect", 30_000);
      const t = await rawTunnel(depot.tunnelPort, req.id, req.key);
      assertEquals(t.answer?.type, "tunnelAccepted");
      const c = await within(client, `SOCKS reply ${i}`);
      opened.push({ client: c, tunnel: t.conn });
      // Relaying both ways.
      await writeAll(c, enc.encode(`up ${i}`));
      const tunnelSide = withPrefix(t.conn, t.reader.takeBuffered());
      const up = new Uint8Array(4);
      assertEquals(await within(tunnelSide.read(up), `bytes up ${i}`), 4);
      assertEquals(dec.decode(up), `up ${i}`);
      await writeAll(t.conn, enc.encode(`down ${i}`));
      const down = new Uint8Array(6);
      assertEquals(await within(c.read(down), `bytes down ${i}`), 6);
      assertEquals(dec.decode(down), `down ${i}`);
    }
    assertEquals(depot.server.status().active, 3);
    ctl.close(); // the control connection only: the tunnels stay open on our side
    for (const [i, o] of opened.entries()) {
      // Cut: a reset (or, without the FFI permission for resets, a close), never left open.
      const end = await within(endOf(o.client), `the end of client ${i}`);
      assertEquals(["eof", "reset"].includes(end), true, end);
      await within(endOf(o.tunnel), `the end of tunnel ${i}`);
    }
    await until("no relay left", () => depot.server.status().active === 0);
  } finally {
    for (const o of opened) {
      o.client.close();
      o.tunnel.close();
    }
    ctl.close();
    await depot.close();
  }
});
