/**
 * `deno run -A bench/_mux_bulk_ab.ts --trees 'new=DIR,old=DIR[:K=V+K=V]' [--rounds 9] [--mib 512]
 * [--up] [--rt]`: depot `--mux` bulk downloads (with `--up`, uploads too) of several checkouts
 * beside plain depot (of the first tree), in one run (issue 20's goal: `--mux` bulk ≥ 0.9× plain).
 * Every round moves `--mib` MiB once through every path, in alternating order. Per path: the
 * median rate, the median of the same-round rate ratios to plain depot (and each of them), the
 * CPU seconds per GiB of depot-server and depot-local apart (the time their threads ran, from
 * /proc/<pid>/task/<tid>/schedstat; user + system in 10 ms ticks beside it), their sum, the
 * source's and this client's (the ends: they share the box's cores with the path), and the
 * median same-round ratio of the path's sum to plain depot's. bench/depot.ts's bulk rows without its
 * other paths, so more rounds fit and each process shows.
 *
 * - `:K=V+K=V` after a tree's directory: extra environment for that tree's services (a variant
 *   made switchable by an environment variable in a scratch copy, run beside the others).
 * - `--rt`: while a path moves its bytes, its processes, the source and this client run under
 *   SCHED_RR (`chrt`, root only), so other jobs loading the box do not sit in the pipeline: the
 *   rates of a quiet box, on a busy one (each transfer is short; the rest of the box waits).
 * - `--v8 FLAGS`: V8 flags for the services (`--v8=--perf-basic-prof` for perf), and
 *   `--pause-ms N`: after the warm-up, print every service's pid and wait N ms (to attach perf
 *   or strace to them).
 * - `--perf-stat`: `perf stat` on every service from the end of the warm-up to the last round
 *   (task-clock, page faults, and the recvfrom, sendto and epoll_wait calls, per GiB moved
 *   through its path): where one path's CPU goes into more or fewer syscalls than another's
 *   (bench/RESULTS.md mbulk: 1 MiB frames and the 1 MiB TCP_NOTSENT_LOWAT double depot-local's
 *   writes against plain depot's).
 * - `--no-plain`: the `--mux` paths only.
 * - `--floors`: also the Deno floors for bulk, in the same rounds: bench/floor_reverse.ts as it
 *   is (16 KiB reads: its floor of the cost per connection), bench/floor_mux_bulk.ts's plain
 *   shape (a TCP connection per stream, reads of up to 4 MiB) and its framed shape (the stream
 *   as frames over one shared connection, credit-based flow control; and with `BENCH_SERIAL=1`,
 *   its receiver waiting for each write as a plain relay does), and a table of same-round
 *   ratios: floor-mux ÷ floor-plain, depot `--mux` ÷ depot, depot `--mux` ÷ floor-mux.
 * @module
 */

import {
  benchFlags,
  benchPath,
  benchTrees,
  depotServerArgs,
  downloadMBps,
  fixed,
  formatTable,
  freePort,
  median,
  type Proc,
  procStat,
  procTicksPerSecond,
  roundOrder,
  type Route,
  socksRoute,
  spawn,
  spawnDeno,
  startLengthSource,
  stopAll,
  threadRunNs,
  uploadMBps,
  waitPort,
  waitUntil,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 9, mib: 512, "pause-ms": 0 },
  booleans: ["up", "no-plain", "rt", "floors", "perf-stat"],
  strings: ["trees", "v8"],
});
/** `name=DIR` or `name=DIR:K=V+K=V` (extra environment of that tree's services). */
const trees = benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");
const bytes = flags.mib * 1024 * 1024;
const gib = bytes / (1 << 30);
const baseEnv: Record<string, string> = { DEPOT_TOKEN: crypto.randomUUID() };
const procs: Proc[] = [];
/** `--v8 FLAGS`: V8 flags for every service (e.g. `--perf-basic-prof` for perf). */
const denoFlags = flags.v8 ? [`--v8-flags=${flags.v8}`] : [];
const paths: { name: string; route: Route; procs: Proc[] }[] = [];

