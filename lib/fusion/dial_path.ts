/**
 * Dialling one path, optionally from a given local address.
 *
 * `Deno.connect` cannot bind a local address; `node:net`'s `connect({ localAddress })` can
 * (checked under Deno 2.9.6), so a path with a local address uses lib/net `dialFrom` (a node
 * socket wrapped as a Duplex), and one without uses lib/net `dial`.
 * @module
 */

import type { Duplex } from "../net/duplex.ts";
import { joinHostPort } from "../net/addr.ts";
import {
  dialTransport,
  proxyFor,
  type ProxySettings,
  type TlsClientConfig,
  transportKind,
  type TransportName,
} from "../transport/mod.ts";

/** Where one path goes, and from where. */
export interface PathSpec {
  /** Server host (name or IP). */
  host: string;
  /** Server port. */
  port: number;
  /** Local address to bind (selects the interface/link). */
  localAddress?: string;
  /** What carries this path (`ws://` in `--path`); the client's default when absent. */
  transport?: TransportName;
}

/** Render a path spec as `local>host:port` or `host:port` (`ws://host:port` for WebSocket). */
export function formatPathSpec(p: PathSpec): string {
  const remote = (p.transport === "ws" ? "ws://" : "") + joinHostPort(p.host, p.port);
  return p.localAddress ? `${p.localAddress}>${remote}` : remote;
}

/**
 * Connect one path over its carrier (TCP, or WebSocket with `transport: "ws"`; TLS when
 * `opts.tls` is set); rejects with a NetError, a TlsError when the TLS handshake fails (wrong
 * CA, host name, no client certificate ...) or an UpgradeError when the WebSocket is refused.
 */
export function dialPath(
  spec: PathSpec,
  opts: {
    timeoutMs?: number;
    signal?: AbortSignal;
    tls?: TlsClientConfig;
    transport?: TransportName;
    /** Proxy settings; a path with a local address is always dialled directly. */
    proxy?: ProxySettings;
  } = {},
): Promise<Duplex> {
  const name = spec.transport ?? opts.transport ?? "tcp";
  const kind = transportKind(name, opts.tls !== undefined);
  return dialTransport({ kind, host: spec.host, port: spec.port, path: "/" }, {
    timeoutMs: opts.timeoutMs ?? 5_000,
    signal: opts.signal,
    tls: opts.tls,
    localAddress: spec.localAddress,
    proxy: spec.localAddress === undefined
      ? proxyFor(opts.proxy, spec, opts.tls !== undefined)
      : undefined,
  });
}
