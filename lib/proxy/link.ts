/**
 * The seaprox link (seed 003's seaprox-to-seaprox connection) over lib/mux: one long-lived,
 * token-authenticated yamux session between two nodes; every outgoing connection of node A
 * is one stream, and node B dials the destination.
 *
 * - {@linkcode LinkClient} (node A, `--via link://host:port`): keeps the session up
 *   (redialled with backoff) and offers a {@linkcode Dialer}: the destination rides in the
 *   stream's SYN frame (open-with-data, no extra round trip) and B's first byte back is a
 *   typed result, so a refusal at B becomes `NetError("refused")` at A (SOCKS5 reply 0x05).
 * - {@linkcode serveLink} (node B, `--listen link://host:port`): accepts sessions, checks the
 *   token in constant time, dials each stream's destination with its own Dialer, relays.
 *
 * ## Wire format
 *
 * | when                     | direction | bytes                                                   |
 * | ------------------------ | --------- | ------------------------------------------------------- |
 * | connection hello         | A -> B     | `"WLNK"` · u8 version (1) · u16 token length · token    |
 * | hello reply              | B -> A     | u8: 0 ok, 1 bad token, 2 bad version (then B closes)    |
 * | then                     | both      | a yamux session (A is the client: odd stream ids)       |
 * | stream request (in SYN)  | A -> B     | u8 version (1) · u8 host length · host · u16 port       |
 * | stream reply             | B -> A     | u8 result (table below); 0 = connected, relay follows   |
 *
 * Results: 0 ok, 1 resolve, 2 refused, 3 host-unreachable, 4 network-unreachable, 5 timeout,
 * 6 not-allowed, 7 aborted, 8 other (also a malformed request). On a non-zero result B
 * closes the stream.
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { Session, type SessionOptions, type Stream } from "../mux/mod.ts";
import {
  Backoff,
  type BackoffOptions,
  BufferedReader,
  closeQuietly,
  closeWriteQuietly,
  type Duplex,
  errorMessage,
  type HostPort,
  joinHostPort,
  NetError,
  type NetFailureReason,
  netFailureReasons,
  relay,
  serve,
  type Server,
  sleep,
  timingSafeEqual,
  withPrefix,
  writeAll,
  writeQuietly,
} from "../net/mod.ts";
import { abortSignalOf } from "../net/abort.ts";
import { type AuthFailureLimiter, verifySecret } from "../net/ratelimit.ts";
import {
  dialTransport,
  proxyFor,
  type ProxySettings,
  type TlsClientConfig,
  transportKind,
  type TransportName,
  withTransport,
} from "../transport/mod.ts";
import type { DialedConn, Dialer } from "./dialer.ts";
import { LinkWait } from "./link_wait.ts";
import type { UdpChannelOpener } from "../udp/mod.ts";
import {
  encodeLinkUdpRequest,
  type LinkUdpNear,
  linkUdpRequest,
  readLinkUdpResult,
  serveLinkUdp,
  type ServeLinkUdpOptions,
  StreamUdpChannel,
} from "./udp_link.ts";

/** Connection hello magic. */
const linkMagic = new TextEncoder().encode("WLNK");
/** Link protocol version (hello and stream request). */
export const linkVersion = 1;

/** Stream results in wire order (index = code). */
const resultCodes: readonly ("ok" | NetFailureReason)[] = ["ok", ...netFailureReasons];

/** First byte of a TLS alert / handshake record: a TLS listener answering our plaintext hello. */
const tlsAlertRecord = 0x15;
const tlsHandshakeRecord = 0x16;

/**
 * How long node B holds the mux ACK of a new stream so it rides on the stream's result frame.
 * Why: one frame and one write per new stream instead of two. It was first the fix for B's
 * side of a TLS link running with Nagle on (`Deno.listenTls` connections have no
 * `setNoDelay`): the ACK at accept and the result after the dial were two small writes in a
 * row, the second waiting for A's delayed ACK, about 44 ms per proxied connection. TLS
 * listeners now get TCP_NODELAY (lib/net/tcp_nodelay.ts); this still spares the write,
 * and the stall where that cannot be set (no FFI permission). A dial slower than this sends
 * the ACK alone. Our link client never waits for the ACK.
 */
export const linkSynAckDelayMs = 1_000;

