/**
 * Groups (tunnel-server `--duplicate balance`) and health checks (tunnel-client
 * `--health-check`), with real processes: tunnel-server and tunnel-client services, one
 * python app per member that logs every request it receives (tests/py/group_app.py), hey
 * and curl as the public clients. Distribution is counted from the apps' logs.
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  fetchJson,
  fetchText,
  portOf,
  run,
  type ServiceProcess,
  startService,
  within,
} from "./_util.ts";
import type { ClientInfo, HostStatus } from "../lib/tunnel/mod.ts";
import { startRedis } from "./_redis.ts";
import { startClusterMember } from "./_tunnel.ts";
import { BufferedReader, writeAll } from "../lib/net/mod.ts";
import { getHeader, readResponseHead } from "../lib/http/mod.ts";

const id = "group-identifier-000001";
const appScript = new URL("./py/group_app.py", import.meta.url).pathname;

/** One app behind a member: its log lines, and the files that switch its behaviour. */
interface GroupApp {
  name: string;
  port: number;
  lines: string[];
  /** Request ids it began (`begin ID`). */
  begun(): string[];
  /** `PREFIX.down` (health 503), `.broken` (500 for all), `.hold` (hold=1 requests wait). */
  set(flag: "down" | "broken" | "hold", on: boolean): Promise<void>;
  waitFor(pred: () => boolean, what: string): Promise<void>;
  kill(): Promise<void>;
}

/** Poll `pred` until it holds (bounded far above what it needs: never a timing assertion). */
async function until(
  pred: () => boolean | Promise<boolean>,
  what: string,
  ms = 30_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`not reached in ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function startGroupApp(name: string, dir: string): Promise<GroupApp> {
  const prefix = `${dir}/${name}`;
  const child = new Deno.Command("python3", {
    args: ["-u", appScript, name, prefix],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const lines: string[] = [];
  const done = (async () => {
    let pending = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        lines.push(pending.slice(0, i));
        pending = pending.slice(i + 1);
      }
    }
  })();
  let killed: Promise<void> | undefined;
  const app: GroupApp = {
    name,
    port: 0,
    lines,
    begun: () => lines.filter((l) => l.startsWith("begin ")).map((l) => l.slice(6)),
    set: async (flag, on) => {
      if (on) await Deno.writeTextFile(`${prefix}.${flag}`, "");
      else await Deno.remove(`${prefix}.${flag}`);
    },
    waitFor: (pred, what) => until(pred, `${name}: ${what}`),
    kill: () =>
      killed ??= (async () => {
        try {
          child.kill("SIGKILL");
        } catch {
          // Exited already.
        }
        await child.status;
        await done;
      })(),
  };
  try {
    await until(() => lines.some((l) => l.startsWith("listening ")), `${name} listening`);
  } catch (err) {
    await app.kill();
    throw err;
  }
  app.port = Number(lines.find((l) => l.startsWith("listening "))!.slice(10));
  return app;
}

const adminToken = "group-test-admin-token-01";

async function startServer(extra: string[]): Promise<[ServiceProcess, number]> {
  const server = await startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--duplicate",
    "balance",
    "--host",
    `app.test=${id}`,
    // Each member's stream count is what these tests read its share off: a stream per
    // public connection (hey -disable-keepalive), none kept for the next one.
    "--idle-streams",
    "0",
    ...extra,
  ], {
    readyCount: extra.includes("--admin") ? 2 : 1,
    env: { TUNNEL_ADMIN_TOKEN: adminToken },
  });
  return [server, portOf(server.addrs.get("http")!)];
}

function startMember(
  port: number,
  app: GroupApp,
  extra: string[] = [],
  identifier = id,
): Promise<ServiceProcess> {
  return startService("tunnel-client.ts", [
    "--server",
    `http://127.0.0.1:${port}`,
    "--local",
    `127.0.0.1:${app.port}`,
    ...extra,
  ], {
    readyCount: 0,
    ready: extra.includes("--health-check") ? /in rotation/ : /msg="connected"/,
    env: { TUNNEL_IDENTIFIER: identifier },
  });
}

/** hey's status code counts (`[200]\t100 responses`) and its error lines. */
async function hey(port: number, n: number, c: number): Promise<Map<number, number>> {
  const r = await run("hey", [
    "-n",
    String(n),
    "-c",
    String(c),
    "-disable-keepalive",
    "-host",
    "app.test",
    `http://127.0.0.1:${port}/r?id=hey`,
  ]);
  assertEquals(r.code, 0, r.stderr);
  const codes = new Map<number, number>();
  for (const m of r.stdout.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)) {
    codes.set(Number(m[1]), Number(m[2]));
  }
  assert(!/Error distribution/.test(r.stdout), r.stdout);
  return codes;
}

