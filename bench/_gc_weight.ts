/**
 * `deno run -A bench/_gc_weight.ts [--heavy 0,2,6] [--trees 'old=DIR,new=DIR'] [--rounds 5]
 * [--count 2000]`: where "process weight" goes (issue 20). Plain depot's processes (each tree's
 * depot-server + depot-local) and bench/floor_reverse.ts's two processes (one pair per
 * `BENCH_HEAVY` value in `--heavy`: 0 the floor, 2 depot's modules loaded, 6 a ballast of
 * `--ballast-mb` live objects and no code), all run with V8's `--trace-gc`; every round
 * measures each path once (`--count` small SOCKS exchanges ×`--concurrency`, alternating
 * order) and counts, per 1,000 connections of both processes: CPU µs per connection,
 * scavenges, full (mark-compact) GCs, and the live heap a full GC leaves (what each marks).
 * GC milliseconds are V8's wall pauses (with its incremental steps): on a loaded box they
 * include preemption, so compare counts and sizes first. Medians over the rounds.
 *
 * V8 prints its traces through C stdio, block-buffered into a pipe: `stdbuf -oL` (coreutils)
 * makes them arrive as they happen, so a round's lines are the ones seen during it.
 * @module
 */

import {
  benchFlags,
  benchPath,
  benchTrees,
  concurrentRps,
  cpuPerConn,
  depotServerArgs,
  fixed,
  freePort,
  median,
  type Proc,
  roundOrder,
  type Route,
  serveLengthSource,
  socksRoute,
  spawnTraced,
  stopAll,
  waitPort,
  waitUntil,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 5, count: 2000, concurrency: 32, "ballast-mb": 8 },
  strings: ["heavy", "trees"],
});
const heavy = (flags.heavy ?? "0,2,6").split(",").filter(Boolean);
/** `name=DIR` or `name=DIR@V8FLAGS` (V8 flags joined by `+`, e.g. `--max-semi-space-size=32`). */
const trees = benchTrees(flags.trees, "", "@");
const startTimeoutMs = 60_000;

/** `deno run -A --trace-gc[,v8] script` with its stdout line-buffered. */
function traced(
  script: string,
  args: string[],
  env: Record<string, string>,
  name: string,
  v8 = "",
): Proc {
  return spawnTraced(script, args, `--v8-flags=--trace-gc${v8 ? `,${v8}` : ""}`, { env, name });
}

/** What a process's `--trace-gc` lines say. */
interface Gc {
  scavenges: number;
  full: number;
  /** Pause ms (scavenges and full GCs, with a full GC's incremental steps). */
  ms: number;
  /** MB live after the last full GC (0: none). */
  liveMB: number;
  /** How many GCs each kind and reason (V8's words: "Scavenge: allocation failure"). */
  reasons: Map<string, number>;
}

