/**
 * Listener and upstream URLs: `static://127.0.0.1:9000?to=example.org:80`,
 * `socks5://[user:pass@]127.0.0.1:1080`, `http://[user:pass@]127.0.0.1:8080`,
 * `redir://0.0.0.0:12345` (transparent, behind an iptables REDIRECT rule), and the
 * `--forward` hops (`socks5://`, `http://`, `link://`). Parsed by hand rather than with
 * WHATWG `URL`, which silently drops default ports (`http://h:80` -> port "") and would
 * accept paths and fragments we have no use for.
 * @module
 */

import { AddressError, type HostPort, joinHostPort, parseHostPort } from "../net/addr.ts";

/** The proxy types a listener URL can name. */
export const listenerSchemes = ["static", "socks5", "http", "redir"] as const;

/** A proxy type name. */
export type ListenerScheme = typeof listenerSchemes[number];

/** Username and password from a URL's userinfo (percent-decoded). */
export interface Credentials {
  username: string;
  password: string;
}

/** A parsed `--listen` URL. */
export interface ListenerSpec {
  scheme: ListenerScheme;
  /** Address to bind (port 0 = kernel-chosen). */
  addr: HostPort;
  /** Credentials clients must present (SOCKS5 RFC 1929, HTTP Proxy-Authorization). */
  auth?: Credentials;
  /** Destination of a `static` listener (`?to=host:port`). */
  to?: HostPort;
  /** `?proxy-protocol=1`: expect a PROXY header (v1 or v2) from a trusted balancer first. */
  proxyProtocol?: boolean;
  /** `?send-proxy=1|2` (static): send a PROXY header of that version to the destination. */
  sendProxy?: 1 | 2;
  /** The URL as given, with any password replaced by `***` (safe to log). */
  display: string;
  /** The URL as given (trimmed; may hold a password): a listener's identity across reloads. */
  url: string;
}

/**
 * A parsed `--forward` URL: one hop of the upstream chain every outgoing connection goes
 * through -- a SOCKS5 proxy, an HTTP CONNECT proxy or a seaprox link.
 */
export interface ForwardSpec {
  scheme: "socks5" | "http" | "link" | "quic";
  addr: HostPort;
  /** Credentials for the hop (SOCKS5 RFC 1929, HTTP Proxy-Authorization; none for link). */
  auth?: Credentials;
  display: string;
}

/** Why a URL was rejected. */
export type UrlErrorReason =
  | "bad-url"
  | "bad-scheme"
  | "bad-address"
  | "missing-to"
  | "bad-option"
  | "bad-credentials";

/** A malformed listener or upstream URL, with a message fit for a one-line CLI error. */
export class ProxyUrlError extends Error {
  override name = "ProxyUrlError";
  constructor(readonly reason: UrlErrorReason, message: string) {
    super(message);
  }
}

interface RawUrl {
  scheme: string;
  auth?: Credentials;
  hostPort: string;
  query: URLSearchParams;
}

const urlShape = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(?:([^@\/?#]*)@)?([^\/?#@]*)\/?(?:\?([^#]*))?$/;

function splitUrl(s: string): RawUrl {
  const m = urlShape.exec(s.trim());
  if (!m) {
    throw new ProxyUrlError(
      "bad-url",
      `not a proxy URL: ${JSON.stringify(redact(s))} (want scheme://[user:pass@]host:port)`,
    );
  }
  let auth: Credentials | undefined;
  if (m[2] !== undefined) {
    const i = m[2].indexOf(":");
    try {
      auth = i < 0 ? { username: decodeURIComponent(m[2]), password: "" } : {
        username: decodeURIComponent(m[2].slice(0, i)),
        password: decodeURIComponent(m[2].slice(i + 1)),
      };
    } catch {
      throw new ProxyUrlError(
        "bad-credentials",
        `bad percent-encoding in credentials of ${redact(s)}`,
      );
    }
    if (auth.username === "") {
      throw new ProxyUrlError("bad-credentials", `empty user name in ${redact(s)}`);
    }
    if (auth.username.length > 255 || auth.password.length > 255) {
      throw new ProxyUrlError(
        "bad-credentials",
        `user name or password over 255 bytes in ${redact(s)}`,
      );
    }
  }
  return {
    scheme: m[1].toLowerCase(),
    auth,
    hostPort: m[3],
    query: new URLSearchParams(m[4] ?? ""),
  };
}

/** `s` with the password in its userinfo replaced by `***`. */
export function redact(s: string): string {
  return s.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^:@\/]*:)[^@\/]*@/, "$1***@");
}

