/**
 * The tunnel's bulk HTTP rows of bench/tunnel.ts, tree against tree (issue 20): one curl
 * download (`GET /bytes/N`) and one chunked upload (`POST /discard` from a pipe) of `--mib` MiB
 * per path and round, through the raw tunnel (tunnel-server + tunnel-client) of each tree
 * (`--trees old=/work/old-start,new=.`; `name=DIR:K=V+K2=V2` gives that tree's server and client
 * those environment variables: a scratch switch), its embeddable Hono front (the tree's
 * bench/_tunnel_hono.ts, `--hono`), two haproxy TCP hops in series (the C peer) and direct,
 * rounds interleaved (order reversed every other round). Prints per path the median MB/s each
 * way, the median of the same-round ratios to haproxy x2, and the hops' CPU s/GiB (server +
 * client) each way; with `--each`, every round's figures too (the Hono front's upload swings).
 *
 *   flock /work/brief/bench.lock deno run -A bench/_tunnel_bulk_ab.ts \
 *     --trees old=/work/old-start,new=. --rounds 5 --mib 512 [--up-only] [--hono]
 *
 * The app is bench/tunnel.ts's app role (Deno.serve) in a child process.
 * @module
 */

import {
  benchFlags,
  benchPath,
  benchTrees,
  curl,
  curlUpload,
  fixed,
  freePort,
  hasCommand,
  listeningPort,
  median,
  MiB,
  type Proc,
  procCpuSeconds,
  roundOrder,
  spawnDeno,
  startHaproxyHops,
  startTunnelClient,
  stopAll,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 5, mib: 512 },
  booleans: ["up-only", "down-only", "hono", "each", "no-direct"],
  strings: ["trees"],
});
const trees = benchTrees(flags.trees, "new=.", ":");
const bytes = flags.mib * MiB;
const gib = bytes / (1 << 30);

