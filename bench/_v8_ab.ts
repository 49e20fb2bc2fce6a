/**
 * `deno run -A bench/_v8_ab.ts --v8 'A;B;...' [--work depot,mux,tunnel,close] [--rounds 5]`:
 * V8 flags per connection and per request, A/B in one run (issue 20, slice v8flags). Per
 * `;`-separated set of V8 flags (`,` between the flags of one set, as `--v8-flags=` takes them)
 * and for the defaults (always the first row), each workload of `--work` gets its own pair of
 * processes started with `--v8-flags=SET`:
 *
 * - `depot`: depot-server + depot-local (plain), `--count` small SOCKS exchanges with
 *   `--concurrency` workers: new connections per second and CPU µs per connection;
 * - `mux`: the same with depot-local `--mux`;
 * - `tunnel`: tunnel-server + tunnel-client (raw, the default transport) in front of nginx,
 *   `wrk -t2 -c50 -d<seconds>s` small GET kept alive: requests per second and CPU µs per request;
 * - `close`: the same tunnel with `-H 'Connection: close'` (a public connection per request).
 *
 * Every round measures every set of every workload once, the sets in alternating order
 * (bench/_util.ts `roundOrder`), so load from elsewhere falls on the sets alike. The tables give
 * per set the median rate and CPU (server + client/local), and the median [min-max] same-round
 * ratio to the defaults: a flag is told from noise by that ratio's spread, not by one median.
 * `--aa` adds a second set of processes with the defaults, the A/A row: its ratio's spread is
 * what the box's noise alone makes, the least a flag's must beat. "V8 threads": the µs per
 * unit of both processes' V8 helper threads (GC and compiler jobs, part of the CPU column),
 * which `--single-threaded*` moves onto the main thread. RSS after the last round beside them.
 * `--fresh`: every row's processes are started anew in every round (warmed up, measured,
 * stopped), so a pair's own luck (heap layout, JIT decisions: the A/A row's steady offset of
 * up to ~10 %) falls into the rounds' spread instead of biasing a row. `--warmup N`: depot exchanges before the first round (the tunnel's warm-up: a wrk run of
 * half `--seconds`). A round whose exchange failed (a refused or timed-out request on a
 * saturated box) is a gap in that row. Not a test: numbers as measured on a shared machine.
 * @module
 */

import { errorMessage } from "../lib/net/errors.ts";
import {
  benchFlags,
  concurrentRps,
  depotServerArgs,
  fixed,
  formatTable,
  freePort,
  listeningPort,
  median,
  namedThreadRunNs,
  type Proc,
  procCpuSeconds,
  procStatusKiB,
  roundOrder,
  type Route,
  servicePath,
  socksRoute,
  spawnDeno,
  startHelloNginx,
  startLengthSource,
  stopAll,
  waitPort,
  waitUntil,
  wrk,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 5, count: 3000, concurrency: 32, seconds: 3, warmup: 1000 },
  booleans: ["aa", "fresh"],
  strings: ["v8", "work"],
});
/** A set of V8 flags (`flags`: as `--v8-flags=` takes them, "" for none) and its row's name. */
interface FlagSet {
  label: string;
  flags: string;
}
/** The sets: the defaults first, `--aa`'s second defaults, then `--v8`'s. */
const sets: FlagSet[] = [
  { label: "(defaults)", flags: "" },
  ...(flags.aa ? [{ label: "(defaults, A/A)", flags: "" }] : []),
  ...(flags.v8 ?? "").split(";").map((s) => s.trim()).filter(Boolean).map((f) => ({
    label: `\`${f}\``,
    flags: f,
  })),
];
const works = (flags.work ?? "depot,mux,tunnel").split(",").filter(Boolean);
for (const w of works) {
  if (!["depot", "mux", "tunnel", "close"].includes(w)) {
    console.error(`--work: unknown workload ${w} (depot, mux, tunnel, close)`);
    Deno.exit(2);
  }
}
const denoFlags = (set: FlagSet): string[] => set.flags ? [`--v8-flags=${set.flags}`] : [];
const setName = (set: FlagSet): string => set.label.replaceAll("`", "");

/** One workload under one set of flags: its processes and how one round measures it. */
interface Path {
  work: string;
  set: FlagSet;
  /** [server, client or local]. */
  procs: Proc[];
  /**
   * One measurement (`warm`: the shorter warm-up): units done (connections or requests) and
   * the rate per second.
   */
  run(warm: boolean): Promise<{ units: number; rate: number }>;
}

const procs: Proc[] = [];
const token = crypto.randomUUID();

