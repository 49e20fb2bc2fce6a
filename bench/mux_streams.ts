/**
 * `deno run -A bench/mux_streams.ts [--streams 20000] [--concurrency 32] [--rounds 5] [--old DIR]
 * [--floor] [--exchanges 0] [--syn-ack-delay-ms 0]`:
 * lib/mux's cost per short stream (issue 20), without a proxy around it: what depot `--mux` and
 * the tunnel pay per connection or request in lib/mux itself.
 *
 * This process opens `--streams` streams on one session, `--concurrency` at a time, each as
 * depot's server does one: the request rides on the SYN (40 bytes), the accepting side (a
 * child process, as depot-local) answers 20 bytes, the opener sends 8 bytes and its FIN, the
 * accepter sends 1 KiB and its FIN, both close. Printed: streams per second, and CPU µs per
 * stream of the opener (this process) and of the accepter, the median of `--rounds`.
 * `--old DIR` runs the same exchange with another checkout's lib/mux on both ends (its module
 * imported here, this file as its child), in alternating order within each round, and prints
 * the same-round new/old CPU ratios: a before/after in one run. `--syn-ack-delay-ms` holds back
 * the accepter's ACK as depot-local `--mux` and tunnel-client do (1000 there), so it rides on
 * the answer. `--floor` adds bench/_mux_floor.ts's framing floor (yamux headers, one write per
 * turn, no flow control, ACKs, limits or keepalive) as a third side, and the same-round ratios
 * of lib/mux to it. `--exchanges K` measures a long-lived stream instead (the tunnel's
 * keep-alive connection): each stream carries K request/response pairs (100 B request, the
 * first on the SYN; 250 B response), one frame each way, then both FINs; CPU is printed per
 * exchange. `--views` reads with `readView()` (as relay() and the tunnel's front do) instead
 * of `read()` into a buffer of one's own. Not a test: numbers are as measured on a shared machine.
 * @module
 */

import process from "node:process";
import { benchFlags, median, type Proc, procCpuSeconds, roundOrder, spawnDeno } from "./_util.ts";

/** What both ends need of a lib/mux checkout (this one's, or `--old`'s). */
interface MuxStream {
  read(p: Uint8Array): Promise<number | null>;
  readView(): Promise<Uint8Array | null>;
  releaseView(): void;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}
interface MuxSession {
  open(opts?: { data?: Uint8Array; fin?: boolean }): Promise<MuxStream>;
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<MuxStream>;
}
interface MuxModule {
  Session: {
    client(conn: Deno.Conn): MuxSession;
    server(conn: Deno.Conn, opts?: { synAckDelayMs?: number }): MuxSession;
  };
}

const request = new Uint8Array(40).fill(1);
const answer = new Uint8Array(20).fill(2);
const upload = new Uint8Array(8).fill(3);
const download = new Uint8Array(1024).fill(4);
/** `--exchanges`: one keep-alive request and its response. */
const kaRequest = new Uint8Array(100).fill(5);
const kaResponse = new Uint8Array(250).fill(6);

/** `--views`: read by views (set in both processes). */
let views = Deno.env.get("BENCH_VIEWS") === "1";

/** {@linkcode readAtLeast} by views. */
async function viewAtLeast(s: MuxStream, n: number): Promise<number> {
  let got = 0;
  while (got < n) {
    const v = await s.readView();
    if (v === null) break;
    got += v.length;
    s.releaseView();
  }
  return got;
}

/** Read `s` until `n` bytes came (or its end); returns how many came. */
async function readAtLeast(s: MuxStream, buf: Uint8Array, n: number): Promise<number> {
  if (views) return viewAtLeast(s, n);
  let got = 0;
  while (got < n) {
    const k = await s.read(buf);
    if (k === null) break;
    got += k;
  }
  return got;
}