/** Hello reply codes. */
const helloOk = 0;
const helloBadToken = 1;
const helloBadVersion = 2;

/** Encode a stream request for `dest`. */
export function encodeLinkRequest(dest: HostPort): Uint8Array {
  const host = new TextEncoder().encode(dest.host);
  if (host.length > 255) throw new NetError("resolve", "host name longer than 255 bytes");
  const out = new Uint8Array(2 + host.length + 2);
  out[0] = linkVersion;
  out[1] = host.length;
  out.set(host, 2);
  out[2 + host.length] = dest.port >> 8;
  out[3 + host.length] = dest.port & 0xff;
  return out;
}

/** Encode a connection hello carrying `token`. */
export function encodeLinkHello(token: string): Uint8Array {
  const t = new TextEncoder().encode(token);
  const out = new Uint8Array(7 + t.length);
  out.set(linkMagic);
  out[4] = linkVersion;
  out[5] = t.length >> 8;
  out[6] = t.length & 0xff;
  out.set(t, 7);
  return out;
}

/**
 * Wait for the far node's one-byte result on a fresh link stream: the stream itself when it
 * reached `dest`, else a {@linkcode LinkDialError} with the far node's reason. `abort` tears
 * the stream down when `signal` fires. Shared by the TCP (mux) and QUIC links.
 */
export async function readLinkResult<S extends DialedConn>(
  stream: S,
  dest: HostPort,
  signal: AbortSignal,
  abort: () => void,
): Promise<S> {
  const one = new Uint8Array(1);
  signal.addEventListener("abort", abort, { once: true });
  let n: number | null;
  try {
    n = await stream.read(one);
  } catch (err) {
    if (signal.aborted) throw new NetError("aborted", "dial aborted", { cause: err });
    throw new NetError("other", `link stream failed: ${errorMessage(err)}`, { cause: err });
  } finally {
    signal.removeEventListener("abort", abort);
  }
  if (n === null) {
    stream.close();
    throw new NetError("other", "link: far node closed the stream without a result");
  }
  const result = resultCodes[one[0]] ?? "other";
  if (result === "ok") return stream;
  stream.close();
  throw new LinkDialError(
    result,
    `far node: ${result} dialling ${joinHostPort(dest.host, dest.port)}`,
  );
}

/** What a connection hello carried: the token, or a bad magic/version. */
export type LinkHello = { ok: true; token: string } | { ok: false };

/** Read a connection hello (magic, version, token) from `r`. */
export async function readLinkHello(r: BufferedReader): Promise<LinkHello> {
  const hello = await r.readExact(7);
  const magicOk = hello[0] === linkMagic[0] && hello[1] === linkMagic[1] &&
    hello[2] === linkMagic[2] && hello[3] === linkMagic[3];
  if (!magicOk || hello[4] !== linkVersion) return { ok: false };
  return {
    ok: true,
    token: new TextDecoder().decode(await r.readExact((hello[5] << 8) | hello[6])),
  };
}

/** Hello reply codes on the wire. */
export const linkHelloReply = { ok: helloOk, badToken: helloBadToken, badVersion: helloBadVersion };

/** Options of {@linkcode LinkClient}. */
export interface LinkClientOptions {
  /** The far node's link listener. */
  addr: HostPort;
  /** Shared secret; sent in the hello, never logged. */
  token: string;
  /** Connect with TLS (server certificate verified; client certificate for mutual TLS). */
  tls?: TlsClientConfig;
  /** What carries the link ("ws": WebSocket, wss with `tls`). @default "tcp" */
  transport?: TransportName;
  /** How long a dial waits for the session to be (re)established. @default 5000 */
  waitMs?: number;
  /** Time to connect and finish the hello. @default 10000 */
  connectTimeoutMs?: number;
  /** Redial backoff. */
  backoff?: BackoffOptions;
  /** Options of the mux session (keepalive 10 s by default). */
  session?: SessionOptions;
  /** Logger for link up/down events (never the token). */
  log?: Logger;
  /**
   * Leave through an HTTP CONNECT or SOCKS5 proxy to reach the server (`--proxy`,
   * `HTTPS_PROXY`/`ALL_PROXY`, `NO_PROXY`; lib/transport `proxySettings`).
   */
  proxy?: ProxySettings;
  /**
   * Reach the far node through this Dialer (the earlier hops of a chain) instead of
   * dialling it; the link then runs over that plain byte stream (no `tls`, `transport` tcp).
   */
  via?: Dialer;
}