/** A kept-alive public connection: one request at a time, the body of each answer. */
async function keptAlive(port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const reader = new BufferedReader(conn);
  return {
    get: (rid: string): Promise<string> =>
      within(
        (async () => {
          await writeAll(
            conn,
            new TextEncoder().encode(`GET /r?id=${rid} HTTP/1.1\r\nHost: app.test\r\n\r\n`),
          );
          const head = await readResponseHead(reader);
          const n = Number(getHeader(head.headers, "content-length"));
          return `${head.status} ${new TextDecoder().decode(await reader.readExact(n)).trim()}`;
        })(),
        `the answer to GET /r?id=${rid} on a kept-alive connection`,
      ),
    close: () => conn.close(),
  };
}

/** One request's outcome as curl reported it. */
interface Outcome {
  id: string;
  status: number;
  exit: number;
  body: string;
}

/**
 * curl as an open-ended load: requests `?id=1…` (each on its own connection), `parallel` at
 * a time, until `stop()`; each finished request's outcome is in `done`.
 */
function curlLoad(port: number, parallel: number, query = "") {
  const child = new Deno.Command("curl", {
    args: [
      "-s",
      "-Z",
      "--parallel-max",
      String(parallel),
      "-H",
      "Host: app.test",
      "-H",
      "Connection: close",
      "-w",
      "\n=%{http_code} %{exitcode} %{url}\n",
      `http://127.0.0.1:${port}/r?${query}id=[1-1000000]`,
    ],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const done: Outcome[] = [];
  const reading = (async () => {
    let pending = "";
    let body = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        const m = /^=(\d{3}) (\d+) .*[?&]id=(\d+)/.exec(line);
        if (m) {
          done.push({ id: m[3], status: Number(m[1]), exit: Number(m[2]), body: body.trim() });
          body = "";
        } else if (line) body += line;
      }
    }
  })();
  return {
    done,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await within(Promise.all([child.status, reading]), "curl's load to stop");
    },
  };
}

async function withGroup(
  fn: (dir: string, apps: GroupApp[], procs: ServiceProcess[]) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "warren-group-" });
  const apps: GroupApp[] = [];
  const procs: ServiceProcess[] = [];
  try {
    await fn(dir, apps, procs);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    for (const a of apps) await a.kill();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tunnel group: round-robin over two clients counted in the apps' logs (hey); another identifier cannot join; a member whose app is down passes its requests on", async () => {
  await withGroup(async (dir, apps, procs) => {
    const a = await startGroupApp("A", dir);
    apps.push(a);
    const b = await startGroupApp("B", dir);
    apps.push(b);
    const [server, port] = await startServer([
      "--admin",
      "127.0.0.1:0",
      "--metrics",
      "127.0.0.1:0",
    ]);
    procs.push(server);
    procs.push(await startMember(port, a), await startMember(port, b));
    await server.waitFor(/msg="client connected".* members=2/);

    const codes = await hey(port, 200, 4);
    assertEquals([...codes], [[200, 200]]);
    assertEquals([a.begun().length, b.begun().length], [100, 100]);

    // The admin API and /status list both members with their share; metrics count them.
    const admin = `http://${server.addrs.get("admin")}`;
    const auth = { headers: { authorization: `Bearer ${adminToken}` } };
    const clients = await fetchJson<ClientInfo[]>(`${admin}/clients`, auth);
    assertEquals(clients.map((c) => [c.hosts, c.healthy, c.streams]), [
      [["app.test"], true, 100],
      [["app.test"], true, 100],
    ]);
    const hosts = await fetchJson<HostStatus[]>(`${admin}/hosts`, auth);
    assertEquals(hosts.map((h) => [h.host, h.connected, h.members, h.healthy]), [
      ["app.test", true, 2, 2],
    ]);
    const metricsAt = /msg="metrics listening" addr=(\S+)/.exec(
      await server.waitFor(/metrics listening/),
    )![1];
    const status = await fetchJson<{ hosts: HostStatus[]; clients: ClientInfo[] }>(
      `http://${metricsAt}/status`,
    );
    assertEquals(status.hosts[0].members, 2);
    assertEquals(status.clients.length, 2);
    const metrics = await fetchText(`http://${metricsAt}/metrics`);
    assert(/^warren_tunnel_clients 2$/m.test(metrics), metrics);
    assert(/^warren_tunnel_clients_unhealthy 0$/m.test(metrics), metrics);

    // A client with another identifier is refused: it cannot join the group's host.
    const intruder = await startService("tunnel-client.ts", [
      "--server",
      `http://127.0.0.1:${port}`,
      "--local",
      `127.0.0.1:${a.port}`,
    ], { readyCount: 0, env: { TUNNEL_IDENTIFIER: "not-the-group-identifier" } });
    procs.push(intruder);
    const gaveUp = await within(intruder.child.status, "the intruding client to give up");
    assertEquals(gaveUp.code, 4);
    assert(server.lines.some((l) => /failure=unknown-identifier/.test(l)), server.lines.join("\n"));

    // B's app is gone: B's dials fail before anything reached an app, so each request is
    // handed to A; no public failure.
    await b.kill();
    const before = a.begun().length;
    assertEquals([...await hey(port, 60, 4)], [[200, 60]]);
    assertEquals(a.begun().length - before, 60);
  });
});

