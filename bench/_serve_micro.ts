/**
 * `deno run -A bench/_serve_micro.ts --trees 'new=DIR,old=DIR' [--modes serve,source,lean]
 * [--rounds 15] [--count 50000]`: lib/net `serve()`'s own JavaScript per connection, in one
 * process, without sockets (issue 20). A fake listener hands out fake connections (resolved
 * promises for accept, read and write; an IPv4 `remoteAddr` whose hostname is a fresh string,
 * as Deno's is) to each tree's serve() with bench/_serve_target.ts's handler (read the
 * request, `handshakeDone()`, write the answer); a round is `--count` connections through
 * every tree and mode in alternating order, timed from the first accept until `finished`.
 * Beside them, the same handler on a bare accept loop (`bare`: what any server does). The
 * syscalls and Deno's op promises are not in it, so a µs of serve() shows where the socket
 * benches (bench/_serve_ab.ts) blur it; the table gives ns per connection and each tree's
 * median [min-max] same-round ratio to the first tree of its mode.
 * @module
 */

import { benchFlags, benchTrees, fixed, formatTable, median } from "./_util.ts";
import type * as Net from "../lib/net/mod.ts";

const flags = benchFlags({
  numbers: { rounds: 15, count: 50_000 },
  strings: ["trees", "modes"],
});
const trees = benchTrees(flags.trees, `new=${new URL("..", import.meta.url).pathname}`);
const modes = (flags.modes ?? "serve,source,lean").split(",").filter(Boolean);

/** What a fake connection's `read` reports: the 8-byte request at once. */
const requestBytes = 8;

/** A connection without a socket: every operation a resolved promise. */
class FakeConn {
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };
  closed = false;
  readonly #listener: FakeListener;
  constructor(port: number, listener: FakeListener) {
    this.#listener = listener;
    // A fresh string, as Deno makes one per accepted connection (not an interned literal).
    const hostname = ["127", "0", "0", String(1 + (port & 0))].join(".");
    this.remoteAddr = { transport: "tcp", hostname, port };
  }
  read(_p: Uint8Array): Promise<number | null> {
    return Promise.resolve(requestBytes);
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  close(): void {
    if (this.closed) throw new Deno.errors.BadResource("closed");
    this.closed = true;
    this.#listener.closed();
  }
  [Symbol.dispose](): void {
    if (!this.closed) this.close();
  }
  setNoDelay(): void {}
  setKeepAlive(): void {}
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
}

/** Connections a fake listener lets be open at once (as the socket benches' 32 clients). */
const concurrency = 32;

/**
 * Hands out `count` fake connections, at most {@linkcode concurrency} open at once (an accept
 * waits for one to close, as a real one waits for a client), then waits for close.
 */
class FakeListener {
  readonly addr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 9 };
  #left: number;
  #open = 0;
  #port = 0;
  #waiting: ((c: FakeConn) => void) | undefined;
  #closed = Promise.withResolvers<never>();
  constructor(count: number) {
    this.#left = count;
    this.#closed.promise.catch(() => {});
  }
  accept(): Promise<FakeConn> {
    if (this.#left <= 0) return this.#closed.promise;
    if (this.#open < concurrency) return Promise.resolve(this.#next());
    const { promise, resolve } = Promise.withResolvers<FakeConn>();
    this.#waiting = resolve;
    return promise;
  }
  #next(): FakeConn {
    this.#left--;
    this.#open++;
    return new FakeConn(++this.#port & 0xffff, this);
  }
  /** A connection closed: a waiting accept gets the next one. */
  closed(): void {
    this.#open--;
    const waiting = this.#waiting;
    if (waiting !== undefined && this.#left > 0) {
      this.#waiting = undefined;
      waiting(this.#next());
    }
  }
  close(): void {
    this.#closed.reject(new Deno.errors.BadResource("listener closed"));
    const waiting = this.#waiting;
    this.#waiting = undefined;
    // A waiting accept (none once every connection was handed out) gets the rejection too.
    if (waiting !== undefined) this.#closed.promise.then(waiting, () => {});
  }
  get drained(): boolean {
    return this.#left <= 0;
  }
  async *[Symbol.asyncIterator](): AsyncGenerator<FakeConn> {
    while (true) {
      try {
        yield await this.accept();
      } catch {
        return;
      }
    }
  }
}

const answer = new Uint8Array(1024);

/** On-CPU ns of this (the main) thread so far: the figure, not wall time, on a shared box. */
function threadCpuNs(): number {
  return Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]);
}

