/**
 * `deno run -A bench/seaprox.ts`: seaprox (static, SOCKS5, HTTP CONNECT) side by side with
 * direct TCP and outside peers (socat, haproxy in tcp mode, microsocks) on one loopback
 * source, in one run:
 *
 * - bulk: one connection downloads `--bytes` (default 1 GiB) from a Deno source into a Deno
 *   client reading 4 MiB at a time; and curl downloads a 1 GiB file from nginx (the issue's
 *   measurement) through the same kinds of paths; MB/s and ratio to direct;
 * Every figure is the best of `--rounds` (default 3) interleaved rounds.
 * - small: `--seq` (default 2000) sequential connect + 8-byte request + 1 KiB answer, and
 *   `--requests` (default 4000) of them with `--concurrency` (default 32) workers: req/s;
 * - memory: seaprox's VmRSS idle, with 1,000 idle connections, and with 100 busy ones.
 *
 * The source is a Deno raw TCP server in its own process (this file, BENCH_ROLE=source):
 * read an 8-byte big-endian length, send that many bytes, FIN. The client is this process.
 * Not a test: numbers are as measured on a shared machine.
 */

import { closeQuietly, dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";

const enc = new TextEncoder();
const chunkBytes = 4 << 20;

// ---------------------------------------------------------------- source role
if (Deno.env.get("BENCH_ROLE") === "source") {
  const l = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.env.get("BENCH_PORT")) });
  const zeros = new Uint8Array(chunkBytes);
  console.log("ready");
  for await (const c of l) {
    (async () => {
      try {
        const head = new Uint8Array(8);
        let got = 0;
        while (got < 8) {
          const n = await c.read(head.subarray(got));
          if (n === null) return;
          got += n;
        }
        let left = Number(new DataView(head.buffer).getBigUint64(0));
        while (left > 0) {
          const n = Math.min(left, zeros.length);
          await writeAll(c, zeros.subarray(0, n));
          left -= n;
        }
        await c.closeWrite();
        const sink = new Uint8Array(64);
        while ((await c.read(sink)) !== null) { /* wait for the client's FIN */ }
      } catch {
        // A client that vanished mid-answer (the busy-RSS phase cuts them): nothing to do.
      } finally {
        closeQuietly(c);
      }
    })();
  }
}

// ---------------------------------------------------------------- helpers
function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}
const bulkBytes = flag("bytes", 1 << 30);
const seqCount = flag("seq", 2000);
const reqCount = flag("requests", 4000);
const concurrency = flag("concurrency", 32);
const rounds = flag("rounds", 3);
const idleConns = 1000;
const busyConns = 100;
const smallBytes = 1024;
/** Size of the (sparse) file nginx serves for the curl bulk column. */
const nginxFileBytes = 1 << 30;

/** A kernel-chosen free port (bound and released; fine for a benchmark). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = l.addr.port;
  l.close();
  return p;
}

async function waitPort(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      closeQuietly(await dial("127.0.0.1", port, { timeoutMs: 1000 }));
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

interface Proc {
  name: string;
  child: Deno.ChildProcess;
}
const procs: Proc[] = [];
/** Outside peers that are not installed here: their rows say so instead of failing the run. */
const missing = new Set<string>();
function spawn(name: string, cmd: string, args: string[], env?: Record<string, string>): Proc {
  // Peers' own logs would bury the table (the busy phase cuts 100 connections on purpose).
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, { args, env, stdout: "null", stderr: "null" }).spawn();
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    missing.add(cmd);
    return { name, child: undefined as unknown as Deno.ChildProcess };
  }
  const p = { name, child };
  procs.push(p);
  return p;
}
async function stopAll(): Promise<void> {
  for (const p of procs) {
    try {
      p.child.kill("SIGTERM");
    } catch {
      // already gone
    }
  }
  await Promise.all(procs.map((p) => p.child.status));
  if (missing.size > 0) console.log(`\nnot installed here: ${[...missing].join(", ")}`);
}

function rssKiB(pid: number): number {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? 0);
}

/** Ask the source for `n` bytes on `c`, read them all; returns bytes read. */
async function request(c: Duplex, n: number, buf: Uint8Array): Promise<number> {
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(n));
  await writeAll(c, head);
  let total = 0;
  while (true) {
    const r = await c.read(buf);
    if (r === null) break;
    total += r;
  }
  return total;
}