function readGc(lines: readonly string[]): Gc {
  const gc: Gc = { scavenges: 0, full: 0, ms: 0, liveMB: 0, reasons: new Map() };
  for (const line of lines) {
    const m = /-> ([\d.]+) \([\d.]+\) MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/.exec(line);
    if (!m) continue;
    gc.ms += Number(m[2]);
    const kind = /ms: ([A-Za-z -]+?) [\d.]+ \(/.exec(line)?.[1] ?? "?";
    const why = `${kind}: ${/current mu = [\d.]+\) (.*?);? *$/.exec(line)?.[1] ?? "?"}`;
    gc.reasons.set(why, (gc.reasons.get(why) ?? 0) + 1);
    if (line.includes("Scavenge")) gc.scavenges++;
    else if (/Mark-(Compact|Sweep)/.test(line)) {
      gc.full++;
      gc.ms += Number(/\+ ([\d.]+) ms in/.exec(line)?.[1] ?? 0);
      gc.liveMB = Number(m[1]);
    }
  }
  return gc;
}

const procs: Proc[] = [];
const paths: { name: string; route: Route; procs: Proc[] }[] = [];
const source = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const serving = serveLengthSource(source).catch(() => {
  // The listener closed at the end: the source's loop ends with it.
});
try {
  const floor = benchPath("floor_reverse.ts");
  for (const h of heavy) {
    const env = { BENCH_HEAVY: h, BENCH_BALLAST_MB: String(flags["ballast-mb"]) };
    const server = traced(floor, [], { ...env, BENCH_MODE: "server" }, `floor-server-${h}`);
    procs.push(server);
    const p = JSON.parse(await server.waitFor(/^\{"port"/, startTimeoutMs)) as {
      port: number;
      tunnel: number;
    };
    const local = traced(floor, [], {
      ...env,
      BENCH_MODE: "local",
      BENCH_SERVER: `127.0.0.1:${p.tunnel}`,
    }, `floor-local-${h}`);
    procs.push(local);
    const name = `floor BENCH_HEAVY=${h}`;
    paths.push({ name, route: socksRoute(name, p.port, source.addr.port), procs: [server, local] });
  }
  const env = { DEPOT_TOKEN: crypto.randomUUID() };
  for (const { name, dir, extra: v8 } of trees) {
    const [control, socks, tunnel, status] = [freePort(), freePort(), freePort(), freePort()];
    const at = (port: number) => `127.0.0.1:${port}`;
    const server = traced(
      `${dir}/services/depot-server.ts`,
      depotServerArgs({ control, socks, tunnel, status }),
      env,
      `${name} depot-server`,
      v8,
    );
    const local = traced(
      `${dir}/services/depot-local.ts`,
      [
        ...["--log-level", "warn", "--server", at(control)],
      ],
      env,
      `${name} depot-local`,
      v8,
    );
    procs.push(server, local);
    await waitPort(status, `${name} depot-server`, startTimeoutMs);
    await waitUntil(`${name} exit`, async () => {
      const st = await (await fetch(`http://${at(status)}/status`)).json() as { exits: unknown[] };
      return st.exits.length === 1;
    }, startTimeoutMs);
    paths.push({ name, route: socksRoute(name, socks, source.addr.port), procs: [server, local] });
  }
  for (const p of paths) await concurrentRps(p.route, 1000, flags.concurrency); // warm up
  /** Per path, per round: CPU µs/conn and the GC of both processes, per 1,000 connections. */
  const rows = paths.map(() => ({
    cpu: [] as number[],
    gc: [] as Gc[],
    reasons: new Map<string, number>(),
  }));
  const per1k = 1000 / flags.count;
  for (let round = 1; round <= flags.rounds; round++) {
    for (const [i, p] of roundOrder(paths, round)) {
      const seen = p.procs.map((x) => x.lines.length);
      const { usPerConn } = await cpuPerConn(
        p.procs,
        flags.count,
        () => concurrentRps(p.route, flags.count, flags.concurrency),
      );
      const gcs = p.procs.map((x, k) => readGc(x.lines.slice(seen[k])));
      rows[i].cpu.push(usPerConn.reduce((a, b) => a + b, 0));
      for (const g of gcs) {
        for (const [why, n] of g.reasons) {
          rows[i].reasons.set(why, (rows[i].reasons.get(why) ?? 0) + n);
        }
      }
      rows[i].gc.push({
        scavenges: gcs.reduce((a, g) => a + g.scavenges, 0) * per1k,
        full: gcs.reduce((a, g) => a + g.full, 0) * per1k,
        ms: gcs.reduce((a, g) => a + g.ms, 0) * per1k,
        liveMB: gcs.reduce((a, g) => a + g.liveMB, 0),
        reasons: new Map(),
      });
    }
    console.error(
      `round ${round}: ` +
        paths.map((p, i) => `${p.name} ${fixed(rows[i].cpu.at(-1)!)}`).join(", "),
    );
  }
  console.log(
    `plain depot and the reverse floor: CPU µs/conn (both processes) and GC per 1,000 ` +
      `connections, ${flags.count} exchanges x${flags.concurrency}, ${flags.rounds} rounds, medians`,
  );
  const m = (v: number[], d = 0) => fixed(median(v), d);
  for (const [i, p] of paths.entries()) {
    const { cpu, gc } = rows[i];
    const live = gc.map((g) => g.liveMB).filter((v) => v > 0);
    console.log(
      `${p.name.padEnd(22)} CPU ${m(cpu).padStart(4)} [${cpu.map((v) => fixed(v)).join(" ")}]` +
        `  scavenges ${m(gc.map((g) => g.scavenges), 1)}  full GCs ${m(gc.map((g) => g.full), 2)}` +
        `  GC ms ${m(gc.map((g) => g.ms))}  live after a full GC ${
          live.length ? m(live, 1) : "-"
        } MB`,
    );
    const all = [...rows[i].reasons].sort((a, b) => b[1] - a[1]);
    console.log(`  why (all rounds): ${all.map(([why, n]) => `${why} ${n}`).join("; ")}`);
  }
} finally {
  await stopAll(procs, "SIGKILL"); // a bench: no drain to wait for
  source.close();
  await serving;
}
