/**
 * The cached cluster lookup (issue 19) against a real redis-server: routing answers cost no
 * Redis command once cached, a change notice from any instance drops them at once, a lost
 * notice is bounded by the cache lifetime, and a stale entry still gets the request served
 * (the link to a dead place is retried with a fresh lookup; an instance that no longer
 * holds the client passes the stream on to the one that does).
 */

import { assert, assertEquals } from "./_assert.ts";
import { startRedis } from "./_redis.ts";
import { curl, startApp, startClient } from "./_tunnel.ts";
import { type Member, member } from "./_tunnel_cluster.ts";
import { type ClientRecord, RedisRegistry } from "../lib/tunnel/mod.ts";
import { createHash } from "node:crypto";
// deno-lint-ignore no-import-prefix
import { createClient } from "npm:@redis/client@6.3.1";

const id = "cache-identifier-0001";
const digest = createHash("sha256").update(id).digest("hex");
const prefix = "warren:tunnel:";

/** Poll `f` until it holds (a bound far above any notice delay; never a timing assertion). */
async function until(what: string, f: () => Promise<boolean>, maxMs = 60_000): Promise<void> {
  const end = Date.now() + maxMs;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A plain Redis connection for the test: raw writes (no notice) and command counts. */
async function rawRedis(url: string) {
  const c = createClient({ url });
  await c.connect();
  return {
    c,
    /** Calls of `cmd` (lower case) Redis has served so far. */
    async calls(cmd: string): Promise<number> {
      const info = await c.info("commandstats");
      const m = new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info);
      return m ? Number(m[1]) : 0;
    },
    /** Write the lease of `id` as held by `instance`, announcing nothing. */
    async lease(instance: string): Promise<void> {
      const rec: ClientRecord = {
        fingerprint: digest.slice(0, 12),
        clientId: 1,
        instance,
        remote: "127.0.0.1:1",
        since: Date.now(),
      };
      await c.set(`${prefix}client:${digest}`, JSON.stringify(rec));
    },
  };
}

const rec = (n: number): ClientRecord => ({
  fingerprint: "x",
  clientId: n,
  instance: "?",
  remote: "127.0.0.1:1",
  since: Date.now(),
});

Deno.test("cluster cache: cached answers cost no Redis command; notices drop them, a lost one is bounded", async () => {
  const redis = await startRedis();
  const raw = await rawRedis(redis.url);
  // A long lifetime: whatever changes an answer below is a notice, not an expiry.
  const a = await RedisRegistry.connect({ url: redis.url, instance: "a", cacheMs: 600_000 });
  const b = await RedisRegistry.connect({ url: redis.url, instance: "b", cacheMs: 600_000 });
  const short = await RedisRegistry.connect({ url: redis.url, instance: "s", cacheMs: 300 });
  try {
    await a.addHost("app.test", id);
    await a.setClient(id, rec(1));
    assertEquals(await b.route("app.test"), `sha256:${digest}`);
    // Cached once the notices of those writes have reached b (they may come after its reads).
    await until("b caches the lease", async () => (await b.locate(id))?.cached === true);
    const gets = await raw.calls("get");
    const hgets = await raw.calls("hget");
    for (let i = 0; i < 100; i++) {
      assertEquals(await b.route("app.test"), `sha256:${digest}`);
      const at = await b.locate(id);
      assertEquals(at?.rec.instance, "a");
      assert(at?.cached, "a cached answer");
    }
    // One read each at most: a notice of the writes above still under way drops an entry once.
    assert((await raw.calls("get")) - gets <= 1, "no GET for 100 cached locates");
    assert((await raw.calls("hget")) - hgets <= 1, "no HGET for 100 cached routes");

    // The client moves to b, the host to another identifier: a's notices reach b at once.
    await b.setClient(id, rec(2));
    await until("b sees its own lease", async () => (await a.locate(id))?.rec.instance === "b");
    await a.addHost("app.test", "another-identifier");
    await until(
      "b sees the host move",
      async () => (await b.route("app.test")) !== `sha256:${digest}`,
    );
    await a.removeHost("app.test");
    await until("b sees the host gone", async () => (await b.route("app.test")) === undefined);
    await b.setClient(id, undefined);
    await until("a sees the lease gone", async () => (await a.locate(id)) === undefined);

    // A change written without a notice: the long-lived cache keeps the old answer, the
    // short one lets it go within its lifetime.
    await raw.lease("a");
    const cachedA = (r: RedisRegistry) => async () => {
      const at = await r.locate(id);
      return at?.cached === true && at.rec.instance === "a";
    };
    await until("b caches a", cachedA(b));
    await until("the short cache caches a", cachedA(short));
    await raw.lease("z");
    assertEquals((await b.locate(id))?.rec.instance, "a", "no notice, long lifetime: stale");
    await until(
      "the short cache expires",
      async () => (await short.locate(id))?.rec.instance === "z",
    );
    assertEquals((await b.locate(id, true))?.rec.instance, "z", "a fresh look sees it");
  } finally {
    await short.close();
    await b.close();
    await a.close();
    await raw.c.close();
    await redis.stop();
  }
});

Deno.test("cluster cache: a stale entry still gets the request served (fresh lookup, pass on)", async () => {
  const redis = await startRedis();
  const raw = await rawRedis(redis.url);
  const app = startApp("app");
  const members: Member[] = [];
  try {
    const a = await member(redis.url, "a");
    const b = await member(redis.url, "b");
    const c = await member(redis.url, "c");
    members.push(a, b, c);
    await c.tunnel.server.addHost("app.test", id);
    const client = startClient({
      server: c.tunnel.url,
      identifier: id,
      local: { host: "127.0.0.1", port: app.port },
    });
    try {
      await client.connected();
      await until(
        "c's lease",
        async () => (await b.registry.locate(id, true))?.rec.instance === "c",
      );
      assertEquals((await curl(b.tunnel.port, "app.test", "/name?id=1")).body, "app 1");

      // b's cache is made to say "a" without a notice (c still holds the client): b sends
      // the request to a, which does not hold it, looks afresh and passes it on to c.
      b.registry.forget(id);
      await raw.lease("a");
      await until("b caches a", async () => {
        const at = await b.registry.locate(id);
        return at?.cached === true && at.rec.instance === "a";
      });
      await raw.lease("c");
      assertEquals((await curl(b.tunnel.port, "app.test", "/name?id=2")).body, "app 2");
      const at = await b.registry.locate(id);
      assert(at?.cached && at.rec.instance === "a", "the request went by the stale entry");

      // b's cache names a dead instance: the link fails, b looks afresh once and reaches c.
      const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const deadAddr = `127.0.0.1:${dead.addr.port}`;
      dead.close();
      await raw.c.set(
        `${prefix}instance:dead`,
        JSON.stringify({ name: "dead", advertise: deadAddr, since: 0 }),
      );
      b.registry.forget(id);
      await raw.lease("dead");
      await until("b caches the dead instance", async () => {
        const at = await b.registry.locate(id);
        return at?.cached === true && at.inst?.advertise === deadAddr;
      });
      await raw.lease("c");
      assertEquals((await curl(b.tunnel.port, "app.test", "/name?id=3")).body, "app 3");
      assertEquals((await b.registry.locate(id))?.rec.instance, "c", "the fresh answer is cached");
    } finally {
      await client.stop();
    }
  } finally {
    for (const m of members.reverse()) await m.close();
    await app.close();
    await raw.c.close();
    await redis.stop();
  }
});