const app = spawnDeno(benchPath("tunnel.ts"), [], {
  env: { BENCH_ROLE: "app", BENCH_BYTES: String(bytes) },
});
const ports = JSON.parse(await app.waitFor(/^\{"http"/)) as { http: number; tcp: number };
const procs: Proc[] = [app];
const id = "tbulk-" + crypto.randomUUID();

interface Path {
  name: string;
  url: string;
  host?: string;
  hops: Proc[];
}
const paths: Path[] = [];
if (!flags["no-direct"]) {
  paths.push({ name: "direct", url: `http://127.0.0.1:${ports.http}`, hops: [] });
}

// Two haproxy processes in TCP mode in series (as bench/tunnel.ts).
const haproxyDir = Deno.makeTempDirSync({ prefix: "warren-bench-haproxy-" });
const haproxyName = "haproxy x2 (peer)";
if (hasCommand("haproxy")) {
  const { port, hops } = await startHaproxyHops(haproxyDir, ports.http);
  procs.push(...hops);
  paths.push({ name: haproxyName, url: `http://127.0.0.1:${port}`, hops });
}

for (const [i, t] of trees.entries()) {
  const dir = t.dir === "." ? new URL("..", import.meta.url).pathname.replace(/\/$/, "") : t.dir;
  const treeEnv = Object.fromEntries(
    t.extra.split(",").filter(Boolean).map((kv) => kv.split(/=(.*)/s).slice(0, 2)),
  );
  const server = spawnDeno(`${dir}/services/tunnel-server.ts`, [
    "--listen",
    "127.0.0.1:0",
    "--host",
    `raw.test=env:TB_ID`,
    "--log-level",
    "info",
  ], { env: { TB_ID: `${id}-${i}`, ...treeEnv } });
  procs.push(server);
  const port = await listeningPort(server, "http");
  const client = await startTunnelClient(dir, port, ports.http, `${id}-${i}`, procs, {
    env: treeEnv,
  });
  paths.push({
    name: `tunnel (${t.name})`,
    url: `http://127.0.0.1:${port}`,
    host: "raw.test",
    hops: [server, client],
  });
  if (flags.hono) {
    const honoPort = freePort();
    const hono = spawnDeno(`${dir}/bench/_tunnel_hono.ts`, [], {
      env: { BENCH_PORT: String(honoPort), BENCH_ID: `${id}-hono-${i}`, ...treeEnv },
    });
    procs.push(hono);
    await hono.waitFor(/listening/);
    const hc = await startTunnelClient(dir, honoPort, ports.http, `${id}-hono-${i}`, procs, {
      env: treeEnv,
    });
    paths.push({ name: `Hono (${t.name})`, url: `http://127.0.0.1:${honoPort}`, hops: [hono, hc] });
  }
}

interface Runs {
  down: number[];
  up: number[];
  downEach: number[][];
  upEach: number[][];
}
const m: Runs[] = paths.map((p) => ({
  down: [],
  up: [],
  downEach: p.hops.map(() => []),
  upEach: p.hops.map(() => []),
}));

/** MB/s of `run` and the CPU s/GiB each hop spent meanwhile. */
async function measured(p: Path, run: () => Promise<number>): Promise<[number, number[]]> {
  const before = p.hops.map((h) => procCpuSeconds([h]));
  const rate = await run();
  return [rate, p.hops.map((h, k) => (procCpuSeconds([h]) - before[k]) / gib)];
}

const hostHeader = (p: Path) => p.host ? ["-H", `Host: ${p.host}`] : [];
async function download(p: Path): Promise<number> {
  const r = await curl([...hostHeader(p), `${p.url}/bytes/${bytes}`]);
  if (r.exit !== 0 || r.sizeDownload !== bytes) {
    console.error(`${p.name} download: exit ${r.exit}, ${r.sizeDownload} B ${r.stderr}`);
  }
  return r.downloadMBps;
}
async function upload(p: Path): Promise<number> {
  const r = await curlUpload(`${p.url}/discard`, bytes, p.host);
  if (r.exit !== 0 || r.status !== 200) {
    console.error(`${p.name} upload: exit ${r.exit}, HTTP ${r.status} ${r.stderr}`);
  }
  return r.uploadMBps;
}

const pad = (s: string) => s.padEnd(22);
const num = (x: number, d = 0) => fixed(x, d).padStart(9);
try {
  for (let round = 1; round <= flags.rounds; round++) {
    for (const [i, p] of roundOrder(paths, round)) {
      if (!flags["up-only"]) {
        const [rate, each] = await measured(p, () => download(p));
        m[i].down.push(rate);
        each.forEach((s, k) => m[i].downEach[k].push(s));
      }
      if (!flags["down-only"]) {
        const [rate, each] = await measured(p, () => upload(p));
        m[i].up.push(rate);
        each.forEach((s, k) => m[i].upEach[k].push(s));
      }
      if (flags.each) {
        const last = (a: number[]) => a.length ? fixed(a[a.length - 1]) : "-";
        console.error(
          `  round ${round} ${pad(p.name)} down ${last(m[i].down)} up ${last(m[i].up)}`,
        );
      }
    }
    console.error(
      `  round ${round} done (load ${Deno.loadavg().map((x) => fixed(x, 1)).join(" ")})`,
    );
  }
  const hap = paths.findIndex((p) => p.name === haproxyName);
  const ratio = (i: number, k: "down" | "up") =>
    hap < 0 || m[i][k].length === 0 ? NaN : median(m[i][k].map((v, r) => v / m[hap][k][r]));
  const cpu = (each: number[][]) =>
    each.length === 0 ? "-" : each.map((s) => fixed(median(s), 2)).join("+");
  console.log(
    `bulk HTTP, ${flags.mib} MiB per transfer, ${flags.rounds} rounds (median; x hap2: median of ` +
      `same-round ratios; CPU s/GiB per hop: server+client)`,
  );
  console.log(
    `${pad("path")}  down MB/s  x hap2   up MB/s  x hap2   CPU down        CPU up`,
  );
  for (const [i, p] of paths.entries()) {
    const r = m[i];
    console.log(
      `${pad(p.name)}${num(median(r.down))}${num(ratio(i, "down"), 2)}${num(median(r.up))}${
        num(ratio(i, "up"), 2)
      }   ${cpu(r.downEach).padEnd(14)}  ${cpu(r.upEach)}`,
    );
    if (flags.each) {
      console.log(
        `${pad("")}  down ${r.down.map((x) => fixed(x)).join(" ")}; up ${
          r.up.map((x) => fixed(x)).join(" ")
        }`,
      );
    }
  }
} finally {
  await stopAll([...procs].reverse());
  Deno.removeSync(haproxyDir, { recursive: true });
}
Deno.exit(0);
