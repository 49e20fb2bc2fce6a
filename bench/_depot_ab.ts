/**
 * `deno run -A bench/_depot_ab.ts --trees 'base=DIR,name=DIR[:SUB+SUB],...' [--rounds 7] [--count 3000]`:
 * CPU per connection of plain depot (depot-server + depot-local, one TCP tunnel per request) of
 * several checkouts, beside bench/floor_reverse.ts, in one run (issue 20). Made for bisection by
 * substitution: each tree is main with ONE piece of depot replaced by the floor's way, and its
 * row says how many µs that piece carries. Every round measures every path once (`--count` small
 * exchanges, `--concurrency` workers), in alternating order (`--together`: all paths at once,
 * so a burst of load from elsewhere lands on all alike); the table gives each path's median CPU
 * µs per connection (server + local), and each tree's median same-round difference to the first
 * tree. Without `--trees`, this checkout alone. Beside depot, the floor three ways: as it is,
 * with each spare announcing itself with a key (`floor+standby`: work depot's protocol must do),
 * with the relay's buffers reused (`floor+pool`), and in processes that also hold depot's weight
 * idle (`floor+weight`: lib/depot loaded, the wheel held, an idle DepotServer; `floor+modules`:
 * the modules loaded only). `--floors REGEX` keeps the plain floor and the variants it matches.
 * `--mux`: every tree's depot-local runs with `--mux` and the floor is bench/floor_mux.ts's
 * depot modes (no floor variants): the same bisection for depot `--mux`.
 * `--seq N`: each round also times N sequential small exchanges per path (set-up latency, ms
 * each; median of the rounds and each path's median same-round ratio to the first tree);
 * `--ssh` adds OpenSSH's `ssh -R` (SOCKS) as a path. `--rt`: that sequential phase runs with
 * this process and every path's processes (sshd's children too) under SCHED_RR (`chrt`, root
 * only), so the other processes loading the box do not sit between the hops of a set-up; the
 * concurrent phase stays at normal priority (it would starve them).
 *
 * `DIR:SUB+SUB` starts that tree's services with `DEPOT_SUB=SUB,SUB`: the substitutions of
 * bench/_depot_sub.patch (apply it to an old tree: `git worktree add --detach /work/old-sub
 * 6232762 && git -C /work/old-sub apply $PWD/bench/_depot_sub.patch`: made on that commit), each one piece of depot done
 * the floor's way: `relay` (the floor's two pumps), `socks` (its handshake: no auth, CONNECT
 * to IPv4), `serve` / `tserve` (its accept loop on the SOCKS / tunnel listener), `metrics` (no
 * counters, gauges, stats sets), `abort` (no controller per relay or request), `noend` (the
 * local does not announce "end": no FIN gate, no `end` frames), `dial` (the target dialled with
 * Deno.connect), `sdial` (spares dialled so), `raw` (the standby hand-out as the floor's: no
 * standby frame, 6 address bytes written on a spare, a 1-byte answer; use with `noend`).
 * Not behaviour-preserving: a bench of where the microseconds are, never a way to run depot.
 * @module
 */

import {
  benchFlags,
  benchPath,
  benchTrees,
  concurrentRps,
  cpuPerConn,
  fixed,
  freePort,
  median,
  type Proc,
  roundOrder,
  type Route,
  sequentialMs,
  serveLengthSource,
  socksRoute,
  spawnDeno,
  type SshReverse,
  startSshReverse,
  stopAll,
  waitPort,
  waitUntil,
} from "./_util.ts";

if (Deno.env.get("BENCH_ROLE") === "source") {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: l.addr.port }));
  await serveLengthSource(l);
}

const flags = benchFlags({
  numbers: { rounds: 7, count: 3000, concurrency: 32, seq: 0 },
  booleans: ["together", "no-floor", "mux", "rt", "ssh"],
  strings: ["trees", "floors"],
});
/** `name=DIR` or `name=DIR:SUB` (DEPOT_SUB's variants joined by `+`). */
const trees = benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");
const env = { DEPOT_TOKEN: crypto.randomUUID() };
const procs: Proc[] = [];
const paths: { name: string; route: Route; procs: Proc[] }[] = [];
let ssh: SshReverse | undefined;

