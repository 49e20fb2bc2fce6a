/**
 * The tunnel's "scheduling waves" seen from the scheduler (issue 20, twave): `wrk -t2 -c50` on
 * GET /hello through haproxy ×2, the Deno mux floor (bench/floor_mux.ts) and the tunnel of each
 * tree (`--trees name=DIR[:ENV=V+ENV=V],...`, default this checkout; the pairs go into both
 * tunnel processes' environment, `server.ENV=V` or `client.ENV=V` into one), nginx as the origin (one process), and
 * during each run `perf sched record -a` for `--window` seconds. From `perf sched timehist`:
 *
 * - **cores**: what the pipeline (wrk, both hops, nginx) kept busy per second, and idle (the
 *   `<idle>` task);
 * - **1 alone**: the share of the window in which exactly one pipeline task ran (the other
 *   core idle or someone else's), and which role that was (a hop working while every other
 *   stage waits for it is the wave);
 * - per hop: its main thread's runs per second (wake-ups), the median run and gap in µs, and
 *   requests per run (the batch a turn carries).
 *
 * Rounds alternate the paths; medians over rounds. Take the bench lock: it measures.
 *
 *   deno run -A bench/_tunnel_waves.ts [--trees a=DIR,b=DIR] [--rounds 3] [--seconds 4] [--window 1]
 * @module
 */

import {
  benchFlags,
  benchTrees,
  listeningPort,
  median,
  type Proc,
  procTree,
  spawn,
  spawnDeno,
  startHaproxyHops,
  startHelloNginx,
  startTunnelClient,
  stopAll,
  wrk,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 3, seconds: 4, window: 1 },
  strings: ["trees"],
});
const trees = benchTrees(flags.trees, `main=${new URL("..", import.meta.url).pathname}`, ":");
/**
 * A tree's extra part: `NAME=VALUE` pairs for both tunnel processes' environment, or for the
 * server's (`server`) or the client's only when the name starts with `server.` or `client.`.
 */
const envOf = (extra: string, side: "server" | "client"): Record<string, string> =>
  Object.fromEntries(
    extra.split(",").filter(Boolean).map((kv) => kv.split(/=(.*)/s, 2))
      .filter(([k]) => !/^(server|client)\./.test(k) || k.startsWith(side + "."))
      .map(([k, v]) => [k.replace(/^(server|client)\./, ""), v]),
  );

const nginx = await startHelloNginx("warren-twave-nginx-");
const procs: Proc[] = [nginx.proc];
const dir = Deno.makeTempDirSync({ prefix: "warren-twave-" });

/** One path under test: its public port and its two hops (front first). */
interface Path {
  name: string;
  port: number;
  host?: string;
  hops: Proc[];
}
const paths: Path[] = [];

/** What one round's sched window says about one path. */
interface Row {
  rps: number;
  cores: number;
  idle: number;
  alone: number;
  aloneBy: Record<string, number>;
  hopWakes: number[];
  hopRunUs: number[];
  hopGapUs: number[];
  perRun: number[];
  /** Share of each role's run time on CPU 0 (where it ran: placement). */
  cpu0: Record<string, number>;
}

