/**
 * A wildcard host ('*.example.com') added through one cluster instance routes on every
 * instance: a request reaching B for a name under it goes to A's client. B only looked for a
 * wildcard entry when wildcards had been added through B itself (its own count of them), so
 * it answered 404. In process, a real redis-server.
 */

import { assertEquals } from "./_assert.ts";
import { member } from "./_tunnel_cluster.ts";
import { rawGet, startApp, startClient } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";

const id = "cluster-wildcard-identifier-01";

Deno.test("tunnel cluster: a wildcard host added on A routes a request reaching B", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const a = await member(redis.url, "a");
  const b = await member(redis.url, "b");
  const client = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await a.tunnel.server.addHost("*.wild.test", id);
    await client.connected();
    const viaA = await rawGet(a.tunnel.port, "x.wild.test", "/name?id=a");
    assertEquals([viaA.status, viaA.body], [200, "app a"]);
    const viaB = await rawGet(b.tunnel.port, "x.wild.test", "/name?id=b");
    assertEquals([viaB.status, viaB.body], [200, "app b"]);
  } finally {
    await client.stop();
    await b.close();
    await a.close();
    await app.close();
    await redis.stop();
  }
});
