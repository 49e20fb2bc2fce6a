/**
 * `deno run -A bench/mux.ts [--mib N] [--runs N]`: lib/mux side by side with raw TCP and the real Go
 * hashicorp/yamux (Debian's, through tests/go/yamux_peer), one-way bulk transfer over
 * loopback, sender and receiver in separate processes for every row:
 *
 * - raw TCP (Deno → Deno), warren mux 1 and 4 streams (Deno → Deno),
 *   Go yamux 1 and 4 streams (Go → Go), and the two interop pairs (warren → Go, Go → warren);
 * - memory per idle stream: 10,000 streams opened on an in-process session pair.
 *
 * Beside each rate (best of `--runs`), the CPU seconds per GiB of the sender and of the
 * receiver process (median of the runs): steadier than rates on a shared machine. The Go
 * client's CPU is its children's time as bash's `times` reports it. `--old DIR` adds the warren
 * rows of another checkout (its lib/mux on both ends) for a before/after in one run; `--old
 * A,B` of several, labelled by directory name. With `--old` the warren rows' runs alternate
 * tree by tree (run 1 of each tree, then run 2 of each...), so load that comes and goes during
 * the run falls on every tree alike.
 *
 * Every stream says `discard N\n`, sends N bytes and waits for the receiver's `N\n` (the 2019
 * Go yamux cannot read after its own Close, so no half-close is involved). Not a test:
 * numbers are as measured on a shared machine.
 */

import { Session } from "../lib/mux/mod.ts";
import { writeAll } from "../lib/net/mod.ts";
import { goAvailable, goPeer } from "../tests/_mux.ts";
import process from "node:process";
import {
  benchFlags,
  formatTable,
  mbPerSec,
  median,
  MiB,
  type Proc,
  procCpuSeconds,
  sendBytes,
  sh,
  spawn,
  spawnDeno,
} from "./_util.ts";

/** Send size of one write of a bench stream. */
const blockBytes = MiB;
/** Streams opened for the idle-memory figure. */
const idleStreams = 10_000;
const enc = new TextEncoder();
const dec = new TextDecoder();

interface ByteConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

/** Receiver side of one bench stream: "discard N\n", N bytes, reply "N\n". */
async function sink(c: ByteConn): Promise<void> {
  const buf = new Uint8Array(blockBytes);
  let head = "";
  let extra = 0;
  while (!head.includes("\n")) {
    const n = await c.read(buf);
    if (n === null) return;
    const text = dec.decode(buf.subarray(0, Math.min(n, 64)));
    const i = text.indexOf("\n");
    if (i >= 0) {
      head += text.slice(0, i + 1);
      extra = n - (i + 1);
    } else head += text;
  }
  const want = Number(head.trim().split(" ")[1]);
  let got = extra;
  while (got < want) {
    const n = await c.read(buf);
    if (n === null) break;
    got += n;
  }
  await writeAll(c, enc.encode(`${got}\n`));
}

/** Sender side: returns when the receiver confirmed all bytes. */
async function send(c: ByteConn, bytes: number): Promise<void> {
  await writeAll(c, enc.encode(`discard ${bytes}\n`));
  await sendBytes(c, bytes, new Uint8Array(blockBytes));
  const reply = new Uint8Array(32);
  let text = "";
  while (!text.includes("\n")) {
    const n = await c.read(reply);
    if (n === null) throw new Error("receiver closed early");
    text += dec.decode(reply.subarray(0, n));
  }
  if (Number(text.trim()) !== bytes) throw new Error(`receiver got ${text.trim()} of ${bytes}`);
}

// ------------------------------------------------------ receiver role (child process)
if (Deno.env.get("BENCH_ROLE") === "mux-sink") {
  const raw = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const mux = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`ports ${raw.addr.port} ${mux.addr.port}`);
  (async () => {
    for await (const c of raw) sink(c).finally(() => c.close());
  })();
  for await (const c of mux) {
    const session = Session.server(c);
    (async () => {
      for await (const s of session) sink(s).catch(() => {}).finally(() => s.close());
    })();
  }
}

// ------------------------------------------------------------------ driver
/** Wait for `proc`'s line matching `re` (a listening port), or stop it and throw. */
async function portsLine(proc: Proc, re: RegExp): Promise<RegExpExecArray> {
  try {
    return re.exec(await proc.waitFor(re))!;
  } catch (err) {
    await proc.stop("SIGKILL");
    throw err;
  }
}

/** The session class of this checkout, or of `--old`'s. */
type SessionClass = Pick<typeof Session, "client">;

