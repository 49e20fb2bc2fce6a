/**
 * The seaprox link over QUIC (seed 003's seaprox-proto-udp; `--listen quic://` /
 * `--via quic://`): one QUIC connection between two nodes, one bidirectional QUIC stream per
 * proxied connection. Unlike the TCP link (streams multiplexed over one TCP byte stream),
 * every stream has its own flow control and loss recovery: a slow reader or a lost packet on
 * one connection does not stall the others.
 *
 * Authentication: QUIC's TLS 1.3 authenticates the server (its certificate, checked against
 * `--tls-ca`); the client proves itself with the link token, in the same hello as the TCP
 * link, sent on the connection's first stream. The server opens no stream before a good hello
 * and closes the connection on a bad one (close code {@linkcode quicBadTokenCode}).
 *
 * | stream            | direction | bytes                                                   |
 * | ----------------- | --------- | ------------------------------------------------------- |
 * | first (hello)     | A -> B     | `"WLNK"` · u8 version (1) · u16 token length · token    |
 * |                   | B -> A     | u8: 0 ok, 1 bad token, 2 bad version; then FIN          |
 * | every other       | A -> B     | u8 version (1) · u8 host length · host · u16 port       |
 * |                   | B -> A     | u8 result (link.ts's table); 0 = connected, relay       |
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import {
  Backoff,
  type BackoffOptions,
  BufferedReader,
  closeQuietly,
  errorMessage,
  formatAddr,
  type HostPort,
  joinHostPort,
  NetError,
  type Server,
  type ServeStats,
  sleep,
  timingSafeEqual,
  withPrefix,
  writeAll,
  writeQuietly,
} from "../net/mod.ts";
import { abortSignalOf } from "../net/abort.ts";
import { verifySecret } from "../net/ratelimit.ts";
import {
  connectQuic,
  openQuicStream,
  quicAddr,
  type QuicServerEndpoint,
  QuicStreamConn,
  type TlsClientConfig,
} from "../transport/mod.ts";
import type { DialedConn, Dialer } from "./dialer.ts";
import { LinkWait } from "./link_wait.ts";
import {
  encodeLinkHello,
  encodeLinkRequest,
  linkHelloReply,
  readLinkHello,
  readLinkResult,
  type ServeLinkOptions,
  serveLinkStream,
} from "./link.ts";
import type { UdpChannelOpener } from "../udp/mod.ts";
import { encodeLinkUdpRequest, type LinkUdpNear, readLinkUdpResult } from "./udp_link.ts";
import { QuicDatagrams, type QuicDatagramStats, QuicUdpChannel } from "./udp_quic.ts";

/** ALPN name of the warren link over QUIC. */
export const quicLinkAlpn = "warren-link/1";
/** QUIC close code: the hello's token was wrong. */
export const quicBadTokenCode = 1;
/** QUIC close code: the hello was malformed or of another version. */
export const quicBadHelloCode = 2;

/** Options of {@linkcode QuicLinkClient}. */
export interface QuicLinkClientOptions {
  /** The far node's quic:// listener (UDP). */
  addr: HostPort;
  /** Shared secret; sent in the hello, never logged. */
  token: string;
  /** Trust (`ca`) and name (`serverName`) for the server's certificate. */
  tls?: TlsClientConfig;
  /** How long a dial waits for the connection to be (re)established. @default 5000 */
  waitMs?: number;
  /** Time to connect and finish the hello. @default 10000 */
  connectTimeoutMs?: number;
  /** Redial backoff. */
  backoff?: BackoffOptions;
  /** Logger for link up/down events (never the token). */
  log?: Logger;
}

/**
 * The dialling end of a QUIC link: a connection kept up in the background (redialled with
 * backoff) and a Dialer opening one QUIC stream per connection.
 */
export class QuicLinkClient {
  #opts: QuicLinkClientOptions;
  #log: Logger;
  #conn: Deno.QuicConn | null = null;
  #dgrams: QuicDatagrams | null = null;
  #stop = new AbortController();
  #wait: LinkWait<Deno.QuicConn>;
  #loop: Promise<void>;

