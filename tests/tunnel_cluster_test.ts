/**
 * tunnel-server instances sharing a real redis-server (`--registry`, issue 19): the client's
 * lease names the instance holding it, a Redis outage keeps serving the held client and
 * refuses new ones (503 registry-unavailable), and Redis restarted empty gets the hosts and
 * the lease back.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import {
  blockStreamSha256,
  portOf,
  randomBlock,
  run,
  type ServiceProcess,
  sha256,
  startService,
} from "./_util.ts";
import { curl, rawGet, startApp, startClientProcess, startClusterMember } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { RedisRegistry } from "../lib/tunnel/mod.ts";

const id = "cluster-identifier-0001";

/** Poll `f` until it holds (a bound far above a few heartbeats; never a timing assertion). */
async function until(what: string, f: () => Promise<boolean>, maxMs = 20_000): Promise<void> {
  const end = Date.now() + maxMs;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test("tunnel cluster: --registry redis shares hosts and the client's lease; outage and restart", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const procs: ServiceProcess[] = [];
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  try {
    const args = ["--listen", "127.0.0.1:0", "--heartbeat", "300ms", "--host", `app.test=${id}`];
    const a = await startService("tunnel-server.ts", args, {
      env: { TUNNEL_REGISTRY: redis.url },
    });
    procs.push(a);
    assertMatch(await a.waitFor(/msg="registry"/), /kind=redis addr=redis:\/\/127\.0\.0\.1:\d+/);
    const b = await startService("tunnel-server.ts", [...args, "--registry", redis.url]);
    procs.push(b);
    const portA = portOf(a.addrs.get("http")!);
    const client = await startClientProcess(`127.0.0.1:${portA}`, app.port, id);
    procs.push(client);
    assertEquals((await curl(portA, "app.test", "/name?id=1")).body, "app 1");
    await until("a lease", async () => (await watcher.getClient(id)) !== undefined);
    const lease = (await watcher.getClient(id))!;
    const instances = await watcher.instances();
    assertEquals(instances.length, 3);
    assert(instances.some((i) => i.name === lease.instance), "held by a live instance");

    // Redis goes away: the held client keeps serving, a new client is refused with the reason.
    await redis.down();
    assertEquals((await curl(portA, "app.test", "/name?id=2")).body, "app 2");
    const refused = await run("curl", [
      "-sS",
      "-o",
      "-",
      "-w",
      "\n%{http_code}",
      "-H",
      "Upgrade: warren-mux",
      "-H",
      "Connection: Upgrade",
      "-H",
      `X-Tunnel-Identifier: ${id}`,
      `http://127.0.0.1:${portA}/_controlPath_/`,
    ]);
    assertMatch(refused.stdout, /registry is unavailable[^]*\n503$/);
    await a.waitFor(/failure=registry-unavailable/);

    // Redis returns empty: the instances write their hosts and the lease back.
    await redis.up();
    await until("the lease is back", async () => (await watcher.getClient(id)) !== undefined);
    assert((await watcher.lookup("app.test")) !== undefined, "the host is back");
    assertEquals((await curl(portA, "app.test", "/name?id=3")).body, "app 3");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await app.close();
    await redis.stop();
  }
});

const token = "cluster-link-token-0001";

