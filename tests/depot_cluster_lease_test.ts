/**
 * depot-server cluster leases (issue 19): an exit name connected to two instances stays with
 * the one it connected to last. Before lib/cluster/lease.ts every heartbeat of each instance
 * rewrote the lease, so its holder flipped between them on every beat (SOCKS clients of a
 * third instance then went to either exit at random). A real redis-server; the writes are
 * watched with MONITOR, so the count does not depend on when the beats fall.
 */

import { assert, assertEquals } from "./_assert.ts";
import { DepotCluster } from "../lib/cluster/mod.ts";
import { startDepot } from "./_depot.ts";
import { startRedis, watchCommands } from "./_redis.ts";

/**
 * Heartbeat of both instances: a lease lasts 3 beats, so only a stall of the test process
 * (both instances live in it) or of Redis longer than 2 beats lets the lease expire, and the
 * other instance then rightly writes it back. 50 ms (150 ms leases) did that on a loaded box.
 */
const heartbeatMs = 500;
/** How many of b's lease writes (its claim, then one refresh per beat) are watched. */
const watchedWrites = 8;

/** The instances that wrote `key`, in order, from a MONITOR connection (plain and Lua SETs). */
async function monitor(port: number, key: string) {
  const watch = await watchCommands(port);
  /** The writers of `key` among the commands seen so far. */
  const writers = () =>
    watch.seen.flatMap(({ args }) => {
      if (args[0] !== "SET" || args[1] !== key) return [];
      const m = /\\"instance\\":\\"([^\\"]+)\\"/.exec(args[2] ?? "");
      return m ? [m[1]] : [];
    });
  return {
    writers,
    /** Resolves once `n` writes were seen (fails after 60 s, naming what it waited for). */
    seen: (n: number) =>
      watch.until(
        `${n} writes of ${key} (seen: ${writers().join(" ") || "none"})`,
        () => writers().length >= n,
      ),
    close: () => watch.close(),
  };
}

Deno.test("depot cluster: an exit connected to two instances keeps one lease holder over many heartbeats", async () => {
  const redis = await startRedis();
  const mon = await monitor(redis.port, "warren:depot:exit:shared");
  const a = await startDepot({ locals: [{ name: "shared" }] });
  const b = await startDepot({ locals: [{ name: "shared" }] });
  const opts = { url: redis.url, token: "lease-test-token-0001", heartbeatMs };
  const ca = await DepotCluster.connect(a.server, {
    ...opts,
    instance: "a",
    advertise: "127.0.0.1:1",
  });
  const cb = await DepotCluster.connect(b.server, {
    ...opts,
    instance: "b",
    advertise: "127.0.0.1:2",
  });
  try {
    // b's claim, then beats of both (the holder refreshes every beat). Counted from b's
    // claim: a beats on its own while b still connects, any number of times on a slow box.
    await mon.seen(1);
    while (!mon.writers().includes("b")) await mon.seen(mon.writers().length + 1);
    await mon.seen(mon.writers().indexOf("b") + watchedWrites);
    const w = mon.writers();
    const changes = w.slice(1).filter((x, i) => x !== w[i]).length;
    // a wrote it first, b took it when it joined; then only b refreshes it.
    assertEquals(w[0], "a");
    assert(changes <= 1, `lease holder changed ${changes} times: ${w.join(" ")}`);
    assertEquals(w.at(-1), "b");
    assertEquals(cb.view().exitsElsewhere, []);
    assertEquals(ca.view().exitsElsewhere, [{ name: "shared", instance: "b" }]);
    // b's exit leaves: b drops its lease and a, still holding one, writes it back.
    const before = mon.writers().length;
    await b.locals[0].stop();
    await mon.seen(before + 1);
    while (mon.writers().at(-1) !== "a") await mon.seen(mon.writers().length + 1);
  } finally {
    await ca.close();
    await cb.close();
    await a.close();
    await b.close();
    await mon.close();
    await redis.stop();
  }
});