function hostPortOf(raw: RawUrl, what: string, original: string): HostPort {
  if (raw.hostPort === "") {
    throw new ProxyUrlError("bad-address", `${what} has no host:port: ${redact(original)}`);
  }
  try {
    return parseHostPort(raw.hostPort);
  } catch (err) {
    if (err instanceof AddressError) {
      throw new ProxyUrlError(
        "bad-address",
        `${what} ${JSON.stringify(raw.hostPort)}: ${err.message} (in ${redact(original)})`,
      );
    }
    throw err;
  }
}

/**
 * Parse a `--listen` URL.
 *
 * @throws {ProxyUrlError} with reason "bad-scheme" (not static/socks5/http/redir), "missing-to"
 *   (static without `?to=`), "bad-address" (no or bad host:port, port over 65535),
 *   "bad-option" (unknown query parameter), "bad-credentials" or "bad-url".
 *
 * @example
 * ```ts
 * const spec = parseListenUrl("socks5://alice:s3cret@127.0.0.1:0");
 * console.assert(spec.scheme === "socks5" && spec.auth?.username === "alice");
 * ```
 */
export function parseListenUrl(s: string): ListenerSpec {
  const raw = splitUrl(s);
  if (!(listenerSchemes as readonly string[]).includes(raw.scheme)) {
    throw new ProxyUrlError(
      "bad-scheme",
      `unknown listener scheme "${raw.scheme}" in ${redact(s)} (want ${
        listenerSchemes.join(", ")
      })`,
    );
  }
  const scheme = raw.scheme as ListenerScheme;
  const addr = hostPortOf(raw, "listen address", s);
  // redir takes nothing: its clients are redirected as they are, never through a balancer.
  const allowed = scheme === "static"
    ? ["to", "proxy-protocol", "send-proxy"]
    : scheme === "redir"
    ? []
    : ["proxy-protocol"];
  for (const key of raw.query.keys()) {
    if (!allowed.includes(key)) {
      throw new ProxyUrlError("bad-option", `unknown option "${key}" in ${redact(s)}`);
    }
  }
  let to: HostPort | undefined;
  if (scheme === "static") {
    to = toOf(raw, "static", s);
    if (raw.auth) {
      throw new ProxyUrlError(
        "bad-credentials",
        `static listener takes no credentials: ${redact(s)}`,
      );
    }
  }
  if (scheme === "redir" && raw.auth) {
    throw new ProxyUrlError(
      "bad-credentials",
      `redir listener takes no credentials (its clients never see a proxy): ${redact(s)}`,
    );
  }
  const pp = raw.query.get("proxy-protocol");
  if (pp !== null && pp !== "1" && pp !== "0") {
    throw new ProxyUrlError("bad-option", `proxy-protocol=1 or 0, not ${pp}: ${redact(s)}`);
  }
  const sp = raw.query.get("send-proxy");
  if (sp !== null && sp !== "1" && sp !== "2") {
    throw new ProxyUrlError(
      "bad-option",
      `send-proxy=1 or 2 (the version), not ${sp}: ${redact(s)}`,
    );
  }
  return {
    scheme,
    addr,
    auth: raw.auth,
    to,
    proxyProtocol: pp === "1" || undefined,
    sendProxy: sp === null ? undefined : sp === "1" ? 1 : 2,
    display: redact(s.trim()),
    url: s.trim(),
  };
}

/** The `?to=host:port` of a `scheme` listener URL `s` (required, non-zero port). */
function toOf(raw: RawUrl, scheme: string, s: string): HostPort {
  const t = raw.query.get("to");
  if (!t) {
    throw new ProxyUrlError("missing-to", `${scheme} listener needs ?to=host:port: ${redact(s)}`);
  }
  let to: HostPort;
  try {
    to = parseHostPort(t);
  } catch (err) {
    if (err instanceof AddressError) {
      throw new ProxyUrlError("bad-address", `to=${t}: ${err.message} (in ${redact(s)})`);
    }
    throw err;
  }
  if (to.port === 0) throw new ProxyUrlError("bad-address", `to= needs a non-zero port: ${s}`);
  return to;
}

