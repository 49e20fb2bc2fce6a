/**
 * The tunnel registry in a real redis-server (issue 19): two instances share hosts and
 * client leases, identifiers are stored only as digests, a killed instance's leases expire,
 * and an outage keeps lookups working, refuses registrations, and heals when Redis returns.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { type SeenCommand, startRedis, watchCommands } from "./_redis.ts";
import { until, within } from "./_util.ts";
import {
  type ClientRecord,
  fingerprint,
  RedisRegistry,
  RegistryUnavailableError,
} from "../lib/tunnel/mod.ts";
// deno-lint-ignore no-import-prefix
import { createClient } from "npm:@redis/client@6.3.1";

const leaseMs = 600;
/**
 * Leases for a test that needs each to stay where it is: no heartbeat late by a lease under a
 * loaded machine, which would move it.
 */
const longLeaseMs = 3_000;

function rec(clientId: number): ClientRecord {
  return { fingerprint: "x", clientId, instance: "?", remote: "127.0.0.1:1", since: Date.now() };
}

/** Every key and value in Redis, as one string. */
async function dump(url: string): Promise<string> {
  const c = createClient({ url });
  await c.connect();
  let out = "";
  for (const k of await c.keys("*")) {
    const t = await c.type(k);
    const v = t === "hash"
      ? JSON.stringify(await c.hGetAll(k))
      : t === "set"
      ? JSON.stringify((await c.sMembers(k)).sort())
      : await c.get(k);
    out += `${k}=${v}\n`;
  }
  await c.close();
  return out;
}

/**
 * Wait (bounded) for `renewals` renewals of the key matching `pattern`, seen in Redis as its
 * PTTL rising above the previous reading (a heartbeat refreshed it, however late on a stalled
 * box), and then for `holds` (asked again after each later renewal). No sleep, no clock.
 */
async function untilRenewed(
  url: string,
  pattern: string,
  what: string,
  holds: () => Promise<boolean> = () => Promise.resolve(true),
  renewals = 1,
): Promise<void> {
  const c = createClient({ url });
  await c.connect();
  try {
    const [key] = await c.keys(pattern);
    assert(key !== undefined, `no ${pattern} in Redis:\n${await dump(url)}`);
    let last = await c.pTTL(key);
    let seen = 0;
    await until(what, async () => {
      const pttl = await c.pTTL(key);
      if (pttl > last) seen++;
      last = pttl;
      return seen >= renewals && await holds();
    });
  } finally {
    await c.close();
  }
}

/** `f` fails with RegistryUnavailableError. */
async function unavailable(f: () => Promise<unknown>): Promise<void> {
  const err = await assertRejects(f);
  assert(err instanceof RegistryUnavailableError, `wrong error: ${err}`);
}

