/**
 * Security flags shared by every service: TLS server and client flags (typed definitions for
 * lib/config) and their configs, loaded (files read, certificates parsed) so a config check
 * catches a bad file; and the link listener with TLS handshake failures counted. Throws,
 * never exits: services/_kit.ts is the process side.
 *
 * Flag names (the same in every service):
 * - server side of a link: `--tls-cert`, `--tls-key`, and `--tls-client-ca` to require and
 *   verify client certificates (mutual TLS);
 * - client side: `--tls` (TLS with the system roots), `--tls-ca`, `--tls-server-name`,
 *   `--tls-client-cert` + `--tls-client-key` (any of them implies `--tls`).
 * @module
 */

import { type FlagDefs, FlagError } from "./config/mod.ts";
import { type HostPort, isLoopbackHost } from "./net/addr.ts";
import { sharedPortOptions } from "./net/worker_slot.ts";
import type { Logger } from "./log.ts";
import { counter } from "./stats.ts";
import {
  listenTls,
  loadTlsClientConfig,
  loadTlsServerConfig,
  type TlsClientConfig,
  TlsError,
  type TlsListener,
  type TlsServerConfig,
} from "./transport/tls.ts";
import { transportNames } from "./transport/endpoint.ts";
import { ProxyConfigError, type ProxySettings, proxySettings } from "./transport/proxy.ts";

export {
  PlaceholderSecretError,
  placeholderSecretPrefix,
  readSecretFile,
  refusePlaceholder,
} from "./config/mod.ts";
export { isLoopbackHost } from "./net/addr.ts";

/**
 * Failed TLS handshakes per listener and reason (`--metrics`): a client without a certificate,
 * a wrong CA or plaintext to a TLS port shows here, not only in the log.
 */
export const tlsHandshakeFailures = counter(
  "warren_tls_handshake_failures_total",
  "TLS handshakes that failed, by listener and reason",
  ["listener", "reason"],
);

/** Flags of a TLS server (listener of a warren-to-warren link). */
export const tlsServerFlags = {
  "tls-cert": {
    kind: "string",
    arg: "file",
    env: "WARREN_TLS_CERT",
    help: "serve TLS with this certificate chain (PEM); needs --tls-key",
  },
  "tls-key": { kind: "string", arg: "file", env: "WARREN_TLS_KEY", help: "private key (PEM)" },
  "tls-client-ca": {
    kind: "string",
    arg: "file",
    env: "WARREN_TLS_CLIENT_CA",
    help: "require client certificates signed by this CA (mutual TLS)",
  },
} as const satisfies FlagDefs;

/** Flags of a TLS client (dialler of a warren-to-warren link). */
export const tlsClientFlags = {
  tls: { kind: "boolean", help: "connect with TLS (system CAs unless --tls-ca)" },
  "tls-ca": {
    kind: "string",
    arg: "file",
    env: "WARREN_TLS_CA",
    help: "trust this CA (PEM) for the server certificate; implies --tls",
  },
  "tls-server-name": {
    kind: "string",
    arg: "name",
    help: "verify the server certificate for this name instead of the dialled host",
  },
  "tls-client-cert": {
    kind: "string",
    arg: "file",
    env: "WARREN_TLS_CLIENT_CERT",
    help: "present this client certificate (mutual TLS); needs --tls-client-key",
  },
  "tls-client-key": {
    kind: "string",
    arg: "file",
    env: "WARREN_TLS_CLIENT_KEY",
    help: "key of --tls-client-cert",
  },
} as const satisfies FlagDefs;

/**
 * `--transport tcp|ws`: what carries a warren-to-warren link (both ends must say the same;
 * TLS comes from the TLS flags, so ws with TLS is wss). WebSocket passes HTTP-only proxies.
 */
export const transportFlags = {
  transport: {
    kind: "choice",
    choices: transportNames,
    arg: "tcp|ws",
    default: "tcp",
    env: "WARREN_TRANSPORT",
    help: "carrier of the link: tcp, or ws (WebSocket; wss with TLS); both ends must agree",
  },
} as const satisfies FlagDefs;

/**
 * The egress proxy flags of clients (like chisel's `--proxy`): reach the server through an
 * HTTP CONNECT or SOCKS5 proxy. See lib/transport `proxySettings`.
 */
export const proxyFlags = {
  proxy: {
    kind: "string",
    arg: "url",
    env: "ALL_PROXY",
    help: "reach the server through this proxy: http://[user:pass@]host:port (CONNECT) or " +
      "socks5://[user:pass@]host:port",
  },
  "https-proxy": {
    kind: "string",
    arg: "url",
    env: "HTTPS_PROXY",
    help: "the proxy for TLS carriers (https, wss, tls), instead of --proxy",
  },
  "no-proxy": {
    kind: "string",
    arg: "list",
    env: "NO_PROXY",
    help: "comma-separated servers reached directly: host, .domain, IP, host:port, * for all",
  },
} as const satisfies FlagDefs;

