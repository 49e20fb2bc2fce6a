/**
 * `deno run -A bench/seaprox.ts`: seaprox (static, SOCKS5, HTTP CONNECT) side by side with
 * direct TCP and outside peers (socat, haproxy in tcp mode, microsocks) on one loopback
 * source, in one run:
 *
 * - bulk: one connection downloads `--bytes` (default 1 GiB) from a Deno source into a Deno
 *   client reading 4 MiB at a time; and curl downloads a 1 GiB file from nginx (the issue's
 *   measurement) through the same kinds of paths; MB/s, the median of `--rounds` (default 3)
 *   interleaved rounds, and the ratio to direct as the median of each round's ratio to that
 *   round's direct transfer; beside each, the proxy process's CPU seconds per GiB during that
 *   transfer (median; every proxy, seaprox's paths and the peers, tinyproxy for CONNECT), the
 *   figure load from elsewhere moves least;
 * - small: `--seq` (default 2000) sequential connect + 8-byte request + 1 KiB answer, and
 *   `--requests` (default 4000) of them with `--concurrency` (default 32) workers: req/s, the
 *   median of the rounds (issue 20 asks for medians), and for each seaprox kind its rate and
 *   CPU against its C peer's (static: haproxy, SOCKS5: microsocks, CONNECT: tinyproxy) as the
 *   median of each round's ratio, every round's beside it;
 * - CPU: microseconds of CPU per connection of the proxy process (its whole tree for socat, which
 *   forks per connection) during the concurrent phase, median of the rounds: steadier than the
 *   rates on a shared machine;
 * - memory: seaprox's VmRSS idle, with 1,000 idle connections, and with 100 busy ones.
 *
 * - HTTP forwarding: hey -x sends absolute-form GETs of nginx's 1 KiB /small through seaprox's
 *   http listener and through tinyproxy (the C peer for CONNECT and forwarding), with keep-alive
 *   and with a new connection per request: req/s and CPU µs per request of the proxy, medians.
 *
 * Beside the peers, "Deno floor" rows: bench/floor_proxy.ts (static, SOCKS5) and
 * bench/floor_connect.ts (HTTP CONNECT), the least any Deno proxy does per connection (the goal
 * where the C peers are out of Deno's reach); a line after the table gives each path's CPU per
 * connection as a multiple of its floor's.
 *
 * `--small-only` skips the bulk and memory phases (for comparing per-connection cost quickly),
 * `--bulk-only` the small, forwarding and memory phases (the bulk ratios, with more rounds in
 * the same time). `--old DIR` adds seaprox static, SOCKS5, HTTP CONNECT and forwarding rows from
 * another checkout (an old tree), so a change is measured before and after in one run;
 * `--only REGEX` keeps the paths whose name matches.
 *
 * The source is a Deno raw TCP server in its own process (bench/_source.ts):
 * read an 8-byte big-endian length, send that many bytes, FIN. The client is this process.
 * Not a test: numbers are as measured on a shared machine.
 */

import { closeQuietly, dial, type Duplex, sleep, writeAll } from "../lib/net/mod.ts";
import {
  benchFlags,
  benchPath,
  concurrentRps,
  connectRoute,
  cpuPerConn,
  curl,
  downloadMBps,
  fixed,
  formatTable,
  freePort,
  haproxyTcpConfig,
  hasCommand,
  hey,
  lengthHeader,
  mbPerSec,
  median,
  MiB,
  type Proc,
  procCpuSeconds,
  procStatusKiB,
  ratio,
  roundOrder,
  type Route,
  sequentialMs,
  servicePath,
  smallAnswerBytes,
  smallBuffer,
  smallExchange,
  socksRoute,
  spawn,
  spawnDeno,
  startFloor,
  startLengthSource,
  stopAll,
  tcpRoute,
  waitPort,
} from "./_util.ts";

// ---------------------------------------------------------------- helpers
const flags = benchFlags({
  numbers: { bytes: 1 << 30, seq: 2000, requests: 4000, concurrency: 32, rounds: 3 },
  booleans: ["small-only", "bulk-only"],
  strings: ["old", "only"],
});
const smallOnly = flags["small-only"];
const bulkOnly = flags["bulk-only"];
const bulkBytes = flags.bytes;
const seqCount = flags.seq;
const reqCount = flags.requests;
const concurrency = flags.concurrency;
const rounds = flags.rounds;
const idleConns = 1000;
const busyConns = 100;
/** Size of the (sparse) file nginx serves for the curl bulk column. */
const nginxFileBytes = 1024 * MiB;
/** How long the busy phase samples RSS, and how often. */
const busySamples = 20;
const busySampleMs = 200;