Deno.test("tunnel group: a member failing its health check leaves the rotation before any public request fails", async () => {
  await withGroup(async (dir, apps, procs) => {
    const a = await startGroupApp("A", dir);
    apps.push(a);
    const b = await startGroupApp("B", dir);
    apps.push(b);
    const [server, port] = await startServer(["--admin", "127.0.0.1:0"]);
    procs.push(server);
    const health = ["--health-check", "/healthz", "--health-interval", "200ms"];
    const healthOut = [...health, "--health-failures", "2"];
    procs.push(await startMember(port, a, healthOut), await startMember(port, b, healthOut));
    const clients = () =>
      fetchJson<ClientInfo[]>(`http://${server.addrs.get("admin")}/clients`, {
        headers: { authorization: `Bearer ${adminToken}` },
      });
    await server.waitFor(/msg="client connected".* members=2/);
    const load = curlLoad(port, 4);
    // A kept-alive connection whose stream is on B.
    let kept = await keptAlive(port);
    try {
      await b.waitFor(() => b.begun().length >= 20, "20 requests");
      for (let i = 0; (await kept.get(`k${i}`)) !== `200 B k${i}`; i++) {
        kept.close();
        kept = await keptAlive(port);
      }
      // B's health check fails (the app is draining); its requests still work meanwhile.
      await b.set("down", true);
      await server.waitFor(/msg="client unhealthy: out of rotation"/);
      // The kept-alive connection's next request leaves B too.
      assertEquals(await kept.get("next"), "200 A next");
      // Out of rotation: once the streams B had are done, B's app may fail every request, as
      // no public request is sent there any more.
      await until(
        async () => !(await clients()).some((c) => !c.healthy && c.openStreams > 0),
        "the streams B had to end",
        60_000,
      );
      await b.set("broken", true);
      const atOut = b.begun().length;
      const aAtOut = a.begun().length;
      await a.waitFor(() => a.begun().length >= aAtOut + 100, "100 more requests");
      assertEquals(b.begun().length, atOut);
      // Healthy again: B is back in rotation.
      await b.set("broken", false);
      await b.set("down", false);
      await server.waitFor(/msg="client healthy: in rotation"/);
      await b.waitFor(() => b.begun().length >= atOut + 20, "20 more requests");
    } finally {
      kept.close();
      await load.stop();
    }
    const failed = load.done.filter((o) => o.status !== 200 || o.exit !== 0);
    assertEquals(failed, []);
    assert(load.done.length >= 140, String(load.done.length));
  });
});

Deno.test("tunnel group: kill -9 of a member under load fails only the requests in flight on it", async () => {
  await withGroup(async (dir, apps, procs) => {
    const a = await startGroupApp("A", dir);
    apps.push(a);
    const b = await startGroupApp("B", dir);
    apps.push(b);
    const [server, port] = await startServer([]);
    procs.push(server);
    procs.push(await startMember(port, a));
    const memberB = await startMember(port, b);
    procs.push(memberB);
    await server.waitFor(/msg="client connected".* members=2/);
    const parallel = 8;
    // Each request takes 100 ms at the app: about half of the 8 are in flight on B.
    const load = curlLoad(port, parallel, "ms=100&");
    let aAtKill = 0;
    try {
      await b.waitFor(() => b.begun().length >= 30, "30 requests");
      await memberB.stop("SIGKILL");
      aAtKill = a.begun().length;
      await server.waitFor(/msg="group member left"/);
      await a.waitFor(() => a.begun().length >= aAtKill + 100, "100 more requests");
    } finally {
      await load.stop();
    }
    const ok = new Set(load.done.filter((o) => o.status === 200 && o.exit === 0).map((o) => o.id));
    const failed = load.done.filter((o) => !ok.has(o.id));
    // Each failure was a request B's app had begun (in flight on the killed member) and it
    // was answered 502 by the server; every request B's app began either got through or is
    // one of them. A connection B had opened to its app without sending a request yet
    // ("empty" in its log) stands for a request B took but never passed on.
    const begunB = new Set(b.begun());
    const notBegun = failed.filter((o) => !begunB.has(o.id));
    const empty = b.lines.filter((l) => l === "empty").length;
    assert(notBegun.length <= empty, JSON.stringify({ notBegun, empty }));
    for (const o of failed) assertEquals([o.status, o.exit], [502, 0], JSON.stringify(o));
    assert(failed.length <= parallel, JSON.stringify(failed));
    const doneIds = new Set(load.done.map((o) => o.id));
    const inFlightOnB = [...begunB].filter((i) => doneIds.has(i) && !ok.has(i));
    assertEquals(inFlightOnB.sort(), failed.map((o) => o.id).filter((i) => begunB.has(i)).sort());
    // After the kill everything went to A and got through.
    const afterKill = a.begun().slice(aAtKill).filter((i) => doneIds.has(i));
    assert(afterKill.length >= 90, String(afterKill.length));
    for (const i of afterKill) assert(ok.has(i), `request ${i} at A failed`);
    console.log(
      `kill -9 of one member under load: ${failed.length} in-flight requests failed (502), ` +
        `${load.done.length - failed.length} served`,
    );
  });
});