async function warrenClient(
  port: number,
  bytes: number,
  streams: number,
  S: SessionClass = Session,
): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const session = S.client(conn);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: streams }, async () => {
    const s = await session.open();
    await send(s, bytes / streams);
    s.close();
  }));
  const ms = performance.now() - t0;
  await session.close();
  return mbPerSec(bytes, ms);
}

async function rawClient(port: number, bytes: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = performance.now();
  await send(conn, bytes);
  const ms = performance.now() - t0;
  conn.close();
  return mbPerSec(bytes, ms);
}

/** What one run measured: the rate, and CPU seconds of the sender and of the receiver. */
interface Run {
  mbps: number;
  senderCpuS: number;
  receiverCpuS: number;
}

/** CPU seconds of this process so far (all threads). */
function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** A run whose sender is this process and whose receiver is `receiver`. */
async function runHere(receiver: Proc, send: () => Promise<number>): Promise<Run> {
  const s0 = ownCpuSeconds();
  const r0 = procCpuSeconds([receiver]);
  const mbps = await send();
  return {
    mbps,
    senderCpuS: ownCpuSeconds() - s0,
    receiverCpuS: procCpuSeconds([receiver]) - r0,
  };
}

/** The Go yamux client sending `bytes` over `streams` streams to `receiver`'s port. */
async function goClient(
  bin: string,
  receiver: Proc,
  port: number,
  bytes: number,
  streams: number,
): Promise<Run> {
  const r0 = procCpuSeconds([receiver]);
  // bash's `times`: its own, then its children's user and system time (the Go client's).
  const out = await sh("bash", [
    "-c",
    '"$@"; times',
    "bash",
    bin,
    "client-bench",
    `127.0.0.1:${port}`,
    String(bytes),
    String(streams),
  ]);
  const receiverCpuS = procCpuSeconds([receiver]) - r0;
  const m = /bench (\d+)/.exec(out);
  if (!m) throw new Error(`go client failed: ${out}`);
  const times = [...out.matchAll(/(\d+)m([\d.]+)s/g)].map((t) => Number(t[1]) * 60 + Number(t[2]));
  return { mbps: Number(m[1]), senderCpuS: times[2] + times[3], receiverCpuS };
}

async function idleStreamMemory(n: number): Promise<{ heap: number; rss: number }> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [a, b] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
    l.accept(),
  ]);
  l.close();
  const client = Session.client(a);
  const server = Session.server(b, { acceptBacklog: n });
  const m0 = Deno.memoryUsage();
  const opened = await Promise.all(Array.from({ length: n }, () => client.open()));
  const accepted = [];
  for (let i = 0; i < n; i++) accepted.push(await server.accept());
  await client.ping();
  const m1 = Deno.memoryUsage();
  for (const s of opened) s.close();
  for (const s of accepted) s?.close();
  await Promise.all([client.close(), server.close()]);
  return { heap: (m1.heapUsed - m0.heapUsed) / (2 * n), rss: (m1.rss - m0.rss) / (2 * n) };
}

