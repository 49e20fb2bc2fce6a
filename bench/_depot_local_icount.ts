/**
 * `deno run -A bench/_depot_local_icount.ts --trees 'old=DIR,new=DIR' [--rounds 3] [--count 400]
 * [--warm 1500] [--concurrency 4] [--server]`: depot-local's (`--server`: depot-server's)
 * user-space instructions per plain connection,
 * counted by valgrind's callgrind (all threads: V8's compiler and GC workers too), of several
 * checkouts: a figure the box's load does not move, for changes of a few µs that a CPU-time
 * A/B on this shared 2-core box cannot resolve (issue 20, dwake). Per tree and round: that
 * tree's depot-server (native) and its depot-local under callgrind with collection off (with
 * `--server` the other way round); after
 * `--warm` exchanges (the JIT settled) collection is switched on for `--count` small SOCKS
 * exchanges with `--concurrency` workers, then off, and the dump's total Ir / `--count` is the
 * round's figure. Trees alternate per round. Caveat (dloc): code driven by timers runs ~50×
 * more often per connection under valgrind's clock, so a timer-driven difference is not the
 * native one; the per-connection path here has no timer of its own.
 * @module
 */

import {
  benchFlags,
  benchTrees,
  concurrentRps,
  depotServerArgs,
  freePort,
  median,
  type Proc,
  socksRoute,
  spawn,
  spawnDeno,
  startLengthSource,
  stopAll,
  waitPort,
  waitUntil,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 3, count: 400, warm: 1500, concurrency: 4 },
  booleans: ["server"],
  strings: ["trees"],
});
const trees = benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");
const env = { DEPOT_TOKEN: crypto.randomUUID() };

/** `callgrind_control ARGS PID`, quietly. */
async function control(args: string[], pid: number): Promise<void> {
  const { success } = await new Deno.Command("callgrind_control", {
    args: [...args, String(pid)],
    stdout: "null",
    stderr: "null",
  }).output();
  if (!success) throw new Error(`callgrind_control ${args.join(" ")} ${pid} failed`);
}

/** The summed `totals:` Ir of every dump file of `prefix` (threads, parts). */
function totalIr(prefix: string): number {
  const dir = prefix.slice(0, prefix.lastIndexOf("/"));
  const base = prefix.slice(prefix.lastIndexOf("/") + 1);
  let sum = 0;
  for (const e of Deno.readDirSync(dir)) {
    if (!e.name.startsWith(base)) continue;
    const text = Deno.readTextFileSync(`${dir}/${e.name}`);
    const m = /^totals: (\d+)/m.exec(text);
    if (m) sum += Number(m[1]);
  }
  return sum;
}

/** `valgrind --tool=callgrind` (collection off) running `deno run -A ARGS`. */
function callgrind(prefix: string, args: string[], name: string): Proc {
  return spawn("valgrind", [
    "--tool=callgrind",
    "--instr-atstart=no",
    "--separate-threads=no",
    `--callgrind-out-file=${prefix}`,
    Deno.execPath(),
    "run",
    "-A",
    ...args,
  ], { env, output: "discard", name: `${name} (callgrind)` });
}

/** One round of one tree: instructions per connection of its depot-local (or depot-server). */
async function round(name: string, dir: string, src: number, r: number): Promise<number> {
  const [control_, socks, tunnel, status] = [freePort(), freePort(), freePort(), freePort()];
  const prefix = `/tmp/dwake-cg.${name}.${r}.${Date.now()}`;
  const procs: Proc[] = [];
  try {
    const serverArgs = [
      `${dir}/services/depot-server.ts`,
      ...depotServerArgs({ control: control_, socks, tunnel, status }),
    ];
    const localArgs = [
      `${dir}/services/depot-local.ts`,
      ...["--log-level", "warn", "--server", `127.0.0.1:${control_}`],
    ];
    // The counted process is pushed second: it is stopped first, its last dump written.
    if (flags.server) {
      procs.push(spawnDeno(localArgs[0], localArgs.slice(1), { env, output: "discard" }));
      procs.push(callgrind(prefix, serverArgs, "depot-server"));
    } else {
      procs.push(spawnDeno(serverArgs[0], serverArgs.slice(1), { env, output: "stderr" }));
      procs.push(callgrind(prefix, localArgs, "depot-local"));
    }
    const counted = procs[1];
    await waitPort(status, `${name} depot-server`, 120_000);
    await waitUntil(`${name} exit`, async () => {
      const st = await (await fetch(`http://127.0.0.1:${status}/status`)).json() as {
        exits: unknown[];
      };
      return st.exits.length === 1;
    }, 120_000);
    const route = socksRoute(name, socks, src);
    await concurrentRps(route, flags.warm, flags.concurrency);
    await control(["-i", "on"], counted.child.pid);
    await concurrentRps(route, flags.count, flags.concurrency);
    await control(["-i", "off"], counted.child.pid);
    await control(["-d"], counted.child.pid);
    await stopAll(procs.splice(1)); // the counted process's last dump written
    return totalIr(prefix) / flags.count;
  } finally {
    await stopAll(procs);
    for (const e of Deno.readDirSync("/tmp")) {
      if (e.name.startsWith(prefix.slice(5)) && !Deno.env.get("KEEP")) {
        Deno.removeSync(`/tmp/${e.name}`);
      }
    }
  }
}

const source = await startLengthSource();
const results = new Map<string, number[]>(trees.map((t) => [t.name, []]));
try {
  for (let r = 0; r < flags.rounds; r++) {
    const order = r % 2 === 0 ? trees : [...trees].reverse();
    for (const t of order) {
      const ir = await round(t.name, t.dir, source.port, r);
      results.get(t.name)!.push(ir);
      console.log(`round ${r + 1}: ${t.name} ${Math.round(ir).toLocaleString("en")} Ir/conn`);
    }
  }
} finally {
  await stopAll([source.proc]);
}
const first = results.get(trees[0].name)!;
console.log(
  `${
    flags.server ? "depot-server" : "depot-local"
  } instructions per connection (callgrind, ${flags.count} exchanges ×${flags.concurrency} after ${flags.warm} warm):`,
);
for (const t of trees) {
  const v = results.get(t.name)!;
  const ratios = v.map((x, i) => (x / first[i]).toFixed(3));
  console.log(
    `${t.name.padEnd(12)} ${Math.round(median(v)).toLocaleString("en").padStart(10)}  rounds [${
      v.map((x) => Math.round(x / 1000) + "k").join(" ")
    }]  x ${trees[0].name} [${ratios.join(" ")}]`,
  );
}
