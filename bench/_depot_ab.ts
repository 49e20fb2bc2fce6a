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
 * each), in blocks of `--block B` (default 20) per path taken in turn, so what loads the box in
 * one second of a round loads every path alike (a round per path ran each path's N in one go,
 * seconds apart). Printed per path, by each round's median exchange (robust to the tail the
 * box's other load makes) and by its mean: min / median / max of the rounds, and median
 * [min-max] same-round ratios to the first tree of its mode, to the floor of its mode and to
 * `ssh -R`: a change is told from noise by the ratio's spread, not a median alone. Beside
 * them, each path's on-CPU µs per sequential set-up (server + local, their threads and
 * children, from `/proc/.../schedstat`): whether a slower set-up is work or waiting. `--ssh` adds OpenSSH's `ssh -R` (SOCKS) as a path. `--rt`: that sequential
 * phase runs with this process and every path's processes (sshd's children too) under SCHED_RR
 * (`chrt`, root only), so the other processes loading the box do not sit between the hops of a
 * set-up; the concurrent phase stays at normal priority (it would starve them).
 * `--both`: every tree twice, plain and `--mux`, beside both floors (plain and `--mux` against
 * one `ssh -R` in one run). `--no-cpu`: no concurrent (CPU per connection) phase.
 * `--steps N` (with `--mux`): each round also traces N sequential set-ups of every depot and
 * floor path with `perf record` on the syscall tracepoints of its two processes (root only; with
 * `--rt` under SCHED_RR) and prints, per step of a set-up, the median µs between the syscalls
 * that bound it (the server's CONNECT read → its SYN write, the exit's SYN read → connect() →
 * answer write, the server's answer read → SOCKS reply write, ...): what each process adds on
 * the set-up's path, resolved to a µs or two where the whole set-up swings by 20 (issue 20).
 *
 * `DIR:--flag+--flag` starts that tree's services with those V8 flags (`--v8-flags=`), e.g. a
 * young generation of another size; the words not starting with `--` go to DEPOT_SUB.
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
  depotServerArgs,
  fixed,
  formatTable,
  freePort,
  median,
  type Proc,
  procTree,
  roundOrder,
  type Route,
  sequentialMs,
  smallBuffer,
  smallExchange,
  socksRoute,
  spawnDeno,
  type SshReverse,
  startLengthSource,
  startSshReverse,
  stopAll,
  threadRunNs,
  waitPort,
  waitUntil,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 7, count: 3000, concurrency: 32, seq: 0, steps: 0, block: 20 },
  booleans: ["together", "no-floor", "mux", "rt", "ssh", "both", "no-cpu"],
  strings: ["trees", "floors"],
});
/** `name=DIR` or `name=DIR:SUB` (DEPOT_SUB's variants joined by `+`). */
const trees = benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");
const env = { DEPOT_TOKEN: crypto.randomUUID() };
const procs: Proc[] = [];
/** One path of the table; `mux`: a depot `--mux` or mux-floor path (`ssh -R`: undefined). */
const paths: { name: string; route: Route; procs: Proc[]; mux?: boolean }[] = [];
/** The depot modes this run: `--both` plain and `--mux`, else the one `--mux` says. */
const modes = flags.both ? [false, true] : [flags.mux];
let ssh: SshReverse | undefined;

/** `--rt`: SCHED_RR 10 (on) or back to SCHED_OTHER (off) for `pids`, every thread. */
function realtime(pids: number[], on: boolean): void {
  for (const pid of pids) {
    const args = on ? ["-a", "-r", "-p", "10", String(pid)] : ["-a", "-o", "-p", "0", String(pid)];
    const { success } = new Deno.Command("chrt", { args, stderr: "null" }).outputSync();
    if (!success && on) throw new Error(`chrt ${args.join(" ")} failed (root only)`);
  }
}

