/**
 * The `Dialer` seam: how a proxy reaches a destination. Proxy types never dial themselves;
 * they name a destination and the shared code dials through whichever Dialer the service
 * configured (direct TCP, an upstream SOCKS5 proxy, later a seaprox-to-seaprox link).
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import type { Duplex } from "../net/duplex.ts";
import { dial } from "../net/dial.ts";
import type { Abortable } from "../net/abort.ts";

/**
 * A connection a Dialer produced. `localAddr` is what a SOCKS5 reply reports as the bound
 * address; `remoteAddr` names the peer actually reached (for logs). Both are optional: a
 * mux stream has neither.
 */
export type DialedConn = Duplex & { localAddr?: Deno.Addr; remoteAddr?: Deno.Addr };

/**
 * Reach `dest`, or reject with a `NetError` whose `reason` says why (so SOCKS5 and HTTP can
 * map it to their reply codes). Must honour `signal` (reject with reason "aborted"): an
 * AbortSignal, or serve()'s connection context (lib/net `abortSignalOf` makes a signal of it
 * for an API that takes only those; lib/net's dial takes it as it is).
 */
export type Dialer = (dest: HostPort, signal: Abortable) => Promise<DialedConn>;

/** Options of {@linkcode directDialer}. */
export interface DirectDialerOptions {
  /** Address family tried first; the seed prefers IPv6. @default "ipv6" */
  prefer?: "ipv6" | "ipv4";
  /** Give up on one destination after this long. @default 10000 */
  timeoutMs?: number;
}

/**
 * A Dialer that opens a TCP connection from this host (lib/net `dial`: every resolved
 * address tried, preferred family first, failures typed).
 *
 * @example
 * ```ts
 * import { directDialer } from "./mod.ts";
 * const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const d = directDialer({ prefer: "ipv4", timeoutMs: 5000 });
 * const conn = await d({ host: "localhost", port: target.addr.port }, AbortSignal.timeout(10_000));
 * conn.close();
 * target.close();
 * ```
 */
export function directDialer(opts: DirectDialerOptions = {}): Dialer {
  return (dest, signal) =>
    dial(dest.host, dest.port, { prefer: opts.prefer, timeoutMs: opts.timeoutMs, signal });
}
