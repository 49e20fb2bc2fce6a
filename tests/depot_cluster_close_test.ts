/**
 * A depot cluster instance that is closing runs no more heartbeats. A peer's nudge (`{lost:
 * 1}`: Redis lost its records) that arrived while close() removed the instance's leases queued
 * a beat behind it anyway, and that beat wrote the instance's lease (and its exits') into
 * Redis again while, or after, close() deleted them: another instance would then route to an
 * instance that had left until the leases expired. Redis's writes are paused (CLIENT PAUSE
 * WRITE) while close() runs, so its release is held at its first DEL when the nudge comes; no
 * clock. A real redis-server, watched with MONITOR.
 */

import { DepotCluster, PeerLinks } from "../lib/cluster/mod.ts";
import { encodeFrame } from "../lib/control/mod.ts";
import { Logger } from "../lib/log.ts";
import { assertEquals } from "./_assert.ts";
import { startDepot } from "./_depot.ts";
import { redisCommand, startRedis, watchCommands } from "./_redis.ts";
import { until, within } from "./_util.ts";

const token = "close-nudge-test-token-01";

Deno.test("depot cluster: a nudge that arrives while close() runs starts no heartbeat: nothing is written to Redis after close began", async () => {
  const redis = await startRedis();
  const depot = await startDepot({ locals: [{ name: "far" }] });
  const linkPort = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const lines: string[] = [];
  // Beats every 200 s: none of its own during the test.
  const ca = await DepotCluster.connect(depot.server, {
    url: redis.url,
    token,
    heartbeatMs: 200_000,
    instance: "a",
    advertise: `127.0.0.1:${linkPort.addr.port}`,
    log: new Logger("debug", {}, (l) => void lines.push(l)),
  });
  ca.listen(linkPort);
  const peer = new PeerLinks({ token, from: "peer", onStream: (s) => s.reset() });
  const watch = await watchCommands(redis.port);
  let paused = false;
  let closing: Promise<void> | undefined;
  try {
    await until(
      "a's lease of exit far",
      async () => await redisCommand(redis.port, "EXISTS warren:depot:exit:far") === ":1",
    );
    assertEquals(await redisCommand(redis.port, "CLIENT PAUSE 60000 WRITE"), "+OK");
    paused = true;
    closing = ca.close();
    // Its release reads its exit's lease (a read runs), then waits at the first DEL.
    await watch.until(
      "a's close to read its exit lease",
      (seen) =>
        seen.some((c) =>
          c.args[0]?.toUpperCase() === "GET" && c.args[1] === "warren:depot:exit:far"
        ),
    );
    const link = await peer.link(`127.0.0.1:${linkPort.addr.port}`);
    const s = await link.open({ data: encodeFrame({ lost: 1 }) });
    await s.closeWrite();
    // a ends the stream once it took the nudge (and queued a beat, before).
    assertEquals(await within(s.read(new Uint8Array(16)), "a's end of the nudge stream"), null);
    s.close();
    assertEquals(
      lines.some((l) => l.includes("a peer says the registry lost its records")),
      true,
      lines.join("\n"),
    );
    assertEquals(await redisCommand(redis.port, "CLIENT UNPAUSE"), "+OK");
    paused = false;
    await within(closing, "a's close");
    // Only its release ran (GET, DEL): no beat's write (EVAL, SET) since the watch began.
    const writes = watch.seen.filter((c) => /^(EVAL|EVALSHA|SET)$/i.test(c.args[0] ?? ""));
    assertEquals(writes, []);
    assertEquals(await redisCommand(redis.port, "EXISTS warren:depot:instance:a"), ":0");
    assertEquals(await redisCommand(redis.port, "EXISTS warren:depot:exit:far"), ":0");
  } finally {
    if (paused) await redisCommand(redis.port, "CLIENT UNPAUSE");
    await (closing ?? ca.close());
    await peer.close();
    await watch.close();
    await depot.close();
    await redis.stop();
  }
});
