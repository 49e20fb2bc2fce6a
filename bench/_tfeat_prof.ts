/**
 * Where tunnel-server's CPU goes per small request with the features users turn on (issue 20):
 * `wrk -t2 -c50` keep-alive GET /hello through a tunnel-server of this checkout (or `--dir
 * TREE`'s) and a tunnel-client to an nginx origin, the server started with one `--variant`:
 *
 * - `raw`: no feature (the default path, for comparison);
 * - `log`: `--access-log info` (its lines to /dev/null);
 * - `rewrite`: a request header set and a response header added (`--host-rewrite`), as
 *   bench/tunnel.ts's "rewrites" row.
 *
 * Default: a V8 CPU profile of the server while wrk runs, self time per kind (ops, Deno's
 * runtime JS, GC, each of our files) and per function, scaled to the CPU the process used
 * meanwhile (/proc); the profiler slows the process, so read the shares. `--promises`: promises
 * created per request instead (V8's promise hook, bench/_promise_count.ts).
 *
 *   deno run -A bench/_tfeat_prof.ts --variant rewrite [--promises] [--seconds 5] [--top 40] [--dir TREE]
 * @module
 */

import {
  benchFlags,
  benchPath,
  freePort,
  type Proc,
  procCpuSeconds,
  promiseCount,
  spawnDeno,
  startHelloNginx,
  startTunnelClient,
  stopAll,
  waitPort,
  wrkHello,
} from "./_util.ts";
import { byKind, recordProfile, selfTimes } from "./_cpuprof.ts";

const flags = benchFlags({
  numbers: { seconds: 5, top: 40 },
  booleans: ["promises"],
  strings: ["dir", "variant"],
});
const dir = flags.dir ?? benchPath("..");
const variant = flags.variant ?? "raw";

const variantArgs: Record<string, string[]> = {
  raw: [],
  log: ["--access-log", "info"],
  rewrite: [
    "--host-rewrite",
    "v.test=req-set:X-Env:bench",
    "--host-rewrite",
    "v.test=res-add:X-Frame-Options:DENY",
  ],
};
if (!variantArgs[variant]) throw new Error(`--variant must be one of ${Object.keys(variantArgs)}`);

const nginx = await startHelloNginx("warren-tfeat-nginx-");
const procs: Proc[] = [nginx.proc];
const id = "tfeat-" + crypto.randomUUID();
const inspect = freePort();
const port = freePort();
// Its output is dropped (an access-logged server writes a line per request), as
// bench/tunnel.ts's logged rows do.
const server = spawnDeno(`${dir}/services/tunnel-server.ts`, [
  "--listen",
  `127.0.0.1:${port}`,
  "--host",
  "v.test=env:TFEAT_ID",
  ...variantArgs[variant],
], {
  env: { TFEAT_ID: id },
  output: "discard",
  denoFlags: flags.promises
    ? ["--preload", benchPath("_promise_count.ts")]
    : [`--inspect=127.0.0.1:${inspect}`],
});
procs.push(server);

try {
  await waitPort(port, "tunnel-server");
  await startTunnelClient(dir, port, nginx.port, id, procs);

  const pid = server.child.pid;
  await wrkHello(port, 2); // warm-up
  if (flags.promises) {
    const p0 = await promiseCount(pid);
    const requests = await wrkHello(port, flags.seconds);
    const p1 = await promiseCount(pid);
    console.log(`tunnel-server (${variant}): ${((p1 - p0) / requests).toFixed(2)} promises/req`);
  } else {
    const running = wrkHello(port, flags.seconds + 2);
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = procCpuSeconds([server]);
    const profile = await recordProfile("127.0.0.1", inspect, flags.seconds * 1000);
    const cpuUs = (procCpuSeconds([server]) - t0) * 1e6;
    const requests = (await running) * flags.seconds / (flags.seconds + 2);
    const busy = selfTimes(profile).filter((r) => r.key !== "(idle)");
    const busyMs = busy.reduce((s, r) => s + r.ms, 0);
    const us = (ms: number) => (ms / busyMs * cpuUs / requests).toFixed(2).padStart(7);
    console.log(
      `== tunnel-server (${variant}): ${Math.round(requests)} requests, ` +
        `${(cpuUs / requests).toFixed(1)} µs CPU per request with the profiler on`,
    );
    for (const k of byKind(profile)) console.log(`${us(k.ms)} µs  ${k.key}`);
    console.log("-- self, by function");
    for (const r of busy.slice(0, flags.top)) console.log(`${us(r.ms)} µs  ${r.key}`);
  }
} finally {
  await stopAll(procs);
  Deno.removeSync(nginx.dir, { recursive: true });
}
