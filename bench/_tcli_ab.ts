/**
 * tunnel-client's CPU per small request, variant against variant (issue 20): one nginx origin,
 * one tunnel-server (this checkout) with a host per variant, one tunnel-client per variant
 * (`--variant LABEL=DIR[:ENV=VALUE,...]`: DIR's services/tunnel-client.ts with those environment
 * variables: an old checkout, or a scratch switch; `ARGS=--flag value` adds client flags), and the mux floor pair (bench/floor_mux.ts)
 * beside them. Each round runs `wrk -t2 -c<connections>` on GET /hello for `--seconds` through
 * every path in turn (order reversed every other round) and reads each client's user and system
 * time from /proc; the table shows medians and each row's same-round ratio to the first variant.
 * The server is shared, so paths run one at a time (two clients loading one server at once
 * starved each other: 1,100 rps and CPU per request swinging 30×).
 *
 * - `--close`: every request on a new connection (`Connection: close`): a new tunnel stream
 *   and a new origin connection each, the client's per-connection path;
 * - `--connections N` (default 50): fewer connections, smaller batches per mux read and write;
 * - `--syscalls`: the client's sendto/recvfrom/epoll_wait/... per request (perf tracepoints).
 *
 *   deno run -A bench/_tcli_ab.ts --rounds 6 --seconds 4 [--close] \
 *     --variant old=/work/old-tcli --variant new=/work/wt-tcli
 * @module
 */

import {
  benchFlags,
  benchPath,
  listeningPort,
  median,
  type Proc,
  procStat,
  roundOrder,
  spawnDeno,
  startHelloNginx,
  startTunnelClient,
  stopAll,
  wrk,
  type WrkResult,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { seconds: 4, rounds: 5, connections: 50 },
  booleans: ["syscalls", "close"],
  strings: ["variant"],
});

/** Every `--variant` given (benchFlags keeps the last; read them all from Deno.args). */
function variantArgs(): string[] {
  const out: string[] = [];
  for (let i = 0; i < Deno.args.length; i++) {
    if (Deno.args[i] === "--variant") out.push(Deno.args[++i]);
    else if (Deno.args[i].startsWith("--variant=")) out.push(Deno.args[i].slice(10));
  }
  return out;
}

interface Variant {
  label: string;
  dir: string;
  env: Record<string, string>;
  /** More flags of its tunnel-client (`ARGS=` in the variant's list). */
  args: string[];
}

const variants: Variant[] = variantArgs().map((s) => {
  const [label, rest] = s.split(/=(.*)/s);
  const [dir, envList] = rest.split(/:(.*)/s);
  const env: Record<string, string> = {};
  for (const kv of (envList ?? "").split(",").filter(Boolean)) {
    const [k, v] = kv.split(/=(.*)/s);
    env[k] = v;
  }
  // ARGS=... (space-separated) are more flags of that client, not an environment variable.
  const args = env.ARGS?.split(" ").filter(Boolean) ?? [];
  delete env.ARGS;
  return { label, dir, env, args };
});
if (variants.length === 0) throw new Error("--variant LABEL=DIR[:ENV=V,...] at least once");
void flags.variant;

/** user and system ticks (1/100 s) of `pid` (all its threads). */
function ticks(pid: number): [number, number] {
  const s = procStat(pid);
  return [s.utime, s.stime];
}

const traced = [
  "sendto",
  "recvfrom",
  "write",
  "read",
  "epoll_wait",
  "epoll_ctl",
  "futex",
  "socket",
  "connect",
  "setsockopt",
  "getsockname",
  "getpeername",
  "shutdown",
  "close",
];

