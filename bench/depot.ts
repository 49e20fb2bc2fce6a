/**
 * `deno run -A bench/depot.ts`: depot (depot-server + depot-local, the reverse SOCKS5 proxy)
 * side by side with direct TCP, a plain SOCKS5 proxy (microsocks) and OpenSSH's reverse
 * SOCKS (`ssh -R port` against a throwaway sshd), in one run:
 *
 * Reference rows: a plain lib/net relay process (one hop) and two chained (two hops, depot's
 * data path without SOCKS and control), to show what the relays themselves cost here; the
 * Deno floor for SOCKS5 (bench/floor_proxy.ts, one process) and for a reverse exit
 * (bench/floor_reverse.ts: plain depot's work per connection in two processes, nothing else;
 * again with each spare announcing itself with a key before it is handed out, as depot's
 * standby spares must) and for depot --mux (bench/floor_mux.ts: the same over one
 * multiplexed connection).
 * - bulk: one connection downloads `--bytes` (default 512 MiB), then one uploads as much,
 *   `--runs` times (default 2, best kept); MB/s and ratio to direct;
 * - set-up: `--seq` (default 500) sequential connect + 8-byte request + 1 KiB answer (ms each)
 *   and `--requests` (default 2000) of them with `--concurrency` (default 32) workers (req/s),
 *   `--rounds` times (default 3) with the paths interleaved, best kept; beside them the CPU
 *   microseconds per connection of each process of the path during the concurrent phase
 *   (whole process trees: sshd forks per session), median of the rounds;
 * - WAN set-up: the exit side (depot-local, or the `ssh -R` client) reaches the server side
 *   through a delay proxy adding `--rtt`/2 ms each way (default RTT 40 ms; netem is not
 *   available here), and `--wan-conns` (default 20) sequential SOCKS set-ups are timed, in
 *   RTTs: depot with spare tunnels (default), without (`--spare-tunnels 0`), `--mux`, ssh -R.
 *
 * - `--phases`: each round also times `--seq` sequential set-ups of every SOCKS path phase by
 *   phase (TCP connect, greeting → method reply, CONNECT → reply, request → first answer
 *   byte, first byte → EOF; medians in µs), to show where a path's set-up time goes: how many
 *   hops each phase crosses (`ssh -R` answers the greeting at the exit, depot at the server)
 *   and what each hop costs.
 *
 * - `--box`: the whole box during each concurrent set-up phase (see {@linkcode printBox}).
 *
 * `--small-only` skips the bulk runs, `--bulk-only` the set-up phases (the paths' bulk transfers
 * then run seconds apart, so same-round ratios see the same load); `--old DIR` adds depot and
 * depot --mux of another checkout (an old tree: its services/) as "(old)" rows, for a
 * before/after in one run;
 * `--only REGEX` keeps the paths whose name matches (direct TCP always).
 *
 * The source is a Deno raw TCP server in its own process (bench/_source.ts):
 * read an 8-byte big-endian length n; if its top bit is clear send n bytes and FIN, if set
 * read n bytes from the client, then answer the 8-byte count and FIN. Every proxy runs in its
 * own process; the client is this process. Not a test: numbers are as measured on a shared
 * machine.
 */

import { closeQuietly, dial, sleep, writeAll } from "../lib/net/mod.ts";
import { AddrType } from "../lib/socks5/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import {
  benchFlags,
  benchPath,
  type BoxRun,
  boxRun,
  boxSample,
  concurrentRps,
  cpuPerConn,
  type DepotPorts,
  depotServerArgs,
  downloadMBps,
  fixed,
  formatTable,
  freePort,
  lengthHeader,
  median,
  type Proc,
  ratio,
  roundOrder,
  type Route,
  sequentialMs,
  servicePath,
  smallAnswerBytes,
  smallBuffer,
  smallExchange,
  socksRoute,
  spawn,
  spawnDeno,
  type SshReverse,
  startFloor,
  startLengthSource,
  startRelay,
  startSshReverse,
  stopAll,
  tcpRoute,
  uploadMBps,
  waitPort,
  waitUntil,
} from "./_util.ts";

