/**
 * `deno run -A bench/_start_weight.ts [--trees 'old=DIR,new=DIR'] [--rounds 5] [--only RE]
 * [--scripts]`: what each service carries once started (issue 20, "process weight"): depot-server
 * (with and without `--status`), depot-local, seaprox, tunnel-server and tunnel-client, each tree's
 * in turn, rounds interleaved. Per service and tree, medians over the rounds:
 *
 * - start-up: wall ms from spawn to its ready line (servers: the open-file line logged once
 *   listening; clients: `connected` to a peer of the same tree started before), CPU ms of the
 *   process by then (/proc), RSS then;
 * - weight: then two full GCs and V8's used heap (bench/_gc_probe.ts, preloaded, prints it on
 *   SIGUSR2): what every later full GC marks again, and the RSS after them;
 * - with `--scripts` (the same start under `--inspect`, which itself adds ~4 MB of heap: read
 *   the heap of a run without it), how many scripts V8 holds (`Debugger.scriptParsed`): the
 *   tree's own files, npm packages, and Deno's own `ext:`/`node:` modules.
 *
 * Each process is SIGTERMed before the next starts, so one start does not load the other's. The
 * probe is this checkout's, preloaded into each tree's services.
 * @module
 */

import {
  benchFlags,
  benchPath,
  benchTrees,
  fixed,
  freePort,
  median,
  type Proc,
  procCpuSeconds,
  procStatusKiB,
  spawnDeno,
  stopAll,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 5 },
  strings: ["trees", "only"],
  booleans: ["scripts"],
});
const trees = benchTrees(flags.trees, `new=${new URL("..", import.meta.url).pathname}`);
const only = flags.only ? new RegExp(flags.only) : undefined;
const env = {
  DEPOT_TOKEN: "weight-bench-token-0123456789abcdef",
  BENCH_TUNNEL_ID: "weight-id-1",
  TUNNEL_IDENTIFIER: "weight-id-1",
};
const serverReady = /msg="open-file limit"/;
const clientReady = /msg="connected"/;

/** A service start: its script, flags, ready line, and the peer it needs first (clients). */
interface Case {
  name: string;
  script: string;
  args: (peer: number) => string[];
  ready: RegExp;
  peer?: { script: string; args: string[]; port: number };
}

function cases(): Case[] {
  const control = freePort(), tunnelHttp = freePort();
  const depotServer = (status: boolean) => [
    "--control",
    "127.0.0.1:0",
    "--socks",
    "127.0.0.1:0",
    "--tunnel",
    "127.0.0.1:0",
    ...(status ? ["--status", "127.0.0.1:0"] : []),
  ];
  const all: Case[] = [
    {
      name: "depot-server",
      script: "depot-server.ts",
      args: () => depotServer(false),
      ready: serverReady,
    },
    {
      name: "depot-server --status",
      script: "depot-server.ts",
      args: () => depotServer(true),
      ready: serverReady,
    },
    {
      name: "depot-local",
      script: "depot-local.ts",
      args: (p) => ["--server", `127.0.0.1:${p}`],
      ready: clientReady,
      peer: {
        script: "depot-server.ts",
        args: [
          "--control",
          `127.0.0.1:${control}`,
          "--socks",
          "127.0.0.1:0",
          "--tunnel",
          "127.0.0.1:0",
        ],
        port: control,
      },
    },
    {
      name: "seaprox (static + socks5)",
      script: "seaprox.ts",
      args: () => [
        "--listen",
        "static://127.0.0.1:0?to=127.0.0.1:9",
        "--listen",
        "socks5://127.0.0.1:0",
      ],
      ready: serverReady,
    },
    {
      name: "tunnel-server",
      script: "tunnel-server.ts",
      args: () => ["--listen", "127.0.0.1:0", "--host", "raw.test=env:BENCH_TUNNEL_ID"],
      ready: serverReady,
    },
    {
      name: "tunnel-client",
      script: "tunnel-client.ts",
      args: (p) => ["--server", `http://127.0.0.1:${p}`, "--local", "127.0.0.1:9"],
      ready: clientReady,
      peer: {
        script: "tunnel-server.ts",
        args: ["--listen", `127.0.0.1:${tunnelHttp}`, "--host", "raw.test=env:BENCH_TUNNEL_ID"],
        port: tunnelHttp,
      },
    },
  ];
  return all.filter((c) => !only || only.test(c.name));
}

/** One start's figures. */
interface Start {
  wallMs: number;
  cpuMs: number;
  rssMB: number;
  heapMB: number;
  rssGcMB: number;
  scripts?: { own: number; npm: number; deno: number };
}

