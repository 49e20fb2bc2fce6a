/**
 * A FLUSHALL landing inside a heartbeat: after the beat found the instance's own record
 * (EXISTS 1) and before it wrote it again. The beat then wrote the record back as if nothing
 * was lost, so no later beat (nor a lookup's miss, which checks that record) saw the loss,
 * and the hosts added through the instance were gone from Redis for good. A proxy between the
 * registry and a real redis-server holds the registry's next command after that EXISTS until a
 * FLUSHALL has run, so the flush lands there every time; no clock.
 */

import { assert, assertEquals } from "./_assert.ts";
import { flushingProxy, redisCommand, startRedis } from "./_redis.ts";
import { RedisRegistry } from "../lib/tunnel/mod.ts";

Deno.test("redis registry: a FLUSHALL inside a heartbeat (after its EXISTS) still gets the instance's hosts written back", async () => {
  const redis = await startRedis();
  const proxy = flushingProxy(
    redis.port,
    (s) => s.includes("EXISTS") && s.includes("instance:a"),
  );
  const a = await RedisRegistry.connect({
    url: `redis://127.0.0.1:${proxy.port}`,
    instance: "a",
    leaseMs: 1_500,
  });
  try {
    await a.addHost("app.example.com", "id-a");
    await proxy.flushInsideBeat("a");
    const host = await redisCommand(redis.port, "HGET warren:tunnel:hosts app.example.com");
    assert(host !== "$-1", "a's host is not written back after the flush");
    assertEquals(await a.lookup("app.example.com"), "id-a");
  } finally {
    await a.close();
    await proxy.close();
    await redis.stop();
  }
});

Deno.test("redis registry: a FLUSHALL inside the beat that writes back after a loss (after a host went back, before the record) still gets the hosts written back", async () => {
  const redis = await startRedis();
  // The loss's beat writes the hosts back (each announced h:<host>), then the record: the
  // second flush lands between the two.
  const proxy = flushingProxy(
    redis.port,
    (s) => s.includes("EXISTS") && s.includes("instance:a"),
    (s) => s.includes("PUBLISH") && s.includes("h:app.example.com"),
  );
  const a = await RedisRegistry.connect({
    url: `redis://127.0.0.1:${proxy.port}`,
    instance: "a",
    leaseMs: 1_500,
  });
  try {
    await a.addHost("app.example.com", "id-a");
    // Armed, then the first loss (not through the proxy): a's next beat finds its record gone.
    await proxy.flushInsideBeat("a", { first: () => redisCommand(redis.port, "FLUSHALL") });
    const host = await redisCommand(redis.port, "HGET warren:tunnel:hosts app.example.com");
    assert(host !== "$-1", "a's host is not written back after the flush in its write-back");
    assertEquals(await a.lookup("app.example.com"), "id-a");
  } finally {
    await a.close();
    await proxy.close();
    await redis.stop();
  }
});
