/**
 * `startSeaprox(config)`: a whole seaprox in-process -- every listener URL bound, one shared
 * connection table (one limit across listeners), one Dialer (direct or chained through an
 * upstream chain). Used by services/seaprox.ts and by the demo.
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { Acl, aclDial } from "../net/acl.ts";
import { AuthFailureLimiter } from "../net/ratelimit.ts";
import { errorMessage, NetError } from "../net/errors.ts";
import { formatAddr } from "../net/serve.ts";
import { isLoopbackHost } from "../net/addr.ts";
import { originalDstUnavailable } from "../net/original_dst.ts";
import { sharedPortOptions } from "../net/worker_slot.ts";
import { defaultProxyProtocolFrom } from "../proxyproto/mod.ts";
import { staticCredentials } from "../socks5/mod.ts";
import { startChain } from "./chain.ts";
import { chainUdpRefusal } from "./udp_chain.ts";
import { ConnectionTable } from "./connection.ts";
import { type Dialer, directDialer } from "./dialer.ts";
import { httpProxy } from "./http.ts";
import type { Authenticator, ProxyType } from "./proxy_type.ts";
import { type ProxyHooks, type ProxyServer, serveProxy } from "./server.ts";
import { socks5Proxy } from "./socks5.ts";
import type { UdpAssociateOptions } from "./socks5_udp.ts";
import type { UdpChannelOpener } from "../udp/mod.ts";
import { staticProxy } from "./static.ts";
import { redirProxy } from "./redir.ts";
import { type ForwardSpec, type ListenerSpec, parseListenUrl, redact } from "./url.ts";

/** Configuration of {@linkcode startSeaprox}. */
export interface SeaproxConfig {
  listeners: ListenerSpec[];
  /**
   * Upstream hops every outgoing connection goes through, in order (SOCKS5 and HTTP CONNECT;
   * a chain with link hops is built with `startChain` and passed as `dialer`).
   */
  forward?: readonly ForwardSpec[];
  /** Address family tried first when dialling. @default "ipv6" */
  prefer?: "ipv6" | "ipv4";
  /** Connections at once across all listeners. @default 1024 */
  maxConns?: number;
  /** Connections one source (IPv4 address, IPv6 /64) may hold at once. @default max(64, maxConns / 4) */
  maxConnsPerSource?: number;
  /**
   * At the limit, the longest-idle connection is shed for a newcomer if it moved nothing for
   * this long. @default 10000
   */
  shedIdleMs?: number;
  /** Close a relay after this long without traffic; 0 = never. @default 300000 */
  idleTimeoutMs?: number;
  /** Time a client has for its handshake; 0 = off. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Time one dial may take. @default 10000 */
  dialTimeoutMs?: number;
  /**
   * Allow a SOCKS5 or HTTP listener without user:pass on a non-loopback address (an open
   * proxy). Without it such a listener is refused, at start and on reconcile. @default false
   */
  allowOpen?: boolean;
  /** Replace the Dialer entirely (a later "link" dialer plugs in here). */
  dialer?: Dialer;
  /**
   * Where SOCKS5 UDP ASSOCIATE datagrams leave when `dialer` is set (a chain's `udp`; its
   * `refusal` says why the chain carries none). Without it, a custom dialer refuses UDP
   * (0x07); `forward` hops carry it as chain.ts's `udp` does; no hops: from this host.
   */
  udp?: { open: UdpChannelOpener; refusal?: string };
  /**
   * Destination allow/deny lists. With the direct dialer every resolved address is checked
   * and only checked addresses are dialled; through `forward` or a custom dialer (link) the
   * far side resolves, so names and IP literals are checked here. A refusal is
   * `NetError("not-allowed")`: SOCKS5 reply 0x02, HTTP 403.
   */
  acl?: Acl;
  /**
   * Peers whose PROXY headers a `?proxy-protocol=1` listener takes (CIDRs / addresses as
   * allow rules). @default loopback only (127.0.0.0/8, ::1)
   */
  proxyProtocolFrom?: readonly string[];
  /** Limits failed user:pass checks per client address across listeners. @default 5 in a
   * burst, then 6 per minute */
  authLimiter?: AuthFailureLimiter;
  log?: Logger;
  hooks?: ProxyHooks;
}