  /** Start keeping a connection to `opts.addr` up. */
  constructor(opts: QuicLinkClientOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? silentLogger;
    this.#wait = new LinkWait(() => this.#conn, this.#stop.signal, opts.waitMs ?? 5000);
    this.#loop = this.#run();
  }

  /** Whether the link is up right now. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /** The Dialer: one QUIC stream per connection, the far node dials `dest`. */
  readonly dial: Dialer = async (dest: HostPort, abort): Promise<DialedConn> => {
    const signal = abortSignalOf(abort);
    const conn = await this.#wait.get(signal);
    let s: QuicStreamConn | undefined;
    try {
      s = await openQuicStream(conn, signal);
      await writeAll(s, encodeLinkRequest(dest));
    } catch (err) {
      closeQuietly(s);
      if (signal.aborted) throw new NetError("aborted", "dial aborted", { cause: err });
      throw new NetError("other", `quic link: ${errorMessage(err)}`, { cause: err });
    }
    return await readLinkResult(s, dest, signal, () => s.close());
  };

  /**
   * A UDP association carried to the far node: one QUIC stream for its request and lifetime,
   * its datagrams as QUIC datagrams (udp_quic.ts). Rejects with udp_link.ts
   * `UdpUnsupportedError` when the far node carries no UDP.
   */
  readonly openUdp: UdpChannelOpener = async ({ flows, tally, signal }) => {
    const conn = await this.#wait.get(signal);
    const dgrams = this.#dgrams!;
    const id = dgrams.nextId();
    let s: QuicStreamConn | undefined;
    try {
      s = await openQuicStream(conn, signal);
      await writeAll(s, encodeLinkUdpRequest(id));
      const r = new BufferedReader(s, 512);
      const onAbort = () => closeQuietly(s);
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        await readLinkUdpResult(r, "quic link");
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
      const carried = withPrefix(s, r.takeBuffered());
      return new QuicUdpChannel(id, carried, dgrams, flows, (bytes) => tally.up(bytes));
    } catch (err) {
      closeQuietly(s);
      if (signal.aborted) throw new NetError("aborted", "udp open aborted", { cause: err });
      if (err instanceof NetError) throw err;
      throw new NetError("other", `quic link: ${errorMessage(err)}`, { cause: err });
    }
  };

