/**
 * The tunnel client: connects to the server's control path over a WebSocket, runs the
 * mux session (client side), does the handshake, and serves every tunnel stream the
 * server opens by dialing the local app (HTTP) or local TCP service and relaying bytes, or
 * (UDP tunnels) relaying one public peer's datagrams to a local UDP service.
 * Reconnects forever with exponential backoff and jitter, the first attempt included.
 * @module
 */

import { Session, type SessionOptions, type Stream } from "../mux/mod.ts";
import { type LogFields, type Logger, silentLogger } from "../log.ts";
import {
  Backoff,
  type BackoffOptions,
  BufferedReader,
  closeQuietly,
  dial,
  type Duplex,
  errorMessage,
  type HostPort,
  joinHostPort,
  NetError,
  relay,
  sleep,
  TappedDuplex,
  writeAll,
  writeQuietly,
} from "../net/mod.ts";
import {
  classifyTlsError,
  dialTls,
  dialTransport,
  proxyFor,
  type ProxySettings,
  type TlsClientConfig,
  TlsError,
  tlsReasonText,
  upgradeClient,
  UpgradeError,
  webSocketProtocol,
  WsConn,
} from "../transport/mod.ts";
import {
  type ControlMsg,
  controlPath,
  encodeMessage,
  expectMessage,
  expectMessageExact,
  type HandshakeResponse,
  identifierHeader,
  rawUpgradeToken,
  readMessage,
  type SessionEndCauseLocal,
  type SessionEndReport,
  sessionEndReport,
  sessionEndWaitMs,
  sessionEndWithin,
  type StreamFailure,
} from "./protocol.ts";
import { defaultHeartbeatIntervalMs, defaultHeartbeatTimeoutMs } from "./protocol.ts";
import { type FlowLimits, FlowTable, UdpDrops, type UdpSocket } from "../udp/mod.ts";
import {
  type LocalUdpFlow,
  openLocalUdp,
  relayUdpStream,
  type UdpTunnelSpec,
} from "./udp_client.ts";
import { subdomainHeader } from "./subdomains.ts";
import { type HealthCheckOptions, HealthMonitor } from "./health.ts";
import { clientHealthLines, HealthLog } from "./health_log.ts";
import type { HostAccessSpec } from "./access.ts";
import type { HostRewriteSpec } from "./rewrite.ts";

/** How many failed streams `TunnelClient.recentFailures` keeps (the status page's table). */
export const recentFailuresKept = 50;

/** One stream that failed here: when, where it was going, the reason word and the error. */
export interface TunnelClientFailure {
  at: string;
  dest: string;
  reason: string;
  message: string;
}

/** How long a closing session lets open tunnel streams finish. */
const defaultDrainMs = 2_000;
/**
 * The ACK of a stream the server opened waits this long to ride on our answer (written after
 * the local dial): sent at accept, it was a transport write of its own on each new stream, and
 * a wakeup of the server for nothing. A slower dial sends it alone. The server never waits for
 * it (lib/mux takes any frame of ours as the ACK).
 */
const streamAckDelayMs = 1_000;

/** A local TCP service exposed on a public port of the server. */
export interface TcpTunnelSpec {
  /** Port the server opens publicly. */
  publicPort: number;
  /** Local address its connections are relayed to. */
  local: HostPort;
}

