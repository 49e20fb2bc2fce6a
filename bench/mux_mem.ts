/**
 * `deno run -A bench/mux_mem.ts [--sessions 1000] [--streams 10000] [--churn 20000]
 * [--churn-sessions 1] [--keepalive-ms 1000] [--rounds 3] [--old DIR | --trees name=DIR,...]`
 * (a tree `name=DIR:FLAG+FLAG` runs its measured process with those V8 flags too):
 * what lib/mux costs in memory per session and per stream, and what a stream's churn leaves to
 * the GC (issue 20).
 *
 * One process per tree holds the measured sides (its tree's lib/mux, accepting sessions as
 * `Session.server`); this process is their peer (this tree's lib/mux, `Session.client`). Phases,
 * each measured after three forced full GCs (heap used, external = ArrayBuffer backing stores,
 * RSS):
 * - `sessions`: `--sessions` sessions, one ping each, no stream yet (per idle session);
 * - `streams`: `--streams` streams over the sessions, one small exchange each, held open with a
 *   read pending on the measured side (per stream, over `sessions`);
 * - `closed`: those streams closed again (per session, over the start);
 * - `parked`: `--streams` streams accepted with their 100-byte request not read yet, as while a
 *   relay dials its target (per stream, over `closed`);
 * - `burst`: one stream per session carrying a burst each way (200 × 1 KiB writes in one turn,
 *   echoed in 1 KiB writes), then closed: the session's read and write buffers grown (per session);
 * - `idle`: the same after 2.5 keepalive intervals with no traffic but pings (per session).
 * Then two churns, each stream opened, answered and closed, 32 at once, with V8's
 * `--trace-gc-nvp` on the measured process, over the first `--churn-sessions` sessions (1: as a
 * tunnel or depot `--mux` client's one session carries all its streams): `--churn` streams the
 * peer opens (the measured side accepts: tunnel-client, depot-local), and as many the measured
 * side opens (tunnel-server, depot-server); per stream the bytes its scavenges kept (survived)
 * and promoted, the measured process's CPU µs, and the scavenges counted. Trees run in
 * alternating order each round; tables give medians.
 *
 * Not a test: memory figures move with V8's heuristics, CPU with the machine's load.
 * @module
 */

import {
  benchFlags,
  benchTrees,
  fixed,
  formatTable,
  gcNum,
  gcTraceLines,
  median,
  procStat,
  procTicksPerSecond,
  roundOrder,
} from "./_util.ts";
import { echoInWrites } from "../tests/_util.ts";

/** Largest line of JSON the measured process prints at once. */
const lineBytes = 64 * 1024;
/** Small writes in one turn per session in the burst phase, and their size. */
const burstWrites = 200;
const burstWriteBytes = 1024;
/** The request and answer of a held or churned stream. */
const requestBytes = 100;
const answerBytes = 100;
/** Streams open at once in a churn. */
const churnConcurrency = 32;
/** Forced full GCs before a reading, and the pause after each (finalizers, released buffers). */
const gcPasses = 3;
const gcPauseMs = 50;

/** A memory reading of the measured process. */
interface Mem {
  heap: number;
  external: number;
  rss: number;
}

/** A command to the measured process, and its answer. */
type Command =
  | { op: "mem" }
  | { op: "mode"; mode: "burst" | "hold" | "park" | "churn" }
  | { op: "parked"; count: number }
  | { op: "unpark" }
  | { op: "wait"; ms: number }
  | { op: "cpu" }
  | { op: "open"; count: number; sessions: number }
  | { op: "exit" };

// ------------------------------------------------------------------ the measured side

