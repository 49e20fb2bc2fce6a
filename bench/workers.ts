/**
 * seaprox `--workers` (issue 19): one worker against two on the same port, in one run, with
 * nginx behind a static listener (and nginx alone as the floor). Small requests: `hey`
 * (keep-alive off, so each request is a proxied connection), req/s and CPU µs per request of
 * the whole seaprox tree (supervisor and workers). Bulk: 4 curl downloads of a 256 MiB file at
 * once, MB/s together and CPU s per GiB. Rounds are interleaved; the median is shown.
 *
 *   deno run -A bench/workers.ts [--rounds 3] [--requests 6400] [--concurrency 32]
 * @module
 */

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

/** `bulkStreams` curl downloads of the big file at once: MB/s together. */
async function bulk(port: number): Promise<number> {
  const t0 = performance.now();
  const outs = await Promise.all(
    Array.from({ length: bulkStreams }, () =>
      new Deno.Command("curl", {
        args: ["-sS", "-o", "/dev/null", "-w", "%{size_download}", `http://127.0.0.1:${port}/big`],
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
  const paths = [
    { name: "nginx alone", port: nginxPort, proc: undefined as Proc | undefined },
    { name: "seaprox --workers 1", ...await seaprox(1) },
    { name: "seaprox --workers 2", ...await seaprox(2) },
  ];
  const rows = paths.map(() => ({
    rps: [] as number[],
    us: [] as number[],
    mbs: [] as number[],
    sGiB: [] as number[],
  }));
  for (let r = 0; r < rounds; r++) {
    for (const [i, p] of paths.entries()) {
      const cpu0 = p.proc ? procCpuSeconds([p.proc]) : 0;
      rows[i].rps.push(await hey(p.port));
      const cpu1 = p.proc ? procCpuSeconds([p.proc]) : 0;
      rows[i].us.push((cpu1 - cpu0) * 1e6 / requests);
      rows[i].mbs.push(await bulk(p.port));
      const cpu2 = p.proc ? procCpuSeconds([p.proc]) : 0;
      rows[i].sGiB.push((cpu2 - cpu1) / (bulkStreams * bulkBytes / (1024 * MiB)));
    }
  }
  const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  console.log(
    `${
      new Date().toISOString().slice(0, 10)
    }, ${navigator.hardwareConcurrency} cores, load ${load}; ` +
      `hey -n ${requests} -c ${concurrency} -disable-keepalive (10-byte body); ` +
      `${bulkStreams} x curl 256 MiB at once; median of ${rounds} interleaved rounds`,
  );
  console.log("| path | small req/s | CPU µs/req (seaprox) | bulk MB/s | CPU s/GiB (seaprox) |");
  console.log("|---|---|---|---|---|");
  for (const [i, p] of paths.entries()) {
    const r = rows[i];
    const cpu = (x: number) => p.proc ? x.toFixed(x < 10 ? 2 : 0) : "-";
    console.log(
      `| ${p.name} | ${median(r.rps).toFixed(0)} | ${cpu(median(r.us))} | ` +
        `${median(r.mbs).toFixed(0)} | ${cpu(median(r.sGiB))} |`,
    );
  }
} finally {
  await stopAll(procs);
  Deno.removeSync(dir, { recursive: true });
}