  /** Stop redialling and close the connection (its streams end). */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#conn?.close({ closeCode: 0, reason: "link closed" });
    await this.#loop;
  }

  async #run(): Promise<void> {
    const backoff = new Backoff(this.#opts.backoff);
    const stop = this.#stop.signal;
    const addr = joinHostPort(this.#opts.addr.host, this.#opts.addr.port);
    while (!stop.aborted) {
      try {
        const conn = await this.#connect();
        if (stop.aborted) {
          conn.close({ closeCode: 0, reason: "link closed" });
          break;
        }
        backoff.reset();
        this.#dgrams = new QuicDatagrams(conn, this.#log);
        this.#conn = conn;
        this.#log.info("link up", {
          addr,
          transport: "quic",
          maxDatagramBytes: conn.maxDatagramSize,
        });
        this.#wait.up();
        const end = await conn.closed.catch((err) => ({
          closeCode: -1,
          reason: errorMessage(err),
        }));
        this.#conn = null;
        const d = this.#dgrams?.stats;
        this.#dgrams = null;
        if (!stop.aborted) {
          this.#log.warn("link down", { code: end.closeCode, end: end.reason, ...datagramKeys(d) });
        }
      } catch (err) {
        const failed = this.#wait.failed(err); // pending dials fail with this reason
        this.#log.warn("link connect failed", { addr, error: failed });
      }
      if (stop.aborted) break;
      await sleep(backoff.next(), stop).catch(() => {
        // Stopped while waiting: the loop condition ends it.
      });
    }
  }

  async #connect(): Promise<Deno.QuicConn> {
    const timeoutMs = this.#opts.connectTimeoutMs ?? 10_000;
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(timeoutMs)]);
    const conn = await connectQuic(this.#opts.addr, this.#opts.tls, { alpn: quicLinkAlpn }, signal);
    const onAbort = () => conn.close({ closeCode: 0, reason: "hello timed out" });
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const hello = new QuicStreamConn(await conn.createBidirectionalStream());
      await writeAll(hello, encodeLinkHello(this.#opts.token));
      await hello.closeWrite();
      const status = await new BufferedReader(hello, 16).readByte().catch(async (err) => {
        // A refused hello closes the connection: its close code says why.
        const info = await Promise.race([conn.closed, sleep(1000).then(() => null)])
          .catch(() => null);
        if (info?.closeCode === quicBadTokenCode) return linkHelloReply.badToken;
        throw err;
      });
      hello.close();
      if (status === linkHelloReply.badToken) {
        throw new NetError("not-allowed", "link token rejected");
      }
      if (status !== linkHelloReply.ok) {
        throw new NetError("other", `link hello refused (${status})`);
      }
      return conn;
    } catch (err) {
      conn.close({ closeCode: 0, reason: "hello failed" });
      if (err instanceof NetError) throw err;
      const reason = signal.aborted ? "timeout" : "other";
      throw new NetError(reason, `quic link hello failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}

/** A connection's datagram counters as log keys (none when it carried no UDP). */
function datagramKeys(d: QuicDatagramStats | undefined): Record<string, number> {
  if (!d || d.sent + d.received + d.onStream === 0) return {};
  return {
    datagramsSent: d.sent,
    datagramsReceived: d.received,
    datagramsOnStream: d.onStream,
    datagramsUnknown: d.unknownAssociation,
  };
}

/** Options of {@linkcode serveQuicLink}: the TCP link's (QUIC is its own transport and session). */
export type ServeQuicLinkOptions = Omit<ServeLinkOptions, "transport" | "session">;

/**
 * Accept QUIC link connections on `ep` (token-checked in constant time, at most
 * `opts.maxConns` at once) and serve each stream: dial its destination with `opts.dialer`,
 * answer the typed result, relay. The returned Server's `stop` stops accepting, lets streams
 * finish up to `drainMs`, then closes the endpoint.
 */
export function serveQuicLink(ep: QuicServerEndpoint, opts: ServeQuicLinkOptions): Server {
  const log = opts.log ?? silentLogger;
  const stats: ServeStats = {
    active: 0,
    total: 0,
    rejected: 0,
    handshakeTimeouts: 0,
    errors: 0,
    acceptErrors: 0,
  };
  const stop = new AbortController();
  const conns = new Set<Promise<void>>();
  const maxConns = opts.maxConns ?? 64;

  const serveConn = async (incoming: Deno.QuicIncoming): Promise<void> => {
    let conn: Deno.QuicConn;
    try {
      conn = await incoming.accept();
    } catch (err) {
      log.warn("quic handshake failed", { error: errorMessage(err) });
      return;
    }
    const remote = formatAddr(quicAddr(conn.remoteAddr));
    const clog = log.child({ remote });
    const onStop = () => conn.close({ closeCode: 0, reason: "shutdown" });
    stop.signal.addEventListener("abort", onStop, { once: true });
    const streams = conn.incomingBidirectionalStreams.getReader();
    try {
      if (!await quicHello(conn, streams, opts, remote, clog, stats)) return;
      clog.info("link session up", { transport: "quic", maxDatagramBytes: conn.maxDatagramSize });
      const dgrams = new QuicDatagrams(conn, clog);
      const udpNear: LinkUdpNear = (id, s, flows, counted) =>
        new QuicUdpChannel(id, s, dgrams, flows, counted);
      const live = new Set<Promise<void>>();
      while (true) {
        const next = await streams.read().catch(() => ({ done: true as const, value: undefined }));
        if (next.done) break;
        const s = new QuicStreamConn(next.value);
        const p = serveLinkStream(s, opts, stop.signal, clog, udpNear)
          .finally(() => live.delete(p));
        live.add(p);
      }
      await Promise.all(live);
      const end = await conn.closed.catch((err) => ({ closeCode: -1, reason: errorMessage(err) }));
      clog.info("link session down", {
        code: end.closeCode,
        end: end.reason,
        ...datagramKeys(dgrams.stats),
      });
    } catch (err) {
      stats.errors++;
      clog.warn("quic link connection failed", { error: errorMessage(err) });
      conn.close({ closeCode: 0, reason: "error" });
    } finally {
      stop.signal.removeEventListener("abort", onStop);
      streams.releaseLock();
    }
  };

  // Deno 2.9.6's listener.stop() does not end a pending incoming(): stopping races it.
  const stopAccept = new AbortController();
  const acceptStopped = new Promise<null>((resolve) =>
    stopAccept.signal.addEventListener("abort", () => resolve(null), { once: true })
  );
  const accepting = (async () => {
    while (!stopAccept.signal.aborted) {
      const next = ep.listener.incoming();
      let incoming: Deno.QuicIncoming | null;
      try {
        incoming = await Promise.race([next, acceptStopped]);
      } catch {
        // The listener or endpoint was closed (shutdown): the loop ends.
        break;
      }
      if (incoming === null) {
        // Rejected (or never settling) once the endpoint closes: nothing waits for it.
        next.catch(() => {});
        break;
      }
      if (stats.active >= maxConns) {
        stats.rejected++;
        // (Not incoming.remoteAddr: in Deno 2.9.6 reading it invalidates the resource.)
        log.warn("quic link: too many connections, refused", { maxConns });
        incoming.refuse();
        continue;
      }
      stats.active++;
      stats.total++;
      const p = serveConn(incoming).finally(() => {
        stats.active--;
        conns.delete(p);
      });
      conns.add(p);
    }
  })();

  let stopping: Promise<void> | undefined;
  const server: Server = {
    addr: ep.addr,
    name: "quic-link",
    stats,
    finished: accepting.then(() => stopping),
    stop: (drainMs = 0) =>
      stopping ??= (async () => {
        stopAccept.abort();
        ep.listener.stop();
        await accepting;
        if (conns.size > 0 && drainMs > 0) {
          await Promise.race([Promise.all(conns), sleep(drainMs)]);
        }
        stop.abort();
        ep.close();
        await Promise.all(conns);
      })(),
  };
  return server;
}

/**
 * The server side of the hello: the connection's first stream must carry a good token
 * before `opts.handshakeTimeoutMs`. Resolves false (connection closed with a reason) when not.
 */
async function quicHello(
  conn: Deno.QuicConn,
  streams: ReadableStreamDefaultReader<Deno.QuicBidirectionalStream>,
  opts: ServeQuicLinkOptions,
  remote: string,
  log: Logger,
  stats: ServeStats,
): Promise<boolean> {
  const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const deadline = AbortSignal.timeout(timeoutMs);
  const onDeadline = () => conn.close({ closeCode: quicBadHelloCode, reason: "hello timeout" });
  deadline.addEventListener("abort", onDeadline, { once: true });
  let hello: QuicStreamConn | undefined;
  try {
    const first = await streams.read();
    if (first.done) return false;
    hello = new QuicStreamConn(first.value);
    const parsed = await readLinkHello(new BufferedReader(hello, 512));
    if (!parsed.ok) {
      await writeQuietly(hello, new Uint8Array([linkHelloReply.badVersion]));
      log.warn("link hello: bad magic or version", { remote });
      conn.close({ closeCode: quicBadHelloCode, reason: "bad hello" });
      return false;
    }
    const ok = await verifySecret(
      opts.authLimiter,
      remote,
      () => timingSafeEqual(parsed.token, opts.token),
      { signal: deadline },
    );
    if (!ok) {
      await writeQuietly(hello, new Uint8Array([linkHelloReply.badToken]));
      log.warn("link hello: bad token", { remote });
      conn.close({ closeCode: quicBadTokenCode, reason: "bad token" });
      return false;
    }
    await writeAll(hello, new Uint8Array([linkHelloReply.ok]));
    await hello.closeWrite();
    return true;
  } catch (err) {
    if (deadline.aborted) {
      stats.handshakeTimeouts++;
      log.warn("link hello: timed out", { remote, timeoutMs });
    } else log.warn("link hello failed", { remote, error: errorMessage(err) });
    conn.close({ closeCode: quicBadHelloCode, reason: "bad hello" });
    return false;
  } finally {
    deadline.removeEventListener("abort", onDeadline);
    closeQuietly(hello);
  }
}