/** Runs of every task in the window, as intervals, and what they say. */
function analyse(text: string, role: Map<number, string>, main: number[], rps: number): Row {
  const ev: { t: number; d: number; who: string }[] = [];
  let idleUs = 0, t0 = Infinity, t1 = -Infinity;
  const hopRuns: [number, number][][] = main.map(() => []);
  const on: Record<string, [number, number]> = {};
  for (const line of text.split("\n")) {
    const m = /^\s*([\d.]+)\s+\[(\d+)\]\s+(.*?)\[(\d+)(?:\/\d+)?\]\s+[\d.]+\s+[\d.]+\s+([\d.]+)/
      .exec(line);
    const idle = /^\s*([\d.]+)\s+\[(\d+)\]\s+<idle>\s+[\d.]+\s+[\d.]+\s+([\d.]+)/.exec(line);
    if (idle) {
      const end = Number(idle[1]) * 1e6, run = Number(idle[3]) * 1e3;
      idleUs += run;
      t0 = Math.min(t0, end - run), t1 = Math.max(t1, end);
      continue;
    }
    if (!m) continue;
    const end = Number(m[1]) * 1e6, run = Number(m[5]) * 1e3, tid = Number(m[4]);
    t0 = Math.min(t0, end - run), t1 = Math.max(t1, end);
    const who = role.get(tid);
    if (!who) continue;
    const o = on[who] ??= [0, 0];
    o[Number(m[2]) === 0 ? 0 : 1] += run;
    ev.push({ t: end - run, d: +1, who }, { t: end, d: -1, who });
    const h = main.indexOf(tid);
    if (h >= 0) hopRuns[h].push([end - run, end]);
  }
  const span = t1 - t0;
  ev.sort((a, b) => a.t - b.t || a.d - b.d);
  const running = new Map<string, number>();
  let n = 0, last = t0, busy = 0, alone = 0;
  const aloneBy: Record<string, number> = {};
  for (const e of ev) {
    const dt = e.t - last;
    busy += n * dt;
    if (n === 1) {
      alone += dt;
      for (const [w, c] of running) if (c > 0) aloneBy[w] = (aloneBy[w] ?? 0) + dt;
    }
    last = e.t;
    n += e.d;
    running.set(e.who, (running.get(e.who) ?? 0) + e.d);
  }
  const sec = span / 1e6;
  for (const k of Object.keys(aloneBy)) aloneBy[k] /= span;
  const gaps = (runs: [number, number][]) => {
    runs.sort((a, b) => a[0] - b[0]);
    return runs.slice(1).map((x, k) => x[0] - runs[k][1]);
  };
  return {
    rps,
    cores: busy / span,
    idle: idleUs / span,
    alone: alone / span,
    aloneBy,
    hopWakes: hopRuns.map((x) => x.length / sec),
    hopRunUs: hopRuns.map((x) => median(x.map(([a, b]) => b - a))),
    hopGapUs: hopRuns.map((x) => median(gaps(x))),
    perRun: hopRuns.map((x) => rps / (x.length / sec)),
    cpu0: Object.fromEntries(Object.entries(on).map(([k, [a, b]]) => [k, a / (a + b)])),
  };
}

