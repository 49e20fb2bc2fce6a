/**
 * depot-server's status page in a cluster (issue 19): any instance shows the live instances
 * (each with the number of exits it holds) and the exits the other instances hold, by holder;
 * with Redis down it says the tables are as last read. A real redis-server.
 */

import { assertEquals } from "./_assert.ts";
import { DepotCluster } from "../lib/cluster/mod.ts";
import { depotStatusProvider } from "../lib/status/mod.ts";
import { startDepot } from "./_depot.ts";
import { startRedis } from "./_redis.ts";
import { until } from "./_util.ts";

Deno.test("depot cluster view: the status page of either instance shows the instances and who holds which exit", async () => {
  const redis = await startRedis();
  const a = await startDepot({ locals: [{ name: "north" }, { name: "south" }] });
  const b = await startDepot({ locals: [] });
  // Leases last 3 heartbeats: at 50 ms a 150 ms stall of a loaded box let one of a's exit
  // leases lapse between two of a's beats, and b saw a holding 1 exit, not 2. A second (3 s
  // leases) keeps the test about the view, not about the box's speed.
  const opts = { url: redis.url, token: "view-test-token-0001", heartbeatMs: 1_000 };
  const ca = await DepotCluster.connect(a.server, { ...opts, instance: "a", advertise: "h:1" });
  const cb = await DepotCluster.connect(b.server, { ...opts, instance: "b", advertise: "h:2" });
  try {
    await until("b sees a's exits", () => cb.view().exitsElsewhere.length === 2);
    await until("a sees b", () => ca.view().instances.length === 2);
    const tables = async (c: DepotCluster, server: typeof a.server) => {
      const snap = await depotStatusProvider(() => server.status(), () => c.view())();
      return new Map(snap.tables!.map((t) => [t.title, t]));
    };
    const tb = await tables(cb, b.server);
    assertEquals(tb.get("instances")!.rows.map((r) => [r[0], r[1], r[3], r[4]]), [
      ["a", "h:1", 2, false],
      ["b", "h:2", 0, true],
    ]);
    assertEquals(tb.get("exits elsewhere")!.rows, [["north", "a"], ["south", "a"]]);
    assertEquals(tb.get("exits")!.rows, []);
    assertEquals(tb.has("registry"), false);
    const ta = await tables(ca, a.server);
    assertEquals(ta.get("instances")!.rows.map((r) => [r[0], r[3], r[4]]), [
      ["a", 2, true],
      ["b", 0, false],
    ]);
    assertEquals(ta.get("exits elsewhere")!.rows, []);
    assertEquals(ta.get("exits")!.rows.map((r) => r[0]).sort(), ["north", "south"]);
    // Without a cluster: the tables of one instance only.
    const alone = await depotStatusProvider(() => a.server.status())();
    assertEquals(alone.tables!.some((t) => t.title === "instances"), false);

    // Redis down: b says so and keeps what it read last.
    await redis.down();
    await until("b notices", () => !cb.view().registryUp);
    const down = await tables(cb, b.server);
    assertEquals(down.get("registry")!.rows.length, 1);
    assertEquals(down.get("exits elsewhere")!.rows, [["north", "a"], ["south", "a"]]);
    await redis.up();
    await until("back", () => ca.view().registryUp && cb.view().registryUp);
  } finally {
    await ca.close();
    await cb.close();
    await a.close();
    await b.close();
    await redis.stop();
  }
});
