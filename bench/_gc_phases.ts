/**
 * `deno run -A bench/_gc_phases.ts [--rounds 5] [--count 6000] [--trees DIR,DIR]
 * [--v8 'A;B'] [--each] [--kinds static,socks5,connect]`: what the young-generation GCs of
 * seaprox (static; `--kinds` adds its SOCKS5 and CONNECT listeners) and of its
 * bookkeeping floor (bench/floor_proxy.ts `BENCH_FLOOR_EXTRAS=book`) cost per connection, and
 * on what (issue 20). Every process runs with V8's `--trace-gc-nvp` (one JSON object per GC);
 * each round measures each path once (`--count` small exchanges, 32 concurrent) and keeps
 * that round's GC lines. Per path it prints CPU µs per connection (median of the rounds), the
 * CPU of the process's threads by kind (the main thread; V8's worker threads: parallel
 * scavenging, concurrent marking and sweeping; tokio), and per connection: bytes that
 * survived a scavenge and bytes promoted, scavenge pause (wall) with its parallel copy on the
 * main thread and on the workers, and the mark-compact's pause, incremental steps and
 * background marking. `--trees` adds each tree's seaprox and bookkeeping floor (same-run
 * A/B: `--trees /work/old-X`), `--v8` a seaprox per set of extra V8 flags (`,` inside a set), `--each`
 * prints every scavenge (capacity, survived, promoted, pause, main/worker copy ms).
 *
 * GC times are wall times: on a loaded box they include waiting for a core. Compare the bytes
 * and the thread CPU first.
 * @module
 */

import {
  benchFlags,
  benchPath,
  concurrentRps,
  connectRoute,
  cpuPerConn,
  fixed,
  freePort,
  type GcLine,
  gcNum,
  gcTraceLines,
  median,
  type Proc,
  type ProcStat,
  procStat,
  procTicksPerSecond,
  type Route,
  serveLengthSource,
  servicePath,
  socksRoute,
  spawnTraced,
  stopAll,
  tcpRoute,
  waitPort,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 5, count: 6000 },
  booleans: ["each"],
  strings: ["trees", "v8", "kinds"],
});
/** seaprox's listener kinds measured (`--kinds`): each a listen URL and a route through it. */
const kinds = (flags.kinds ?? "static").split(",").filter(Boolean);
for (const k of kinds) {
  if (!["static", "socks5", "connect"].includes(k)) throw new Error(`unknown kind ${k}`);
}
const concurrency = 32;
const warmupConns = 1000;
const startTimeoutMs = 60_000;
const threadKinds = ["main", "v8", "tokio", "other"] as const;
type ThreadKind = typeof threadKinds[number];

/** CPU seconds of a process's threads by kind (the main thread, V8 workers, tokio, others). */
function threadCpu(pid: number): Record<ThreadKind, number> {
  const out: Record<ThreadKind, number> = { main: 0, v8: 0, tokio: 0, other: 0 };
  for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
    let s: ProcStat;
    try {
      s = procStat(pid, e.name);
    } catch {
      continue; // the thread ended meanwhile
    }
    const kind: ThreadKind = e.name === String(pid)
      ? "main"
      : s.comm.startsWith("V8 ")
      ? "v8"
      : s.comm.startsWith("tokio")
      ? "tokio"
      : "other";
    out[kind] += (s.utime + s.stime) / procTicksPerSecond;
  }
  return out;
}

interface Path {
  name: string;
  route: Route;
  proc: Proc;
}

