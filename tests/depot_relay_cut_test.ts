/**
 * depot-server ends an exit's relays when the exit's control connection ends, although their
 * tunnel connections are still open (README "Exits, auth, liveness"): each relay's controller
 * is aborted by the exit's one listener on the control connection. Driven by hand on the
 * local's side; every wait is bounded and names what it waited for.
 */
import type { Duplex } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { endOf, fakeLocal, relayedPair, startDepot } from "./_depot.ts";
import { until, within } from "./_util.ts";

Deno.test("depot server: the end of an exit's control connection cuts its relays, tunnels still open", async () => {
  // A long heartbeat: the hand-driven local answers no ping while the test runs.
  const depot = await startDepot({ locals: [], server: { heartbeatMs: 60_000 } });
  const ctl = await fakeLocal(depot.controlPort);
  const opened: { client: Duplex; tunnel: Deno.TcpConn }[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      // Relaying both ways.
      opened.push(await relayedPair(depot.socksPort, ctl, depot.tunnelPort, i));
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