const procs: Proc[] = [];
/** Outside peers that are not installed here: their rows say so instead of failing the run. */
const missing = new Set<string>();
/**
 * Start a peer with its output discarded: peers' own logs would bury the table (the busy
 * phase cuts 100 connections on purpose). A peer that is not installed goes to `missing`.
 */
function start(cmd: string, args: string[], env?: Record<string, string>): Proc | undefined {
  if (!hasCommand(cmd)) {
    missing.add(cmd);
    return undefined;
  }
  const p = spawn(cmd, args, { env, output: "discard" });
  procs.push(p);
  return p;
}

/** A path of the table: a {@linkcode Route} to the source, and the same kind to nginx. */
interface SeaproxRoute extends Route {
  /** The outside program this path needs, if any. */
  needs?: string;
  /** curl arguments reaching nginx's `/big` through this path. */
  curl(nginxPort: number): string[];
  /** The process whose CPU per connection the table shows (none for direct). */
  proc?: Proc;
}

/** A plain TCP path; `nginxFront` is the same kind of path in front of nginx. */
function tcpPath(name: string, port: number, nginxFront: number): SeaproxRoute {
  return { ...tcpRoute(name, port), curl: () => [`http://127.0.0.1:${nginxFront}/big`] };
}
function socksPath(name: string, port: number, dest: number): SeaproxRoute {
  return {
    ...socksRoute(name, port, dest),
    curl: (np) => ["--socks5", `127.0.0.1:${port}`, `http://127.0.0.1:${np}/big`],
  };
}
function connectPath(name: string, port: number, dest: number): SeaproxRoute {
  return {
    ...connectRoute(name, port, dest),
    curl: (np) => ["-p", "-x", `http://127.0.0.1:${port}`, `http://127.0.0.1:${np}/big`],
  };
}

/**
 * curl downloading the 1 GiB file from nginx through `route`: MB/s as curl reports it, and
 * the CPU seconds per GiB of the path's process meanwhile (NaN without one).
 */
async function curlBulk(
  route: SeaproxRoute,
  nginxPort: number,
): Promise<{ mbps: number; cpuPerGiB: number }> {
  const before = route.proc ? procCpuSeconds([route.proc]) : NaN;
  const r = await curl(route.curl(nginxPort), {
    expectBytes: nginxFileBytes,
    what: `via ${route.name}`,
  });
  const cpu = route.proc ? procCpuSeconds([route.proc]) - before : NaN;
  return { mbps: r.downloadMBps, cpuPerGiB: cpu / (nginxFileBytes / (1024 * MiB)) };
}

// ---------------------------------------------------------------- main
const seaproxScript = servicePath("seaprox.ts");
const srcPort = freePort();
const ports = {
  static: freePort(),
  socks5: freePort(),
  http: freePort(),
  socat: freePort(),
  haproxy: freePort(),
  microsocks: freePort(),
  tinyproxy: freePort(),
  nginx: freePort(),
  staticNginx: freePort(),
  socatNginx: freePort(),
  haproxyNginx: freePort(),
};

