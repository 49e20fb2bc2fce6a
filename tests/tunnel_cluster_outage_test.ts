/**
 * Redis down (an outage, not a restart): instance B never looked up the client A holds, so no
 * lease it read and no link it used says where that client is. B asks the instances it knew
 * at its last heartbeat, over their links, whether they hold it: A says yes and serves the
 * request (the old code answered 502 no-client). A client connected nowhere gets 502 once
 * every instance answered no, and a host none has 404; when one cannot answer (C stopped), B
 * cannot tell and answers 503 with a Retry-After instead of a definitive no-client or 404.
 * B cut off from Redis alone (A reaches it): a host added through A meanwhile is routed by
 * asking A (the old code answered 404); a name A said it lacks is not asked again at once, and
 * at most `maxHostAsks` names are asked at a time (a flood of names gets 503, not a round to
 * every peer each). In process, a real redis-server,
 * heartbeats every 200 s (member's default leases): B's copies of the hosts and instances are
 * those of its first beat.
 */

import { assertEquals } from "./_assert.ts";
import { member, withOutageCluster } from "./_tunnel_cluster.ts";
import { maxHostAsks } from "../lib/tunnel/mod.ts";
import { rawGet, startApp, startClient } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { until } from "./_util.ts";

const id = "cluster-outage-identifier-01";
const idle = "cluster-outage-identifier-02";

Deno.test("tunnel cluster: during a Redis outage an instance that never looked a client up asks its peers: served where held, 502 when held nowhere, 503 + Retry-After when a peer cannot answer", async () => {
  // B joins last: its first beat reads both hosts and the instances A and C.
  const hosts = { "app.test": id, "idle.test": idle };
  const bOpts = { links: { hostAnswerMs: 600_000 } };
  await withOutageCluster(hosts, id, bOpts, async ({ redis, b, stopC }) => {
    assertEquals(b.registry.peers().map((p) => p.name).sort(), ["a", "c"]);
    await redis.down();

    const got = await rawGet(b.tunnel.port, "app.test", "/name?id=outage");
    assertEquals([got.status, got.body], [200, "app outage"]);
    // Asked again, the link it found serves it (as the client's last holder).
    const again = await rawGet(b.tunnel.port, "app.test", "/name?id=again");
    assertEquals([again.status, again.body], [200, "app again"]);

    // No client for idle.test anywhere, and every peer said so: a definitive no-client.
    assertEquals((await rawGet(b.tunnel.port, "idle.test", "/")).status, 502);
    // A host nobody has, as every peer says: unknown.
    assertEquals((await rawGet(b.tunnel.port, "nope.test", "/")).status, 404);

    // C goes away (its link port closes): who holds idle.test's client cannot be told.
    await stopC();
    const unsure = await rawGet(b.tunnel.port, "idle.test", "/");
    assertEquals(unsure.status, 503, unsure.head);
    assertEquals(/^retry-after: *2\r?$/im.test(unsure.head), true, unsure.head);
    // Whether C has a host cannot be told either (one not asked about a moment ago: the
    // peers' "none" about nope.test is kept for a Retry-After's time).
    assertEquals((await rawGet(b.tunnel.port, "gone.test", "/")).status, 503);
  });
});

Deno.test("tunnel cluster: a host added on another instance after this one's last heartbeat is routed during a Redis outage", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const a = await member(redis.url, "a");
  // B's only beat is now, before the host exists (its next is 200 s away).
  const b = await member(redis.url, "b");
  const client = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await a.tunnel.server.addHost("late.test", id);
    await client.connected();
    // A holds the client once it wrote its lease (after the handshake's answer): Redis going
    // down before that fails the write, and A drops the client (it could not register it).
    await until("A to register the client", () => a.tunnel.server.clientEvents.connected === 1);
    // B's copy follows the host's change notice (the old code's copy was its last beat's).
    await until(
      "B's copy of the hosts has late.test",
      () => b.registry.copiedHosts().includes("late.test"),
    );
    await redis.down();
    const got = await rawGet(b.tunnel.port, "late.test", "/name?id=late");
    assertEquals([got.status, got.body], [200, "app late"]);
  } finally {
    await client.stop();
    await b.close();
    await a.close();
    await app.close();
    await redis.stop();
  }
});