Deno.test("redis registry: shared hosts, digests only, leases across instances", async () => {
  const redis = await startRedis();
  const a = await RedisRegistry.connect({ url: redis.url, instance: "a", leaseMs });
  const b = await RedisRegistry.connect({ url: redis.url, instance: "b", leaseMs });
  try {
    const secret = "s3cret-identifier-of-app";
    await a.addHost("App.Example.com", secret);
    await a.addHost("*.dev.example.com", secret);
    // B never saw the secret: it gets a stand-in with the same fingerprint, never the secret.
    const seen = await b.lookup("app.example.com");
    assert(seen !== undefined && seen !== secret, `b sees ${seen}`);
    assertEquals(fingerprint(seen), fingerprint(secret));
    assertEquals(await b.isKnown("wrong"), false);
    assertEquals(await b.isKnown(secret), true);
    assertEquals(await b.lookup("app.example.com"), secret);
    assertEquals((await b.hostsOf(secret)).sort(), ["*.dev.example.com", "app.example.com"]);
    const stored = await dump(redis.url);
    assert(!stored.includes(secret), `the secret is in Redis:\n${stored}`);
    assert(stored.includes("app.example.com"), stored);

    // Moving a host drops the old identifier once it serves nothing.
    await b.addHost("app.example.com", "other-identifier");
    await a.removeHost("*.dev.example.com");
    assertEquals(await a.isKnown(secret), false);
    assertEquals(await a.isKnown("other-identifier"), true);
    assertEquals(await a.removeHost("nope.example.com"), false);

    await a.setClient("other-identifier", rec(7));
    const got = await b.getClient("other-identifier");
    assertEquals([got?.instance, got?.clientId], ["a", 7]);
    // Held by A's heartbeat: renewed in Redis, then found A's by B.
    await untilRenewed(
      redis.url,
      "*client:*",
      "a's heartbeat renewing the lease, then b finding a the holder of client 7",
      async () =>
        (await b.getClient("other-identifier"))?.instance === "a" &&
        (await b.listClients()).map((c) => c.clientId).join() === "7",
    );
    assertEquals((await a.instances()).map((i) => i.name).sort(), ["a", "b"]);
    // The client reconnects to B while A's old session is still timing out: A's heartbeat
    // does not take the lease back.
    await b.setClient("other-identifier", rec(8));
    // Two of A's beats seen (its instance record renewed twice: the second beat began after
    // B took the lease), the lease still names B (a lease that expired on a stalled box is
    // waited for until B writes it back).
    let holder: string | undefined;
    await untilRenewed(redis.url, "*instance:a", "two heartbeats of a, then a holder", async () => {
      holder = (await a.getClient("other-identifier"))?.instance;
      return holder !== undefined;
    }, 2);
    assertEquals(holder, "b");
    await b.setClient("other-identifier", undefined);
    await a.setClient("other-identifier", rec(7));
    // B cannot release A's lease; A can.
    await b.setClient("other-identifier", undefined);
    assertEquals((await b.getClient("other-identifier"))?.instance, "a");
    await a.setClient("other-identifier", undefined);
    assertEquals(await b.getClient("other-identifier"), undefined);
  } finally {
    await a.close();
    await b.close();
    await redis.stop();
  }
});

Deno.test("redis registry: a holder's release or close hands the lease to an instance standing by for the client", async () => {
  const redis = await startRedis();
  const a = await RedisRegistry.connect({ url: redis.url, instance: "a", leaseMs: longLeaseMs });
  const b = await RedisRegistry.connect({ url: redis.url, instance: "b", leaseMs: longLeaseMs });
  const c = await RedisRegistry.connect({ url: redis.url, instance: "c", leaseMs: longLeaseMs });
  let bOpen = true;
  try {
    const id = "group-identifier-on-two-instances";
    const standsBy = (name: string) =>
      until(
        `${name} stands by in Redis`,
        async () => new RegExp(`standby:[0-9a-f]{64}=\\{"${name}":`).test(await dump(redis.url)),
      );
    // Members of one group on A and B: A registered first, B since; A stands by.
    await a.setClient(id, rec(1));
    await b.setClient(id, rec(2));
    await standsBy("a");
    // B's member leaves: the lease is A's at once, never missing.
    await b.setClient(id, undefined);
    assertEquals((await c.getClient(id))?.instance, "a");
    // And A's heartbeat keeps it: renewed in Redis, still A's.
    await untilRenewed(
      redis.url,
      "*client:*",
      "a's heartbeat renewing the lease handed to it, then c finding a the holder",
      async () => (await c.getClient(id))?.instance === "a",
    );
    // The same when B shuts down holding it.
    await b.setClient(id, rec(3));
    await standsBy("a");
    bOpen = false;
    await b.close();
    assertEquals((await c.getClient(id))?.instance, "a");
    // A's last member leaves: nobody stands by, the lease is gone.
    await a.setClient(id, undefined);
    assertEquals(await c.getClient(id), undefined);
    assert(!(await dump(redis.url)).includes("standby:"), await dump(redis.url));
  } finally {
    await a.close();
    if (bOpen) await b.close();
    await c.close();
    await redis.stop();
  }
});

