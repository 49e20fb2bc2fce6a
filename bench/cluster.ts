/**
 * `deno run -A bench/cluster.ts`: a tunnel-server cluster (issue 19) against one instance, in
 * one run. One app (Deno.serve, this script's child), one tunnel-client per setup:
 *
 * - "1 instance": tunnel-server with the in-memory registry, its own client;
 * - "1 instance, haproxy": the same behind haproxy (TCP mode): the balancer's own cost;
 * - "cluster: local": instance A of a two-instance cluster on a real redis-server, which
 *   holds the client (a local request, routing from the cached registry);
 * - "cluster: handoff": instance B, which hands every request to A over their mux link;
 * - "2 instances, haproxy": haproxy round-robin over A and B (half local, half handed over);
 * - "--workers 2": `tunnel-server --workers 2` (two worker processes on one port, each a
 *   member of a second cluster in Redis db 1, handing requests over loopback links).
 *
 * Small responses: `wrk -t2 -c50 -d5s` GET /hello, median of `--rounds` interleaved rounds:
 * rps, p50, p99 and CPU µs per request of the processes between wrk and the app (servers,
 * client, haproxy, redis), with each one's share. Bulk: curl downloads `--bytes` (256 MiB)
 * per path, MB/s and CPU s/GiB. Then the cost of a handoff (handoff row minus local row, per
 * request) and the Redis commands per handed-over request (INFO commandstats: the routing
 * cache makes it 0 in the steady state). The box has 2 cores shared by everything here:
 * CPU per request is the figure to compare, rates are as measured. `--old DIR` adds the
 * two-instance cluster of another checkout (local and handoff rows, "(old)") for a before/after
 * in one run. Not a test.
 */

import { closeQuietly } from "../lib/net/mod.ts";
import {
  benchFlags,
  curl,
  fixed,
  formatTable,
  freePort,
  hey,
  listeningPort,
  median,
  MiB,
  type Proc,
  procCpuSeconds,
  servicePath,
  spawn,
  spawnDeno,
  startHaproxyTcp,
  stopAll,
  waitPort,
  wrk,
  type WrkResult,
} from "./_util.ts";

const chunk = new Uint8Array(MiB);

// ---------------------------------------------------------------- app role
if (Deno.env.get("BENCH_ROLE") === "app") {
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const m = /^\/bytes\/(\d+)$/.exec(new URL(req.url).pathname);
    if (!m) return new Response("hello world\n");
    let left = Number(m[1]);
    const body = new ReadableStream<Uint8Array>({
      type: "bytes",
      pull(c) {
        if (left <= 0) return c.close();
        const n = Math.min(left, chunk.length);
        c.enqueue(chunk.slice(0, n));
        left -= n;
      },
    });
    return new Response(body, { headers: { "content-length": m[1] } });
  });
  console.log(JSON.stringify({ http: http.addr.port }));
  await http.finished;
  Deno.exit(0);
}

/** Requests of the one-connection-per-request table. */
const newConnRequests = 4000;
const flags = benchFlags({
  numbers: { bytes: 256 * MiB, seconds: 5, rounds: 3 },
  strings: ["old"],
});
const tmp = Deno.makeTempDirSync({ prefix: "warren-bench-cluster-" });
const procs: Proc[] = [];
const token = "bench-cluster-token-" + crypto.randomUUID();
const identifier = "bench-cluster-id-" + crypto.randomUUID();
let appPorts = { http: 0 };
const redisPort = freePort();

/** A Redis connection of our own for INFO (a RESP client in a few lines is all we need). */
async function redisCommandCalls(port: number): Promise<number> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(new TextEncoder().encode("INFO commandstats\r\n"));
    let text = "";
    const buf = new Uint8Array(64 * 1024);
    // A bulk string: "$<len>\r\n<text>\r\n"; read until it is all here.
    while (true) {
      const n = await c.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
      const len = Number(/^\$(\d+)\r\n/.exec(text)?.[1] ?? -1);
      if (len >= 0 && text.length >= len) break;
    }
    let calls = 0;
    for (const m of text.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) calls += Number(m[1]);
    // This INFO itself and the ones before it are not the cluster's.
    return calls - Number(/^cmdstat_info:calls=(\d+)/m.exec(text)?.[1] ?? 0);
  } finally {
    closeQuietly(c);
  }
}

/** haproxy in TCP mode on a free port, round robin over `targets`. */
async function startHaproxy(
  name: string,
  targets: number[],
): Promise<{ proc: Proc; port: number }> {
  const h = await startHaproxyTcp(tmp, name, targets);
  procs.push(h.proc);
  return h;
}

/** A tunnel-server with `args`; its public port. */
async function startServer(
  name: string,
  args: string[],
  script = servicePath("tunnel-server.ts"),
): Promise<{ proc: Proc; port: number }> {
  const proc = spawnDeno(script, [
    "--listen",
    "127.0.0.1:0",
    "--host",
    "app.test=env:BENCH_ID",
    "--log-level",
    "info",
    ...args,
  ], {
    env: { BENCH_ID: identifier, ...(args.length ? { TUNNEL_CLUSTER_TOKEN: token } : {}) },
    name,
  });
  procs.push(proc);
  return { proc, port: await listeningPort(proc, "http") };
}

