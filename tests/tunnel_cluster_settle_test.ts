/**
 * Redis loses everything (a restart without persistence, FLUSHALL and its connections
 * dropped) while instance A, which holds the client and added its host, has not written them
 * back yet; instance B never routed a request to that client. A request reaching B meanwhile
 * must be served once A writes back, not answered 404 (B found no host) or 502 no-client (B
 * found no lease and had no last holder to try). B routes the host by its copy from before the
 * loss and waits for A's write-back of the lease and instance record (their change notices),
 * for at most lib/tunnel/redis_registry.ts `settleMs` after finding its own record lost.
 * In process, a real redis-server; A's write-back is held behind a heartbeat held in an
 * extension's sync (as in tunnel_cluster_empty_test), so the order does not depend on timing.
 * Every wait is bounded and names what it waited for.
 */

import { assertEquals } from "./_assert.ts";
import { member } from "./_tunnel_cluster.ts";
import { rawGet, startApp, startClient } from "./_tunnel.ts";
import { redisCommand, startRedis } from "./_redis.ts";
import { until, within } from "./_util.ts";

const id = "cluster-settle-identifier-01";

Deno.test("tunnel cluster: after Redis lost everything, an instance that never routed to a client serves a request for it once its holder writes back (no 404, no no-client)", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  // A beats every second (so its held beat comes soon); B's leases are long, so its wait for
  // A's write-back is bounded far beyond the test's own bounds.
  const a = await member(redis.url, "a", { leaseMs: 3_000 });
  let hold: PromiseWithResolvers<void> | undefined;
  const holding = Promise.withResolvers<void>();
  a.registry.extend({
    noticePrefix: "test:",
    notice: () => {},
    sync: () => {
      if (!hold) return Promise.resolve();
      holding.resolve();
      return hold.promise;
    },
  });
  await a.tunnel.server.addHost("app.test", id);
  const c = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  let b: Awaited<ReturnType<typeof member>> | undefined;
  try {
    await c.connected();
    // B joins now: its copy of the hosts (read at each beat) has app.test.
    b = await member(redis.url, "b");
    hold = Promise.withResolvers<void>();
    await within(holding.promise, "A's heartbeat held");
    // Redis loses everything and drops every connection, as a restart does.
    assertEquals(await redisCommand(redis.port, "FLUSHALL"), "+OK");
    await redisCommand(redis.port, "CLIENT KILL TYPE normal");
    await redisCommand(redis.port, "CLIENT KILL TYPE pubsub");
    await until(
      "B wrote its own record back",
      async () => (await redisCommand(redis.port, "EXISTS warren:tunnel:instance:b")) === ":1",
    );
    assertEquals(await redisCommand(redis.port, "HLEN warren:tunnel:hosts"), ":0");
    // A host nobody had is still unknown at once.
    assertEquals((await rawGet(b.tunnel.port, "app.test.invalid", "/")).status, 404);

    // B routes the request and waits for A's write-back (the old code answered 404 here).
    // Once B waits (its registry's awaitWriteBack called), or has answered, A is let go; the
    // method is looked up loosely: the code before the fix has none, and answers at once.
    let settled = false;
    let waited = false;
    const reg = b.registry as unknown as Record<string, unknown>;
    const awaitWriteBack = reg.awaitWriteBack as
      | ((...a: unknown[]) => Promise<boolean>)
      | undefined;
    if (awaitWriteBack) {
      reg.awaitWriteBack = (...args: unknown[]) => {
        waited = true;
        return awaitWriteBack.apply(b!.registry, args);
      };
    }
    const r = rawGet(b.tunnel.port, "app.test", "/name?id=settle");
    r.finally(() => settled = true).catch(() => {/* asserted below */});
    await until("B answered, or waits for the write-back", () => settled || waited);
    const h = hold;
    hold = undefined;
    h.resolve();
    const got = await r;
    assertEquals([got.status, got.body], [200, "app settle"]);
  } finally {
    hold?.resolve();
    await c.stop();
    await b?.close();
    await a.close();
    await app.close();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: after Redis lost everything, a request for a client connected nowhere gets its 502 once every instance wrote back, not at the end of the settle window", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const a = await member(redis.url, "a");
  await a.tunnel.server.addHost("gone.test", id);
  const c = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  let b: Awaited<ReturnType<typeof member>> | undefined;
  try {
    await c.connected();
    // B joins now: its copy of the hosts has gone.test, and its copy of the instances has A.
    // Its leases of 90 s make a settle window (lease + 2 s) longer than the 60-s bound on its
    // answer below, and short enough that the old code's request, still waiting when the
    // bound fails the test, does not hold B's close for long.
    b = await member(redis.url, "b", { leaseMs: 90_000 });
    // The client leaves for good: its lease is released; only the host stays.
    await c.stop();
    await until("the client's lease released", async () => !(await b!.registry.getClient(id)));
    // Redis loses everything and drops every connection, as a restart does.
    assertEquals(await redisCommand(redis.port, "FLUSHALL"), "+OK");
    await redisCommand(redis.port, "CLIENT KILL TYPE normal");
    await redisCommand(redis.port, "CLIENT KILL TYPE pubsub");
    await until(
      "B wrote its own record back",
      async () => (await redisCommand(redis.port, "EXISTS warren:tunnel:instance:b")) === ":1",
    );
    // Routed by B's copy (the settle window is open), no lease: A's record back means A has
    // no such client, so B answers then (the old code waited out the 92-s window).
    const got = await within(
      rawGet(b.tunnel.port, "gone.test", "/"),
      "B's answer for a client connected nowhere",
    );
    assertEquals(got.status, 502);
  } finally {
    await c.stop();
    await b?.close();
    await a.close();
    await app.close();
    await redis.stop();
  }
});
