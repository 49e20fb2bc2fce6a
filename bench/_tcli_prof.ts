/**
 * Where tunnel-client's CPU goes, beside the mux floor's client (bench/floor_mux.ts), under
 * `wrk -t2 -c50` on GET /hello (an nginx origin, a tunnel-server of this checkout), issue 20:
 *
 * - default: a V8 CPU profile of each client while wrk runs, summed per function and per kind
 *   (ops, Deno's runtime JS, GC, each of our files) by **sample counts**, scaled to the CPU
 *   the process used meanwhile (/proc). Counts, not the profile's time deltas: on a loaded box
 *   a sample taken after the thread was preempted carries the whole wait (one sample in an
 *   op_write or a small function then weighed a microsecond per request);
 * - `--promises`: promises created per request instead (V8's promise hook,
 *   bench/_promise_count.ts): a count of work, no CPU figure.
 *
 * `--server` instruments the two servers instead (tunnel-server of TREE, the mux floor's
 * server), the clients then run plain.
 *
 * `--syscalls`: syscalls per request of each side instead (perf tracepoints, all of them).
 *
 * `--out PREFIX` writes each raw profile to `PREFIX-TITLE.cpuprofile` (Chrome DevTools).
 *
 * `--close` sends every request on a new connection (`Connection: close`): a new tunnel stream
 * and a new origin connection each, the client's per-connection path. `--dir TREE` profiles
 * TREE's services/tunnel-client.ts (an old checkout). The profiler slows a process: read the
 * shares, not the absolute figures.
 *
 *   deno run -A bench/_tcli_prof.ts [--server] [--close] [--promises] [--seconds 5] [--top 45] [--dir TREE] [--out PREFIX]
 * @module
 */

import {
  benchFlags,
  benchPath,
  freePort,
  listeningPort,
  type Proc,
  procCpuSeconds,
  promiseCount,
  spawnDeno,
  startHelloNginx,
  startTunnelClient,
  stopAll,
  wrkHello,
} from "./_util.ts";
import { byKind, type CpuProfile, recordProfile, selfTimes } from "./_cpuprof.ts";

const flags = benchFlags({
  numbers: { seconds: 5, top: 45 },
  booleans: ["promises", "close", "server", "syscalls"],
  strings: ["dir", "out"],
});
const dir = flags.dir ?? benchPath("..");

const nginx = await startHelloNginx("warren-tcli-nginx-");
const originPort = nginx.port;
const procs: Proc[] = [nginx.proc];

/** Deno flags of a profiled child: its inspector, or the promise counter. */
function instrumented(inspectPort: number): string[] {
  return flags.promises
    ? ["--preload", benchPath("_promise_count.ts")]
    : [`--inspect=127.0.0.1:${inspectPort}`];
}