/** depot-server + depot-local (`mux`: `--mux`) with `set`; SOCKS exchanges to `srcPort`. */
async function startDepot(set: FlagSet, mux: boolean, srcPort: number): Promise<Path> {
  const [control, socks, tunnel, status] = [freePort(), freePort(), freePort(), freePort()];
  const env = { DEPOT_TOKEN: token };
  const server = spawnDeno(
    servicePath("depot-server.ts"),
    depotServerArgs({ control, socks, tunnel, status }),
    { env, output: "stderr", denoFlags: denoFlags(set) },
  );
  const local = spawnDeno(servicePath("depot-local.ts"), [
    ...["--log-level", "warn"],
    ...(mux ? ["--mux"] : []),
    ...["--server", `127.0.0.1:${control}`],
  ], { env, output: "stderr", denoFlags: denoFlags(set) });
  procs.push(server, local);
  const name = `depot${mux ? " --mux" : ""} [${setName(set)}]`;
  await waitPort(status, `${name} depot-server`);
  await waitUntil(`${name} exit`, async () => {
    const st = await (await fetch(`http://127.0.0.1:${status}/status`)).json() as {
      exits: unknown[];
    };
    return st.exits.length === 1;
  });
  const route: Route = socksRoute(name, socks, srcPort);
  return {
    work: mux ? "mux" : "depot",
    set,
    procs: [server, local],
    run: async (warm) => {
      const units = warm ? flags.warmup : flags.count;
      return { units, rate: await concurrentRps(route, units, flags.concurrency) };
    },
  };
}

/** tunnel-server + tunnel-client (raw) with `set` in front of `origin`; `close`: new conns. */
async function startTunnel(set: FlagSet, close: boolean, origin: number): Promise<Path> {
  const id = `bench-v8-${crypto.randomUUID()}`;
  const server = spawnDeno(servicePath("tunnel-server.ts"), [
    ...["--listen", "127.0.0.1:0", "--host", "raw.test=env:BENCH_RAW_ID", "--log-level", "info"],
  ], { env: { BENCH_RAW_ID: id }, denoFlags: denoFlags(set) });
  procs.push(server);
  const port = await listeningPort(server, "http");
  const client = spawnDeno(servicePath("tunnel-client.ts"), [
    ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${origin}`],
    ...["--log-level", "info"],
  ], { env: { TUNNEL_IDENTIFIER: id }, denoFlags: denoFlags(set) });
  procs.push(client);
  await client.waitFor(/msg="connected"/);
  const headers = close ? ["Connection: close"] : [];
  return {
    work: close ? "close" : "tunnel",
    set,
    procs: [server, client],
    run: async (warm) => {
      const r = await wrk(`http://127.0.0.1:${port}/hello`, {
        seconds: warm ? Math.max(1, Math.round(flags.seconds / 2)) : flags.seconds,
        host: "raw.test",
        headers,
      });
      if (r.non2xx > 0 || (r.errors ?? 0) > 0) {
        console.error(`tunnel [${setName(set)}]: ${r.non2xx} non-2xx, ${r.errors} errors`);
      }
      return { units: r.requests, rate: r.rps };
    },
  };
}

