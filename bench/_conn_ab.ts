/**
 * `deno run -A bench/_conn_ab.ts --old DIR [--rounds 7] [--count 3000] [--only REGEX]`: CPU per connection of
 * seaprox (static, SOCKS5 and HTTP CONNECT) of this checkout and of another one (an old tree), beside the Deno
 * floors (static and SOCKS5 also with the least bookkeeping seaprox's behaviour needs:
 * bench/floor_proxy.ts `BENCH_FLOOR_EXTRAS=book`) and lib/net's reference relay (bench/_relay.ts, the old tree's too), each in its own process, in one run (issue 20). Every
 * round measures every path once (`--count` small exchanges, 32 concurrent), in alternating
 * order; the table gives the median CPU µs per connection and each round's figure. Made for
 * before/after rows of one change: the rates of bench/seaprox.ts vary more on a shared box.
 * `--only` keeps the paths whose name matches (fewer paths: more rounds in the same time);
 * `--together` loads every path of a round at once instead of one after the other (32
 * connections each), so a burst of load from elsewhere lands on all of them alike.
 * `--v8 'A;B'` adds, per `;`-separated set of V8 flags, a floor (static) and a seaprox static
 * (new) run with `--v8-flags=A` (e.g. `--max-semi-space-size=16`): GC settings measured beside
 * the defaults in one run. `--variant DIR --subs 'a;b,c'` adds a seaprox static of the tree DIR
 * per value (a SOCKS5 or HTTP CONNECT listener with `--sub-kind socks5|http`), run with
 * `WARREN_SUB=<value>` (bisection by substitution: a throwaway tree whose
 * pieces swap themselves for the floor's way when named there; see bench/RESULTS.md), each
 * paired per round with this checkout's; `--user` counts user CPU only. The table ends with each process's RSS after the last round. A round
 * in which a path's exchange failed (a connect timing out in a full accept queue on a saturated
 * box) shows "-" for it and is left out of its medians.
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
  median,
  type Proc,
  procStatusKiB,
  roundOrder,
  type Route,
  servicePath,
  socksRoute,
  spawnDeno,
  startFloor,
  startLengthSource,
  startRelay,
  stopAll,
  tcpRoute,
  waitPort,
} from "./_util.ts";
import { errorMessage } from "../lib/net/errors.ts";
import { userSys } from "./_cpuprof.ts";

const flags = benchFlags({
  numbers: { rounds: 7, count: 3000 },
  booleans: ["together", "user"],
  strings: ["old", "only", "v8", "variant", "subs", "sub-kind"],
});
const only = flags.only === undefined ? undefined : new RegExp(flags.only);
const procs: Proc[] = [];
try {
  const { proc: src, port: srcPort } = await startLengthSource();
  procs.push(src);
  const paths: { route: Route; proc: Proc }[] = [];
  const add = (route: Route, proc: Proc) => {
    procs.push(proc);
    if (!only || only.test(route.name)) paths.push({ route, proc });
  };
  const floor = await startFloor(srcPort);
  add(tcpRoute("Deno floor, static", floor.port), floor.proc);
  const floorX = await startFloor(srcPort, true);
  add(tcpRoute("Deno floor, static + TCP_NODELAY + dial signal", floorX.port), floorX.proc);
  const floorB = spawnDeno(benchPath("floor_proxy.ts"), [], {
    env: {
      BENCH_MODE: "static",
      BENCH_TARGET: `127.0.0.1:${srcPort}`,
      BENCH_FLOOR_EXTRAS: "book",
    },
  });
  const floorBPort = (JSON.parse(await floorB.waitFor(/^\{"port"/)) as { port: number }).port;
  add(tcpRoute("Deno floor, static + bookkeeping", floorBPort), floorB);
  const floorS = await startFloor();
  add(socksRoute("Deno floor, SOCKS5", floorS.port, srcPort), floorS.proc);
  const floorSB = spawnDeno(benchPath("floor_proxy.ts"), [], {
    env: { BENCH_MODE: "socks5", BENCH_FLOOR_EXTRAS: "book" },
  });
  const floorSBPort = (JSON.parse(await floorSB.waitFor(/^\{"port"/)) as { port: number }).port;
  add(socksRoute("Deno floor, SOCKS5 + bookkeeping", floorSBPort, srcPort), floorSB);
  const floorC = spawnDeno(benchPath("floor_connect.ts"), [], { env: { BENCH_FLOOR_EXTRAS: "1" } });
  const floorCPort = (JSON.parse(await floorC.waitFor(/^\{"port"/)) as { port: number }).port;
  add(connectRoute("Deno floor, CONNECT + TCP_NODELAY + dial signal", floorCPort, srcPort), floorC);
  if (flags.old) {
    // The old tree's floors too: a change to the floor itself is measured like one to seaprox.
    const oldFloor = `${flags.old}/bench/floor_proxy.ts`;
    const f = await startFloor(srcPort, true, oldFloor);
    add(tcpRoute("Deno floor, static + TCP_NODELAY + dial signal, old tree", f.port), f.proc);
    const fS = await startFloor(undefined, false, oldFloor);
    add(socksRoute("Deno floor, SOCKS5, old tree", fS.port, srcPort), fS.proc);
  }
  const relay = await startRelay(srcPort);
  add(tcpRoute("lib/net relay", relay.port), relay.proc);
  if (flags.old) {
    // The old tree's lib/net relay (serve + dial + relay alone): a lib/net change, measured
    // without a service on top.
    const oldRelay = await startRelay(srcPort, `${flags.old}/bench/_relay.ts`);
    add(tcpRoute("lib/net relay, old tree", oldRelay.port), oldRelay.proc);
  }
  const seaprox = async (
    script: string,
    kind: string,
    name: string,
    denoFlags: string[] = [],
    env?: Record<string, string>,
  ) => {
    const port = freePort();
    const proc = spawnDeno(script, [
      "--log-level",
      "warn",
      "--prefer-ipv4",
      "--max-conns",
      "4096",
      "--listen",
      kind === "static"
        ? `static://127.0.0.1:${port}?to=127.0.0.1:${srcPort}`
        : `${kind}://127.0.0.1:${port}`,
    ], { output: "discard", denoFlags, env });
    procs.push(proc);
    await waitPort(port, name);
    add(
      kind === "static"
        ? tcpRoute(name, port)
        : kind === "http"
        ? connectRoute(name, port, srcPort)
        : socksRoute(name, port, srcPort),
      proc,
    );
  };
  for (
    const [tree, script] of [
      ["new", servicePath("seaprox.ts")],
      ...(flags.old ? [["old", `${flags.old}/services/seaprox.ts`]] : []),
    ]
  ) {
    // One process per listener kind, so one path's garbage is not collected on the other's time.
    for (const kind of ["static", "socks5", "http"]) {
      const what = kind === "static" ? "static" : kind === "http" ? "HTTP CONNECT" : "SOCKS5";
      await seaprox(script, kind, `seaprox ${what} (${tree})`);
    }
  }
  for (const v8 of flags.v8 ? flags.v8.split(";") : []) {
    const denoFlags = [`--v8-flags=${v8}`];
    const f = await startFloor(srcPort, false, undefined, denoFlags);
    add(tcpRoute(`Deno floor, static [${v8}]`, f.port), f.proc);
    await seaprox(servicePath("seaprox.ts"), "static", `seaprox static [${v8}]`, denoFlags);
  }
  const subKind = flags["sub-kind"] ?? "static";
  const subWhat = subKind === "static" ? "static" : subKind === "http" ? "HTTP CONNECT" : "SOCKS5";
  for (const sub of flags.subs ? flags.subs.split(";") : []) {
    // A substitution tree's seaprox with WARREN_SUB=sub: bisection by substitution.
    const script = `${flags.variant ?? "."}/services/seaprox.ts`;
    await seaprox(script, subKind, `seaprox ${subWhat} [${sub}]`, [], { WARREN_SUB: sub });
  }
  for (const p of paths) await concurrentRps(p.route, 500, 32); // warm up
  const cpu = paths.map(() => [] as number[]);
  /**
   * One path's CPU µs per connection in round `round`, or NaN (left out of the medians) when
   * an exchange failed: on a saturated box a connect can time out in a full accept queue, and
   * one such round must not end a run of many.
   */
  const measure = async (p: { route: Route; proc: Proc }, round: number): Promise<number> => {
    try {
      if (flags.user) {
        // User time only: the syscalls are the same work on every path, and their system
        // time moves with the box's load; the JS a change removes shows in user time.
        const before = userSys(p.proc).user;
        await concurrentRps(p.route, flags.count, 32);
        return (userSys(p.proc).user - before) * 1e6 / flags.count;
      }
      const r = await cpuPerConn(
        [p.proc],
        flags.count,
        () => concurrentRps(p.route, flags.count, 32),
      );
      return r.usPerConn[0];
    } catch (err) {
      console.error(`  round ${round}, ${p.route.name}: ${errorMessage(err)} (round left out)`);
      return NaN;
    }
  };
  for (let round = 1; round <= flags.rounds; round++) {
    if (flags.together) {
      // Every path loaded at once: the same moments of the box's load land on all of them.
      const all = await Promise.all(paths.map((p) => measure(p, round)));
      all.forEach((us, i) => cpu[i].push(us));
      console.error(`  round ${round} done`);
      continue;
    }
    for (const [i, p] of roundOrder(paths, round)) cpu[i].push(await measure(p, round));
    console.error(`  round ${round} done`);
  }
  const counted = (xs: number[]) => xs.filter(Number.isFinite);
  console.log(
    `${flags.user ? "User" : "CPU"} µs per connection, median of ${flags.rounds} rounds ` +
      "(then each round); RSS MiB at the end",
  );
  for (const [i, p] of paths.entries()) {
    const rssMiB = procStatusKiB(p.proc.child.pid, "VmRSS") / 1024;
    console.log(
      `${p.route.name.padEnd(48)} ${median(counted(cpu[i])).toFixed(0).padStart(5)}   ${
        cpu[i].map((x) => fixed(x)).join(" ")
      }   ${rssMiB.toFixed(0)} MiB`,
    );
  }
  // Paired: each round's new against the same round's old (measured next to each other), so
  // a burst of load from elsewhere moves both; the median of these ratios is the steadier
  // figure on a shared box.
  for (const [i, p] of paths.entries()) {
    const name = p.route.name;
    const oldName = name.endsWith("(new)") ? name.replace("(new)", "(old)") : `${name}, old tree`;
    const j = name.startsWith(`seaprox ${subWhat} [`)
      ? paths.findIndex((q) => q.route.name === `seaprox ${subWhat} (new)`)
      : paths.findIndex((q) => q.route.name === oldName);
    if (j < 0) continue;
    const ratios = cpu[i].map((x, r) => x / cpu[j][r]);
    console.log(
      `${name.replace(" (new)", "")} new/old per round: median ${
        median(counted(ratios)).toFixed(3)
      }   ${ratios.map((x) => fixed(x, 2)).join(" ")}`,
    );
  }
  // seaprox against the floor of its kind that keeps the same bookkeeping, round by round.
  for (const what of ["static", "SOCKS5"]) {
    const booked = paths.findIndex((p) => p.route.name === `Deno floor, ${what} + bookkeeping`);
    const ours = paths.findIndex((p) => p.route.name === `seaprox ${what} (new)`);
    if (booked < 0 || ours < 0) continue;
    const ratios = cpu[ours].map((x, r) => x / cpu[booked][r]);
    console.log(
      `seaprox ${what} / floor + bookkeeping per round: median ${
        median(counted(ratios)).toFixed(3)
      }   ${ratios.map((x) => fixed(x, 2)).join(" ")}`,
    );
  }
} finally {
  await stopAll(procs);
}