try {
  const hap = await startHaproxyHops(dir, nginx.port);
  procs.push(...hap.hops);
  paths.push({ name: "haproxy x2", port: hap.port, hops: hap.hops });

  const floorServer = spawnDeno(new URL("./floor_mux.ts", import.meta.url).pathname, [], {
    env: { BENCH_MODE: "tunnel-server" },
  });
  procs.push(floorServer);
  const fl = JSON.parse(await floorServer.waitFor(/^\{"port"/)) as {
    port: number;
    tunnel: number;
  };
  const floorClient = spawnDeno(new URL("./floor_mux.ts", import.meta.url).pathname, [], {
    env: {
      BENCH_MODE: "tunnel-client",
      BENCH_SERVER: `127.0.0.1:${fl.tunnel}`,
      BENCH_TARGET: `127.0.0.1:${nginx.port}`,
    },
  });
  procs.push(floorClient);
  paths.push({ name: "mux floor", port: fl.port, hops: [floorServer, floorClient] });

  for (const t of trees) {
    const id = `twave-${t.name}-${crypto.randomUUID()}`;
    const server = spawnDeno(`${t.dir}/services/tunnel-server.ts`, [
      "--listen",
      "127.0.0.1:0",
      "--host",
      "v.test=env:TWAVE_ID",
      "--log-level",
      "info",
    ], { env: { ...envOf(t.extra, "server"), TWAVE_ID: id } });
    procs.push(server);
    const port = await listeningPort(server, "http");
    const client = await startTunnelClient(t.dir, port, nginx.port, id, procs, {
      env: envOf(t.extra, "client"),
    });
    paths.push({ name: `tunnel (${t.name})`, port, host: "v.test", hops: [server, client] });
  }

  /** Thread ids of `pid`'s process tree. */
  const tids = (pid: number): number[] =>
    procTree(pid).flatMap((p) => {
      try {
        return [...Deno.readDirSync(`/proc/${p}/task`)].map((e) => Number(e.name));
      } catch {
        return [];
      }
    });

  const rows = new Map<string, Row[]>(paths.map((p) => [p.name, []]));

  for (let r = 0; r < flags.rounds; r++) {
    for (let i = 0; i < paths.length; i++) {
      const p = paths[(i + r) % paths.length];
      await wrk(`http://127.0.0.1:${p.port}/hello`, { seconds: 1, host: p.host }); // warm
      const url = `http://127.0.0.1:${p.port}/hello`;
      const running = wrk(url, { seconds: flags.seconds, host: p.host });
      await new Promise((res) => setTimeout(res, 1000));
      // wrk is this process's child: its pid is the newest "wrk" child of ours.
      const wrkPid = procTree(Deno.pid).find((q) => {
        try {
          return Deno.readTextFileSync(`/proc/${q}/comm`).trim() === "wrk";
        } catch {
          return false;
        }
      });
      const role = new Map<number, string>();
      for (const t of wrkPid ? tids(wrkPid) : []) role.set(t, "wrk");
      for (const t of tids(nginx.proc.child.pid)) role.set(t, "app");
      p.hops.forEach((h, k) => {
        for (const t of tids(h.child.pid)) role.set(t, `hop${k}`);
      });
      const main = p.hops.map((h) => h.child.pid);
      const data = `${dir}/sched-${r}-${i}.data`;
      await spawn("perf", [
        "sched",
        "record",
        "-a",
        "-o",
        data,
        "--",
        "sleep",
        String(flags.window),
      ], { output: "discard" }).child.status;
      const res = await running;
      const out = new Deno.Command("perf", {
        args: ["sched", "timehist", "-i", data],
        stdout: "piped",
        stderr: "null",
      }).outputSync();
      Deno.removeSync(data);
      rows.get(p.name)!.push(analyse(new TextDecoder().decode(out.stdout), role, main, res.rps));
    }
  }

  const f = (x: number, d = 0) => x.toFixed(d);
  const hapRows = rows.get("haproxy x2")!;
  const ratios = (rs: Row[]) => rs.map((x, k) => x.rps / hapRows[k].rps);
  console.log(
    `\n| path | rps | x hap2 (same round) | cores (pipeline) | idle cores | 1 alone (by role) | hop runs/s | run µs (p50) | gap µs (p50) | req/run |`,
  );
  console.log("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |");
  for (const [name, rs] of rows) {
    const med = (g: (x: Row) => number) => median(rs.map(g));
    const roles = ["wrk", "hop0", "hop1", "app"].map((k) =>
      `${k} ${f(100 * med((x) => x.aloneBy[k] ?? 0))}`
    ).join(", ");
    const pair = (g: (x: Row, k: number) => number, d = 0) =>
      `${f(med((x) => g(x, 0)), d)} / ${f(med((x) => g(x, 1)), d)}`;
    console.log(
      `| ${name} | ${f(med((x) => x.rps))} | ${f(median(ratios(rs)), 2)} | ${
        f(med((x) => x.cores), 2)
      } | ${f(med((x) => x.idle), 2)} | ${f(100 * med((x) => x.alone))} % (${roles}) | ${
        pair((x, k) => x.hopWakes[k])
      } | ${pair((x, k) => x.hopRunUs[k])} | ${pair((x, k) => x.hopGapUs[k])} | ${
        pair((x, k) => x.perRun[k], 1)
      } |`,
    );
  }
  console.log(
    "\nper round: rps, x hap2, 1 alone %, cores, share on CPU 0 of wrk / hop0 / hop1 / app",
  );
  for (const [name, rs] of rows) {
    const line = rs.map((x, k) =>
      `${f(x.rps)} ${f(x.rps / hapRows[k].rps, 2)} ${f(100 * x.alone)}% ${f(x.cores, 2)} [${
        ["wrk", "hop0", "hop1", "app"].map((w) => f(100 * (x.cpu0[w] ?? NaN))).join("/")
      }]`
    );
    console.log(`${name}: ${line.join(";  ")}`);
  }
  console.log(
    `\nrounds ${flags.rounds}, wrk ${flags.seconds} s, sched window ${flags.window} s; ` +
      `x hap2 per round: ${
        [...rows].map(([n, rs]) => `${n}: ${ratios(rs).map((x) => f(x, 2)).join(" ")}`).join("; ")
      }; load ${Deno.loadavg().map((x) => x.toFixed(1)).join(" ")}`,
  );
} finally {
  await stopAll(procs);
  Deno.removeSync(nginx.dir, { recursive: true });
  Deno.removeSync(dir, { recursive: true });
}
