/**
 * Where plain depot's microseconds per connection go (issue 20): depot-server and depot-local
 * (this checkout's, or `--tree DIR`'s) run with their inspectors open, `--requests` small SOCKS
 * exchanges run with `--concurrency` workers while both are profiled (bench/_cpuprof.ts), and
 * the self time per function, per file and per kind is printed in µs per connection, with each
 * process's CPU µs per connection (user + system) beside it.
 *
 *   deno run -A bench/_depot_prof.ts [--requests 4000] [--concurrency 32] [--top 30] [--mux]
 *
 * `--v8=FLAGS` passes V8 flags to both processes (`--no-turbo-inlining,--no-maglev-inlining`:
 * each function's samples its own, not an inlining caller's). `--out PREFIX` writes both
 * profiles (bench/_depot_pieces.ts sorts them into pieces of work). `--floor` profiles
 * bench/floor_reverse.ts's two processes instead (`--floor-mux`: bench/floor_mux.ts's depot modes, the floor of `--mux`); `--strace` counts their
 * syscalls per connection (strace -c -f); `--perf` samples both with `perf record` (cpu-clock,
 * which counts only while the process runs; V8's `--perf-basic-prof` names JIT code) and prints
 * µs per connection by binary (kernel, deno, JIT, libc), the top symbols and the top JS functions
 * (a function's Sparkplug, Maglev and Turbofan code as one); `--callgraph` (with `--perf`)
 * records call chains too and adds each JS function's inclusive µs (what runs under it: the ops
 * and syscalls it calls, the functions it calls); `--no-profile`
 * skips the inspector (then the CPU figures are the process's own, unperturbed); `--promises`
 * counts the promises each process creates per connection (bench/_promise_count.ts preloaded;
 * implies `--no-profile`, and its CPU figures are the hook's, not the path's).
 * `--concurrency 1` makes the exchanges sequential: each process's cost per set-up (the
 * `_depot_ab.ts --seq` regime, where every hop wakes a process), not per connection under load.
 * @module
 */

import { byKind, printHeapTable, selfTimes, startProfile, userSys } from "./_cpuprof.ts";
import {
  benchFlags,
  concurrentRps,
  depotServerArgs,
  freePort,
  procCpuSeconds,
  promiseCount,
  socksRoute,
  spawn,
  startLengthSource,
  stopAll,
  waitPort,
  waitUntil,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { requests: 4000, concurrency: 32, top: 30 },
  booleans: [
    "mux",
    "floor",
    "floor-mux",
    "promises",
    "promise-sites",
    "strace",
    "perf",
    "callgraph",
    "no-profile",
    "heap",
  ],
  strings: ["tree", "out", "v8"],
});
const tree = flags.tree ?? new URL("..", import.meta.url).pathname;
if (flags["promise-sites"]) flags.promises = true;
if (flags.promises) flags["no-profile"] = true;
const preload = flags.promises
  ? ["--preload", new URL("./_promise_count.ts", import.meta.url).pathname]
  : [];
const env: Record<string, string> = {
  DEPOT_TOKEN: crypto.randomUUID(),
  ...(flags["promise-sites"] ? { BENCH_PROMISE_SITES: "1" } : {}),
};
// `--v8=FLAGS`: V8 flags for both processes (e.g. `--no-turbo-inlining,--no-maglev-inlining`,
// so an inlined callee's samples are its own, not its caller's), beside `--perf`'s.
const v8List = [...(flags.perf ? ["--perf-basic-prof"] : []), ...(flags.v8 ? [flags.v8] : [])];
const v8Flags = v8List.length ? [`--v8-flags=${v8List.join(",")}`] : [];
const [src, control, socks, tunnel, status, inspS, inspL] = Array.from({ length: 7 }, freePort);
const deno = (script: string, args: string[], inspect?: number, e?: Record<string, string>) =>
  spawn(Deno.execPath(), [
    "run",
    "-A",
    ...(inspect && !flags["no-profile"] ? [`--inspect=127.0.0.1:${inspect}`] : []),
    ...(inspect ? v8Flags : []),
    ...(inspect ? preload : []),
    script,
    ...args,
  ], { env: { ...env, ...e }, output: "stderr" });
