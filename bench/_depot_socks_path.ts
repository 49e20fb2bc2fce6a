/**
 * depot-server's own work per plain connection, without sockets (issue 20): a DepotServer of
 * this tree (and of `--old DIR`) in one process, driven through its public handlers on
 * in-memory connections whose reads and writes settle at once. A fake depot-local says hello
 * on a control connection (features "open", "end", "compact"), and per connection hands the
 * server one standby spare (`handleTunnel`: its `standby` frame) and one SOCKS5 client
 * (`handleSocks`: greeting, CONNECT to 127.0.0.1:8080, 4 bytes, EOF); the spare answers the
 * request frame written on it with `tunnel{id,key}`, sends `end{id}` on the control connection
 * and ends. So each connection runs the server's SOCKS5 handshake, the request and its answer,
 * the reply, the relay with its FIN gate, and the bookkeeping around them: what a change there
 * saves is a few µs of a ~300 µs connection, below what a socket A/B (bench/_depot_ab.ts)
 * resolves on a shared box. The trees run in alternating batches, CPU µs per connection (user +
 * system of the whole process, GC included; the fake's own work is the same for both), median
 * of the rounds and the same-round ratio new/old.
 *
 *   deno run -A bench/_depot_socks_path.ts --old DIR [--rounds 9] [--count 20000]
 *
 * `--promises`: also count the promises each tree makes per connection (a promise hook in this
 * process; its CPU figures are then the hook's, not the path's).
 *
 * `--cold MB`: each connection runs after `MB` megabytes were written through (caches evicted,
 * as a server's are between the wake-ups of a real connection while the client, the local and
 * the rest of the box run), and is timed alone (`performance.now()` around it: it runs in one
 * turn, no I/O); each round gives the median connection. What a hot loop hides: code and data
 * a connection touches cost far more when they come from memory (bench/RESULTS dsetup).
 * @module
 */

import { cpuUsage } from "node:process";
import { benchFlags, fixed, median, ScriptedConn } from "./_util.ts";
import type { Duplex } from "../lib/net/mod.ts";
import type * as DepotMod from "../lib/depot/mod.ts";
import type * as ControlMod from "../lib/control/mod.ts";
import type * as LogMod from "../lib/log.ts";
import type * as DeadlineMod from "../lib/net/deadline.ts";

const flags = benchFlags({
  numbers: { rounds: 9, count: 20_000, cold: 0 },
  strings: ["old"],
  booleans: ["promises"],
});

/** Reads that settle at once from a queue, or when something is queued. */
class Queue {
  #chunks: Uint8Array[] = [];
  #waiting: ((n: number | null) => void) | undefined;
  #into: Uint8Array | undefined;
  #ended = false;

  push(c: Uint8Array): void {
    const w = this.#waiting;
    if (w) {
      this.#waiting = undefined;
      this.#into!.set(c);
      w(c.length);
    } else this.#chunks.push(c);
  }

  end(): void {
    this.#ended = true;
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.(null);
  }