/** Read an HTTP response head byte by byte; returns its status code. */
async function readHeadStatus(c: Duplex): Promise<number> {
  let head = "";
  const one = new Uint8Array(1);
  while (!head.endsWith("\r\n\r\n")) {
    if ((await c.read(one)) === null) throw new Error(`EOF in CONNECT answer: ${head}`);
    head += String.fromCharCode(one[0]);
  }
  return Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
}

type Opener = () => Promise<Duplex>;
interface Route {
  name: string;
  /** The outside program this path needs, if any. */
  needs?: string;
  open: Opener;
  /** curl arguments reaching nginx's `/big` through this path. */
  curl(nginxPort: number): string[];
}

/** A plain TCP path; `nginxFront` is the same kind of path in front of nginx. */
function tcpRoute(name: string, port: number, nginxFront: number): Route {
  return {
    name,
    open: () => dial("127.0.0.1", port),
    curl: () => [`http://127.0.0.1:${nginxFront}/big`],
  };
}
function socksRoute(name: string, port: number, dest: number): Route {
  return {
    name,
    curl: (np) => ["--socks5", `127.0.0.1:${port}`, `http://127.0.0.1:${np}/big`],
    open: async () => {
      const c = await dial("127.0.0.1", port);
      try {
        const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: dest });
        return withPrefix(c, leftover);
      } catch (err) {
        closeQuietly(c);
        throw err;
      }
    },
  };
}
function connectRoute(name: string, port: number, dest: number): Route {
  return {
    name,
    curl: (np) => ["-p", "-x", `http://127.0.0.1:${port}`, `http://127.0.0.1:${np}/big`],
    open: async () => {
      const c = await dial("127.0.0.1", port);
      try {
        await writeAll(
          c,
          enc.encode(`CONNECT 127.0.0.1:${dest} HTTP/1.1\r\nHost: 127.0.0.1:${dest}\r\n\r\n`),
        );
        const status = await readHeadStatus(c);
        if (status !== 200) throw new Error(`CONNECT answered ${status}`);
        return c;
      } catch (err) {
        closeQuietly(c);
        throw err;
      }
    },
  };
}

async function bulk(route: Route): Promise<number> {
  const buf = new Uint8Array(chunkBytes);
  const t0 = performance.now();
  const c = await route.open();
  try {
    const got = await request(c, bulkBytes, buf);
    if (got !== bulkBytes) throw new Error(`${route.name}: got ${got} of ${bulkBytes} bytes`);
  } finally {
    closeQuietly(c);
  }
  return bulkBytes / 1e6 / ((performance.now() - t0) / 1000);
}

