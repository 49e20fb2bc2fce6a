/**
 * `deno run -A bench/_serve_ab.ts --trees 'new=DIR,old=DIR' [--modes serve,source,lean]
 * [--rounds 9] [--count 4000] [--together]`: on-CPU µs per connection of lib/net's `serve()`
 * alone (bench/_serve_target.ts: accept, an 8-byte request, a 1 KiB answer, close) for each
 * tree and mode, beside the same exchange on a bare `for await` accept loop (the floor), each
 * in its own process, in one run (issue 20). Every round measures every path once (`--count`
 * small exchanges from 32 concurrent loops of this process), in alternating order
 * (`--together`: all paths at once). The figure is the server's threads' on-CPU time
 * (`/proc/PID/task/TID/schedstat`, ns resolution) per connection; the table gives its median,
 * the median over the floor, and each tree's median [min-max] same-round ratio to the first
 * tree of its mode, by which a change is told from noise.
 * @module
 */

import {
  benchFlags,
  benchPath,
  benchTrees,
  concurrentRps,
  fixed,
  formatTable,
  median,
  type Proc,
  roundOrder,
  spawnDeno,
  stopAll,
  tcpRoute,
  threadRunNs,
} from "./_util.ts";
import type { Route } from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 9, count: 4000, concurrency: 32 },
  booleans: ["together"],
  strings: ["trees", "modes"],
});
const trees = benchTrees(flags.trees, `new=${new URL("..", import.meta.url).pathname}`);
const modes = (flags.modes ?? "serve,source").split(",").filter(Boolean);

interface Path {
  name: string;
  tree?: string;
  mode: string;
  route: Route;
  proc: Proc;
}

const procs: Proc[] = [];
try {
  const paths: Path[] = [];
  const start = async (name: string, mode: string, dir?: string, tree?: string) => {
    const env: Record<string, string> = { SERVE_MODE: mode };
    if (dir !== undefined) env.SERVE_TREE = dir;
    const proc = spawnDeno(benchPath("_serve_target.ts"), [], { env, name });
    procs.push(proc);
    const { port } = JSON.parse(await proc.waitFor(/^\{"port"/)) as { port: number };
    paths.push({ name, tree, mode, route: tcpRoute(name, port), proc });
  };
  await start("bare accept loop (floor)", "bare");
  for (const mode of modes) {
    for (const t of trees) await start(`serve() ${mode} (${t.name})`, mode, t.dir, t.name);
  }
  for (const p of paths) await concurrentRps(p.route, 1000, flags.concurrency); // warm up
  const cpu = paths.map(() => [] as number[]);
  const measure = async (p: Path): Promise<number> => {
    const before = threadRunNs(p.proc.child.pid);
    await concurrentRps(p.route, flags.count, flags.concurrency);
    return (threadRunNs(p.proc.child.pid) - before) / 1e3 / flags.count;
  };
  for (let round = 1; round <= flags.rounds; round++) {
    if (flags.together) {
      (await Promise.all(paths.map(measure))).forEach((us, i) => cpu[i].push(us));
    } else {
      for (const [i, p] of roundOrder(paths, round)) cpu[i].push(await measure(p));
    }
    console.error(`  round ${round} done (load ${Deno.loadavg()[0].toFixed(1)})`);
  }
  const floor = median(cpu[0]);
  const rows = paths.map((p, i) => {
    const base = paths.findIndex((q) => q.mode === p.mode && q.tree !== undefined);
    const ratios = base < 0 ? [] : cpu[i].map((us, r) => us / cpu[base][r]);
    return [
      p.name,
      fixed(median(cpu[i]), 1),
      i === 0 ? "" : `+${fixed(median(cpu[i]) - floor, 1)}`,
      p.tree === undefined || base === i
        ? ""
        : `${fixed(median(ratios), 3)} [${fixed(Math.min(...ratios), 2)}-${
          fixed(Math.max(...ratios), 2)
        }]`,
      cpu[i].map((us) => fixed(us)).join(" "),
    ];
  });
  console.log(
    `On-CPU µs per connection (server, all threads), median of ${flags.rounds} rounds of ` +
      `${flags.count}, ${flags.concurrency} concurrent${flags.together ? ", paths together" : ""}`,
  );
  console.log(formatTable(
    ["path", "µs/conn", "over floor", `same-round ratio to ${trees[0].name}`, "rounds"],
    rows,
  ));
} finally {
  await stopAll(procs);
}