try {
  procs.push((await startLengthSource(srcPort)).proc);
  const seaprox = start(Deno.execPath(), [
    "run",
    "-A",
    seaproxScript,
    "--log-level",
    "warn",
    "--prefer-ipv4",
    "--max-conns",
    "4096",
    "--listen",
    `static://127.0.0.1:${ports.static}?to=127.0.0.1:${srcPort}`,
    "--listen",
    `socks5://127.0.0.1:${ports.socks5}`,
    "--listen",
    `http://127.0.0.1:${ports.http}`,
    "--listen",
    `static://127.0.0.1:${ports.staticNginx}?to=127.0.0.1:${ports.nginx}`,
  ]);
  const oldPorts = { static: freePort(), socks5: freePort(), http: freePort() };
  const old = flags.old
    ? start(Deno.execPath(), [
      "run",
      "-A",
      `${flags.old}/services/seaprox.ts`,
      "--log-level",
      "warn",
      "--prefer-ipv4",
      "--max-conns",
      "4096",
      "--listen",
      `static://127.0.0.1:${oldPorts.static}?to=127.0.0.1:${srcPort}`,
      "--listen",
      `socks5://127.0.0.1:${oldPorts.socks5}`,
      "--listen",
      `http://127.0.0.1:${oldPorts.http}`,
    ])
    : undefined;
  if (old) {
    for (const [key, port] of Object.entries(oldPorts)) await waitPort(port, `old ${key}`);
  }
  const socat = start("socat", [
    `TCP-LISTEN:${ports.socat},bind=127.0.0.1,fork,reuseaddr`,
    `TCP:127.0.0.1:${srcPort}`,
  ]);
  start("socat", [
    `TCP-LISTEN:${ports.socatNginx},bind=127.0.0.1,fork,reuseaddr`,
    `TCP:127.0.0.1:${ports.nginx}`,
  ]);
  const dir = Deno.makeTempDirSync({ prefix: "seaprox-bench-" });
  Deno.writeFileSync(`${dir}/small`, new Uint8Array(smallAnswerBytes).fill(0x61));
  Deno.writeFileSync(`${dir}/big`, new Uint8Array(0));
  Deno.truncateSync(`${dir}/big`, nginxFileBytes); // sparse: served from the page cache
  Deno.writeTextFileSync(
    `${dir}/nginx.conf`,
    [
      "user root;",
      "worker_processes 1;",
      "daemon off;",
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log;`,
      "events { worker_connections 1024; }",
      "http {",
      "  access_log off;",
      ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) =>
        `  ${t}_temp_path ${dir};`
      ),
      `  server { listen 127.0.0.1:${ports.nginx}; root ${dir}; sendfile on; }`,
      "}",
      "",
    ].join("\n"),
  );
  start("nginx", ["-c", `${dir}/nginx.conf`, "-p", dir]);
  Deno.writeTextFileSync(
    `${dir}/haproxy.cfg`,
    haproxyTcpConfig([
      { port: ports.haproxy, targets: [srcPort] },
      { port: ports.haproxyNginx, targets: [ports.nginx] },
    ]),
  );
  const haproxy = start("haproxy", ["-f", `${dir}/haproxy.cfg`, "-db"]);
  const microsocks = start("microsocks", ["-i", "127.0.0.1", "-p", String(ports.microsocks)]);
  // tinyproxy: the C HTTP proxy beside seaprox's http listener (CONNECT and forwarding).
  Deno.writeTextFileSync(
    `${dir}/tinyproxy.conf`,
    [
      `Port ${ports.tinyproxy}`,
      "Listen 127.0.0.1",
      "Timeout 60",
      "MaxClients 1024",
      "Allow 127.0.0.1",
      "LogLevel Critical",
      "",
    ].join("\n"),
  );
  const tinyproxy = start("tinyproxy", ["-d", "-c", `${dir}/tinyproxy.conf`]);
  const floorStatic = await startFloor(srcPort);
  const floorSocks = await startFloor();
  const floorConnect = spawnDeno(benchPath("floor_connect.ts"));
  procs.push(floorStatic.proc, floorSocks.proc, floorConnect);
  const floorConnectPort =
    (JSON.parse(await floorConnect.waitFor(/^\{"port"/)) as { port: number }).port;
  const peerOf: Record<string, string> = {
    socat: "socat",
    socatNginx: "socat",
    haproxy: "haproxy",
    haproxyNginx: "haproxy",
    microsocks: "microsocks",
    tinyproxy: "tinyproxy",
    nginx: "nginx",
  };
  for (const [key, port] of [["source", srcPort] as const, ...Object.entries(ports)]) {
    if (!missing.has(peerOf[key] ?? "")) await waitPort(port, key);
  }
  const curlOk = hasCommand("curl") && !missing.has("nginx");

  const noCurl = { curl: () => [], noBulk: true };
  const only = flags.only === undefined ? undefined : new RegExp(flags.only);
  const routes: (SeaproxRoute & { noBulk?: boolean })[] = [
    tcpPath("direct TCP", srcPort, ports.nginx),
    { ...tcpPath("seaprox static", ports.static, ports.staticNginx), proc: seaprox },
    ...(old
      ? [{ ...tcpRoute("seaprox static (old)", oldPorts.static), ...noCurl, proc: old }]
      : []),
    { ...socksPath("seaprox SOCKS5", ports.socks5, srcPort), proc: seaprox },
    ...(old
      ? [{
        ...socksRoute("seaprox SOCKS5 (old)", oldPorts.socks5, srcPort),
        ...noCurl,
        proc: old,
      }]
      : []),
    { ...connectPath("seaprox HTTP CONNECT", ports.http, srcPort), proc: seaprox },
    ...(old
      ? [{
        ...connectPath("seaprox HTTP CONNECT (old)", oldPorts.http, srcPort),
        ...noCurl,
        proc: old,
      }]
      : []),
    { ...tcpPath("socat", ports.socat, ports.socatNginx), needs: "socat", proc: socat },
    {
      ...tcpPath("haproxy (tcp mode)", ports.haproxy, ports.haproxyNginx),
      needs: "haproxy",
      proc: haproxy,
    },
    {
      ...socksPath("microsocks (SOCKS5)", ports.microsocks, srcPort),
      needs: "microsocks",
      proc: microsocks,
    },
    {
      ...connectPath("tinyproxy CONNECT", ports.tinyproxy, srcPort),
      needs: "tinyproxy",
      proc: tinyproxy,
    },
    { ...tcpRoute("Deno floor static", floorStatic.port), ...noCurl, proc: floorStatic.proc },
    {
      ...socksRoute("Deno floor SOCKS5", floorSocks.port, srcPort),
      ...noCurl,
      proc: floorSocks.proc,
    },
    {
      ...connectPath("Deno floor CONNECT", floorConnectPort, srcPort),
      ...noCurl,
      proc: floorConnect,
    },
  ].filter((r) => r.name === "direct TCP" || !only || only.test(r.name));

  /**
   * Absolute-form forwarding (`GET http://host/small` to the proxy, as `curl -x` sends it):
   * hey -x through each proxy to nginx's 1 KiB /small, with keep-alive and with a new client
   * connection (and so a new upstream one) per request; "direct nginx" is hey without a proxy.
   */
  interface ForwardPath {
    name: string;
    port?: number;
    needs?: string;
    proc?: Proc;
    keepAlive: boolean;
  }
  const forwardBase: Omit<ForwardPath, "keepAlive">[] = [
    { name: "direct nginx" },
    { name: "seaprox forward", port: ports.http, proc: seaprox },
    ...(old ? [{ name: "seaprox forward (old)", port: oldPorts.http, proc: old }] : []),
    { name: "tinyproxy forward", port: ports.tinyproxy, needs: "tinyproxy", proc: tinyproxy },
  ];
  const forwards: ForwardPath[] = bulkOnly
    ? []
    : [true, false].flatMap((keepAlive) =>
      forwardBase.map((f) => ({
        ...f,
        keepAlive,
        name: `${f.name}, ${keepAlive ? "keep-alive" : "new conn each"}`,
      }))
    ).filter((f) => f.name.startsWith("direct") || !only || only.test(f.name));
  if (forwards.length > 0 && !hasCommand("hey")) missing.add("hey");
  const heyArgs = (f: ForwardPath) => [
    ...(f.port === undefined ? [] : ["-x", `http://127.0.0.1:${f.port}`]),
    ...(f.keepAlive ? [] : ["-disable-keepalive"]),
    `http://127.0.0.1:${ports.nginx}/small`,
  ];
  interface ForwardRow {
    name: string;
    rps: number[];
    /** CPU µs per request of the proxy process, one per round. */
    cpu: number[];
    err?: string;
  }
  const forwardRows: ForwardRow[] = forwards.map((f) => ({
    name: f.name,
    rps: [],
    cpu: [],
    err: missing.has("hey")
      ? "hey not installed"
      : f.needs && missing.has(f.needs)
      ? `${f.needs} not installed`
      : missing.has("nginx")
      ? "nginx not installed"
      : undefined,
  }));

  interface Row {
    name: string;
    /** Bulk MB/s (Deno source, curl←nginx), one per round; undefined: not measured. */
    mbps?: number[];
    curl?: number[];
    /** CPU s/GiB of the path's process during each round's curl transfer. */
    curlCpu: number[];
    /** CPU s/GiB of the path's process during each round's Deno-source transfer. */
    bulkCpu: number[];
    /** Sequential connections per second, one per round. */
    seq: number[];
    /** Concurrent connections per second, one per round. */
    rps: number[];
    /** CPU µs per connection of the path's process, one per round. */
    cpu: number[];
    err?: string;
  }
  const withCurl = curlOk && !smallOnly;
  if (withCurl) await curlBulk(routes[0], ports.nginx); // pull the file into the page cache
  const none = {
    mbps: undefined,
    curl: undefined,
    seq: [],
    rps: [],
    cpu: [],
    curlCpu: [],
    bulkCpu: [],
  };
  const rows: Row[] = routes.map((r) =>
    r.needs && missing.has(r.needs) ? { name: r.name, ...none, err: `${r.needs} not installed` } : {
      name: r.name,
      mbps: smallOnly || r.noBulk ? undefined : [],
      curl: withCurl && !r.noBulk ? [] : undefined,
      curlCpu: [],
      bulkCpu: [],
      seq: [],
      rps: [],
      cpu: [],
    }
  );
  // Rounds interleave the paths so a burst of load from elsewhere on the machine does not
  // land on one path only; every figure is the median round.
  for (let round = 1; round <= rounds; round++) {
    for (const [i, r] of roundOrder(routes, round)) {
      const row = rows[i];
      if (row.err) continue;
      try {
        await smallExchange(r, smallBuffer()); // warm up (JIT, resolver, pools)
        if (row.mbps) {
          const { result, usPerConn } = await cpuPerConn(
            r.proc ? [r.proc] : [],
            bulkBytes / (1024 * MiB), // "connections": GiB moved, so µs per GiB
            () => downloadMBps(r, bulkBytes),
          );
          row.mbps.push(result);
          if (r.proc) row.bulkCpu.push(usPerConn[0] / 1e6);
        }
        if (row.curl) {
          const c = await curlBulk(r, ports.nginx);
          row.curl.push(c.mbps);
          row.curlCpu.push(c.cpuPerGiB);
        }
        if (bulkOnly) {
          console.error(`  round ${round}: measured ${r.name}`);
          continue;
        }
        row.seq.push(1000 / await sequentialMs(r, seqCount));
        const { result: rps, usPerConn } = await cpuPerConn(
          r.proc ? [r.proc] : [],
          reqCount,
          () => concurrentRps(r, reqCount, concurrency),
        );
        row.rps.push(rps);
        if (r.proc) row.cpu.push(usPerConn[0]);
        console.error(`  round ${round}: measured ${r.name}`);
      } catch (err) {
        Object.assign(row, { ...none, err: String(err) });
        console.error(`  ${r.name} failed: ${err}`);
      }
    }
    for (const [i, f] of roundOrder(forwards, round)) {
      const row = forwardRows[i];
      if (row.err) continue;
      try {
        await hey(concurrency * 2, concurrency, heyArgs(f)); // warm up
        const { result: rps, usPerConn } = await cpuPerConn(
          f.proc ? [f.proc] : [],
          reqCount,
          () => hey(reqCount, concurrency, heyArgs(f)),
        );
        row.rps.push(rps);
        if (f.proc) row.cpu.push(usPerConn[0]);
        console.error(`  round ${round}: measured ${f.name}`);
      } catch (err) {
        row.err = String(err);
        console.error(`  ${f.name} failed: ${err}`);
      }
    }
  }

  // Memory of the seaprox process.
  const memory = async () => {
    const pid = seaprox!.child.pid;
    const rssKiB = (pid: number) => procStatusKiB(pid, "VmRSS");
    const rssIdle = rssKiB(pid);
    const idle: Duplex[] = [];
    for (let i = 0; i < idleConns; i++) idle.push(await dial("127.0.0.1", ports.static));
    // Let every relay reach its pending read.
    await sleep(1000);
    const rssIdleConns = rssKiB(pid);
    for (const c of idle) closeQuietly(c);
    await sleep(500);

    const stopBusy = new AbortController();
    let busyBytes = 0;
    const busy = Promise.all(Array.from({ length: busyConns }, async () => {
      const c = await dial("127.0.0.1", ports.static);
      const buf = new Uint8Array(256 * 1024);
      try {
        await writeAll(c, lengthHeader(2 ** 50));
        while (!stopBusy.signal.aborted) {
          const n = await c.read(buf);
          if (n === null) throw new Error("busy connection ended early");
          busyBytes += n;
        }
      } finally {
        closeQuietly(c);
      }
    }));
    let rssBusy = 0;
    const busyStart = performance.now();
    for (let i = 0; i < busySamples; i++) {
      await sleep(busySampleMs);
      rssBusy = Math.max(rssBusy, rssKiB(pid));
    }
    const busyMBps = mbPerSec(busyBytes, performance.now() - busyStart);
    stopBusy.abort();
    await busy;
    return { rssIdle, rssIdleConns, rssBusy, busyMBps };
  };
  const mem = smallOnly || bulkOnly ? undefined : await memory();

  // ---------------------------------------------------------------- table
  const direct = rows[0];
  /** Median of a bulk column; NaN when not measured. */
  const med = (v: number[] | undefined) => v && v.length > 0 ? median(v) : NaN;
  /** Median of each round's ratio to the same round's direct figure. */
  const perRound = (v: number[] | undefined, base: number[] | undefined) =>
    v && base && v.length > 0 && v.length === base.length
      ? median(v.map((x, i) => x / base[i]))
      : NaN;
  console.log(
    `\nseaprox on loopback, ${rounds} interleaved rounds: bulk ${bulkBytes >> 20} MiB (Deno ` +
      `source -> Deno client, 4 MiB reads) and curl <- nginx 1 GiB file, median MB/s and ` +
      `median of the per-round ratio to direct; ${seqCount} sequential and ${reqCount} ` +
      `x${concurrency} concurrent connect + 8 B request + ${smallAnswerBytes} B answer; ` +
      `medians of the rounds\n`,
  );
  console.log(formatTable(
    [
      "path",
      "bulk MB/s",
      "× direct",
      "CPU s/GiB",
      "curl←nginx MB/s",
      "× direct",
      "CPU s/GiB (curl)",
      "seq conn/s",
      "× direct",
      "conc req/s",
      "× direct",
      "CPU µs/conn",
    ],
    rows.map((r) => [
      r.name,
      fixed(med(r.mbps)),
      ratio(perRound(r.mbps, direct.mbps), 1),
      r.bulkCpu.length > 0 ? fixed(median(r.bulkCpu), 2) : "—",
      fixed(med(r.curl)),
      ratio(perRound(r.curl, direct.curl), 1),
      r.curlCpu.length > 0 && !Number.isNaN(r.curlCpu[0]) ? fixed(median(r.curlCpu), 2) : "—",
      fixed(med(r.seq)),
      ratio(perRound(r.seq, direct.seq), 1),
      fixed(med(r.rps)),
      ratio(perRound(r.rps, direct.rps), 1),
      r.cpu.length > 0 ? fixed(median(r.cpu)) : "—",
    ]),
  ));
  if (bulkOnly) {
    console.log("\ncurl←nginx MB/s per round (× that round's direct):");
    for (const r of rows) {
      if (!r.curl) continue;
      const each = r.curl.map((x, i) =>
        `${x.toFixed(0)} (${(x / (direct.curl?.[i] ?? NaN)).toFixed(2)})`
      );
      console.log(`  ${r.name.padEnd(24)} ${each.join("  ")}`);
    }
  }
  for (const r of rows) if (r.err) console.log(`\n${r.name}: ${r.err}`);
  // CPU per connection against the Deno floor of the same kind.
  const cpuOf = (name: string) => {
    const r = rows.find((r) => r.name === name);
    return r && r.cpu.length > 0 ? median(r.cpu) : NaN;
  };
  const floorOf: [string, string][] = [
    ["seaprox static", "Deno floor static"],
    ["seaprox static (old)", "Deno floor static"],
    ["seaprox SOCKS5", "Deno floor SOCKS5"],
    ["seaprox SOCKS5 (old)", "Deno floor SOCKS5"],
    ["microsocks (SOCKS5)", "Deno floor SOCKS5"],
    ["seaprox HTTP CONNECT", "Deno floor CONNECT"],
    ["seaprox HTTP CONNECT (old)", "Deno floor CONNECT"],
    ["tinyproxy CONNECT", "Deno floor CONNECT"],
  ];
  const againstFloor = floorOf.filter(([p, f]) => cpuOf(p) > 0 && cpuOf(f) > 0)
    .map(([p, f]) => `${p} ${ratio(cpuOf(p), cpuOf(f))}`);
  if (againstFloor.length > 0) {
    console.log(`\nCPU µs/conn × its Deno floor: ${againstFloor.join(", ")}`);
  }
  // Issue 20's rate goals: each seaprox kind against its C peer, round by round; and against
  // its Deno floor (the goal where the floor itself does not reach the peer).
  const cPeerOf: [string, string][] = [
    ["seaprox static", "haproxy (tcp mode)"],
    ["seaprox static", "Deno floor static"],
    ["Deno floor static", "haproxy (tcp mode)"],
    ["seaprox static (old)", "haproxy (tcp mode)"],
    ["seaprox SOCKS5", "microsocks (SOCKS5)"],
    ["seaprox SOCKS5", "Deno floor SOCKS5"],
    ["Deno floor SOCKS5", "microsocks (SOCKS5)"],
    ["seaprox SOCKS5 (old)", "microsocks (SOCKS5)"],
    ["seaprox HTTP CONNECT", "tinyproxy CONNECT"],
    ["seaprox HTTP CONNECT", "Deno floor CONNECT"],
    ["Deno floor CONNECT", "tinyproxy CONNECT"],
    ["seaprox HTTP CONNECT (old)", "tinyproxy CONNECT"],
  ];
  const rowOf = (name: string) => rows.find((r) => r.name === name && !r.err);
  const againstPeer = cPeerOf.flatMap(([p, q]) => {
    const ours = rowOf(p), peer = rowOf(q);
    if (!ours || !peer || ours.rps.length === 0 || ours.rps.length !== peer.rps.length) return [];
    const rates = ours.rps.map((x, i) => x / peer.rps[i]);
    const cpus = ours.cpu.length === peer.cpu.length ? ours.cpu.map((x, i) => x / peer.cpu[i]) : [];
    const each = (v: number[]) => v.map((x) => x.toFixed(2)).join(" ");
    return [
      `  ${p} / ${q}: conc req/s ${median(rates).toFixed(2)} (${each(rates)}), CPU µs/conn ` +
      (cpus.length > 0 ? `${median(cpus).toFixed(2)} (${each(cpus)})` : "—"),
    ];
  });
  if (againstPeer.length > 0) {
    console.log(
      `\nAgainst the C peer and the Deno floor, median of each round's ratio (every round's; ` +
        `rate goal ≥ 1.00):\n` +
        againstPeer.join("\n"),
    );
  }
  if (forwardRows.length > 0) {
    const directFwd = (keepAlive: boolean) =>
      forwardRows.find((_, i) => forwards[i].keepAlive === keepAlive && !forwards[i].port);
    console.log(
      `\nHTTP forwarding (absolute-form GET of nginx's ${smallAnswerBytes} B /small through ` +
        `the proxy, hey -x, ${reqCount} requests x${concurrency}): req/s and CPU µs per ` +
        `request of the proxy, medians of ${rounds} rounds\n`,
    );
    console.log(formatTable(
      ["path", "req/s", "× direct", "CPU µs/req"],
      forwardRows.map((r, i) => [
        r.name,
        r.rps.length > 0 ? fixed(median(r.rps)) : "—",
        r.rps.length > 0
          ? ratio(median(r.rps), median(directFwd(forwards[i].keepAlive)?.rps ?? []))
          : "—",
        r.cpu.length > 0 ? fixed(median(r.cpu)) : "—",
      ]),
    ));
    for (const r of forwardRows) if (r.err) console.log(`\n${r.name}: ${r.err}`);
  }
  if (mem) {
    console.log("\nseaprox memory (VmRSS of the process)\n");
    const mib = (kib: number) => fixed(kib / 1024, 1);
    console.log(formatTable(["state", "RSS MiB"], [
      ["idle", mib(mem.rssIdle)],
      ["1,000 idle relayed connections", mib(mem.rssIdleConns)],
      [
        `${busyConns} busy connections (peak; ${mem.busyMBps.toFixed(0)} MB/s together)`,
        mib(mem.rssBusy),
      ],
    ]));
  }
  for (
    const [col, key] of smallOnly ? [] : [["Deno source", "mbps"], ["curl←nginx", "curl"]] as const
  ) {
    const met = rows.filter((r) => /^seaprox [^(]*$/.test(r.name)).every((r) =>
      perRound(r[key], direct[key]) >= 0.8
    );
    console.log(
      `bulk target (static, SOCKS5, CONNECT ≥ 0.8 × direct), ${col}: ${met ? "met" : "NOT met"}`,
    );
  }
  Deno.removeSync(dir, { recursive: true });
} finally {
  await stopAll(procs);
  if (missing.size > 0) console.log(`\nnot installed here: ${[...missing].join(", ")}`);
}