async function measured(): Promise<void> {
  const root = Deno.env.get("BENCH_ROOT")!;
  const keepaliveIntervalMs = Number(Deno.env.get("BENCH_KEEPALIVE_MS"));
  const mux = await import(`${root}/lib/mux/mod.ts`) as typeof import("../lib/mux/mod.ts");
  type Session = import("../lib/mux/mod.ts").Session;
  type Stream = import("../lib/mux/mod.ts").Stream;
  const gc = (globalThis as unknown as { gc: () => void }).gc;
  const sessions: Session[] = [];
  let mode: "burst" | "hold" | "park" | "churn" = "burst";
  /** Streams accepted in "park" mode, their request not read yet (as while a relay dials). */
  const parked: Stream[] = [];
  let parkedWaiter: { count: number; resolve: () => void } | null = null;
  const answer = new Uint8Array(answerBytes).fill(0x61);

  const burst = (s: Stream) => echoInWrites(s, burstWriteBytes);
  const hold = async (s: Stream) => {
    const buf = new Uint8Array(requestBytes);
    await s.read(buf);
    await s.write(answer);
    while ((await s.read(buf)) !== null) { /* until the peer closes */ }
    s.close();
  };
  const churn = async (s: Stream) => {
    const buf = new Uint8Array(requestBytes);
    while ((await s.read(buf)) !== null) { /* the request, then its FIN */ }
    await s.write(answer);
    s.close();
  };
  const park = (s: Stream) => {
    parked.push(s);
    if (parkedWaiter && parked.length >= parkedWaiter.count) parkedWaiter.resolve();
    return Promise.resolve();
  };
  const unpark = async () => {
    await Promise.all(
      parked.splice(0).map(async (s) => {
        const buf = new Uint8Array(requestBytes);
        while ((await s.read(buf)) !== null) { /* the request, then the peer's FIN */ }
        s.close();
      }),
    );
  };
  const serve = async (session: Session) => {
    for await (const s of session) {
      if (mode === "park") {
        park(s);
        continue;
      }
      const handle = mode === "burst" ? burst : mode === "hold" ? hold : churn;
      handle(s).catch((e) => console.error(`stream ${s.id}: ${e}`));
    }
  };
  /** Open `count` streams over the sessions, 32 at once: request + FIN, read the answer. */
  const open = async (count: number, over: number) => {
    const request = new Uint8Array(requestBytes).fill(0x72);
    const buf = new Uint8Array(answerBytes * 2);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < count; i = next++) {
        const s = await sessions[i % over].open({ data: request, fin: true });
        while ((await s.read(buf)) !== null) { /* the answer, then its FIN */ }
        s.close();
      }
    };
    await Promise.all(Array.from({ length: churnConcurrency }, worker));
  };
  const mem = async (): Promise<Mem> => {
    for (let i = 0; i < gcPasses; i++) {
      gc();
      await new Promise((r) => setTimeout(r, gcPauseMs));
    }
    const m = Deno.memoryUsage();
    return { heap: m.heapUsed, external: m.external, rss: m.rss };
  };
  const cpuUs = () => {
    const s = procStat("self");
    return (s.utime + s.stime) * 1e6 / procTicksPerSecond;
  };

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      const session = mux.Session.server(conn, { keepaliveIntervalMs });
      sessions.push(session);
      serve(session).catch((e) => console.error(`session: ${e}`));
    }
  })();
  const say = (v: unknown) => console.log(`@${JSON.stringify(v)}`);
  say({ port: listener.addr.port });
  const input = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let pending = "";
  for await (const text of input) {
    pending += text;
    for (let at = pending.indexOf("\n"); at >= 0; at = pending.indexOf("\n")) {
      const cmd = JSON.parse(pending.slice(0, at)) as Command;
      pending = pending.slice(at + 1);
      if (cmd.op === "mem") say({ mem: await mem(), sessions: sessions.length });
      else if (cmd.op === "mode") say({ mode: mode = cmd.mode });
      else if (cmd.op === "wait") say({ waited: await new Promise((r) => setTimeout(r, cmd.ms)) });
      else if (cmd.op === "cpu") say({ cpuUs: cpuUs() });
      else if (cmd.op === "parked") {
        const count = cmd.count;
        if (parked.length < count) {
          await new Promise<void>((resolve) => parkedWaiter = { count, resolve });
        }
        parkedWaiter = null;
        say({ parked: parked.length });
      } else if (cmd.op === "unpark") say({ unparked: await unpark() });
      else if (cmd.op === "open") say({ opened: await open(cmd.count, cmd.sessions) });
      else if (cmd.op === "exit") {
        listener.close();
        await Promise.all(sessions.map((s) => s.close()));
        say({ bye: true });
        Deno.exit(0);
      }
    }
  }
}