// ---------------------------------------------------------------- accepting side (child)
if (Deno.env.get("BENCH_ROLE") === "accepter") {
  const mux = await import(Deno.env.get("BENCH_MUX")!) as MuxModule;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`port ${listener.addr.port}`);
  const serve = async (s: MuxStream) => {
    const buf = new Uint8Array(2048);
    try {
      await readAtLeast(s, buf, request.length);
      await s.write(answer);
      await readAtLeast(s, buf, upload.length);
      await s.write(download);
      await s.closeWrite();
      await readAtLeast(s, buf, 1); // the opener's FIN
    } finally {
      s.close();
    }
  };
  /** `--exchanges`: answer every request until the opener's FIN. */
  const serveExchanges = async (s: MuxStream) => {
    const buf = new Uint8Array(2048);
    try {
      while (await readAtLeast(s, buf, kaRequest.length) === kaRequest.length) {
        await s.write(kaResponse);
      }
      await s.closeWrite();
    } finally {
      s.close();
    }
  };
  const handle = Number(Deno.env.get("BENCH_EXCHANGES") ?? 0) > 0 ? serveExchanges : serve;
  for await (const conn of listener) {
    (async () => {
      const synAckDelayMs = Number(Deno.env.get("BENCH_SYN_ACK_MS") ?? 0);
      for await (const s of mux.Session.server(conn, { synAckDelayMs })) {
        handle(s).catch(() => {
          // A failed stream ends only itself; the opener reports the count it missed.
        });
      }
    })();
  }
}

/** One `--exchanges` stream: `k` requests, each answered, then both FINs. */
async function keepAlive(session: MuxSession, k: number, buf: Uint8Array): Promise<void> {
  let s: MuxStream | undefined;
  try {
    s = await session.open({ data: kaRequest });
    for (let i = 0; i < k; i++) {
      if (i > 0) await s.write(kaRequest);
      if (await readAtLeast(s, buf, kaResponse.length) !== kaResponse.length) {
        throw new Error("response");
      }
    }
    await s.closeWrite();
    if (await readAtLeast(s, buf, Infinity) !== 0) throw new Error("bytes after the last response");
  } finally {
    s?.close();
  }
}

/**
 * `n` streams on `session`, `concurrency` at a time (each `exchanges` request/response pairs
 * when that is above 0); returns how many failed.
 */
