/**
 * Dialling one path, optionally from a given local address.
 *
 * `Deno.connect` cannot bind a local address; `node:net`'s `connect({ localAddress })` can
 * (checked under Deno 2.9.6), so a path with a local address uses lib/net `dialFrom` (a node
 * socket wrapped as a Duplex), and one without uses lib/net `dial`.
 * @module
 */

import { dial } from "../net/dial.ts";
import type { Duplex } from "../net/duplex.ts";
import { joinHostPort } from "../net/addr.ts";
import { dialFrom } from "../net/node_socket.ts";
import { connectTls, type TlsClientConfig } from "../transport/tls.ts";

/** Where one path goes, and from where. */
export interface PathSpec {
  /** Server host (name or IP). */
  host: string;
  /** Server port. */
  port: number;
  /** Local address to bind (selects the interface/link). */
  localAddress?: string;
}

/** Render a path spec as `local>host:port` or `host:port`. */
export function formatPathSpec(p: PathSpec): string {
  const remote = joinHostPort(p.host, p.port);
  return p.localAddress ? `${p.localAddress}>${remote}` : remote;
}

/**
 * Connect one path; rejects with a NetError (or a TlsError when `opts.tls` is set and the
 * handshake fails: wrong CA, host name, no client certificate …).
 */
export function dialPath(
  spec: PathSpec,
  opts: { timeoutMs?: number; signal?: AbortSignal; tls?: TlsClientConfig } = {},
): Promise<Duplex> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  if (opts.tls) {
    return connectTls(spec.host, spec.port, opts.tls, {
      timeoutMs,
      signal: opts.signal,
      localAddress: spec.localAddress,
    });
  }
  if (!spec.localAddress) return dial(spec.host, spec.port, { timeoutMs, signal: opts.signal });
  return dialFrom(spec.host, spec.port, spec.localAddress, { timeoutMs, signal: opts.signal });
}
