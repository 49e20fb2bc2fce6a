/**
 * `deno run -A bench/depot_mode.ts`: depot's two tunnel transports side by side in one run, for
 * the choice of depot-local's default: one TCP tunnel connection per SOCKS connection ("plain")
 * against one yamux session carrying a stream per request ("mux"). Two depot pairs (server +
 * local, separate processes) run at once; every measurement alternates them, `--rounds` times
 * (default 3), medians printed. What it measures (bench/depot.ts has the rates beside ssh -R):
 *
 * - set-up: `--seq` (default 300) sequential SOCKS connections with a small exchange (ms each),
 *   and `--requests` (default 3000) of them by 32 workers (req/s), with the CPU microseconds
 *   per connection of each process;
 * - bulk: one download of `--bulk` MiB (default 256), and four at once of `--bulk`/4 each: the
 *   aggregate MB/s and each stream's share (slowest / fastest stream's MB/s: fairness);
 * - head-of-line: `--small` (default 200) sequential small exchanges (a new SOCKS connection
 *   each: connect, 8-byte request, 1 KiB answer) alone, then while one download runs through
 *   the same exit, then while one SOCKS client requested a large download and reads nothing;
 *   p50 / p99 ms, and the download's MB/s meanwhile;
 * - a rate-limited tunnel leg (`--mbit`, default 50; skipped without root or with `--mbit 0`):
 *   depot-local and its targets in a network namespace joined to the server's by a veth pair
 *   shaped both ways with `tc tbf` (netem does not work here; 20 ms queue); the SOCKS client
 *   and depot-server on loopback.
 *   A `--limited` MiB download (default 16) alone, and 20 small exchanges' p50 / max while it
 *   runs; with `--tunnel` also through a TCP tunnel (tunnel-server here, tunnel-client and the
 *   target in the namespace: one lib/mux session as depot `--mux`, printed as its own column);
 * - memory: RSS of both processes with `--idle` (default 1000) SOCKS connections held open and
 *   silent, against before (KiB per connection).
 *
 * `--plain-args=...` / `--mux-args=...` are the depot-local flags of each mode (default none
 * and `--mux`: plain is depot-local's default); the run checks each local's `/status`
 * transport. `--no-rate`, `--no-bulk`, `--no-hol`, `--no-idle` skip a part, `--mbit 0` the
 * shaped one. Not a test: numbers are as measured on a shared machine.
 */

import { closeQuietly, sleep, writeAll } from "../lib/net/mod.ts";
import {
  benchFlags,
  concurrentRps,
  cpuPerConn,
  depotServerArgs,
  downloadMBps,
  fixed,
  formatTable,
  freePort,
  lengthHeader,
  listeningPort,
  median,
  MiB,
  type Proc,
  procCpuSeconds,
  procStatusKiB,
  roundOrder,
  type Route,
  sequentialMs,
  servicePath,
  smallBuffer,
  smallExchange,
  socksRoute,
  spawn,
  spawnDeno,
  startLengthSource,
  stopAll,
  tcpRoute,
  waitPort,
  waitUntil,
} from "./_util.ts";
import { sh, shapedNamespace } from "../tests/_netns.ts";

const flags = benchFlags({
  numbers: {
    rounds: 3,
    seq: 300,
    requests: 3000,
    bulk: 256,
    small: 200,
    mbit: 50,
    limited: 16,
    idle: 1000,
  },
  booleans: ["no-rate", "no-bulk", "no-hol", "no-idle", "tunnel"],
  strings: ["plain-args", "mux-args"],
});
const words = (s: string | undefined, fallback: string[]): string[] =>
  s === undefined ? fallback : s.split(" ").filter(Boolean);
const modes = [
  { name: "plain", args: words(flags["plain-args"], []) },
  { name: "mux", args: words(flags["mux-args"], ["--mux"]) },
] as const;

const procs: Proc[] = [];
const token = crypto.randomUUID();

/** One depot pair: its SOCKS port, status port and both processes. */
interface Pair {
  name: string;
  socks: number;
  status: number;
  server: Proc;
  local: Proc;
}

