/**
 * Chains of upstream hops (`--forward` repeated, like gost's `-F`): every outgoing
 * connection goes through hop 1, then hop 2 ... then the destination. A hop is a SOCKS5 proxy
 * (`socks5://`), an HTTP CONNECT proxy (`http://`) or a seaprox link (`link://`), mixed
 * freely; each is reached through the hops before it.
 *
 * Failures name their hop. A hop that cannot be reached or refuses us (down, wrong
 * credentials, garbage) is a {@linkcode ChainHopError}: reason "other" (SOCKS5 reply 0x01,
 * HTTP 502) or "timeout" (0x06, 504). The destination failing behind the last hop keeps the
 * reason that hop reported (refused 0x05, not-allowed 0x02 / 403 ...), its message naming the hop.
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import { abortSignalOf } from "../net/abort.ts";
import { closeQuietly, PrefixedDuplex } from "../net/duplex.ts";
import { classifyError, errorMessage, NetError, type NetFailureReason } from "../net/errors.ts";
import { httpConnect, HttpConnectError } from "../http/mod.ts";
import { socks5Connect, Socks5ReplyError } from "../socks5/mod.ts";
import { type DialedConn, type Dialer, directDialer } from "./dialer.ts";
import { dialViaProxy, proxyFor, type ProxySettings } from "../transport/mod.ts";
import { LinkClient, type LinkClientOptions, LinkDialError } from "./link.ts";
import { QuicLinkClient } from "./link_quic.ts";
import type { Credentials, ForwardSpec } from "./url.ts";
import { directUdpOpener, type UdpChannelOpener } from "../udp/mod.ts";
import {
  chainUdpRefusal,
  httpNoUdp,
  linkHopUdp,
  refusingUdpOpener,
  socks5HopUdp,
} from "./udp_chain.ts";

/** Options of {@linkcode socks5ChainDialer}. */
export interface ChainDialerOptions {
  /** The upstream SOCKS5 proxy. */
  upstream: HostPort;
  /** Credentials for the upstream (RFC 1929). */
  auth?: Credentials;
  /** How the upstream itself is reached. */
  via: Dialer;
}

/**
 * Hop `hop` of a chain (1-based, of `of`) could not be used: unreachable, or it refused or
 * garbled our handshake. The destination was never asked for.
 */
export class ChainHopError extends NetError {
  override name = "ChainHopError";
  constructor(
    readonly hop: number,
    readonly hopUrl: string,
    reason: NetFailureReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(reason, message, options);
  }
}

/** A hop failure keeps "timeout" and "aborted"; anything else is "other" (not the dest's fault). */
function hopReason(err: unknown): NetFailureReason {
  const r = classifyError(err);
  return r === "timeout" || r === "aborted" ? r : "other";
}

/** A failure the hop reported about the address it was asked to reach (a reply, a status). */
function isDestFailure(err: unknown): boolean {
  return err instanceof Socks5ReplyError || err instanceof HttpConnectError ||
    err instanceof LinkDialError;
}

interface HopInfo {
  /** 1-based position and chain length, for messages. */
  index: number;
  of: number;
  display: string;
}

/**
 * Wrap the handshake of one hop: reaching it through `via` and the hop's own failures become
 * {@linkcode ChainHopError}s naming it (an earlier hop's error passes through unchanged); a
 * failure the hop reports about `dest` keeps its reason, named after the hop.
 */