/** `--rt`: SCHED_RR 10 for `pid`'s threads (root only), or back to SCHED_OTHER. */
function realtime(pid: number, on: boolean): void {
  const args = on ? ["-a", "-r", "-p", "10", String(pid)] : ["-a", "-o", "-p", "0", String(pid)];
  const { success } = new Deno.Command("chrt", { args, stderr: "null" }).outputSync();
  if (!success && on) throw new Error(`chrt ${args.join(" ")} failed (root only)`);
}

/**
 * User and system CPU seconds of `pid` so far (its threads; 10 ms ticks), and the time its
 * threads ran in all (ns-resolution, schedstat; depot's processes have no children).
 */
function userSys(pid: number): [number, number, number] {
  const s = procStat(pid);
  return [s.utime / procTicksPerSecond, s.stime / procTicksPerSecond, threadRunNs(pid) / 1e9];
}

/** A depot pair of checkout `dir` (`--mux` or plain): its SOCKS port and its two processes. */
async function startPair(
  dir: string,
  mux: boolean,
  extra = "",
): Promise<{ socks: number; procs: Proc[] }> {
  const env = { ...baseEnv };
  for (const kv of extra.split(",").filter(Boolean)) {
    const [k, v = ""] = kv.split("=");
    env[k] = v;
  }
  const p = { control: freePort(), socks: freePort(), tunnel: freePort(), status: freePort() };
  const server = spawnDeno(`${dir}/services/depot-server.ts`, depotServerArgs(p), {
    env,
    output: "stderr",
    name: "depot-server",
    denoFlags,
  });
  procs.push(server);
  await waitPort(p.status, "depot-server");
  const local = spawnDeno(`${dir}/services/depot-local.ts`, [
    "--log-level",
    "warn",
    ...(mux ? ["--mux"] : []),
    "--server",
    `127.0.0.1:${p.control}`,
  ], { env, output: "stderr", name: "depot-local", denoFlags });
  procs.push(local);
  await waitUntil("exit registered", async () => {
    const st = await (await fetch(`http://127.0.0.1:${p.status}/status`)).json() as {
      exits: unknown[];
    };
    return st.exits.length === 1;
  });
  return { socks: p.socks, procs: [server, local] };
}

/**
 * A floor's two processes (`script` in bench/, `env` for both): its SOCKS5 port and the two.
 * The server prints `{"port":N,"tunnel":M}`; the local dials the tunnel port.
 */
