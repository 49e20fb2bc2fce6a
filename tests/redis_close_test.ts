/**
 * A cluster's Redis client closed while Redis is down: node-redis waits between reconnect
 * attempts on a timer of its own, which outlived close() and went off in whatever ran next (a
 * flake of redis_registry_test's outage test: "a timer was started in this test, but never
 * completed", and the next test failed for the same timer). Each test here sanitizes its ops,
 * which is what fails when close() leaves a timer behind. A real redis-server.
 */

import { assert } from "./_assert.ts";
import { startDepot } from "./_depot.ts";
import { startRedis } from "./_redis.ts";
import { until } from "./_util.ts";
import { DepotCluster } from "../lib/cluster/mod.ts";
import { RedisRegistry, RegistryUnavailableError } from "../lib/tunnel/mod.ts";

/**
 * A few failed attempts after Redis went away, each connection waits hundreds of ms for its
 * next one (a refused loopback connect takes well under a millisecond): close() meets a wait.
 */
const letWaitsGrowMs = 1_000;

Deno.test({
  name:
    "redis close: a tunnel RedisRegistry closed while both its connections wait to reconnect leaves no timer",
  sanitizeOps: true,
  fn: async () => {
    const redis = await startRedis();
    const reg = await RedisRegistry.connect({ url: redis.url, instance: "a", leaseMs: 600 });
    try {
      await redis.down();
      await until("the registry to see Redis gone", async () => {
        try {
          await reg.isKnown("id-a");
          return false;
        } catch (err) {
          assert(err instanceof RegistryUnavailableError, `wrong error: ${err}`);
          return true;
        }
      });
      await new Promise((r) => setTimeout(r, letWaitsGrowMs));
    } finally {
      await reg.close();
      await redis.stop();
    }
  },
});

Deno.test({
  name:
    "redis close: a DepotCluster closed while its Redis client waits to reconnect leaves no timer",
  sanitizeOps: true,
  fn: async () => {
    const redis = await startRedis();
    const depot = await startDepot({ locals: [] });
    const cluster = await DepotCluster.connect(depot.server, {
      url: redis.url,
      token: "close-test-token-0001",
      advertise: "127.0.0.1:1",
      heartbeatMs: 50,
    });
    try {
      await redis.down();
      await until("the cluster to see Redis gone", () => !cluster.view().registryUp);
      await new Promise((r) => setTimeout(r, letWaitsGrowMs));
    } finally {
      await cluster.close();
      await depot.close();
      await redis.stop();
    }
  },
});