const id = "tcli-" + crypto.randomUUID();
const serverInspect = freePort();
const server = spawnDeno(`${flags.server ? dir : benchPath("..")}/services/tunnel-server.ts`, [
  "--listen",
  "127.0.0.1:0",
  "--host",
  "v.test=env:TCLI_ID",
  "--log-level",
  "info",
], { env: { TCLI_ID: id }, denoFlags: flags.server ? instrumented(serverInspect) : [] });
procs.push(server);
const srvPort = await listeningPort(server, "http");
const clientInspect = freePort();
const client = await startTunnelClient(dir, srvPort, originPort, id, procs, {
  denoFlags: flags.server ? [] : instrumented(clientInspect),
});
const floorServerInspect = freePort();
const floorServer = spawnDeno(benchPath("floor_mux.ts"), [], {
  env: { BENCH_MODE: "tunnel-server" },
  denoFlags: flags.server ? instrumented(floorServerInspect) : [],
});
procs.push(floorServer);
const fl = JSON.parse(await floorServer.waitFor(/^\{"port"/)) as { port: number; tunnel: number };
const floorInspect = freePort();
const floorClient = spawnDeno(benchPath("floor_mux.ts"), [], {
  env: {
    BENCH_MODE: "tunnel-client",
    BENCH_SERVER: `127.0.0.1:${fl.tunnel}`,
    BENCH_TARGET: `127.0.0.1:${originPort}`,
  },
  denoFlags: flags.server ? [] : instrumented(floorInspect),
});
procs.push(floorClient);
const sides = flags.server
  ? [
    { title: "tunnel-server", port: srvPort, inspect: serverInspect, proc: server },
    { title: "mux floor server", port: fl.port, inspect: floorServerInspect, proc: floorServer },
  ]
  : [
    { title: "tunnel-client", port: srvPort, inspect: clientInspect, proc: client },
    { title: "mux floor client", port: fl.port, inspect: floorInspect, proc: floorClient },
  ];

/** Count every syscall of `pid` (perf tracepoints) until the result is called: per request. */
function perfStat(pid: number): (requests: number) => Promise<string> {
  const child = new Deno.Command("perf", {
    args: ["stat", "-x,", "-p", String(pid), "-e", "syscalls:sys_enter_*"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  return async (requests) => {
    child.kill("SIGINT");
    const out = new TextDecoder().decode((await child.output()).stderr);
    return out.trim().split("\n").map((l) => l.split(",")).filter((f) => Number(f[0]) > 0)
      .map((f) =>
        `${f[2]?.replace("syscalls:sys_enter_", "")} ${(Number(f[0]) / requests).toFixed(3)}`
      )
      .join("  ");
  };
}

function show(title: string, p: CpuProfile, requests: number, cpuUs: number): void {
  // Sample counts ("even"), not time deltas: see the module's doc.
  const rows = selfTimes(p, "even").filter((r) => r.key !== "(idle)");
  const busy = rows.reduce((s, r) => s + r.ms, 0);
  const sampleMs = (p.endTime - p.startTime) / 1000 / p.samples.length; // what "even" weighs
  const us = (ms: number) => (ms / busy * cpuUs / requests).toFixed(2).padStart(7);
  console.log(
    `\n== ${title}: ${requests} requests, ${(cpuUs / requests).toFixed(1)} µs CPU per request ` +
      `with the profiler on (/proc), ${Math.round(busy / sampleMs)} busy samples`,
  );
  for (const k of byKind(p, "even")) console.log(`${us(k.ms)} µs  ${k.key}`);
  console.log("-- self, by function");
  for (const r of rows.slice(0, flags.top)) console.log(`${us(r.ms)} µs  ${r.key}`);
}

try {
  for (const s of sides) {
    await wrkHello(s.port, 2, flags.close); // warm-up
    if (flags.promises) {
      const p0 = await promiseCount(s.proc.child.pid);
      const requests = await wrkHello(s.port, flags.seconds, flags.close);
      const p1 = await promiseCount(s.proc.child.pid);
      console.log(`${s.title}: ${((p1 - p0) / requests).toFixed(2)} promises per request`);
      continue;
    }
    if (flags.syscalls) {
      const stop = perfStat(s.proc.child.pid);
      const requests = await wrkHello(s.port, flags.seconds, flags.close);
      console.log(`${s.title}: ${await stop(requests)}`);
      continue;
    }
    const running = wrkHello(s.port, flags.seconds + 2, flags.close);
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = procCpuSeconds([s.proc]);
    const profile = await recordProfile("127.0.0.1", s.inspect, flags.seconds * 1000);
    const cpuUs = (procCpuSeconds([s.proc]) - t0) * 1e6;
    const requests = await running;
    if (flags.out) {
      Deno.writeTextFileSync(
        `${flags.out}-${s.title.replaceAll(" ", "-")}.cpuprofile`,
        JSON.stringify(profile),
      );
    }
    // The profile covers `seconds` of the run's `seconds + 2`: its share of the requests.
    show(s.title, profile, requests * flags.seconds / (flags.seconds + 2), cpuUs);
  }
} finally {
  await stopAll(procs);
  Deno.removeSync(nginx.dir, { recursive: true });
}