/** Count the syscalls of `pid` (perf tracepoints) until the result is called: per request. */
function perfStat(pid: number): (requests: number) => Promise<string> {
  const child = new Deno.Command("perf", {
    args: [
      "stat",
      "-x,",
      "-p",
      String(pid),
      ...traced.flatMap((s) => ["-e", `syscalls:sys_enter_${s}`]),
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  return async (requests) => {
    child.kill("SIGINT");
    const out = new TextDecoder().decode((await child.output()).stderr);
    return out.trim().split("\n").map((l) => {
      const f = l.split(",");
      return `${f[2]?.replace("syscalls:sys_enter_", "")} ${(Number(f[0]) / requests).toFixed(3)}`;
    }).join(" ");
  };
}

const nginx = await startHelloNginx("warren-tcli-nginx-");
const originPort = nginx.port;
const procs: Proc[] = [nginx.proc];

const id = "tcli-" + crypto.randomUUID();
const hostArgs: string[] = [];
const env: Record<string, string> = {};
variants.forEach((_, i) => {
  hostArgs.push("--host", `v${i}.test=env:TCLI_ID_${i}`);
  env[`TCLI_ID_${i}`] = `${id}-${i}`;
});
const server = spawnDeno(benchPath("../services/tunnel-server.ts"), [
  "--listen",
  "127.0.0.1:0",
  ...hostArgs,
  "--log-level",
  "info",
], { env });
procs.push(server);
const srvPort = await listeningPort(server, "http");

interface Path {
  label: string;
  host?: string;
  port: number;
  client: Proc;
  server: Proc;
}
const paths: Path[] = [];
for (const [i, v] of variants.entries()) {
  const client = await startTunnelClient(v.dir, srvPort, originPort, `${id}-${i}`, procs, {
    args: v.args,
    env: v.env,
  });
  paths.push({ label: v.label, host: `v${i}.test`, port: srvPort, client, server });
}
const floorServer = spawnDeno(benchPath("floor_mux.ts"), [], {
  env: { BENCH_MODE: "tunnel-server" },
});
procs.push(floorServer);
const fl = JSON.parse(await floorServer.waitFor(/^\{"port"/)) as { port: number; tunnel: number };
const floorClient = spawnDeno(benchPath("floor_mux.ts"), [], {
  env: {
    BENCH_MODE: "tunnel-client",
    BENCH_SERVER: `127.0.0.1:${fl.tunnel}`,
    BENCH_TARGET: `127.0.0.1:${originPort}`,
  },
  output: "discard",
});
procs.push(floorClient);
paths.push({ label: "mux floor", port: fl.port, client: floorClient, server: floorServer });

/**
 * wrk -t2 -c<connections> on GET /hello through `p` for `seconds`; with `--close` every request
 * on a new connection (`Connection: close`): a new stream and origin connection each.
 */
function load(p: Path, seconds: number): Promise<WrkResult> {
  return wrk(`http://127.0.0.1:${p.port}/hello`, {
    seconds,
    threads: Math.min(2, flags.connections),
    connections: flags.connections,
    host: p.host,
    headers: flags.close ? ["Connection: close"] : [],
  });
}

interface Sample {
  rps: number;
  usr: number;
  sys: number;
  srv: number;
}
const samples: Sample[][] = paths.map(() => []);
try {
  // Warm-up: JIT every path.
  for (const p of paths) {
    await load(p, 1);
  }
  for (let round = 1; round <= flags.rounds; round++) {
    for (const [i, p] of roundOrder(paths, round)) {
      const perf = flags.syscalls ? perfStat(p.client.child.pid) : undefined;
      const c0 = ticks(p.client.child.pid), s0 = ticks(p.server.child.pid);
      const r = await load(p, flags.seconds);
      const c1 = ticks(p.client.child.pid), s1 = ticks(p.server.child.pid);
      const sc = perf ? await perf(r.requests) : "";
      if (r.non2xx > 0 || r.requests === 0) throw new Error(`${p.label}: ${r.non2xx} non-2xx`);
      const per = (t: number) => t * 1e4 / r.requests; // ticks are 10 ms: µs per request
      samples[i].push({
        rps: r.rps,
        usr: per(c1[0] - c0[0]),
        sys: per(c1[1] - c0[1]),
        srv: per(s1[0] + s1[1] - s0[0] - s0[1]),
      });
      if (sc) console.error(`  ${p.label}: ${sc}`);
    }
    const loadAvg = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
    console.error(
      `round ${round} (load ${loadAvg}): ` +
        paths.map((p, i) => {
          const s = samples[i][round - 1];
          return `${p.label} ${(s.usr + s.sys).toFixed(1)}`;
        }).join(", "),
    );
  }
} finally {
  await stopAll(procs);
  Deno.removeSync(nginx.dir, { recursive: true });
}

const f1 = (v: number) => v.toFixed(1);
console.log(
  "| path | rps | client usr µs/req | client sys | client total | vs first (same-round median, range) | server µs/req |",
);
console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const [i, p] of paths.entries()) {
  const s = samples[i];
  const tot = s.map((x) => x.usr + x.sys);
  const ratios = s.map((x, r) => (x.usr + x.sys) / (samples[0][r].usr + samples[0][r].sys));
  const cmp = i === 0
    ? ""
    : `${median(ratios).toFixed(3)} (${Math.min(...ratios).toFixed(2)}–${
      Math.max(...ratios).toFixed(2)
    })`;
  console.log(
    `| ${p.label} | ${median(s.map((x) => x.rps)).toFixed(0)} | ${
      f1(median(s.map((x) => x.usr)))
    } | ${f1(median(s.map((x) => x.sys)))} | ${f1(median(tot))} | ${cmp} | ${
      f1(median(s.map((x) => x.srv)))
    } |`,
  );
}
