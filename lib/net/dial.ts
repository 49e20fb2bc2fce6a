/**
 * `dial(host, port)`: TCP connect with a timeout, an address-family preference, every
 * resolved address tried in turn, and failures typed by reason.
 * @module
 */

import { ipFamily, isIPv4Address } from "./addr.ts";
import { noDelay } from "./duplex.ts";
import { type Abortable, listenAbort, unlistenAbort } from "./abort.ts";
import { type Deadline, deadlines } from "./deadline.ts";
import { classifyError, errorMessage, NetError, type NetFailureReason } from "./errors.ts";

/** Default time for the whole dial (resolution plus every attempt). */
export const defaultDialTimeoutMs = 10_000;

/** Options of {@linkcode dial}. */
export interface DialOptions {
  /** Give up after this long, across all addresses. @default 10000 */
  timeoutMs?: number;
  /** Which family to try first (seed 003 prefers IPv6). @default "ipv6" */
  prefer?: "ipv6" | "ipv4";
  /**
   * Abort the dial; it rejects with reason "aborted". serve()'s connection context will do
   * (no AbortSignal made for it).
   */
  signal?: Abortable;
}

/**
 * getaddrinfo (the system's resolver: /etc/hosts, nsswitch, DNS), from node:dns, loaded at
 * the first name resolved: `Deno.resolveDns` asks DNS servers only, so it would not resolve
 * what the system does. A service that only ever dials addresses carries no node layer
 * (~1 MB of heap, bench/RESULTS.md weight2).
 */
let systemLookup: typeof import("node:dns/promises").lookup | undefined;

/** Resolve `host` to addresses, preferred family first. IP literals skip resolution. */
export async function resolveHost(
  host: string,
  prefer: "ipv6" | "ipv4" = "ipv6",
): Promise<string[]> {
  const bare = unbracket(host);
  if (ipFamily(bare)) return [bare];
  let found: { address: string; family: number }[];
  try {
    systemLookup ??= (await import("node:dns/promises")).lookup;
    found = await systemLookup(bare, { all: true, verbatim: true });
  } catch (err) {
    throw new NetError("resolve", `cannot resolve ${bare}: ${errorMessage(err)}`, { cause: err });
  }
  if (found.length === 0) throw new NetError("resolve", `no addresses for ${bare}`);
  const first = prefer === "ipv6" ? 6 : 4;
  const seen = new Set<string>();
  return [...found]
    .sort((x, y) => (x.family === first ? 0 : 1) - (y.family === first ? 0 : 1))
    .map((a) => a.address)
    .filter((a) => !seen.has(a) && seen.add(a));
}

/**
 * Connect to `host:port`, trying each resolved address until one answers. The connection
 * has TCP_NODELAY set (see {@linkcode noDelay}).
 *
 * Rejects with a {@linkcode NetError} whose `reason` is "resolve", "refused",
 * "host-unreachable", "network-unreachable", "timeout", "aborted" or "other"; when several
 * addresses fail, the reason is that of the most informative failure (refused beats
 * unreachable beats timeout).
 *
 * @example
 * ```ts
 * import { dial } from "./dial.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await dial("localhost", listener.addr.port, { timeoutMs: 5000 }); // ::1 refused, 127.0.0.1 next
 * conn.close();
 * listener.close();
 * ```
 */
export async function dial(
  host: string,
  port: number,
  opts: DialOptions = {},
): Promise<Deno.TcpConn> {
  const attempt = new DialAttempt(host, port, opts.timeoutMs ?? defaultDialTimeoutMs, opts.signal);
  try {
    const literal = addressLiteral(host);
    if (literal === undefined) {
      return await dialAddresses(host, port, opts.prefer ?? "ipv6", attempt);
    }
    // An address (the common case) needs no lookup: one connect, in this frame.
    try {
      return noDelay(await Deno.connect({ hostname: literal, port, signal: attempt.signal }));
    } catch (e) {
      throw attempt.failure(e);
    }
  } finally {
    attempt.end();
  }
}

/**
 * One dial's timeout and abort, in one object: its deadline on the shared wheel (cheaper than
 * a timer; AbortSignal.timeout would keep a live timer for the whole timeout), the listener
 * forwarding the caller's abort (`handleEvent`), and the controller both abort. One
 * controller for both: AbortSignal.any cost ~20 µs per dial, closures for each part five
 * allocations more per connection.
 */
