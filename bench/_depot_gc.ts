/**
 * `deno run -A bench/_depot_gc.ts --trees 'new=DIR,old=DIR' [--rounds 5] [--count 4000] [--mux]`:
 * what plain depot's (`--mux`: depot `--mux`'s) young-generation GCs keep per connection, per
 * process (depot-server, depot-local), for several checkouts in one run (issue 20). Every
 * service runs with V8's `--trace-gc-nvp`; each round measures each tree once (`--count` small
 * SOCKS exchanges, 32 concurrent, trees in alternating order) and keeps that round's
 * scavenges. Per tree and process: CPU µs per connection (median of the rounds), and per
 * connection the bytes that survived a scavenge, the bytes promoted, and the scavenge pause
 * (wall: on a loaded box it includes waiting for a core; compare the bytes first).
 * bench/_gc_phases.ts does the same for seaprox and its floor. `--floor`: bench/floor_reverse.ts
 * (its spares announcing themselves, `BENCH_STANDBY=1`, as depot's must) as one more path,
 * `--floor-env K=V,K=V` more of its switches (`BENCH_SERVE=1`: lib/net's serve() on its
 * listeners), `--trees none` the floor alone. A tree `name=DIR:SUB+SUB` runs with
 * `DEPOT_SUB=SUB,SUB`: bench/_depot_sub.patch's substitutions, as in bench/_depot_ab.ts.
 * `--each`: every GC of each server process in the last round, mark-compacts among the
 * scavenges: what the first scavenge after a mark-compact keeps tells a retainer that a full GC
 * sees as dead (gone after it) from one that appears again with each connection (bench/RESULTS.md,
 * dgc's section).
 * @module
 */

import {
  benchFlags,
  benchTrees,
  concurrentRps,
  cpuPerConn,
  depotServerArgs,
  freePort,
  gcEachLines,
  type GcLine,
  gcRow,
  gcTraceLines,
  type Proc,
  roundOrder,
  serveLengthSource,
  socksRoute,
  spawnTraced,
  stopAll,
  waitPort,
  waitUntil,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 5, count: 4000, concurrency: 32 },
  booleans: ["mux", "floor", "each"],
  strings: ["trees", "floor-env"],
});
// `--trees none`: the floor alone (with `--floor`).
const trees = flags.trees === "none"
  ? []
  : benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");
const warmupConns = 2000;
const env = { DEPOT_TOKEN: crypto.randomUUID() };

/** The scavenges among a process's lines. */
const scavenges = (lines: readonly string[]): GcLine[] =>
  gcTraceLines(lines).filter((g) => g.gc === "s");

/** `deno run -A --v8-flags=--trace-gc-nvp script args`, stdout line-buffered. */
/** `DIR:SUB+SUB` runs that tree's services with `DEPOT_SUB=SUB,SUB` (bench/_depot_ab.ts). */
const traced = (script: string, args: string[], sub = ""): Proc =>
  spawnTraced(script, args, "--v8-flags=--trace-gc-nvp", { env: { ...env, DEPOT_SUB: sub } });

const procs: Proc[] = [];
const source = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const serving = serveLengthSource(source).catch(() => {
  // The listener closed at the end: the source's loop ends with it.
});
try {
  const paths = [];
  for (const t of trees) {
    const [control, socks, tunnel, status] = [freePort(), freePort(), freePort(), freePort()];
    const server = traced(
      `${t.dir}/services/depot-server.ts`,
      depotServerArgs({ control, socks, tunnel, status }),
      t.extra,
    );
    const local = traced(`${t.dir}/services/depot-local.ts`, [
      ...["--log-level", "warn", ...(flags.mux ? ["--mux"] : [])],
      ...["--server", `127.0.0.1:${control}`],
    ], t.extra);
    procs.push(server, local);
    await waitPort(status, `${t.name} depot-server`);
    await waitUntil(`${t.name} exit`, async () => {
      const st = await (await fetch(`http://127.0.0.1:${status}/status`)).json() as {
        exits: unknown[];
      };
      return st.exits.length === 1;
    });
    paths.push({
      name: t.name,
      route: socksRoute(t.name, socks, source.addr.port),
      procs: [server, local],
    });
  }
  if (flags.floor) {
    const floor = new URL("./floor_reverse.ts", import.meta.url).pathname;
    // `--floor-env K=V,K=V`: more of the floor's switches (BENCH_POOL=1, BENCH_HEAVY=1...).
    const extra = (flags["floor-env"] ?? "").split(",").filter((kv) => kv.includes("="))
      .map((kv) => kv.split("=", 2) as [string, string]);
    const fenv = { ...env, BENCH_STANDBY: "1", ...Object.fromEntries(extra) };
    const server = spawnTraced(floor, [], "--v8-flags=--trace-gc-nvp", {
      env: { ...fenv, BENCH_MODE: "server" },
      name: "floor-server",
    });
    const ports = JSON.parse(await server.waitFor(/^\{"port"/)) as { port: number; tunnel: number };
    const local = spawnTraced(floor, [], "--v8-flags=--trace-gc-nvp", {
      env: { ...fenv, BENCH_MODE: "local", BENCH_SERVER: `127.0.0.1:${ports.tunnel}` },
      name: "floor-local",
    });
    procs.push(server, local);
    paths.push({
      name: "floor",
      route: socksRoute("floor", ports.port, source.addr.port),
      procs: [server, local],
    });
  }
  for (const p of paths) await concurrentRps(p.route, warmupConns, flags.concurrency);
  /** Per path, per process: CPU µs/conn of each round, and the round's scavenges. */
  const cpu = paths.map(() => [[] as number[], [] as number[]]);
  const gcs = paths.map(() => [[] as GcLine[], [] as GcLine[]]);
  /** Per path: every GC (scavenges and mark-compacts) of its server in the last round. */
  const lastRound = paths.map(() => [] as GcLine[]);
  for (let round = 1; round <= flags.rounds; round++) {
    for (const [i, p] of roundOrder(paths, round)) {
      const from = p.procs.map((q) => q.lines.length);
      const { usPerConn } = await cpuPerConn(
        p.procs,
        flags.count,
        () => concurrentRps(p.route, flags.count, flags.concurrency),
      );
      p.procs.forEach((q, j) => {
        cpu[i][j].push(usPerConn[j]);
        gcs[i][j].push(...scavenges(q.lines.slice(from[j])));
        if (j === 0 && round === flags.rounds) lastRound[i] = gcTraceLines(q.lines.slice(from[j]));
      });
    }
    console.error(`  round ${round} done`);
  }
  const conns = flags.count * flags.rounds;
  console.log(
    `${
      flags.mux ? "depot --mux" : "plain depot"
    }, ${flags.count} exchanges x${flags.concurrency}, ${flags.rounds} rounds: ` +
      `CPU µs/conn (median), per conn: scavenges' survived and promoted bytes, pause µs`,
  );
  for (const [i, p] of paths.entries()) {
    for (const [j, side] of ["server", "local"].entries()) {
      console.log(gcRow(p.name, side, cpu[i][j], gcs[i][j], conns, 5));
    }
  }
  if (flags.each) {
    for (const line of gcEachLines(paths.map((p, i) => ({ name: p.name, gcs: lastRound[i] })))) {
      console.log(line);
    }
  }
} finally {
  await stopAll(procs, "SIGKILL"); // a bench: no drain to wait for
  source.close();
  await serving;
}