// ------------------------------------------------------------------ the driver (the peer)

/** A measured process and its line protocol. */
class Measured {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: string[] = [];
  #answers: string[] = [];
  #waiting: ((line: string) => void) | null = null;
  #reading: Promise<void>;

  constructor(root: string, keepaliveMs: number, v8Flags = "") {
    this.#child = new Deno.Command("stdbuf", {
      args: [
        "-oL",
        Deno.execPath(),
        "run",
        "-A",
        `--v8-flags=--expose-gc,--trace-gc-nvp${v8Flags ? `,${v8Flags}` : ""}`,
        import.meta.filename!,
      ],
      env: {
        BENCH_MUX_MEM_ROLE: "measured",
        BENCH_ROOT: root,
        BENCH_KEEPALIVE_MS: String(keepaliveMs),
      },
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reading = this.#read();
  }

  async #read(): Promise<void> {
    let pending = "";
    for await (const text of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      pending += text;
      if (pending.length > lineBytes * 16) throw new Error("measured process: runaway line");
      for (let at = pending.indexOf("\n"); at >= 0; at = pending.indexOf("\n")) {
        const line = pending.slice(0, at);
        pending = pending.slice(at + 1);
        if (!line.startsWith("@")) {
          this.#lines.push(line);
          continue;
        }
        const w = this.#waiting;
        this.#waiting = null;
        if (w) w(line.slice(1));
        else this.#answers.push(line.slice(1));
      }
    }
  }

  /** The next answer line, parsed. */
  next<T>(): Promise<T> {
    const ready = this.#answers.shift();
    if (ready !== undefined) return Promise.resolve(JSON.parse(ready) as T);
    return new Promise<T>((resolve) => this.#waiting = (l) => resolve(JSON.parse(l) as T));
  }

  /** Send `cmd` and wait for its answer. */
  async ask<T>(cmd: Command): Promise<T> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
    return await this.next<T>();
  }

  /** Output lines so far (GC traces), taken. */
  takeLines(): string[] {
    return this.#lines.splice(0);
  }

  get pid(): number {
    return this.#child.pid;
  }

  async exit(): Promise<void> {
    await this.ask({ op: "exit" });
    await this.#writer.close().catch(() => {});
    await this.#child.status;
    await this.#reading.catch(() => {});
  }
}

/** One tree's figures of one round. */
interface RoundResult {
  mem: Record<string, Mem>;
  /** Per churn: survived and promoted bytes per stream, CPU µs per stream. */
  churn: Record<string, { survived: number; promoted: number; cpu: number; scavenges: number }>;
}

