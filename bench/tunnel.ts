/**
 * `deno run -A bench/tunnel.ts`: the HTTP vhost tunnel (services/tunnel-server.ts fast
 * path + services/tunnel-client.ts, separate processes) side by side with the local app
 * directly, a socat TCP relay (outside peer: a raw byte relay hop), OpenSSH `ssh -R` (the
 * known reverse tunnel, encrypted), one and two plain lib/net relay processes in series
 * (bench/_relay.ts: the same two user-space hops as a tunnel's server and client, with no
 * protocol on top), the tunnel with a client on its default
 * transport (auto: the raw upgrade here) and one pinned to `--transport websocket`, the raw
 * tunnel with `--access-log info`, with header rewrites (`--host-rewrite`, a request header set
 * and a response header added) and served by a group of two clients (`--duplicate balance`),
 * and the embeddable Hono front (Deno.serve + createTunnelApp), in one run:
 *
 * - small responses: `wrk -t2 -c50 -d5s --latency` on GET /hello: rps, p50, p99, ratio, and
 *   CPU µs per request of the hops and of the app; the median of `--rounds` (default 3)
 *   interleaved rounds. Beside them two haproxy processes in TCP mode in series (the C peer of
 *   the tunnel's two hops, issue 20): "x hap2" is each row's ratio to it;
 * - bulk HTTP: curl downloads 1 GiB (`--bytes`) and uploads it chunked from a pipe: MB/s, ratio;
 * - TCP tunnel: one connection reads 1 GiB from a raw TCP source directly, through the relays
 *   and through a TCP tunnel port of each client (raw and WebSocket): MB/s, ratio.
 *
 * "x2" is the ratio to the two relays in series: the tunnel against two bare Deno relay hops
 * on the same machine (not a hard floor: lib/net's relay sizes its buffers adaptively and
 * can lose to the tunnel on a single fast connection).
 *
 * "Deno floor x2" is bench/floor_proxy.ts twice in series: the least any two Deno hops can do
 * per request (read, write), the floor under the tunnel where haproxy is out of Deno's reach.
 * "Deno mux floor" is bench/floor_mux.ts's tunnel modes: each public connection a stream of one
 * mux connection to a client process that relays it to the origin, frames written once per
 * turn, nothing else (no HTTP parsing, no flow control): the floor of the tunnel's own shape.
 * `--nginx` puts nginx (one process, `return 200` on /hello) in the app's place for the small
 * responses, as issue 20's figures were taken ("ratio to direct nginx"): every path reaches it
 * and "app µs" is nginx's CPU per request; the bulk and TCP tables need the Deno app and are
 * skipped. `--small-only` skips the bulk and TCP tables; `--old DIR` adds the raw tunnel from another
 * checkout (an old tree: its services/) as "tunnel (raw, old)", its access-logged one as
 * "tunnel (raw, access log, old)", its header-rewriting one as "tunnel (raw, rewrites, old)"
 * and its Hono front (its bench/_tunnel_hono.ts) as "tunnel (Hono front, old)", for a
 * before/after in one run. `--only REGEX` measures only the small-request rows whose
 * name matches (direct, the Deno floor and relay rows and haproxy always run: the ratios need
 * them). "each µs" splits the hops' CPU per request by process (server / client for the
 * tunnel rows).
 *
 * - new connections: the same wrk run with `-H 'Connection: close'` (a new public connection per
 *   request, what a client without keep-alive costs) on direct, haproxy x2, the mux floor and
 *   the raw tunnel (and its `--old`): rps, CPU µs per request (so per connection) of each
 *   hop, "x hap2" the same-round ratio. `--new-conn-only` runs only this table.
 *
 * The app (Deno.serve) and the TCP source run in this process's child (BENCH_ROLE=app).
 * Not a test: numbers are as measured on a shared machine.
 */

import { closeQuietly, sleep } from "../lib/net/mod.ts";
import {
  benchFlags,
  benchPath,
  type BoxRun,
  boxRun,
  boxSample,
  curl,
  curlUpload,
  fixed,
  freePort,
  hasCommand,
  listeningPort,
  mbPerSec,
  median,
  MiB,
  type Proc,
  procCpuSeconds,
  procStatusKiB,
  readToEnd,
  roundOrder,
  sendBytes,
  servicePath,
  spawn,
  spawnDeno,
  type SshReverse,
  startFloor,
  startHaproxyHops,
  startHelloNginx,
  startRelay,
  startSshReverse,
  stopAll,
  waitPort,
  wrk,
  type WrkResult,
} from "./_util.ts";

const chunk = new Uint8Array(MiB);

