/**
 * FLUSHALL empties Redis without dropping a connection, so no instance reconnects, and with
 * long heartbeats none looks at its own records for a long while. Instance A holds the client
 * and added its host; instance B never routed a request to it. A request reaching B must be
 * served, not answered 404 (the host gone from Redis) or no-client (the lease gone): B's miss
 * also finds its own record gone, so B writes its records back, routes the host by its copy
 * from before the loss, and tells the others (`l:b`), so A writes back its host, lease and
 * record at once instead of at its next beat; B's request waits for A's lease notice.
 * The old code answered 404 at once. In process, a real redis-server; heartbeats every 200 s
 * (member's default leases), so no beat can do the work instead.
 */

import { assertEquals } from "./_assert.ts";
import { member } from "./_tunnel_cluster.ts";
import { rawGet, startApp, startClient } from "./_tunnel.ts";
import { redisCommand, startRedis } from "./_redis.ts";
import { within } from "./_util.ts";

const id = "cluster-flush-identifier-01";

Deno.test("tunnel cluster: after a FLUSHALL (no disconnect, no heartbeat due), an instance that never routed to a client serves a request for it", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const a = await member(redis.url, "a");
  await a.tunnel.server.addHost("app.test", id);
  const c = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  let b: Awaited<ReturnType<typeof member>> | undefined;
  try {
    await c.connected();
    // B joins now: its copy of the hosts (read at its first beat) has app.test.
    b = await member(redis.url, "b");
    assertEquals(await redisCommand(redis.port, "FLUSHALL"), "+OK");
    assertEquals(await redisCommand(redis.port, "DBSIZE"), ":0");
    const got = await within(
      rawGet(b.tunnel.port, "app.test", "/name?id=flush"),
      "B's answer to a request for A's client after the FLUSHALL",
    );
    assertEquals([got.status, got.body], [200, "app flush"]);
    // A wrote back its records without a beat: its lease and record are in Redis again.
    assertEquals((await b.registry.getClient(id))?.instance, "a");
    assertEquals(await redisCommand(redis.port, "EXISTS warren:tunnel:instance:a"), ":1");
    // A host nobody had is still unknown.
    assertEquals((await rawGet(b.tunnel.port, "app.test.invalid", "/")).status, 404);
  } finally {
    await c.stop();
    await b?.close();
    await a.close();
    await app.close();
    await redis.stop();
  }
});