  read(p: Uint8Array): Promise<number | null> {
    const c = this.#chunks.shift();
    if (c) {
      p.set(c);
      return Promise.resolve(c.length);
    }
    if (this.#ended) return Promise.resolve(null);
    const { promise, resolve } = Promise.withResolvers<number | null>();
    this.#waiting = resolve;
    this.#into = p;
    return promise;
  }
}

/** What the SOCKS5 client sends (greeting, CONNECT 127.0.0.1:8080, 4 bytes, EOF). */
const clientReads = [
  Uint8Array.of(5, 1, 0),
  Uint8Array.of(5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90),
  Uint8Array.of(1, 2, 3, 4),
];

/**
 * A standby spare of the fake local: its first read is the `standby` frame; the request frame
 * written on it is answered `tunnel{id,key}` (compact); after that, `end{id}` goes on the control
 * connection and the spare's next read is EOF (the target sent nothing and closed).
 */
class Spare implements Duplex {
  #reads = new Queue();
  #answered = false;
  #id = new Uint8Array(8);
  constructor(standby: Uint8Array, readonly ctl: Queue, readonly onAnswer: () => void) {
    this.#reads.push(standby);
  }
  read(p: Uint8Array): Promise<number | null> {
    return this.#reads.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    if (!this.#answered) {
      // connect: 0x81, length (3), id (8), key (16), port, host: answered with id and key.
      if (p[0] !== 0x81) throw new Error(`not a compact connect: 0x${p[0].toString(16)}`);
      this.#answered = true;
      const answer = new Uint8Array(4 + 24);
      answer.set([0x82, 0, 0, 24]);
      answer.set(p.subarray(4, 28), 4);
      this.#id.set(p.subarray(4, 12));
      this.#reads.push(answer);
      this.onAnswer();
    }
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    // The client's EOF came through: the target answers with its own, confirmed first.
    const end = new Uint8Array(4 + 8);
    end.set([0x84, 0, 0, 8]);
    end.set(this.#id, 4);
    this.ctl.push(end);
    this.#reads.end();
    return Promise.resolve();
  }
  close(): void {
    this.#reads.end();
  }
}

/** The control connection of the fake local: hello first; what the server writes is kept. */
class Control implements Duplex {
  readonly reads = new Queue();
  readonly written: Uint8Array[] = [];
  read(p: Uint8Array): Promise<number | null> {
    return this.reads.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    if (this.written.length < 4) this.written.push(p.slice());
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.reads.end();
  }
}

interface Tree {
  name: string;
  /** Run `count` connections; with `times`, each one after a cache flush, its µs pushed there. */
  run(count: number, times?: number[]): Promise<void>;
  stop(): Promise<void>;
}

async function load(name: string, dir: string): Promise<Tree> {
  const depot = await import(`${dir}/lib/depot/mod.ts`) as typeof DepotMod;
  const control = await import(`${dir}/lib/control/mod.ts`) as typeof ControlMod;
  const { silentLogger } = await import(`${dir}/lib/log.ts`) as typeof LogMod;
  // As serve() does for a running server: the shared deadline wheel keeps its timer between
  // connections (else each one starts and stops it, which a server never does).
  const wheel = await import(`${dir}/lib/net/deadline.ts`) as typeof DeadlineMod;
  const release = wheel.deadlines.hold();
  const server = new depot.DepotServer({ token: "t", heartbeatMs: 600_000 });
  const ctl = new Control();
  ctl.reads.push(control.encodeFrame({
    v: depot.depotProtocol.version,
    type: "hello",
    role: "depot-local",
    token: "t",
    name: "default",
    features: ["open", "end", "compact"],
  }));
  const ctx = { remote: "127.0.0.1:40000", log: silentLogger, handshakeDone() {} };
  const serving = server.handleControl(ctl, ctx);
  for (let i = 0; i < 100 && ctl.written.length === 0; i++) await Promise.resolve();
  const welcome = JSON.parse(new TextDecoder().decode(ctl.written[0].subarray(4)));
  if (welcome.type !== "welcome") throw new Error(`no welcome: ${JSON.stringify(welcome)}`);
  const key = welcome.sessionKey as string;
  const standby = new Uint8Array(4 + 16 + "default".length);
  standby.set([0x83, 0, 0, 16 + "default".length]);
  for (let i = 0; i < 16; i++) standby[4 + i] = parseInt(key.slice(2 * i, 2 * i + 2), 16);
  standby.set(new TextEncoder().encode("default"), 20);
  let answered = 0;
  const counted = () => answered++;
  return {
    name,
    async run(count, times) {
      const before = answered;
      for (let i = 0; i < count; i++) {
        if (times) flushCaches();
        const t0 = times ? performance.now() : 0;
        const spare = new Spare(standby, ctl.reads, counted);
        const held = server.handleTunnel(spare, ctx);
        // The spare is in the exit's list once its answer's read is pending.
        await Promise.resolve();
        await Promise.resolve();
        await server.handleSocks(new ScriptedConn(clientReads), ctx);
        await held;
        times?.push((performance.now() - t0) * 1000);
      }
      if (answered - before !== count) {
        throw new Error(`${name}: ${answered - before} of ${count} requests went on a spare`);
      }
    },
    async stop() {
      await server.stop(0);
      ctl.close();
      await serving;
      release();
    },
  };
}

/** What `--cold` writes through before each connection. */
const flushBytes = new Uint8Array(flags.cold * 1024 * 1024);
let flushRound = 0;

/** Write a byte of every cache line of `flushBytes` (a new value each time). */
function flushCaches(): void {
  flushRound = (flushRound + 1) & 0xff;
  for (let i = 0; i < flushBytes.length; i += 64) flushBytes[i] = flushRound;
}

/** CPU seconds (user + system) of this process so far, to the microsecond. */
function cpuSeconds(): number {
  const u = cpuUsage();
  return (u.user + u.system) / 1e6;
}

let promises = 0;
if (flags.promises) {
  // V8's promise init hook, as bench/_promise_count.ts sets it (Deno's core).
  const internal = (Deno as unknown as { internal: symbol }).internal;
  const core =
    (Deno as unknown as Record<symbol, { core: { setPromiseHooks(f: () => void): void } }>)[
      internal
    ].core;
  core.setPromiseHooks(() => promises++);
}

const trees = [await load("new", new URL("..", import.meta.url).pathname)];
if (flags.old) trees.push(await load("old", flags.old));
for (const t of trees) await t.run(flags.count / 5); // warm up
if (flags.promises) {
  for (const t of trees) {
    const p0 = promises;
    await t.run(1000);
    console.log(`${t.name}: ${fixed((promises - p0) / 1000, 2)} promises per connection`);
  }
}
// A round is `count` connections per tree, run in 20 alternating batches: load from elsewhere
// on the box lands on both trees alike.
const batches = 20;
const us = trees.map(() => [] as number[]);
const times = trees.map(() => [] as number[]);
for (let round = 1; round <= flags.rounds; round++) {
  const spent = trees.map(() => 0);
  for (let b = 0; b < batches; b++) {
    for (const i of b % 2 === 0 ? trees.keys() : [...trees.keys()].reverse()) {
      const c0 = cpuSeconds();
      await trees[i].run(flags.count / batches, flags.cold ? times[i] : undefined);
      spent[i] += cpuSeconds() - c0;
    }
  }
  for (const i of trees.keys()) {
    us[i].push(flags.cold ? median(times[i].splice(0)) : spent[i] * 1e6 / flags.count);
  }
  console.error(`  round ${round}: ${trees.map((t, i) => `${t.name} ${fixed(us[i].at(-1)!, 2)}`)}`);
}
console.log(
  flags.cold
    ? `depot-server µs per plain connection in process, each after ${flags.cold} MB written ` +
      `through (median connection of each round), median of ${flags.rounds} rounds (then each round)`
    : `depot-server CPU µs per plain connection in process (in-memory connections, fake local), ` +
      `median of ${flags.rounds} rounds (then each round)`,
);
for (const [i, t] of trees.entries()) {
  console.log(
    `${t.name.padEnd(6)} ${fixed(median(us[i]), 2).padStart(7)}   ${
      us[i].map((x) => fixed(x, 2)).join(" ")
    }`,
  );
}
if (trees.length === 2) {
  const ratios = us[0].map((x, i) => x / us[1][i]);
  console.log(
    `new/old per round: median ${fixed(median(ratios), 3)}   ${
      ratios.map((x) => fixed(x, 2)).join(" ")
    }`,
  );
}
for (const t of trees) await t.stop();