/** `pid` and its descendants (threads' children included), for `chrt`. */
function processTree(pid: number): number[] {
  const out = [pid];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    const kids = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
    for (const k of kids ? kids.split(" ") : []) out.push(...processTree(Number(k)));
  }
  return out;
}

/** `--rt`: SCHED_RR 10 (on) or back to SCHED_OTHER (off) for `pids`, every thread. */
function realtime(pids: number[], on: boolean): void {
  for (const pid of pids) {
    const args = on ? ["-a", "-r", "-p", "10", String(pid)] : ["-a", "-o", "-p", "0", String(pid)];
    const { success } = new Deno.Command("chrt", { args, stderr: "null" }).outputSync();
    if (!success && on) throw new Error(`chrt ${args.join(" ")} failed (root only)`);
  }
}

try {
  const src = spawnDeno(import.meta.filename!, [], { env: { BENCH_ROLE: "source" } });
  procs.push(src);
  const srcPort = (JSON.parse(await src.waitFor(/^\{"port"/)) as { port: number }).port;
  // The floor, and the floor whose spares announce themselves with a key (BENCH_STANDBY).
  const floors = [
    ["floor", "0", "0", "0"],
    ["floor+standby", "1", "0", "0"],
    ["floor+pool", "0", "1", "0"],
    ["floor+weight", "0", "0", "1"],
    ["floor+modules", "0", "0", "2"],
    ["floor+node:net", "0", "0", "3"],
    ["floor+lib/metrics", "0", "0", "4"],
    ["floor+lib/depot", "0", "0", "5"],
  ];
  const onlyFloors = flags.floors === undefined ? undefined : new RegExp(flags.floors);
  if (flags.mux && !flags["no-floor"]) {
    const server = spawnDeno(benchPath("floor_mux.ts"), [], {
      env: { BENCH_MODE: "depot-server" },
    });
    procs.push(server);
    const p = JSON.parse(await server.waitFor(/^\{"port"/)) as { port: number; tunnel: number };
    const local = spawnDeno(benchPath("floor_mux.ts"), [], {
      env: { BENCH_MODE: "depot-local", BENCH_SERVER: `127.0.0.1:${p.tunnel}` },
      output: "stderr",
    });
    procs.push(local);
    paths.push({
      name: "floor",
      route: socksRoute("floor", p.port, srcPort),
      procs: [server, local],
    });
  }
  for (const [name, standby, pool, heavy] of flags["no-floor"] || flags.mux ? [] : floors) {
    if (onlyFloors && name !== "floor" && !onlyFloors.test(name)) continue;
    const server = spawnDeno(benchPath("floor_reverse.ts"), [], {
      env: { BENCH_MODE: "server", BENCH_STANDBY: standby, BENCH_POOL: pool, BENCH_HEAVY: heavy },
    });
    procs.push(server);
    const p = JSON.parse(await server.waitFor(/^\{"port"/)) as { port: number; tunnel: number };
    const local = spawnDeno(benchPath("floor_reverse.ts"), [], {
      env: {
        BENCH_MODE: "local",
        BENCH_SERVER: `127.0.0.1:${p.tunnel}`,
        BENCH_STANDBY: standby,
        BENCH_POOL: pool,
        BENCH_HEAVY: heavy,
      },
      output: "stderr",
    });
    procs.push(local);
    paths.push({ name, route: socksRoute(name, p.port, srcPort), procs: [server, local] });
  }
  for (const t of trees) {
    const [control, socks, tunnel, status] = [freePort(), freePort(), freePort(), freePort()];
    const server = spawnDeno(`${t.dir}/services/depot-server.ts`, [
      "--log-level",
      "warn",
      "--control",
      `127.0.0.1:${control}`,
      "--socks",
      `127.0.0.1:${socks}`,
      "--tunnel",
      `127.0.0.1:${tunnel}`,
      "--status",
      `127.0.0.1:${status}`,
    ], { env: { ...env, DEPOT_SUB: t.extra }, output: "stderr" });
    const local = spawnDeno(`${t.dir}/services/depot-local.ts`, [
      "--log-level",
      "warn",
      ...(flags.mux ? ["--mux"] : []),
      "--server",
      `127.0.0.1:${control}`,
    ], { env: { ...env, DEPOT_SUB: t.extra }, output: "stderr" });
    procs.push(server, local);
    await waitPort(status, `${t.name} depot-server`);
    await waitUntil(`${t.name} exit`, async () => {
      const st = await (await fetch(`http://127.0.0.1:${status}/status`)).json() as {
        exits: unknown[];
      };
      return st.exits.length === 1;
    });
    paths.push({ name: t.name, route: socksRoute(t.name, socks, srcPort), procs: [server, local] });
  }
  if (flags.ssh) {
    const port = freePort();
    ssh = await startSshReverse(`127.0.0.1:${port}`, port);
    paths.push({ name: "ssh -R", route: socksRoute("ssh -R", port, srcPort), procs: ssh.procs });
  }
  await waitPort(srcPort, "source");
  for (const p of paths) await concurrentRps(p.route, 1000, flags.concurrency); // warm up
  /** Per path, per round: [server, local] µs/conn. */
  const cpu: number[][][] = paths.map(() => []);
  const measure = async (i: number) => {
    const p = paths[i];
    const { usPerConn } = await cpuPerConn(
      p.procs,
      flags.count,
      () => concurrentRps(p.route, flags.count, flags.concurrency),
    );
    cpu[i].push(usPerConn);
  };
  /** Per path, per round: ms per sequential exchange (`--seq`). */
  const seq: number[][] = paths.map(() => []);
  const measureSeq = async (round: number) => {
    const all = [...procs, ...(ssh?.procs ?? [])];
    const pids = flags.rt ? [Deno.pid, ...all.flatMap((p) => processTree(p.child.pid))] : [];
    realtime(pids, true);
    try {
      for (const [i, p] of roundOrder(paths, round)) {
        seq[i].push(await sequentialMs(p.route, flags.seq));
      }
    } finally {
      realtime(pids, false);
    }
  };
  for (let round = 1; round <= flags.rounds; round++) {
    if (flags.seq > 0) await measureSeq(round);
    if (flags.together) await Promise.all(paths.map((_, i) => measure(i)));
    else for (const [i] of roundOrder(paths, round)) await measure(i);
    console.error(
      `round ${round}: ` +
        paths.map((p, i) => `${p.name} ${fixed(cpu[i].at(-1)!.reduce((a, b) => a + b))}`).join(
          ", ",
        ),
    );
  }
  const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
  const base = paths.findIndex((p) => p.name === trees[0].name);
  const floor = paths.findIndex((p) => p.name === "floor");
  console.log(
    `${
      flags.mux ? "depot --mux" : "plain depot"
    } CPU µs/conn, ${flags.count} exchanges x${flags.concurrency}, ${flags.rounds} rounds` +
      `${flags.together ? " (together)" : ""}: median (server + local); Δ = median same-round ` +
      `difference to ${trees[0].name}; x floor = median same-round ratio`,
  );
  for (const [i, p] of paths.entries()) {
    const total = cpu[i].map(sum);
    const d = total.map((v, k) => v - sum(cpu[base][k]));
    const xf = floor < 0 ? [] : total.map((v, k) => v / sum(cpu[floor][k]));
    console.log(
      `${p.name.padEnd(24)} ${fixed(median(total)).padStart(6)} (${
        fixed(median(cpu[i].map((c) => c[0])))
      } + ${fixed(median(cpu[i].map((c) => c[1])))})` +
        `  Δ ${fixed(median(d)).padStart(5)} [${d.map((v) => fixed(v)).join(" ")}]` +
        (floor < 0 ? "" : `  x floor ${fixed(median(xf), 2)}`),
    );
  }
  if (flags.seq > 0) {
    const base0 = Math.max(base, 0);
    console.log(
      `sequential set-up, ms per exchange (${flags.seq} per path per round${
        flags.rt ? ", SCHED_RR" : ""
      }): median of the rounds; ratio = median same-round ratio to ${paths[base0].name}`,
    );
    for (const [i, p] of paths.entries()) {
      const r = seq[i].map((v, k) => v / seq[base0][k]);
      console.log(
        `${p.name.padEnd(24)} ${median(seq[i]).toFixed(3)}  ratio ${median(r).toFixed(3)} [${
          seq[i].map((v) => v.toFixed(3)).join(" ")
        }]`,
      );
    }
  }
} finally {
  await ssh?.close();
  await stopAll(procs, "SIGKILL"); // a bench: no drain to wait for
}
