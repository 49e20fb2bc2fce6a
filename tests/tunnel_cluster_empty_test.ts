/**
 * A Redis outage, then Redis restarted empty, drops nothing a cluster could serve (issue 19):
 * a client held by instance A is reached through instance B (HTTP, and the TCP port it asks
 * for) while Redis is down and while it is back empty before A wrote its lease back. A is
 * paused (SIGSTOP) across the restart so that B surely finds no lease; B sends the requests
 * over its link to A, where they are served once A resumes. Background load through both
 * instances runs the whole time, and every request of it must be served, byte-exact.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import {
  blockStreamSha256,
  portOf,
  readWithin,
  type ServiceProcess,
  until as waitUntil,
} from "./_util.ts";
import {
  hashThrough,
  portOnBoth,
  rawGet,
  startApp,
  startClientProcess,
  startClusterMember,
  startHasher,
} from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { RedisRegistry } from "../lib/tunnel/mod.ts";
import { writeAll } from "../lib/net/mod.ts";

const id = "cluster-empty-identifier-01";
const token = "cluster-empty-link-token-01";

/**
 * _util's until(), a throw counting as not yet (the watcher's Redis connection may be
 * reconnecting).
 */
function until(what: string, f: () => Promise<boolean>): Promise<void> {
  return waitUntil(what, () => f().catch(() => false));
}

/** One inline command to the Redis on `port`, on a connection of its own: the reply's first line. */
async function redisCommand(port: number, command: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, new TextEncoder().encode(`${command}\r\n`));
    const buf = new Uint8Array(512);
    const n = await readWithin(conn, buf, `Redis's reply to ${command}`);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

/**
 * Two cluster members, A on 127.0.0.1 and B on 127.0.0.2, sharing `redisUrl`, both with
 * `--host app.test` and the TCP port range `port`-`port`, logging at debug.
 */
async function pair(redisUrl: string, port: number, procs: ServiceProcess[]) {
  const member = async (host: string) => {
    const p = await startClusterMember(redisUrl, token, [
      "--tcp-ports",
      `${port}-${port}`,
      "--tcp-host",
      host,
      "--host",
      "app.test=env:ID",
      // Leases of 6 s: B keeps A's port claim while A is paused a moment.
      "--heartbeat",
      "2s",
      "--log-level",
      "debug",
    ], { env: { ID: id } });
    procs.push(p);
    return p;
  };
  const a = await member("127.0.0.1");
  const b = await member("127.0.0.2");
  return { a, b, portA: portOf(a.addrs.get("http")!), portB: portOf(b.addrs.get("http")!) };
}

/** B's line for a request it sent to the last holder because Redis could not say where. */
const viaLastHolder = /msg="no lease in the registry: the client's last holder serves it"/;