const procs = [(await startLengthSource(src)).proc];
try {
  let socksPort = socks;
  if (flags.floor || flags["floor-mux"]) {
    // bench/floor_reverse.ts's (or floor_mux.ts's) two processes instead, profiled the same way.
    const fm = flags["floor-mux"];
    const floor = `${tree}/bench/floor_${fm ? "mux" : "reverse"}.ts`;
    const inspect = [
      ...(flags["no-profile"] ? [] : [`--inspect=127.0.0.1:${inspS}`]),
      ...v8Flags,
      ...preload,
    ];
    const server = spawn(Deno.execPath(), ["run", "-A", ...inspect, floor], {
      env: { ...env, BENCH_MODE: fm ? "depot-server" : "server" },
    });
    procs.push(server);
    const ports = JSON.parse(await server.waitFor(/^\{"port"/)) as { port: number; tunnel: number };
    socksPort = ports.port;
    procs.push(
      deno(floor, [], inspL, {
        BENCH_MODE: fm ? "depot-local" : "local",
        BENCH_SERVER: `127.0.0.1:${ports.tunnel}`,
      }),
    );
    await new Promise((r) => setTimeout(r, 1000));
  } else {
    procs.push(
      deno(
        `${tree}/services/depot-server.ts`,
        depotServerArgs({ control, socks, tunnel, status }),
        inspS,
      ),
      deno(`${tree}/services/depot-local.ts`, [
        "--log-level",
        "warn",
        ...(flags.mux ? ["--mux"] : []),
        "--server",
        `127.0.0.1:${control}`,
      ], inspL),
    );
    await waitPort(socks);
    await waitUntil("exit", async () => {
      const st = await (await fetch(`http://127.0.0.1:${status}/status`)).json() as {
        exits: unknown[];
      };
      return st.exits.length === 1;
    });
  }
  await waitPort(src);
  const route = socksRoute("depot", socksPort, src);
  await concurrentRps(route, 2000, flags.concurrency); // warm up
  const n = flags.requests;
  const sessions = flags["no-profile"]
    ? []
    : await Promise.all([inspS, inspL].map((p) => startProfile(p, flags.heap)));
  const us0 = [userSys(procs[1]), userSys(procs[2])];
  // `--strace`: syscall counts of both processes during the load (strace -c -f).
  const straces = flags.strace
    ? procs.slice(1).map((p, i) =>
      new Deno.Command("strace", {
        args: ["-c", "-f", "-o", `/tmp/depot_prof.strace.${i}`, "-p", String(p.child.pid)],
        stderr: "null",
      }).spawn()
    )
    : [];
  // `--perf`: cpu-clock samples of both processes during the load.
  const perfHz = 4999;
  const perfs = flags.perf
    ? procs.slice(1).map((p, i) =>
      new Deno.Command("perf", {
        args: [
          "record",
          ...(flags.callgraph ? ["-g"] : []),
          "-e",
          "cpu-clock",
          "-F",
          String(perfHz),
          "-o",
          `/tmp/depot_prof.perf.${i}`,
          "-p",
          String(p.child.pid),
        ],
        stdout: "null",
      }).spawn()
    )
    : [];
  if (straces.length || perfs.length) await new Promise((r) => setTimeout(r, 500));
  const promises0 = flags.promises ? await promiseCounts(procs.slice(1, 3)) : [];
  const sites0 = flags["promise-sites"] ? promiseSites(procs.slice(1, 3)) : [];
  const cpu0 = [procCpuSeconds([procs[1]]), procCpuSeconds([procs[2]])];
  const t0 = performance.now();
  await concurrentRps(route, n, flags.concurrency);
  const ms = performance.now() - t0;
  const cpu = [procCpuSeconds([procs[1]]), procCpuSeconds([procs[2]])].map((c, i) =>
    (c - cpu0[i]) * 1e6 / n
  );
  const us1 = [userSys(procs[1]), userSys(procs[2])];
  if (flags.promises) {
    const promises1 = await promiseCounts(procs.slice(1, 3));
    for (const [i, name] of ["server", "local"].entries()) {
      console.log(`${name}: ${((promises1[i] - promises0[i]) / n).toFixed(2)} promises/conn`);
    }
    if (flags["promise-sites"]) {
      for (const [i, sites1] of promiseSites(procs.slice(1, 3)).entries()) {
        console.log(`-- ${i === 0 ? "server" : "local"}: promises per connection by site`);
        const rows = [...sites1].map(([k, v]) => [k, (v - (sites0[i].get(k) ?? 0)) / n] as const)
          .filter(([, v]) => v >= 0.05).sort((a, b) => b[1] - a[1]);
        for (const [k, v] of rows.slice(0, flags.top)) {
          console.log(`${v.toFixed(2).padStart(7)}  ${k}`);
        }
      }
    }
  }
  for (const [i, name] of ["server", "local"].entries()) {
    const user = (us1[i].user - us0[i].user) * 1e6 / n;
    const sys = (us1[i].sys - us0[i].sys) * 1e6 / n;
    console.log(`${name}: user ${user.toFixed(0)} + system ${sys.toFixed(0)} µs/conn`);
  }
  // Each process's profiles come back with it: the two stop concurrently, in either order.
  const stopped = await Promise.all(sessions.map((s) => s()));
  const profiles = stopped.map((s) => s.profile);
  const heaps = stopped.map((s) => s.heap);
  for (const [i, st] of straces.entries()) {
    st.kill("SIGINT");
    await st.status;
    const text = Deno.readTextFileSync(`/tmp/depot_prof.strace.${i}`);
    console.log(`\n== strace ${i === 0 ? "server" : "local"}, calls per connection`);
    for (const line of text.split("\n").slice(2)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 5 && /^\d/.test(f[3])) {
        console.log(`${(Number(f[3]) / n).toFixed(2).padStart(8)}  ${f.at(-1)}`);
      }
    }
  }
  for (const [i, pr] of perfs.entries()) {
    try {
      pr.kill("SIGINT");
    } catch {
      // perf ended on its own (its output says why); its file has what it sampled.
    }
    await pr.status;
    const pid = procs[i + 1].child.pid;
    perfReport(`/tmp/depot_prof.perf.${i}`, i === 0 ? "server" : "local", perfHz, n, pid);
    // `--perf-basic-prof` leaves V8's log of each isolate in the working directory.
    for (const e of Deno.readDirSync(".")) {
      if (e.name.startsWith("isolate-") && e.name.endsWith(`-${pid}-v8.log`)) {
        Deno.removeSync(e.name);
      }
    }
  }
  console.log(`${n} connections ×${flags.concurrency} in ${ms.toFixed(0)} ms`);
  for (const [i, name] of ["depot-server", "depot-local"].entries()) {
    const p = profiles[i];
    if (!p) continue; // --no-profile
    const rows = selfTimes(p);
    const busy = rows.filter((r) => r.key !== "(idle)").reduce((s, r) => s + r.ms, 0);
    const us = (v: number) => (v * 1000 / n).toFixed(2).padStart(8);
    console.log(
      `\n== ${name}: CPU ${cpu[i].toFixed(0)} µs/conn (user+sys), JS-profile busy ${
        us(busy)
      } µs/conn`,
    );
    for (const r of byKind(p).slice(0, 14)) console.log(`${us(r.ms)}  ${r.key}`);
    console.log("-- top functions (self)");
    for (const r of rows.filter((r) => r.key !== "(idle)").slice(0, flags.top)) {
      console.log(`${us(r.ms)}  ${r.key}`);
    }
    if (flags.out) Deno.writeTextFileSync(`${flags.out}.${name}.cpuprofile`, JSON.stringify(p));
    const heap = heaps[i];
    if (heap) {
      printHeapTable(heap, n, flags.top);
    }
  }
} finally {
  await stopAll(procs);
}