/** bench/_serve_target.ts's handler, minus the loops a fake connection never needs. */
async function exchange(conn: Deno.Conn): Promise<boolean> {
  return (await conn.read(new Uint8Array(requestBytes))) !== null;
}

/** ns per connection of `count` connections through `net`'s serve() in `mode`. */
async function runServe(net: typeof Net, mode: string, count: number): Promise<number> {
  const listener = new FakeListener(count);
  const maxConns = net.defaultMaxConns;
  const t0 = threadCpuNs();
  const server = net.serve(
    listener as unknown as Deno.Listener,
    async (conn, ctx) => {
      if (!await exchange(conn)) return;
      ctx.handshakeDone();
      await conn.write(answer);
    },
    {
      maxConns,
      maxConnsPerSource: mode === "source" ? net.perSourceShare(maxConns) : undefined,
      handshakeTimeoutMs: mode === "lean" ? 0 : undefined,
      shedIdleMs: mode === "lean" ? Infinity : undefined,
      // No setsockopt on a fake connection.
      acceptedNoDelay: true,
    },
  );
  while (!listener.drained) await new Promise((r) => setTimeout(r, 0));
  await server.stop(60_000);
  const { total, rejected, errors } = server.stats;
  if (total !== count || rejected + errors > 0) {
    throw new Error(`serve() ${mode}: ${total} accepted, ${rejected} rejected, ${errors} errors`);
  }
  return (threadCpuNs() - t0) / count;
}

/** The same handler on a bare accept loop. */
async function runBare(count: number): Promise<number> {
  const listener = new FakeListener(count);
  const t0 = threadCpuNs();
  let running = 0;
  let allDone: (() => void) | undefined;
  for await (const conn of listener) {
    running++;
    (async () => {
      try {
        if (await exchange(conn as unknown as Deno.Conn)) await conn.write(answer);
      } finally {
        conn.close();
        if (--running === 0) allDone?.();
      }
    })();
    if (listener.drained) listener.close();
  }
  if (running > 0) await new Promise<void>((r) => allDone = r);
  return (threadCpuNs() - t0) / count;
}

interface Case {
  name: string;
  mode: string;
  tree?: string;
  run: (count: number) => Promise<number>;
}

const nets = await Promise.all(
  trees.map(async (t) => await import(`${t.dir}/lib/net/mod.ts`) as typeof Net),
);
const cases: Case[] = [{ name: "bare accept loop", mode: "bare", run: runBare }];
for (const mode of modes) {
  trees.forEach((t, i) => {
    cases.push({
      name: `serve() ${mode} (${t.name})`,
      mode,
      tree: t.name,
      run: (n) => runServe(nets[i], mode, n),
    });
  });
}
for (const c of cases) await c.run(flags.count); // warm up (JIT)
const ns = cases.map(() => [] as number[]);
for (let round = 1; round <= flags.rounds; round++) {
  const order = [...cases.entries()];
  if (round % 2 === 0) order.reverse();
  for (const [i, c] of order) ns[i].push(await c.run(flags.count));
}
const floor = median(ns[0]);
console.log(
  `ns per connection (one process, fake sockets), median of ${flags.rounds} rounds of ` +
    `${flags.count}; load ${Deno.loadavg()[0].toFixed(1)}`,
);
console.log(formatTable(
  ["path", "ns/conn", "over bare", `same-round ratio to ${trees[0].name}`],
  cases.map((c, i) => {
    const base = cases.findIndex((d) => d.mode === c.mode && d.tree !== undefined);
    const ratios = c.tree === undefined || base === i ? [] : ns[i].map((v, r) => v / ns[base][r]);
    return [
      c.name,
      fixed(median(ns[i])),
      i === 0 ? "" : `+${fixed(median(ns[i]) - floor)}`,
      ratios.length === 0
        ? ""
        : `${fixed(median(ratios), 3)} [${fixed(Math.min(...ratios), 2)}-${
          fixed(Math.max(...ratios), 2)
        }]`,
    ];
  }),
));