// ---------------------------------------------------------------- delay role
// A TCP forwarder adding BENCH_DELAY_MS to every chunk in both directions (order kept):
// emulated one-way latency between the exit side and the server side. The kernel completes
// the client's TCP handshake with us at once, so the handshake's round trip is emulated too:
// nothing the client sends reaches the far side before 1.5 RTT after it connected, as on a
// real link (SYN, SYN-ACK, then data).
if (Deno.env.get("BENCH_ROLE") === "delay") {
  const delayMs = Number(Deno.env.get("BENCH_DELAY_MS"));
  const target = Number(Deno.env.get("BENCH_TARGET"));
  const l = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.env.get("BENCH_PORT")) });
  const pipeDelayed = async (src: Deno.Conn, dst: Deno.Conn, notBefore = 0) => {
    const queue: { at: number; data: Uint8Array | null }[] = [];
    let wake: (() => void) | undefined;
    const writer = (async () => {
      while (true) {
        const item = queue[0];
        if (!item) {
          await new Promise<void>((r) => wake = r);
          continue;
        }
        const wait = item.at - performance.now();
        if (wait > 0) await sleep(wait);
        queue.shift();
        if (item.data === null) return await dst.closeWrite();
        await writeAll(dst, item.data);
      }
    })();
    const buf = new Uint8Array(256 * 1024);
    while (true) {
      const n = await src.read(buf);
      const at = Math.max(performance.now() + delayMs, notBefore);
      queue.push({ at, data: n === null ? null : buf.slice(0, n) });
      wake?.();
      if (n === null) break;
    }
    await writer;
  };
  for await (const c of l) {
    (async () => {
      let up: Deno.Conn | undefined;
      try {
        up = await Deno.connect({ hostname: "127.0.0.1", port: target });
        c.setNoDelay(true);
        (up as Deno.TcpConn).setNoDelay(true);
        const handshakeDone = performance.now() + 3 * delayMs; // accept + 1.5 RTT
        await Promise.all([pipeDelayed(c, up, handshakeDone), pipeDelayed(up, c)]);
      } catch {
        // One side vanished: both are closed below.
      } finally {
        closeQuietly(c);
        closeQuietly(up);
      }
    })();
  }
  await new Promise(() => {});
}

// ---------------------------------------------------------------- helpers
const flags = benchFlags({
  numbers: {
    bytes: 512 << 20,
    seq: 500,
    requests: 2000,
    concurrency: 32,
    runs: 2,
    rtt: 40,
    "wan-conns": 20,
    rounds: 3,
  },
  booleans: ["only-wan", "small-only", "bulk-only", "phases", "box"],
  strings: ["old", "only"],
});
const bulkBytes = flags.bytes;
const seqCount = flags.seq;
const reqCount = flags.requests;
const concurrency = flags.concurrency;
/** Bulk runs per direction; the best is reported (the machine is shared and noisy). */
const bulkRuns = flags.runs;
const wanRttMs = flags.rtt;
const wanConns = flags["wan-conns"];
const rounds = flags.rounds;
/** Skip the loopback section (bulk and set-up) and measure only the WAN set-up. */
const onlyWan = flags["only-wan"];

const procs: Proc[] = [];
/** sshd + ssh -R pairs, stopped (and their key directories removed) at the end. */
const sshPeers: SshReverse[] = [];
/**
 * A child whose output is discarded: sshd's per-connection children would hold a watched
 * pipe open past the stop.
 */
function start(cmd: string, args: string[], env?: Record<string, string>): Proc {
  const p = spawn(cmd, args, { env, output: "discard" });
  procs.push(p);
  return p;
}

/** `deno run -A script ...args` as {@linkcode start} starts it. */
function startDeno(script: string, args: string[], env?: Record<string, string>): Proc {
  const p = spawnDeno(script, args, { env, output: "discard" });
  procs.push(p);
  return p;
}

/** A delay proxy (this file, BENCH_ROLE=delay) in front of `target`; returns its port. */
async function startDelay(target: number, delayMs: number): Promise<number> {
  const port = freePort();
  startDeno(self, [], {
    BENCH_ROLE: "delay",
    BENCH_PORT: String(port),
    BENCH_TARGET: String(target),
    BENCH_DELAY_MS: String(delayMs),
  });
  await waitPort(port, "delay proxy");
  return port;
}

/** Mean ms of `n` sequential SOCKS set-ups (TCP connect to success reply) via `port`. */
async function setupMs(port: number, dest: number, n: number, username?: string): Promise<number> {
  let total = 0;
  for (let i = 0; i < n + 1; i++) {
    const t0 = performance.now();
    const c = await dial("127.0.0.1", port);
    try {
      await socks5Connect(c, { host: "127.0.0.1", port: dest }, { username, password: "" });
    } finally {
      closeQuietly(c);
    }
    if (i > 0) total += performance.now() - t0; // the first one warms up
  }
  return total / n;
}

/** The phases of one SOCKS set-up `--phases` times, in order (see {@linkcode phasedSetup}). */
const phaseNames = [
  "TCP connect",
  "greeting → method",
  "CONNECT → reply",
  "request → 1st byte",
  "1st byte → EOF",
  "total",
] as const;

/** Read from `c` into `buf` until it holds `n` bytes (`have` there already); the new count. */
async function readUntil(c: Deno.Conn, buf: Uint8Array, have: number, n: number): Promise<number> {
  while (have < n) {
    const got = await c.read(buf.subarray(have));
    if (got === null) throw new Error(`EOF after ${have} of ${n} bytes`);
    have += got;
  }
  return have;
}

/**
 * One SOCKS5 set-up through `port` to 127.0.0.1:`dest` and one small exchange, timed phase
 * by phase (ms, in {@linkcode phaseNames}' order). The client's own steps are bare reads and
 * writes, the same for every path: what differs between paths is the proxy's side.
 */