/**
 * The far node of a link answered a stream with a failure: it could not reach `dest` (the
 * link itself is up). `reason` is the far node's typed failure.
 */
export class LinkDialError extends NetError {
  override name = "LinkDialError";
}

/**
 * The dialling end of a link: a session kept up in the background and a Dialer over it.
 *
 * @example
 * ```ts
 * import { directDialer, LinkClient, parseListenUrl, serveLink, startSeaprox } from "./mod.ts";
 * import { parseHostPort } from "../net/mod.ts";
 * import { socks5Connect } from "../socks5/mod.ts";
 * const token = "a-long-random-link-token";
 * // Host B: the far end of the link, dialing destinations directly.
 * const b = serveLink(Deno.listen({ hostname: "127.0.0.1", port: 0 }), {
 *   token,
 *   dialer: directDialer(),
 * });
 * // Host A: a SOCKS5 listener whose connections travel over the link to B.
 * const link = new LinkClient({ addr: parseHostPort(`127.0.0.1:${b.addr.port}`), token });
 * const listeners = [parseListenUrl("socks5://127.0.0.1:0")];
 * const sp = await startSeaprox({ listeners, dialer: link.dial });
 * const origin = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const c = await Deno.connect({ hostname: "127.0.0.1", port: sp.servers[0].addr.port });
 * const reached = origin.accept();
 * await socks5Connect(c, { host: "127.0.0.1", port: origin.addr.port }); // dialed by B
 * (await reached).close();
 * c.close();
 * origin.close();
 * // on shutdown:
 * await sp.stop();
 * await link.close();
 * await b.stop();
 * ```
 */
export class LinkClient {
  #opts: LinkClientOptions;
  #log: Logger;
  #session: Session | null = null;
  #stop = new AbortController();
  #wait: LinkWait<Session>;
  #loop: Promise<void>;

  /** Start keeping a session to `opts.addr` up (in the background, with backoff). */
  constructor(opts: LinkClientOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? silentLogger;
    this.#wait = new LinkWait(() => this.#session, this.#stop.signal, opts.waitMs ?? 5000);
    this.#loop = this.#run();
  }

  /** Whether a session is up right now. */
  get connected(): boolean {
    return this.#session !== null;
  }

  /** The current session (RTT, counters), if up. */
  get session(): Session | null {
    return this.#session;
  }

  /** The Dialer: one stream per connection, the far node dials `dest`. */
  readonly dial: Dialer = async (dest: HostPort, abort): Promise<DialedConn> => {
    const signal = abortSignalOf(abort);
    const session = await this.#wait.get(signal);
    let stream: Stream;
    try {
      stream = await session.open({ data: encodeLinkRequest(dest) });
    } catch (err) {
      throw new NetError("other", `link: ${errorMessage(err)}`, { cause: err });
    }
    return await readLinkResult(stream, dest, signal, () => stream.reset());
  };

  /**
   * A UDP association carried to the far node: one stream, datagrams framed on it, leaving
   * there. Rejects with udp_link.ts `UdpUnsupportedError` when the far node carries no UDP.
   */
  readonly openUdp: UdpChannelOpener = async ({ flows, tally, signal }) => {
    const session = await this.#wait.get(signal);
    let stream: Stream;
    try {
      stream = await session.open({ data: encodeLinkUdpRequest(0) });
    } catch (err) {
      throw new NetError("other", `link: ${errorMessage(err)}`, { cause: err });
    }
    const r = new BufferedReader(stream);
    const onAbort = () => stream.reset();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await readLinkUdpResult(r, "link");
    } catch (err) {
      stream.close();
      if (signal.aborted) throw new NetError("aborted", "udp open aborted", { cause: err });
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    const carried = withPrefix(stream, r.takeBuffered());
    return new StreamUdpChannel(carried, flows, (bytes) => tally.up(bytes), () => stream.reset());
  };

  /** Stop redialling and close the session (its streams end). */
  async close(): Promise<void> {
    this.#stop.abort();
    const s = this.#session;
    if (s) await s.close("normal");
    await this.#loop;
  }