const source = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const serving = serveLengthSource(source).catch(() => {
  // The listener closed at the end: the source's loop ends with it.
});
const procs: Proc[] = [];
/** `deno run -A --v8-flags=--trace-gc-nvp[,extra] script`, its stdout line-buffered. */
const traced = (script: string, args: string[], env: Record<string, string>, extra = "") => {
  const v8 = `--v8-flags=--trace-gc-nvp${extra ? `,${extra}` : ""}`;
  const p = spawnTraced(script, args, v8, { env });
  procs.push(p);
  return p;
};
try {
  const paths: Path[] = [];
  const trees = [".", ...(flags.trees ?? "").split(",").filter(Boolean)];
  for (const tree of trees) {
    const script = tree === "." ? benchPath("floor_proxy.ts") : `${tree}/bench/floor_proxy.ts`;
    const floor = traced(script, [], {
      BENCH_MODE: "static",
      BENCH_TARGET: `127.0.0.1:${source.addr.port}`,
      BENCH_FLOOR_EXTRAS: "book",
    });
    const port = (JSON.parse(await floor.waitFor(/^\{"port"/, startTimeoutMs)) as {
      port: number;
    }).port;
    const name = `Deno floor, static + bookkeeping ${tree}`;
    paths.push({ name, route: tcpRoute(name, port), proc: floor });
  }
  const v8Sets = ["", ...(flags.v8 ?? "").split(";").filter(Boolean)];
  const dest = source.addr.port;
  for (const tree of trees) {
    for (const v8 of v8Sets) {
      for (const kind of kinds) {
        const port = freePort();
        const script = tree === "." ? servicePath("seaprox.ts") : `${tree}/services/seaprox.ts`;
        const listen = kind === "static"
          ? `static://127.0.0.1:${port}?to=127.0.0.1:${dest}`
          : kind === "socks5"
          ? `socks5://127.0.0.1:${port}`
          : `http://127.0.0.1:${port}`;
        const proc = traced(
          script,
          [...["--log-level", "warn", "--prefer-ipv4", "--max-conns", "4096", "--listen"], listen],
          {},
          v8,
        );
        await waitPort(port, "seaprox");
        const name = `seaprox ${kind} ${tree}${v8 ? ` [${v8}]` : ""}`;
        const route = kind === "static"
          ? tcpRoute(name, port)
          : kind === "socks5"
          ? socksRoute(name, port, dest)
          : connectRoute(name, port, dest);
        paths.push({ name, route, proc });
      }
    }
  }
  for (const p of paths) await concurrentRps(p.route, warmupConns, concurrency);
  const cpu = paths.map(() => [] as number[]);
  const threads = paths.map(() => threadKinds.map(() => [] as number[]));
  const gcs = paths.map(() => [] as GcLine[]);
  for (let round = 0; round < flags.rounds; round++) {
    for (const [i, p] of paths.entries()) {
      const from = p.proc.lines.length;
      const before = threadCpu(p.proc.child.pid);
      const r = await cpuPerConn(
        [p.proc],
        flags.count,
        () => concurrentRps(p.route, flags.count, concurrency),
      );
      cpu[i].push(r.usPerConn[0]);
      const after = threadCpu(p.proc.child.pid);
      threadKinds.forEach((k, j) => threads[i][j].push((after[k] - before[k]) * 1e6 / flags.count));
      gcs[i].push(...gcTraceLines(p.proc.lines.slice(from)));
    }
    console.error(`  round ${round + 1} done`);
  }
  const conns = flags.count * flags.rounds;
  for (const [i, p] of paths.entries()) {
    const sc = gcs[i].filter((g) => g.gc === "s");
    const mc = gcs[i].filter((g) => g.gc === "mc");
    /** Sum of `k` over `gs`, per connection (µs when `k` is in ms, with `scale` 1000). */
    const per = (gs: GcLine[], k: string, scale = 1) =>
      fixed(gs.reduce((a, g) => a + gcNum(g, k), 0) * scale / conns, 1);
    console.log(
      `${p.name}: CPU µs/conn ${fixed(median(cpu[i]))} [${cpu[i].map((x) => fixed(x)).join(" ")}]`,
    );
    console.log(
      `  threads µs/conn (medians): ${
        threadKinds.map((k, j) => `${k} ${fixed(median(threads[i][j]))}`).join(", ")
      }`,
    );
    console.log(
      `  scavenges ${fixed(sc.length * 1000 / conns, 2)}/1k conns (semi-space up to ${
        Math.max(0, ...sc.map((g) => gcNum(g, "new_space_capacity"))) / 2 ** 20
      } MB); per conn: survived ${per(sc, "new_space_survived")} B, promoted ${
        per(sc, "promoted")
      } B, pause ${per(sc, "pause", 1000)} µs (copy: main ${
        per(sc, "scavenge.parallel", 1000)
      }, workers ${per(sc, "background.scavenge.parallel", 1000)}; roots ${
        per(sc, "scavenge.roots", 1000)
      }, remembered set freed ${per(sc, "scavenge.free_remembered_set", 1000)}, weak ${
        per(sc, "scavenge.weak", 1000)
      })`,
    );
    console.log(
      `  mark-compacts ${fixed(mc.length * 1000 / conns, 2)}/1k conns; per conn: pause ${
        per(mc, "pause", 1000)
      } µs, incremental ${per(mc, "incremental", 1000)}, background marking ${
        per(mc, "background.mark", 1000)
      }`,
    );
    if (flags.each) {
      for (const g of sc) {
        console.log(
          `    semi ${gcNum(g, "new_space_capacity") / 2 ** 20} MB, survived ${
            fixed(gcNum(g, "new_space_survived") / 1024)
          } KB, promoted ${fixed(gcNum(g, "promoted") / 1024)} KB, pause ${
            fixed(gcNum(g, "pause"), 2)
          } ms (main ${fixed(gcNum(g, "scavenge.parallel"), 2)}, workers ${
            fixed(gcNum(g, "background.scavenge.parallel"), 2)
          })`,
        );
      }
    }
  }
} finally {
  await stopAll(procs);
  source.close();
  await serving;
}