async function phasedSetup(port: number, dest: number, buf: Uint8Array): Promise<number[]> {
  const t0 = performance.now();
  const c = await dial("127.0.0.1", port);
  try {
    const t1 = performance.now();
    await writeAll(c, greeting);
    await readUntil(c, buf, 0, 2);
    if (buf[0] !== 5 || buf[1] !== 0) throw new Error(`method reply ${buf[0]} ${buf[1]}`);
    const t2 = performance.now();
    await writeAll(c, Uint8Array.of(5, 1, 0, AddrType.ipv4, 127, 0, 0, 1, dest >> 8, dest & 255));
    let have = await readUntil(c, buf, 0, 5);
    if (buf[1] !== 0) throw new Error(`CONNECT refused: reply ${buf[1]}`);
    const addrBytes = buf[3] === AddrType.ipv4 ? 4 : buf[3] === AddrType.ipv6 ? 16 : 1 + buf[4];
    const replyBytes = 4 + addrBytes + 2;
    have = await readUntil(c, buf, have, replyBytes);
    const t3 = performance.now();
    await writeAll(c, lengthHeader(smallAnswerBytes));
    let got = have - replyBytes, first = got > 0 ? t3 : 0;
    for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
      if (first === 0) first = performance.now();
      got += n;
    }
    const t5 = performance.now();
    if (got !== smallAnswerBytes) throw new Error(`short answer ${got}`);
    return [t1 - t0, t2 - t1, t3 - t2, first - t3, t5 - first, t5 - t0];
  } finally {
    closeQuietly(c);
  }
}
const greeting = Uint8Array.of(5, 1, 0);

/** `services/<name>` of this checkout, or with `old` of `--old`'s. */
function service(name: string, old = false): string {
  return old ? `${flags.old}/services/${name}` : servicePath(name);
}

/** depot-server with its four listeners on the given ports. */
function startDepotServer(
  p: DepotPorts,
  old = false,
): Proc {
  return startDeno(service("depot-server.ts", old), depotServerArgs(p), env);
}

/** depot-local with `args` (`--server` and the rest). */
function startDepotLocal(args: string[], old = false): Proc {
  return startDeno(service("depot-local.ts", old), [
    "--log-level",
    "warn",
    ...args,
  ], env);
}

/** Wait until depot-server's status page on `statusPort` lists `exits` exits. */
async function waitExits(what: string, statusPort: number, exits: number): Promise<void> {
  await waitUntil(what, async () => {
    const st = await (await fetch(`http://127.0.0.1:${statusPort}/status`)).json() as {
      exits: unknown[];
    };
    return st.exits.length === exits;
  });
}

/**
 * bench/floor_reverse.ts's two processes (plain depot's work per connection and nothing else):
 * the server's SOCKS5 port, and both processes.
 */
