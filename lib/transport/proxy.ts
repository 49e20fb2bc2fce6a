/**
 * Leaving through a proxy (like chisel's `--proxy`): a client whose network only lets it
 * out through an HTTP CONNECT or SOCKS5 proxy reaches its server through one, whatever the
 * carrier on top (tcp, tls, ws, wss). Services take `--proxy` (or `ALL_PROXY`) for any
 * carrier, `--https-proxy` (or `HTTPS_PROXY`) for TLS carriers, and `--no-proxy` (or
 * `NO_PROXY`) for servers dialled directly. `HTTP_PROXY` is not read: our carriers are not
 * plain HTTP requests, and CGI environments let clients set it (httpoxy).
 * @module
 */

import { type HostPort, parseHostPort } from "../net/addr.ts";
import { closeQuietly } from "../net/duplex.ts";
import { dial } from "../net/dial.ts";
import { classifyError, errorMessage, NetError } from "../net/errors.ts";
import { httpConnect } from "../http/mod.ts";
import { socks5Connect } from "../socks5/mod.ts";

/** A proxy to leave through. */
export interface EgressProxy {
  kind: "socks5" | "http";
  addr: HostPort;
  /** Credentials (RFC 1929 for SOCKS5, `Proxy-Authorization: Basic` for HTTP); never logged. */
  auth?: { username: string; password: string };
  /** The URL without its password, for logs. */
  display: string;
}

/** Which proxy, if any, each server is reached through. */
export interface ProxySettings {
  /** For every carrier (`--proxy`, env `ALL_PROXY`). */
  all?: EgressProxy;
  /** For TLS carriers (tls, wss), winning over `all` there (`--https-proxy`, `HTTPS_PROXY`). */
  https?: EgressProxy;
  /** `NO_PROXY` entries: `*`, host names (suffix match), `.domain`, IP literals, `host:port`. */
  noProxy?: readonly string[];
}

/** A proxy URL that cannot be used. */
export class ProxyConfigError extends Error {
  override name = "ProxyConfigError";
}