Deno.test("tunnel group: least-streams sends new requests to the member with the fewest open streams", async () => {
  await withGroup(async (dir, apps, procs) => {
    const a = await startGroupApp("A", dir);
    apps.push(a);
    const b = await startGroupApp("B", dir);
    apps.push(b);
    const [server, port] = await startServer(["--balance", "least-streams"]);
    procs.push(server);
    procs.push(await startMember(port, a));
    // Three requests held open at A (the only member yet).
    await a.set("hold", true);
    const held = [1, 2, 3].map((i) =>
      run("curl", ["-s", "-H", "Host: app.test", `http://127.0.0.1:${port}/r?hold=1&id=held${i}`])
    );
    await a.waitFor(() => a.begun().length === 3, "3 held requests");
    procs.push(await startMember(port, b));
    await server.waitFor(/msg="client connected".* members=2/);
    // A has 3 open streams, B none: each of these goes to B.
    for (let i = 1; i <= 6; i++) {
      const r = await run("curl", [
        "-s",
        "-H",
        "Host: app.test",
        `http://127.0.0.1:${port}/r?id=${i}`,
      ]);
      assertEquals(r.stdout, `B ${i}\n`);
    }
    assertEquals(b.begun(), ["1", "2", "3", "4", "5", "6"]);
    await a.set("hold", false);
    for (const [i, r] of (await Promise.all(held)).entries()) {
      assertEquals(r.stdout, `A held${i + 1}\n`);
    }
  });
});

Deno.test("tunnel group across cluster instances: each instance balances over its own members; when the last member on the lease holder leaves, another instance's member takes the lease back", async () => {
  const redis = await startRedis();
  try {
    await withGroup(async (dir, apps, procs) => {
      const a = await startGroupApp("A", dir);
      apps.push(a);
      const b = await startGroupApp("B", dir);
      apps.push(b);
      const instance = async () => {
        const p = await startClusterMember(redis.url, "group-cluster-token-0001", [
          "--duplicate",
          "balance",
          "--host",
          `app.test=${id}`,
          // Which instance holds the lease is what this test reads: with the members' 300 ms
          // beat (a 900 ms lease and session timeout) a loaded box let an instance's records
          // expire and the lease move back (load ~12: "redis lost this instance's records",
          // the first instance never stood by), or cut a member's session (a 502 on the
          // first request). 2 s: a 6 s lease, nothing here waits on its expiry.
          "--heartbeat",
          "2s",
        ]);
        procs.push(p);
        return [p, portOf(p.addrs.get("http")!)] as const;
      };
      const [one, port1] = await instance();
      const [, port2] = await instance();
      procs.push(await startMember(port1, a));
      const memberB = await startMember(port2, b);
      procs.push(memberB);
      const get = async (port: number, i: number) =>
        (await run("curl", ["-s", "-H", "Host: app.test", `http://127.0.0.1:${port}/r?id=${i}`]))
          .stdout;
      for (let i = 0; i < 4; i++) {
        assertEquals(await get(port1, i), `A ${i}\n`);
        assertEquals(await get(port2, i), `B ${i}\n`);
      }
      // The lease went to the second instance (the last to register): the first stands by.
      await one.waitFor(/msg="client now held by another instance"/);
      await memberB.stop();
      await until(async () => (await get(port2, 99)) === "A 99\n", "instance 2 hands to A");
      await one.waitFor(/msg="client held here again"/);
      for (let i = 100; i < 104; i++) assertEquals(await get(port2, i), `A ${i}\n`);
    });
  } finally {
    await redis.stop();
  }
});