async function startFloorPair(
  script: string,
  env: Record<string, string>,
): Promise<{ socks: number; procs: Proc[] }> {
  const server = spawnDeno(benchPath(script), [], {
    env: { ...env, BENCH_MODE: "server" },
    name: `${script} server`,
    denoFlags,
  });
  procs.push(server);
  const { port, tunnel } = JSON.parse(await server.waitFor(/^\{"port"/)) as {
    port: number;
    tunnel: number;
  };
  const local = spawnDeno(benchPath(script), [], {
    env: { ...env, BENCH_MODE: "local", BENCH_SERVER: `127.0.0.1:${tunnel}` },
    output: "stderr",
    name: `${script} local`,
    denoFlags,
  });
  procs.push(local);
  return { socks: port, procs: [server, local] };
}

/** The counters `--perf-stat` reads, in its table's order after the path and process. */
const perfEvents = [
  "task-clock",
  "page-faults",
  "syscalls:sys_enter_recvfrom",
  "syscalls:sys_enter_sendto",
  "syscalls:sys_enter_epoll_wait",
];

/** `--perf-stat`: one `perf stat -p` per service of every path, each writing `dir/<i>-<j>`. */
function startPerfStat(dir: string): Proc[] {
  return paths.flatMap((p, i) =>
    p.procs.map((q, j) => {
      const proc = spawn("perf", [
        ...["stat", "-x,", "-e", perfEvents.join(","), "-p", String(q.child.pid)],
        ...["-o", `${dir}/${i}-${j}`],
      ], { output: "discard", name: "perf stat" });
      procs.push(proc);
      return proc;
    })
  );
}

/** `--perf-stat`'s table: per service, each counter per GiB its path moved (`gibs`). */
function perfTable(dir: string, gibs: number): string {
  const rows = paths.flatMap((p, i) =>
    p.procs.map((q, j) => {
      const counts = new Map<string, number>();
      for (const line of Deno.readTextFileSync(`${dir}/${i}-${j}`).split("\n")) {
        const f = line.split(",");
        if (f.length > 2 && !line.startsWith("#")) counts.set(f[2], Number(f[0]));
      }
      return [p.name, q.name, ...perfEvents.map((e) => fixed((counts.get(e) ?? NaN) / gibs))];
    })
  );
  return `\nperf stat, per GiB through the path (${fixed(gibs, 1)} GiB each)\n` + formatTable(
    ["path", "process", "task-clock ms", "page faults", "recvfrom", "sendto", "epoll_wait"],
    rows,
  );
}

const floorRevName = "floor reverse (16 KiB)";
const floorPlainName = "floor plain (bulk)";
const floorMuxName = "floor mux (bulk)";
const floorSerialName = "floor mux, serial receive";

try {
  const { proc: source, port: srcPort } = await startLengthSource();
  procs.push(source);
  if (!flags["no-plain"]) {
    const plain = await startPair(trees[0].dir, false);
    paths.push({
      name: "depot",
      route: socksRoute("depot", plain.socks, srcPort),
      procs: plain.procs,
    });
  }
  for (const t of trees) {
    const pair = await startPair(t.dir, true, t.extra);
    const name = `depot --mux (${t.name})`;
    paths.push({ name, route: socksRoute(name, pair.socks, srcPort), procs: pair.procs });
  }
  if (flags.floors) {
    const floors: [string, string, Record<string, string>][] = [
      [floorRevName, "floor_reverse.ts", {}],
      [floorPlainName, "floor_mux_bulk.ts", { BENCH_FRAMED: "0" }],
      [floorMuxName, "floor_mux_bulk.ts", { BENCH_FRAMED: "1" }],
      [floorSerialName, "floor_mux_bulk.ts", { BENCH_FRAMED: "1", BENCH_SERIAL: "1" }],
    ];
    for (const [name, script, env] of floors) {
      const pair = await startFloorPair(script, env);
      paths.push({ name, route: socksRoute(name, pair.socks, srcPort), procs: pair.procs });
    }
  }
  const dirs = flags.up ? ["down", "up"] as const : ["down"] as const;
  type Dir = (typeof dirs)[number];
  const rate = new Map<string, number[]>();
  const cpu = new Map<string, number[][]>();
  const key = (i: number, d: Dir) => `${i}:${d}`;

  /** `--floors`: same-round ratios of rate and of CPU (server + local) between named paths. */
  const floorRatios = (d: Dir): string => {
    const at = (name: string) => paths.findIndex((p) => p.name === name);
    const mux = paths.findIndex((p) => p.name.startsWith("depot --mux"));
    const pairs: [string, number, number][] = [
      ["floor-mux ÷ floor-plain", at(floorMuxName), at(floorPlainName)],
      ["floor-plain ÷ floor reverse (16 KiB)", at(floorPlainName), at(floorRevName)],
      ["floor-mux serial ÷ floor-mux", at(floorSerialName), at(floorMuxName)],
      ["depot --mux ÷ depot", mux, at("depot")],
      ["depot --mux ÷ floor-mux", mux, at(floorMuxName)],
      ["depot ÷ floor-plain", at("depot"), at(floorPlainName)],
    ];
    const rows = pairs.filter(([, a, b]) => a >= 0 && b >= 0).map(([name, a, b]) => {
      const ra = rate.get(key(a, d))!, rb = rate.get(key(b, d))!;
      const ca = cpu.get(key(a, d))!, cb = cpu.get(key(b, d))!;
      const rr = ra.map((v, j) => v / rb[j]).sort((x, y) => x - y);
      const cr = ca.map((x, j) => (x[2] + x[5]) / (cb[j][2] + cb[j][5]));
      const sr = ca.map((x, j) => x[2] / cb[j][2]);
      const lr = ca.map((x, j) => x[5] / cb[j][5]);
      return [
        name,
        median(rr).toFixed(2),
        `${rr[0].toFixed(2)}–${rr[rr.length - 1].toFixed(2)}`,
        median(cr).toFixed(2),
        median(sr).toFixed(2),
        median(lr).toFixed(2),
      ];
    });
    return `\n${d}: same-round ratios (medians)\n` + formatTable(
      ["ratio", "MB/s", "min–max", "CPU/GiB (sum)", "server", "local"],
      rows,
    );
  };
  for (const p of paths) await downloadMBps(p.route, 16 << 20); // warm up
  if (flags["pause-ms"] > 0) {
    // Time to attach a tracer (strace, perf) to the services, whose pids this prints.
    for (const p of paths) {
      console.error(`${p.name}: ${p.procs.map((q) => `${q.name} ${q.child.pid}`).join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, flags["pause-ms"]));
  }
  const perfDir = flags["perf-stat"] ? Deno.makeTempDirSync({ prefix: "mux-bulk-perf-" }) : "";
  const perfs = flags["perf-stat"] ? startPerfStat(perfDir) : [];
  for (let round = 1; round <= flags.rounds; round++) {
    for (const [i, p] of roundOrder(paths, round)) {
      for (const d of dirs) {
        const run = d === "down"
          ? () => downloadMBps(p.route, bytes)
          : () => uploadMBps(p.route, bytes);
        // With --rt the path's processes, the source and this client run under SCHED_RR while
        // they move the bytes, so other jobs on the box do not sit in the pipeline.
        const rtPids = flags.rt
          ? [Deno.pid, source.child.pid, ...p.procs.map((q) => q.child.pid)]
          : [];
        for (const pid of rtPids) realtime(pid, true);
        const ends = [...p.procs.map((q) => q.child.pid), source.child.pid, Deno.pid];
        const before = ends.map(userSys);
        let result: number;
        try {
          result = await run();
        } finally {
          for (const pid of rtPids) realtime(pid, false);
        }
        const after = ends.map(userSys);
        const k = key(i, d);
        rate.set(k, [...(rate.get(k) ?? []), result]);
        // server user, sys, ran; local user, sys, ran; source and client likewise (s/GiB)
        const us = after.flatMap((a, j) => [
          a[0] - before[j][0],
          a[1] - before[j][1],
          a[2] - before[j][2],
        ]);
        cpu.set(k, [...(cpu.get(k) ?? []), us.map((x) => x / gib)]);
      }
    }
    const load = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
    console.error(`round ${round} done (load ${load})`);
  }
  for (const d of dirs) {
    const rows = paths.map((p, i) => {
      const r = rate.get(key(i, d))!;
      const c = cpu.get(key(i, d))!;
      const base = flags["no-plain"] ? null : rate.get(key(0, d))!;
      const ratios = base ? r.map((v, j) => v / base[j]) : [];
      const baseCpu = flags["no-plain"] ? null : cpu.get(key(0, d))!;
      return [
        p.name,
        fixed(median(r)),
        base ? fixed(median(ratios), 2) : "-",
        ratios.map((x) => x.toFixed(2)).join(" "),
        `${median(c.map((x) => x[2])).toFixed(3)} (${median(c.map((x) => x[0])).toFixed(2)} + ${
          median(c.map((x) => x[1])).toFixed(2)
        })`,
        `${median(c.map((x) => x[5])).toFixed(3)} (${median(c.map((x) => x[3])).toFixed(2)} + ${
          median(c.map((x) => x[4])).toFixed(2)
        })`,
        median(c.map((x) => x[2] + x[5])).toFixed(3),
        `${median(c.map((x) => x[8])).toFixed(3)} + ${median(c.map((x) => x[11])).toFixed(3)}`,
        baseCpu
          ? median(c.map((x, j) => (x[2] + x[5]) / (baseCpu[j][2] + baseCpu[j][5]))).toFixed(2)
          : "-",
      ];
    });
    console.log(`\n${d}: ${flags.mib} MiB x ${flags.rounds} rounds`);
    console.log(
      formatTable(
        [
          "path",
          "MB/s",
          "× depot",
          "same-round ratios",
          "server s/GiB (usr + sys)",
          "local s/GiB (usr + sys)",
          "sum",
          "source + client s/GiB",
          "CPU × depot",
        ],
        rows,
      ),
    );
    if (flags.floors) console.log(floorRatios(d));
  }
  if (flags["perf-stat"]) {
    for (const q of perfs) await q.stop("SIGINT");
    console.log(perfTable(perfDir, flags.rounds * gib * (flags.up ? 2 : 1)));
    Deno.removeSync(perfDir, { recursive: true });
  }
} finally {
  await stopAll(procs);
}