/** A parsed `udp://host:port?to=host:port[&max-flows=N]` listener: a static UDP forward. */
export interface UdpListenerSpec {
  /** Address to bind (port 0 = kernel-chosen). */
  addr: HostPort;
  /** Where every datagram goes. */
  to: HostPort;
  /** Peer flows held at once (`max-flows=`); lib/udp's default when unset. */
  maxFlows?: number;
  /** The URL as given. */
  display: string;
}

/** Whether `s` names a UDP listener (`udp://...`), served apart from the TCP proxy types. */
export function isUdpListenUrl(s: string): boolean {
  return /^udp:\/\//i.test(s.trim());
}

/**
 * Parse a `udp://host:port?to=host:port[&max-flows=N]` listener URL.
 *
 * @throws {ProxyUrlError} as {@linkcode parseListenUrl} ("bad-scheme" for another scheme,
 *   "bad-credentials" for user:pass, which UDP cannot check).
 *
 * @example
 * ```ts
 * const spec = parseUdpListenUrl("udp://127.0.0.1:5353?to=10.0.0.1:53&max-flows=256");
 * console.assert(spec.to.port === 53 && spec.maxFlows === 256);
 * ```
 */
export function parseUdpListenUrl(s: string): UdpListenerSpec {
  const raw = splitUrl(s);
  if (raw.scheme !== "udp") {
    throw new ProxyUrlError("bad-scheme", `not a udp:// listener: ${redact(s)}`);
  }
  if (raw.auth) {
    throw new ProxyUrlError("bad-credentials", `udp listener takes no credentials: ${redact(s)}`);
  }
  for (const key of raw.query.keys()) {
    if (key !== "to" && key !== "max-flows") {
      throw new ProxyUrlError("bad-option", `unknown option "${key}" in ${redact(s)}`);
    }
  }
  const mf = raw.query.get("max-flows");
  if (mf !== null && !/^[1-9]\d{0,6}$/.test(mf)) {
    throw new ProxyUrlError("bad-option", `max-flows=1..9999999, not ${mf}: ${redact(s)}`);
  }
  return {
    addr: hostPortOf(raw, "listen address", s),
    to: toOf(raw, "udp", s),
    maxFlows: mf === null ? undefined : Number(mf),
    display: redact(s.trim()),
  };
}

/** The hop kinds a `--forward` URL names, by URL scheme. */
const forwardSchemes: Readonly<Record<string, ForwardSpec["scheme"]>> = {
  socks5: "socks5",
  socks5h: "socks5",
  http: "http",
  link: "link",
  quic: "quic",
};

/**
 * Parse a `--forward` URL: `socks5://[user:pass@]host:port` (`socks5h` is a synonym: names
 * are always resolved by the upstream), `http://[user:pass@]host:port` (HTTP CONNECT) or
 * `link://host:port` (a seaprox link; its token is the service's) or `quic://host:port` (the
 * seaprox link over QUIC; a first hop only).
 *
 * @throws {ProxyUrlError} as {@linkcode parseListenUrl}.
 */
export function parseForwardUrl(s: string): ForwardSpec {
  const raw = splitUrl(s);
  const scheme = forwardSchemes[raw.scheme];
  if (!scheme) {
    throw new ProxyUrlError(
      "bad-scheme",
      `unsupported upstream scheme "${raw.scheme}" in ${redact(s)} ` +
        `(want socks5://, http://, link:// or quic://host:port)`,
    );
  }
  if ([...raw.query.keys()].length > 0) {
    throw new ProxyUrlError("bad-option", `upstream URL takes no options: ${redact(s)}`);
  }
  if ((scheme === "link" || scheme === "quic") && raw.auth) {
    throw new ProxyUrlError(
      "bad-credentials",
      `link hop takes no credentials (it uses the link token): ${redact(s)}`,
    );
  }
  const addr = hostPortOf(raw, "upstream address", s);
  if (addr.port === 0) throw new ProxyUrlError("bad-address", `upstream port 0 in ${redact(s)}`);
  return { scheme, addr, auth: raw.auth, display: redact(s.trim()) };
}

/** Render a listener URL for a bound address (used to log what actually listens). */
export function listenerUrl(spec: ListenerSpec, addr: HostPort = spec.addr): string {
  const user = spec.auth ? `${encodeURIComponent(spec.auth.username)}:***@` : "";
  const to = spec.to ? `?to=${joinHostPort(spec.to.host, spec.to.port)}` : "";
  return `${spec.scheme}://${user}${joinHostPort(addr.host, addr.port)}${to}`;
}