class DialAttempt implements Deadline {
  readonly #ac: AbortController = idleControllers.pop() ?? new AbortController();
  readonly signal: AbortSignal = this.#ac.signal;
  due: number;
  #timedOut = false;

  constructor(
    readonly host: string,
    readonly port: number,
    readonly timeoutMs: number,
    readonly outer: Abortable | undefined,
  ) {
    this.due = deadlines.clockMs() + timeoutMs;
    deadlines.add(this);
    if (outer?.aborted) this.handleEvent();
    else if (outer) listenAbort(outer, this);
  }

  /** The caller's signal aborted. */
  handleEvent(): void {
    this.#ac.abort(this.outer?.reason);
  }

  /** @internal The dial timed out (the wheel). */
  fire(): void {
    this.#timedOut = true;
    this.#ac.abort(new DOMException("dial timeout", "TimeoutError"));
  }

  /** What a failed connect becomes: a typed NetError. */
  failure(e: unknown): NetError {
    const { host, port } = this;
    if (this.outer?.aborted) return new NetError("aborted", "dial aborted", { cause: e });
    if (this.#timedOut) {
      return new NetError("timeout", `dial ${host}:${port} timed out after ${this.timeoutMs} ms`);
    }
    return e instanceof NetError
      ? e
      : new NetError(classifyError(e), `dial ${host}:${port}: ${errorMessage(e)}`, { cause: e });
  }

  /**
   * The dial settled: off the wheel, the listener removed, and the controller, if it was never
   * aborted, kept for the next dial (Deno's connect removed its own abort step from the signal
   * before it settled, nothing else of ours is left on it, and nobody else ever sees it).
   */
  end(): void {
    deadlines.delete(this);
    if (this.outer) unlistenAbort(this.outer, this);
    if (!this.signal.aborted && idleControllers.length < maxIdleControllers) {
      idleControllers.push(this.#ac);
    }
  }
}

/**
 * Controllers of finished dials that were never aborted, for the next dials: a new
 * AbortController (its signal, the signal's step set that Deno's connect adds to) per dial
 * was about 0.5 KB and half a µs (issue 20). Bounded: a burst of dials leaves this many.
 */
const idleControllers: AbortController[] = [];
const maxIdleControllers = 256;

/** Try each resolved address of the name `host` in turn; `failure` types what went wrong. */
async function dialAddresses(
  host: string,
  port: number,
  prefer: "ipv6" | "ipv4",
  attempt: DialAttempt,
): Promise<Deno.TcpConn> {
  const signal = attempt.signal;
  let addrs: string[];
  try {
    addrs = await raceSignal(resolveHost(host, prefer), signal);
  } catch (e) {
    throw attempt.failure(e);
  }
  let best: NetError | undefined;
  for (const hostname of addrs) {
    try {
      return noDelay(await Deno.connect({ hostname, port, signal }));
    } catch (e) {
      const err = attempt.failure(e);
      if (err.reason === "timeout" || err.reason === "aborted") throw err;
      if (!best || rank(err.reason) > rank(best.reason)) best = err;
    }
  }
  throw best ?? new NetError("other", `dial ${host}:${port}: no address worked`);
}

/** `host` without the brackets of `[v6]`. */
function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** `host` as an IP address (brackets removed), or undefined for a name. */
function addressLiteral(host: string): string | undefined {
  if (isIPv4Address(host)) return host; // the common case, without the IPv6 regex
  const bare = unbracket(host);
  return ipFamily(bare) !== 0 ? bare : undefined;
}

function rank(r: NetFailureReason): number {
  return ["other", "timeout", "network-unreachable", "host-unreachable", "refused"].indexOf(r);
}

/** Resolve/reject with `p`, or reject when `signal` aborts first. */
function raceSignal<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    // Removed as `p` settles, before the caller goes on: its dial's controller may be reused
    // by the next dial then, and must carry no listener of this one.
    p.then((v) => {
      signal.removeEventListener("abort", onAbort);
      resolve(v);
    }, (e) => {
      signal.removeEventListener("abort", onAbort);
      reject(e);
    });
  });
}