/** Options of {@linkcode TunnelClient}. */
export interface TunnelClientOptions {
  /** Server base URL: `http://host:port`, `https://...`, `ws://...` or `wss://...`. */
  server: string;
  /**
   * More instances of the same cluster (issue 19): after a failed attempt or a lost session
   * the next attempt goes to the next URL in turn (`server` first), with the same backoff.
   */
  servers?: string[];
  /** The secret the server maps this client's hosts to. */
  identifier: string;
  /** Where HTTP requests go when the Host header names no (allowed) port. */
  local: HostPort;
  /** Host-header ports the server may select (dialed on `local.host`); others use `local`. */
  allowPorts?: number[];
  /** Public TCP tunnels to request. */
  tcp?: TcpTunnelSpec[];
  /** Public UDP tunnels to request. */
  udp?: UdpTunnelSpec[];
  /** Bounds of the UDP flows (one per public peer) this client holds. */
  udpLimits?: FlowLimits;
  /** How the session reaches the server. @default "auto" */
  transport?: Transport;
  /** Extra trusted CA certificates (PEM) for an https/wss server. */
  caCerts?: string[];
  /**
   * TLS for an https/wss server: a CA to trust (added to `caCerts`), the name to verify, and
   * a client certificate for a server that requires one (mutual TLS).
   */
  tls?: TlsClientConfig;
  /**
   * Leave through an HTTP CONNECT or SOCKS5 proxy to reach the server (`--proxy`,
   * `HTTPS_PROXY`/`ALL_PROXY`, `NO_PROXY`; lib/transport `proxySettings`).
   */
  proxy?: ProxySettings;
  /** Redial policy. @default { initialMs: 250, maxMs: 30000 } */
  backoff?: BackoffOptions;
  /**
   * Consecutive refusals of the identifier (401/403) after which `run()` gives up and sets
   * `refusal` (frpc's `loginFailExit`): a wrong secret does not retry forever. 0 = keep
   * trying. @default 3
   */
  authFailExitAfter?: number;
  /**
   * Claim this subdomain of the server's `--domain` (a DNS label; `*`: any free one, then
   * kept across reconnects). Needs an account token as the identifier. A refusal (taken,
   * malformed, no domain) counts like a refused identifier.
   */
  subdomain?: string;
  /**
   * Access rules the server checks for this client's hosts before a request reaches it
   * (basic, bearer, source CIDRs; the server's own rules of a host win). Sent in the
   * handshake, inside the session; a server refusing them ends `run()` (`refusal`).
   */
  access?: HostAccessSpec;
  /** Header rewrites the server applies for this client's hosts (before its own). */
  rewrite?: HostRewriteSpec;
  /** Timeout of each dial (server and local). @default 10000 */
  dialTimeoutMs?: number;
  /**
   * Check the local app (GET a path on `local`) and tell the server: it sends this client no
   * request until a check passed, and none while `failures` checks in a row fail (a group's
   * other members take them).
   */
  healthCheck?: HealthCheckOptions;
  /** Mux ping interval. @default 2000 */
  heartbeatIntervalMs?: number;
  /** Silence after which the server is given up for dead. @default 6000 */
  heartbeatTimeoutMs?: number;
  /** Extra mux session options. */
  mux?: SessionOptions;
  /** Where events are logged. @default silent */
  log?: Logger;
  /** Stops the client. */
  signal?: AbortSignal;
  /** Called after every successful handshake. */
  onConnected?: (resp: HandshakeResponse) => void;
  /**
   * Watches each HTTP tunnel stream (the inspector): given the local app's `host:port`, an
   * observer shown every piece relayed, synchronously; it must not throw or keep the pieces.
   */
  tap?: (dest: string) => StreamTap;
}

/** An observer of one relayed HTTP stream ({@linkcode TunnelClientOptions.tap}). */
export interface StreamTap {
  /** Bytes read from the tunnel, on their way to the local app. */
  up(p: Uint8Array): void;
  /** Bytes read from the local app, on their way back. */
  down(p: Uint8Array): void;
  /** The relay ended. */
  end(): void;
}

/**
 * How the mux session reaches the server: "websocket" (binary messages; passes any
 * WebSocket-capable proxy, works with both server fronts), "raw" (HTTP Upgrade to
 * `warren-mux`, then plain bytes; standalone front only, no framing or masking cost: up to
 * twice the bulk throughput), or "auto": raw, and websocket when something on the way (the
 * embeddable front, a WebSocket-only proxy) does not switch to raw.
 */
export type Transport = "auto" | "websocket" | "raw";

/**
 * Why a connection to the server failed: "tls" is a failed TLS handshake (wrong CA, name,
 * expired certificate) or a server that hung up right after it (it wants a client certificate
 * we did not present, or does not trust ours).
 */
export type ConnectFailure =
  | "dial"
  | "tls"
  | "refused"
  | "unauthorized"
  | "duplicate"
  | "protocol";

