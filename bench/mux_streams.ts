/**
 * `deno run -A bench/mux_streams.ts [--streams 20000] [--concurrency 32] [--rounds 5] [--old DIR]
 * [--syn-ack-delay-ms 0]`:
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
 * the answer. Not a test: numbers are as
 * measured on a shared machine.
 * @module
 */

import process from "node:process";
import { benchFlags, median, type Proc, procCpuSeconds, roundOrder, spawnDeno } from "./_util.ts";

/** What both ends need of a lib/mux checkout (this one's, or `--old`'s). */
interface MuxStream {
  read(p: Uint8Array): Promise<number | null>;
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

/** Read `s` until `n` bytes came (or its end); returns how many came. */
async function readAtLeast(s: MuxStream, buf: Uint8Array, n: number): Promise<number> {
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
  for await (const conn of listener) {
    (async () => {
      const synAckDelayMs = Number(Deno.env.get("BENCH_SYN_ACK_MS") ?? 0);
      for await (const s of mux.Session.server(conn, { synAckDelayMs })) {
        serve(s).catch(() => {
          // A failed stream ends only itself; the opener reports the count it missed.
        });
      }
    })();
  }
}

/** `n` streams on `session`, `concurrency` at a time; returns how many failed. */
async function exchange(session: MuxSession, n: number, concurrency: number): Promise<number> {
  let next = 0, failed = 0;
  const worker = async () => {
    const buf = new Uint8Array(2048);
    while (next < n) {
      next++;
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
    numbers: { streams: 20_000, concurrency: 32, rounds: 5, "syn-ack-delay-ms": 0 },
    strings: ["old"],
  });
  const here = new URL(".", import.meta.url).pathname;
  const trees = [{ name: "lib/mux", dir: `${here}..` }];
  if (flags.old) trees.push({ name: "lib/mux (old)", dir: flags.old });
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
      const modPath = `${t.dir}/lib/mux/mod.ts`;
      const mux = await import(modPath) as MuxModule;
      const child = spawnDeno(import.meta.filename!, [], {
        env: {
          BENCH_ROLE: "accepter",
          BENCH_MUX: modPath,
          BENCH_SYN_ACK_MS: String(flags["syn-ack-delay-ms"]),
        },
      });
      sides.push({ name: t.name, child, session: null!, rate: [], opener: [], accepter: [] });
      const port = Number(/port (\d+)/.exec(await child.waitFor(/^port \d+/))![1]);
      const session = mux.Session.client(await Deno.connect({ hostname: "127.0.0.1", port }));
      sides.at(-1)!.session = session;
      await exchange(session, 2000, flags.concurrency); // warm up both ends
    }
    for (let round = 1; round <= flags.rounds; round++) {
      for (const [, side] of roundOrder(sides, round)) {
        const o0 = ownCpuSeconds(), a0 = procCpuSeconds([side.child]);
        const t0 = performance.now();
        const failed = await exchange(side.session, flags.streams, flags.concurrency);
        const ms = performance.now() - t0;
        if (failed > 0) console.error(`${side.name}: ${failed} streams failed`);
        side.rate.push(flags.streams / ms * 1000);
        side.opener.push((ownCpuSeconds() - o0) * 1e6 / flags.streams);
        side.accepter.push((procCpuSeconds([side.child]) - a0) * 1e6 / flags.streams);
      }
    }
    console.log(
      `${flags.streams} streams ×${flags.concurrency} per round (SYN+40 B, 20 B, 8 B + FIN, ` +
        `1 KiB + FIN), median of ${flags.rounds} rounds\n`,
    );
    console.log("| mux           | streams/s | CPU µs/stream (opener + accepter) |");
    console.log("| ------------- | --------: | --------------------------------: |");
    for (const s of sides) {
      const [o, a] = [median(s.opener), median(s.accepter)];
      console.log(
        `| ${s.name.padEnd(13)} | ${median(s.rate).toFixed(0).padStart(9)} | ${
          `${(o + a).toFixed(1)} (${o.toFixed(1)} + ${a.toFixed(1)})`.padStart(33)
        } |`,
      );
    }
    if (sides.length === 2) {
      const [n, o] = sides;
      const ratios = (f: (s: typeof n, k: number) => number) =>
        n.rate.map((_, k) => f(n, k) / f(o, k));
      const show = (xs: number[]) =>
        `${median(xs).toFixed(3)} (${xs.map((x) => x.toFixed(2)).join(" ")})`;
      console.log(`\nnew/old CPU per stream, same-round ratios, median:`);
      console.log(`  both ends ${show(ratios((s, k) => s.opener[k] + s.accepter[k]))}`);
      console.log(`  opener    ${show(ratios((s, k) => s.opener[k]))}`);
      console.log(`  accepter  ${show(ratios((s, k) => s.accepter[k]))}`);
    }
  } finally {
    for (const s of sides) {
      await s.session?.close();
      await s.child.stop();
    }
  }
  Deno.exit(0);
}
