/**
 * `--workers` (issue 19): one worker against two on the same port, in one run, with nginx
 * behind: seaprox's static listener (nginx alone as the floor), and depot-server with one
 * depot-local (a redis-server for the two workers), plus a two-instance depot cluster reached
 * at the instance holding the exit and at the other one (the hand-over over the link). Small
 * requests, each a new proxied connection: `hey` (seaprox) or an in-process SOCKS5 client
 * (depot), req/s and CPU µs per request of the whole proxy (supervisor, workers, depot-local).
 * Bulk: 4 curl downloads of a 256 MiB file at once, MB/s together and CPU s per GiB. Rounds are
 * interleaved; the median is shown.
 *
 *   deno run -A --unstable-net bench/workers.ts [--rounds 3] [--requests 6400] [--concurrency 32]
 * @module
 */

import { dial, type Duplex } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import {
  freePort,
  MiB,
  type Proc,
  procCpuSeconds,
  servicePath,
  spawn,
  stopAll,
  waitPort,
} from "./_util.ts";

const arg = (name: string, dflt: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : dflt;
};
const rounds = arg("rounds", 3);
const concurrency = arg("concurrency", 32);
// hey makes n / c requests per connection loop: a multiple of c, so every one is made.
const requests = Math.ceil(arg("requests", 6400) / concurrency) * concurrency;
const bulkBytes = 256 * MiB;
const bulkStreams = 4;

const procs: Proc[] = [];
const dir = Deno.makeTempDirSync({ prefix: "workers-bench-" });
const nginxPort = freePort();
Deno.writeTextFileSync(`${dir}/small`, "0123456789");
Deno.writeFileSync(`${dir}/big`, new Uint8Array(0));
Deno.truncateSync(`${dir}/big`, bulkBytes); // sparse: served from the page cache
Deno.writeTextFileSync(
  `${dir}/nginx.conf`,
  [
    "user root;",
    "worker_processes 2;",
    "daemon off;",
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log;`,
    "events { worker_connections 4096; }",
    "http {",
    "  access_log off;",
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${dir};`),
    `  server { listen 127.0.0.1:${nginxPort}; root ${dir}; sendfile on; }`,
    "}",
    "",
  ].join("\n"),
);
procs.push(spawn("nginx", ["-c", `${dir}/nginx.conf`, "-p", dir], { output: "discard" }));

/** seaprox with `workers` workers: a static listener to nginx. */
async function seaprox(workers: number): Promise<{ proc: Proc; port: number }> {
  const port = freePort();
  const proc = spawn(Deno.execPath(), [
    "run",
    "-A",
    "--unstable-net",
    servicePath("seaprox.ts"),
    "--listen",
    `static://127.0.0.1:${port}?to=127.0.0.1:${nginxPort}`,
    "--workers",
    String(workers),
    "--max-conns",
    "4096",
    "--log-level",
    "warn",
  ], { name: `seaprox-w${workers}`, output: "stderr" });
  procs.push(proc);
  await waitPort(port, proc.name);
  // The supervisor starts worker 1, then the others: give them time to bind.
  await new Promise((r) => setTimeout(r, 3000));
  return { proc, port };
}

/** A redis-server on a free port, for the depot cluster rows. */
async function redis(): Promise<string> {
  const port = freePort();
  procs.push(
    spawn("redis-server", [
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--bind",
      "127.0.0.1",
    ], { output: "discard" }),
  );
  await waitPort(port, "redis-server");
  return `redis://127.0.0.1:${port}`;
}