async function startReverseFloor(standby = false): Promise<{ port: number; procs: Proc[] }> {
  const announce = standby ? "1" : "0";
  const server = spawnDeno(benchPath("floor_reverse.ts"), [], {
    env: { BENCH_MODE: "server", BENCH_STANDBY: announce },
  });
  procs.push(server);
  const { port, tunnel } = JSON.parse(await server.waitFor(/^\{"port"/)) as {
    port: number;
    tunnel: number;
  };
  const local = startDeno(benchPath("floor_reverse.ts"), [], {
    BENCH_MODE: "local",
    BENCH_SERVER: `127.0.0.1:${tunnel}`,
    BENCH_STANDBY: announce,
  });
  return { port, procs: [server, local] };
}

/**
 * bench/floor_mux.ts's depot modes (depot --mux's work per connection over one mux
 * connection, nothing else): the server's SOCKS5 port, and both processes.
 */
async function startMuxFloor(): Promise<{ port: number; procs: Proc[] }> {
  const server = spawnDeno(benchPath("floor_mux.ts"), [], { env: { BENCH_MODE: "depot-server" } });
  procs.push(server);
  const { port, tunnel } = JSON.parse(await server.waitFor(/^\{"port"/)) as {
    port: number;
    tunnel: number;
  };
  const local = startDeno(benchPath("floor_mux.ts"), [], {
    BENCH_MODE: "depot-local",
    BENCH_SERVER: `127.0.0.1:${tunnel}`,
  });
  return { port, procs: [server, local] };
}

/** A throwaway sshd plus `ssh -N -R port` (OpenSSH's reverse dynamic SOCKS). */
async function startSshReverseSocks(socksPort: number, delayMs = 0): Promise<Proc[]> {
  const ssh = await startSshReverse(
    `127.0.0.1:${socksPort}`,
    socksPort,
    delayMs > 0 ? (sshdPort) => startDelay(sshdPort, delayMs) : undefined,
  );
  sshPeers.push(ssh);
  return ssh.procs;
}

// ---------------------------------------------------------------- main
const self = new URL(import.meta.url).pathname;
const srcPort = freePort();
const ports = {
  control: freePort(),
  socks: freePort(),
  tunnel: freePort(),
  status: freePort(),
  muxControl: freePort(),
  muxSocks: freePort(),
  muxTunnel: freePort(),
  muxStatus: freePort(),
  microsocks: freePort(),
  ssh: freePort(),
};

interface Row {
  name: string;
  down: number;
  up: number;
  seqMs: number;
  rps: number;
  /** CPU µs per connection of each process of the path (concurrent phase), and their names. */
  cpu: number[];
  cpuOf: string[];
  /** CPU seconds per GiB of the path's processes together, bulk down and up (median). */
  gibDown: number;
  gibUp: number;
  err?: string;
}
const rows: Row[] = [];
/** `--phases`: each SOCKS path's phase times (ms) of every set-up, by phase, by row. */
const phaseSamples: number[][][] = [];
/** Bulk MB/s of each row per round, down and up (for same-round ratios between rows). */
const rateRounds: { down: number[]; up: number[] }[] = [];
/** `--box`: the box during each round's concurrent phase, by row (see {@linkcode printBox}). */
const boxRounds: {
  box: BoxRun[];
  rps: number[];
  hopsUs: number[];
  targetUs: number[];
  latMs: number[][];
}[] = [];
/** CPU µs per connection of each path (its processes summed), per round, by row. */
const cpuSums: number[][] = [];
/** GiB in `bytes`, for CPU per GiB. */
const gib = (bytes: number) => bytes / (1 << 30);
const wanRows: { name: string; ms: number; err?: string }[] = [];
const env = { DEPOT_TOKEN: crypto.randomUUID() };
try {
  const source = (await startLengthSource(srcPort)).proc;
  procs.push(source);
  const depotServer = startDepotServer(ports);
  const depotLocal = startDepotLocal(["--server", `127.0.0.1:${ports.control}`]);
  // A second depot pair whose local carries tunnels over one mux session (--mux).
  const muxServer = startDepotServer({
    control: ports.muxControl,
    socks: ports.muxSocks,
    tunnel: ports.muxTunnel,
    status: ports.muxStatus,
  });
  const muxLocal = startDepotLocal(["--mux", "--server", `127.0.0.1:${ports.muxControl}`]);
  /** The same two pairs from `--old`'s checkout. */
  const oldPairs: { name: string; socks: number; procs: Proc[] }[] = [];
  for (const mux of flags.old ? [false, true] : []) {
    const p = { control: freePort(), socks: freePort(), tunnel: freePort(), status: freePort() };
    const server = startDepotServer(p, true);
    const local = startDepotLocal([
      ...(mux ? ["--mux"] : []),
      "--server",
      `127.0.0.1:${p.control}`,
    ], true);
    await waitPort(p.status, "old depot-server");
    await waitExits("old depot", p.status, 1);
    oldPairs.push({
      name: mux ? "depot --mux (old)" : "depot (old)",
      socks: p.socks,
      procs: [server, local],
    });
  }
  const microsocks = start("microsocks", ["-i", "127.0.0.1", "-p", String(ports.microsocks)]);
  await waitPort(srcPort, "source");
  // Reference relays: one hop, and two hops in two processes (depot's data path, minus
  // SOCKS and the control protocol).
  const relayProcs: Proc[] = [];
  const relayTo = async (target: number): Promise<number> => {
    const { proc, port } = await startRelay(target);
    procs.push(proc);
    relayProcs.push(proc);
    return port;
  };
  const relay1 = await relayTo(srcPort);
  const relay2a = await relayTo(await relayTo(srcPort));
  const floor = await startFloor();
  procs.push(floor.proc);
  const revFloor = await startReverseFloor();
  const muxFloor = await startMuxFloor();
  const revFloorStandby = await startReverseFloor(true);
  await waitPort(ports.microsocks, "microsocks");
  await waitExits("depot", ports.status, 1);
  await waitExits("depot", ports.muxStatus, 1);
  let sshError: string | undefined;
  let sshProcs: Proc[] = [];
  try {
    sshProcs = await startSshReverseSocks(ports.ssh);
  } catch (err) {
    sshError = `ssh -R unavailable: ${err instanceof Error ? err.message : err}`;
  }

  /** A path and the processes whose CPU per connection its row shows, by short name. */
  /** The SOCKS port of each SOCKS path by route name (for `--phases`). */
  const socksPorts = new Map<string, number>([
    ["Deno floor SOCKS5 (1 process)", floor.port],
    ["Deno floor reverse exit (2 processes)", revFloor.port],
    ["Deno floor reverse exit + standby announce", revFloorStandby.port],
    ["Deno floor --mux (2 processes)", muxFloor.port],
    ["depot (server+local)", ports.socks],
    ["depot --mux", ports.muxSocks],
    ...oldPairs.map((o): [string, number] => [o.name, o.socks]),
    ["microsocks (SOCKS5)", ports.microsocks],
    ["OpenSSH ssh -R (SOCKS)", ports.ssh],
  ]);
  const paths: { route: Route; procs: Proc[]; names: string[] }[] = [
    { route: tcpRoute("direct TCP", srcPort), procs: [], names: [] },
    {
      route: tcpRoute("lib/net relay, 1 hop (reference)", relay1),
      procs: [relayProcs[0]],
      names: ["relay"],
    },
    {
      route: tcpRoute("lib/net relay, 2 hops (reference)", relay2a),
      procs: [relayProcs[2], relayProcs[1]],
      names: ["relay", "relay"],
    },
    {
      route: socksRoute("Deno floor SOCKS5 (1 process)", floor.port, srcPort),
      procs: [floor.proc],
      names: ["floor"],
    },
    {
      route: socksRoute("Deno floor reverse exit (2 processes)", revFloor.port, srcPort),
      procs: revFloor.procs,
      names: ["server", "local"],
    },
    {
      route: socksRoute(
        "Deno floor reverse exit + standby announce",
        revFloorStandby.port,
        srcPort,
      ),
      procs: revFloorStandby.procs,
      names: ["server", "local"],
    },
    {
      route: socksRoute("Deno floor --mux (2 processes)", muxFloor.port, srcPort),
      procs: muxFloor.procs,
      names: ["server", "local"],
    },
    {
      route: socksRoute("depot (server+local)", ports.socks, srcPort),
      procs: [depotServer, depotLocal],
      names: ["server", "local"],
    },
    {
      route: socksRoute("depot --mux", ports.muxSocks, srcPort),
      procs: [muxServer, muxLocal],
      names: ["server", "local"],
    },
    ...oldPairs.map((o) => ({
      route: socksRoute(o.name, o.socks, srcPort),
      procs: o.procs,
      names: ["server", "local"],
    })),
    {
      route: socksRoute("microsocks (SOCKS5)", ports.microsocks, srcPort),
      procs: [microsocks],
      names: ["microsocks"],
    },
    {
      route: socksRoute("OpenSSH ssh -R (SOCKS)", ports.ssh, srcPort),
      procs: sshProcs,
      names: sshProcs.map((p) => p.name),
    },
  ].filter((p, i) => i === 0 || !flags.only || new RegExp(flags.only).test(p.route.name));
  const failed = {
    down: NaN,
    up: NaN,
    seqMs: NaN,
    rps: NaN,
    cpu: [],
    cpuOf: [],
    gibDown: NaN,
    gibUp: NaN,
  };
  // The small-request phases run `--rounds` times, interleaving the paths so a burst of load
  // from elsewhere does not land on one path only: best set-up time and rate, and the median
  // CPU per connection of each process (steadier than either on a shared machine).
  const cpuRounds: number[][][] = paths.map((p) => p.procs.map(() => []));
  /** CPU s/GiB of each path's processes together, per round: down and up. */
  const gibRounds = paths.map(() => ({ down: [] as number[], up: [] as number[] }));
  for (let round = 1; round <= (onlyWan ? 0 : rounds); round++) {
    // Round 1 makes the rows in order; later rounds alternate the order (see roundOrder).
    for (
      const [i, { route: r, procs: costed, names }] of roundOrder(paths, round)
    ) {
      if (round === 1) {
        if (r.name.startsWith("OpenSSH") && sshError) {
          rows.push({ name: r.name, ...failed, err: sshError });
          continue;
        }
        const bulk = flags["small-only"] ? NaN : 0;
        rows.push({
          name: r.name,
          down: bulk,
          up: bulk,
          seqMs: Infinity,
          rps: 0,
          cpu: [],
          cpuOf: names,
          gibDown: NaN,
          gibUp: NaN,
        });
      }
      const row = rows[i];
      if (row.err) continue;
      try {
        if (round === 1) await smallExchange(r, smallBuffer()); // warm up (JIT, pools)
        // Bulk: `--runs` transfers each way in round 1, one in every later round (for the
        // median of CPU per GiB, which rounds make steadier than rates on a shared box).
        for (let k = 0; k < (flags["small-only"] ? 0 : round === 1 ? bulkRuns : 1); k++) {
          const down = await cpuPerConn(costed, 1, () => downloadMBps(r, bulkBytes));
          const up = await cpuPerConn(costed, 1, () => uploadMBps(r, bulkBytes));
          row.down = Math.max(row.down, down.result);
          row.up = Math.max(row.up, up.result);
          const perGib = (us: number[]) => us.reduce((a, b) => a + b, 0) / 1e6 / gib(bulkBytes);
          gibRounds[i].down.push(perGib(down.usPerConn));
          gibRounds[i].up.push(perGib(up.usPerConn));
          rateRounds[i] ??= { down: [], up: [] };
          rateRounds[i].down.push(down.result);
          rateRounds[i].up.push(up.result);
          row.gibDown = median(gibRounds[i].down);
          row.gibUp = median(gibRounds[i].up);
        }
        if (!flags["bulk-only"]) {
          row.seqMs = Math.min(row.seqMs, await sequentialMs(r, seqCount));
          const socksPort = socksPorts.get(r.name);
          if (flags.phases && socksPort !== undefined) {
            const each = (phaseSamples[i] ??= phaseNames.map(() => []));
            const buf = smallBuffer();
            for (let k = 0; k < seqCount; k++) {
              const t = await phasedSetup(socksPort, srcPort, buf);
              t.forEach((ms, j) => each[j].push(ms));
            }
          }
          // `--box`: the source's CPU too, the box around the run, each exchange's time.
          const latMs: number[] | undefined = flags.box ? [] : undefined;
          const box0 = flags.box ? boxSample(costed) : undefined;
          const { result: rps, usPerConn: measured } = await cpuPerConn(
            flags.box ? [...costed, source] : costed,
            reqCount,
            () => concurrentRps(r, reqCount, concurrency, latMs),
          );
          const usPerConn = measured.slice(0, costed.length);
          if (box0 && latMs) {
            const b = (boxRounds[i] ??= { box: [], rps: [], hopsUs: [], targetUs: [], latMs: [] });
            b.box.push(boxRun(box0, boxSample(costed), reqCount));
            b.rps.push(rps);
            b.hopsUs.push(usPerConn.reduce((a, c) => a + c, 0));
            b.targetUs.push(measured[costed.length]);
            b.latMs.push(latMs);
          }
          row.rps = Math.max(row.rps, rps);
          usPerConn.forEach((us, k) => cpuRounds[i][k].push(us));
          (cpuSums[i] ??= []).push(usPerConn.reduce((a, b) => a + b, 0));
          row.cpu = cpuRounds[i].map(median);
        }
        // This round's CPU µs per connection of each process: the spread behind the medians.
        const cpuNow = flags["bulk-only"]
          ? ""
          : cpuRounds[i].map((us) => Math.round(us.at(-1) ?? NaN)).join(" + ");
        console.error(`  round ${round}: measured ${r.name}${cpuNow ? ` (CPU ${cpuNow})` : ""}`);
      } catch (err) {
        Object.assign(row, { ...failed, cpuOf: names, err: String(err) });
        console.error(`  ${r.name} failed: ${err}`);
      }
    }
  }

  // ---- WAN set-up: the exit side behind an emulated RTT ----
  if (wanConns > 0 && wanRttMs > 0) {
    const oneWay = wanRttMs / 2;
    const w = { control: freePort(), socks: freePort(), tunnel: freePort(), status: freePort() };
    startDepotServer(w);
    await waitPort(w.control, "WAN depot-server");
    const farControl = await startDelay(w.control, oneWay);
    const farTunnel = await startDelay(w.tunnel, oneWay);
    const exits: [string, string[]][] = [
      ["spares", []],
      ["nospares", ["--spare-tunnels", "0"]],
      ["mux", ["--mux"]],
    ];
    for (const [name, extra] of exits) {
      startDepotLocal([
        "--name",
        name,
        "--server",
        `127.0.0.1:${farControl}`,
        "--tunnel",
        `127.0.0.1:${farTunnel}`,
        ...extra,
      ]);
    }
    await waitExits("WAN depot-locals", w.status, exits.length);
    await sleep(3 * wanRttMs); // spares dialled, mux open
    const wanSsh = freePort();
    let wanSshError: string | undefined;
    try {
      await startSshReverseSocks(wanSsh, oneWay);
    } catch (err) {
      wanSshError = String(err);
    }
    const wanRoutes: [string, () => Promise<number>][] = [
      ["depot (2 spare tunnels, default)", () => setupMs(w.socks, srcPort, wanConns, "spares")],
      ["depot --spare-tunnels 0", () => setupMs(w.socks, srcPort, wanConns, "nospares")],
      ["depot --mux", () => setupMs(w.socks, srcPort, wanConns, "mux")],
      ["OpenSSH ssh -R (SOCKS)", () => setupMs(wanSsh, srcPort, wanConns)],
    ];
    for (const [name, measure] of wanRoutes) {
      if (name.startsWith("OpenSSH") && wanSshError) {
        wanRows.push({ name, ms: NaN, err: wanSshError });
        continue;
      }
      try {
        wanRows.push({ name, ms: await measure() });
      } catch (err) {
        wanRows.push({ name, ms: NaN, err: String(err) });
      }
    }
  }
} finally {
  await stopAll(procs);
  for (const ssh of sshPeers) await ssh.close();
}

const direct = rows[0] ?? { name: "direct TCP", down: NaN, up: NaN, seqMs: NaN, rps: NaN };
/** "total (name a + name b)" CPU µs per connection, or "—" for a path with no process. */
function cpuCell(r: Row): string {
  if (r.cpu.length === 0) return "—";
  const total = fixed(r.cpu.reduce((a, b) => a + b, 0));
  if (r.cpu.length === 1) return total;
  return `${total} (${r.cpu.map((v, i) => `${r.cpuOf[i]} ${fixed(v)}`).join(" + ")})`;
}
if (rows.length > 0) {
  console.log(
    `depot benchmark: bulk ${bulkBytes >> 20} MiB per direction, one connection, best of ` +
      `${bulkRuns} + ${rounds - 1} (CPU s/GiB: median of them); ` +
      (flags["bulk-only"]
        ? "no set-up phases (--bulk-only)"
        : `${seqCount} sequential and ${reqCount} concurrent (x${concurrency}) small requests, ` +
          `best of ${rounds} rounds (CPU: median)`),
  );
  console.log("");
  console.log(formatTable(
    [
      "path",
      "down MB/s",
      "ratio",
      "up MB/s",
      "ratio",
      "set-up ms (seq)",
      `req/s (x${concurrency})`,
      "ratio",
      "CPU µs/conn",
      "CPU s/GiB down/up",
    ],
    rows.map((r) => [
      r.name,
      fixed(r.down),
      ratio(r.down, direct.down),
      fixed(r.up),
      ratio(r.up, direct.up),
      fixed(r.seqMs, 3),
      fixed(r.rps),
      ratio(r.rps, direct.rps),
      cpuCell(r),
      r.cpuOf.length === 0 || !Number.isFinite(r.gibDown)
        ? "—"
        : `${fixed(r.gibDown, 2)} / ${fixed(r.gibUp, 2)}`,
    ]),
  ));
  for (const r of rows) if (r.err) console.log(`\n${r.name}: ${r.err}`);
  if (flags.box) printBox();
  const phased = rows.flatMap((r, i) =>
    phaseSamples[i] ? [[r.name, phaseSamples[i]] as const] : []
  );
  if (phased.length > 0) {
    console.log(
      `\nSequential set-up by phase (--phases): µs, median of ${seqCount} set-ups x ${rounds} ` +
        `rounds (the client's own steps are the same bare reads and writes on every path)\n`,
    );
    console.log(formatTable(
      ["path", ...phaseNames],
      phased.map(([name, each]) => [name, ...each.map((ms) => fixed(median(ms) * 1000))]),
    ));
  }
  // `--mux` bulk against plain depot (issue 20: >= 0.9): the ratio within each round (the two
  // ran minutes apart at most, in alternating order), then the median over the rounds.
  const plain = rows.findIndex((r) => r.name.startsWith("depot (server"));
  for (const [i, r] of rows.entries()) {
    // "depot (old)" too: with plain depot's code the same in both trees, its spread is the
    // box's noise on these ratios.
    if (plain < 0 || i === plain || !r.name.startsWith("depot") || r.err || rows[plain].err) {
      continue;
    }
    // Each round's ratio too: the goal is about every figure, not only their median.
    const vs = (mine: number[], theirs: number[]) => {
      const each = mine.map((x, k) => x / theirs[k]).filter(Number.isFinite);
      return `${fixed(median(each), 2)} (${each.map((v) => fixed(v, 2)).join(" ")})`;
    };
    const [m, p] = [rateRounds[i], rateRounds[plain]];
    if (!m || !p) continue;
    console.log(
      `\n${r.name} / depot, bulk, median of ${m.down.length} same-round rate ratios: ` +
        `down ${vs(m.down, p.down)}, up ${vs(m.up, p.up)}`,
    );
  }
  // `--old`: new against old CPU per connection within each round (the two ran seconds apart,
  // in alternating order), then the median: steadier than the ratio of the two medians when
  // the load swings between rounds.
  for (
    const [oldName, newName] of [["depot (old)", "depot (server"], [
      "depot --mux (old)",
      "depot --mux",
    ]]
  ) {
    const o = rows.findIndex((r) => r.name === oldName);
    const n = rows.findIndex((r) => r.name.startsWith(newName) && !r.name.endsWith("(old)"));
    if (o < 0 || n < 0 || rows[o].err || rows[n].err || !cpuSums[o] || !cpuSums[n]) continue;
    const each = cpuSums[n].map((x, k) => x / cpuSums[o][k]).filter(Number.isFinite);
    console.log(
      `\n${rows[n].name} / ${oldName}, CPU µs per connection, median of ${each.length} ` +
        `same-round ratios: ${fixed(median(each), 2)} (${each.map((v) => fixed(v, 2)).join(" ")})`,
    );
  }
  const depot = rows.find((r) => r.name.startsWith("depot (server"));
  if (depot && Number.isFinite(depot.down)) {
    const worst = Math.min(depot.down / direct.down, depot.up / direct.up);
    console.log(`\ndepot bulk vs direct (worse direction): ${worst.toFixed(2)} (target >= 0.60)`);
  }
}

/** The `q` quantile (0..1) of `values` (nearest rank). */
function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

/**
 * `--box`: where the whole box's time went during each path's concurrent set-up phase
 * (medians of the rounds), per connection: the idle share of both cores; CPU µs of the box,
 * of the SOCKS client (this process), of the target (the length source), of the path's
 * processes, of everything outside this bench's tree, and what no process was charged
 * (rest); the cores client, target and path kept busy; the box's context switches and the
 * path's; each path process's event-loop wake-ups (its main threads' voluntary switches)
 * and the connections each wake of the first (the SOCKS side) takes; the path's run-queue
 * wait; each exchange's time (connect to EOF) in ms. A path whose rate trails with idle cores
 * waits somewhere; one with a busy box and more client or target µs takes their room.
 */
function printBox(): void {
  const out: string[][] = [];
  const ssh = boxRounds[rows.findIndex((r) => r.name.startsWith("OpenSSH"))];
  /** Same-round rate ratios to ssh -R: their median and each round's. */
  const vsSsh = (rps: number[]) => {
    if (!ssh) return "—";
    const each = rps.map((x, k) => x / ssh.rps[k]).filter(Number.isFinite);
    return `${fixed(median(each), 2)} (${each.map((v) => fixed(v, 2)).join(" ")})`;
  };
  for (const [i, r] of rows.entries()) {
    const b = boxRounds[i];
    if (!b || r.err) continue;
    const mb = (f: (x: BoxRun, k: number) => number) => median(b.box.map(f));
    const lat = (f: (ms: number[]) => number) => fixed(median(b.latMs.map(f)), 2);
    const wakes = mb((x) => x.hopWakes[0] ?? NaN);
    out.push([
      r.name,
      fixed(median(b.rps)),
      vsSsh(b.rps),
      fixed(mb((x) => x.idle * 100), 1),
      fixed(mb((x) => x.boxUs)),
      fixed(mb((x) => x.selfUs)),
      fixed(median(b.targetUs)),
      fixed(median(b.hopsUs)),
      r.cpuOf.length ? fixed(mb((x) => x.hopSysUs)) : "—",
      fixed(mb((x) => x.othersUs)),
      fixed(mb((x, k) => x.boxUs - x.selfUs - b.targetUs[k] - b.hopsUs[k] - x.othersUs)),
      fixed(mb((x, k) => (x.selfUs + b.targetUs[k] + b.hopsUs[k]) * b.rps[k] / 1e6), 2),
      fixed(mb((x) => x.ctxt), 1),
      r.cpuOf.map((_, h) => fixed(mb((x) => x.hopCtxt[h]), 1)).join(" / ") || "—",
      r.cpuOf.map((_, h) => fixed(mb((x) => x.hopWakes[h]), 2)).join(" / ") || "—",
      Number.isFinite(wakes) && wakes > 0 ? fixed(1 / wakes, 2) : "—",
      r.cpuOf.length ? fixed(mb((x) => x.hopInvol * 100)) : "—",
      r.cpuOf.length ? fixed(mb((x) => x.hopWaitUs), 1) : "—",
      lat((ms) => ms.reduce((a, c) => a + c, 0) / ms.length),
      lat((ms) => quantile(ms, 0.5)),
      lat((ms) => quantile(ms, 0.9)),
      lat((ms) => quantile(ms, 0.99)),
    ]);
  }
  console.log(
    `\nthe box during each concurrent phase (--box), medians of ${rounds} rounds; ` +
      `per connection unless said\n`,
  );
  console.log(formatTable(
    [
      "path",
      "req/s",
      "× ssh -R (rounds)",
      "idle %",
      "box µs",
      "client µs",
      "target µs",
      "path µs",
      "of it sys",
      "other µs",
      "rest µs",
      "cores",
      "ctxt",
      "path ctxt",
      "wakes",
      "conns/wake",
      "invol %",
      "runq µs",
      "mean ms",
      "p50 ms",
      "p90 ms",
      "p99 ms",
    ],
    out,
  ));
  console.log(
    "(× ssh -R: median of the same-round rate ratios, and each round's; client: this process, " +
      "the SOCKS client; target: the length source; path: the path's " +
      "processes with their trees (sshd's session children), of it sys: in the kernel; other: every process outside " +
      "this bench's tree, kernel threads too; rest: busy ticks no process was charged; cores: " +
      "client + target + path µs x req/s; ctxt: the box's context switches, path ctxt each " +
      "path process's; wakes: each path process's event-loop sleeps that ended (main threads' " +
      "voluntary switches); conns/wake: of the first (SOCKS) side; runq: the path's run-queue " +
      "wait; ms: each exchange, connect to EOF, in the client)",
  );
}

if (wanRows.length > 0) {
  console.log(
    `\nWAN set-up: exit side behind an emulated RTT of ${wanRttMs} ms (delay proxy), ` +
      `${wanConns} sequential SOCKS CONNECTs, TCP connect to success reply\n`,
  );
  console.log(formatTable(
    ["path", "set-up ms", "RTTs"],
    wanRows.map((r) => [r.name, fixed(r.ms, 1), fixed(r.ms / wanRttMs, 2)]),
  ));
  for (const r of wanRows) if (r.err) console.log(`\n${r.name}: ${r.err}`);
}
