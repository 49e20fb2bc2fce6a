/**
 * A wildcard host during a Redis outage is routed by the heartbeat copy like an exact host:
 * B's copy has `*.wild.test` (held by A's client); C, the third instance, is gone. A request
 * to B for `x.wild.test` used to ask the peers about the name `x.wild.test` first, and since
 * C could not answer, got 503 before the copy's wildcard was looked at. Now the copy's
 * wildcard routes it (and A, asked where the client is, serves it). In process, a real
 * redis-server, heartbeats every 200 s (B's copy is that of its first beat).
 */

import { assertEquals } from "./_assert.ts";
import { member } from "./_tunnel_cluster.ts";
import { rawGet, startApp, startClient } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";

const id = "cluster-outage-wild-identifier-01";

Deno.test("tunnel cluster: during a Redis outage with a peer gone, a name under a wildcard of the copy is served, not 503", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const a = await member(redis.url, "a");
  const c = await member(redis.url, "c");
  let cOpen = true;
  await a.tunnel.server.addHost("*.wild.test", id);
  const client = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  let b: Awaited<ReturnType<typeof member>> | undefined;
  try {
    await client.connected();
    b = await member(redis.url, "b");
    assertEquals(b.registry.copiedHosts(), ["*.wild.test"]);
    await redis.down();
    cOpen = false;
    await c.close();
    const got = await rawGet(b.tunnel.port, "x.wild.test", "/name?id=wild");
    assertEquals([got.status, got.body], [200, "app wild"], got.head);
    // A name the copy has no entry for still cannot be told while C is gone.
    assertEquals((await rawGet(b.tunnel.port, "x.other.test", "/")).status, 503);
  } finally {
    await client.stop();
    await b?.close();
    if (cOpen) await c.close();
    await a.close();
    await app.close();
    await redis.stop();
  }
});