/** A failed attempt to reach or register with the server. */
export class ConnectError extends Error {
  /** Error class name. */
  override name = "ConnectError";
  /** A failure of kind `reason`. */
  constructor(readonly reason: ConnectFailure, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** The server refused the access rules or rewrites this client sent (a config error). */
class RulesRefusedError extends ConnectError {}

/**
 * "tls": the server (or a TLS-terminating proxy) closed the connection after the handshake
 * instead of answering the upgrade.
 */
class TlsHangUpError extends ConnectError {}

/** Parsed server URL. */
interface ServerUrl {
  tls: boolean;
  host: string;
  port: number;
  hostHeader: string;
  path: string;
}

/**
 * The public URL of each host a server hands this client (as ngrok prints its forwarding
 * lines): the server URL's scheme and port with the host's name; a wildcard stays `*.name`.
 */
export function publicUrls(server: string, hosts: string[]): string[] {
  const u = parseServerUrl(server);
  const scheme = u.tls ? "https" : "http";
  const port = u.port === (u.tls ? 443 : 80) ? "" : `:${u.port}`;
  return hosts.map((h) => `${scheme}://${h}${port}`);
}

function parseServerUrl(s: string): ServerUrl {
  const u = new URL(s.includes("://") ? s : `http://${s}`);
  const tls = u.protocol === "https:" || u.protocol === "wss:";
  if (!["http:", "https:", "ws:", "wss:"].includes(u.protocol)) {
    throw new RangeError(`server URL must be http(s) or ws(s): ${s}`);
  }
  const port = u.port ? Number(u.port) : tls ? 443 : 80;
  const host = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
  const base = u.pathname.replace(/\/+$/, "");
  return { tls, host, port, hostHeader: u.host, path: base + controlPath };
}

/** Options of {@linkcode connectTransport}. */
export interface ConnectTransportOptions {
  /** The subdomain to claim (sent in the `X-Tunnel-Subdomain` header). */
  subdomain?: string;
  /** Time for the dial, TLS and the upgrade answer. @default 10000 */
  timeoutMs?: number;
  /** Abort the attempt. */
  signal?: AbortSignal;
  /** WebSocket, the raw upgrade, or raw falling back to WebSocket. @default "auto" */
  transport?: Transport;
  /** "auto" only: the raw upgrade was refused on the way (and WebSocket is tried next). */
  onRawRefused?: (err: ConnectError) => void;
  /** Extra trusted CA certificates (PEM) for an https/wss server. */
  caCerts?: string[];
  /** CA, server name and client certificate (mutual TLS) for an https/wss server. */
  tls?: TlsClientConfig;
  /**
   * Leave through an HTTP CONNECT or SOCKS5 proxy to reach the server (`--proxy`,
   * `HTTPS_PROXY`/`ALL_PROXY`, `NO_PROXY`; lib/transport `proxySettings`).
   */
  proxy?: ProxySettings;
}

/**
 * Open the transport to the server's control path with our identifier (a `WsConn` for
 * WebSocket, the upgraded connection itself for raw).
 * Rejects with ConnectError: "unauthorized" (401/403), "duplicate" (409), "refused" (other
 * status), "dial" (network), "tls" (handshake failed, or the server hung up right after it:
 * it wants a client certificate), "protocol" (not a valid upgrade answer). With "auto", a
 * "refused" or "protocol" answer to the raw upgrade, or a hang-up after TLS (a proxy that
 * drops unknown upgrades), is followed by a WebSocket attempt.
 */
export async function connectTransport(
  server: string,
  identifier: string,
  opts: ConnectTransportOptions = {},
): Promise<Duplex> {
  const transport = opts.transport ?? "auto";
  if (transport !== "auto") return await connectOnce(server, identifier, opts, transport);
  try {
    return await connectOnce(server, identifier, opts, "raw");
  } catch (err) {
    // Refused on the way: another status than 101, not the raw protocol, or (a TLS-terminating
    // proxy) a hang-up instead of an answer. A mutual-TLS server refusing our certificate
    // hangs up too: then WebSocket fails the same way, its error is reported, and raw stays
    // the first choice (onRawRefused only once WebSocket got through).
    const refusedOnTheWay = err instanceof ConnectError &&
      (err.reason === "refused" || err.reason === "protocol" || err instanceof TlsHangUpError);
    if (!refusedOnTheWay || opts.signal?.aborted) throw err;
    const ws = await connectOnce(server, identifier, opts, "websocket");
    opts.onRawRefused?.(err);
    return ws;
  }
}

async function connectOnce(
  server: string,
  identifier: string,
  opts: ConnectTransportOptions,
  transport: "websocket" | "raw",
): Promise<Duplex> {
  const u = parseServerUrl(server);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const conn = await dialServer(u, opts, timeoutMs);
  const timer = setTimeout(() => closeQuietly(conn), timeoutMs);
  // A stop while the answer is on the way cuts the attempt (else it waits for the answer, up
  // to timeoutMs); an abort that came before this listener is handled at once.
  const cut = () => closeQuietly(conn);
  opts.signal?.addEventListener("abort", cut, { once: true });
  if (opts.signal?.aborted) cut();
  try {
    return await upgradeClient(conn, {
      path: u.path,
      host: u.hostHeader,
      protocol: transport === "raw" ? rawUpgradeToken : webSocketProtocol,
      headers: {
        [identifierHeader]: identifier,
        "User-Agent": "warren-tunnel-client",
        ...(opts.subdomain === undefined ? {} : { [subdomainHeader]: opts.subdomain }),
      },
    });
  } catch (err) {
    closeQuietly(conn);
    if (err instanceof UpgradeError) {
      const status = err.status ?? 0;
      const reason: ConnectFailure = err.reason === "protocol"
        ? "protocol"
        : status === 401 || status === 403
        ? "unauthorized"
        : status === 409
        ? "duplicate"
        : "refused";
      throw new ConnectError(reason, err.message, { cause: err });
    }
    if (u.tls && hungUpAfterTls(err)) {
      // A mutual-TLS server verifies our certificate after the handshake has completed on
      // our side (TLS 1.3) and then just closes: this is how a refused client cert looks.
      const why = opts.tls?.cert
        ? "it does not accept our client certificate (signed by a CA it does not trust?)"
        : "it probably requires a client certificate (--tls-client-cert/--tls-client-key)";
      throw new TlsHangUpError(
        "tls",
        `${u.hostHeader} closed the TLS connection before answering: ${why} (${errorMessage(err)})`,
        { cause: err },
      );
    }
    throw new ConnectError("protocol", `bad answer from server: ${errorMessage(err)}`, {
      cause: err,
    });
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", cut);
  }
}

/** Whether `err` (while reading the upgrade answer) is the peer closing or resetting. */
function hungUpAfterTls(err: unknown): boolean {
  if ((err as { reason?: unknown })?.reason === "eof") return true;
  const r = classifyTlsError(err);
  return r === "eof" || r === "client-cert-required" || r === "peer-rejected";
}

/** TCP or TLS to the server (lib/transport), failures typed as "dial" or "tls". */
async function dialServer(
  u: ServerUrl,
  opts: ConnectTransportOptions,
  timeoutMs: number,
): Promise<Duplex> {
  const proxy = proxyFor(opts.proxy, u, u.tls);
  const dialOpts = { timeoutMs, signal: opts.signal, prefer: "ipv4" as const, proxy };
  if (!u.tls) {
    try {
      return await dialTransport({ kind: "tcp", host: u.host, port: u.port, path: "/" }, dialOpts);
    } catch (err) {
      throw new ConnectError("dial", `cannot reach ${u.hostHeader}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }
  const cas = [...(opts.caCerts ?? []), ...(opts.tls?.ca ? [opts.tls.ca] : [])];
  const cfg: TlsClientConfig = {
    ...opts.tls,
    ca: cas.length > 0 ? cas.join("\n") : undefined,
    serverName: opts.tls?.serverName ?? u.host,
  };
  try {
    return await dialTls(u.host, u.port, cfg, dialOpts);
  } catch (err) {
    if (!(err instanceof TlsError)) {
      throw new ConnectError("dial", `cannot reach ${u.hostHeader}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    throw new ConnectError(
      "tls",
      `TLS with ${u.hostHeader} (name ${cfg.serverName}) failed: ${err.reason} (${
        tlsReasonText[err.reason]
      }): ${errorMessage(err.cause ?? err)}`,
      { cause: err },
    );
  }
}

/** Client state, for status and tests. */
export type ClientState =
  | "connecting"
  | "connected"
  | "backoff"
  | "stopped"
  | "replaced"
  | "refused";

/** A session's health check of the local app and the bounded log of its transitions. */
interface CheckedApp {
  stop(): Promise<void>;
  healthLog: HealthLog;
}

/** Default of {@linkcode TunnelClientOptions.authFailExitAfter}. */
export const defaultAuthFailExitAfter = 3;

/**
 * A tunnel client. `run()` keeps it connected until the signal aborts; every failure
 * (including the first) is followed by a backoff delay and another attempt.
 */
export class TunnelClient {
  readonly #o: TunnelClientOptions;
  readonly #log: Logger;
  /** Where the run loop is now. */
  state: ClientState = "connecting";
  /** Successful handshakes so far. */
  connects = 0;
  /** Tunnel streams served so far. */
  streams = 0;
  /** Streams relayed to the local service (its dial succeeded). */
  relayed = 0;
  /** Streams that failed here, by reason (`refused`, `no-such-port` ...): the server's 502s. */
  readonly failuresByReason: Record<string, number> = {};
  /** The last failures, oldest first (at most {@linkcode recentFailuresKept}). */
  readonly recentFailures: TunnelClientFailure[] = [];
  /** Set when another client with our identifier took over: `run()` then returns. */
  replaced = false;
  /** The health check's verdict while connected (undefined: no check, or not connected). */
  healthy: boolean | undefined;
  /** Set (one line, why) when the server kept refusing the identifier: `run()` then returns. */
  refusal: string | undefined;
  /** The public URLs the server gave at the last handshake (as the `forwarding` lines). */
  publicUrls: string[] = [];
  #session: Session | undefined;
  /** Local ports a server-defined TCP tunnel asked for and was refused (warned once). */
  #refusedPorts = new Set<number>();
  /** The subdomain asked for: `subdomain`, or once a random one was given, that one. */
  #subdomain: string | undefined;
  /** "auto": the raw upgrade was refused on the way once; reconnect with WebSocket. */
  #rawRefused = false;
  /** Attempts so far: picks the server URL of the next one. */
  #attempts = 0;
  /** UDP flows (one per tunnel stream of a UDP tunnel), made at the first one. */
  #udpFlows: FlowTable<LocalUdpFlow> | undefined;

  /** The UDP flow table, once a UDP tunnel stream came (status, tests). */
  get udpFlows(): FlowTable<LocalUdpFlow> | undefined {
    return this.#udpFlows;
  }

  /** The server URL of the current attempt (rotates through `server` and `servers`). */
  get #server(): string {
    const all = [this.#o.server, ...this.#o.servers ?? []];
    return all[(this.#attempts - 1 + all.length) % all.length];
  }

  /** The server URL of the current (or last) attempt. */
  get serverUrl(): string {
    return this.#server;
  }

  /** The last mux ping round trip to the server, while connected. */
  get rttMs(): number | undefined {
    return this.state === "connected" ? this.#session?.rttMs : undefined;
  }

  /** A client; nothing happens until `run()`. */
  constructor(opts: TunnelClientOptions) {
    for (const url of [opts.server, ...opts.servers ?? []]) parseServerUrl(url); // validate early
    this.#o = opts;
    this.#log = opts.log ?? silentLogger;
    this.#subdomain = opts.subdomain;
  }

  /** Run until `signal` aborts. Never rejects. */
  async run(): Promise<void> {
    const backoff = new Backoff(this.#o.backoff ?? { initialMs: 250, maxMs: 30_000 });
    const signal = this.#o.signal;
    const authFailExitAfter = this.#o.authFailExitAfter ?? defaultAuthFailExitAfter;
    let authFails = 0;
    while (!signal?.aborted) {
      this.state = "connecting";
      const started = Date.now();
      // One line per attempt: how it ended and when the next one starts.
      let line: { level: "info" | "warn"; msg: string; fields: LogFields };
      try {
        const end = await this.#once(() => {
          backoff.reset();
          authFails = 0;
        });
        if (this.replaced) {
          this.#log.error("replaced by another client with the same identifier; not reconnecting");
          break;
        }
        line = {
          level: end.level,
          msg: "disconnected from server",
          fields: { end: end.reason, why: end.why, error: end.error },
        };
      } catch (err) {
        if (signal?.aborted) break;
        if (err instanceof RulesRefusedError) {
          this.refusal = `the server refused this client's access rules or header rewrites ` +
            `(${err.message})`;
          this.#log.error("giving up: rules refused", { error: err.message });
          break;
        }
        const failure = err instanceof ConnectError ? err.reason : "error";
        const claimRefused = this.#subdomain !== undefined &&
          (failure === "duplicate" || failure === "refused");
        if (
          (failure === "unauthorized" || claimRefused) && ++authFails >= authFailExitAfter &&
          authFailExitAfter
        ) {
          this.refusal = claimRefused
            ? `the server refused subdomain ${this.#subdomain} ${authFails} times in a row ` +
              `(${errorMessage(err)}: 409 = taken by another token, 400 = not a DNS label)`
            : `the server refused this identifier ${authFails} times in a row ` +
              `(${errorMessage(err)}): check the identifier, or ask the server's admin to add it`;
          this.#log.error("giving up: identifier refused", {
            attempts: authFails,
            error: errorMessage(err),
          });
          break;
        }
        line = {
          level: "warn",
          msg: "cannot connect to server",
          fields: { failure, error: errorMessage(err) },
        };
      }
      if (signal?.aborted) {
        this.#log[line.level](line.msg, line.fields); // stopped: no next attempt to announce
        break;
      }
      // A session that lived a while resets the delay; flapping ones keep growing it.
      if (Date.now() - started > 30_000) backoff.reset();
      const delayMs = backoff.next();
      this.state = "backoff";
      this.#log[line.level](line.msg, { ...line.fields, inMs: delayMs, attempt: backoff.attempt });
      try {
        await sleep(delayMs, signal);
      } catch {
        break; // aborted
      }
    }
    this.#udpFlows?.close();
    this.#udpFlows = undefined;
    this.state = this.replaced ? "replaced" : this.refusal ? "refused" : "stopped";
  }

  /**
   * One connection: transport, session, handshake, serve until the session ends. Resolves
   * with why it ended; rejects when it never got connected.
   */
  async #once(onUp: () => void): Promise<SessionEndReport> {
    const signal = this.#o.signal;
    const mode = this.#o.transport ?? "auto";
    this.#attempts++;
    const transport = await connectTransport(this.#server, this.#o.identifier, {
      subdomain: this.#subdomain,
      timeoutMs: this.#o.dialTimeoutMs,
      signal,
      // Once the raw upgrade was refused on the way, later reconnects go straight to WebSocket.
      transport: mode === "auto" && this.#rawRefused ? "websocket" : mode,
      onRawRefused: (err) => {
        this.#rawRefused = true;
        this.#log.info("raw transport refused on the way, using websocket", {
          error: err.message,
        });
      },
      caCerts: this.#o.caCerts,
      tls: this.#o.tls,
      proxy: this.#o.proxy,
    });
    const session = Session.client(transport, {
      keepaliveIntervalMs: this.#o.heartbeatIntervalMs ?? defaultHeartbeatIntervalMs,
      keepaliveTimeoutMs: this.#o.heartbeatTimeoutMs ?? defaultHeartbeatTimeoutMs,
      drainTimeoutMs: defaultDrainMs,
      synAckDelayMs: streamAckDelayMs,
      ...this.#o.mux,
    });
    this.#session = session;
    let control: Stream | undefined;
    let monitor: CheckedApp | undefined;
    let cause: SessionEndCauseLocal | undefined;
    const onAbort = () => {
      // The control stream is a stream like any other: close it so the drain can finish.
      if (control) closeQuietly(control);
      void session.close(); // settles the session; close() does not reject
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    // Stopped while the transport came up: an abort event fired before the listener above is
    // never seen again, and this session would then be served until the server ends it.
    if (signal?.aborted) onAbort();
    try {
      control = await session.open();
      const reader = new BufferedReader(control);
      await writeAll(
        control,
        encodeMessage({
          type: "handshakeRequest",
          client: "warren-tunnel-client/1",
          tcp: (this.#o.tcp ?? []).map((t) => ({ publicPort: t.publicPort })),
          ...(this.#o.healthCheck ? { healthCheck: true } : {}),
          ...(this.#o.udp?.length
            ? { udp: this.#o.udp.map((t) => ({ publicPort: t.publicPort })) }
            : {}),
          ...(this.#o.access ? { access: this.#o.access } : {}),
          ...(this.#o.rewrite ? { rewrite: this.#o.rewrite } : {}),
        }),
      );
      const resp = await Promise.race([
        expectMessage(reader, "handshakeResponse"),
        session.closed.then((c) => {
          throw new ConnectError("protocol", `session closed during handshake: ${c.reason}`);
        }),
      ]);
      if (!resp.ok) {
        const error = resp.error ?? "handshake refused";
        // Refused rules stay refused: trying again with the same ones cannot help.
        if (error.startsWith("rules refused")) throw new RulesRefusedError("refused", error);
        throw new ConnectError("refused", error);
      }
      for (const note of resp.notes ?? []) this.#log.warn("server note", { note });
      this.connects++;
      this.state = "connected";
      onUp();
      this.#log.info("connected", {
        server: this.#server,
        hosts: resp.hosts.join(","),
        transport: transport instanceof WsConn ? "websocket" : "raw",
      });
      // A random subdomain is kept: reconnects ask for the name given (reserved for us).
      if (this.#subdomain === "*" && resp.hosts.length === 1) {
        this.#subdomain = resp.hosts[0].split(".")[0];
      }
      const local = joinHostPort(this.#o.local.host, this.#o.local.port);
      this.publicUrls = publicUrls(this.#server, resp.hosts);
      for (const url of this.publicUrls) this.#log.info("forwarding", { url, to: local });
      for (const [proto, list] of [["tcp", resp.tcp], ["udp", resp.udp ?? []]] as const) {
        for (const t of list) {
          if (t.ok) {
            // A note with it: in a cluster, the port is not bound on the instance answering.
            this.#log.info(`${proto} tunnel open`, {
              publicPort: t.publicPort,
              addr: t.addr,
              note: t.error,
            });
          } else {this.#log.warn(`${proto} tunnel refused`, {
              publicPort: t.publicPort,
              error: t.error,
            });}
        }
      }
      this.#o.onConnected?.(resp);
      monitor = this.#healthMonitor(control);
      const controlDone = (async () => {
        try {
          let m;
          while ((m = await readMessage(reader)) !== null) {
            if (m.type === "sessionEnd") {
              cause = m.reason;
              this.#log[m.reason === "shutdown" ? "info" : "warn"]("server ended the session", {
                end: m.reason,
              });
              if (m.reason === "replaced") this.replaced = true;
            }
          }
        } catch (err) {
          this.#log.debug("control stream ended", { error: errorMessage(err) });
        }
      })();
      const accepting = (async () => {
        for await (const s of session) {
          this.streams++;
          void this.#serveStream(s); // never rejects: a failure ends that stream only
        }
      })();
      let end = await Promise.race([
        session.closed,
        controlDone.then(() => undefined),
        accepting.then(() => undefined),
      ]);
      if (!end) {
        // Close our side of the control stream (the server's drain waits for it), then let
        // the mux settle why the session ended.
        closeQuietly(control);
        end = await sessionEndWithin(session, sessionEndWaitMs);
      }
      if (signal?.aborted) cause ??= "stopped";
      return sessionEndReport(end, cause);
    } finally {
      await monitor?.stop();
      monitor?.healthLog.close();
      this.healthy = undefined;
      signal?.removeEventListener("abort", onAbort);
      if (control) closeQuietly(control);
      await session.close().catch(() => {
        // Already closed.
      });
      this.#session = undefined;
    }
  }

  /**
   * With a health check: check the local app and report each change on `control`. Its lines
   * are bounded per window (health_log.ts): an app that flaps must not fill the client's log.
   */
  #healthMonitor(control: Stream): CheckedApp | undefined {
    const hc = this.#o.healthCheck;
    if (!hc) return undefined;
    this.healthy = false;
    const healthLog = new HealthLog(this.#log, { lines: clientHealthLines });
    const monitor = new HealthMonitor(this.#o.local, hc, {
      log: this.#log,
      quiet: () => healthLog.holding,
      onChange: async (ok, error) => {
        this.healthy = ok;
        healthLog.transition(ok, ok ? { path: hc.path } : { path: hc.path, error });
        const why = error === undefined ? {} : { error: error.slice(0, 256) };
        await writeAll(control, encodeMessage({ type: "health", ok, ...why }));
      },
    });
    monitor.start(); // stopped when the session ends
    return { stop: () => monitor.stop(), healthLog };
  }

  /** Close the current session (the run loop reconnects unless its signal aborted). */
  async disconnect(): Promise<void> {
    await this.#session?.close();
  }

  #target(msg: ControlMsg): HostPort | StreamFailure {
    if (msg.transportProtocol === "udp") return this.#udpTarget(msg);
    if (msg.transportProtocol === "tcp" && msg.publicPort !== undefined) {
      return this.#serverTcpTarget(msg.publicPort, msg.localPort);
    }
    if (msg.transportProtocol === "tcp") {
      const t = (this.#o.tcp ?? []).find((x) => String(x.publicPort) === msg.localPort);
      return t ? t.local : "no-such-port";
    }
    if (msg.localPort !== "") {
      const p = Number(msg.localPort);
      if (this.#o.allowPorts?.includes(p)) return { host: this.#o.local.host, port: p };
    }
    return this.#o.local;
  }

  /**
   * Where a server-defined TCP tunnel goes. The server may name only what this client
   * already exposes: its `--local` service ("" or its port), an `--allow-port` port (on the
   * `--local` host), or the local address of one of its own `--tcp` tunnels. Anything else
   * is refused, so a server cannot reach arbitrary ports on this host.
   */
  #serverTcpTarget(publicPort: number, localPort: string): HostPort | StreamFailure {
    const local = this.#o.local;
    if (localPort === "" || Number(localPort) === local.port) return local;
    const p = Number(localPort);
    if (this.#o.allowPorts?.includes(p)) return { host: local.host, port: p };
    const t = (this.#o.tcp ?? []).find((x) => x.local.port === p);
    if (t) return t.local;
    if (!this.#refusedPorts.has(p)) {
      this.#refusedPorts.add(p);
      this.#log.warn("server asked for a local port this client does not allow", {
        publicPort,
        localPort: p,
        fix: "--allow-port",
      });
    }
    return "no-such-port";
  }

  /**
   * Where a UDP tunnel's flow goes. Asked for by this client: its `--udp` tunnel of that
   * public port. Defined by the server: only what this client already exposes -- the local
   * address of one of its `--udp` tunnels ("": the first), or an `--allow-port` port on the
   * `--local` host.
   */
  #udpTarget(msg: ControlMsg): HostPort | StreamFailure {
    const udp = this.#o.udp ?? [];
    if (msg.publicPort === undefined) {
      return udp.find((x) => String(x.publicPort) === msg.localPort)?.local ?? "no-such-port";
    }
    if (msg.localPort === "") return udp[0]?.local ?? "no-such-port";
    const p = Number(msg.localPort);
    const t = udp.find((x) => x.local.port === p);
    if (t) return t.local;
    if (this.#o.allowPorts?.includes(p)) return { host: this.#o.local.host, port: p };
    return "no-such-port";
  }

  async #serveStream(stream: Stream): Promise<void> {
    let msg: ControlMsg;
    try {
      // Nothing read past the message: the request behind it stays in the stream, and the
      // relay reads it from there as it lies (a reader here was a 16 KiB buffer, a copy of
      // what it read ahead and a wrapper putting that copy in front for the stream's life).
      msg = await expectMessageExact(stream, "controlMsg");
    } catch (err) {
      this.#log.debug("bad tunnel stream", { error: errorMessage(err) });
      stream.reset();
      return;
    }
    const reply = (ok: boolean, reason?: StreamFailure, error?: string) =>
      encodeMessage({
        type: "streamReply",
        requestId: msg.requestId,
        ok,
        reason,
        error,
      });
    const target = this.#target(msg);
    if (typeof target === "string") {
      this.#fail(`port ${msg.localPort}`, target, "no local service for this port");
      await writeQuietly(stream, reply(false, target, "no local service for this port"));
      closeQuietly(stream);
      return;
    }
    const dest = joinHostPort(target.host, target.port);
    const startedMs = performance.now();
    let local: Deno.TcpConn | { sock: UdpSocket; to: HostPort };
    try {
      local = msg.transportProtocol === "udp"
        ? await openLocalUdp(target)
        : await dial(target.host, target.port, {
          timeoutMs: this.#o.dialTimeoutMs ?? 10_000,
          prefer: "ipv4",
        });
    } catch (err) {
      const failure = err instanceof NetError ? err.reason : "dial-failed";
      this.#fail(dest, failure, errorMessage(err));
      this.#log.warn("local dial failed", { dest, failure, error: errorMessage(err) });
      await writeQuietly(stream, reply(false, "dial-failed", errorMessage(err)));
      closeQuietly(stream);
      return;
    }
    try {
      await writeAll(stream, reply(true));
    } catch {
      closeQuietly("sock" in local ? local.sock : local);
      closeQuietly(stream);
      return;
    }
    this.relayed++;
    if ("sock" in local) {
      this.#udpFlows ??= new FlowTable(
        this.#o.udpLimits ?? {},
        new UdpDrops(this.#log, "tunnel-client"),
      );
      const { sock, to } = local;
      const r = await relayUdpStream(
        stream,
        new BufferedReader(stream),
        sock,
        to,
        msg.requestId,
        this.#udpFlows,
        this.#log,
      );
      this.#log.info("stream closed", {
        dest,
        end: "udp",
        up: r.bytesUp,
        down: r.bytesDown,
        datagramsUp: r.up,
        datagramsDown: r.down,
        ms: Math.round(performance.now() - startedMs),
      });
      return;
    }
    // a = the tunnel stream (the public request), b = the local app: aToB is "up". The
    // stream as it is: the request behind the ControlMsg waits in it, lent by views.
    const tap = msg.transportProtocol === "tcp" ? undefined : this.#o.tap?.(dest);
    const r = tap
      ? await relay(
        new TappedDuplex(stream, (p) => tap.up(p)),
        new TappedDuplex(local, (p) => tap.down(p)),
      )
      : await relay(stream, local);
    tap?.end();
    this.#log.info("stream closed", {
      dest,
      end: r.end,
      up: r.aToB,
      down: r.bToA,
      ms: Math.round(performance.now() - startedMs),
    });
  }

  #fail(dest: string, reason: string, message: string): void {
    this.failuresByReason[reason] = (this.failuresByReason[reason] ?? 0) + 1;
    this.recentFailures.push({ at: new Date().toISOString(), dest, reason, message });
    if (this.recentFailures.length > recentFailuresKept) this.recentFailures.shift();
  }
}
