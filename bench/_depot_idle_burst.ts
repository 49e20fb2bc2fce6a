/**
 * `deno run -A bench/_depot_idle_burst.ts --trees 'base=DIR,new=DIR' [--rounds 3]
 * [--pauses 5000,5300,5600,5900,6200,6500] [--burst 200] [--workers 32] [--warm 200]`: plain
 * depot's first requests after an idle pause, per checkout, in one run (issue 20, helper
 * "spare").
 *
 * Each tree runs its own depot-server and depot-local (default settings: standby spares,
 * `spareIdleMs` 5000) against one length source. After `--warm` exchanges (32 at once: the
 * local's pool grows to its bound), each round takes every pause of `--pauses` in turn and, per
 * pause, every tree in turn (alternating order): the tree's depot idles that long since its
 * last burst, then `--burst` small exchanges (connect, SOCKS, 8-byte request, 1 KiB answer) run
 * on `--workers` loops; the pool refills up to its bound as they run, so their spares are all
 * dialled in the burst's last few ms and expire together. Pauses around `spareIdleMs` plus the
 * local's expiry tick (a quarter of it) are where a local that expires its standby spares
 * itself closes them as the server writes the next burst's requests on them.
 *
 * Per tree: the times of the burst's first `--workers` exchanges (median and max of the
 * per-burst median and max, ms),
 * and the lines the two processes wrote at warn level during the bursts: the local's
 * `standby spare refused` (a request it read on a spare it had expired) and the server's
 * lines matching `unanswered` (a request asked again after its standby ended: at debug level
 * in the tree, so a tree counts them only when patched to warn: a measurement copy). Not a
 * test: numbers are as measured on a shared machine.
 *
 * `--aim D,D,...` (replaces the pauses): each burst starts D ms before the previous burst's
 * spares are refreshed, where a local that expires them itself (a tree given as `DIR:tick`)
 * races with the server: at the local's first expiry tick past `spareIdleMs` after that burst
 * (its ticks timed from the `msg="spares refreshed"` lines a measurement copy prints at each
 * expiry), or, with "retire", 1.25 x `spareIdleMs` after it (the server's retirement).
 * @module
 */

import {
  benchFlags,
  benchTrees,
  concurrentRps,
  depotServerArgs,
  fixed,
  formatTable,
  freePort,
  median,
  type Proc,
  roundOrder,
  socksRoute,
  spawnDeno,
  startLengthSource,
  stopAll,
  waitPort,
  waitUntil,
} from "./_util.ts";
import { sleep } from "../lib/net/mod.ts";
import { retireAfterFactor } from "../lib/depot/protocol.ts";

const flags = benchFlags({
  numbers: { rounds: 3, burst: 200, workers: 32, warm: 200 },
  strings: ["trees", "pauses", "aim"],
});
/** `name=DIR` or `name=DIR:tick` (its local expires its spares itself, at its ticks: `--aim`). */
const trees = benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");
/**
 * `--aim D,D,...`: each burst starts D ms before the moment the tree's spares are next
 * refreshed, instead of after a pause (see {@linkcode refreshed}); the list replaces the pauses.
 */
const aims = flags.aim?.split(",").map(Number);
/** The servers' default `spareIdleMs`, and the expiry tick of a local that expires spares. */
const spareIdleMs = 5000, tickMs = spareIdleMs / 4;
const pauses = aims ?? (flags.pauses ?? "5000,5300,5600,5900,6200,6500").split(",").map(Number);

/**
 * The next line of `proc` from `from` on matching `re`, and when this process saw it (polled
 * every ms). For `--aim`: a measurement copy of each tree prints `msg="spares refreshed"` when
 * its spares are replaced (a local that expires them: at its expiry tick; with "retire": when
 * the server's retirement is read), so the bench knows when the next refresh comes.
 */
async function refreshed(proc: Proc, from: number): Promise<{ atMs: number; index: number }> {
  const deadline = performance.now() + 30_000;
  for (let i = from;; await sleep(1)) {
    for (; i < proc.lines.length; i++) {
      if (proc.lines[i].includes('msg="spares refreshed"')) {
        return { atMs: performance.now(), index: i };
      }
    }
    if (performance.now() > deadline) throw new Error(`${proc.name}: no spares refreshed in 30 s`);
  }
}
const env = { DEPOT_TOKEN: crypto.randomUUID() };

/** One burst: after which pause, its exchange times, and the lines it caused. */
interface Burst {
  pause: number;
  medianMs: number;
  maxMs: number;
  refused: number;
  unanswered: number;
}

/** One tree's depot and its bursts. */
interface Path {
  name: string;
  server: Proc;
  local: Proc;
  port: number;
  lastMs: number;
  bursts: Burst[];
  /** `--aim`, a local that expires its spares itself: when its expiry tick ran, its period. */
  tick: { atMs: number; everyMs: number } | undefined;
  /** Its local expires its spares itself (`:tick`). */
  ticks: boolean;
}