/** Per path, per round: rate, [server, client] CPU µs per unit, V8 helper threads' µs per unit. */
const rates: number[][] = [];
const cpus: number[][][] = [];
const helpers: number[][] = [];
/** Per row: both processes' RSS MiB after its last round. */
const rss: number[][] = [];
/** V8's helper threads (GC and compiler jobs: "V8 DefaultWorker"). */
const v8Threads = /^V8 /;
let nginx: { proc: Proc; port: number; dir: string } | undefined;
try {
  const needDepot = works.includes("depot") || works.includes("mux");
  const needTunnel = works.includes("tunnel") || works.includes("close");
  const src = needDepot ? await startLengthSource() : undefined;
  if (src) procs.push(src.proc);
  nginx = needTunnel ? await startHelloNginx("warren-bench-v8-nginx-") : undefined;
  if (nginx) procs.push(nginx.proc);
  /** Start `work`'s processes with `set`. */
  const start = (work: string, set: FlagSet): Promise<Path> =>
    work === "depot" || work === "mux"
      ? startDepot(set, work === "mux", src!.port)
      : startTunnel(set, work === "close", nginx!.port);
  /** Stop `p`'s processes (`--fresh`: after its round). */
  const stop = async (p: Path) => {
    for (const q of p.procs) procs.splice(procs.indexOf(q), 1);
    await stopAll(p.procs, "SIGKILL");
  };
  /** The rows: one per workload and set (`--fresh`: their processes are each round's). */
  const rows = works.flatMap((work) => sets.map((set) => ({ work, set })));
  const live: (Path | undefined)[] = [];
  if (!flags.fresh) { for (const r of rows) live.push(await start(r.work, r.set)); }
  if (src) await waitPort(src.port, "source");
  // Warm-up: each path's code hot and its heap grown before the first round.
  for (const p of live) await p!.run(true);
  rows.forEach(() => {
    rates.push([]);
    cpus.push([]);
    helpers.push([]);
    rss.push([NaN, NaN]);
  });
  for (let round = 1; round <= flags.rounds; round++) {
    for (const work of works) {
      const ofWork = rows.map((r, i) => [r, i] as const).filter(([r]) => r.work === work);
      for (const [, [r, i]] of roundOrder(ofWork, round)) {
        const p = live[i] ?? await start(r.work, r.set);
        if (!live[i]) await p.run(true);
        const before = p.procs.map((q) => procCpuSeconds([q]));
        const helpersNs = () =>
          p.procs.reduce((a, q) => a + namedThreadRunNs(q.child.pid, v8Threads), 0);
        const ns0 = helpersNs();
        try {
          const { units, rate } = await p.run(false);
          const us = p.procs.map((q, k) => (procCpuSeconds([q]) - before[k]) * 1e6 / units);
          rates[i].push(rate);
          cpus[i].push(us);
          helpers[i].push((helpersNs() - ns0) / 1000 / units);
        } catch (err) {
          // A refused or timed-out exchange on a saturated box: this round is a gap ("-"
          // in the round's line, left out of the medians and ratios), not the end of the run.
          console.error(`round ${round}, ${r.work} [${setName(r.set)}]: ${errorMessage(err)}`);
          rates[i].push(NaN);
          cpus[i].push(p.procs.map(() => NaN));
          helpers[i].push(NaN);
        }
        rss[i] = p.procs.map((q) => procStatusKiB(q.child.pid, "VmRSS") / 1024);
        if (!live[i]) await stop(p);
      }
    }
    console.error(
      `round ${round}: ` +
        rows.map((r, i) =>
          `${r.work} [${setName(r.set)}] ${fixed(rates[i].at(-1)!)}/s ${
            fixed(cpus[i].at(-1)!.reduce((a, b) => a + b))
          } µs`
        ).join(", "),
    );
  }
  const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
  /** The median of the rounds that did not fail. */
  const med = (v: number[]) => median(v.filter(Number.isFinite));
  /** `median [min-max]` of the same-round ratios of `v` to `base` (rounds both measured). */
  const ratios = (v: number[], base: number[]): string => {
    const r = v.map((x, k) => x / base[k]).filter(Number.isFinite);
    if (r.length === 0) return "-";
    return `${median(r).toFixed(2)} [${Math.min(...r).toFixed(2)}-${Math.max(...r).toFixed(2)}]`;
  };
  const titles: Record<string, string> = {
    depot: `plain depot, ${flags.count} SOCKS exchanges x${flags.concurrency}: conn/s, CPU µs/conn`,
    mux: `depot --mux, ${flags.count} SOCKS exchanges x${flags.concurrency}: conn/s, CPU µs/conn`,
    tunnel:
      `tunnel (raw) small GET, wrk -t2 -c50 -d${flags.seconds}s kept alive: req/s, CPU µs/req`,
    close: `tunnel (raw) small GET, wrk -t2 -c50 -d${flags.seconds}s Connection: close: ` +
      `req/s, CPU µs/req (= per connection)`,
  };
  for (const work of works) {
    const ofWork = rows.map((r, i) => [r, i] as const).filter(([r]) => r.work === work);
    const base = ofWork[0][1];
    console.log(`\n${titles[work]}; ${flags.rounds} rounds, medians; x defaults: same-round`);
    console.log(formatTable(
      [
        "V8 flags",
        "rate",
        "x defaults",
        "CPU (server + other)",
        "x defaults",
        "V8 threads",
        "RSS MiB",
      ],
      ofWork.map(([r, i]) => {
        const total = cpus[i].map(sum);
        return [
          r.set.label,
          fixed(med(rates[i])),
          i === base ? "-" : ratios(rates[i], rates[base]),
          `${fixed(med(total))} (${fixed(med(cpus[i].map((c) => c[0])))} + ${
            fixed(med(cpus[i].map((c) => c[1])))
          })`,
          i === base ? "-" : ratios(total, cpus[base].map(sum)),
          fixed(med(helpers[i]), 1),
          `${fixed(rss[i][0])} + ${fixed(rss[i][1])}`,
        ];
      }),
    ));
  }
} finally {
  await stopAll(procs, "SIGKILL"); // a bench: no drain to wait for
  if (nginx) Deno.removeSync(nginx.dir, { recursive: true });
}