/** depot-server (`extra` flags) on fixed ports; returns it and its SOCKS port. */
async function depotServer(
  name: string,
  extra: string[],
): Promise<{ proc: Proc; socks: number; control: number }> {
  const socks = freePort(), control = freePort();
  const proc = spawn(Deno.execPath(), [
    "run",
    "-A",
    "--unstable-net",
    servicePath("depot-server.ts"),
    "--socks",
    `127.0.0.1:${socks}`,
    "--control",
    `127.0.0.1:${control}`,
    "--tunnel",
    "127.0.0.1:0",
    "--max-conns",
    "4096",
    "--log-level",
    "warn",
    ...extra,
  ], {
    name,
    output: "stderr",
    env: {
      DEPOT_TOKEN: "workers-bench-token",
      ...(extra.includes("--cluster-listen")
        ? { DEPOT_CLUSTER_TOKEN: "workers-bench-cluster" }
        : {}),
    },
  });
  procs.push(proc);
  await waitPort(socks, name);
  await new Promise((r) => setTimeout(r, 3000));
  return { proc, socks, control };
}

/** depot-local connected to `control`. */
async function depotLocal(control: number): Promise<Proc> {
  const proc = spawn(Deno.execPath(), [
    "run",
    "-A",
    servicePath("depot-local.ts"),
    "--server",
    `127.0.0.1:${control}`,
    "--log-level",
    "warn",
  ], { name: "depot-local", output: "stderr", env: { DEPOT_TOKEN: "workers-bench-token" } });
  procs.push(proc);
  // Connected, and its lease read by every other instance (a few heartbeats).
  await new Promise((r) => setTimeout(r, 3000));
  return proc;
}

/** Everything `c` sends until its FIN. */
async function readAll(c: Duplex): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(16384);
  for (let n = await c.read(buf); n !== null; n = await c.read(buf)) parts.push(buf.slice(0, n));
  return new Uint8Array(parts.flatMap((p) => [...p]));
}

/** `requests` GETs of /small through the SOCKS5 port, `concurrency` at a time: req/s. */
async function socksLoad(port: number): Promise<number> {
  const req = new TextEncoder().encode(`GET /small HTTP/1.0\r\nHost: x\r\n\r\n`);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < requests) {
      const conn = await dial("127.0.0.1", port);
      const { leftover } = await socks5Connect(conn, { host: "127.0.0.1", port: nginxPort });
      await conn.write(req);
      const body = new TextDecoder().decode(new Uint8Array([...leftover, ...await readAll(conn)]));
      conn.close();
      if (!body.startsWith("HTTP/1.1 200") || !body.endsWith("0123456789")) {
        throw new Error(`bad answer through SOCKS: ${body.slice(0, 80)}`);
      }
    }
  }));
  return requests / ((performance.now() - t0) / 1000);
}