if (import.meta.main && !Deno.env.get("BENCH_ROLE")) {
  const flags = benchFlags({ numbers: { mib: 1024, runs: 3 }, strings: ["old"] });
  const bytes = flags.mib * MiB;
  const runs = flags.runs;
  /**
   * Best rate of `runs` (the machine is shared, the best run is the least disturbed one) and
   * the median CPU s/GiB of each side.
   */
  const summary = (all: Run[]) => {
    const perGib = (s: number) => s / (bytes / (1 << 30));
    return {
      mbps: Math.max(...all.map((r) => r.mbps)),
      sender: median(all.map((r) => perGib(r.senderCpuS))),
      receiver: median(all.map((r) => perGib(r.receiverCpuS))),
    };
  };
  const best = async (f: () => Promise<Run>) => {
    const all: Run[] = [];
    for (let i = 0; i < runs; i++) all.push(await f());
    return summary(all);
  };
  /** Each of `fs` `runs` times, alternated run by run. */
  const bestEach = async (fs: (() => Promise<Run>)[]) => {
    const all: Run[][] = fs.map(() => []);
    for (let i = 0; i < runs; i++) {
      for (let j = 0; j < fs.length; j++) all[j].push(await fs[j]());
    }
    return all.map(summary);
  };
  const rows: {
    name: string;
    mbps: number | null;
    sender?: number;
    receiver?: number;
    note?: string;
  }[] = [];
  const self = new URL(import.meta.url).pathname;
  const child = spawnDeno(self, [], { env: { BENCH_ROLE: "mux-sink" } });
  const ports = await portsLine(child, /ports (\d+) (\d+)/);
  const rawPort = Number(ports[1]);
  const muxPort = Number(ports[2]);
  // --old: each checkout's receiver process, and its Session for our sending side.
  const olds: { label: string; child: Proc; port: number; S: SessionClass }[] = [];
  const oldDirs = flags.old ? flags.old.split(",").filter(Boolean) : [];
  for (const dir of oldDirs) {
    const oldChild = spawnDeno(`${dir}/bench/mux.ts`, [], { env: { BENCH_ROLE: "mux-sink" } });
    olds.push({
      label: oldDirs.length > 1 ? `old ${dir.replace(/\/+$/, "").split("/").pop()}` : "old",
      child: oldChild,
      port: Number((await portsLine(oldChild, /ports (\d+) (\d+)/))[2]),
      S: (await import(`${dir}/lib/mux/mod.ts`) as { Session: SessionClass }).Session,
    });
  }
  const haveGo = goAvailable();
  const bin = haveGo ? await goPeer() : "";
  let goSrv: Proc | null = null;
  try {
    goSrv = haveGo ? spawn(bin, ["server", "127.0.0.1:0"], { name: "yamux_peer" }) : null;
    const goPort = goSrv ? Number((await portsLine(goSrv, /listening \S+:(\d+)/))[1]) : 0;
    rows.push({
      name: "raw TCP (Deno -> Deno)",
      ...await best(() => runHere(child, () => rawClient(rawPort, bytes))),
    });
    const muxRows: typeof rows = [];
    for (const streams of [1, 4]) {
      const name = `warren mux, ${streams} stream${streams > 1 ? "s" : ""}`;
      const results = await bestEach([
        () => runHere(child, () => warrenClient(muxPort, bytes, streams)),
        ...olds.map((o) => () => runHere(o.child, () => warrenClient(o.port, bytes, streams, o.S))),
      ]);
      results.forEach((r, i) => {
        muxRows.push({ name: i === 0 ? name : `${name} (${olds[i - 1].label})`, ...r });
      });
    }
    // This tree's rows first, then each old tree's (the table as without --old, rows added).
    rows.push(...muxRows.filter((r) => !r.name.endsWith(")")));
    rows.push(...muxRows.filter((r) => r.name.endsWith(")")));
    if (haveGo && goSrv) {
      const go = goSrv;
      rows.push({
        name: "Go yamux, 1 stream",
        ...await best(() => goClient(bin, go, goPort, bytes, 1)),
      });
      rows.push({
        name: "Go yamux, 4 streams",
        ...await best(() => goClient(bin, go, goPort, bytes, 4)),
      });
      rows.push({
        name: "warren -> Go yamux, 1 stream",
        ...await best(() => runHere(go, () => warrenClient(goPort, bytes, 1))),
      });
      rows.push({
        name: "Go yamux -> warren, 1 stream",
        ...await best(() => goClient(bin, child, muxPort, bytes, 1)),
      });
    } else {
      rows.push({ name: "Go yamux", mbps: null, note: "go / yamux source not installed" });
    }
  } finally {
    await child.stop("SIGKILL");
    for (const o of olds) await o.child.stop("SIGKILL");
    await goSrv?.stop("SIGKILL");
  }
  const raw = rows[0].mbps!;
  const go1 = rows.find((r) => r.name === "Go yamux, 1 stream")?.mbps;
  const go4 = rows.find((r) => r.name === "Go yamux, 4 streams")?.mbps;
  console.log(
    `one-way bulk transfer over loopback, ${bytes >> 20} MiB per run, best of ${runs} runs ` +
      `(CPU: median)\n`,
  );
  console.log(formatTable(
    ["transfer", "MB/s", "vs raw TCP", "vs Go yamux (same streams)", "CPU s/GiB send + receive"],
    rows.map((r) => {
      if (r.mbps === null) return [r.name, "–", "–", r.note ?? "", ""];
      const go = r.name.includes("4 streams") ? go4 : go1;
      const vsGo = go && r.name.startsWith("warren mux") ? (r.mbps / go).toFixed(2) : "";
      const cpu = `${r.sender!.toFixed(2)} + ${r.receiver!.toFixed(2)}`;
      return [r.name, r.mbps.toFixed(0), (r.mbps / raw).toFixed(2), vsGo, cpu];
    }),
  ));
  const mem = await idleStreamMemory(idleStreams);
  console.log(
    `\nidle streams: ${mem.heap.toFixed(0)} B of JS heap per stream per side ` +
      `(RSS ${mem.rss.toFixed(0)} B), measured over 10,000 streams`,
  );
}