async function exchange(
  session: MuxSession,
  n: number,
  concurrency: number,
  exchanges = 0,
): Promise<number> {
  let next = 0, failed = 0;
  const worker = async () => {
    const buf = new Uint8Array(2048);
    while (next < n) {
      next++;
      if (exchanges > 0) {
        await keepAlive(session, exchanges, buf).catch(() => failed++);
        continue;
      }
      let s: MuxStream | undefined;
      try {
        s = await session.open({ data: request });
        if (await readAtLeast(s, buf, answer.length) !== answer.length) throw new Error("answer");
        await s.write(upload);
        await s.closeWrite();
        if (await readAtLeast(s, buf, Infinity) !== download.length) throw new Error("download");
      } catch {
        failed++;
      } finally {
        s?.close();
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return failed;
}

function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

if (Deno.env.get("BENCH_ROLE") === undefined) {
  const flags = benchFlags({
    numbers: { streams: 20_000, concurrency: 32, rounds: 5, "syn-ack-delay-ms": 0, exchanges: 0 },
    strings: ["old"],
    booleans: ["floor", "views"],
  });
  views = flags.views;
  const here = new URL(".", import.meta.url).pathname;
  const trees = [{ name: "lib/mux", mod: `${here}../lib/mux/mod.ts` }];
  if (flags.old) trees.push({ name: "lib/mux (old)", mod: `${flags.old}/lib/mux/mod.ts` });
  if (flags.floor) trees.push({ name: "framing floor", mod: `${here}_mux_floor.ts` });
  const k = flags.exchanges;
  /** Units per round: streams, or request/response pairs with `--exchanges`. */
  const units = k > 0 ? flags.streams * k : flags.streams;
  const unit = k > 0 ? "exchange" : "stream";
  const sides: {
    name: string;
    child: Proc;
    session: MuxSession;
    rate: number[];
    opener: number[];
    accepter: number[];
  }[] = [];
  try {
    for (const t of trees) {
      const modPath = t.mod;
      const mux = await import(modPath) as MuxModule;
      const child = spawnDeno(import.meta.filename!, [], {
        env: {
          BENCH_ROLE: "accepter",
          BENCH_MUX: modPath,
          BENCH_SYN_ACK_MS: String(flags["syn-ack-delay-ms"]),
          BENCH_EXCHANGES: String(k),
          BENCH_VIEWS: views ? "1" : "0",
        },
      });
      sides.push({ name: t.name, child, session: null!, rate: [], opener: [], accepter: [] });
      const port = Number(/port (\d+)/.exec(await child.waitFor(/^port \d+/))![1]);
      const session = mux.Session.client(await Deno.connect({ hostname: "127.0.0.1", port }));
      sides.at(-1)!.session = session;
      // Warm up both ends.
      await exchange(session, k > 0 ? flags.concurrency : 2000, flags.concurrency, k);
    }
    for (let round = 1; round <= flags.rounds; round++) {
      for (const [, side] of roundOrder(sides, round)) {
        const o0 = ownCpuSeconds(), a0 = procCpuSeconds([side.child]);
        const t0 = performance.now();
        const failed = await exchange(side.session, flags.streams, flags.concurrency, k);
        const ms = performance.now() - t0;
        if (failed > 0) console.error(`${side.name}: ${failed} streams failed`);
        side.rate.push(units / ms * 1000);
        side.opener.push((ownCpuSeconds() - o0) * 1e6 / units);
        side.accepter.push((procCpuSeconds([side.child]) - a0) * 1e6 / units);
      }
    }
    const how = views ? ", read by views" : "";
    const what = k > 0
      ? `${k} exchanges (100 B, 250 B) on each`
      : "SYN+40 B, 20 B, 8 B + FIN, 1 KiB + FIN";
    console.log(
      `${flags.streams} streams ×${flags.concurrency} per round (${what}), ` +
        `median of ${flags.rounds} rounds${how}\n`,
    );
    console.log(`| mux           | ${unit}s/s | CPU µs/${unit} (opener + accepter) |`);
    console.log(
      `| ------------- | ${"-".repeat(unit.length + 2)}: | ${"-".repeat(unit.length + 26)}: |`,
    );
    for (const s of sides) {
      const [o, a] = [median(s.opener), median(s.accepter)];
      console.log(
        `| ${s.name.padEnd(13)} | ${median(s.rate).toFixed(0).padStart(unit.length + 3)} | ${
          `${(o + a).toFixed(1)} (${o.toFixed(1)} + ${a.toFixed(1)})`.padStart(unit.length + 27)
        } |`,
      );
    }
    const [n] = sides;
    for (const o of sides.slice(1)) {
      const ratios = (f: (s: typeof n, r: number) => number) =>
        n.rate.map((_, r) => f(n, r) / f(o, r));
      const show = (xs: number[]) =>
        `${median(xs).toFixed(3)} (${xs.map((x) => x.toFixed(2)).join(" ")})`;
      console.log(`\nlib/mux / ${o.name}: CPU per ${unit}, same-round ratios, median:`);
      console.log(`  both ends ${show(ratios((s, r) => s.opener[r] + s.accepter[r]))}`);
      console.log(`  opener    ${show(ratios((s, r) => s.opener[r]))}`);
      console.log(`  accepter  ${show(ratios((s, r) => s.accepter[r]))}`);
    }
  } finally {
    for (const s of sides) {
      await s.session?.close();
      await s.child.stop();
    }
  }
  Deno.exit(0);
}