/** The steps `--steps` times: a name, and the event (by index, see `setUpSteps`) each spans. */
const stepNames = [
  ["server: greeting read → method written", 0, 1],
  ["server: CONNECT read → SYN written", 2, 3],
  ["exit: SYN read → connect()", 4, 5],
  ["exit: connect() → answer written", 5, 6],
  ["exit: SYN read → answer written", 4, 6],
  ["server: answer read → SOCKS reply written", 7, 8],
  ["server: CONNECT read → SOCKS reply written", 2, 8],
  ["server: request read → written on", 9, 10],
  ["request written on → data to the client (exit, target)", 10, 11],
  ["server: data written → client's FIN (shutdown)", 11, 12],
  ["greeting read → shutdown (the set-up)", 0, 12],
] as const;

/** One syscall of a traced process, from `perf script`: µs, process, kind, fd, bytes. */
interface Sys {
  us: number;
  server: boolean;
  kind: "recv" | "send" | "connect" | "shutdown";
  fd: number;
  n: number;
}

/**
 * The syscalls of `perf script -F pid,time,event,trace` output (server `serverPid`, the other
 * the exit), in time order: receives that returned bytes or EOF (the fd from their entry), sends
 * with their length, connects, shutdowns.
 */
function traceSyscalls(text: string, serverPid: number): Sys[] {
  const out: Sys[] = [];
  const lastFd = new Map<boolean, number>();
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+([\d.]+):\s+syscalls:sys_(\w+):\s*(.*)$/.exec(line);
    if (!m) continue;
    const server = Number(m[1]) === serverPid, us = Number(m[2]) * 1e6, ev = m[3], rest = m[4];
    const field = (name: string) => parseInt(new RegExp(`${name}: (0x[0-9a-f]+)`).exec(rest)![1]);
    if (ev === "enter_recvfrom") lastFd.set(server, field("fd"));
    else if (ev === "exit_recvfrom") {
      const n = Number(rest);
      if (n >= 0) out.push({ us, server, kind: "recv", fd: lastFd.get(server) ?? -1, n });
    } else if (ev === "enter_sendto") {
      out.push({ us, server, kind: "send", fd: field("fd"), n: field("len") });
    } else if (ev === "enter_connect") out.push({ us, server, kind: "connect", fd: -1, n: 0 });
    else if (ev === "enter_shutdown") {
      out.push({ us, server, kind: "shutdown", fd: field("fd"), n: 0 });
    }
  }
  return out.sort((a, b) => a.us - b.us);
}

/**
 * Each set-up's times in `stepNames`' index order, found in `sys` (split at the server's
 * 3-byte greeting reads): greeting read, method sent, CONNECT read, SYN sent, the exit's SYN
 * read, connect, answer sent, the server's answer read, reply sent, request read, request sent
 * on, the answer's 1,024 bytes written to the client, its shutdown. The first five warm up.
 */
function setUpSteps(sys: Sys[]): number[][] {
  const setUps: Sys[][] = [];
  for (const e of sys) {
    if (e.server && e.kind === "recv" && e.n === 3) setUps.push([e]);
    else setUps.at(-1)?.push(e);
  }
  const out: number[][] = [];
  for (const s of setUps.slice(5)) {
    const sock = s[0].fd;
    let at = 0;
    const find = (pred: (e: Sys) => boolean): number | undefined => {
      for (; at < s.length; at++) if (pred(s[at])) return s[at].us;
    };
    const own = (e: Sys) => e.server && e.fd === sock, mux = (e: Sys) => e.server && e.fd !== sock;
    const t = [
      s[0].us,
      find((e) => own(e) && e.kind === "send" && e.n === 2),
      find((e) => own(e) && e.kind === "recv" && e.n === 10),
      find((e) => mux(e) && e.kind === "send"),
      find((e) => !e.server && e.kind === "recv" && e.n > 0),
      find((e) => !e.server && e.kind === "connect"),
      find((e) => !e.server && e.kind === "send"),
      find((e) => mux(e) && e.kind === "recv" && e.n > 0),
      find((e) => own(e) && e.kind === "send"),
      find((e) => own(e) && e.kind === "recv" && e.n === 8),
      find((e) => mux(e) && e.kind === "send"),
      find((e) => own(e) && e.kind === "send" && e.n === 1024),
      find((e) => own(e) && e.kind === "shutdown"),
    ];
    if (t.every((v) => v !== undefined)) out.push(t as number[]);
  }
  return out;
}