/** hey against `port`: requests per second. */
async function hey(port: number): Promise<number> {
  const out = await new Deno.Command("hey", {
    args: [
      "-n",
      String(requests),
      "-c",
      String(concurrency),
      "-disable-keepalive",
      `http://127.0.0.1:${port}/small`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const codes = /\[200\]\s+(\d+) responses/.exec(text);
  if (Number(codes?.[1]) !== requests) throw new Error(`hey: not all 200:\n${text}`);
  return Number(/Requests\/sec:\s+([\d.]+)/.exec(text)![1]);
}

/** `bulkStreams` curl downloads of the big file at once (through SOCKS5 with `socks`): MB/s. */
async function bulk(port: number, socks = false): Promise<number> {
  const t0 = performance.now();
  const outs = await Promise.all(
    Array.from({ length: bulkStreams }, () =>
      new Deno.Command("curl", {
        args: [
          "-sS",
          "-o",
          "/dev/null",
          "-w",
          "%{size_download}",
          ...(socks
            ? ["--socks5-hostname", `127.0.0.1:${port}`, `http://127.0.0.1:${nginxPort}/big`]
            : [`http://127.0.0.1:${port}/big`]),
        ],
        stdout: "piped",
      }).output()),
  );
  const ms = performance.now() - t0;
  for (const o of outs) {
    const got = Number(new TextDecoder().decode(o.stdout));
    if (got !== bulkBytes) throw new Error(`curl got ${got} of ${bulkBytes} bytes`);
  }
  return bulkStreams * bulkBytes / 1e6 / (ms / 1000);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  await waitPort(nginxPort, "nginx");
  const sp1 = await seaprox(1), sp2 = await seaprox(2);
  const url = await redis();
  const d1 = await depotServer("depot-w1", []);
  const d1local = await depotLocal(d1.control);
  const d2 = await depotServer("depot-w2", [
    "--registry",
    url,
    "--heartbeat",
    "500ms",
    "--workers",
    "2",
  ]);
  const d2local = await depotLocal(d2.control);
  // Two instances of a cluster: the exit connects to A; B hands its requests over to A.
  // A cluster of its own: another database of the same Redis (leases of one name would mix).
  const clusterArgs = [
    "--registry",
    `${url}/1`,
    "--heartbeat",
    "500ms",
    "--cluster-listen",
    "127.0.0.1:0",
  ];
  const a = await depotServer("depot-A", clusterArgs);
  const aLocal = await depotLocal(a.control);
  const b = await depotServer("depot-B", clusterArgs);
  await new Promise((r) => setTimeout(r, 2000));
  type Path = { name: string; port: number; procs: Proc[]; socks: boolean };
  const paths: Path[] = [
    { name: "nginx alone", port: nginxPort, procs: [], socks: false },
    { name: "seaprox --workers 1", port: sp1.port, procs: [sp1.proc], socks: false },
    { name: "seaprox --workers 2", port: sp2.port, procs: [sp2.proc], socks: false },
    { name: "depot --workers 1", port: d1.socks, procs: [d1.proc, d1local], socks: true },
    { name: "depot --workers 2", port: d2.socks, procs: [d2.proc, d2local], socks: true },
    {
      name: "depot cluster, at the holder",
      port: a.socks,
      procs: [a.proc, b.proc, aLocal],
      socks: true,
    },
    {
      name: "depot cluster, handed over",
      port: b.socks,
      procs: [a.proc, b.proc, aLocal],
      socks: true,
    },
  ];
  const rows = paths.map(() => ({
    rps: [] as number[],
    us: [] as number[],
    mbs: [] as number[],
    sGiB: [] as number[],
  }));
  for (let r = 0; r < rounds; r++) {
    for (const [i, p] of paths.entries()) {
      const cpu0 = procCpuSeconds(p.procs);
      rows[i].rps.push(p.socks ? await socksLoad(p.port) : await hey(p.port));
      const cpu1 = procCpuSeconds(p.procs);
      rows[i].us.push((cpu1 - cpu0) * 1e6 / requests);
      rows[i].mbs.push(await bulk(p.port, p.socks));
      const cpu2 = procCpuSeconds(p.procs);
      rows[i].sGiB.push((cpu2 - cpu1) / (bulkStreams * bulkBytes / (1024 * MiB)));
    }
  }
  const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  console.log(
    `${
      new Date().toISOString().slice(0, 10)
    }, ${navigator.hardwareConcurrency} cores, load ${load}; ` +
      `${requests} requests, ${concurrency} at once, a new connection each (hey -disable-keepalive; ` +
      `SOCKS5 from this process for depot), 10-byte body; ` +
      `${bulkStreams} x curl 256 MiB at once; median of ${rounds} interleaved rounds`,
  );
  console.log("| path | small req/s | CPU µs/req (proxy) | bulk MB/s | CPU s/GiB (proxy) |");
  console.log("|---|---|---|---|---|");
  for (const [i, p] of paths.entries()) {
    const r = rows[i];
    const cpu = (x: number) => p.procs.length > 0 ? x.toFixed(x < 10 ? 2 : 0) : "-";
    console.log(
      `| ${p.name} | ${median(r.rps).toFixed(0)} | ${cpu(median(r.us))} | ` +
        `${median(r.mbs).toFixed(0)} | ${cpu(median(r.sGiB))} |`,
    );
  }
} finally {
  await stopAll(procs);
  Deno.removeSync(dir, { recursive: true });
}