const source = await startLengthSource();
const paths: Path[] = [];
try {
  for (const t of trees) {
    const p = { control: freePort(), socks: freePort(), tunnel: freePort(), status: freePort() };
    const server = spawnDeno(`${t.dir}/services/depot-server.ts`, depotServerArgs(p), {
      env,
      name: `${t.name} server`,
    });
    paths.push({
      name: t.name,
      server,
      local: server, // replaced below, once the server listens
      port: p.socks,
      lastMs: 0,
      bursts: [],
      tick: undefined,
      ticks: t.extra === "tick",
    });
    await waitPort(p.status, `${t.name} depot-server`);
    const local = spawnDeno(`${t.dir}/services/depot-local.ts`, [
      ...["--log-level", "warn", "--server", `127.0.0.1:${p.control}`],
    ], { env, name: `${t.name} local` });
    paths[paths.length - 1].local = local;
    await waitUntil(`${t.name} exit`, async () => {
      const st = await (await fetch(`http://127.0.0.1:${p.status}/status`)).json() as {
        exits: unknown[];
      };
      return st.exits.length === 1;
    });
  }
  for (const p of paths) {
    await concurrentRps(socksRoute(p.name, p.port, source.port), flags.warm, 32);
    p.lastMs = performance.now();
    if (aims && p.ticks) {
      // Idle: the expiry ticks that closed spares, one to three of the warm-up's batches.
      const first = await refreshed(p.local, p.local.lines.length);
      let last = first;
      while (last.atMs - first.atMs < 4 * tickMs) {
        await sleep(100); // past the other lines of that tick (one per spare)
        last = await refreshed(p.local, p.local.lines.length);
      }
      const ticks = Math.round((last.atMs - first.atMs) / tickMs);
      p.tick = { atMs: last.atMs, everyMs: (last.atMs - first.atMs) / ticks };
      console.log(`${p.name}: expiry tick every ${fixed(p.tick.everyMs, 1)} ms`);
    }
  }
  const count = (lines: readonly string[], re: RegExp) => lines.filter((l) => re.test(l)).length;
  for (let round = 1; round <= flags.rounds; round++) {
    for (const pause of pauses) {
      for (const [, p] of roundOrder(paths, round)) {
        if (aims) {
          // The previous burst's spares (the pool refilled up to its bound as it ran, so they
          // were dialled in its last few ms) are refreshed after it ended: 1.25 x spareIdleMs
          // by the server ("retire"), or at the local's first expiry tick past spareIdleMs.
          let at = p.lastMs + spareIdleMs * (p.ticks ? 1 : retireAfterFactor);
          // Its interval drifts by what each tick takes: its measured period.
          const t = p.tick;
          if (t) at = t.atMs + Math.ceil((at - t.atMs) / t.everyMs) * t.everyMs;
          await sleep(Math.max(0, at - pause - performance.now()));
        } else {
          await sleep(Math.max(0, p.lastMs + pause - performance.now()));
        }
        const refused = count(p.local.lines, /standby spare refused/);
        const unanswered = count(p.server.lines, /unanswered/);
        const lat: number[] = [];
        await concurrentRps(
          socksRoute(p.name, p.port, source.port),
          flags.burst,
          flags.workers,
          lat,
        );
        lat.splice(flags.workers); // the first requests after the pause: one per worker
        p.lastMs = performance.now();
        p.bursts.push({
          pause,
          medianMs: median(lat),
          maxMs: Math.max(...lat),
          refused: count(p.local.lines, /standby spare refused/) - refused,
          unanswered: count(p.server.lines, /unanswered/) - unanswered,
        });
      }
    }
  }
  const hit = (b: Burst) => b.refused + b.unanswered > 0;
  const sum = (bs: Burst[], f: (b: Burst) => number) => bs.reduce((a, b) => a + f(b), 0);
  const ms = (bs: Burst[], f: (b: Burst) => number) =>
    bs.length === 0 ? "-" : `${fixed(median(bs.map(f)), 1)} [${fixed(Math.max(...bs.map(f)), 1)}]`;
  console.log(
    `bursts of ${flags.burst} after pauses of ${pauses.join(", ")} ms, ${flags.rounds} rounds`,
  );
  console.log(formatTable(
    [
      "tree",
      "bursts hit",
      "refused (local)",
      "asked again (server)",
      "burst median ms, all: median [max]",
      "burst max ms, all",
      "burst median ms, hit",
      "burst median ms, clean",
    ],
    paths.map((p) => [
      p.name,
      `${p.bursts.filter(hit).length} / ${p.bursts.length}`,
      String(sum(p.bursts, (b) => b.refused)),
      String(sum(p.bursts, (b) => b.unanswered)),
      ms(p.bursts, (b) => b.medianMs),
      ms(p.bursts, (b) => b.maxMs),
      ms(p.bursts.filter(hit), (b) => b.medianMs),
      ms(p.bursts.filter((b) => !hit(b)), (b) => b.medianMs),
    ]),
  ));
  console.log(formatTable(
    ["pause ms", ...paths.map((p) => `${p.name}: burst median ms (refused+asked again)`)],
    pauses.map((pause) => [
      String(pause),
      ...paths.map((p) => {
        const bs = p.bursts.filter((b) => b.pause === pause);
        return `${bs.map((b) => fixed(b.medianMs, 1)).join(" ")} (${
          sum(bs, (b) => b.refused + b.unanswered)
        })`;
      }),
    ]),
  ));
} finally {
  await stopAll(paths.flatMap((p) => [p.local, p.server]));
  await stopAll([source.proc]);
}