// ---------------------------------------------------------------- app role
if (Deno.env.get("BENCH_ROLE") === "app") {
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
    if (m) {
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
    }
    if (url.pathname === "/discard") {
      let n = 0;
      for await (const c of req.body ?? new ReadableStream()) n += c.length;
      return new Response(String(n));
    }
    return new Response("hello world\n");
  });
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ http: http.addr.port, tcp: tcp.addr.port }));
  const big = new Uint8Array(4 * MiB);
  for await (const c of tcp) {
    (async () => {
      try {
        await sendBytes(c, Number(Deno.env.get("BENCH_BYTES")), big);
        await c.closeWrite();
      } catch {
        // Reader went away: next connection.
      } finally {
        closeQuietly(c);
      }
    })();
  }
}

// ---------------------------------------------------------------- helpers
const flags = benchFlags({
  numbers: { bytes: 1 << 30, seconds: 5, rounds: 3 },
  booleans: ["small-only", "nginx", "new-conn-only", "box"],
  strings: ["old", "only"],
});
const totalBytes = flags.bytes;
const wrkSeconds = flags.seconds;
const rounds = flags.rounds;
/** Width of a number column of the tables. */
const numWidth = 9;
/** Width of the path column. */
const nameWidth = 30;
/** Width of the per-process CPU column. */
const eachWidth = 16;
/** Read size of the TCP rows' client. */
const tcpReadBytes = 4 * MiB;

function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/** `services/<name>` of this checkout, or of `--old`'s with `old`. */
function service(name: string, old = false): string {
  return old ? `${flags.old}/services/${name}` : servicePath(name);
}

/** A tunnel-client process connected to the server at `server` (`--server` URL). */
async function startClient(
  server: string,
  identifier: string,
  args: string[],
  old = false,
): Promise<Proc> {
  const proc = spawnDeno(service("tunnel-client.ts", old), [
    "--server",
    server,
    "--local",
    `127.0.0.1:${ports.http}`,
    ...args,
    "--log-level",
    "info",
  ], { env: { TUNNEL_IDENTIFIER: identifier } });
  await proc.waitFor(/msg="connected"/);
  return proc;
}

/** MB/s of one connection reading all the TCP source sends (`totalBytes`) through `port`. */
async function tcpRead(port: number): Promise<number> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = performance.now();
  let n = 0;
  try {
    n = await readToEnd(c, new Uint8Array(tcpReadBytes));
  } finally {
    closeQuietly(c);
  }
  if (n !== totalBytes) console.error(`tcp read ${n} of ${totalBytes} bytes`);
  return mbPerSec(n, performance.now() - t0);
}