Deno.test("tunnel cluster: a request to the instance that does not hold the client is served byte-exact over the link", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const procs: ServiceProcess[] = [];
  const upload = await Deno.makeTempFile();
  try {
    const instance = async () => {
      const p = await startClusterMember(redis.url, token, [
        "--host",
        `app.test=${id}`,
        // Deno's WebSocket sends Host from the URL: this name lets it reach the app.
        "--host",
        `127.0.0.1=${id}`,
      ]);
      procs.push(p);
      return portOf(p.addrs.get("http")!);
    };
    const portA = await instance();
    const portB = await instance();
    procs.push(
      await startClientProcess(`127.0.0.1:${portA}`, app.port, id),
    );
    // Small requests, each way: B hands them to A, which holds the client.
    for (let i = 0; i < 5; i++) {
      assertEquals((await curl(portB, "app.test", `/name?id=${i}`)).body, `app ${i}`);
    }
    const total = 4 * 1024 * 1024 + 17;
    const down = await run("curl", [
      "-sS",
      "--max-time",
      "60",
      "-H",
      "Host: app.test",
      `http://127.0.0.1:${portB}/bytes/${total}?seed=5`,
    ]);
    assertEquals(down.code, 0, down.stderr);
    assertEquals(down.raw.length, total);
    assertEquals(sha256(down.raw), blockStreamSha256(total, 5));
    const body = new Uint8Array(3 * 1024 * 1024 + 5);
    for (let i = 0; i < body.length; i += randomBlock.length) {
      body.set(randomBlock.subarray(0, Math.min(randomBlock.length, body.length - i)), i);
    }
    await Deno.writeFile(upload, body);
    const up = await run("curl", [
      "-sS",
      "--max-time",
      "60",
      "-H",
      "Host: app.test",
      "--data-binary",
      `@${upload}`,
      `http://127.0.0.1:${portB}/sha256`,
    ]);
    assertEquals(JSON.parse(up.stdout), { sha256: sha256(body), bytes: body.length });
    // A WebSocket through B: the upgrade and every message go over the link both ways.
    const ws = new WebSocket(`ws://127.0.0.1:${portB}/ws`);
    ws.binaryType = "arraybuffer";
    const big = body.subarray(0, 1024 * 1024 + 3);
    const echoed = await new Promise<string[]>((resolve, reject) => {
      const got: string[] = [];
      ws.onopen = () => {
        ws.send("hello over the link");
        ws.send(big);
      };
      ws.onmessage = (e) => {
        got.push(typeof e.data === "string" ? e.data : sha256(new Uint8Array(e.data)));
        if (got.length === 2) ws.close();
      };
      ws.onclose = () => resolve(got);
      ws.onerror = (e) => reject(new Error(`websocket error: ${(e as ErrorEvent).message}`));
    });
    assertEquals(echoed, ["hello over the link", sha256(big)]);
    // A wrong token gets no link: B's instance record is real, the token is not.
    const bad = await startService("tunnel-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--registry",
      redis.url,
      "--host",
      `app.test=${id}`,
    ], { env: { TUNNEL_CLUSTER_TOKEN: "not-the-cluster-token" } });
    procs.push(bad);
    const c = await curl(portOf(bad.addrs.get("http")!), "app.test", "/name?id=x");
    assertEquals(c.status, 502);
    await procs[0].waitFor(/cluster link refused.*failure=bad-token/);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await Deno.remove(upload);
    await app.close();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: kill -9 of the instance holding the client: it moves to the other, requests recover", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const procs: ServiceProcess[] = [];
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  try {
    const instance = async () => {
      const p = await startClusterMember(redis.url, token, [
        "--host",
        `app.test=${id}`,
      ]);
      procs.push(p);
      return [p, portOf(p.addrs.get("http")!)] as const;
    };
    const [a, portA] = await instance();
    const [, portB] = await instance();
    const client = await startService("tunnel-client.ts", [
      "--server",
      `http://127.0.0.1:${portA},http://127.0.0.1:${portB}`,
      "--local",
      `127.0.0.1:${app.port}`,
      "--heartbeat",
      "300ms",
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
    procs.push(client);
    assertMatch(client.lines.find((l) => /msg="connected"/.test(l))!, new RegExp(`:${portA}`));
    // The lease is written just after the handshake the client logs.
    await until("a lease", async () => (await watcher.getClient(id)) !== undefined);
    const before = (await watcher.getClient(id))!.instance;

    // Sequential requests to B (which hands them to A) while A is killed.
    let ok = 0, failed = 0, streak = 0, i = 0, lastFailAt = 0;
    const outcomes: string[] = [];
    const one = async () => {
      const n = i++;
      try {
        const r = await rawGet(portB, "app.test", `/name?id=${n}`);
        if (r.status === 200) {
          // A wrong body would be a lost or mixed-up response: never acceptable.
          assertEquals(r.body, `app ${n}`);
          ok++;
          streak++;
          return;
        }
        outcomes.push(String(r.status));
      } catch (err) {
        if (err instanceof Error && err.name === "AssertionError") throw err;
        outcomes.push(String(err));
      }
      failed++;
      streak = 0;
      lastFailAt = Date.now();
    };
    // Sequential, but bounded: a B that never answers fails here naming what came back.
    const serveUntil = async (what: string, done: () => boolean, ms = 60_000) => {
      const end = Date.now() + ms;
      while (!done()) {
        if (Date.now() > end) throw new Error(`no ${what} in ${ms} ms: ${outcomes.join(",")}`);
        await one();
      }
    };
    await serveUntil("20 answers through B", () => ok >= 20);
    assertEquals(failed, 0, outcomes.join(","));
    // The load keeps going while A dies and the client moves.
    let moved = false;
    const load = serveUntil(
      "20 answers in a row after the move",
      () => moved && streak >= 20,
      120_000,
    );
    const killedAt = Date.now();
    await a.stop("SIGKILL");
    streak = 0;
    await client.waitFor(new RegExp(`msg="connected".*:${portB}`));
    moved = true;
    await load;
    const gapMs = failed > 0 ? lastFailAt - killedAt : 0;
    const kinds = [...new Set(outcomes)].join(",");
    console.log(`kill -9 under load: ${ok} served, ${failed} failed (${kinds}) over ${gapMs} ms`);
    // Only the gap until the client reconnected failed: 502s from B, and at most the one
    // request in flight on A when it died cut otherwise (the load is sequential).
    assert(outcomes.filter((o) => o !== "502").length <= 1, outcomes.join(","));
    await until("the lease moved", async () => {
      const now = (await watcher.getClient(id))?.instance;
      return now !== undefined && now !== before;
    });
    assertEquals((await curl(portB, "app.test", "/name?id=end")).body, "app end");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await app.close();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: a bad --registry or an unreachable Redis exits with one line", async () => {
  const svc = new URL("../services/tunnel-server.ts", import.meta.url).pathname;
  for (const bad of ["http://127.0.0.1:6379", "redis://127.0.0.1", "redis://h:1/x"]) {
    const r = await run(Deno.execPath(), ["run", "-A", svc, "--check-config", "--registry", bad]);
    assertEquals(r.code, 2, `${bad}: ${r.stderr}`);
    assertMatch(r.stderr.trim(), /^error: --registry/);
  }
  const redis = await startRedis();
  await redis.stop();
  const r = await run(Deno.execPath(), [
    "run",
    "-A",
    svc,
    "--listen",
    "127.0.0.1:0",
    "--registry",
    `redis://:pw-not-logged@127.0.0.1:${redis.port}`,
  ]);
  assert(r.code !== 0, "it must not start");
  assertMatch(r.stderr, /registry unavailable/);
  assert(!r.stderr.includes("pw-not-logged"), r.stderr);
});

Deno.test("tunnel cluster: Redis restarted empty under load loses no registration and no request", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const procs: ServiceProcess[] = [];
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  try {
    const instance = async () => {
      const p = await startClusterMember(redis.url, token, [
        "--host",
        `app.test=${id}`,
      ]);
      procs.push(p);
      return portOf(p.addrs.get("http")!);
    };
    const portA = await instance();
    const portB = await instance();
    procs.push(
      await startClientProcess(`127.0.0.1:${portA}`, app.port, id),
    );
    await until("a lease", async () => (await watcher.getClient(id)) !== undefined);
    const holder = (await watcher.getClient(id))!.instance;

    // Requests through B (handed over to A) and A (local) while Redis restarts empty.
    let ok = 0, n = 0, streak = 0, stop = false;
    const failures: string[] = [];
    // A failed wait below never sets `stop`: the load still ends, not running on forever.
    const loadEndMs = Date.now() + 240_000;
    const load = (async () => {
      while (!stop && Date.now() < loadEndMs) {
        const i = n++;
        const port = i % 2 === 0 ? portB : portA;
        try {
          const r = await rawGet(port, "app.test", `/name?id=${i}`);
          if (r.status === 200) {
            assertEquals(r.body, `app ${i}`, "never a wrong body");
            ok++;
            streak++;
            continue;
          }
          failures.push(`${port === portA ? "A" : "B"} ${r.status}`);
        } catch (err) {
          if (err instanceof Error && err.name === "AssertionError") throw err;
          failures.push(String(err));
        }
        streak = 0;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await until("requests flow", () => Promise.resolve(ok >= 20));
    await redis.up();
    await until(
      "the lease is back",
      async () => (await watcher.getClient(id))?.instance === holder,
    );
    await until("the host is back", async () => (await watcher.lookup("app.test")) !== undefined);
    await until("both instances are back", async () => (await watcher.instances()).length === 3);
    const streakAfter = streak;
    await until("40 in a row through both", () => Promise.resolve(streak >= streakAfter + 40));
    stop = true;
    await load;
    // None lost: B reaches A's client over its link while the lease is missing, and each
    // instance finds its own hosts while it writes them back.
    assertEquals(failures, [], `${ok} served`);
    console.log(`redis restart under load: ${ok} served, none failed`);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await app.close();
    await redis.stop();
  }
});