/**
 * Print `perf report` of `file` as µs per connection: by binary, then the top symbols; then
 * the `deno` binary's share split by what V8's perf map (`/tmp/perf-PID.map`) names in it.
 */
function perfReport(file: string, name: string, hz: number, n: number, pid: number): void {
  const report = (sort: string) =>
    new TextDecoder().decode(
      new Deno.Command("perf", {
        args: [
          "report",
          "-i",
          file,
          "--stdio",
          "--no-children",
          "-g",
          "none",
          "-F",
          "sample," + sort,
          "--sort",
          sort,
        ],
        stdout: "piped",
        stderr: "null",
      }).outputSync().stdout,
    ).split("\n").filter((l) => /^\s*\d/.test(l)).map((l) => {
      const [samples, ...rest] = l.trim().split(/\s+/);
      return { us: Number(samples) * 1e6 / hz / n, what: rest.join(" ") };
    }).sort((a, b) => b.us - a.us);
  const dsos = report("dso");
  const total = dsos.reduce((s, r) => s + r.us, 0);
  console.log(`\n== perf ${name}: ${total.toFixed(1)} µs/conn sampled, by binary`);
  for (const r of dsos.slice(0, 8)) console.log(`${r.us.toFixed(1).padStart(8)}  ${r.what}`);
  console.log("-- top symbols");
  for (const r of report("dso,sym").slice(0, flags.top)) {
    console.log(`${r.us.toFixed(2).padStart(8)}  ${r.what}`);
  }
  builtinReport(file, `/tmp/perf-${pid}.map`, hz, n);
}