/** Attempts at one path's traced set-ups when perf ends on its own (another perf's limits). */
const traceAttempts = 3;

/**
 * `--steps`: N sequential set-ups of `route` with the syscalls of `pids` traced; the steps. A
 * perf that ended before it was told to (it could not attach or map its buffers, e.g. beside
 * another helper's perf) is reported with what it printed and the set-ups run again, at most
 * `traceAttempts` times, instead of failing the whole run on its kill().
 */
async function tracedSetUps(route: Route, pids: [number, number], n: number): Promise<number[][]> {
  const data = await Deno.makeTempFile({ suffix: ".perf" });
  const events = [
    "sys_enter_sendto",
    "sys_enter_recvfrom",
    "sys_exit_recvfrom",
    "sys_enter_connect",
    "sys_enter_shutdown",
  ].map((e) => `syscalls:${e}`).join(",");
  try {
    for (let attempt = 1;; attempt++) {
      const perf = new Deno.Command("perf", {
        args: ["record", "-q", "-o", data, "-e", events, "-p", pids.join(",")],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const said = new Response(perf.stderr).text();
      let endedEarly = false;
      try {
        await new Promise((r) => setTimeout(r, 1000)); // perf attaches (no signal tells when)
        await sequentialMs(route, n);
      } finally {
        try {
          perf.kill("SIGINT");
        } catch {
          endedEarly = true; // it exited already: its status and output say why
        }
        await perf.status;
      }
      if (!endedEarly) break;
      const why = (await said).trim() || "no output";
      if (attempt === traceAttempts) throw new Error(`perf record ended on its own: ${why}`);
      console.error(`perf record ended on its own (${why}); tracing again`);
    }
    const script = await new Deno.Command("perf", {
      args: ["script", "-i", data, "-F", "pid,time,event,trace"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return setUpSteps(traceSyscalls(new TextDecoder().decode(script.stdout), pids[0]));
  } finally {
    await Deno.remove(data);
  }
}

try {
  const { proc: src, port: srcPort } = await startLengthSource();
  procs.push(src);
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
  /** A path's name: with `--both`, a `--mux` path's carries " --mux". */
  const named = (name: string, mux: boolean) => flags.both && mux ? `${name} --mux` : name;
  for (const mux of modes) {
    if (mux && !flags["no-floor"]) {
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
      const name = named("floor", mux);
      paths.push({ name, route: socksRoute(name, p.port, srcPort), procs: [server, local], mux });
    }
    for (const [name, standby, pool, heavy] of flags["no-floor"] || mux ? [] : floors) {
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
      paths.push({ name, route: socksRoute(name, p.port, srcPort), procs: [server, local], mux });
    }
    for (const t of trees) {
      const [control, socks, tunnel, status] = [freePort(), freePort(), freePort(), freePort()];
      // `DIR:--flag+--flag`: V8 flags for both processes; the other words are DEPOT_SUB's.
      const words = t.extra.split(",").filter(Boolean);
      const v8 = words.filter((w) => w.startsWith("--"));
      const denoFlags = v8.length ? [`--v8-flags=${v8.join(",")}`] : [];
      const sub = words.filter((w) => !w.startsWith("--")).join(",");
      const server = spawnDeno(
        `${t.dir}/services/depot-server.ts`,
        depotServerArgs({ control, socks, tunnel, status }),
        { env: { ...env, DEPOT_SUB: sub }, output: "stderr", denoFlags },
      );
      const local = spawnDeno(`${t.dir}/services/depot-local.ts`, [
        "--log-level",
        "warn",
        ...(mux ? ["--mux"] : []),
        "--server",
        `127.0.0.1:${control}`,
      ], { env: { ...env, DEPOT_SUB: sub }, output: "stderr", denoFlags });
      procs.push(server, local);
      const name = named(t.name, mux);
      await waitPort(status, `${name} depot-server`);
      await waitUntil(`${name} exit`, async () => {
        const st = await (await fetch(`http://127.0.0.1:${status}/status`)).json() as {
          exits: unknown[];
        };
        return st.exits.length === 1;
      });
      paths.push({ name, route: socksRoute(name, socks, srcPort), procs: [server, local], mux });
    }
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
  /** Per path, per round: mean ms per sequential exchange (`--seq`). */
  const seq: number[][] = paths.map(() => []);
  /** Per path, per round: the median exchange's ms (robust to the tail others' load makes). */
  const seqMed: number[][] = paths.map(() => []);
  /** Per path, per round: [server, local] on-CPU µs per sequential set-up. */
  const seqCpu: number[][][] = paths.map(() => []);
  const exchangeBuf = smallBuffer();
  const measureSeq = async (round: number) => {
    const all = [...procs, ...(ssh?.procs ?? [])];
    const pids = flags.rt ? [Deno.pid, ...all.flatMap((p) => procTree(p.child.pid))] : [];
    const each: number[][] = paths.map(() => []);
    const ns = paths.map(() => [0, 0]);
    realtime(pids, true);
    try {
      // Blocks of `--block` per path in turn (the order alternating block by block): a burst
      // of load lands on every path alike, not on whichever ran its whole share then.
      for (let done = 0, block = 0; done < flags.seq; done += flags.block, block++) {
        const n = Math.min(flags.block, flags.seq - done);
        for (const [i, p] of roundOrder(paths, round + block)) {
          const before = p.procs.map((q) => threadRunNs(q.child.pid));
          for (let k = 0; k < n; k++) {
            const t0 = performance.now();
            await smallExchange(p.route, exchangeBuf);
            each[i].push(performance.now() - t0);
          }
          for (const [j, q] of p.procs.entries()) ns[i][j] += threadRunNs(q.child.pid) - before[j];
        }
      }
    } finally {
      realtime(pids, false);
    }
    for (const [i, ms] of each.entries()) {
      seq[i].push(ms.reduce((a, b) => a + b, 0) / ms.length);
      seqMed[i].push(median(ms));
      seqCpu[i].push(ns[i].map((v) => v / 1000 / ms.length));
    }
  };
  /** Per path (depot and floor ones), per round: each step's median µs (`--steps`). */
  const steps: number[][][] = paths.map(() => []);
  const measureSteps = async (round: number) => {
    const all = [...procs, ...(ssh?.procs ?? [])];
    const pids = flags.rt ? [Deno.pid, ...all.flatMap((p) => procTree(p.child.pid))] : [];
    realtime(pids, true);
    try {
      for (const [i, p] of roundOrder(paths, round)) {
        if (p.name === "ssh -R") continue;
        const pair: [number, number] = [p.procs[0].child.pid, p.procs[1].child.pid];
        const got = await tracedSetUps(p.route, pair, flags.steps);
        steps[i].push(stepNames.map(([, a, b]) => median(got.map((t) => t[b] - t[a]))));
      }
    } finally {
      realtime(pids, false);
    }
  };
  for (let round = 1; round <= flags.rounds; round++) {
    if (flags.steps > 0) await measureSteps(round);
    if (flags.seq > 0) await measureSeq(round);
    if (flags["no-cpu"]) {
      const ms = paths.map((p, i) => `${p.name} ${fixed(seq[i].at(-1) ?? NaN, 3)}`);
      console.error(`round ${round}: ${ms.join(", ")}`);
      continue;
    }
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
  const at = (name: string) => paths.findIndex((p) => p.name === name);
  /** The first tree and the floor of path `i`'s mode (`ssh -R`'s: the first mode's). */
  const baseOf = (i: number) => at(named(trees[0].name, paths[i].mux ?? modes[0]));
  const floorOf = (i: number) => at(named("floor", paths[i].mux ?? modes[0]));
  const modeName = flags.both ? "depot and depot --mux" : flags.mux ? "depot --mux" : "plain depot";
  if (!flags["no-cpu"]) {
    console.log(
      `${modeName} CPU µs/conn, ${flags.count} exchanges x${flags.concurrency}, ` +
        `${flags.rounds} rounds${flags.together ? " (together)" : ""}: median (server + local); ` +
        `Δ = median same-round difference to ${trees[0].name}; x floor = median same-round ratio`,
    );
    for (const [i, p] of paths.entries()) {
      const total = cpu[i].map(sum);
      const base = baseOf(i), floor = floorOf(i);
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
  }
  if (flags.seq > 0) {
    const sshAt = at("ssh -R");
    console.log(
      `\nsequential set-up, ms per exchange (${flags.seq} per path per round in blocks of ` +
        `${flags.block}, ${flags.rounds} rounds${flags.rt ? ", SCHED_RR" : ""}): min / median / ` +
        `max of the rounds; same-round ratios median [min-max]`,
    );
    for (const [what, v] of [["median exchange", seqMed], ["mean exchange", seq]] as const) {
      /** `median [min-max]` of the same-round ratios of path `i` to path `j` ("-": none). */
      const ratios = (i: number, j: number): string => {
        if (j < 0 || i === j) return "-";
        const r = v[i].map((x, k) => x / v[j][k]);
        return `${median(r).toFixed(3)} [${Math.min(...r).toFixed(3)}-${
          Math.max(...r).toFixed(3)
        }]`;
      };
      const rows = paths.map((p, i) => [
        p.name,
        `${Math.min(...v[i]).toFixed(3)} / ${median(v[i]).toFixed(3)} / ${
          Math.max(...v[i]).toFixed(3)
        }`,
        ratios(i, baseOf(i)),
        ratios(i, floorOf(i)),
        ratios(i, sshAt),
      ]);
      const head = [`by each round's ${what}`, "ms", "x first tree", "x floor", "x ssh -R"];
      console.log(formatTable(head, rows));
    }
    console.log(formatTable(
      ["on-CPU µs per set-up", "server + local", "x first tree", "x floor", "x ssh -R"],
      paths.map((p, i) => {
        const total = seqCpu[i].map((c) => c[0] + c[1]);
        const x = (j: number) => {
          if (j < 0 || i === j) return "-";
          const r = total.map((v, k) => v / (seqCpu[j][k][0] + seqCpu[j][k][1]));
          return `${median(r).toFixed(2)} [${Math.min(...r).toFixed(2)}-${
            Math.max(...r).toFixed(2)
          }]`;
        };
        return [
          p.name,
          `${fixed(median(total))} (${fixed(median(seqCpu[i].map((c) => c[0])))} + ${
            fixed(median(seqCpu[i].map((c) => c[1])))
          })`,
          x(baseOf(i)),
          x(floorOf(i)),
          x(sshAt),
        ];
      }),
    ));
    console.log(
      `rounds' medians: ${
        paths.map((p, i) => `${p.name} [${seqMed[i].map((x) => x.toFixed(3)).join(" ")}]`)
          .join("; ")
      }`,
    );
  }
  if (flags.steps > 0) {
    const traced = paths.map((p, i) => [p.name, i] as const).filter(([, i]) => steps[i].length);
    console.log(
      `\nset-up steps, µs (${flags.steps} sequential set-ups per path per round, syscall ` +
        `tracepoints${flags.rt ? ", SCHED_RR" : ""}): median of the rounds' medians`,
    );
    console.log(`${"step".padEnd(48)} ${traced.map(([n]) => n.padStart(10)).join(" ")}`);
    for (const [k, [name]] of stepNames.entries()) {
      const cells = traced.map(([, i]) => fixed(median(steps[i].map((r) => r[k]))).padStart(10));
      console.log(`${name.padEnd(48)} ${cells.join(" ")}`);
    }
  }
} finally {
  await ssh?.close();
  await stopAll(procs, "SIGKILL"); // a bench: no drain to wait for
}