/** A listener could not be bound. */
export class ListenError extends Error {
  override name = "ListenError";
  constructor(
    readonly reason: "addr-in-use" | "other",
    readonly spec: ListenerSpec,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * Why `spec` must not start: an unauthenticated SOCKS5/HTTP proxy reachable from other
 * machines, unless `allowOpen`. A config check calls this without binding anything.
 */
export function openProxyProblem(spec: ListenerSpec, allowOpen = false): string | undefined {
  return (spec.scheme === "socks5" || spec.scheme === "http") && !spec.auth &&
      !isLoopbackHost(spec.addr.host) && !allowOpen
    ? `${spec.display}: refusing an open ${spec.scheme} proxy on a non-loopback address ` +
      `(add user:pass@ to the URL, or --allow-open if that is really intended)`
    : undefined;
}

/**
 * Why `spec` cannot work in this process: a `redir` listener without the means to read
 * SO_ORIGINAL_DST (Linux, `--allow-ffi`). Checked at start, by a config check and on reload.
 */
export function listenerUnavailable(spec: ListenerSpec): string | undefined {
  const why = spec.scheme === "redir" ? originalDstUnavailable() : undefined;
  return why && `${spec.display}: ${why}`;
}

/** An open proxy refused by {@linkcode openProxyProblem}. */
export class OpenProxyError extends Error {
  override name = "OpenProxyError";
}

/** What {@linkcode Seaprox.reconcile} changed, by listener URL (passwords redacted). */
export interface ReconcileResult {
  added: string[];
  removed: string[];
}

/**
 * The listener changes that turn the running URLs into `wanted` (pure): URLs to bind and
 * URLs to stop, identity being the URL as written.
 */
export function diffListeners(
  running: readonly string[],
  wanted: readonly string[],
): { add: string[]; remove: string[] } {
  const want = new Set(wanted), have = new Set(running);
  return {
    add: [...want].filter((u) => !have.has(u)),
    remove: running.filter((u) => !want.has(u)),
  };
}

/** A running seaprox. */
export interface Seaprox {
  /** One server per listener, in the order given (then added ones). */
  servers: ProxyServer[];
  /** The spec of each server, index for index with `servers`. */
  specs: ListenerSpec[];
  table: ConnectionTable;
  /**
   * Bind one more listener sharing the connection table and dialer (config reload).
   * Throws {@linkcode ListenError} when it cannot be bound.
   */
  add(spec: ListenerSpec): Promise<ProxyServer>;
  /**
   * Stop accepting on a listener and forget it; its live connections go on until they end
   * (or until `drainMs`). Resolves when it is closed, not when its connections end.
   */
  remove(server: ProxyServer, drainMs?: number): Promise<void>;
  /**
   * Make the listeners exactly `urls` (a config reload): new URLs are bound, listeners whose
   * URL is gone stop accepting (their connections go on). All or nothing: a URL that does not
   * parse ({@linkcode ProxyUrlError}), an open proxy ({@linkcode OpenProxyError}) or a bind
   * failure ({@linkcode ListenError}) changes nothing.
   */
  reconcile(urls: readonly string[]): Promise<ReconcileResult>;
  /** Stop every listener, drain live connections up to `drainMs`, then cut them. */
  stop(drainMs?: number): Promise<void>;
}

/**
 * The proxy type a listener URL names; a SOCKS5 listener serves UDP ASSOCIATE when `udp` is
 * given (see {@linkcode udpAssociateFor}).
 */
export function proxyTypeFor(spec: ListenerSpec, udp?: UdpAssociateOptions): ProxyType {
  switch (spec.scheme) {
    case "static":
      return staticProxy(spec.to!);
    case "socks5":
      return socks5Proxy({ udp });
    case "http":
      return httpProxy();
    case "redir":
      return redirProxy();
  }
}

/**
 * UDP ASSOCIATE's settings for a config: datagrams leave through `cfg.udp` (a chain's), the
 * `forward` hops, or from this host; undefined (SOCKS5 reply 0x07) for a custom dialer with
 * no `udp`, so datagrams never leave from here when connections go elsewhere.
 */
export function udpAssociateFor(cfg: SeaproxConfig): UdpAssociateOptions | undefined {
  const base = { acl: cfg.acl, prefer: cfg.prefer, idleTimeoutMs: cfg.idleTimeoutMs };
  if (cfg.udp) return { ...base, open: cfg.udp.open };
  if (cfg.dialer) return undefined;
  if (!cfg.forward?.length) return base;
  const direct = directDialer({ prefer: cfg.prefer, timeoutMs: cfg.dialTimeoutMs });
  return { ...base, open: startChain(cfg.forward, { base: direct }).udp };
}

/** Why UDP ASSOCIATE is refused for a config, known before any client asks (its log line). */
function udpRefusalFor(cfg: SeaproxConfig): string | undefined {
  if (cfg.udp) return cfg.udp.refusal;
  if (cfg.dialer) return "connections leave through a custom dialer without UDP";
  return cfg.forward?.length ? chainUdpRefusal(cfg.forward) : undefined;
}

/** The credentials check of a listener URL with user:pass (constant-time compare). */
export function authenticatorFor(spec: ListenerSpec): Authenticator | undefined {
  return spec.auth ? staticCredentials(spec.auth.username, spec.auth.password) : undefined;
}

/**
 * The Dialer a config asks for: direct, or chained through `forward`; ACL-checked if set.
 * Throws for a link hop in `forward` (its session needs `startChain` and a `close`).
 */
export function dialerFor(cfg: SeaproxConfig): Dialer {
  const acl = cfg.acl && !cfg.acl.empty ? cfg.acl : undefined;
  if (cfg.dialer) return acl ? nameCheckedDialer(acl, cfg.dialer) : cfg.dialer;
  const direct = directDialer({ prefer: cfg.prefer, timeoutMs: cfg.dialTimeoutMs });
  if (!cfg.forward?.length) {
    if (!acl) return direct;
    return (dest, signal) =>
      aclDial(acl, dest, { prefer: cfg.prefer, timeoutMs: cfg.dialTimeoutMs, signal });
  }
  const chained = startChain(cfg.forward, { base: direct }).dial;
  return acl ? nameCheckedDialer(acl, chained) : chained;
}

/** A Dialer that refuses destinations the ACL denies by name or literal, then delegates. */
function nameCheckedDialer(acl: Acl, inner: Dialer): Dialer {
  return (dest, signal) => {
    const d = acl.check(dest);
    if (!d.allowed) {
      return Promise.reject(
        new NetError("not-allowed", `${dest.host}:${dest.port} refused by ${d.rule}`),
      );
    }
    return inner(dest, signal);
  };
}

/**
 * Bind every listener and start serving. Logs `listening` with `name=<scheme>` (`<scheme>-2`
 * ... for repeats) and the real address of each (port 0 works). If one cannot be bound, the ones already started are
 * stopped and a {@linkcode ListenError} is thrown.
 *
 * @example
 * ```ts
 * import { parseListenUrl, startSeaprox } from "./mod.ts";
 * const sp = await startSeaprox({ listeners: [parseListenUrl("socks5://127.0.0.1:0")] });
 * console.log(sp.servers[0].addr.port);
 * await sp.stop();
 * ```
 */
export async function startSeaprox(cfg: SeaproxConfig): Promise<Seaprox> {
  const log = cfg.log ?? silentLogger;
  const table = new ConnectionTable(cfg.maxConns ?? 1024, {
    maxPerSource: cfg.maxConnsPerSource,
    shedIdleMs: cfg.shedIdleMs,
  });
  const authLimiter = cfg.authLimiter ?? new AuthFailureLimiter();
  const dialer = dialerFor(cfg);
  const udp = udpAssociateFor(cfg);
  const udpRefusal = udpRefusalFor(cfg);
  const balancers = new Acl({ allow: cfg.proxyProtocolFrom ?? defaultProxyProtocolFrom });
  const trusted = (ip: string) => balancers.check({ host: ip, port: 0 }).allowed;
  const servers: ProxyServer[] = [];
  const specs: ListenerSpec[] = [];
  const seen = new Map<string, number>();
  const add = (spec: ListenerSpec): ProxyServer => {
    const open = openProxyProblem(spec, cfg.allowOpen);
    if (open) throw new OpenProxyError(open);
    // Listener names are the scheme; a second listener of the same scheme is "<scheme>-2"
    // so every "listening" line names a distinct listener.
    const count = (seen.get(spec.scheme) ?? 0) + 1;
    seen.set(spec.scheme, count);
    const name = count === 1 ? spec.scheme : `${spec.scheme}-${count}`;
    const unavailable = listenerUnavailable(spec);
    if (unavailable) throw new ListenError("other", spec, unavailable);
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({
        hostname: spec.addr.host,
        port: spec.addr.port,
        ...sharedPortOptions(),
      });
    } catch (err) {
      const busy = err instanceof Deno.errors.AddrInUse;
      throw new ListenError(
        busy ? "addr-in-use" : "other",
        spec,
        `${spec.display}: ${
          busy ? "address already in use" : `cannot listen: ${errorMessage(err)}`
        }`,
        { cause: err },
      );
    }
    const server = serveProxy(listener, proxyTypeFor(spec, udp), {
      dialer,
      table,
      idleTimeoutMs: cfg.idleTimeoutMs,
      handshakeTimeoutMs: cfg.handshakeTimeoutMs,
      authenticate: authenticatorFor(spec),
      authLimiter,
      acceptProxyProtocol: spec.proxyProtocol ? trusted : undefined,
      sendProxyProtocol: spec.sendProxy,
      log: log.child({ listener: name }),
      hooks: cfg.hooks,
    });
    servers.push(server);
    specs.push(spec);
    log.info("listening", {
      name,
      addr: formatAddr(server.addr),
      auth: spec.auth ? "user/pass" : "none",
      ...(spec.to ? { to: `${spec.to.host}:${spec.to.port}` } : {}),
      ...(spec.scheme === "socks5"
        ? { udpAssociate: udp && !udpRefusal ? "on" : "off", udpRefusal }
        : {}),
      ...(spec.proxyProtocol ? { proxyProtocol: "accept" } : {}),
      ...(spec.sendProxy ? { sendProxy: `v${spec.sendProxy}` } : {}),
    });
    return server;
  };
  for (const spec of cfg.listeners) {
    try {
      add(spec);
    } catch (err) {
      await Promise.all(servers.map((s) => s.stop(0)));
      throw err;
    }
  }
  /** Longest drain a timer can wait (setTimeout overflows past 2^31-1 ms). */
  const maxDrainMs = 0x7fffffff;
  const sp: Seaprox = {
    servers,
    specs,
    table,
    add: (spec) => Promise.resolve().then(() => add(spec)),
    reconcile: async (urls) => {
      const wanted = urls.map(parseListenUrl);
      for (const spec of wanted) {
        const open = openProxyProblem(spec, cfg.allowOpen);
        if (open) throw new OpenProxyError(open);
      }
      const diff = diffListeners(specs.map((s) => s.url), wanted.map((s) => s.url));
      const added: ProxyServer[] = [];
      try {
        for (const url of diff.add) added.push(add(wanted.find((s) => s.url === url)!));
      } catch (err) {
        for (const s of added) await sp.remove(s, 0);
        throw err;
      }
      const gone = servers.filter((_, i) => diff.remove.includes(specs[i].url));
      for (const s of gone) await sp.remove(s);
      return {
        added: added.map((s) => specs[servers.indexOf(s)].display),
        removed: diff.remove.map(redact),
      };
    },
    remove: (server, drainMs = maxDrainMs) => {
      const i = servers.indexOf(server);
      if (i < 0) return Promise.resolve();
      servers.splice(i, 1);
      const [spec] = specs.splice(i, 1);
      log.info("listener removed", { url: spec.display, addr: formatAddr(server.addr) });
      // Not awaited: the listener closes at once, its connections drain on their own time.
      void server.stop(drainMs);
      return Promise.resolve();
    },
    stop: async (drainMs) => {
      await Promise.all(servers.map((s) => s.stop(drainMs)));
    },
  };
  return sp;
}