/** curl downloading the 1 GiB file from nginx through `route`: MB/s as curl reports it. */
async function curlBulk(route: Route, nginxPort: number): Promise<number> {
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{speed_download} %{size_download}",
      ...route.curl(nginxPort),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const [speed, size] = new TextDecoder().decode(out.stdout).trim().split(" ").map(Number);
  if (out.code !== 0 || size !== nginxFileBytes) {
    throw new Error(`curl via ${route.name}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return speed / 1e6;
}

async function oneSmall(route: Route, buf: Uint8Array): Promise<void> {
  const c = await route.open();
  try {
    const got = await request(c, smallBytes, buf);
    if (got !== smallBytes) throw new Error(`${route.name}: short answer ${got}`);
  } finally {
    closeQuietly(c);
  }
}

async function sequential(route: Route): Promise<number> {
  const buf = new Uint8Array(4096);
  const t0 = performance.now();
  for (let i = 0; i < seqCount; i++) await oneSmall(route, buf);
  return seqCount / ((performance.now() - t0) / 1000);
}

async function concurrent(route: Route): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const buf = new Uint8Array(4096);
      while (next++ < reqCount) await oneSmall(route, buf);
    }),
  );
  return reqCount / ((performance.now() - t0) / 1000);
}

// ---------------------------------------------------------------- main
const self = new URL(import.meta.url).pathname;
const seaproxScript = new URL("../services/seaprox.ts", import.meta.url).pathname;
const srcPort = freePort();
const ports = {
  static: freePort(),
  socks5: freePort(),
  http: freePort(),
  socat: freePort(),
  haproxy: freePort(),
  microsocks: freePort(),
  nginx: freePort(),
  staticNginx: freePort(),
  socatNginx: freePort(),
  haproxyNginx: freePort(),
};

try {
  spawn("source", Deno.execPath(), ["run", "-A", self], {
    BENCH_ROLE: "source",
    BENCH_PORT: String(srcPort),
  });
  const seaprox = spawn("seaprox", Deno.execPath(), [
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
  spawn("socat", "socat", [
    `TCP-LISTEN:${ports.socat},bind=127.0.0.1,fork,reuseaddr`,
    `TCP:127.0.0.1:${srcPort}`,
  ]);
  spawn("socat", "socat", [
    `TCP-LISTEN:${ports.socatNginx},bind=127.0.0.1,fork,reuseaddr`,
    `TCP:127.0.0.1:${ports.nginx}`,
  ]);
  const dir = Deno.makeTempDirSync({ prefix: "seaprox-bench-" });
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
  spawn("nginx", "nginx", ["-c", `${dir}/nginx.conf`, "-p", dir]);
  Deno.writeTextFileSync(
    `${dir}/haproxy.cfg`,
    [
      "global",
      "  maxconn 8192",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 60s",
      "  timeout server 60s",
      "frontend f",
      `  bind 127.0.0.1:${ports.haproxy}`,
      "  default_backend b",
      "backend b",
      `  server s1 127.0.0.1:${srcPort}`,
      "frontend fn",
      `  bind 127.0.0.1:${ports.haproxyNginx}`,
      "  default_backend bn",
      "backend bn",
      `  server s1 127.0.0.1:${ports.nginx}`,
      "",
    ].join("\n"),
  );
  spawn("haproxy", "haproxy", ["-f", `${dir}/haproxy.cfg`, "-db"]);
  spawn("microsocks", "microsocks", ["-i", "127.0.0.1", "-p", String(ports.microsocks)]);
  const peerOf: Record<string, string> = {
    socat: "socat",
    socatNginx: "socat",
    haproxy: "haproxy",
    haproxyNginx: "haproxy",
    microsocks: "microsocks",
    nginx: "nginx",
  };
  for (const [key, port] of [["source", srcPort] as const, ...Object.entries(ports)]) {
    if (!missing.has(peerOf[key] ?? "")) await waitPort(port);
  }
  const haveCurl = await new Deno.Command("curl", { args: ["--version"], stdout: "null" })
    .output().then((o) => o.success, () => false);
  const curlOk = haveCurl && !missing.has("nginx");

  const routes: Route[] = [
    tcpRoute("direct TCP", srcPort, ports.nginx),
    tcpRoute("seaprox static", ports.static, ports.staticNginx),
    socksRoute("seaprox SOCKS5", ports.socks5, srcPort),
    connectRoute("seaprox HTTP CONNECT", ports.http, srcPort),
    { ...tcpRoute("socat", ports.socat, ports.socatNginx), needs: "socat" },
    { ...tcpRoute("haproxy (tcp mode)", ports.haproxy, ports.haproxyNginx), needs: "haproxy" },
    { ...socksRoute("microsocks (SOCKS5)", ports.microsocks, srcPort), needs: "microsocks" },
  ];

  interface Row {
    name: string;
    mbps: number;
    curl: number;
    seq: number;
    rps: number;
    err?: string;
  }
  if (curlOk) await curlBulk(routes[0], ports.nginx); // pull the file into the page cache
  const rows: Row[] = routes.map((r) =>
    r.needs && missing.has(r.needs)
      ? { name: r.name, mbps: NaN, curl: NaN, seq: NaN, rps: NaN, err: `${r.needs} not installed` }
      : { name: r.name, mbps: 0, curl: curlOk ? 0 : NaN, seq: 0, rps: 0 }
  );
  // Rounds interleave the paths so a burst of load from elsewhere on the machine does not
  // land on one path only; each figure is the best round (the least disturbed one).
  for (let round = 1; round <= rounds; round++) {
    for (const [i, r] of routes.entries()) {
      const row = rows[i];
      if (row.err) continue;
      try {
        await oneSmall(r, new Uint8Array(4096)); // warm up (JIT, resolver, pools)
        row.mbps = Math.max(row.mbps, await bulk(r));
        if (curlOk) row.curl = Math.max(row.curl, await curlBulk(r, ports.nginx));
        row.seq = Math.max(row.seq, await sequential(r));
        row.rps = Math.max(row.rps, await concurrent(r));
        console.error(`  round ${round}: measured ${r.name}`);
      } catch (err) {
        Object.assign(row, { mbps: NaN, curl: NaN, seq: NaN, rps: NaN, err: String(err) });
        console.error(`  ${r.name} failed: ${err}`);
      }
    }
  }

  // Memory of the seaprox process.
  const pid = seaprox.child.pid;
  const rssIdle = rssKiB(pid);
  const idle: Duplex[] = [];
  for (let i = 0; i < idleConns; i++) idle.push(await dial("127.0.0.1", ports.static));
  // Let every relay reach its pending read.
  await new Promise((r) => setTimeout(r, 1000));
  const rssIdleConns = rssKiB(pid);
  for (const c of idle) closeQuietly(c);
  await new Promise((r) => setTimeout(r, 500));

  const stopBusy = new AbortController();
  let busyBytes = 0;
  const busy = Promise.all(Array.from({ length: busyConns }, async () => {
    const c = await dial("127.0.0.1", ports.static);
    const buf = new Uint8Array(256 * 1024);
    const head = new Uint8Array(8);
    new DataView(head.buffer).setBigUint64(0, BigInt(1) << BigInt(50));
    try {
      await writeAll(c, head);
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
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 200));
    rssBusy = Math.max(rssBusy, rssKiB(pid));
  }
  const busyMBps = busyBytes / 1e6 / ((performance.now() - busyStart) / 1000);
  stopBusy.abort();
  await busy;

  // ---------------------------------------------------------------- table
  const direct = rows[0];
  const fmt = (n: number, d = 0) => Number.isFinite(n) ? n.toFixed(d) : "-";
  const ratio = (n: number, base: number) => Number.isFinite(n) ? (n / base).toFixed(2) : "-";
  console.log(
    `\nseaprox on loopback, best of ${rounds} rounds: bulk ${bulkBytes >> 20} MiB (Deno source ` +
      `-> Deno client, 4 MiB reads) and curl <- nginx 1 GiB file; ${seqCount} sequential and ` +
      `${reqCount} x${concurrency} concurrent connect + 8 B request + ${smallBytes} B answer\n`,
  );
  console.log(
    "| path | bulk MB/s | × direct | curl←nginx MB/s | × direct | seq conn/s | × direct " +
      "| conc req/s | × direct |",
  );
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${fmt(r.mbps)} | ${ratio(r.mbps, direct.mbps)} | ${fmt(r.curl)} | ${
        ratio(r.curl, direct.curl)
      } | ${fmt(r.seq)} | ${ratio(r.seq, direct.seq)} | ${fmt(r.rps)} | ${
        ratio(r.rps, direct.rps)
      } |`,
    );
  }
  for (const r of rows) if (r.err) console.log(`\n${r.name}: ${r.err}`);
  console.log("\nseaprox memory (VmRSS of the process)\n");
  console.log("| state | RSS MiB |");
  console.log("|---|---:|");
  console.log(`| idle | ${(rssIdle / 1024).toFixed(1)} |`);
  console.log(`| 1,000 idle relayed connections | ${(rssIdleConns / 1024).toFixed(1)} |`);
  console.log(
    `| ${busyConns} busy connections (peak; ${busyMBps.toFixed(0)} MB/s together) | ${
      (rssBusy / 1024).toFixed(1)
    } |`,
  );
  for (const [col, key] of [["Deno source", "mbps"], ["curl←nginx", "curl"]] as const) {
    const met = rows.slice(1, 4).every((r) => r[key] / direct[key] >= 0.8);
    console.log(
      `bulk target (static, SOCKS5, CONNECT ≥ 0.8 × direct), ${col}: ${met ? "met" : "NOT met"}`,
    );
  }
  Deno.removeSync(dir, { recursive: true });
} finally {
  await stopAll();
}
