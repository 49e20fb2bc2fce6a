/**
 * A wildcard host during a Redis outage is routed by the heartbeat copy like an exact host:
 * B's copy has `*.wild.test` (held by A's client); C, the third instance, is gone. A request
 * to B for `x.wild.test` used to ask the peers about the name `x.wild.test` first, and since
 * C could not answer, got 503 before the copy's wildcard was looked at. Now the copy's
 * wildcard routes it (and A, asked where the client is, serves it). In process, a real
 * redis-server, heartbeats every 200 s (B's copy is that of its first beat).
 */

import { assertEquals } from "./_assert.ts";
import { withOutageCluster } from "./_tunnel_cluster.ts";
import { rawGet } from "./_tunnel.ts";

const id = "cluster-outage-wild-identifier-01";

Deno.test("tunnel cluster: during a Redis outage with a peer gone, a name under a wildcard of the copy is served, not 503", async () => {
  await withOutageCluster({ "*.wild.test": id }, id, {}, async ({ redis, b, stopC }) => {
    assertEquals(b.registry.copiedHosts(), ["*.wild.test"]);
    await redis.down();
    await stopC();
    const got = await rawGet(b.tunnel.port, "x.wild.test", "/name?id=wild");
    assertEquals([got.status, got.body], [200, "app wild"], got.head);
    // A name the copy has no entry for still cannot be told while C is gone.
    assertEquals((await rawGet(b.tunnel.port, "x.other.test", "/")).status, 503);
  });
});