/** A TCP relay to `port` that can be cut (its listener and every connection closed). */
function cuttableRelay(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const pipes: Promise<unknown>[] = [];
  const accepting = (async () => {
    for await (const inner of listener) {
      const outer = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null);
      if (!outer) {
        inner.close();
        continue;
      }
      conns.add(inner).add(outer);
      const pipe = (a: Deno.Conn, b: Deno.Conn) =>
        a.readable.pipeTo(b.writable).catch(() => {/* cut: either side closed */});
      pipes.push(pipe(inner, outer), pipe(outer, inner));
    }
  })();
  let open = true;
  return {
    port: listener.addr.port,
    cut: async () => {
      if (!open) return;
      open = false;
      listener.close();
      await accepting.catch(() => {/* the listener closed */});
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Closed already by its pipe's end.
        }
      }
      await Promise.all(pipes);
    },
  };
}

Deno.test("tunnel cluster: an instance cut off from Redis alone routes a host added meanwhile through another instance by asking it", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const relay = cuttableRelay(redis.port);
  const a = await member(redis.url, "a");
  const b = await member(`redis://127.0.0.1:${relay.port}`, "b");
  const client = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    assertEquals(b.registry.peers().map((p) => p.name), ["a"]);
    await relay.cut();
    // A reaches Redis: the host and the client are registered there; B hears nothing of it.
    await a.tunnel.server.addHost("during.test", id);
    await client.connected();
    assertEquals(b.registry.copiedHosts().includes("during.test"), false);
    const got = await rawGet(b.tunnel.port, "during.test", "/name?id=during");
    assertEquals([got.status, got.body], [200, "app during"]);
    // A host A does not have either: 404 (A reaches Redis, so its "none" is an answer).
    assertEquals((await rawGet(b.tunnel.port, "nope.test", "/")).status, 404);
  } finally {
    await client.stop();
    await b.close();
    await a.close();
    await app.close();
    await relay.cut();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: an instance cut off from Redis asks its peers about a missing host once, and about at most maxHostAsks hosts at a time", async () => {
  const redis = await startRedis();
  const relay = cuttableRelay(redis.port);
  const a = await member(redis.url, "a");
  // The peers' "none" kept for as long as the test runs (no timing in the test).
  const b = await member(`redis://127.0.0.1:${relay.port}`, "b", {
    links: { hostAnswerMs: 600_000 },
  });
  // A's answers to B's asks, counted; those about held-* names wait for `release`.
  const asked: string[] = [];
  let release = () => {};
  const released = new Promise<void>((r) => release = r);
  const hostHere = a.registry.hostHere.bind(a.registry);
  a.registry.hostHere = async (h: string) => {
    asked.push(h);
    if (h.startsWith("held-")) await released;
    return await hostHere(h);
  };
  const held: Promise<{ status: number }>[] = [];
  try {
    await relay.cut();
    assertEquals((await rawGet(b.tunnel.port, "nope.test", "/")).status, 404);
    // A said it has no nope.test a moment ago: not asked again (the old code asked each time).
    assertEquals((await rawGet(b.tunnel.port, "nope.test", "/")).status, 404);
    // (The wildcard walk asked about `*.test` too, once.)
    assertEquals(asked, ["nope.test", "*.test"]);

    for (let i = 0; i < maxHostAsks; i++) {
      held.push(rawGet(b.tunnel.port, `held-${i}.test`, "/"));
    }
    await until(`A asked about ${maxHostAsks} held names`, () => asked.length === 2 + maxHostAsks);
    // Every ask slot is taken: another name is not asked about (not known now: 503).
    const over = await rawGet(b.tunnel.port, "over.test", "/");
    assertEquals(over.status, 503, over.head);
    assertEquals(asked.includes("over.test"), false);
    release();
    assertEquals((await Promise.all(held)).map((r) => r.status), Array(maxHostAsks).fill(404));
  } finally {
    release();
    await Promise.allSettled(held);
    await b.close();
    await a.close();
    await relay.cut();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: an instance that joined after this one's last heartbeat is asked during an outage (its join notice is followed)", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const relay = cuttableRelay(redis.port);
  // B's only beat is now, before D exists (its next is 200 s away).
  const b = await member(`redis://127.0.0.1:${relay.port}`, "b");
  const d = await member(redis.url, "d");
  const client = startClient({
    server: d.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await until(
      "B's peers to include D (its join notice)",
      () => b.registry.peers().some((p) => p.name === "d"),
    );
    await relay.cut();
    // D reaches Redis: the host and the client are registered there; B hears nothing of it.
    await d.tunnel.server.addHost("joined.test", id);
    await client.connected();
    // The old code asked the peers of B's beat (none) and answered 404.
    const got = await rawGet(b.tunnel.port, "joined.test", "/name?id=joined");
    assertEquals([got.status, got.body], [200, "app joined"], got.head);
  } finally {
    await client.stop();
    await d.close();
    await b.close();
    await app.close();
    await relay.cut();
    await redis.stop();
  }
});
