/**
 * depot-local logic: keep a control connection to depot-server (reconnecting forever with
 * backoff and jitter, including when the very first attempt fails), answer `connect`
 * requests by dialling the target, report typed failures, and carry each success over its
 * own tunnel connection.
 * @module
 */

import {
  Backoff,
  type BackoffOptions,
  BufferedReader,
  classifyError,
  closeQuietly,
  deadlines,
  dial,
  type Duplex,
  errorMessage,
  type HostPort,
  IdTable,
  isOutOfFds,
  joinHostPort,
  LiveList,
  minRelayBufferBytes,
  NetError,
  type NetFailureReason,
  relay,
  relayPool,
  type RelayStats,
  sleep,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import {
  type CompactCodec,
  ControlConn,
  ControlError,
  ControlReader,
  ControlWriter,
  encodeFrame,
  type FirstMessage,
  firstMessageIn,
  type Outgoing,
  readFirstMessage,
  RemoteError,
} from "../control/mod.ts";
import {
  type AssociateRequest,
  compactFeature,
  type ConnectRequest,
  defaultExitName,
  depotHandshakeTimeoutMs,
  depotMaxMessageBytes,
  type DepotMessage,
  depotProtocol,
  DepotRefusal,
  endFeature,
  heartbeatDeadFactor,
  legacyStandbyPerExit,
  muxFeature,
  openFeature,
  recentFailureCount,
  retireFeature,
  shareFeature,
  standbyRetiredReason,
  udpFeature,
} from "./protocol.ts";
import { ReportedEnd } from "./tunnel_end.ts";
import { depotCompact } from "./compact.ts";
import { Session as MuxSession, Stream as MuxStream } from "../mux/mod.ts";
import * as m from "./metrics.ts";
import {
  type DepotUdpExitOptions,
  type ExitAssociationResult,
  serveExitAssociation,
} from "./udp.ts";
import type { FlowLimits } from "../udp/mod.ts";
import { SparePool } from "./spares.ts";
import { AbortHub, after, noDelay } from "../net/mod.ts";
import { type Acl, aclDial } from "../net/acl.ts";
import {
  dialTransport,
  proxyFor,
  type ProxySettings,
  type TlsClientConfig,
  transportKind,
  type TransportName,
} from "../transport/mod.ts";

/** Default timeout of the local's dial to a target (and to the tunnel port). */
export const defaultLocalDialTimeoutMs = 10_000;
/** Default number of pre-dialled tunnel connections. */
export const defaultSpareTunnels = 2;
/** Wait before reconnecting after being replaced by a same-name local (avoids flapping). */
export const replacedRetryMs = 10_000;
/** Least time between two "out of file descriptors" warnings (a burst's dials fail at once). */
const fdWarnIntervalMs = 10_000;
/**
 * `--mux`: the ACK of a request's stream waits this long to ride on our answer (`tunnel` or
 * `connectFailed`, written after the dial): sent at accept, it was a transport write of its own
 * per connection and a wakeup of the server for nothing. A slower dial sends it alone; the
 * server never waits for it.
 */
const muxAckDelayMs = 1_000;

/** Options of {@linkcode DepotLocal}. */
export interface DepotLocalOptions {
  /** depot-server's control address. */
  server: HostPort;
  /**
   * Leave through an HTTP CONNECT or SOCKS5 proxy to reach the server (`--proxy`,
   * `HTTPS_PROXY`/`ALL_PROXY`, `NO_PROXY`; lib/transport `proxySettings`).
   */
  proxy?: ProxySettings;
  /** Tunnel address; default: the control host with the port announced in welcome. */
  tunnel?: HostPort;
  /** Shared secret (the server's `--token`). @default "" */
  token?: string;
  /** Exit name; SOCKS clients pick this exit with it as username. @default "default" */
  name?: string;
  /** SOCKS password clients of this exit must present; none by default. */
  socksPassword?: string;
  /** Timeout of each dial (target, tunnel, control). @default 10000 */
  dialTimeoutMs?: number;
  /** Time for the welcome and for each tunnel's acceptance. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Reconnect delays. @default { initialMs: 250, maxMs: 30000 } */
  backoff?: BackoffOptions;
  /** Policy: return false to refuse a destination (reported as "not-allowed", 0x02). */
  allow?: (dest: HostPort) => boolean;
  /**
   * Destination allow/deny lists, checked on the name and on every resolved address; only
   * checked addresses are dialled. A refusal is reported as "not-allowed" (0x02).
   */
  acl?: Acl;
  /** Dial the control and tunnel ports with TLS (server verified; client cert for mTLS). */
  tls?: TlsClientConfig;
  /**
   * What carries the control and tunnel connections ("ws": WebSocket, wss with `tls`); the
   * server must run the same. @default "tcp"
   */
  transport?: TransportName;
  /** Close a relayed connection idle this long; 0 = never. @default 0 */
  idleTimeoutMs?: number;
  /**
   * Carry every tunnel as a stream of one lib/mux (yamux) session over a single tunnel
   * connection, instead of one TCP connection per request. Falls back to TCP when the server
   * does not announce "mux". @default false
   */
  mux?: boolean;
  /**
   * Tunnel connections kept pre-dialled (TCP mode), so a request skips the TCP handshake to
   * the tunnel port; 0 disables. @default 2
   */
  spareTunnels?: number;
  /**
   * Announce compact frames (feature "compact"); false speaks JSON only, as locals before
   * them did (interop tests). @default true
   */
  compact?: boolean;
  /**
   * SOCKS5 UDP ASSOCIATE through this exit (announced to the server as "udp"): false refuses
   * it (clients get 0x07); bounds of each association's destinations (idle 60 s, 1024 flows,
   * 4 MiB queued by default). Datagrams go through `acl` and `allow` like connections.
   * @default true
   */
  udp?: boolean | FlowLimits;
  /** Where events go. @default silent */
  log?: Logger;
}

/** What the local's `/status` shows. */
export interface DepotLocalStatus {
  /** This exit's name. */
  name: string;
  /** The server's control address. */
  server: string;
  /** Whether a control session is established now. */
  connected: boolean;
  /** How tunnels travel in the current session: one TCP connection each, or mux streams. */
  transport: "tcp" | "mux" | null;
  /** Pre-dialled tunnel connections of the current session: ready now, used, missed, kept at most. */
  spares: { ready: number; hits: number; misses: number; max: number } | null;
  /** ISO time the current session began. */
  connectedSince: string | null;
  /** Latest control round-trip time; null before the first pong. */
  rttMs: number | null;
  /** Control connection attempts so far (successful or not). */
  attempts: number;
  /** Sessions established so far. */
  sessions: number;
  /** Why the last attempt or session failed; null while connected. */
  lastError: string | null;
  /** Connections relaying now. */
  active: number;
  /** Connections relayed since start. */
  total: number;
  /** Requests that failed here (dial, policy, tunnel). */
  failures: number;
  /** The failures by reason since start (the page charts them beside the successes). */
  failuresByReason: Record<string, number>;
  /** Bytes from clients to targets. */
  bytesUp: number;
  /** Bytes from targets to clients. */
  bytesDown: number;
  /** The last failures, oldest first. */
  recentFailures: { at: string; dest: string; reason: NetFailureReason; message: string }[];
}

/** One established control session. */
interface Session {
  ctl: ControlConn<DepotMessage>;
  tunnel: HostPort;
  /**
   * Open the transport of one tunnel: a spare or fresh TCP connection, or a mux stream.
   * `spare` says it was pre-dialled (and may have been dropped by the server meanwhile).
   */
  openTunnel(signal: AbortSignal): Promise<{ conn: Duplex; spare: boolean }>;
  /** A fresh TCP connection to the tunnel port (the retry when a spare turned out dead). */
  dialTunnel(signal: AbortSignal): Promise<Duplex>;
  /** Pre-dialled tunnel connections (TCP mode, when the server announces `spareIdleMs`). */
  spares?: SparePool;
  /** The mux session carrying tunnels (`mux` mode). */
  mux?: MuxSession;
  /** Per-request aborts (cancel, session end); not a `Map`: see lib/net/id_table.ts. */
  requests: IdTable<AbortHub>;
  /** The server waits for `end{id}` before passing a plain tunnel's FIN on. */
  reportsEnds: boolean;
  /** "open": the server opens a mux stream per request, its SYN carrying the request. */
  opens?: boolean;
  /** Both sides announced "compact": hot messages go as compact frames (compact.ts). */
  compact: CompactCodec<DepotMessage> | undefined;
}

/** A request that came on a stream the server opened ("open"): it is the tunnel, answered on. */
interface OnStream {
  stream: Duplex;
  /** What the first frame's read took past the request (forwarded first). */
  leftover: Uint8Array;
  /**
   * A used standby spare's pool: its replacement starts (`fill()`) once the answer (`tunnel`
   * or `connectFailed`) is written or could not be, not ahead of the target's dial and the
   * answer. The pool itself, not a closure per connection.
   */
  refill?: SparePool;
}

/**
 * A depot-local: `run()` until `stop()`.
 *
 * @example
 * ```ts
 * import { DepotLocal, DepotServer } from "./mod.ts";
 * import { socks5Connect } from "../socks5/mod.ts";
 * const token = "a-long-random-depot-token";
 * const listen = () => Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const [control, socks, tunnel] = [listen(), listen(), listen()];
 * const server = new DepotServer({ token });
 * server.start({ control, socks, tunnel });
 *
 * // The exit: dials the server's control address; SOCKS5 clients' connections leave from here.
 * const local = new DepotLocal({ server: { host: "127.0.0.1", port: control.addr.port }, token });
 * const done = local.run();
 * await local.waitConnected();
 * const target = listen();
 * const reached = target.accept();
 * const c = await Deno.connect({ hostname: "127.0.0.1", port: socks.addr.port });
 * await socks5Connect(c, { host: "127.0.0.1", port: target.addr.port }); // dialed by the local
 * (await reached).close();
 * c.close();
 * target.close();
 * await local.stop();
 * await done;
 * await server.stop();
 * ```
 */
export class DepotLocal {
  /** The server's control address. */
  readonly server: HostPort;
  /** This exit's name. */
  readonly name: string;
  /** Where events go. */
  readonly log: Logger;
  readonly #opts: DepotLocalOptions;
  readonly #backoff: Backoff;
  readonly #stop = new AbortController();
  readonly #events = new EventTarget();
  /**
   * Byte counts of the relays running now, and the control path's request tasks: lists, not
   * Sets, as they churn per connection (see lib/net/live_list.ts).
   */
  readonly #live = new LiveList<RelayStats>();
  readonly #failures: DepotLocalStatus["recentFailures"] = [];
  readonly #tasks = new LiveList<Promise<void>>();
  /**
   * Request streams being served and standby spares watched ("open"): counted by
   * #serveStream and #watchStandby themselves (see `#taskEnded`), not tracked.
   */
  #streamTasks = 0;
  /** Made by `stop()` (shared by concurrent calls) while it waits for the last of them. */
  #streamsIdle: PromiseWithResolvers<void> | undefined;
  #session: Session | undefined;
  #connectedSince: Date | undefined;
  #sessions = 0;
  #attempts = 0;
  #lastError: string | undefined;
  #active = 0;
  #total = 0;
  #failureCount = 0;
  /** When "out of file descriptors" was last logged, and the dials failing so since. */
  #fdWarnedMs = -Infinity;
  #fdFailures = 0;
  readonly #failuresByReason: Record<string, number> = {};
  #bytesUp = 0;
  #bytesDown = 0;
  #running: Promise<void> | undefined;
  /** This exit's "ok" requests' series (bound once). */
  readonly #okCount: { inc(): void };
  /** The UDP exit's settings, and whether this local carries UDP at all. */
  readonly #udpOpts: DepotUdpExitOptions & { enabled: boolean };

  /** A local for `opts`; nothing happens until `run`. */
  constructor(opts: DepotLocalOptions) {
    this.#opts = opts;
    this.#udpOpts = {
      ...(typeof opts.udp === "object" ? opts.udp : {}),
      enabled: opts.udp !== false,
      acl: opts.acl,
      allow: opts.allow,
    };
    this.server = opts.server;
    this.name = opts.name ?? defaultExitName;
    this.#okCount = m.localSeries.ok(this.name);
    this.log = opts.log ?? silentLogger;
    this.#backoff = new Backoff({ initialMs: 250, maxMs: 30_000, ...opts.backoff });
  }

  /** Whether a control session is established now. */
  get connected(): boolean {
    return this.#session !== undefined;
  }

  /**
   * Resolves on the next change of `connected` to `want` (at once if it already is), or
   * rejects after `timeoutMs`.
   */
  waitConnected(want = true, timeoutMs = 10_000): Promise<void> {
    if (this.connected === want) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onChange = () => {
        if (this.connected !== want) return;
        clearTimeout(t);
        this.#events.removeEventListener("change", onChange);
        resolve();
      };
      const t = setTimeout(() => {
        this.#events.removeEventListener("change", onChange);
        reject(new Error(`depot-local: not ${want ? "connected" : "disconnected"} in time`));
      }, timeoutMs);
      this.#events.addEventListener("change", onChange);
    });
  }

  /** What the scrape-time gauges read. */
  readonly #metricsSource = () => {
    const rtt = this.#session?.ctl.rttMs;
    return {
      rtts: rtt === undefined
        ? []
        : [{ side: "local" as const, exit: this.name, seconds: rtt / 1000 }],
    };
  };

  /** Snapshot for `/status`. */
  status(): DepotLocalStatus {
    let up = this.#bytesUp, down = this.#bytesDown;
    for (const s of this.#live) (up += s.aToB, down += s.bToA);
    const rtt = this.#session?.ctl.rttMs;
    return {
      name: this.name,
      server: joinHostPort(this.server.host, this.server.port),
      connected: this.connected,
      transport: this.#session ? (this.#session.mux ? "mux" : "tcp") : null,
      spares: this.#session?.spares?.stats ?? null,
      connectedSince: this.#connectedSince?.toISOString() ?? null,
      rttMs: rtt === undefined ? null : Math.round(rtt * 1000) / 1000,
      attempts: this.#attempts,
      sessions: this.#sessions,
      lastError: this.#lastError ?? null,
      active: this.#active,
      total: this.#total,
      failures: this.#failureCount,
      failuresByReason: { ...this.#failuresByReason },
      bytesUp: up,
      bytesDown: down,
      recentFailures: [...this.#failures],
    };
  }

  /** Connect and serve until `stop()`; reconnects forever. Resolves after `stop()`. */
  run(): Promise<void> {
    if (!this.#running) {
      m.liveSources.add(this.#metricsSource);
      // Like a server, the local holds the shared wheel while it runs: each tunnel's dial and
      // relay deadlines would otherwise start and stop its interval once per connection.
      const releaseWheel = deadlines.hold();
      this.#running = this.#loop().finally(() => {
        releaseWheel();
        m.liveSources.delete(this.#metricsSource);
      });
    }
    return this.#running;
  }

  /** Stop: close the control connection and every relay, end `run()`. */
  async stop(): Promise<void> {
    this.#stop.abort(new DOMException("depot-local stopped", "AbortError"));
    this.#session?.ctl.close();
    await this.#running;
    while (this.#tasks.size > 0 || this.#streamTasks > 0) {
      const streams = this.#streamTasks > 0
        ? (this.#streamsIdle ??= Promise.withResolvers<void>()).promise
        : undefined;
      await Promise.allSettled(streams ? [...this.#tasks, streams] : [...this.#tasks]);
    }
  }

  async #loop(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      let delayMs: number | undefined;
      try {
        const session = await this.#connect();
        this.#backoff.reset();
        await this.#serve(session);
      } catch (err) {
        if (signal.aborted) break;
        this.#lastError = describe(err);
        // One line per attempt: what went wrong and when the next one starts.
        const refusal = err instanceof RemoteError ? err.reason : undefined;
        const held = refusal === DepotRefusal.nameTaken || refusal === DepotRefusal.replaced;
        delayMs = held ? replacedRetryMs : this.#backoff.next();
        const server = this.#serverStr;
        if (refusal === DepotRefusal.unauthorized) {
          this.log.error("server refused this local: wrong token", {
            server,
            failure: refusal,
            inMs: delayMs,
          });
        } else if (refusal === "bad-version") {
          this.log.error("server speaks another depot protocol version", {
            server,
            ours: depotProtocol.version,
            failure: refusal,
            error: (err as Error).message,
            inMs: delayMs,
          });
        } else if (refusal === DepotRefusal.nameTaken) {
          this.log.error("server refused this local: the exit name is held", {
            name: this.name,
            failure: refusal,
            error: (err as Error).message,
            inMs: delayMs,
          });
        } else if (refusal === DepotRefusal.replaced) {
          this.log.warn("replaced by another local with the same name", {
            name: this.name,
            failure: refusal,
            inMs: delayMs,
          });
        } else {
          this.log.warn("reconnecting", { server, error: this.#lastError, inMs: delayMs });
        }
      }
      if (signal.aborted) break;
      await sleep(delayMs ?? this.#backoff.next(), signal).catch(() => {
        // Stopped while waiting: the loop condition ends it.
      });
    }
  }

  get #serverStr(): string {
    return joinHostPort(this.server.host, this.server.port);
  }

  /** Dial a depot-server port (control or tunnel) over the configured carrier. */
  #dialServer(to: HostPort, signal: AbortSignal): Promise<Duplex> {
    const timeoutMs = this.#opts.dialTimeoutMs ?? defaultLocalDialTimeoutMs;
    const tls = this.#opts.tls;
    const kind = transportKind(this.#opts.transport ?? "tcp", tls !== undefined);
    const proxy = proxyFor(this.#opts.proxy, to, tls !== undefined);
    return dialTransport({ kind, ...to, path: "/" }, { timeoutMs, signal, tls, proxy });
  }

  /** Dial the control port, say hello, wait for welcome. */
  async #connect(): Promise<Session> {
    const o = this.#opts;
    const signal = this.#stop.signal;
    this.#attempts++;
    const conn = await this.#dialServer(this.server, signal);
    const ctl = new ControlConn(noDelay(conn), depotProtocol, {
      maxMessageBytes: depotMaxMessageBytes,
    });
    const onStop = () => ctl.close();
    signal.addEventListener("abort", onStop, { once: true });
    let mux: MuxSession | undefined;
    let spares: SparePool | undefined;
    /** The session being set up (standby spares serve requests of it once it is complete). */
    let current: Session | undefined;
    try {
      await ctl.send({
        type: "hello",
        role: "depot-local",
        token: o.token ?? "",
        name: this.name,
        socksPassword: o.socksPassword,
        agent: "warren-depot-local/1",
        // "open": requests come on streams the server opens, or on standby spares.
        features: [
          endFeature,
          ...(this.#udpOpts.enabled ? [udpFeature] : []),
          openFeature,
          shareFeature,
          retireFeature,
          ...(o.compact === false ? [] : [compactFeature]),
        ],
      });
      const welcome = await ctl.expect(
        "welcome",
        o.handshakeTimeoutMs ?? depotHandshakeTimeoutMs,
      );
      const tunnel = o.tunnel ?? { host: this.server.host, port: welcome.tunnelPort };
      // A TCP dial (direct, via a proxy, under a WebSocket) has TCP_NODELAY set already. Not
      // an async frame of its own: every standby spare (one per request) is dialled here.
      const dialTunnel = (sig: AbortSignal): Promise<Duplex> => {
        const dialled = this.#dialServer(tunnel, sig);
        return o.tls ? dialled.then(noDelay) : dialled;
      };
      const sessionKey = welcome.features?.includes(openFeature) === true
        ? welcome.sessionKey
        : undefined;
      const opens = sessionKey !== undefined;
      const compact = o.compact !== false && welcome.features?.includes(compactFeature) === true
        ? depotCompact
        : undefined;
      if (compact) ctl.useCompact(compact);
      const requests = new IdTable<AbortHub>();
      // The session's end aborts each of its requests: one listener for them all (a listener
      // per request on the long-lived signal, or AbortSignal.any, cost each request more).
      ctl.signal.addEventListener("abort", () => {
        for (const a of [...requests]) a.abort(ctl.signal.reason);
      }, { once: true });
      let session: Session = {
        ctl,
        tunnel,
        dialTunnel,
        openTunnel: async (sig) => ({ conn: await dialTunnel(sig), spare: false }),
        requests,
        reportsEnds: welcome.features?.includes(endFeature) ?? false,
        compact,
      };
      const spareCount = o.spareTunnels ?? defaultSpareTunnels;
      if (o.mux && welcome.features?.includes(muxFeature)) {
        mux = await this.#openMux(
          dialTunnel,
          welcome.heartbeatMs,
          opens ? welcome.sessionKey : undefined,
        );
        const muxSession = mux;
        session = {
          ...session,
          mux,
          reportsEnds: false, // a stream's FIN and RST are the mux's own frames
          openTunnel: async () => ({ conn: await muxSession.open(), spare: false }),
          opens,
        };
        // The mux connection and the control connection live and die together.
        void mux.closed.then(() => ctl.close()); // `closed` only resolves
        ctl.signal.addEventListener("abort", () => void muxSession.close("internal-error"));
      } else {
        if (o.mux) this.log.warn("server does not offer mux; using one TCP connection per tunnel");
        if (spareCount > 0 && welcome.spareIdleMs !== undefined) {
          // "open": each spare announces itself (standby) and waits for a request the server
          // writes on it (`#watchStandby`, from its dial on: one async frame per spare, where a
          // function around the dial and the announcement, `writeAll`'s and a `catch()` were
          // three more); requests that still come on the control connection dial fresh. The
          // announcement is the same for every spare of the session: encoded once.
          const announce = opens
            ? frame({ type: "standby", name: this.name, sessionKey: sessionKey! }, compact)
            : undefined;
          const whose = () => current;
          const watch = (conn: Duplex): Duplex => {
            void this.#watchStandby(pool, conn, announce!, whose, compact); // counts itself
            return conn;
          };
          const dialFailed = (err: unknown): never => {
            this.#noteDialError(err);
            throw err;
          };
          // As many as the server holds (it closes standbys past its `standbyMax`); kept until
          // it retires them, if it does ("retire"), else replaced at `spareIdleMs` here.
          const pool: SparePool = new SparePool(
            spareCount,
            welcome.spareIdleMs,
            // A failed spare dial is retried by the pool's next take or tick.
            () => dialTunnel(this.#stop.signal).then(opens ? watch : undefined, dialFailed),
            Math.max(spareCount, (opens ? welcome.standbyMax : undefined) ?? legacyStandbyPerExit),
            opens && welcome.features?.includes(retireFeature) === true,
          );
          spares = pool;
          session = {
            ...session,
            spares: pool,
            openTunnel: async (sig) => {
              if (opens) pool.missed(); // with "open", it found no standby at the server
              const conn = opens ? undefined : pool.take();
              return conn ? { conn, spare: true } : { conn: await dialTunnel(sig), spare: false };
            },
          };
        }
      }
      ctl.startHeartbeat({
        intervalMs: welcome.heartbeatMs,
        deadAfterMs: welcome.heartbeatMs * heartbeatDeadFactor,
      });
      current = session;
      return session;
    } catch (err) {
      ctl.close();
      void mux?.close("internal-error"); // does not reject
      spares?.close();
      throw err;
    } finally {
      signal.removeEventListener("abort", onStop);
    }
  }

  /** Serve requests on an established session until it ends; throws why it ended. */
  async #serve(session: Session): Promise<void> {
    const { ctl } = session;
    const onStop = () => ctl.close();
    this.#stop.signal.addEventListener("abort", onStop, { once: true });
    if (this.#stop.signal.aborted) ctl.close(); // stop() ran between connect and here
    this.#session = session;
    this.#connectedSince = new Date();
    this.#sessions++;
    this.#lastError = undefined;
    this.#events.dispatchEvent(new Event("change"));
    m.sessionsTotal.inc({ side: "local" });
    this.log.info("connected", { server: this.#serverStr, name: this.name });
    if (session.mux && session.opens) this.#track(this.#acceptStreams(session, session.mux));
    try {
      while (true) {
        const msg = await ctl.receive();
        if (msg === null) throw new ControlError("closed", "server closed the control connection");
        if (msg.type === "connect" || (msg.type === "associate" && this.#udpOpts.enabled)) {
          this.#track(this.#handleConnect(session, msg));
        } else if (msg.type === "cancel") {
          session.requests.get(msg.id)?.abort(new DOMException("cancelled", "AbortError"));
        } else if (msg.type === "standbyShare") {
          // Other exits connected or left: the server holds this many standby spares for us.
          session.spares?.setMax(msg.standbyMax);
        } else if (msg.type === "error") {
          throw new RemoteError(msg.reason, msg.message ?? msg.reason);
        } else {
          await ctl.fail("unexpected", `unexpected ${msg.type} on the control connection`);
          throw new ControlError("unexpected", `server sent ${msg.type}`);
        }
      }
    } finally {
      this.#stop.signal.removeEventListener("abort", onStop);
      ctl.close(); // aborts ctl.signal: every relay of this session ends
      session.spares?.close();
      this.#session = undefined;
      this.#connectedSince = undefined;
      this.#events.dispatchEvent(new Event("change"));
      this.log.info("disconnected", { server: this.#serverStr, active: this.#active });
    }
  }

  /**
   * A dial failed for want of file descriptors (EMFILE, ENFILE): every request fails alike
   * until some close, which the per-request "dial failed" line (info, reason "other") does not
   * say. Warned at most every {@linkcode fdWarnIntervalMs}, with the failures since the last.
   */
  #noteDialError(err: unknown): void {
    if (!isOutOfFds(err)) return;
    this.#fdFailures++;
    const now = performance.now();
    if (now - this.#fdWarnedMs < fdWarnIntervalMs) return;
    this.#fdWarnedMs = now;
    this.log.warn("out of file descriptors: dials fail until some close", {
      failedDials: this.#fdFailures,
      error: errorMessage(err),
      fix: "raise the open-file limit (ulimit -n, systemd LimitNOFILE)",
    });
    this.#fdFailures = 0;
  }

  #track(p: Promise<void>): void {
    this.#tasks.add(p);
    p.finally(() => this.#tasks.delete(p));
  }

  /** One of `#streamTasks` ended: the last one lets a waiting `stop()` go on. */
  #taskEnded(): void {
    if (--this.#streamTasks === 0 && this.#streamsIdle) {
      this.#streamsIdle.resolve();
      this.#streamsIdle = undefined;
    }
  }

  /**
   * A standby spare ("open"), just dialled and in the pool: announce it (`announce`, the
   * session's `standby` frame), wait for the request the server writes on it, take it out of
   * the pool and serve it there. The server may end it instead: retired ("retire": replaced),
   * refused (an error frame) or closed (over its bound): taken out. A spare the pool closed
   * (expired, the session ended) ends the wait. Never rejects; `stop()` waits for it through
   * `#streamTasks` (a tracked promise per spare was a Set entry, a finally() and its closure).
   */
  async #watchStandby(
    pool: SparePool,
    conn: Duplex,
    announce: Uint8Array,
    session: () => Session | undefined,
    compact: CompactCodec<DepotMessage> | undefined,
  ): Promise<void> {
    this.#streamTasks++; // right before the try whose finally counts it off
    try {
      try {
        // A short write's rest only through writeAll (a frame of its own).
        const wrote = await conn.write(announce);
        if (wrote < announce.length) await writeAll(conn, announce.subarray(wrote));
      } catch {
        // Gone before it was announced (the server shed it, the pool closed it): as a failed
        // dial, the pool's next take or tick replaces it.
        closeQuietly(conn);
        pool.lost(conn);
        return;
      }
      let req: DepotMessage | null = null;
      let leftover: Uint8Array | undefined;
      // The request mostly comes whole in the spare's first read: decoded from the bytes read,
      // in this frame (a BufferedReader and a ControlReader were two objects and two async
      // frames per connection); a frame split over reads is read on behind what came.
      // Borrowed from the relay pool until that read settled (the leftover is a copy).
      const buf = relayPool.acquire(minRelayBufferBytes);
      let part: Uint8Array | undefined;
      try {
        const n = await conn.read(buf);
        if (n !== null) {
          const first = firstMessageIn(buf.subarray(0, n), depotProtocol, {
            maxMessageBytes: 1024,
            compact,
          });
          if (first) ({ msg: req, leftover } = first);
          else part = buf.slice(0, n);
        }
      } catch {
        // Closed by the pool (expired, the session ended), reset by the server, or a frame
        // that does not decode.
      } finally {
        relayPool.release(buf);
      }
      if (part) {
        try {
          ({ msg: req, leftover } = await readFirstMessage(withPrefix(conn, part), depotProtocol, {
            maxMessageBytes: 1024,
            compact,
          }));
        } catch {
          // As above.
        }
      }
      if (req?.type !== "connect" && !(req?.type === "associate" && this.#udpOpts.enabled)) {
        closeQuietly(conn);
        if (req?.type === "error" && req.reason === standbyRetiredReason) {
          // Idle past its time at the server, which takes no request on it from now on.
          if (pool.retired(conn)) this.log.debug("standby spare retired by the server");
        } else if (pool.remove(conn, false) && req) {
          // A refusal: the server will not take this session's spares (none is dialled back).
          this.log.warn("standby spare refused", { frame: req.type });
        }
        return;
      }
      const s = session();
      if (!pool.remove(conn, true)) {
        // Expired here as the server wrote on it (a server without "retire": its spares are
        // replaced at this local's clock, which races with its pick). It asks again elsewhere.
        this.log.debug("request on a standby spare expired here", { frame: req.type });
        closeQuietly(conn);
        return;
      }
      if (!s) {
        closeQuietly(conn);
        pool.fill(); // taken out as used (no session to serve it): replaced
        return;
      }
      await this.#handleConnect(s, req, {
        stream: conn,
        leftover: leftover!,
        refill: pool,
      });
    } finally {
      this.#taskEnded();
    }
  }

  /**
   * "open": every stream the server opens on the mux session is one request, served as soon
   * as its SYN frame is read (`serveEach`: its request decoded and the target dialled in that
   * turn, as bench/floor_mux.ts's exit does, not a turn later through `accept()` and a read).
   * Resolves when the session ends.
   */
  async #acceptStreams(session: Session, mux: MuxSession): Promise<void> {
    // Each counts itself (`#streamTasks`): a tracked promise per stream was a Set entry, a
    // finally() and its closures (three promises per connection).
    mux.serveEach((stream) => void this.#serveStream(session, stream));
    await mux.closed;
  }

  /**
   * Read the request a server-opened stream starts with, serve it. The request mostly came
   * whole with the SYN: then it is decoded at once and `#handleConnect` dials before this
   * returns its promise; otherwise the rest is read under the handshake timer. Never rejects;
   * `stop()` waits for it through `#streamTasks`.
   */
  async #serveStream(session: Session, stream: MuxStream): Promise<void> {
    this.#streamTasks++;
    try {
      const opts = { maxMessageBytes: 1024, compact: session.compact };
      let first: FirstMessage<DepotMessage> | undefined;
      let src: Duplex | undefined = stream; // where the rest of the request is read, if needed
      const v = stream.takeView();
      if (v !== null) {
        try {
          first = firstMessageIn(v, depotProtocol, opts);
          if (!first) src = withPrefix(stream, v.slice()); // part of the frame: these first
        } catch (err) {
          src = undefined;
          this.log.debug("request stream failed", { error: describe(err) });
        } finally {
          stream.releaseView();
        }
      }
      if (!first && src) first = await this.#readRequest(src, opts);
      const req = first?.msg;
      if (req?.type === "connect" || (req?.type === "associate" && this.#udpOpts.enabled)) {
        await this.#handleConnect(session, req, { stream, leftover: first!.leftover });
        return;
      }
      if (req) this.log.warn("unexpected first frame on a request stream", { type: req.type });
      closeQuietly(stream);
    } finally {
      this.#taskEnded();
    }
  }

  /** The request on `src` (a stream's, maybe behind its first bytes) under the handshake timer. */
  async #readRequest(
    src: Duplex,
    opts: { maxMessageBytes: number; compact: CompactCodec<DepotMessage> | undefined },
  ): Promise<FirstMessage<DepotMessage> | undefined> {
    const timeoutMs = this.#opts.handshakeTimeoutMs ?? depotHandshakeTimeoutMs;
    const cancelTimer = after(timeoutMs, () => closeQuietly(src));
    try {
      return await readFirstMessage(src, depotProtocol, opts);
    } catch (err) {
      this.log.debug("request stream failed", { error: describe(err) });
      return undefined;
    } finally {
      cancelTimer();
    }
  }

  /**
   * Dial the target; report failure, or open the tunnel and relay. An `associate` dials
   * nothing: its tunnel carries datagrams to the UDP exit (udp.ts). With `on`, the request
   * came on a stream the server opened: that stream is the tunnel and takes the answer.
   * Never rejects.
   */
  async #handleConnect(
    session: Session,
    req: ConnectRequest | AssociateRequest,
    on?: OnStream,
  ): Promise<void> {
    const o = this.#opts;
    const { ctl } = session;
    // An abort per request, which the session's end aborts (one listener for the session):
    // the dial's and the relay's listeners go on it, not on the session's long-lived signal,
    // where each add and remove scans every other request's (O(concurrent requests) each).
    // Not an AbortController: an AbortSignal is made only for a TCP tunnel or UDP.
    const abort = new AbortHub();
    session.requests.set(req.id, abort);
    if (ctl.signal.aborted) abort.abort(ctl.signal.reason);
    const udp = req.type === "associate";
    // The destination's text and the request's logger are made only on the paths that use
    // them (failures, info lines): a relayed connection below the info level makes neither
    // (a string, a closure and its context per connection).
    let reqLog: Logger | undefined;
    const startedMs = performance.now();
    const timeoutMs = o.dialTimeoutMs ?? defaultLocalDialTimeoutMs;
    let app: Deno.TcpConn | undefined;
    let tunnel: Duplex | undefined;
    // A datagram's destination is checked when it comes (the ACL and `allow`, in udp.ts).
    const allowed = udp || !o.allow || o.allow({ host: req.host, port: req.port });
    // The tunnel transport is opened while the target is dialled: set-up costs one of the
    // two, not both. If the dial fails, the unused transport is closed unnamed.
    // With `on`, the tunnel is there already.
    const transport = on || !allowed ? undefined : session.openTunnel(abort.signal).then(
      (conn) => ({ conn, error: undefined }),
      (error: unknown) => ({ conn: undefined, error }),
    );
    try {
      try {
        if (!allowed) {
          throw new NetError("not-allowed", `${destOf(req)} is not allowed by this local's policy`);
        }
        // dial() (aclDial too) sets TCP_NODELAY already.
        if (!udp) {
          app = o.acl
            ? await aclDial(o.acl, { host: req.host, port: req.port }, { timeoutMs, signal: abort })
            : await dial(req.host, req.port, { timeoutMs, signal: abort });
        }
      } catch (err) {
        const reason = classifyError(err);
        this.#noteDialError(err);
        this.#fail(destOf(req), reason, errorMessage(err));
        this.#requestLog(req).info("dial failed", { failure: reason, error: errorMessage(err) });
        await reportFailed(ctl, on, req.id, reason, errorMessage(err));
        on?.refill?.fill();
        // `transport` never rejects (its failure is a value): close what it brings, if any.
        if (on) closeQuietly(on.stream);
        else void transport?.then((t) => closeQuietly(t.conn?.conn));
        return;
      }
      try {
        if (on) {
          try {
            const frame = tunnelFrame(req, app?.localAddr, session.compact);
            // "open": the answer goes on the stream the request came on, which relays from the
            // next byte (the server opened it for this request: no acceptance round). A mux
            // stream queues the small answer at once (no promise, no turn); a spare writes it.
            if (!(on.stream instanceof MuxStream && on.stream.writeNow(frame))) {
              // writeAll (an async frame of its own) only for a short write's rest.
              const wrote = await on.stream.write(frame);
              if (wrote < frame.length) await writeAll(on.stream, frame.subarray(wrote));
            }
            tunnel = withPrefix(on.stream, on.leftover);
          } finally {
            on.refill?.fill();
          }
        } else {
          const t = (await transport)!; // set when allowed, as it is past the dial
          if (t.error !== undefined) throw t.error;
          const opened = t.conn!;
          try {
            tunnel = await this.#tunnelHandshake(
              opened.conn,
              req,
              app?.localAddr,
              abort.signal,
              session,
            );
          } catch (err) {
            if (!opened.spare || err instanceof RemoteError || abort.aborted) throw err;
            // A spare the server had already dropped (restart, timer): one fresh connection.
            this.#requestLog(req).debug("spare tunnel was dead, dialling a fresh one", {
              error: describe(err),
            });
            const fresh = await session.dialTunnel(abort.signal);
            tunnel = await this.#tunnelHandshake(fresh, req, app?.localAddr, abort.signal, session);
          }
        }
      } catch (err) {
        this.#noteDialError(err);
        this.#fail(destOf(req), "other", `tunnel: ${describe(err)}`);
        this.#requestLog(req).warn("tunnel failed", { error: describe(err) });
        await reportFailed(ctl, on, req.id, "other", `tunnel: ${describe(err)}`);
        if (on) closeQuietly(on.stream); // its answer is written: nothing else goes on it
        return;
      }
      const stats: RelayStats = { aToB: 0, bToA: 0 };
      this.#active++;
      this.#total++;
      this.#live.add(stats);
      m.localSeries.active.inc();
      this.#okCount.inc();
      m.localSeries.connect.observe((performance.now() - startedMs) / 1000);
      let end = "error";
      let udpResult: ExitAssociationResult | undefined;
      try {
        if (!app) {
          // An associate (nothing was dialled): the tunnel carries datagrams.
          const t = tunnel;
          tunnel = undefined; // serveExitAssociation closes it
          reqLog = this.#requestLog(req);
          udpResult = await serveExitAssociation(t, this.#udpOpts, stats, abort.signal, reqLog);
          end = udpResult.end;
          return;
        }
        // The target's FIN, once passed on, is confirmed to the server (see tunnel_end.ts).
        const relayed = session.reportsEnds ? new ReportedEnd(tunnel, ctl, req.id) : tunnel;
        // a = tunnel (client side), b = app: aToB is "up".
        const r = await relay(relayed, app, {
          signal: abort,
          idleTimeoutMs: o.idleTimeoutMs,
          stats,
        });
        // relay() closed both; closing again would only build BadResource errors.
        app = undefined;
        tunnel = undefined;
        end = r.end;
      } finally {
        if (this.log.enabled("info")) {
          (reqLog ?? this.#requestLog(req)).info("connection closed", {
            end,
            up: stats.aToB,
            down: stats.bToA,
            ...(udpResult
              ? {
                datagramsUp: udpResult.datagramsUp,
                datagramsDown: udpResult.datagramsDown,
                error: udpResult.message,
              }
              : {}),
            ms: Math.round(performance.now() - startedMs),
          });
        }
        this.#active--;
        this.#live.delete(stats);
        this.#bytesUp += stats.aToB;
        this.#bytesDown += stats.bToA;
        m.localSeries.active.dec();
        m.localSeries.up.inc(stats.aToB);
        m.localSeries.down.inc(stats.bToA);
      }
    } finally {
      session.requests.delete(req.id);
      closeQuietly(app);
      closeQuietly(tunnel);
    }
  }

  /** Open the mux tunnel connection: `mux{token,name}` -> `muxAccepted` -> yamux client. */
  async #openMux(
    dialTunnel: (signal: AbortSignal) => Promise<Duplex>,
    heartbeatMs: number,
    sessionKey?: string,
  ): Promise<MuxSession> {
    const o = this.#opts;
    const conn = await dialTunnel(this.#stop.signal);
    const timer = setTimeout(
      () => closeQuietly(conn),
      o.handshakeTimeoutMs ?? depotHandshakeTimeoutMs,
    );
    try {
      await new ControlWriter(conn, depotProtocol).send({
        type: "mux",
        token: o.token ?? "",
        name: this.name,
        sessionKey,
      });
      const buffered = new BufferedReader(conn, 1024);
      const answer = await new ControlReader(buffered, depotProtocol, { maxMessageBytes: 1024 })
        .read();
      if (answer?.type === "error") throw new RemoteError(answer.reason, answer.message ?? "");
      if (answer?.type !== "muxAccepted") {
        throw new ControlError("unexpected", `mux: got ${answer?.type ?? "EOF"}`);
      }
      this.log.info("tunnels multiplexed over one connection (mux)");
      return MuxSession.client(withPrefix(conn, buffered.takeBuffered()), {
        synAckDelayMs: muxAckDelayMs,
        keepaliveIntervalMs: heartbeatMs,
        keepaliveTimeoutMs: heartbeatMs * heartbeatDeadFactor,
        log: this.log.child({ mux: "client" }),
      });
    } catch (err) {
      closeQuietly(conn);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Name the request on a fresh tunnel transport and wait for the server's acceptance. */
  async #tunnelHandshake(
    conn: Duplex,
    req: { id: number; key: string },
    bound: Deno.NetAddr | undefined,
    signal: AbortSignal,
    session: Pick<Session, "compact">,
  ): Promise<Duplex> {
    const o = this.#opts;
    const timeoutMs = o.handshakeTimeoutMs ?? depotHandshakeTimeoutMs;
    const onAbort = () => closeQuietly(conn);
    const cancelTimer = after(timeoutMs, onAbort); // the shared wheel: no timer per request
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await writeAll(conn, tunnelFrame(req, bound, session.compact));
      const buffered = new BufferedReader(conn, 1024);
      const answer = await new ControlReader(buffered, depotProtocol, {
        maxMessageBytes: 1024,
        compact: session.compact,
      }).read();
      if (answer?.type === "tunnelAccepted" && answer.id === req.id) {
        return withPrefix(conn, buffered.takeBuffered());
      }
      if (answer?.type === "error") throw new RemoteError(answer.reason, answer.message ?? "");
      throw new ControlError(
        signal.aborted ? "closed" : "unexpected",
        answer ? `unexpected ${answer.type} on the tunnel` : "tunnel closed by the server",
      );
    } catch (err) {
      closeQuietly(conn);
      throw err;
    } finally {
      cancelTimer();
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The logger of request `req`'s lines. */
  #requestLog(req: ConnectRequest | AssociateRequest): Logger {
    return this.log.child({ id: req.id, dest: destOf(req) });
  }

  #fail(dest: string, reason: NetFailureReason, message: string): void {
    this.#failureCount++;
    this.#failuresByReason[reason] = (this.#failuresByReason[reason] ?? 0) + 1;
    m.requestsTotal.inc({ side: "local", exit: this.name, result: reason });
    this.#failures.push({ at: new Date().toISOString(), dest, reason, message });
    if (this.#failures.length > recentFailureCount) this.#failures.shift();
  }
}

/**
 * Tell the server request `id` failed: on its stream (`on`), else on the control connection.
 * Never rejects.
 */
async function reportFailed(
  ctl: ControlConn<DepotMessage>,
  on: OnStream | undefined,
  id: number,
  reason: NetFailureReason,
  message: string,
): Promise<void> {
  const failed = { type: "connectFailed" as const, id, reason, message: message.slice(0, 500) };
  const sent = on ? new ControlWriter(on.stream, depotProtocol).send(failed) : ctl.send(failed);
  await sent.catch(() => {
    // The control connection (or the stream) is gone: the server fails the request itself.
  });
}

/**
 * One frame of our own on a tunnel: nothing else writes there meanwhile, so it needs none of
 * a ControlWriter's queueing (one per frame was a promise chain and an object per request).
 */
function frame(
  msg: Outgoing<DepotMessage>,
  compact: CompactCodec<DepotMessage> | undefined,
): Uint8Array {
  return compact?.encode(msg) ?? encodeFrame({ v: depotProtocol.version, ...msg });
}

/** The `tunnel` answer to request `req`, naming the target side's address. */
function tunnelFrame(
  req: { id: number; key: string },
  bound: Deno.NetAddr | undefined,
  compact: CompactCodec<DepotMessage> | undefined,
): Uint8Array {
  return frame({
    type: "tunnel",
    id: req.id,
    key: req.key,
    boundHost: bound?.hostname,
    boundPort: bound?.port,
  }, compact);
}

/** What a request's log lines and failures name as its destination. */
function destOf(req: ConnectRequest | AssociateRequest): string {
  return req.type === "associate" ? "udp" : joinHostPort(req.host, req.port);
}

function describe(err: unknown): string {
  if (err instanceof RemoteError || err instanceof ControlError) {
    return `${err.reason}: ${err.message}`;
  }
  if (err instanceof NetError) return `${err.reason}: ${err.message}`;
  return errorMessage(err);
}
