/**
 * depot-server as a cluster (issue 19): when the control connection of an exit ends, the
 * connections the exit relays for another instance end too, as its own SOCKS clients' do
 * (tests/depot_relay_cut_test), although their tunnels are still open: the holder's relay of
 * a handed-over CONNECT honours the signal `connectHere` returns (aborted when the exit's
 * control connection ends). Before, that relay ignored it, and a SOCKS client of instance B
 * stayed connected to an exit instance A no longer had. A real redis-server; the exit is a
 * hand-driven depot-local on A; every wait is bounded and names what it waited for.
 */

import type { Duplex } from "../lib/net/mod.ts";
import { DepotCluster } from "../lib/cluster/mod.ts";
import { assertEquals } from "./_assert.ts";
import { endOf, fakeLocal, relayedPair, startDepot } from "./_depot.ts";
import { startRedis } from "./_redis.ts";
import { listenLocal, until, within } from "./_util.ts";

Deno.test("depot cluster: the end of an exit's control connection cuts the connections it relays for another instance", async () => {
  const redis = await startRedis();
  // Long heartbeats: the hand-driven local answers no ping while the test runs.
  const a = await startDepot({ locals: [], server: { heartbeatMs: 60_000 } });
  const b = await startDepot({ locals: [] });
  const linkPort = listenLocal();
  const opts = { url: redis.url, token: "relay-cut-token-0001", heartbeatMs: 1_000 };
  const ca = await DepotCluster.connect(a.server, {
    ...opts,
    instance: "a",
    advertise: `127.0.0.1:${linkPort.addr.port}`,
  });
  ca.listen(linkPort);
  const cb = await DepotCluster.connect(b.server, { ...opts, instance: "b", advertise: "h:2" });
  const ctl = await fakeLocal(a.controlPort, { name: "far" });
  const opened: { client: Duplex; tunnel: Deno.TcpConn }[] = [];
  try {
    await until("b sees a holding the exit", () => cb.view().exitsElsewhere.length === 1);
    for (let i = 0; i < 2; i++) {
      // Relayed both ways: b → link → a → tunnel, and back.
      opened.push(
        await relayedPair(b.socksPort, ctl, a.tunnelPort, i, {
          auth: { username: "far", password: "x" },
          where: "b",
        }),
      );
    }
    assertEquals(b.server.status().active, 2);
    ctl.close(); // the control connection only: the tunnels stay open on our side
    for (const [i, o] of opened.entries()) {
      // Cut: a reset or a close, never left open.
      const end = await within(endOf(o.client), `the end of b's client ${i}`);
      assertEquals(["eof", "reset"].includes(end), true, end);
      await within(endOf(o.tunnel), `the end of a's tunnel ${i}`);
    }
    await until("no relay left on b", () => b.server.status().active === 0);
  } finally {
    for (const o of opened) {
      o.client.close();
      o.tunnel.close();
    }
    ctl.close();
    await cb.close();
    await ca.close();
    await a.close();
    await b.close();
    await redis.stop();
  }
});
