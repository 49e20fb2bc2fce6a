/**
 * Where seaprox's microseconds per connection go, one listener kind at a time (issue 20): a
 * seaprox with one `--kind` listener (static, socks5 or connect: an http listener asked for
 * CONNECT tunnels) runs with its inspector open — or, with `--floor`, the Deno floor of that kind
 * (bench/floor_proxy.ts, bench/floor_connect.ts) — while `--requests` small exchanges run with
 * `--concurrency` workers; then the self time per function and per kind is printed in µs per
 * connection beside the process's CPU µs per connection (user + system). `--strace` counts its
 * syscalls per connection instead of profiling (strace -c -f), `--heap` adds V8's sampled
 * allocation per function in bytes per connection, `--tree DIR` runs another checkout's seaprox.
 * `--promises` counts the promises the proxy creates per connection instead of profiling
 * (bench/_promise_count.ts preloaded: a count of work, the CPU figure is not read then).
 *
 *   deno run -A bench/_seaprox_prof.ts --kind connect [--requests 4000] [--floor] [--strace]
 * @module
 */

import { byKind, printHeapTable, selfTimes, startProfile, userSys } from "./_cpuprof.ts";
import {
  benchFlags,
  benchPath,
  concurrentRps,
  connectRoute,
  freePort,
  promiseCount,
  type Route,
  socksRoute,
  spawn,
  startLengthSource,
  stopAll,
  tcpRoute,
  waitPort,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { requests: 4000, concurrency: 32, top: 30 },
  booleans: ["floor", "strace", "heap", "promises"],
  strings: ["tree", "kind", "out"],
});
const kind = flags.kind ?? "socks5";
if (!["static", "socks5", "connect"].includes(kind)) {
  throw new Error(`--kind ${kind}: static, socks5 or connect`);
}
const tree = flags.tree ?? new URL("..", import.meta.url).pathname;
const [src, port, insp] = Array.from({ length: 3 }, freePort);
const inspect = flags.promises
  ? [`--preload=${benchPath("_promise_count.ts")}`]
  : flags.strace
  ? []
  : [`--inspect=127.0.0.1:${insp}`];
const procs = [(await startLengthSource(src)).proc];
try {
  let proxyPort = port;
  if (flags.floor) {
    const script = benchPath(kind === "connect" ? "floor_connect.ts" : "floor_proxy.ts");
    const env: Record<string, string> = kind === "static"
      ? { BENCH_MODE: "static", BENCH_TARGET: `127.0.0.1:${src}`, BENCH_FLOOR_EXTRAS: "1" }
      : { BENCH_MODE: kind, BENCH_FLOOR_EXTRAS: "1" };
    const p = spawn(Deno.execPath(), ["run", "-A", ...inspect, script], { env });
    procs.push(p);
    proxyPort = (JSON.parse(await p.waitFor(/^\{"port"/)) as { port: number }).port;
  } else {
    const url = kind === "static"
      ? `static://127.0.0.1:${port}?to=127.0.0.1:${src}`
      : `${kind === "connect" ? "http" : "socks5"}://127.0.0.1:${port}`;
    procs.push(
      spawn(Deno.execPath(), [
        "run",
        "-A",
        ...inspect,
        `${tree}/services/seaprox.ts`,
        "--log-level",
        "warn",
        "--prefer-ipv4",
        "--max-conns",
        "4096",
        "--listen",
        url,
      ], { output: "stderr" }),
    );
    await waitPort(port);
  }
  await waitPort(src);
  const route: Route = kind === "static"
    ? tcpRoute("static", proxyPort)
    : kind === "socks5"
    ? socksRoute("socks5", proxyPort, src)
    : connectRoute("connect", proxyPort, src);
  await concurrentRps(route, 2000, flags.concurrency); // warm up (JIT, pools)
  const n = flags.requests;
  const proc = procs[1];
  const stop = flags.strace || flags.promises ? undefined : await startProfile(insp, flags.heap);
  const promisesBefore = flags.promises ? await promiseCount(proc.child.pid) : 0;
  const strace = flags.strace
    ? new Deno.Command("strace", {
      args: ["-c", "-f", "-o", "/tmp/seaprox_prof.strace", "-p", String(proc.child.pid)],
      stderr: "null",
    }).spawn()
    : undefined;
  if (strace) await new Promise((r) => setTimeout(r, 500));
  const us0 = userSys(proc);
  const t0 = performance.now();
  await concurrentRps(route, n, flags.concurrency);
  const ms = performance.now() - t0;
  const us1 = userSys(proc);
  const user = (us1.user - us0.user) * 1e6 / n, sys = (us1.sys - us0.sys) * 1e6 / n;
  console.log(
    `${flags.floor ? "floor" : "seaprox"} ${kind}: ${n} connections ×${flags.concurrency} in ${
      ms.toFixed(0)
    } ms; user ${user.toFixed(0)} + system ${sys.toFixed(0)} = ${(user + sys).toFixed(0)} µs/conn`,
  );
  if (flags.promises) {
    const made = (await promiseCount(proc.child.pid)) - promisesBefore;
    console.log(`-- promises per connection: ${(made / n).toFixed(2)}`);
  }
  if (strace) {
    strace.kill("SIGINT");
    await strace.status;
    console.log("-- syscalls per connection");
    for (const line of Deno.readTextFileSync("/tmp/seaprox_prof.strace").split("\n").slice(2)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 5 && /^\d/.test(f[3])) {
        console.log(`${(Number(f[3]) / n).toFixed(2).padStart(8)}  ${f.at(-1)}`);
      }
    }
  }
  if (stop) {
    const { profile, heap } = await stop();
    const rows = selfTimes(profile);
    const busy = rows.filter((r) => r.key !== "(idle)").reduce((s, r) => s + r.ms, 0);
    const us = (v: number) => (v * 1000 / n).toFixed(2).padStart(8);
    console.log(`-- JS-profile busy ${us(busy)} µs/conn, by kind`);
    for (const r of byKind(profile).slice(0, 14)) console.log(`${us(r.ms)}  ${r.key}`);
    console.log("-- top functions (self)");
    for (const r of rows.filter((r) => r.key !== "(idle)").slice(0, flags.top)) {
      console.log(`${us(r.ms)}  ${r.key}`);
    }
    if (flags.out) Deno.writeTextFileSync(`${flags.out}.cpuprofile`, JSON.stringify(profile));
    if (heap) {
      printHeapTable(heap, n, flags.top);
    }
  }
} finally {
  await stopAll(procs);
}