Deno.test("tunnel cluster: Redis down, then restarted empty, under load: every HTTP request and TCP connection through either instance is served, byte-exact", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const hasher = startHasher();
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  const procs: ServiceProcess[] = [];
  const P = portOnBoth();
  let paused: ServiceProcess | undefined;
  let stop = false;
  const loads: Promise<void>[] = [];
  try {
    const { a, b, portA, portB } = await pair(redis.url, P, procs);
    procs.push(
      await startClientProcess(a.addrs.get("http")!, app.port, id, [
        "--tcp",
        `${P}=127.0.0.1:${hasher.port}`,
      ]),
    );
    await b.waitFor(new RegExp(`msg="listening" name=tcp-${P} addr=127\\.0\\.0\\.2:`));
    await until("A holds the lease", async () => (await watcher.getClient(id)) !== undefined);
    // B has reached the client over its link to A.
    assertEquals((await rawGet(portB, "app.test", "/name?id=first")).body, "app first");
    assertEquals(await hashThrough(P, 4096, 1, "127.0.0.2"), blockStreamSha256(4096, 1));

    // Load through both instances, HTTP and the TCP port, until the end.
    const failures: string[] = [];
    let served = 0;
    const at = (i: number) => i % 2 === 0 ? "B" : "A";
    loads.push((async () => {
      for (let i = 0; !stop; i++) {
        const r = await rawGet(i % 2 === 0 ? portB : portA, "app.test", `/name?id=${i}`)
          .catch((err) => ({ status: 0, body: String(err) }));
        if (r.status === 200 && r.body === `app ${i}`) served++;
        else failures.push(`HTTP via ${at(i)}: ${r.status} ${r.body.slice(0, 100)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    })());
    loads.push((async () => {
      for (let i = 0; !stop; i++) {
        const got = await hashThrough(P, 65536, i, i % 2 === 0 ? "127.0.0.2" : "127.0.0.1")
          .catch((err) => String(err));
        if (got === blockStreamSha256(65536, i)) served++;
        else failures.push(`TCP via ${at(i)}: ${got.slice(0, 100)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    })());
    const servedBy = (n: number) => {
      const want = served + n;
      return until(`${n} more served`, () => Promise.resolve(served >= want));
    };
    await servedBy(20);

    // Redis down: B cannot look the client up; its link to A serves it.
    let mark = b.lines.length;
    await redis.down();
    await b.waitFor(/redis connection lost/, undefined, mark);
    assertEquals((await rawGet(portB, "app.test", "/name?id=down")).body, "app down");
    assertEquals(await hashThrough(P, 1 << 20, 2, "127.0.0.2"), blockStreamSha256(1 << 20, 2));
    await servedBy(20);

    // Redis back empty, A paused so it cannot write its lease back: B finds no lease.
    a.child.kill("SIGSTOP");
    paused = a;
    mark = b.lines.length;
    await redis.up();
    await b.waitFor(/redis connected/, undefined, mark);
    await until("B wrote its records back", async () => (await watcher.instances()).length === 2);
    mark = b.lines.length;
    const http = rawGet(portB, "app.test", "/name?id=empty");
    const tcp = hashThrough(P, 1 << 20, 3, "127.0.0.2");
    // Both are on their way to A (the old code had answered them already: 502, closed).
    let settled = 0;
    const done = () => void settled++;
    http.then(done, done);
    tcp.then(done, done);
    await until(
      "B routes both to A, or answers them",
      () =>
        Promise.resolve(
          settled > 0 || b.lines.slice(mark).filter((l) => viaLastHolder.test(l)).length >= 2,
        ),
    );
    a.child.kill("SIGCONT");
    paused = undefined;
    assertEquals((await http).body, "app empty");
    assertEquals(await tcp, blockStreamSha256(1 << 20, 3));

    await until(
      "A wrote the lease back",
      async () => (await watcher.getClient(id)) !== undefined,
    );
    await servedBy(40);
    stop = true;
    await Promise.all(loads);
    assertEquals(failures, [], `${served} served`);
    console.log(`redis down and restarted empty under load: ${served} served, none failed`);
  } finally {
    stop = true;
    paused?.child.kill("SIGCONT");
    await Promise.allSettled(loads);
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await hasher.close();
    await app.close();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: a host added through an instance is found while Redis, back empty, waits for that instance to write it back", async () => {
  const redis = await startRedis();
  const reg = await RedisRegistry.connect({ url: redis.url, instance: "one", leaseMs: 3_000 });
  // Something kept beside the registry whose look at Redis, the last step of a heartbeat, can
  // be held: the write-back that reconnecting queues behind it waits until it is let go (no
  // Redis command is held meanwhile, so the test's own reads go through).
  let hold: PromiseWithResolvers<void> | undefined;
  const holding = Promise.withResolvers<void>();
  reg.extend({
    noticePrefix: "test:",
    notice: () => {},
    sync: () => {
      if (!hold) return Promise.resolve();
      holding.resolve();
      return hold.promise;
    },
  });
  try {
    await reg.addHost("kept.test", id);
    hold = Promise.withResolvers<void>();
    await holding.promise;
    // Redis loses everything and drops its connections, as a restart does: the registry
    // reconnects; its write-back waits behind the held heartbeat.
    assertEquals(await redisCommand(redis.port, "FLUSHALL"), "+OK");
    assertMatch(await redisCommand(redis.port, "CLIENT KILL TYPE normal"), /^:[1-9]/);
    assertMatch(await redisCommand(redis.port, "CLIENT KILL TYPE pubsub"), /^:[1-9]/);
    await until("the registry reconnected", () => reg.isKnown(id).then(() => true));
    assertEquals(await redisCommand(redis.port, "HLEN warren:tunnel:hosts"), ":0");
    // Asked now, while Redis has no such host (the old code answered: no such host).
    const looked = reg.lookup("kept.test");
    const routed = reg.route("kept.test");
    const h = hold;
    hold = undefined;
    h.resolve();
    assertEquals(await looked, id);
    assertEquals(await routed, id);
    assertEquals(await redisCommand(redis.port, "HLEN warren:tunnel:hosts"), ":1");
  } finally {
    hold?.resolve();
    await reg.close();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: a client that left its holder while Redis was down is refused there, and not sent there once the holder wrote its records back", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  const procs: ServiceProcess[] = [];
  try {
    const { a, b, portB } = await pair(redis.url, portOnBoth(), procs);
    const client = await startClientProcess(a.addrs.get("http")!, app.port, id);
    await until("A holds the lease", async () => (await watcher.getClient(id)) !== undefined);
    assertEquals((await rawGet(portB, "app.test", "/name?id=first")).body, "app first");

    // Redis down; the client leaves A, which cannot release its lease.
    await redis.down();
    await b.waitFor(/redis connection lost/);
    await a.waitFor(/redis connection lost/);
    await client.stop();
    await a.waitFor(/msg="client disconnected"/);
    // B tries A, the last holder, which refuses: a 502 at once, not a hang.
    let marks = [a.lines.length, b.lines.length];
    assertEquals((await rawGet(portB, "app.test", "/name?id=gone")).status, 502);
    await b.waitFor(viaLastHolder, undefined, marks[1]);
    await a.waitFor(
      /msg="cluster stream (for a client not held here|failed)"/,
      undefined,
      marks[0],
    );

    // Redis back empty; A writes its own record back without the lease: B no longer asks A.
    await redis.up();
    await until(
      "A and B wrote their records back",
      async () => (await watcher.instances()).length === 3,
    );
    marks = [a.lines.length, b.lines.length];
    assertEquals((await rawGet(portB, "app.test", "/name?id=after")).status, 502);
    assertEquals(b.lines.slice(marks[1]).filter((l) => viaLastHolder.test(l)), []);
    assertEquals(a.lines.slice(marks[0]).filter((l) => /msg="cluster stream/.test(l)), []);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await app.close();
    await redis.stop();
  }
});