// ---------------------------------------------------------------- run
const app = spawnDeno(import.meta.filename!, [], {
  env: { BENCH_ROLE: "app", BENCH_BYTES: String(totalBytes) },
});
const ports = JSON.parse(await app.waitFor(/^\{"http"/)) as { http: number; tcp: number };
/** `--nginx`: the origin of the small responses (every path's target), else the Deno app. */
const nginx = flags.nginx ? await startHelloNginx() : undefined;
if (nginx) ports.http = nginx.port;
const origin = nginx?.proc ?? app;
const identifier = "bench-identifier-" + crypto.randomUUID();
// Two consecutive free ports for the two clients' TCP tunnels.
let tcpPublic = freePort();
while (tcpPublic >= 65535 || !portFree(tcpPublic + 1)) tcpPublic = freePort();
const server = spawnDeno(servicePath("tunnel-server.ts"), [
  "--listen",
  "127.0.0.1:0",
  "--host",
  "app.test=env:BENCH_ID",
  "--host",
  "raw.test=env:BENCH_RAW_ID",
  "--tcp-ports",
  `${tcpPublic}-${tcpPublic + 1}`,
  "--log-level",
  "info",
], { env: { BENCH_ID: identifier, BENCH_RAW_ID: identifier + "-raw" } });
const srvPort = await listeningPort(server, "http");
const client = await startClient(`http://127.0.0.1:${srvPort}`, identifier, [
  "--transport",
  "websocket",
  "--tcp",
  `${tcpPublic}=127.0.0.1:${ports.tcp}`,
]);
const socatPort = freePort();
const socat = spawn("socat", [
  `TCP-LISTEN:${socatPort},bind=127.0.0.1,fork,reuseaddr`,
  `TCP:127.0.0.1:${ports.http}`,
]);
// The client's default (--transport auto) takes the raw upgrade from the standalone front.
const rawClient = await startClient(`http://127.0.0.1:${srvPort}`, identifier + "-raw", [
  "--tcp",
  `${tcpPublic + 1}=127.0.0.1:${ports.tcp}`,
]);
/**
 * A tunnel-server writing one access line per request (issue 18: its cost), on a port of its
 * own: its log goes to /dev/null, so the lines (tens of thousands a second) cost the server
 * what writing them costs, not what this process takes to read and keep them (a pipe this
 * process read filled while it was busy, and the rows moved by 30 µs between runs).
 */
async function startLogged(old: boolean, env: string, id: string): Promise<[Proc, number]> {
  const port = freePort();
  const proc = spawnDeno(service("tunnel-server.ts", old), [
    "--listen",
    `127.0.0.1:${port}`,
    "--host",
    `raw.test=env:${env}`,
    "--access-log",
    "info",
  ], { env: { [env]: id }, output: "discard" });
  await waitPort(port, "access-logged tunnel-server");
  return [proc, port];
}
const [logged, loggedPort] = await startLogged(false, "BENCH_LOGGED_ID", identifier + "-logged");
const loggedClient = await startClient(
  `http://127.0.0.1:${loggedPort}`,
  identifier + "-logged",
  [],
);
// The same raw path with header rewrites (issue 18): a request header set and a response
// header added, so the front parses every response (as the access log does).
const rewriteArgs = [
  "--listen",
  "127.0.0.1:0",
  "--host",
  "raw.test=env:BENCH_REWRITE_ID",
  "--host-rewrite",
  "raw.test=req-set:X-Env:bench",
  "--host-rewrite",
  "raw.test=res-add:X-Frame-Options:DENY",
];
const rewriting = spawnDeno(servicePath("tunnel-server.ts"), rewriteArgs, {
  env: { BENCH_REWRITE_ID: identifier + "-rewrite" },
});
const rewritePort = await listeningPort(rewriting, "http");
const rewriteClient = await startClient(
  `http://127.0.0.1:${rewritePort}`,
  identifier + "-rewrite",
  [],
);
// The same raw path served by a group of two clients (`--duplicate balance`, round-robin):
// what spreading a host over two clients costs against one (issue 18).
const grouped = spawnDeno(servicePath("tunnel-server.ts"), [
  "--listen",
  "127.0.0.1:0",
  "--host",
  "raw.test=env:BENCH_GROUP_ID",
  "--duplicate",
  "balance",
], { env: { BENCH_GROUP_ID: identifier + "-group" } });
const groupPort = await listeningPort(grouped, "http");
const groupClients = [
  await startClient(`http://127.0.0.1:${groupPort}`, identifier + "-group", []),
  await startClient(`http://127.0.0.1:${groupPort}`, identifier + "-group", []),
];
const honoPort = freePort();
const hono = spawnDeno(benchPath("_tunnel_hono.ts"), [], {
  env: { BENCH_PORT: String(honoPort), BENCH_ID: identifier + "-hono" },
});
await hono.waitFor(/listening/);
const honoClient = await startClient(`http://127.0.0.1:${honoPort}`, identifier + "-hono", []);
/** The Hono front of `--old`'s checkout (its bench/_tunnel_hono.ts and services), if given. */
async function startOldHono(): Promise<{ procs: [Proc, Proc]; port: number } | undefined> {
  if (!flags.old) return undefined;
  const script = `${flags.old}/bench/_tunnel_hono.ts`;
  try {
    Deno.statSync(script);
  } catch {
    console.error(`no ${script}: no "tunnel (Hono front, old)" row`);
    return undefined;
  }
  const port = freePort();
  const proc = spawnDeno(script, [], {
    env: { BENCH_PORT: String(port), BENCH_ID: identifier + "-old-hono" },
  });
  await proc.waitFor(/listening/);
  const c = await startClient(`http://127.0.0.1:${port}`, identifier + "-old-hono", [], true);
  return { procs: [proc, c], port };
}
const oldHono = await startOldHono();
const httpRelay1 = await startRelay(ports.http);
const httpRelay2 = await startRelay(httpRelay1.port);
const tcpRelay1 = await startRelay(ports.tcp);
const tcpRelay2 = await startRelay(tcpRelay1.port);
// The least two Deno hops can do per request (bench/floor_proxy.ts: read, write, nothing else).
const floor2 = await startFloor(ports.http);
const floor1 = await startFloor(floor2.port);
// The least a multiplexed tunnel can do (bench/floor_mux.ts: each public connection a stream
// of one mux connection to a client that relays it to the origin, nothing else).
const muxFloorServer = spawnDeno(benchPath("floor_mux.ts"), [], {
  env: { BENCH_MODE: "tunnel-server" },
});
const muxFloor = JSON.parse(await muxFloorServer.waitFor(/^\{"port"/)) as {
  port: number;
  tunnel: number;
};
const muxFloorClient = spawnDeno(benchPath("floor_mux.ts"), [], {
  env: {
    BENCH_MODE: "tunnel-client",
    BENCH_SERVER: `127.0.0.1:${muxFloor.tunnel}`,
    BENCH_TARGET: `127.0.0.1:${ports.http}`,
  },
  output: "discard",
});
const relays = [
  ...[httpRelay1, httpRelay2, tcpRelay1, tcpRelay2, floor1, floor2].map((r) => r.proc),
  muxFloorServer,
  muxFloorClient,
];
// The known reverse tunnel: OpenSSH `ssh -R` forwarding a loopback port to the app and to the
// TCP source (encrypted, unlike the tunnel over plain HTTP; sshd's per-connection child does
// the work, so its CPU is not shown).
const sshHttpPort = freePort(), sshTcpPort = freePort();
const sshPeers: SshReverse[] = [];
let sshError = "";
try {
  sshPeers.push(
    await startSshReverse(`127.0.0.1:${sshHttpPort}:127.0.0.1:${ports.http}`, sshHttpPort),
  );
  sshPeers.push(
    await startSshReverse(`127.0.0.1:${sshTcpPort}:127.0.0.1:${ports.tcp}`, sshTcpPort),
  );
} catch (err) {
  sshError = `ssh -R unavailable: ${err instanceof Error ? err.message : err}`;
  console.error(sshError);
}
// The C peer of the tunnel's two hops: two haproxy processes in TCP mode, in series.
const haproxyDir = Deno.makeTempDirSync({ prefix: "warren-bench-haproxy-" });
let haproxyPort = 0;
const haproxies: Proc[] = [];
if (hasCommand("haproxy")) {
  const h = await startHaproxyHops(haproxyDir, ports.http);
  haproxyPort = h.port;
  haproxies.push(...h.hops);
} else console.error("haproxy not installed: no haproxy x2 row");
// The raw tunnel of another checkout (`--old`), for a before/after in the same run.
let oldServer: Proc | undefined, oldClient: Proc | undefined, oldPort = 0;
if (flags.old) {
  oldServer = spawnDeno(service("tunnel-server.ts", true), [
    "--listen",
    "127.0.0.1:0",
    "--host",
    "raw.test=env:BENCH_OLD_ID",
    "--log-level",
    "info",
  ], { env: { BENCH_OLD_ID: identifier + "-old" } });
  oldPort = await listeningPort(oldServer, "http");
  oldClient = await startClient(`http://127.0.0.1:${oldPort}`, identifier + "-old", [], true);
}
// And its access-logged raw tunnel, for the log's cost before/after.
let oldLogged: Proc | undefined, oldLoggedClient: Proc | undefined, oldLoggedPort = 0;
if (flags.old) {
  [oldLogged, oldLoggedPort] = await startLogged(
    true,
    "BENCH_OLD_LOGGED_ID",
    identifier + "-old-logged",
  );
  oldLoggedClient = await startClient(
    `http://127.0.0.1:${oldLoggedPort}`,
    identifier + "-old-logged",
    [],
    true,
  );
}
// And its header-rewriting one.
let oldRewriting: Proc | undefined, oldRewriteClient: Proc | undefined, oldRewritePort = 0;
if (flags.old) {
  oldRewriting = spawnDeno(service("tunnel-server.ts", true), rewriteArgs, {
    env: { BENCH_REWRITE_ID: identifier + "-old-rewrite" },
  });
  oldRewritePort = await listeningPort(oldRewriting, "http");
  oldRewriteClient = await startClient(
    `http://127.0.0.1:${oldRewritePort}`,
    identifier + "-old-rewrite",
    [],
    true,
  );
}
await sleep(300);

const floorName = "Deno relay x2";
/** `hops`: the processes between client and app whose CPU the row reports (socat forks a
 * child per connection, which its parent's counters do not show: none). */
const haproxyName = "haproxy x2 (peer)";
const muxFloorName = "Deno mux floor";
const paths: { name: string; url: string; host?: string; hops: Proc[] }[] = [
  { name: "direct", url: `http://127.0.0.1:${ports.http}`, hops: [] },
  { name: "socat relay (peer)", url: `http://127.0.0.1:${socatPort}`, hops: [] },
  ...(sshError
    ? []
    : [{ name: "ssh -R (peer)", url: `http://127.0.0.1:${sshHttpPort}`, hops: [] }]),
  { name: "Deno relay x1", url: `http://127.0.0.1:${httpRelay1.port}`, hops: [httpRelay1.proc] },
  {
    name: floorName,
    url: `http://127.0.0.1:${httpRelay2.port}`,
    hops: [httpRelay1.proc, httpRelay2.proc],
  },
  {
    name: "Deno floor x2",
    url: `http://127.0.0.1:${floor1.port}`,
    hops: [floor1.proc, floor2.proc],
  },
  {
    name: muxFloorName,
    url: `http://127.0.0.1:${muxFloor.port}`,
    hops: [muxFloorServer, muxFloorClient],
  },
  ...(haproxies.length === 0
    ? []
    : [{ name: haproxyName, url: `http://127.0.0.1:${haproxyPort}`, hops: haproxies }]),
  {
    name: "tunnel (raw, default)",
    url: `http://127.0.0.1:${srvPort}`,
    host: "raw.test",
    hops: [server, rawClient],
  },
  ...(oldServer && oldClient
    ? [{
      name: "tunnel (raw, old)",
      url: `http://127.0.0.1:${oldPort}`,
      host: "raw.test",
      hops: [oldServer, oldClient],
    }]
    : []),
  {
    name: "tunnel (raw, access log)",
    url: `http://127.0.0.1:${loggedPort}`,
    host: "raw.test",
    hops: [logged, loggedClient],
  },
  ...(oldLogged && oldLoggedClient
    ? [{
      name: "tunnel (raw, access log, old)",
      url: `http://127.0.0.1:${oldLoggedPort}`,
      host: "raw.test",
      hops: [oldLogged, oldLoggedClient],
    }]
    : []),
  {
    name: "tunnel (raw, rewrites)",
    url: `http://127.0.0.1:${rewritePort}`,
    host: "raw.test",
    hops: [rewriting, rewriteClient],
  },
  ...(oldRewriting && oldRewriteClient
    ? [{
      name: "tunnel (raw, rewrites, old)",
      url: `http://127.0.0.1:${oldRewritePort}`,
      host: "raw.test",
      hops: [oldRewriting, oldRewriteClient],
    }]
    : []),
  {
    name: "tunnel (raw, group of 2)",
    url: `http://127.0.0.1:${groupPort}`,
    host: "raw.test",
    hops: [grouped, ...groupClients],
  },
  {
    name: "tunnel (websocket)",
    url: `http://127.0.0.1:${srvPort}`,
    host: "app.test",
    hops: [server, client],
  },
  { name: "tunnel (Hono front)", url: `http://127.0.0.1:${honoPort}`, hops: [hono, honoClient] },
  ...(oldHono
    ? [{
      name: "tunnel (Hono front, old)",
      url: `http://127.0.0.1:${oldHono.port}`,
      hops: oldHono.procs,
    }]
    : []),
];
/** Rows every small-request table keeps under `--only` (the ratios are to them). */
const alwaysRows = new Set(["direct", floorName, "Deno floor x2", muxFloorName, haproxyName]);
const only = flags.only === undefined ? undefined : new RegExp(flags.only);
const smallPaths = paths.filter((p) => !only || alwaysRows.has(p.name) || only.test(p.name));

/** CPU of `hops` (together and each) and of the app while `run` goes (`--box`: the box's). */
async function cpuDuring<T>(hops: Proc[], run: () => Promise<T>) {
  const h0 = hops.map((h) => procCpuSeconds([h])), a0 = procCpuSeconds([origin]);
  const box0 = flags.box ? boxSample(hops) : undefined;
  const result = await run();
  const box1 = box0 ? boxSample(hops) : undefined;
  const eachS = hops.map((h, i) => procCpuSeconds([h]) - h0[i]);
  return {
    result,
    hopsS: eachS.reduce((a, b) => a + b, 0),
    eachS,
    appS: procCpuSeconds([origin]) - a0,
    box: box0 && box1 ? [box0, box1] as const : undefined,
  };
}

/** The bulk HTTP and TCP tables (left out with `--small-only`). */
async function bulkAndTcp(): Promise<void> {
  console.log(`\nbulk HTTP: ${totalBytes / MiB} MiB with curl (MB/s)`);
  console.log(
    `${pad("path")} download    ratio       x2   upload    ratio       x2   hops ↓   hops ↑`,
  );
  let bd = 0, bu = 0, fd = 0, fu = 0;
  const gib = totalBytes / (1 << 30);
  const perGiB = (p: { hops: Proc[] }, s: number) =>
    p.hops.length ? num(s / gib, 2) : "-".padStart(numWidth);
  for (const p of paths) {
    const hostHeader = p.host ? ["-H", `Host: ${p.host}`] : [];
    const down = await cpuDuring(
      p.hops,
      () => curl([...hostHeader, `${p.url}/bytes/${totalBytes}`]),
    );
    const d = down.result.downloadMBps;
    // curl streams the body (chunked) from a pipe fed by `head -c N /dev/zero`.
    const up = await cpuDuring(p.hops, () => curlUpload(`${p.url}/discard`, totalBytes, p.host));
    const u = up.result.uploadMBps;
    if (p.name === "direct") (bd = d, bu = u);
    if (p.name === floorName) (fd = d, fu = u);
    console.log(
      `${pad(p.name)}${num(d)}${num(d / bd, 2)}${num(fd ? d / fd : NaN, 2)}${num(u)}${
        num(u / bu, 2)
      }${num(fu ? u / fu : NaN, 2)}${perGiB(p, down.hopsS)}${perGiB(p, up.hopsS)}`,
    );
  }
  console.log("(hops ↓/↑: CPU seconds per GiB of the processes between curl and the app)");
  const peakMiB = (p: Proc) => fixed(procStatusKiB(p.child.pid, "VmHWM") / 1024);
  console.log(
    `peak RSS after bulk: tunnel-server ${peakMiB(server)} MiB, ` +
      `tunnel-client ${peakMiB(client)} MiB (constant memory: far below the bytes moved)`,
  );
  console.log(`\nTCP: one connection reads ${totalBytes / MiB} MiB (MB/s)`);
  console.log(`${pad("path")}     MB/s    ratio       x2     hops`);
  const tcpPaths: { name: string; port: number; hops: Proc[] }[] = [
    { name: "direct", port: ports.tcp, hops: [] },
    ...(sshError ? [] : [{ name: "ssh -R (peer)", port: sshTcpPort, hops: [] }]),
    { name: "Deno relay x1", port: tcpRelay1.port, hops: [tcpRelay1.proc] },
    { name: floorName, port: tcpRelay2.port, hops: [tcpRelay1.proc, tcpRelay2.proc] },
    { name: "tunnel (raw, default)", port: tcpPublic + 1, hops: [server, rawClient] },
    { name: "tunnel (websocket)", port: tcpPublic, hops: [server, client] },
  ];
  const measured = [];
  for (const p of tcpPaths) measured.push({ p, ...await cpuDuring(p.hops, () => tcpRead(p.port)) });
  const direct = measured[0].result;
  const tcpFloor = measured.find((m) => m.p.name === floorName)!.result;
  for (const { p, result: v, hopsS } of measured) {
    console.log(
      `${pad(p.name)}${num(v)}${num(v / direct, 2)}${num(v / tcpFloor, 2)}${perGiB(p, hopsS)}`,
    );
  }
  console.log("(hops: CPU seconds per GiB of the processes between the reader and the source)");
}

/**
 * Issue 20's goal figure: each tunnel row's rate over two haproxy hops' and the Deno floor's
 * in the same round (so a burst of load elsewhere cancels out), their median over the rounds,
 * and its CPU per request over theirs (medians).
 */
function printRoundRatios(
  rows: { name: string }[],
  small: { runs: WrkResult[]; hopsUs: number[] }[],
): void {
  const at = (name: string) => rows.findIndex((p) => p.name === name);
  const refs = [
    [haproxyName, at(haproxyName)],
    ["Deno floor x2", at("Deno floor x2")],
    [muxFloorName, at(muxFloorName)],
  ] as const;
  for (const [refName, ref] of refs) {
    if (ref < 0) continue;
    console.log(
      `\nper round, over ${refName} in the same round: rps ratios → median; CPU µs ratio`,
    );
    for (const [i, p] of rows.entries()) {
      if (!p.name.startsWith("tunnel")) continue;
      const ratios = small[i].runs.map((r, k) => r.rps / small[ref].runs[k].rps);
      const cpu = median(small[i].hopsUs) / median(small[ref].hopsUs);
      console.log(
        `${pad(p.name)}${ratios.map((x) => fixed(x, 2)).join(" ")} → ${
          fixed(median(ratios), 2)
        }; CPU ${fixed(cpu, 2)}×`,
      );
    }
  }
}

/**
 * `--old`: each old row's CPU per request against its new row's in the same round (the two
 * ran seconds apart, in alternating order), then the median: steadier than the ratio of the
 * medians when the load swings between rounds.
 */
function printOldRatios(rows: { name: string }[], small: { hopsUs: number[] }[]): void {
  const pairs = [
    ["tunnel (raw, old)", "tunnel (raw, default)"],
    ["tunnel (raw, access log, old)", "tunnel (raw, access log)"],
    ["tunnel (raw, rewrites, old)", "tunnel (raw, rewrites)"],
    ["tunnel (Hono front, old)", "tunnel (Hono front)"],
  ];
  for (const [oldName, newName] of pairs) {
    const o = rows.findIndex((r) => r.name === oldName);
    const n = rows.findIndex((r) => r.name === newName);
    if (o < 0 || n < 0) continue;
    const each = small[n].hopsUs.map((x, k) => x / small[o].hopsUs[k]).filter(Number.isFinite);
    console.log(
      `\n${newName} / ${oldName}, hops CPU µs per request, median of ${each.length} ` +
        `same-round ratios: ${fixed(median(each), 2)} (${each.map((v) => fixed(v, 2)).join(" ")})`,
    );
  }
}

/** Rows of the new-connection table (each request on a connection of its own). */
const newConnRows = new Set([
  "direct",
  haproxyName,
  muxFloorName,
  "tunnel (raw, default)",
  "tunnel (raw, old)",
]);

/**
 * The new-connection table: `wrk -H 'Connection: close'`, so every request opens a public
 * connection (and through the tunnel, before stream reuse, a tunnel stream and an origin
 * connection); rounds interleaved as above; each tunnel row's rps over haproxy x2's in the same
 * round, and CPU per request of the hops (server / client).
 */
async function newConnTable(): Promise<void> {
  const rows = paths.filter((p) => newConnRows.has(p.name) && smallPaths.includes(p));
  console.log(
    `\nnew connections: wrk -t2 -c50 -d${wrkSeconds}s -H 'Connection: close' GET /hello, ` +
      `median of ${rounds} rounds`,
  );
  const m = rows.map((p) => ({
    runs: [] as WrkResult[],
    hopsUs: [] as number[],
    eachUs: p.hops.map(() => [] as number[]),
  }));
  for (let round = 1; round <= rounds; round++) {
    for (const [i, p] of roundOrder(rows, round)) {
      const { result: r, hopsS, eachS } = await cpuDuring(
        p.hops,
        () =>
          wrk(`${p.url}/hello`, {
            seconds: wrkSeconds,
            host: p.host,
            headers: ["Connection: close"],
          }),
      );
      m[i].runs.push(r);
      m[i].hopsUs.push(hopsS * 1e6 / r.requests);
      eachS.forEach((sec, h) => m[i].eachUs[h].push(sec * 1e6 / r.requests));
    }
    console.error(`  round ${round} of the new connections done`);
  }
  const hap = rows.findIndex((p) => p.name === haproxyName);
  console.log(
    `${pad("path")}      rps   p50 ms   p99 ms   x hap2  non-2xx   errors  hops µs${
      "each µs".padStart(eachWidth)
    }`,
  );
  for (const [i, p] of rows.entries()) {
    const med = (f: (r: WrkResult) => number) => median(m[i].runs.map(f));
    const ratio = hap < 0 ? NaN : median(m[i].runs.map((r, k) => r.rps / m[hap].runs[k].rps));
    const sum = (f: (r: WrkResult) => number) => m[i].runs.reduce((n, r) => n + f(r), 0);
    const each = m[i].eachUs.map((us) => fixed(median(us))).join(" / ") || "-";
    console.log(
      `${pad(p.name)}${num(med((r) => r.rps))}${num(med((r) => r.p50Ms), 2)}${
        num(med((r) => r.p99Ms), 2)
      }${num(ratio, 2)}${String(sum((r) => r.non2xx)).padStart(numWidth)}${
        String(sum((r) => r.errors ?? 0)).padStart(numWidth)
      }${p.hops.length ? num(median(m[i].hopsUs)) : "-".padStart(numWidth)}${
        each.padStart(eachWidth)
      }`,
    );
  }
  console.log(
    "(x hap2: median of the same-round rps ratios to haproxy x2; hops µs: CPU per request, " +
      "so per new connection, of the processes between wrk and the app)",
  );
}

// Rows print as they are measured (a full run takes minutes), so the columns are fixed-width.
const pad = (s: string) => s.padEnd(nameWidth);
const num = (x: number, d = 0) => fixed(x, d).padStart(numWidth);
/** The keep-alive small-request table (see the module doc). */
async function smallTable(): Promise<void> {
  console.log(
    `small responses: wrk -t2 -c50 -d${wrkSeconds}s GET /hello, median of ${rounds} rounds; ` +
      `app: ${flags.nginx ? "nginx (one process)" : "Deno.serve"}`,
  );
  // Rounds interleave the paths, so a burst of load from elsewhere does not land on one path.
  const small = smallPaths.map((p) => ({
    runs: [] as WrkResult[],
    hopsUs: [] as number[],
    eachUs: p.hops.map(() => [] as number[]),
    appUs: [] as number[],
    box: [] as BoxRun[],
  }));
  for (let round = 1; round <= rounds; round++) {
    for (const [i, p] of roundOrder(smallPaths, round)) {
      const { result: r, hopsS, eachS, appS, box } = await cpuDuring(
        p.hops,
        () => wrk(`${p.url}/hello`, { seconds: wrkSeconds, host: p.host }),
      );
      small[i].runs.push(r);
      small[i].hopsUs.push(hopsS * 1e6 / r.requests);
      eachS.forEach((sec, h) => small[i].eachUs[h].push(sec * 1e6 / r.requests));
      small[i].appUs.push(appS * 1e6 / r.requests);
      if (box) small[i].box.push(boxRun(box[0], box[1], r.requests));
    }
    console.error(`  round ${round} of the small requests done`);
  }
  const med = (i: number, f: (r: WrkResult) => number) => median(small[i].runs.map(f));
  const rpsOf = (name: string) => {
    const i = smallPaths.findIndex((p) => p.name === name);
    return i < 0 ? NaN : med(i, (r) => r.rps);
  };
  const base = rpsOf("direct"), floor = rpsOf(floorName), hap2 = rpsOf(haproxyName);
  console.log(
    `${
      pad("path")
    }      rps   p50 ms   p99 ms    ratio       x2   x hap2  non-2xx  hops µs   app µs${
      "each µs".padStart(eachWidth)
    }`,
  );
  for (const [i, p] of smallPaths.entries()) {
    const rps = med(i, (r) => r.rps);
    const each = small[i].eachUs.map((us) => fixed(median(us))).join(" / ") || "-";
    console.log(
      `${pad(p.name)}${num(rps)}${num(med(i, (r) => r.p50Ms), 2)}${num(med(i, (r) => r.p99Ms), 2)}${
        num(rps / base, 2)
      }${num(rps / floor, 2)}${num(rps / hap2, 2)}${
        String(small[i].runs.reduce((n, r) => n + r.non2xx, 0)).padStart(numWidth)
      }${p.hops.length ? num(median(small[i].hopsUs)) : "-".padStart(numWidth)}${
        num(median(small[i].appUs))
      }${each.padStart(eachWidth)}`,
    );
  }
  console.log(
    "(hops µs, app µs: CPU per request of the processes between wrk and the app, and of the app;" +
      " each µs: the hops' one by one, server / client for the tunnel;",
  );
  console.log(
    " x2: ratio to two Deno relays in series; x hap2: to two haproxy processes in series)",
  );
  printRoundRatios(smallPaths, small);
  printOldRatios(smallPaths, small);
  if (flags.box) printBox(smallPaths, small);
}

/**
 * `--box`: where the whole box's time went in each row's runs (medians over the rounds): the
 * idle share of both cores, CPU µs per request of the box, of wrk, of the hops and of the
 * origin, what is left (other processes, kernel threads, softirq outside them), softirq, the
 * box's context switches per request and the hops' (with their involuntary share), and wrk's
 * latency distribution. A row whose box has idle time while its rate trails waits somewhere; a
 * busy box whose wrk or origin costs more per request gives them less room.
 */
function printBox(
  rows: { name: string; hops: Proc[] }[],
  small: { runs: WrkResult[]; hopsUs: number[]; appUs: number[]; box: BoxRun[] }[],
): void {
  console.log(
    `\nthe box during each row (--box), medians of ${rounds} rounds: idle % of 2 cores; ` +
      `CPU µs per request`,
  );
  console.log(
    `${pad("path")}   idle %    box µs    wrk µs   hops µs    app µs other µs   rest µs   cores` +
      `  sirq µs  ctxt/req  hop ctxt/req invol % runq µs   mean ms  stdev ms   p50 ms   p75 ms` +
      `   p90 ms   p99 ms`,
  );
  for (const [i, p] of rows.entries()) {
    const b = small[i].box;
    if (b.length === 0) continue;
    const mb = (f: (x: BoxRun) => number) => median(b.map(f));
    const mr = (f: (x: WrkResult) => number | undefined) =>
      median(small[i].runs.map((r) => f(r) ?? NaN));
    const rest = median(
      b.map((x, k) =>
        x.boxUs - x.childrenUs - x.othersUs - (small[i].hopsUs[k] ?? 0) - (small[i].appUs[k] ?? 0)
      ),
    );
    // Cores the measured processes kept busy: wrk, the hops and the app, per second of the run.
    const cores = median(
      b.map((x, k) =>
        (x.childrenUs + (small[i].hopsUs[k] ?? 0) + (small[i].appUs[k] ?? 0)) *
        small[i].runs[k].rps /
        1e6
      ),
    );
    const hopCtxt = p.hops.map((_, h) => fixed(mb((x) => x.hopCtxt[h]), 1)).join(" / ") || "-";
    console.log(
      `${pad(p.name)}${num(mb((x) => x.idle * 100), 1)} ${num(mb((x) => x.boxUs))} ${
        num(mb((x) => x.childrenUs))
      } ${num(median(small[i].hopsUs))} ${num(median(small[i].appUs))}${
        num(mb((x) => x.othersUs))
      } ${num(rest)}${num(cores, 2).slice(1)}${num(mb((x) => x.softirqUs))}${
        num(mb((x) => x.ctxt), 1)
      }${hopCtxt.padStart(14)}${num(p.hops.length ? mb((x) => x.hopInvol * 100) : NaN, 0)}${
        num(p.hops.length ? mb((x) => x.hopWaitUs) : NaN, 1)
      }${num(mr((r) => r.meanMs), 3)}${num(mr((r) => r.stdevMs), 3)}${num(mr((r) => r.p50Ms), 3)}${
        num(mr((r) => r.p75Ms), 3)
      }${num(mr((r) => r.p90Ms), 3)}${num(mr((r) => r.p99Ms), 3)}`,
    );
  }
  console.log(
    "(cores: what wrk, the hops and the app kept busy; other: every process outside this " +
      "bench's tree, kernel threads too; rest: the box's " +
      "busy ticks no process was charged; sirq: softirq ticks, inside the others; ctxt: " +
      "context switches per request, the box's and each hop's threads'; runq: the hops' " +
      "run-queue wait per request)",
  );
}

try {
  if (!flags["new-conn-only"]) await smallTable();
  await newConnTable();
  if (!flags["small-only"] && !flags.nginx && !flags["new-conn-only"]) await bulkAndTcp();
} finally {
  await stopAll([
    ...haproxies,
    ...[oldClient, oldServer, oldLoggedClient, oldLogged, oldRewriteClient, oldRewriting]
      .filter((p) => p !== undefined),
    ...(oldHono ? [...oldHono.procs].reverse() : []),
    ...relays,
    honoClient,
    hono,
    socat,
    loggedClient,
    logged,
    rewriteClient,
    rewriting,
    ...groupClients,
    grouped,
    rawClient,
    client,
    server,
    ...(origin === app ? [] : [origin]),
    app,
  ]);
  for (const ssh of sshPeers) await ssh.close();
  Deno.removeSync(haproxyDir, { recursive: true });
  if (nginx) Deno.removeSync(nginx.dir, { recursive: true });
}
Deno.exit(0);