/**
 * The commands of each whole heartbeat of instance `name` in `seen`: from its connection, from
 * one of its beats' first command (EXISTS of its own record) to the next one's.
 */
function beatsOf(seen: SeenCommand[], name: string): string[][] {
  const first = (c: SeenCommand) =>
    c.args[0] === "EXISTS" && c.args[1] === `warren:tunnel:instance:${name}`;
  const from = seen.find(first)?.from;
  const mine = seen.filter((c) => c.from === from);
  const starts = mine.flatMap((c, i) => first(c) ? [i] : []);
  return starts.slice(1).map((end, k) =>
    mine.slice(starts[k], end).map((c) =>
      c.args[0] === "EVAL" ? "EVAL" : c.args.slice(0, 2).join(" ")
    )
  );
}

Deno.test("redis registry: standing by for a client costs a heartbeat no more Redis commands than holding it", async () => {
  const redis = await startRedis();
  const a = await RedisRegistry.connect({ url: redis.url, instance: "a", leaseMs: longLeaseMs });
  const b = await RedisRegistry.connect({ url: redis.url, instance: "b", leaseMs: longLeaseMs });
  try {
    const id = "standby-identifier-0001";
    // B registered the client last: B holds it, A stands by (a group on both).
    await a.setClient(id, rec(1));
    await b.setClient(id, rec(2));
    await until(
      "a stands by in Redis",
      async () => /standby:[0-9a-f]{64}=\{"a":/.test(await dump(redis.url)),
    );
    const watch = await watchCommands(redis.port);
    try {
      await watch.until(
        "a whole heartbeat of a and of b",
        (seen) => beatsOf(seen, "a").length > 0 && beatsOf(seen, "b").length > 0,
      );
      const [standing] = beatsOf(watch.seen, "a");
      const [holding] = beatsOf(watch.seen, "b");
      // The standby's note rides in the lease's script (the old code sent HSET and PEXPIRE).
      assertEquals(standing.length, holding.length, `a: ${standing} | b: ${holding}`);
      assert(/standby:[0-9a-f]{64}=\{"a":/.test(await dump(redis.url)), "a no longer stands by");
      assertEquals((await a.getClient(id))?.instance, "b");
    } finally {
      await watch.close();
    }
  } finally {
    await a.close();
    await b.close();
    await redis.stop();
  }
});

Deno.test("redis registry: a killed instance's lease is never renewed and expires", async () => {
  const redis = await startRedis();
  const b = await RedisRegistry.connect({ url: redis.url, instance: "b", leaseMs });
  const redisClient = createClient({ url: redis.url });
  await redisClient.connect();
  const script = `
    import { RedisRegistry } from "${new URL("../lib/tunnel/mod.ts", import.meta.url).href}";
    const r = await RedisRegistry.connect({ url: "${redis.url}", instance: "a", leaseMs: ${leaseMs} });
    await r.addHost("app.example.com", "id-of-a");
    await r.setClient("id-of-a", { fingerprint: "x", clientId: 1, instance: "a", remote: "-", since: 0 });
    console.log("ready");
    await new Promise(() => {});
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("ready")) {
      const { value, done } = await within(reader.read(), () => `instance a's "ready": ${out}`);
      assert(!done, `instance a did not start: ${out}`);
      out += value;
    }
    // A holds its lease by its heartbeat: seen as a renewal in Redis (the lease's PTTL rises
    // above an earlier reading of it), with B finding A the holder after it. No sleep: a beat
    // late on a stalled box only makes this wait for the next renewal.
    await untilRenewed(
      redis.url,
      "*client:*",
      "a's heartbeat renewing its lease, then b finding a the holder",
      async () => (await b.getClient("id-of-a"))?.instance === "a",
    );
    const [lease] = await redisClient.keys("*client:*");
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    // Nothing renews a dead instance's lease: read in Redis, its lifetime left is never more
    // than one lease, and it rises at most once (the one beat A may have sent before the kill;
    // A's beats never overlap), then the lease expires. No clock: a lease renewed by anyone
    // else, or written for longer, fails here however fast or slow the box.
    let last = leaseMs;
    let rises = 0;
    await until("a's lease to expire after the kill", async () => {
      const pttl = await redisClient.pTTL(lease);
      if (pttl === -2) return true; // gone
      assert(pttl >= 0 && pttl <= leaseMs, `${lease}: PTTL ${pttl} (lease ${leaseMs} ms)`);
      if (pttl > last) rises++;
      assert(rises <= 1, `${lease} renewed ${rises} times after its instance was killed`);
      last = pttl;
      return false;
    });
    assertEquals(await b.getClient("id-of-a"), undefined);
    // Its instance record goes too (a beat cut short by the kill may have refreshed it last).
    await until(
      "a's instance record expires",
      async () => (await b.instances()).every((i) => i.name === "b"),
    );
    // The host stays: only the lease went.
    assert((await b.lookup("app.example.com")) !== undefined);
  } finally {
    await redisClient.close();
    await b.close();
    await redis.stop();
  }
});