const denoArgs = ["--unstable-net"];

function start(dir: string, script: string, args: string[], denoFlags: string[] = []): Proc {
  return spawnDeno(`${dir}/services/${script}`, ["--log-level", "info", ...args], {
    env,
    denoFlags: [...denoArgs, ...denoFlags],
    name: script,
  });
}

async function measure(dir: string, c: Case): Promise<Start> {
  const peer = c.peer ? start(dir, c.peer.script, c.peer.args) : undefined;
  try {
    if (peer) await peer.waitFor(serverReady);
    const inspectPort = freePort();
    const t0 = performance.now();
    const p = start(dir, c.script, c.args(c.peer?.port ?? 0), [
      "--v8-flags=--expose-gc",
      "--preload",
      benchPath("_gc_probe.ts"),
      ...(flags.scripts ? [`--inspect=127.0.0.1:${inspectPort}`] : []),
    ]);
    try {
      await p.waitFor(c.ready);
      const wallMs = performance.now() - t0;
      const cpuMs = procCpuSeconds([p]) * 1e3;
      const rssMB = procStatusKiB(p.child.pid, "VmRSS") * 1024 / 1e6;
      const scripts = flags.scripts ? await countScripts(dir, inspectPort) : undefined;
      p.child.kill("SIGUSR2");
      const probe = JSON.parse(await p.waitFor(/^\{"gcProbe"/)) as {
        gcProbe: { heapUsedMB: number; rssMB: number };
      };
      const { heapUsedMB: heapMB, rssMB: rssGcMB } = probe.gcProbe;
      return { wallMs, cpuMs, rssMB, heapMB, rssGcMB, scripts };
    } finally {
      await p.stop();
    }
  } finally {
    if (peer) await stopAll([peer]);
  }
}

/** The scripts V8 holds, by origin (a second inspector session with the debugger on). */
async function countScripts(dir: string, port: number): Promise<Start["scripts"]> {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
    webSocketDebuggerUrl: string;
  }[];
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
  const counts = { own: 0, npm: 0, deno: 0 };
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = fail;
  });
  const done = new Promise<void>((ok) => {
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data) as { id?: number; method?: string; params?: { url: string } };
      if (m.id === 1) ok(); // the answer comes after every scriptParsed event
      const url = m.params?.url ?? "";
      if (m.method !== "Debugger.scriptParsed" || url === "") return;
      if (url.includes("/node_modules/") || url.includes("/npm/")) counts.npm++;
      else if (url.startsWith(`file://${dir}/`)) counts.own++;
      else counts.deno++;
    };
  });
  ws.send(JSON.stringify({ id: 1, method: "Debugger.enable" }));
  await done;
  ws.close();
  return counts;
}

const results = new Map<string, Start[]>();
for (let round = 0; round < flags.rounds; round++) {
  const order = round % 2 === 0 ? trees : [...trees].reverse();
  for (const c of cases()) {
    for (const t of order) {
      const key = `${c.name}\u0000${t.name}`;
      const s = await measure(t.dir, c);
      results.set(key, [...(results.get(key) ?? []), s]);
    }
  }
  console.error(`round ${round + 1}/${flags.rounds} done (load ${Deno.loadavg()[0].toFixed(1)})`);
}

const med = (xs: Start[], f: (s: Start) => number) => median(xs.map(f));
const header = [
  "service",
  "tree",
  "heap after full GC MB",
  "RSS after GC MB",
  "start wall ms",
  "start CPU ms",
  "RSS at start MB",
  ...(flags.scripts ? ["scripts own/npm/deno"] : []),
];
const rows = [header];
for (const c of cases()) {
  for (const t of trees) {
    const xs = results.get(`${c.name}\u0000${t.name}`) ?? [];
    const sc = xs[0]?.scripts;
    rows.push([
      c.name,
      t.name,
      fixed(med(xs, (s) => s.heapMB), 2),
      fixed(med(xs, (s) => s.rssGcMB), 1),
      fixed(med(xs, (s) => s.wallMs)),
      fixed(med(xs, (s) => s.cpuMs)),
      fixed(med(xs, (s) => s.rssMB), 1),
      ...(sc ? [`${sc.own}/${sc.npm}/${sc.deno}`] : []),
    ]);
  }
}
const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
const line = (r: string[]) =>
  `| ${r.map((v, i) => i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i])).join(" | ")} |`;
console.log(line(rows[0]));
console.log(
  `| ${widths.map((w, i) => i < 2 ? "-".repeat(w) : "-".repeat(w - 1) + ":").join(" | ")} |`,
);
for (const r of rows.slice(1)) console.log(line(r));