/**
 * The samples of `file` by kind, with the `deno` binary split in two: V8's embedded builtins
 * and bytecode handlers (promises, await, ICs, the interpreter: named in V8's perf map,
 * whose `Builtin:` entries lie in the binary, where `perf report` cannot resolve them: it is
 * stripped) and the rest of the binary (Deno's Rust ops and runtime, V8's C++: GC, compilers,
 * runtime calls). Also by thread name (V8's GC and compiler workers beside the main thread),
 * and the top builtins. µs per connection.
 */
function builtinReport(file: string, mapFile: string, hz: number, n: number): void {
  let map: { start: number; end: number; name: string }[];
  try {
    map = Deno.readTextFileSync(mapFile).split("\n").flatMap((line) => {
      const [start, size, ...name] = line.split(" ");
      const s = parseInt(start, 16);
      return Number.isFinite(s) && name.length
        ? [{ start: s, end: s + parseInt(size, 16), name: name.join(" ") }]
        : [];
    }).sort((a, b) => a.start - b.start);
  } catch {
    return; // no perf map (V8 wrote none): nothing to resolve the binary's builtins with
  }
  const script = new TextDecoder().decode(
    new Deno.Command("perf", {
      args: ["script", "-i", file, "-G", "-F", "comm,ip,dso"],
      stdout: "piped",
      stderr: "null",
    }).outputSync().stdout,
  );
  const find = (ip: number) => {
    let lo = 0, hi = map.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (map[mid].start <= ip) lo = mid + 1;
      else hi = mid - 1;
    }
    const e = map[hi];
    return e && ip < e.end ? e.name : undefined;
  };
  const kinds = new Map<string, number>();
  const builtins = new Map<string, number>();
  const threads = new Map<string, number>();
  /** JIT samples by function, its tiers' code as one (the perf map's `JS:*'f`, `JS:+'f`...). */
  const jsFunctions = new Map<string, number>();
  const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (const line of script.split("\n")) {
    const m = line.match(/^\s*(.+?)\s+([0-9a-f]+)\s+\((.*)\)\s*$/);
    if (!m) continue;
    const [, comm, ipHex, dso] = m;
    count(threads, comm);
    let kind = "other";
    if (dso.includes("kernel")) kind = "kernel";
    else if (dso.includes("libc")) kind = "libc";
    else if (dso.startsWith("/tmp/perf-") || dso.includes("JIT")) {
      kind = "JIT code";
      const name = find(parseInt(ipHex, 16));
      if (name) count(jsFunctions, jsFunctionName(name));
    } else if (dso.endsWith("/deno")) {
      const name = find(parseInt(ipHex, 16));
      if (name && /^(Builtin|BytecodeHandler):/.test(name)) {
        kind = "deno: V8 builtins + bytecode handlers";
        count(
          builtins,
          name.startsWith("BytecodeHandler") ? "BytecodeHandler:* (interpreter)" : name,
        );
      } else kind = "deno: native (Rust ops, V8 C++ and GC)";
    }
    count(kinds, kind);
  }
  const us = (samples: number) => (samples * 1e6 / hz / n).toFixed(2).padStart(8);
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  console.log("-- by kind (the deno binary split by V8's perf map)");
  for (const [k, v] of sorted(kinds)) console.log(`${us(v)}  ${k}`);
  console.log("-- by thread");
  for (const [k, v] of sorted(threads)) console.log(`${us(v)}  ${k}`);
  console.log("-- top builtins");
  for (const [k, v] of sorted(builtins).slice(0, 20)) console.log(`${us(v)}  ${k}`);
  console.log("-- top JS functions (self, tiers merged)");
  for (const [k, v] of sorted(jsFunctions).slice(0, flags.top)) console.log(`${us(v)}  ${k}`);
  if (flags.callgraph) callgraphReport(file, n);
}