Deno.test("redis registry: an outage keeps lookups, refuses registrations, heals", async () => {
  const redis = await startRedis();
  const a = await RedisRegistry.connect({ url: redis.url, instance: "a", leaseMs });
  try {
    await a.addHost("app.example.com", "id-a");
    await a.setClient("id-a", rec(1));
    await redis.down();
    // Held clients keep being routed: the host comes from the last heartbeat's copy.
    assertEquals(await a.lookup("app.example.com"), "id-a");
    assertEquals(await a.lookup("nope.example.com"), undefined);
    await unavailable(() => a.isKnown("id-a"));
    await unavailable(() => a.addHost("b.example.com", "id-b"));
    await unavailable(() => a.setClient("id-b", rec(2)));
    // Redis comes back empty: the instance writes back its hosts and its lease.
    await redis.up();
    const b = await RedisRegistry.connect({ url: redis.url, instance: "b", leaseMs });
    try {
      await until(
        "a's host is back",
        async () => (await b.lookup("app.example.com")) !== undefined,
      );
      await until("a's lease is back", async () => (await b.getClient("id-a"))?.instance === "a");
      assertEquals(await b.isKnown("id-a"), true);
      await until("a registers again", async () => {
        try {
          await a.addHost("b.example.com", "id-b");
          return true;
        } catch (err) {
          if (!(err instanceof RegistryUnavailableError)) throw err;
          return false;
        }
      });
      assertEquals(await b.isKnown("id-b"), true);
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
    await redis.stop();
  }
});

Deno.test("redis registry: an unreachable Redis at start is a typed error", async () => {
  const redis = await startRedis();
  await redis.stop();
  await unavailable(() => RedisRegistry.connect({ url: redis.url, leaseMs }));
});

Deno.test("redis registry: a password-protected Redis (redis://:password@host:port/db)", async () => {
  const redis = await startRedis("redis-pass-0001");
  try {
    await unavailable(() =>
      RedisRegistry.connect({ url: redis.url.replace("redis-pass-0001", "wrong-pass"), leaseMs })
    );
    await unavailable(() =>
      RedisRegistry.connect({ url: redis.url.replace(":redis-pass-0001@", ""), leaseMs })
    );
    const a = await RedisRegistry.connect({ url: `${redis.url}/3`, instance: "a", leaseMs });
    const b = await RedisRegistry.connect({ url: redis.url, instance: "b", leaseMs });
    try {
      await a.addHost("app.example.com", "id-in-db-3");
      assertEquals(await a.isKnown("id-in-db-3"), true);
      // Database 0 is another namespace.
      assertEquals(await b.lookup("app.example.com"), undefined);
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await redis.stop();
  }
});