const urlShape = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(?:([^@\/?#]*)@)?([^\/?#@]+)\/?$/;

/**
 * Parse `http://[user:pass@]host[:port]` (port 80 when left out, as curl does) or
 * `socks5://` / `socks5h://` `[user:pass@]host[:port]` (port 1080). Names are always resolved
 * by the proxy. Throws {@linkcode ProxyConfigError} for anything else (https:// proxies too).
 */
export function parseProxyUrl(url: string): EgressProxy {
  const m = urlShape.exec(url.trim());
  const scheme = m?.[1].toLowerCase();
  const kind = scheme === "http"
    ? "http"
    : scheme === "socks5" || scheme === "socks5h"
    ? "socks5"
    : undefined;
  const redacted = url.trim().replace(/^([a-zA-Z0-9+.-]+:\/\/[^:@\/]*:)[^@\/]*@/, "$1***@");
  if (!m || !kind) {
    throw new ProxyConfigError(
      `not a proxy URL: ${redacted} (want http://[user:pass@]host:port or socks5://\u2026)`,
    );
  }
  let addr: HostPort;
  try {
    const hp = m[3];
    const hasPort = /:\d+$/.test(hp) && !/^\[[^\]]*\]$/.test(hp);
    addr = parseHostPort(hasPort ? hp : `${hp}:${kind === "http" ? 80 : 1080}`);
  } catch (err) {
    throw new ProxyConfigError(`proxy ${redacted}: ${errorMessage(err)}`);
  }
  let auth: EgressProxy["auth"];
  if (m[2] !== undefined) {
    const i = m[2].indexOf(":");
    try {
      auth = {
        username: decodeURIComponent(i < 0 ? m[2] : m[2].slice(0, i)),
        password: decodeURIComponent(i < 0 ? "" : m[2].slice(i + 1)),
      };
    } catch {
      throw new ProxyConfigError(`proxy ${redacted}: bad percent-encoding in credentials`);
    }
  }
  return { kind, addr, auth, display: redacted };
}

/**
 * Proxy settings from their text (a service's `--proxy`/`ALL_PROXY`, `--https-proxy`/
 * `HTTPS_PROXY` and `--no-proxy`/`NO_PROXY`, comma-separated). Throws
 * {@linkcode ProxyConfigError} for a URL that is not a proxy.
 */
export function proxySettings(
  text: { all?: string; https?: string; noProxy?: string },
): ProxySettings {
  return {
    all: text.all ? parseProxyUrl(text.all) : undefined,
    https: text.https ? parseProxyUrl(text.https) : undefined,
    noProxy: (text.noProxy ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean),
  };
}

/** Whether NO_PROXY `entries` exempt `target`. */
export function bypassesProxy(target: HostPort, entries: readonly string[]): boolean {
  const host = target.host.toLowerCase().replace(/^\[|\]$/g, "");
  return entries.some((raw) => {
    if (raw === "*") return true;
    let e = raw, port: number | undefined;
    const m = /^(.*):(\d+)$/.exec(e);
    if (m && !m[1].includes(":")) (e = m[1], port = Number(m[2]));
    e = e.replace(/^\[|\]$/g, "").replace(/^\*?\./, "");
    if (port !== undefined && port !== target.port) return false;
    return host === e || host.endsWith(`.${e}`);
  });
}

/**
 * The proxy `target` is reached through under `s`, or undefined for a direct dial.
 *
 * @example
 * ```ts
 * import { proxyFor, proxySettings } from "./mod.ts";
 * const s = proxySettings({ all: "socks5://10.0.0.1:1080", noProxy: ".internal" });
 * console.assert(proxyFor(s, { host: "server.example", port: 7000 }, false)?.kind === "socks5");
 * console.assert(proxyFor(s, { host: "db.internal", port: 7000 }, false) === undefined);
 * ```
 */
export function proxyFor(
  s: ProxySettings | undefined,
  target: HostPort,
  tlsCarrier: boolean,
): EgressProxy | undefined {
  if (!s) return undefined;
  const p = tlsCarrier ? s.https ?? s.all : s.all;
  if (!p || bypassesProxy(target, s.noProxy ?? [])) return undefined;
  return p;
}

/** Options of {@linkcode dialViaProxy}. */
export interface ProxyDialOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * A TCP connection to `proxy`, asked (CONNECT or SOCKS5 CONNECT) for `dest`. Resolves with
 * the raw `Deno.TcpConn` (so TLS can start on it) once the proxy said yes, with the bytes it
 * sent past its answer. Failures are NetErrors naming the proxy: unreachable keeps its
 * reason; a refusal by the proxy keeps the reason it answered (403/0x02 not-allowed ...).
 */
export async function dialViaProxy(
  proxy: EgressProxy,
  dest: HostPort,
  opts: ProxyDialOptions = {},
): Promise<{ conn: Deno.TcpConn; leftover: Uint8Array }> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let conn: Deno.TcpConn;
  try {
    conn = await dial(proxy.addr.host, proxy.addr.port, { timeoutMs, signal: opts.signal });
  } catch (err) {
    throw new NetError(
      classifyError(err),
      `proxy ${proxy.display} unreachable: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  let timedOut = false;
  const cut = () => closeQuietly(conn);
  const timer = setTimeout(() => (timedOut = true, cut()), timeoutMs);
  opts.signal?.addEventListener("abort", cut, { once: true });
  try {
    const leftover = proxy.kind === "http"
      ? (await httpConnect(conn, dest, { auth: proxy.auth })).leftover
      : (await socks5Connect(conn, dest, {
        username: proxy.auth?.username,
        password: proxy.auth?.password,
      })).leftover;
    return { conn, leftover };
  } catch (err) {
    closeQuietly(conn);
    if (opts.signal?.aborted) throw new NetError("aborted", "dial aborted", { cause: err });
    const reason = timedOut ? "timeout" : err instanceof NetError ? err.reason : "other";
    throw new NetError(
      reason,
      `via proxy ${proxy.display}: ${errorMessage(err)}`,
      { cause: err },
    );
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", cut);
  }
}