/** depot-server (listeners at `host` for control and tunnel) and a depot-local of `mode`. */
async function startPair(
  mode: (typeof modes)[number],
  opts: { host?: string; netns?: string } = {},
): Promise<Pair> {
  const p = { control: freePort(), socks: freePort(), tunnel: freePort(), status: freePort() };
  const args = depotServerArgs(p);
  const host = opts.host ?? "127.0.0.1";
  if (host !== "127.0.0.1") {
    args[args.indexOf(`127.0.0.1:${p.control}`)] = `${host}:${p.control}`;
    args[args.indexOf(`127.0.0.1:${p.tunnel}`)] = `${host}:${p.tunnel}`;
  }
  const server = spawnDeno(servicePath("depot-server.ts"), args, {
    env: { DEPOT_TOKEN: token },
    name: `server ${mode.name}`,
  });
  procs.push(server);
  await waitPort(p.status, `server ${mode.name}`);
  const localStatus = freePort();
  const localArgs = [
    "run",
    "-A",
    servicePath("depot-local.ts"),
    ...["--log-level", "warn", "--server", `${host}:${p.control}`, ...mode.args],
    ...["--status", `127.0.0.1:${localStatus}`],
  ];
  const local = opts.netns
    ? spawn("ip", ["netns", "exec", opts.netns, Deno.execPath(), ...localArgs], {
      env: { DEPOT_TOKEN: token },
      name: `local ${mode.name}`,
    })
    : spawn(Deno.execPath(), localArgs, {
      env: { DEPOT_TOKEN: token },
      name: `local ${mode.name}`,
    });
  procs.push(local);
  await waitUntil(`exit of ${mode.name}`, async () => {
    const st = await (await fetch(`http://127.0.0.1:${p.status}/status`)).json() as {
      exits: unknown[];
    };
    return st.exits.length === 1;
  });
  // The local's status runs in the namespace, if any: ask it through `ip netns exec curl`.
  const url = `http://127.0.0.1:${localStatus}/status`;
  let transport: string | null = null;
  await waitUntil(`transport of ${mode.name}`, async () => {
    const text = opts.netns
      ? await sh("ip", ["netns", "exec", opts.netns, "curl", "-s", url])
      : await (await fetch(url)).text();
    transport = (JSON.parse(text) as { transport: string | null }).transport;
    return transport !== null;
  });
  const want = mode.name === "mux" ? "mux" : "tcp";
  if (transport !== want) {
    throw new Error(`${mode.name} pair's local uses ${transport}: check --${mode.name}-args`);
  }
  return { name: mode.name, socks: p.socks, status: p.status, server, local };
}

/**
 * `--tunnel`: tunnel-server here (its client port on `host`, 198.18.77.1) and tunnel-client in
 * `netns` with a TCP tunnel to `target` there: one lib/mux session carries every connection
 * to the public port, as depot `--mux` does, the client sending the downloads.
 */
async function startShapedTunnel(netns: string, target: number): Promise<{
  name: string;
  route: Route;
}> {
  const identifier = crypto.randomUUID();
  const pub = freePort();
  const server = spawnDeno(servicePath("tunnel-server.ts"), [
    ...["--listen", "198.18.77.1:0", "--host", "t.test=env:BENCH_ID"],
    ...["--tcp-ports", `${pub}-${pub}`, "--log-level", "info"],
  ], { env: { BENCH_ID: identifier }, name: "tunnel-server" });
  procs.push(server);
  const srvPort = await listeningPort(server, "http");
  const client = spawn("ip", [
    ...["netns", "exec", netns, Deno.execPath(), "run", "-A", servicePath("tunnel-client.ts")],
    ...["--server", `http://198.18.77.1:${srvPort}`, "--local", `127.0.0.1:${target}`],
    ...["--tcp", `${pub}=127.0.0.1:${target}`, "--log-level", "info"],
  ], { env: { TUNNEL_IDENTIFIER: identifier }, name: "tunnel-client" });
  procs.push(client);
  await client.waitFor(/msg="connected"/);
  await waitPort(pub, "tunnel's public port");
  return { name: "tunnel", route: tcpRoute("tunnel", pub) };
}

/** A download of `bytes` that runs until `stop()`; MB/s while it ran. */
function backgroundDownload(route: Route, bytes: number) {
  let stopped = false;
  let got = 0;
  const t0 = performance.now();
  const done = (async () => {
    const c = await route.open();
    try {
      await writeAll(c, lengthHeader(bytes));
      const buf = new Uint8Array(256 * 1024);
      while (!stopped) {
        const n = await c.read(buf);
        if (n === null) break;
        got += n;
      }
    } finally {
      closeQuietly(c);
    }
  })();
  return {
    async stop(): Promise<number> {
      stopped = true;
      const ms = performance.now() - t0;
      await done.catch(() => {});
      return got / 1e6 / (ms / 1000);
    },
  };
}