/** A tunnel-client of the app connected to `port`. */
async function startClient(name: string, port: number): Promise<Proc> {
  const proc = spawnDeno(servicePath("tunnel-client.ts"), [
    "--server",
    `http://127.0.0.1:${port}`,
    "--local",
    `127.0.0.1:${appPorts.http}`,
    "--log-level",
    "info",
  ], { env: { TUNNEL_IDENTIFIER: identifier }, name });
  procs.push(proc);
  await proc.waitFor(/msg="connected"/);
  return proc;
}

interface Path {
  name: string;
  port: number;
  hops: Proc[];
}

/** Every process of the run, started; the paths measured. */
async function setUp(): Promise<Path[]> {
  const app = spawnDeno(import.meta.filename!, [], { env: { BENCH_ROLE: "app" }, name: "app" });
  procs.push(app);
  appPorts = JSON.parse(await app.waitFor(/^\{"http"/)) as { http: number };

  // One instance, in-memory registry.
  const single = await startServer("single", []);
  const singleClient = await startClient("single-client", single.port);
  const singleHap = await startHaproxy("hap-single", [single.port]);

  // The cluster: redis, A (holds the client), B.
  const redis = spawn("redis-server", [
    "--port",
    String(redisPort),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    tmp,
  ], { output: "discard", name: "redis" });
  procs.push(redis);
  await waitPort(redisPort, "redis-server");
  const clusterArgs = [
    "--registry",
    `redis://127.0.0.1:${redisPort}`,
    "--cluster-listen",
    "127.0.0.1:0",
  ];
  const a = await startServer("A", clusterArgs);
  const b = await startServer("B", clusterArgs);
  const clusterClient = await startClient("cluster-client", a.port);
  const clusterHap = await startHaproxy("hap-cluster", [a.port, b.port]);
  // Two worker processes on one port (SO_REUSEPORT) under the kit's supervisor, each a member.
  const workersPort = freePort();
  const workers = spawn(Deno.execPath(), [
    "run",
    "-A",
    "--unstable-net",
    servicePath("tunnel-server.ts"),
    "--listen",
    `127.0.0.1:${workersPort}`,
    "--host",
    "app.test=env:BENCH_ID",
    "--registry",
    `redis://127.0.0.1:${redisPort}/1`,
    "--workers",
    "2",
    "--log-level",
    "info",
  ], { env: { BENCH_ID: identifier, TUNNEL_CLUSTER_TOKEN: token }, name: "workers" });
  procs.push(workers);
  await workers.waitFor(/msg="workers ready"/);
  const workersClient = await startClient("workers-client", workersPort);
  // B's first request opens its link to A.
  await curl(["-H", "Host: app.test", `http://127.0.0.1:${b.port}/hello`], { expectStatus: 200 });

  // `--old DIR`: the same two-instance cluster from another checkout (its services/), for a
  // before/after of the routing cache in one run (Redis db 2, the same client program).
  const old: Path[] = [];
  if (flags.old) {
    const script = `${flags.old}/services/tunnel-server.ts`;
    const oldArgs = [
      "--registry",
      `redis://127.0.0.1:${redisPort}/2`,
      "--cluster-listen",
      "127.0.0.1:0",
    ];
    const oa = await startServer("A-old", oldArgs, script);
    const ob = await startServer("B-old", oldArgs, script);
    const oldClient = await startClient("old-client", oa.port);
    await curl(["-H", "Host: app.test", `http://127.0.0.1:${ob.port}/hello`], {
      expectStatus: 200,
    });
    old.push(
      { name: "cluster: local (old)", port: oa.port, hops: [oa.proc, oldClient, redis] },
      { name: "cluster: handoff (old)", port: ob.port, hops: [ob.proc, oa.proc, oldClient, redis] },
    );
  }

  return [
    { name: "direct (app)", port: appPorts.http, hops: [] },
    { name: "1 instance", port: single.port, hops: [single.proc, singleClient] },
    {
      name: "1 instance, haproxy",
      port: singleHap.port,
      hops: [singleHap.proc, single.proc, singleClient],
    },
    { name: "cluster: local (A)", port: a.port, hops: [a.proc, clusterClient, redis] },
    { name: "cluster: handoff (B)", port: b.port, hops: [b.proc, a.proc, clusterClient, redis] },
    {
      name: "2 instances, haproxy",
      port: clusterHap.port,
      hops: [clusterHap.proc, a.proc, b.proc, clusterClient, redis],
    },
    { name: "--workers 2", port: workersPort, hops: [workers, workersClient, redis] },
    ...old,
  ];
}

/** CPU seconds of each of `hops` while `run` goes. */
async function cpuDuring<T>(hops: Proc[], run: () => Promise<T>) {
  const before = hops.map((h) => procCpuSeconds([h]));
  const result = await run();
  return { result, cpuS: hops.map((h, i) => procCpuSeconds([h]) - before[i]) };
}

const us = (s: number, requests: number) => s * 1e6 / requests;
try {
  const paths = await setUp();
  console.log(
    `small responses: wrk -t2 -c50 -d${flags.seconds}s GET /hello, median of ${flags.rounds} rounds`,
  );
  const small = paths.map(() => ({ runs: [] as WrkResult[], cpuUs: [] as number[][] }));
  /** Redis commands per request of each handoff row (its last round). */
  const redisCalls = new Map<string, number>();
  for (let round = 1; round <= flags.rounds; round++) {
    for (const [i, p] of paths.entries()) {
      const calls0 = p.name.includes("handoff") ? await redisCommandCalls(redisPort) : 0;
      const { result: r, cpuS } = await cpuDuring(
        p.hops,
        () => wrk(`http://127.0.0.1:${p.port}/hello`, { seconds: flags.seconds, host: "app.test" }),
      );
      if (p.name.includes("handoff")) {
        redisCalls.set(p.name, ((await redisCommandCalls(redisPort)) - calls0) / r.requests);
      }
      small[i].runs.push(r);
      small[i].cpuUs.push(cpuS.map((s) => us(s, r.requests)));
    }
    console.error(`  round ${round} of ${flags.rounds} done`);
  }
  const med = (i: number, f: (r: WrkResult) => number) => median(small[i].runs.map(f));
  const cpu = (i: number, j: number) => median(small[i].cpuUs.map((c) => c[j]));
  const total = (i: number) => median(small[i].cpuUs.map((c) => c.reduce((x, y) => x + y, 0)));
  const rows = paths.map((p, i) => [
    p.name,
    fixed(med(i, (r) => r.rps)),
    fixed(med(i, (r) => r.p50Ms), 2),
    fixed(med(i, (r) => r.p99Ms), 2),
    String(small[i].runs.reduce((n, r) => n + r.non2xx, 0)),
    p.hops.length ? fixed(total(i)) : "-",
    p.hops.map((h, j) => `${h.name} ${fixed(cpu(i, j))}`).join(", ") || "-",
  ]);
  console.log(
    formatTable(["path", "rps", "p50 ms", "p99 ms", "non-2xx", "CPU µs/req", "of which"], rows),
  );
  for (const tree of flags.old ? ["", " (old)"] : [""]) {
    const local = paths.findIndex((p) => p.name === `cluster: local${tree ? tree : " (A)"}`);
    const handoff = paths.findIndex((p) => p.name === `cluster: handoff${tree ? tree : " (B)"}`);
    console.log(
      `\nhandoff cost${tree}: ${fixed(total(handoff) - total(local))} µs CPU per request more ` +
        `than a local one (${fixed(total(handoff))} vs ${fixed(total(local))}); the handing ` +
        `instance alone: ${fixed(cpu(handoff, 0))} µs; Redis commands per handed-over request: ` +
        `${fixed(redisCalls.get(paths[handoff].name) ?? NaN, 4)} (heartbeats included)`,
    );
  }

  // A kept-alive connection routes once (its stream carries the next requests for the same
  // host): the registry is asked per new connection. One connection per request shows it.
  console.log(
    `\nnew connection per request: hey -disable-keepalive -c 16, ${newConnRequests} requests`,
  );
  const fresh: string[][] = [];
  for (const p of paths.filter((p) => p.name.startsWith("cluster:"))) {
    const calls0 = await redisCommandCalls(redisPort);
    const { result: rps, cpuS } = await cpuDuring(p.hops, () =>
      hey(newConnRequests, 16, [
        "-disable-keepalive",
        "-host",
        "app.test",
        `http://127.0.0.1:${p.port}/hello`,
      ]));
    const calls = (await redisCommandCalls(redisPort)) - calls0;
    fresh.push([
      p.name,
      fixed(rps),
      fixed(us(cpuS.reduce((x, y) => x + y, 0), newConnRequests)),
      fixed(calls / newConnRequests, 2),
    ]);
  }
  console.log(formatTable(["path", "rps", "CPU µs/req", "Redis cmds/req"], fresh));

  console.log(`\nbulk: curl downloads ${flags.bytes / MiB} MiB per path`);
  const gib = flags.bytes / (1 << 30);
  const bulk: string[][] = [];
  for (const p of paths) {
    const { result: r, cpuS } = await cpuDuring(
      p.hops,
      () =>
        curl(["-H", "Host: app.test", `http://127.0.0.1:${p.port}/bytes/${flags.bytes}`], {
          expectStatus: 200,
          expectBytes: flags.bytes,
        }),
    );
    const sum = cpuS.reduce((x, y) => x + y, 0);
    bulk.push([
      p.name,
      fixed(r.downloadMBps),
      p.hops.length ? fixed(sum / gib, 2) : "-",
      p.hops.map((h, j) => `${h.name} ${fixed(cpuS[j] / gib, 2)}`).join(", ") || "-",
    ]);
  }
  console.log(formatTable(["path", "MB/s", "CPU s/GiB", "of which"], bulk));
} finally {
  await stopAll(procs.toReversed());
  Deno.removeSync(tmp, { recursive: true });
}
Deno.exit(0);