function hopDialer(
  info: HopInfo,
  addr: HostPort,
  via: Dialer,
  handshake: (up: DialedConn, dest: HostPort) => Promise<DialedConn>,
): Dialer {
  const name = `hop ${info.index}/${info.of} ${info.display}`;
  return async (dest, abort) => {
    const signal = abortSignalOf(abort); // listened to below
    let up: DialedConn;
    try {
      up = await via(addr, signal);
    } catch (err) {
      if (err instanceof ChainHopError) throw err;
      throw new ChainHopError(
        info.index,
        info.display,
        hopReason(err),
        `${name} unreachable: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    const onAbort = () => closeQuietly(up);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await handshake(up, dest);
    } catch (err) {
      closeQuietly(up);
      if (signal.aborted) throw new NetError("aborted", "dial aborted", { cause: err });
      if (isDestFailure(err)) {
        throw new NetError(classifyError(err), `${name}: ${errorMessage(err)}`, { cause: err });
      }
      throw new ChainHopError(
        info.index,
        info.display,
        hopReason(err),
        `${name} failed: ${errorMessage(err)}`,
        { cause: err },
      );
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  };
}

/**
 * A link hop: the session is the LinkClient's (kept up in the background); a stream per
 * connection. The link being down is the hop's failure; the far node's refusal is the dest's.
 */
function linkHopDialer(info: HopInfo, link: { dial: Dialer }): Dialer {
  const name = `hop ${info.index}/${info.of} ${info.display}`;
  return async (dest, signal) => {
    try {
      return await link.dial(dest, signal);
    } catch (err) {
      if (signal.aborted) throw new NetError("aborted", "dial aborted", { cause: err });
      if (err instanceof LinkDialError) {
        throw new NetError(err.reason, `${name}: ${errorMessage(err)}`, { cause: err });
      }
      throw new ChainHopError(
        info.index,
        info.display,
        hopReason(err),
        `${name} unreachable: ${errorMessage(err)}`,
        { cause: err },
      );
    }
  };
}

/** The SOCKS5 CONNECT of a hop; the conn's `localAddr` becomes the bound address reported. */
async function socks5Handshake(
  up: DialedConn,
  dest: HostPort,
  auth?: Credentials,
): Promise<DialedConn> {
  const res = await socks5Connect(up, dest, { username: auth?.username, password: auth?.password });
  const bound: Deno.NetAddr = { transport: "tcp", hostname: res.bound.host, port: res.bound.port };
  // A fresh object (never the TcpConn itself) carries the upstream's bound address.
  return Object.assign(new PrefixedDuplex(up, res.leftover), { localAddr: bound });
}

/** The HTTP CONNECT of a hop (no bound address: HTTP does not tell one). */
async function httpHandshake(
  up: DialedConn,
  dest: HostPort,
  auth?: Credentials,
): Promise<DialedConn> {
  const { leftover } = await httpConnect(up, dest, { auth });
  return new PrefixedDuplex(up, leftover);
}

/**
 * A Dialer that reaches every destination through an upstream SOCKS5 proxy. Host names are
 * passed to the upstream unresolved (like `socks5h`). The returned conn's `localAddr` is the
 * bound address the upstream reported.
 *
 * @example
 * ```ts
 * import { directDialer, serveProxy, socks5ChainDialer, socks5Proxy } from "./mod.ts";
 * // An upstream SOCKS5 proxy (here another warren one on loopback) that every dial goes through.
 * const upstream = serveProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), socks5Proxy(), {
 *   dialer: directDialer(),
 * });
 * const d = socks5ChainDialer({
 *   upstream: { host: "127.0.0.1", port: upstream.addr.port },
 *   via: directDialer(),
 * });
 * const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const reached = target.accept();
 * const conn = await d({ host: "127.0.0.1", port: target.addr.port }, AbortSignal.timeout(10_000));
 * (await reached).close();
 * conn.close();
 * target.close();
 * await upstream.stop();
 * ```
 */
export function socks5ChainDialer(opts: ChainDialerOptions): Dialer {
  const display = `socks5://${opts.upstream.host}:${opts.upstream.port}`;
  return hopDialer(
    { index: 1, of: 1, display },
    opts.upstream,
    opts.via,
    (up, dest) => socks5Handshake(up, dest, opts.auth),
  );
}

/** Options of {@linkcode startChain}. */
export interface ChainOptions {
  /** How the first hop is reached (direct TCP in seaprox). */
  base: Dialer;
  /**
   * How datagrams reach a first SOCKS5 hop's relay, or why they cannot (a string: the egress
   * proxy carries no UDP). @default from this host
   */
  baseUdp?: UdpChannelOpener | string;
  /**
   * Options of a `link://` hop's {@linkcode LinkClient} (token, and for a first hop TLS and
   * transport); `addr` and `via` are the chain's.
   */
  link?: Omit<LinkClientOptions, "addr" | "via">;
}

/** Options of {@linkcode seaproxChain}: a service's dial and link settings. */
export interface SeaproxChainOptions {
  prefer?: "ipv6" | "ipv4";
  dialTimeoutMs?: number;
  /** The link token, TLS and transport (a first-hop link) of link hops. */
  link: Omit<LinkClientOptions, "addr" | "via" | "proxy">;
  /** Reach the first hop through this egress proxy (`--proxy`, `ALL_PROXY` ...), if it applies. */
  proxy?: ProxySettings;
}

/**
 * seaprox's chain from its hops (undefined when there are none): hop 1 reached directly or
 * through the egress proxy (`proxy`, NO_PROXY respected; a first-hop link keeps its TLS over
 * it), the rest as {@linkcode startChain} does.
 */
export function seaproxChain(
  hops: readonly ForwardSpec[],
  opts: SeaproxChainOptions,
): Chain | undefined {
  if (hops.length === 0) return undefined;
  const direct = directDialer({ prefer: opts.prefer, timeoutMs: opts.dialTimeoutMs });
  const base: Dialer = (dest, signal) => {
    const proxy = proxyFor(opts.proxy, dest, false);
    if (!proxy) return direct(dest, signal);
    return dialViaProxy(proxy, dest, {
      timeoutMs: opts.dialTimeoutMs,
      signal: abortSignalOf(signal),
    })
      .then(({ conn, leftover }) =>
        leftover.length > 0 ? new PrefixedDuplex(conn, leftover) : conn
      );
  };
  const egress = proxyFor(opts.proxy, hops[0].addr, false);
  return startChain(hops, {
    base,
    baseUdp: egress
      ? `hop 1/${hops.length} ${hops[0].display} is reached through the egress proxy, ` +
        "which carries no UDP"
      : directUdpOpener({ prefer: opts.prefer }),
    link: { ...opts.link, proxy: opts.proxy },
  });
}

/** A running chain: its Dialer, and the link sessions it keeps up. */
export interface Chain {
  /** Reach a destination through every hop in order. */
  dial: Dialer;
  /**
   * UDP through every hop in order (udp_chain.ts): datagrams leave behind the last hop.
   * Rejects with `UdpUnsupportedError` naming the hop that cannot carry UDP.
   */
  udp: UdpChannelOpener;
  /** Why the chain cannot carry UDP at all (a hop kind that never can), if so. */
  udpRefusal?: string;
  /** The link hops' clients (in hop order), for status and shutdown. */
  links: LinkClient[];
  /** The quic:// hop's client, if the chain starts with one. */
  quic?: QuicLinkClient;
  /** Close the link sessions. */
  close(): Promise<void>;
}

/**
 * Build the chain `hops` (in the order given): hop 1 is reached through `opts.base`, hop n
 * through hops 1...n-1, and the destination through all of them. Link hops start their session
 * at once (redialled in the background); a link hop after the first needs no TLS/ws (it runs
 * over the stream the earlier hops opened). An empty chain dials through `opts.base`.
 *
 * @example
 * ```ts
 * import { directDialer, httpProxy, parseForwardUrl, serveProxy, socks5Proxy, startChain } from "./mod.ts";
 * const listen = () => Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const a = serveProxy(listen(), socks5Proxy(), { dialer: directDialer() });
 * const b = serveProxy(listen(), httpProxy(), { dialer: directDialer() });
 * const chain = startChain(
 *   [`socks5://127.0.0.1:${a.addr.port}`, `http://127.0.0.1:${b.addr.port}`].map(parseForwardUrl),
 *   { base: directDialer() },
 * );
 * const target = listen();
 * const reached = target.accept();
 * const conn = await chain.dial({ host: "127.0.0.1", port: target.addr.port }, AbortSignal.timeout(10_000));
 * (await reached).close();
 * conn.close();
 * target.close();
 * await chain.close();
 * await a.stop();
 * await b.stop();
 * ```
 */
export function startChain(hops: readonly ForwardSpec[], opts: ChainOptions): Chain {
  let dial = opts.base;
  const baseUdp = opts.baseUdp ?? directUdpOpener();
  /** The UDP path so far (refusing, naming the hop, where a hop cannot carry it). */
  let udp = typeof baseUdp === "string" ? refusingUdpOpener(baseUdp) : baseUdp;
  const links: LinkClient[] = [];
  let quic: QuicLinkClient | undefined;
  hops.forEach((spec, i) => {
    const info = { index: i + 1, of: hops.length, display: spec.display };
    const name = `hop ${info.index}/${info.of} ${info.display}`;
    const via = dial;
    if (spec.scheme === "quic") {
      // QUIC runs over UDP from this host: it cannot ride the TCP streams of earlier hops.
      if (i !== 0) throw new Error(`${spec.display}: a quic:// hop must be the first`);
      if (!opts.link) throw new Error(`${spec.display}: a quic hop needs link options (token)`);
      const { token, tls, log } = opts.link;
      quic = new QuicLinkClient({ addr: spec.addr, token, tls, log });
      dial = linkHopDialer(info, quic);
      udp = linkHopUdp(name, quic.openUdp);
    } else if (spec.scheme === "link") {
      if (!opts.link) throw new Error(`${spec.display}: a link hop needs link options (token)`);
      const link = new LinkClient({
        ...opts.link,
        addr: spec.addr,
        via: i === 0 ? undefined : via,
      });
      links.push(link);
      dial = linkHopDialer(info, link);
      udp = linkHopUdp(name, link.openUdp);
    } else {
      const handshake = spec.scheme === "socks5" ? socks5Handshake : httpHandshake;
      dial = hopDialer(info, spec.addr, via, (up, dest) => handshake(up, dest, spec.auth));
      udp = spec.scheme === "http"
        ? refusingUdpOpener(httpNoUdp(name))
        : socks5HopUdp(name, spec.addr, spec.auth, via, udp);
    }
  });
  return {
    dial,
    udp,
    udpRefusal: chainUdpRefusal(hops, typeof baseUdp === "string" ? baseUdp : undefined),
    links,
    quic,
    close: async () => {
      await Promise.all([...links.map((l) => l.close()), quic?.close()]);
    },
  };
}