/** A perf map's JS name without its tier mark: `JS:*'f file:1:2` and `JS:+'f file:1:2` are one. */
function jsFunctionName(name: string): string {
  return name.replace(/^JS:[*+~^]?'?/, "");
}

/**
 * `--callgraph`: each JS function's inclusive µs per connection (samples with it anywhere on
 * the stack: the ops, syscalls and functions under it), tiers merged, from `perf report
 * --children` (V8 keeps frame pointers, so perf walks JS frames).
 */
function callgraphReport(file: string, n: number): void {
  const text = new TextDecoder().decode(
    new Deno.Command("perf", {
      args: ["report", "-i", file, "--stdio", "--children", "--sort", "sym", "-g", "none"],
      stdout: "piped",
      stderr: "null",
    }).outputSync().stdout,
  );
  // The report's shares are of the event count (ns of cpu-clock): µs per connection from that.
  const ns = Number(/^# Event count \(approx\.\): (\d+)/m.exec(text)?.[1] ?? 0);
  const usOf = (pct: number) => pct / 100 * ns / 1000 / n;
  const fns = new Map<string, number>();
  for (const line of text.split("\n")) {
    const r = /^\s*([\d.]+)%\s+[\d.]+%\s+\[\.\]\s+(JS:.*?)\s*$/.exec(line);
    if (!r) continue;
    const k = jsFunctionName(r[2]);
    fns.set(k, (fns.get(k) ?? 0) + usOf(Number(r[1])));
  }
  console.log("-- top JS functions (inclusive: with what runs under them; tiers added)");
  for (const [k, v] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, flags.top)) {
    console.log(`${v.toFixed(2).padStart(8)}  ${k}`);
  }
}

/** Each process's promises by site, as written with its last count (`--promise-sites`). */
function promiseSites(ps: typeof procs): Map<string, number>[] {
  return ps.map((p) =>
    new Map(JSON.parse(Deno.readTextFileSync(`/tmp/promise_sites.${p.child.pid}`)))
  );
}

/** Each process's promise count so far (bench/_promise_count.ts, preloaded, on SIGUSR2). */
function promiseCounts(ps: typeof procs): Promise<number[]> {
  return Promise.all(ps.map((p) => promiseCount(p.child.pid)));
}