/** A SOCKS client that asks for `bytes` and reads nothing; `close()` ends it. */
async function stalledClient(route: Route, bytes: number): Promise<{ close(): void }> {
  const c = await route.open();
  await writeAll(c, lengthHeader(bytes));
  return { close: () => closeQuietly(c) };
}

/** `n` sequential small exchanges through `route`: each one's ms. */
async function smallLatencies(route: Route, n: number): Promise<number[]> {
  const buf = smallBuffer();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await smallExchange(route, buf);
    out.push(performance.now() - t0);
  }
  return out;
}

/** The `q` quantile (0..1) of `xs`. */
function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** Four downloads of `bytes` each at once: aggregate MB/s and slowest / fastest stream. */
async function fourAtOnce(route: Route, bytes: number): Promise<{ agg: number; share: number }> {
  const t0 = performance.now();
  const rates = await Promise.all([0, 1, 2, 3].map(() => downloadMBps(route, bytes)));
  const agg = 4 * bytes / 1e6 / ((performance.now() - t0) / 1000);
  return { agg, share: Math.min(...rates) / Math.max(...rates) };
}

/** Results by measurement name, by mode, one value per round. */
const results = new Map<string, Map<string, number[]>>();
function record(what: string, mode: string, v: number): void {
  const byMode = results.get(what) ?? new Map<string, number[]>();
  results.set(what, byMode);
  const list = byMode.get(mode) ?? [];
  byMode.set(mode, list);
  list.push(v);
}

/** Run `measure` for each pair, `flags.rounds` times, pairs interleaved. */
async function eachRound<P>(pairs: P[], measure: (p: P) => Promise<void>): Promise<void> {
  for (let r = 1; r <= flags.rounds; r++) {
    for (const [, p] of roundOrder(pairs, r)) await measure(p);
  }
}

