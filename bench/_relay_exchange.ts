/**
 * lib/net `relay()`'s own cost per kept-alive exchange, in process (issue 20): tunnel-client
 * relays a mux stream (lends its bytes: `readView`; takes framed writes: `writeFramed`) to the
 * origin's TCP connection. Here both are in-memory stand-ins that answer at once (a 100-byte
 * request lent, a 250-byte response read), so what is timed is the JavaScript of the two
 * pumps and the stand-ins, and the stand-ins are the same for every variant:
 *
 * - `relay`: lib/net's relay(a, b) of this checkout (or of `--old DIR`'s, as `old`);
 * - `loops`: two bare loops, as the mux floor's client copies (readView → write; read into a
 *   buffer with headroom → writeFramed), without counters, pool, idle touch or error paths.
 *
 * Interleaved rounds of `--exchanges` each; ns per exchange, medians and same-round ratios.
 *
 *   deno run -A bench/_relay_exchange.ts [--rounds 15] [--exchanges 200000] [--old DIR]
 * @module
 */

import { benchFlags, median } from "./_util.ts";
import { relay as newRelay } from "../lib/net/relay.ts";
import type { Duplex } from "../lib/net/duplex.ts";

const flags = benchFlags({
  numbers: { rounds: 15, exchanges: 200_000 },
  strings: ["old"],
});
type RelayFn = (a: Duplex, b: Duplex) => Promise<unknown>;
const oldRelay: RelayFn | undefined = flags.old
  ? (await import(`${flags.old}/lib/net/relay.ts`)).relay
  : undefined;

/** Bytes in front of a framed write's payload (a yamux header). */
const headroom = 12;
const request = new Uint8Array(100).fill(1);
const response = new Uint8Array(250).fill(2);

/**
 * The exchange: the "stream" lends a request, the "origin" answers it when written, the
 * answer goes back to the stream as a framed write, which lets the next request in. After
 * `exchanges` requests the stream ends (FIN) and the origin ends after its last answer.
 */
class Exchange {
  left: number;
  /** Requests written to the origin, not answered yet. */
  pendingAnswers = 0;
  /** A request may be lent (the last answer came back). */
  requestReady = true;
  viewWaiter: ((v: Uint8Array | null) => void) | null = null;
  readWaiter: { p: Uint8Array; resolve: (n: number | null) => void } | null = null;
  originEnded = false;
  constructor(exchanges: number) {
    this.left = exchanges;
  }

  /** The mux stream's side. */
  readonly stream: Duplex & {
    readView(): Promise<Uint8Array | null>;
    releaseView(): void;
    writeFramed(p: Uint8Array): Promise<number>;
    headroomBytes: number;
  } = {
    headroomBytes: headroom,
    readView: () => {
      if (this.left === 0) return Promise.resolve(null);
      if (this.requestReady) return Promise.resolve(this.#lend());
      return new Promise((r) => this.viewWaiter = r);
    },
    releaseView: () => {},
    writeFramed: (p) => {
      const n = p.length - headroom;
      this.#answered();
      return Promise.resolve(n);
    },
    read: () => Promise.reject(new Error("read by views")),
    write: (p) => {
      this.#answered();
      return Promise.resolve(p.length);
    },
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };

  /** The origin's side. */
  readonly origin: Duplex = {
    read: (p) => {
      if (this.pendingAnswers > 0) return Promise.resolve(this.#answer(p));
      if (this.originEnded) return Promise.resolve(null);
      return new Promise((resolve) => this.readWaiter = { p, resolve });
    },
    write: (p) => {
      this.pendingAnswers++;
      const w = this.readWaiter;
      if (w) {
        this.readWaiter = null;
        w.resolve(this.#answer(w.p));
      }
      return Promise.resolve(p.length);
    },
    closeWrite: () => {
      this.originEnded = true;
      const w = this.readWaiter;
      if (w && this.pendingAnswers === 0) {
        this.readWaiter = null;
        w.resolve(null);
      }
      return Promise.resolve();
    },
    close: () => {},
  };

  #lend(): Uint8Array {
    this.requestReady = false;
    this.left--;
    return request;
  }

  #answer(p: Uint8Array): number {
    this.pendingAnswers--;
    p.set(response);
    return response.length;
  }

  #answered(): void {
    this.requestReady = true;
    const w = this.viewWaiter;
    if (w) {
      this.viewWaiter = null;
      w(this.left === 0 ? null : this.#lend());
    }
  }
}

/** The mux floor client's two loops, as bare as they come. */
async function loops(a: Duplex, b: Duplex): Promise<void> {
  const s = a as Exchange["stream"];
  const up = async () => {
    while (true) {
      const v = await s.readView();
      if (v === null) break;
      let off = 0;
      while (off < v.length) off += await b.write(off ? v.subarray(off) : v);
    }
    s.releaseView();
    await b.closeWrite();
  };
  const down = async () => {
    const buf = new Uint8Array(16 * 1024 + headroom);
    const room = buf.subarray(headroom);
    while (true) {
      const n = await b.read(room);
      if (n === null) break;
      await s.writeFramed(buf.subarray(0, headroom + n));
    }
    await s.closeWrite();
  };
  await Promise.all([up(), down()]);
}

const variants: [string, RelayFn][] = [
  ["relay", newRelay],
  ...(oldRelay ? [["old", oldRelay] as [string, RelayFn]] : []),
  ["loops", loops],
];

async function once(fn: RelayFn, n: number): Promise<number> {
  const x = new Exchange(n);
  const t0 = performance.now();
  await fn(x.stream, x.origin);
  return (performance.now() - t0) * 1e6 / n;
}

for (const [, fn] of variants) await once(fn, 20_000); // warm-up
const ns: number[][] = variants.map(() => []);
for (let round = 0; round < flags.rounds; round++) {
  const order = round % 2 === 0 ? variants.entries() : [...variants.entries()].reverse();
  for (const [i, [, fn]] of order) ns[i].push(await once(fn, flags.exchanges));
}
const load = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
console.log(`ns per exchange, median of ${flags.rounds} rounds (load ${load}):`);
for (const [i, [name]] of variants.entries()) {
  const r = ns[i].map((v, k) => v / ns[0][k]);
  console.log(
    `${name.padEnd(6)} ${median(ns[i]).toFixed(0).padStart(6)}  ` +
      (i === 0
        ? ""
        : `/ relay: ${median(r).toFixed(3)} (${Math.min(...r).toFixed(2)}–${
          Math.max(...r).toFixed(2)
        })`),
  );
}