/** The proxy settings of {@linkcode proxyFlags}; throws FlagError for a bad URL. */
export function proxyFromFlags(
  f: { proxy?: string; "https-proxy"?: string; "no-proxy"?: string },
): ProxySettings | undefined {
  if (!f.proxy && !f["https-proxy"]) return undefined;
  try {
    return proxySettings({ all: f.proxy, https: f["https-proxy"], noProxy: f["no-proxy"] });
  } catch (err) {
    if (err instanceof ProxyConfigError) throw new FlagError("proxy", `--proxy: ${err.message}`);
    throw err;
  }
}

/** Values of the TLS server flags. */
export type TlsServerFlagValues = {
  "tls-cert"?: string;
  "tls-key"?: string;
  "tls-client-ca"?: string;
};

/** Values of the TLS client flags. */
export type TlsClientFlagValues = {
  tls?: boolean;
  "tls-ca"?: string;
  "tls-server-name"?: string;
  "tls-client-cert"?: string;
  "tls-client-key"?: string;
};

/**
 * The server's TLS config from flags (files read, certificate and key parsed), or undefined
 * (plaintext). Throws `FlagError` on a missing pair or a bad file.
 */
export function tlsServerFromFlags(f: TlsServerFlagValues): TlsServerConfig | undefined {
  const cert = f["tls-cert"], key = f["tls-key"], ca = f["tls-client-ca"];
  if (!cert && !key) {
    if (ca) throw new FlagError("tls-client-ca", "--tls-client-ca needs --tls-cert and --tls-key");
    return undefined;
  }
  if (!cert || !key) throw new FlagError("tls-cert", "--tls-cert and --tls-key go together");
  try {
    return loadTlsServerConfig({ certFile: cert, keyFile: key, caFile: ca });
  } catch (err) {
    if (err instanceof TlsError) throw new FlagError("tls-cert", `TLS: ${err.message}`);
    throw err;
  }
}

/** Whether any TLS client flag is set (each implies TLS). */
export function tlsClientRequested(f: TlsClientFlagValues): boolean {
  return Boolean(
    f.tls || f["tls-ca"] || f["tls-server-name"] || f["tls-client-cert"] || f["tls-client-key"],
  );
}

/**
 * The client's TLS config from flags (files read and parsed), or undefined (plaintext).
 * Throws `FlagError` on a bad file.
 */
export function tlsClientFromFlags(f: TlsClientFlagValues): TlsClientConfig | undefined {
  if (!tlsClientRequested(f)) return undefined;
  try {
    return loadTlsClientConfig({
      caFile: f["tls-ca"],
      serverName: f["tls-server-name"],
      certFile: f["tls-client-cert"],
      keyFile: f["tls-client-key"],
    });
  } catch (err) {
    if (err instanceof TlsError) {
      throw new FlagError("tls-ca", `TLS: ${err.message} (--tls-ca/--tls-client-cert/-key)`);
    }
    throw err;
  }
}

/**
 * `listenTls` on `addr` with handshake failures counted per `what` and reason; throws
 * what binding throws (`Deno.errors.AddrInUse`, ...). The port is shared with this process's
 * fellow workers (lib/net `sharedPortOptions`) unless `own`.
 */
export function listenTlsCounted(
  addr: HostPort,
  cfg: TlsServerConfig,
  what: string,
  log: Logger,
  own = false,
): Promise<TlsListener> {
  return listenTls({ hostname: addr.host, port: addr.port }, cfg, {
    log,
    onHandshakeFailure: (reason) => tlsHandshakeFailures.inc({ listener: what, reason }),
    ...(own ? {} : sharedPortOptions()),
  });
}

/**
 * A warren-to-warren link listener: TLS when `cfg` is set, else plaintext with a warning when
 * not on loopback (anyone on the path reads it), naming the flags that `fix` it. Throws what
 * binding throws. Shared with the fellow workers like every public port, unless `own` (a
 * worker's own cluster port).
 */
export async function listenLink(
  addr: HostPort,
  cfg: TlsServerConfig | undefined,
  what: string,
  log: Logger,
  fix = "--tls-cert/--tls-key (and --tls-client-ca for mutual TLS)",
  own = false,
): Promise<Deno.Listener<Deno.Conn, Deno.NetAddr>> {
  if (cfg) return await listenTlsCounted(addr, cfg, what, log, own);
  if (!isLoopbackHost(addr.host)) {
    log.warn(`${what}: plaintext link on a non-loopback address; anyone on the path reads it`, {
      addr: `${addr.host}:${addr.port}`,
      fix,
    });
  }
  return Deno.listen({ hostname: addr.host, port: addr.port, ...(own ? {} : sharedPortOptions()) });
}