  async #run(): Promise<void> {
    const backoff = new Backoff(this.#opts.backoff);
    const stop = this.#stop.signal;
    while (!stop.aborted) {
      try {
        const session = await this.#connect();
        if (stop.aborted) {
          await session.close();
          break;
        }
        backoff.reset();
        this.#session = session;
        this.#log.info("link up", {
          addr: joinHostPort(this.#opts.addr.host, this.#opts.addr.port),
        });
        this.#wait.up();
        const end = await session.closed;
        this.#session = null;
        if (!stop.aborted) this.#log.warn("link down", { end: end.reason, error: end.error });
      } catch (err) {
        const failed = this.#wait.failed(err); // pending dials fail with this reason
        // The original error keeps its own reason (a TlsError says unknown-ca, not-tls ...).
        this.#log.warn("link connect failed", { error: err instanceof Error ? err : failed });
      }
      if (stop.aborted) break;
      await sleep(backoff.next(), stop).catch(() => {
        // Stopped while waiting: the loop condition ends it.
      });
    }
  }

  async #connect(): Promise<Session> {
    const { addr } = this.#opts;
    const timeoutMs = this.#opts.connectTimeoutMs ?? 10_000;
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(timeoutMs)]);
    const { tls } = this.#opts;
    const kind = transportKind(this.#opts.transport ?? "tcp", tls !== undefined);
    const conn = this.#opts.via
      ? await this.#opts.via(addr, signal)
      : await dialTransport({ kind, ...addr, path: "/" }, {
        timeoutMs,
        signal,
        tls,
        proxy: proxyFor(this.#opts.proxy, addr, tls !== undefined),
      });
    try {
      const onAbort = () => closeQuietly(conn);
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        await writeAll(conn, encodeLinkHello(this.#opts.token));
        const r = new BufferedReader(conn);
        const status = await r.readByte();
        if (status === helloBadToken) throw new NetError("not-allowed", "link token rejected");
        if (status === tlsAlertRecord || status === tlsHandshakeRecord) {
          throw new NetError(
            "other",
            "link listener answered with TLS: dial it with --tls-ca/--tls",
          );
        }
        if (status !== helloOk) throw new NetError("other", `link hello refused (${status})`);
        return Session.client(withPrefix(conn, r.takeBuffered()), {
          keepaliveIntervalMs: 10_000,
          keepaliveTimeoutMs: 20_000,
          ...this.#opts.session,
          log: this.#log,
        });
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    } catch (err) {
      closeQuietly(conn);
      if (err instanceof NetError) throw err;
      const reason = signal.aborted ? "timeout" : "other";
      throw new NetError(reason, `link hello failed: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/** Options of {@linkcode serveLink} (`udp`: how UDP associations leave this node). */
export interface ServeLinkOptions extends ServeLinkUdpOptions {
  /** Shared secret the dialling node must present. */
  token: string;
  /** Limits failed token attempts per source address (wrong ones answered late). */
  authLimiter?: AuthFailureLimiter;
  /** How this node reaches destinations (direct, or chained). */
  dialer: Dialer;
  /** Time one destination dial may take. @default 10000 */
  dialTimeoutMs?: number;
  /** Close a relayed stream after this long without traffic; 0 = never. @default 300000 */
  idleTimeoutMs?: number;
  /** Link sessions at once. @default 64 */
  maxConns?: number;
  /**
   * Time a dialling node has to present its hello (after the transport's own handshake,
   * e.g. TLS); a slower one is cut. @default 10000
   */
  handshakeTimeoutMs?: number;
  /** What carries the links ("ws": a WebSocket upgrade on each). @default "tcp" */
  transport?: TransportName;
  /** Options of each mux session. */
  session?: SessionOptions;
  /** Logger for sessions and refused hellos (never the token). */
  log?: Logger;
}

/**
 * Accept link sessions on `listener` (token-checked in constant time) and serve each stream:
 * dial its destination with `opts.dialer`, answer the typed result, relay.
 */
export function serveLink(
  listener: Deno.Listener<Deno.Conn>,
  opts: ServeLinkOptions,
): Server {
  const log = opts.log ?? silentLogger;
  const carrier = transportKind(opts.transport ?? "tcp", false);
  return serve(
    listener,
    withTransport(carrier, async (conn, ctx) => {
      const r = new BufferedReader(conn);
      const hello = await readLinkHello(r);
      if (!hello.ok) {
        await writeQuietly(conn, new Uint8Array([helloBadVersion]));
        ctx.log.warn("link hello: bad magic or version", { remote: ctx.remote });
        return;
      }
      const token = hello.token;
      const tokenOk = await verifySecret(
        opts.authLimiter,
        ctx.remote,
        () => timingSafeEqual(token, opts.token),
        { signal: ctx.signal },
      );
      if (!tokenOk) {
        await writeQuietly(conn, new Uint8Array([helloBadToken]));
        ctx.log.warn("link hello: bad token", { remote: ctx.remote });
        return;
      }
      await writeAll(conn, new Uint8Array([helloOk]));
      ctx.handshakeDone();
      const session = Session.server(withPrefix(conn, r.takeBuffered()), {
        keepaliveIntervalMs: 10_000,
        keepaliveTimeoutMs: 20_000,
        synAckDelayMs: linkSynAckDelayMs,
        ...opts.session,
        log: ctx.log,
      });
      ctx.log.info("link session up", { remote: ctx.remote });
      const onStop = () => void session.close("normal");
      ctx.signal.addEventListener("abort", onStop, { once: true });
      const streams = new Set<Promise<void>>();
      for await (const s of session) {
        const p = serveLinkStream(s, opts, ctx.signal, log).finally(() => streams.delete(p));
        streams.add(p);
      }
      ctx.signal.removeEventListener("abort", onStop);
      const end = await session.closed;
      ctx.log.info("link session down", { end: end.reason, error: end.error });
      await Promise.all(streams);
    }),
    { maxConns: opts.maxConns ?? 64, handshakeTimeoutMs: opts.handshakeTimeoutMs, log },
  );
}

/**
 * Serve one link stream (TCP mux or QUIC): read its request, dial the destination with
 * `opts.dialer`, answer the typed result, relay until both sides end. A UDP request is
 * served by udp_link.ts `serveLinkUdp` (datagrams leave through `opts.udp`).
 */
export async function serveLinkStream(
  s: Duplex,
  opts: ServeLinkOptions,
  stop: AbortSignal,
  log: Logger,
  udpNear?: LinkUdpNear,
): Promise<void> {
  const r = new BufferedReader(s, 512);
  let dest: HostPort;
  try {
    const head = await r.readExact(2);
    if (head[0] === linkUdpRequest) {
      const rest = await r.readExact(3);
      const id = new DataView(Uint8Array.of(head[1], ...rest).buffer).getUint32(0);
      return await serveLinkUdp(withPrefix(s, r.takeBuffered()), id, opts, stop, log, udpNear);
    }
    if (head[0] !== linkVersion) throw new Error(`bad request version ${head[0]}`);
    const rest = await r.readExact(head[1] + 2);
    const host = new TextDecoder().decode(rest.subarray(0, head[1]));
    dest = { host, port: (rest[head[1]] << 8) | rest[head[1] + 1] };
  } catch (err) {
    log.debug("link: bad stream request", { error: err instanceof Error ? err : undefined });
    await writeQuietly(s, new Uint8Array([resultCodes.indexOf("other")]));
    s.close();
    return;
  }
  let upstream: DialedConn;
  try {
    const signal = AbortSignal.any([stop, AbortSignal.timeout(opts.dialTimeoutMs ?? 10_000)]);
    upstream = await opts.dialer(dest, signal);
  } catch (err) {
    const reason = err instanceof NetError ? err.reason : "other";
    log.debug("link: dial failed", { dest: joinHostPort(dest.host, dest.port), failure: reason });
    await writeQuietly(s, new Uint8Array([resultCodes.indexOf(reason)]));
    await closeWriteQuietly(s);
    s.close();
    return;
  }
  try {
    await writeAll(s, new Uint8Array([0]));
  } catch {
    // The stream died while we dialled: nothing to relay.
    closeQuietly(upstream);
    s.close();
    return;
  }
  await relay(withPrefix(s, r.takeBuffered()), upstream, {
    idleTimeoutMs: opts.idleTimeoutMs ?? 300_000,
    signal: stop,
  });
}