const started = new Date();
const load0 = Deno.loadavg()[0];
let netns: string | undefined;
let removeNetns: (() => Promise<void>) | undefined;
try {
  const source = await startLengthSource();
  procs.push(source.proc);
  const pairs = [await startPair(modes[0]), await startPair(modes[1])];
  const route = (p: Pair) => socksRoute(p.name, p.socks, source.port);
  for (const p of pairs) await smallLatencies(route(p), 50); // warm up

  if (!flags["no-rate"]) {
    await eachRound(pairs, async (p) => {
      record(
        "set-up + small exchange, sequential ms",
        p.name,
        await sequentialMs(route(p), flags.seq),
      );
      const { result, usPerConn } = await cpuPerConn(
        [p.server, p.local],
        flags.requests,
        () => concurrentRps(route(p), flags.requests, 32),
      );
      record("small exchanges x32 req/s", p.name, result);
      record("x32: CPU us/conn server", p.name, usPerConn[0]);
      record("x32: CPU us/conn local", p.name, usPerConn[1]);
    });
  }

  if (!flags["no-bulk"]) {
    const bytes = flags.bulk * MiB;
    await eachRound(pairs, async (p) => {
      const cpu0 = procCpuSeconds([p.server, p.local]);
      record("bulk, 1 download MB/s", p.name, await downloadMBps(route(p), bytes));
      const cpu = procCpuSeconds([p.server, p.local]) - cpu0;
      record("bulk, 1 download: CPU s/GiB (both)", p.name, cpu / (bytes / (1 << 30)));
      const four = await fourAtOnce(route(p), bytes / 4);
      record("bulk, 4 at once: aggregate MB/s", p.name, four.agg);
      record("bulk, 4 at once: slowest/fastest", p.name, four.share);
    });
  }

  if (!flags["no-hol"]) {
    await eachRound(pairs, async (p) => {
      const alone = await smallLatencies(route(p), flags.small);
      record("small alone: p50 ms", p.name, quantile(alone, 0.5));
      record("small alone: p99 ms", p.name, quantile(alone, 0.99));
      const bulk = backgroundDownload(route(p), 2 ** 40);
      await sleep(300);
      const busy = await smallLatencies(route(p), flags.small);
      record("small beside a download: p50 ms", p.name, quantile(busy, 0.5));
      record("small beside a download: p99 ms", p.name, quantile(busy, 0.99));
      record("the download meanwhile MB/s", p.name, await bulk.stop());
      const stalled = await stalledClient(route(p), 1 << 30);
      await sleep(300);
      const beside = await smallLatencies(route(p), flags.small);
      stalled.close();
      record("small beside a non-reading client: p50 ms", p.name, quantile(beside, 0.5));
      record("small beside a non-reading client: p99 ms", p.name, quantile(beside, 0.99));
    });
  }

  if (!flags["no-idle"]) {
    // One round: held connections are what is measured, not a rate.
    for (const p of pairs) {
      await sleep(500);
      const rss0 = [
        procStatusKiB(p.server.child.pid, "VmRSS"),
        procStatusKiB(p.local.child.pid, "VmRSS"),
      ];
      const held: Deno.Conn[] = [];
      let next = 0;
      await Promise.all(Array.from({ length: 32 }, async () => {
        while (next++ < flags.idle) held.push(await route(p).open() as Deno.Conn);
      }));
      await sleep(1_000);
      const rss1 = [
        procStatusKiB(p.server.child.pid, "VmRSS"),
        procStatusKiB(p.local.child.pid, "VmRSS"),
      ];
      for (const c of held) closeQuietly(c);
      record(`RSS MiB with ${flags.idle} idle: server`, p.name, rss1[0] / 1024);
      record(`RSS MiB with ${flags.idle} idle: local`, p.name, rss1[1] / 1024);
      record(
        "idle: KiB per connection (both)",
        p.name,
        (rss1[0] + rss1[1] - rss0[0] - rss0[1]) / flags.idle,
      );
      await sleep(1_000);
    }
  }

  if (flags.mbit > 0 && Deno.uid() === 0) {
    // The tunnel leg through a shaped veth: the local (and its target) in a namespace.
    const shaped = await shapedNamespace(
      `wdm${Deno.pid}`,
      "198.18.77.1",
      "198.18.77.2",
      flags.mbit,
    );
    netns = shaped.ns;
    removeNetns = shaped.destroy;
    const nsSource = spawn("ip", [
      "netns",
      "exec",
      netns,
      Deno.execPath(),
      "run",
      "-A",
      new URL("_source.ts", import.meta.url).pathname,
    ], { name: "ns source" });
    procs.push(nsSource);
    const nsPort = (JSON.parse(await nsSource.waitFor(/^\{"port"/)) as { port: number }).port;
    const limited: { name: string; route: Route }[] = [];
    for (const mode of modes) {
      const p = await startPair(mode, { host: "198.18.77.1", netns });
      limited.push({ name: p.name, route: socksRoute(p.name, p.socks, nsPort) });
    }
    if (flags.tunnel) limited.push(await startShapedTunnel(netns, nsPort));
    for (const p of limited) await smallLatencies(p.route, 20);
    await eachRound(limited, async (p) => {
      record(
        `${flags.mbit} Mbit: 1 download MB/s`,
        p.name,
        await downloadMBps(p.route, flags.limited * MiB),
      );
      const alone = await smallLatencies(p.route, 20);
      record(`${flags.mbit} Mbit: small alone p50 ms`, p.name, quantile(alone, 0.5));
      const bulk = backgroundDownload(p.route, 2 ** 40);
      await sleep(1_000);
      const busy = await smallLatencies(p.route, 20);
      record(`${flags.mbit} Mbit: small beside a download: p50 ms`, p.name, quantile(busy, 0.5));
      record(`${flags.mbit} Mbit: small beside a download: max ms`, p.name, quantile(busy, 1));
      record(`${flags.mbit} Mbit: the download meanwhile MB/s`, p.name, await bulk.stop());
      await sleep(500);
    });
  }
} finally {
  await stopAll(procs);
  await removeNetns?.();
}

const rows = [...results].map(([what, byMode]) => {
  const plain = median(byMode.get("plain") ?? []);
  const mux = median(byMode.get("mux") ?? []);
  const digits = Math.abs(plain) < 10 ? 2 : 0;
  const rounds = (m: string) => (byMode.get(m) ?? []).map((v) => fixed(v, digits)).join(" ");
  const tunnel = byMode.get("tunnel");
  return [
    what,
    fixed(plain, digits),
    fixed(mux, digits),
    fixed(mux / plain, 2),
    `${rounds("plain")} / ${rounds("mux")}`,
    ...(flags.tunnel
      ? [tunnel ? `${fixed(median(tunnel), digits)} (${rounds("tunnel")})` : ""]
      : []),
  ];
});
console.log(
  `depot plain vs mux, ${started.toISOString().slice(11, 16)}-${
    new Date().toISOString().slice(11, 16)
  } UTC, load ${load0.toFixed(1)} -> ${Deno.loadavg()[0].toFixed(1)}, medians of ${flags.rounds}\n`,
);
const heads = ["measure", "plain", "mux", "mux / plain", "rounds (plain / mux)"];
console.log(formatTable(flags.tunnel ? [...heads, "tunnel (rounds)"] : heads, rows));