async function driver(): Promise<void> {
  const flags = benchFlags({
    numbers: {
      sessions: 1000,
      streams: 10000,
      churn: 20000,
      "churn-sessions": 1,
      rounds: 3,
      "keepalive-ms": 1000,
    },
    strings: ["old", "trees"],
  });
  const here = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const trees = benchTrees(
    flags.trees,
    flags.old ? `new=${here},old=${flags.old}` : `this=${here}`,
    ":",
  );
  const { Session } = await import("../lib/mux/mod.ts");
  type Stream = import("../lib/mux/mod.ts").Stream;
  const results = new Map<string, RoundResult[]>(trees.map((t) => [t.name, []]));

  const runTree = async (dir: string, v8Flags: string): Promise<RoundResult> => {
    const m = new Measured(dir, flags["keepalive-ms"], v8Flags);
    const { port } = await m.next<{ port: number }>();
    const out: RoundResult = { mem: {}, churn: {} };
    const churnSessions = Math.max(1, Math.min(flags["churn-sessions"], flags.sessions));
    const reading = async (name: string) => {
      out.mem[name] = (await m.ask<{ mem: Mem }>({ op: "mem" })).mem;
    };
    await reading("base");
    const sessions: import("../lib/mux/mod.ts").Session[] = [];
    for (let i = 0; i < flags.sessions; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      sessions.push(Session.client(conn, { keepaliveIntervalMs: flags["keepalive-ms"] }));
    }
    await Promise.all(sessions.map((s) => s.ping()));
    await reading("sessions");

    // Streams held open, one exchange each.
    await m.ask({ op: "mode", mode: "hold" });
    const held: Stream[] = [];
    const request = new Uint8Array(requestBytes).fill(0x72);
    const buf = new Uint8Array(answerBytes);
    for (let i = 0; i < flags.streams; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, flags.streams - i) }, async (_, k) => {
          const s = await sessions[(i + k) % sessions.length].open({ data: request });
          let got = 0;
          while (got < answerBytes) {
            const n = await s.read(buf);
            if (n === null) throw new Error("held stream ended early");
            got += n;
          }
          held.push(s);
        }),
      );
    }
    await reading("streams");
    for (const s of held) s.close();
    await m.ask({ op: "wait", ms: 500 });
    await reading("closed");

    // Streams accepted with their request unread (as while a relay dials its target).
    await m.ask({ op: "mode", mode: "park" });
    const parkedHere: Stream[] = [];
    for (let i = 0; i < flags.streams; i++) {
      parkedHere.push(await sessions[i % sessions.length].open({ data: request }));
    }
    await m.ask({ op: "parked", count: flags.streams });
    await reading("parked");
    await Promise.all(parkedHere.map((s) => s.closeWrite()));
    await m.ask({ op: "unpark" });
    for (const s of parkedHere) s.close();

    // A burst each way on every session.
    await m.ask({ op: "mode", mode: "burst" });
    const piece = new Uint8Array(burstWriteBytes).fill(0x62);
    await Promise.all(sessions.map(async (session) => {
      const s = await session.open();
      for (let i = 0; i < burstWrites - 1; i++) s.write(piece);
      await s.write(piece);
      await s.closeWrite();
      const buf = new Uint8Array(64 * 1024);
      let got = 0;
      for (let n = await s.read(buf); n !== null; n = await s.read(buf)) got += n;
      if (got !== burstWrites * burstWriteBytes) throw new Error(`burst echo: ${got} bytes`);
      s.close();
    }));
    await reading("burst");
    await m.ask({ op: "wait", ms: flags["keepalive-ms"] * 2.5 });
    await reading("idle");

    // Churns: the peer opens (the measured side accepts), then the measured side opens.
    await m.ask({ op: "mode", mode: "churn" });
    const answer = new Uint8Array(answerBytes).fill(0x61);
    const serving = sessions.map(async (session) => {
      for await (const s of session) {
        (async () => {
          const b = new Uint8Array(requestBytes);
          while ((await s.read(b)) !== null) { /* the request, then its FIN */ }
          await s.write(answer);
          s.close();
        })().catch((e) => console.error(`peer stream: ${e}`));
      }
    });
    const churn = async (name: string, run: () => Promise<unknown>) => {
      await run(); // warm-up: the code paths compiled, the tables grown
      await m.ask({ op: "mem" });
      m.takeLines();
      const before = (await m.ask<{ cpuUs: number }>({ op: "cpu" })).cpuUs;
      await run();
      const after = (await m.ask<{ cpuUs: number }>({ op: "cpu" })).cpuUs;
      await m.ask({ op: "mem" }); // its full GCs end the measured scavenges' line
      const scavenges = gcTraceLines(m.takeLines()).filter((g) => g.gc === "s");
      const sum = (k: string) => scavenges.reduce((a, g) => a + gcNum(g, k), 0);
      out.churn[name] = {
        survived: sum("new_space_survived") / flags.churn,
        promoted: sum("promoted") / flags.churn,
        cpu: (after - before) / flags.churn,
        scavenges: scavenges.length,
      };
    };
    await churn("accept", async () => {
      const b = new Uint8Array(answerBytes * 2);
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < flags.churn; i = next++) {
          const s = await sessions[i % churnSessions].open({ data: request, fin: true });
          while ((await s.read(b)) !== null) { /* the answer, then its FIN */ }
          s.close();
        }
      };
      await Promise.all(Array.from({ length: churnConcurrency }, worker));
    });
    await churn("open", () => m.ask({ op: "open", count: flags.churn, sessions: churnSessions }));
    await m.exit();
    await Promise.all(sessions.map((s) => s.close()));
    await Promise.all(serving);
    return out;
  };

  console.log(
    `mux_mem: ${flags.sessions} sessions, ${flags.streams} streams, churn ${flags.churn} × 2, ` +
      `keepalive ${flags["keepalive-ms"]} ms, ${flags.rounds} rounds; load ${
        Deno.loadavg().map((l) => l.toFixed(1)).join(" ")
      }`,
  );
  for (let round = 0; round < flags.rounds; round++) {
    for (const [, t] of roundOrder(trees, round)) {
      results.get(t.name)!.push(await runTree(t.dir, t.extra));
    }
  }
  console.log(`load after ${Deno.loadavg().map((l) => l.toFixed(1)).join(" ")}`);

  const kib = (b: number) => fixed(b / 1024, 1);
  const per = (rs: RoundResult[], phase: string, base: string, n: number, k: keyof Mem) =>
    median(rs.map((r) => (r.mem[phase][k] - r.mem[base][k]) / n));
  const rows: string[][] = [];
  const phases: [string, string, string, number][] = [
    ["idle session (no stream yet)", "sessions", "base", flags.sessions],
    ["open stream (one exchange, read pending)", "streams", "sessions", flags.streams],
    ["session after its streams closed", "closed", "base", flags.sessions],
    ["accepted stream, request unread", "parked", "closed", flags.streams],
    ["session after a burst", "burst", "base", flags.sessions],
    ["session after keepalive intervals idle", "idle", "base", flags.sessions],
  ];
  for (const t of trees) {
    const rs = results.get(t.name)!;
    for (const [what, phase, base, n] of phases) {
      const unit = n === flags.streams ? "B" : "KiB";
      const f = (k: keyof Mem) => {
        const v = per(rs, phase, base, n, k);
        return unit === "B" ? fixed(v) : kib(v);
      };
      rows.push([t.name, `${what} (${unit})`, f("heap"), f("external"), f("rss")]);
    }
  }
  console.log("\nmemory per session or stream (medians; heap used, ArrayBuffers, RSS)\n");
  console.log(formatTable(["tree", "what", "heap", "external", "RSS"], rows, {
    align: ["left", "left", "right", "right", "right"],
  }));
  const churnRows: string[][] = [];
  for (const t of trees) {
    const rs = results.get(t.name)!;
    for (const c of ["accept", "open"]) {
      const f = (k: "survived" | "promoted" | "cpu" | "scavenges") =>
        fixed(median(rs.map((r) => r.churn[c][k])));
      const all = (k: "promoted") => rs.map((r) => fixed(r.churn[c][k])).join(" ");
      churnRows.push([
        t.name,
        c === "accept" ? "peer opens, measured accepts" : "measured opens",
        f("survived"),
        `${f("promoted")} (${all("promoted")})`,
        f("cpu"),
        f("scavenges"),
      ]);
    }
  }
  console.log(
    `\nchurn per stream, ${flags.churn} streams × ${churnConcurrency} at once (medians)\n`,
  );
  console.log(formatTable(
    ["tree", "churn", "survived B", "promoted B (rounds)", "CPU µs", "scavenges"],
    churnRows,
    { align: ["left", "left", "right", "right", "right", "right"] },
  ));
}

if (Deno.env.get("BENCH_MUX_MEM_ROLE") === "measured") await measured();
else await driver();
