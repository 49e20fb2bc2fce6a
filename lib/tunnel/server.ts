/**
 * The tunnel server core, shared by both front ends (the standalone HTTP/1 fast path and
 * the embeddable Hono app): authenticates clients, runs their mux sessions and control
 * handshakes, routes virtual hosts to sessions, opens tunnel streams, owns public TCP
 * tunnel ports, and keeps per-host status and Prometheus metrics.
 * @module
 */

import { Session, type SessionOptions, type Stream } from "../mux/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import type { AuthFailureLimiter } from "../net/ratelimit.ts";
import { counter, gauge } from "../metrics.ts";
import {
  BufferedReader,
  closeQuietly,
  type Duplex,
  errorMessage,
  formatAddr,
  ProtocolError,
  relay,
  serve,
  type Server,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { type Outgoing, randomSecret } from "../control/mod.ts";
import {
  encodeMessage,
  expectMessage,
  type HandshakeRequest,
  type HandshakeResponse,
  readMessage,
  type SessionEndCause,
  sessionEndReport,
  sessionEndWaitMs,
  sessionEndWithin,
  type StreamFailure,
  type StreamReply,
  type TcpTunnelResult,
  type TransportProtocol,
} from "./protocol.ts";
import {
  type ClientRecord,
  fingerprint,
  MemoryRegistry,
  normalizeHost,
  type Registry,
} from "./registry.ts";

/** Default interval of mux pings to each client. */
export const defaultHeartbeatIntervalMs = 2_000;
/** Default silence after which a client is declared dead. */
export const defaultHeartbeatTimeoutMs = 6_000;
/** Default time a client has to answer a tunnel stream (and its app the first byte): 504 after. */
export const defaultResponseTimeoutMs = 60_000;
/** Time a new client has to open its control stream and send its handshake. */
export const defaultClientHandshakeTimeoutMs = 10_000;

/** What to do when a second client connects with an identifier that is already connected. */
export type DuplicatePolicy = "replace" | "refuse";

/** Options of {@linkcode TunnelServer}. */
export interface TunnelServerOptions {
  /** Hosts and client locations. @default new MemoryRegistry() */
  registry?: Registry;
  /** Policy for a second client with a connected identifier. @default "replace" */
  duplicate?: DuplicatePolicy;
  /** Limits unknown-identifier attempts per source address (refused before the lookup). */
  authLimiter?: AuthFailureLimiter;
  /** Mux ping interval to each client. @default 2000 */
  heartbeatIntervalMs?: number;
  /** Silence after which a client is dead (its hosts answer 502). @default 6000 */
  heartbeatTimeoutMs?: number;
  /** 504 when nothing comes back this long after the request. @default 60000 */
  responseTimeoutMs?: number;
  /** Public TCP ports clients may ask for (inclusive range); none when absent. */
  tcpPorts?: { min: number; max: number };
  /** Address public TCP tunnels bind. @default "127.0.0.1" */
  tcpHost?: string;
  /** Extra mux session options. */
  mux?: SessionOptions;
  /** Where events are logged. @default silent */
  log?: Logger;
}

/** Live counters of one virtual host (kept across client reconnects). */
export interface HostStats {
  /** Requests proxied to the client. */
  requests: number;
  /** Bytes from the public side to the client. */
  bytesIn: number;
  /** Bytes from the client to the public side. */
  bytesOut: number;
  /** Tunnel streams open now. */
  openStreams: number;
  /** Requests answered by the tunnel itself with 502/504. */
  errors: number;
}

/** Status of one registered host (admin API, status page). */
export interface HostStatus extends HostStats {
  /** The virtual host. */
  host: string;
  /** Fingerprint of the identifier serving it. */
  client: string;
  /** Whether its client is connected and ready. */
  connected: boolean;
}

/** A connected client as the admin API shows it (no secret). */
export interface ClientInfo {
  /** Server-local client number. */
  id: number;
  /** SHA-256 tag of its identifier. */
  fingerprint: string;
  /** Address of its transport connection. */
  remote: string;
  /** Epoch ms when it connected. */
  since: number;
  /** Virtual hosts it serves. */
  hosts: string[];
  /** Public TCP tunnel ports it holds. */
  tcpPorts: number[];
  /** Last measured mux ping round trip. */
  rttMs?: number;
}

/** Why a tunnel stream could not be used. */
export type TunnelFailure = StreamFailure | "timeout" | "closed" | "protocol";

/** A tunnel stream failed before carrying a response: maps to 502 (or 504 for "timeout"). */
export class TunnelError extends Error {
  /** Error class name. */
  override name = "TunnelError";
  /** A failure of kind `reason`. */
  constructor(readonly reason: TunnelFailure, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Result of routing a Host to a client. */
export type Route =
  | { ok: true; host: string; client: ClientConn }
  | { ok: false; status: 404 | 502; host: string };

/** Result of authenticating a client's identifier before the upgrade. */
export type AuthResult = "ok" | "unknown" | "duplicate";

/** A TCP tunnel defined on the server side (admin API `POST /tcp`, `--tcp`). */
export interface TcpTunnelSpecServer {
  /** Public port on the server; must be inside `tcpPorts`. */
  publicPort: number;
  /** The secret of the client that serves it (a host must be registered for it). */
  identifier: string;
  /** Local port the client is asked to dial; its default `--local` when absent. */
  localPort?: number;
}

/** A TCP tunnel as the admin API lists it (no secret). */
export interface TcpTunnelInfo {
  /** Public port on the server. */
  publicPort: number;
  /** Fingerprint of the identifier that serves it. */
  client: string;
  /** "server": defined by the admin API or `--tcp`; "client": asked for in a handshake. */
  source: "server" | "client";
  /** Server-defined: the local port the client is asked for (null = its default). */
  localPort?: number | null;
  /** Whether the public port is bound now (its client is connected). */
  open: boolean;
  /** Bound address while open. */
  addr?: string;
}

/** Why a server-defined TCP tunnel cannot be added. */
export type TcpTunnelFailure = "bad-request" | "not-allowed" | "in-use";

/** A refused `addTcpTunnel`; the admin API maps `reason` to a 4xx status. */
export class TcpTunnelError extends Error {
  /** Error class name. */
  override name = "TcpTunnelError";
  /** A failure of kind `reason`. */
  constructor(readonly reason: TcpTunnelFailure, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A server-defined TCP tunnel: its client by digest only (the secret is not kept). */
interface ServerTcpTunnel {
  publicPort: number;
  key: string;
  fingerprint: string;
  /** "" = the client's default service. */
  localPort: string;
}

/** Entries the handshake response's `tcp` list may carry (its schema's bound). */
const maxTcpResults = 64;

function isPort(p: unknown): p is number {
  return typeof p === "number" && Number.isInteger(p) && p >= 1 && p <= 65535;
}

function busy(error: string | undefined): TcpTunnelFailure {
  return /in use|AddrInUse/i.test(error ?? "") ? "in-use" : "bad-request";
}

const requests = counter("warren_tunnel_requests_total", "Public requests by host and outcome", [
  "host",
  "outcome",
]);
const bytes = counter("warren_tunnel_bytes_total", "Bytes relayed by host and direction", [
  "host",
  "direction",
]);
/** Every live TunnelServer of the process, for the gauges below. */
const liveServers = new Set<TunnelServer>();
gauge("warren_tunnel_clients", "Connected tunnel clients", [], function () {
  let n = 0;
  for (const s of liveServers) n += s.clients().length;
  this.set(n);
});
gauge("warren_tunnel_open_streams", "Open tunnel streams by host", ["host"], function () {
  this.reset();
  for (const s of liveServers) {
    for (const [host, st] of s.allHostStats()) this.set({ host }, st.openStreams);
  }
});
gauge(
  "warren_tunnel_hosts",
  "Registered virtual hosts, by whether a ready client serves them",
  ["state"],
  async function () {
    let connected = 0, waiting = 0;
    for (const s of liveServers) {
      for (const h of await s.status()) h.connected ? connected++ : waiting++;
    }
    this.set({ state: "connected" }, connected);
    this.set({ state: "waiting" }, waiting);
  },
);
const clientEvents = counter("warren_tunnel_client_events_total", "Client connects/disconnects", [
  "event",
]);

/** One connected client: its mux session, hosts and TCP tunnels. */
export class ClientConn {
  /** Epoch ms when the session started. */
  readonly since: number = Date.now();
  /** Virtual hosts it serves. */
  hosts: string[] = [];
  /** True once the handshake is done (routing uses only ready clients). */
  ready: boolean = false;
  /** Public TCP tunnel listeners by port. */
  readonly tcp: Map<number, Server> = new Map();
  /** The control stream, once the client opened it. */
  control: Stream | undefined;
  /** Run at the start of close() (front ends drop idle streams so the drain is quick). */
  readonly onClosing: (() => void)[] = [];
  /** Why the server ended this session on purpose (set by `close(reason)`). */
  endCause: SessionEndCause | undefined;
  /** True once its handshake opened the server-defined TCP tunnels (later ones open at once). */
  serverTcpReady: boolean = false;
  #closing: Promise<void> | undefined;
  /** A client's session, before its handshake. */
  constructor(
    readonly id: number,
    readonly fingerprint: string,
    readonly remote: string,
    readonly session: Session,
    readonly key: string = "",
  ) {}

  /** Whether close() has started. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * Tell the client why (when `reason` is given), release the public TCP ports (awaited, so
   * a replacing client can bind them), then tear the session down (go away) in the
   * background.
   */
  close(reason?: SessionEndCause): Promise<void> {
    this.#closing ??= (async () => {
      this.endCause ??= reason;
      this.ready = false;
      for (const f of this.onClosing.splice(0)) f();
      if (reason && this.control) {
        const msg = encodeMessage({ type: "sessionEnd", reason });
        await writeAll(this.control, msg).catch(() => {
          // The client is already gone: it cannot be told.
        });
      }
      await Promise.allSettled([...this.tcp.values()].map((s) => s.stop(0)));
      if (this.control) closeQuietly(this.control);
      this.session.close().catch(() => {
        // Transport already gone: nothing else to release.
      });
    })();
    return this.#closing;
  }
}

/** A tunnel stream the server opened; the client's StreamReply has not been read yet. */
export class TunnelStream {
  /** Reads the reply and response bytes (bytes read ahead stay here). */
  readonly reader: BufferedReader;
  #stats: HostStats | undefined;
  /** Wrap a freshly opened stream; counts it as open in `stats`. */
  constructor(
    readonly stream: Stream,
    readonly requestId: string,
    readonly host: string,
    stats?: HostStats,
  ) {
    this.reader = new BufferedReader(stream);
    this.#stats = stats;
    if (stats) stats.openStreams++;
  }

  /** Close the stream and stop counting it as open (idempotent). */
  release(): void {
    if (this.#stats) this.#stats.openStreams--;
    this.#stats = undefined;
    closeQuietly(this.stream);
  }

  /**
   * Wait for the client's StreamReply. Rejects with TunnelError: "timeout" if none in
   * `timeoutMs`, the client's failure reason when it could not serve the stream,
   * "protocol" when the reply names another request id, "closed" when the stream ended.
   */
  async reply(timeoutMs: number): Promise<StreamReply> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(
        () => rej(new TunnelError("timeout", `client did not answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const r = await Promise.race([expectMessage(this.reader, "streamReply"), timeout]);
      if (r.requestId !== this.requestId) {
        throw new TunnelError("protocol", "stream reply for another request");
      }
      if (!r.ok) throw new TunnelError(r.reason ?? "dial-failed", r.error ?? "client failed");
      return r;
    } catch (err) {
      this.stream.reset();
      if (err instanceof TunnelError) throw err;
      throw new TunnelError(
        err instanceof ProtocolError ? "protocol" : "closed",
        errorMessage(err),
        { cause: err },
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /** The response byte stream after the reply (bytes read ahead included). */
  body(): Duplex {
    return withPrefix(this.stream, this.reader.takeBuffered());
  }
}

function concat(a: Uint8Array, b?: Uint8Array): Uint8Array {
  if (!b || b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Memo of `digest` (a SHA-256 per routed request was 2-3 % of a front's CPU). */
const digests = new Map<string, string>();
/** Entries kept before the memo starts over (identifiers are few; this bounds a flood). */
const maxDigestMemo = 4096;

function digest(identifier: string): string {
  // The map key for live clients: never the secret itself.
  let d = digests.get(identifier);
  if (d === undefined) {
    if (digests.size >= maxDigestMemo) digests.clear();
    d = fingerprint(identifier) + ":" + identifier.length;
    digests.set(identifier, d);
  }
  return d;
}

/**
 * The tunnel server core. Front ends call `authenticate` + `attach` for the control path
 * and `route` + `openStream` for public traffic.
 */
export class TunnelServer {
  /** Hosts and client locations. */
  readonly registry: Registry;
  /** Where events are logged. */
  readonly log: Logger;
  /** Policy for a second client with a connected identifier. */
  readonly duplicate: DuplicatePolicy;
  /** 504 after this long without an answer. */
  readonly responseTimeoutMs: number;
  readonly #opts: TunnelServerOptions;
  #clients = new Map<string, ClientConn>();
  #hostStats = new Map<string, HostStats>();
  #tcpOwners = new Map<number, ClientConn>();
  #serverTcp = new Map<number, ServerTcpTunnel>();
  /**
   * Digests of the identifiers server-defined TCP tunnels name, with how many name each:
   * these identifiers may connect without any virtual host (a TCP-only client).
   */
  #tcpIdentifiers = new Map<string, number>();
  #nextClient = 0;
  #nextRequest = 0;
  readonly #instance = randomSecret(4);
  #closed = false;

  /** A server core with no clients yet. */
  constructor(opts: TunnelServerOptions = {}) {
    this.#opts = opts;
    this.registry = opts.registry ?? new MemoryRegistry();
    this.log = opts.log ?? silentLogger;
    this.duplicate = opts.duplicate ?? "replace";
    this.responseTimeoutMs = opts.responseTimeoutMs ?? defaultResponseTimeoutMs;
    liveServers.add(this);
  }

  /**
   * Serve `host` with the client holding `identifier` (a fresh random one when omitted).
   * Returns the identifier: hand it to the client, it is its secret.
   */
  async addHost(host: string, identifier?: string): Promise<string> {
    const id = identifier ?? randomSecret(24);
    await this.registry.addHost(host, id);
    const c = this.#clients.get(digest(id));
    const h = normalizeHost(host);
    if (c && !c.hosts.includes(h)) c.hosts.push(h);
    this.log.info("host added", { host: h, client: fingerprint(id) });
    return id;
  }

  /** Stop serving `host`; false if it was not registered. */
  async removeHost(host: string): Promise<boolean> {
    const h = normalizeHost(host);
    const ok = await this.registry.removeHost(h);
    for (const c of this.#clients.values()) c.hosts = c.hosts.filter((x) => x !== h);
    if (ok) this.log.info("host removed", { host: h });
    return ok;
  }

  /**
   * Check a client's identifier before upgrading its connection (constant time). With
   * `remote` and an `authLimiter`, an address with too many unknown identifiers is refused
   * ("unknown") without a lookup until its budget refills.
   */
  async authenticate(identifier: string | undefined, remote?: string): Promise<AuthResult> {
    const limiter = remote !== undefined ? this.#opts.authLimiter : undefined;
    if (limiter && !limiter.allowed(remote!)) {
      this.log.warn("client refused: too many unknown identifiers", { remote });
      return "unknown";
    }
    const known = !!identifier &&
      (this.#tcpIdentifiers.has(digest(identifier)) || await this.registry.isKnown(identifier));
    if (!known) {
      limiter?.failed(remote!);
      return "unknown";
    }
    if (this.duplicate === "refuse" && this.#clients.has(digest(identifier))) return "duplicate";
    return "ok";
  }

  /** Counters of `host` (created on first use). */
  hostStats(host: string): HostStats {
    let s = this.#hostStats.get(host);
    if (!s) {
      s = { requests: 0, bytesIn: 0, bytesOut: 0, openStreams: 0, errors: 0 };
      this.#hostStats.set(host, s);
    }
    return s;
  }

  /** Counters of every host seen so far. */
  allHostStats(): [string, HostStats][] {
    return [...this.#hostStats];
  }

  /** Count one request to `host` with its outcome ("proxied", "404", "502", …). */
  countRequest(host: string, outcome: string): void {
    if (outcome === "proxied") this.hostStats(host).requests++;
    else if (outcome === "502" || outcome === "504") this.hostStats(host).errors++;
    requests.inc({ host: outcome === "404" || outcome === "400" ? "" : host, outcome });
  }

  /** Count relayed bytes of `host`. */
  countBytes(host: string, inBytes: number, outBytes: number): void {
    const s = this.hostStats(host);
    s.bytesIn += inBytes;
    s.bytesOut += outBytes;
    if (inBytes) bytes.inc({ host, direction: "in" }, inBytes);
    if (outBytes) bytes.inc({ host, direction: "out" }, outBytes);
  }

  /** Find the connected client serving `host` (a Host header value or a bare name). */
  async route(host: string): Promise<Route> {
    const h = normalizeHost(host);
    const identifier = h ? await this.registry.lookup(h) : undefined;
    if (identifier === undefined) return { ok: false, status: 404, host: h };
    const client = this.#clients.get(digest(identifier));
    if (!client || !client.ready) return { ok: false, status: 502, host: h };
    return { ok: true, host: h, client };
  }

  /**
   * Open a tunnel stream to `client`: the ControlMsg (with a fresh request id) and
   * `firstData` ride in the stream's SYN frame. Call `reply()` on the result next.
   * `serverTcpPort` marks a server-defined TCP tunnel (sent as the message's `publicPort`).
   */
  async openStream(
    client: ClientConn,
    host: string,
    transportProtocol: TransportProtocol,
    localPort: string,
    firstData?: Uint8Array,
    serverTcpPort?: number,
  ): Promise<TunnelStream> {
    const requestId = `${this.#instance}.${++this.#nextRequest}`;
    const msg = encodeMessage({
      type: "controlMsg",
      action: "RequestClientSession",
      transportProtocol,
      localPort,
      requestId,
      ...(serverTcpPort !== undefined ? { publicPort: serverTcpPort } : {}),
    });
    let stream: Stream;
    try {
      stream = await client.session.open({ data: concat(msg, firstData) });
    } catch (err) {
      throw new TunnelError("closed", `cannot open a stream: ${errorMessage(err)}`, { cause: err });
    }
    const ts = new TunnelStream(stream, requestId, host, this.hostStats(host));
    return ts;
  }

  /**
   * Run a client's session over `transport` (an upgraded, authenticated connection) until
   * it ends. With the "replace" policy a previous client of the same identifier is closed
   * first; only the newest session is ever registered. `certName`: the subject CN of the
   * client certificate (mutual TLS), logged with the connection.
   */
  async attach(
    transport: Duplex,
    identifier: string,
    remote: string,
    certName?: string,
  ): Promise<void> {
    const key = digest(identifier);
    const fp = fingerprint(identifier);
    if (this.#closed) {
      closeQuietly(transport);
      return;
    }
    if (this.duplicate === "refuse" && this.#clients.has(key)) {
      this.log.warn("duplicate client refused", { client: fp, remote });
      closeQuietly(transport);
      return;
    }
    const session = Session.server(transport, {
      keepaliveIntervalMs: this.#opts.heartbeatIntervalMs ?? defaultHeartbeatIntervalMs,
      keepaliveTimeoutMs: this.#opts.heartbeatTimeoutMs ?? defaultHeartbeatTimeoutMs,
      drainTimeoutMs: 2_000,
      ...this.#opts.mux,
    });
    const client = new ClientConn(++this.#nextClient, fp, remote, session, key);
    // The previous client of this identifier keeps serving until the new one has done its
    // handshake; then it is told "replaced" and closed, and the new one takes its place.
    const takeOver = async (): Promise<boolean> => {
      const prev = this.#clients.get(key);
      if (prev && prev !== client) {
        if (this.duplicate === "refuse") return false;
        this.log.info("client replaced by a new connection", { client: fp, old: prev.id, remote });
        this.#clients.delete(key);
        await prev.close("replaced");
      }
      this.#clients.set(key, client);
      return true;
    };
    const log = this.log.child({ client: fp, cid: client.id });
    try {
      const control = await this.#handshake(client, identifier, log, takeOver);
      if (!control) return;
      const rec: ClientRecord = {
        fingerprint: fp,
        clientId: client.id,
        instance: this.#instance,
        remote,
        since: client.since,
      };
      await this.registry.setClient(identifier, rec);
      clientEvents.inc({ event: "connected" });
      log.info("client connected", {
        remote,
        hosts: client.hosts.join(","),
        ...(certName === undefined ? {} : { cert: certName }),
      });
      // Live until the session dies (go away, heartbeat timeout, transport EOF) or the
      // client closes its control stream.
      const controlDone = (async () => {
        try {
          while ((await readMessage(control)) !== null) {
            // No messages are defined after the handshake; ignore for forward compatibility.
          }
        } catch (err) {
          log.debug("control stream ended", { error: errorMessage(err) });
        }
      })();
      const refuseStreams = (async () => {
        // Clients never open streams after the control stream: reset any that arrive.
        while (true) {
          const s = await session.accept().catch(() => null);
          if (s === null) return;
          s.reset();
        }
      })();
      // The control stream usually ends together with the session: give the mux a moment to
      // settle why (heartbeat timeout, transport cut, go away) before logging it.
      let end = await Promise.race([session.closed, controlDone.then(() => undefined)]);
      if (!end) {
        // Our side of the control stream too, or the client's session drain waits for it.
        if (client.control) closeQuietly(client.control);
        end = await sessionEndWithin(session, sessionEndWaitMs);
      }
      const r = sessionEndReport(end, client.endCause);
      log[r.level]("client disconnected", {
        reason: r.reason,
        why: r.why,
        error: r.error,
        remote,
        connectedMs: Date.now() - client.since,
      });
      void refuseStreams;
    } catch (err) {
      log.warn("client session failed", { error: errorMessage(err) });
    } finally {
      if (this.#clients.get(key) === client) {
        this.#clients.delete(key);
        await this.registry.setClient(identifier, undefined).catch(() => {
          // A registry outage must not keep a dead client around locally.
        });
      }
      clientEvents.inc({ event: "disconnected" });
      await client.close();
      for (const [port, owner] of this.#tcpOwners) {
        if (owner === client) this.#tcpOwners.delete(port);
      }
    }
  }

  async #handshake(
    client: ClientConn,
    identifier: string,
    log: Logger,
    takeOver: () => Promise<boolean>,
  ): Promise<BufferedReader | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((res) =>
      timer = setTimeout(() => res(null), defaultClientHandshakeTimeoutMs)
    );
    try {
      const control = await Promise.race([client.session.accept(), timeout]);
      if (!control) {
        log.warn("client sent no control stream");
        return null;
      }
      client.control = control;
      const reader = new BufferedReader(control);
      const req = await Promise.race([expectMessage(reader, "handshakeRequest"), timeout]);
      if (!req) {
        log.warn("client sent no handshake");
        return null;
      }
      if (!(await takeOver())) {
        log.warn("duplicate client refused");
        return null;
      }
      client.hosts = await this.registry.hostsOf(identifier);
      const tcp = this.#openTcp(client, req, log);
      for (const r of this.#openServerTcp(client, log)) {
        if (tcp.length < maxTcpResults) tcp.push(r);
      }
      const resp: Outgoing<HandshakeResponse> = {
        type: "handshakeResponse",
        ok: true,
        hosts: client.hosts,
        tcp,
      };
      await writeAll(control, encodeMessage(resp));
      client.ready = true;
      return reader;
    } catch (err) {
      log.warn("client handshake failed", { error: errorMessage(err) });
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  #openTcp(
    client: ClientConn,
    req: HandshakeRequest,
    log: Logger,
  ): TcpTunnelResult[] {
    const out: TcpTunnelResult[] = [];
    for (const { publicPort } of req.tcp ?? []) {
      if (!this.#inTcpRange(publicPort)) {
        out.push({ publicPort, ok: false, error: "port not allowed by the server" });
        continue;
      }
      const owner = this.#tcpOwners.get(publicPort);
      const defined = this.#serverTcp.get(publicPort);
      if ((owner && owner !== client) || (defined && defined.key !== client.key)) {
        out.push({ publicPort, ok: false, error: "port in use by another client" });
        continue;
      }
      if (defined) {
        out.push({ publicPort, ok: false, error: "port defined by the server for this client" });
        continue;
      }
      out.push(this.#listenTcp(client, publicPort, undefined, log));
    }
    return out;
  }

  /** Open the server-defined TCP tunnels of `client` (at its handshake). */
  #openServerTcp(client: ClientConn, log: Logger): TcpTunnelResult[] {
    client.serverTcpReady = true;
    const out: TcpTunnelResult[] = [];
    for (const spec of this.#serverTcp.values()) {
      if (spec.key !== client.key) continue;
      const r = this.#listenTcp(client, spec.publicPort, spec.localPort, log);
      if (!r.ok) log.warn("tcp tunnel not opened", { port: spec.publicPort, error: r.error });
      out.push(r);
    }
    return out;
  }

  #inTcpRange(port: number): boolean {
    const range = this.#opts.tcpPorts;
    return !!range && port >= range.min && port <= range.max;
  }

  /**
   * Bind `publicPort` for `client` and relay each connection over a tunnel stream. With
   * `serverLocalPort` (a server-defined tunnel) the client is asked for that local port.
   */
  #listenTcp(
    client: ClientConn,
    publicPort: number,
    serverLocalPort: string | undefined,
    log: Logger,
  ): TcpTunnelResult {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: this.#opts.tcpHost ?? "127.0.0.1", port: publicPort });
    } catch (err) {
      return { publicPort, ok: false, error: errorMessage(err) };
    }
    const addr = formatAddr(listener.addr);
    const host = `tcp:${publicPort}`;
    const localPort = serverLocalPort ?? String(publicPort);
    const serverTcpPort = serverLocalPort === undefined ? undefined : publicPort;
    const srv = serve(listener, async (conn, ctx) => {
      ctx.handshakeDone();
      let ts: TunnelStream;
      try {
        ts = await this.openStream(client, host, "tcp", localPort, undefined, serverTcpPort);
      } catch (err) {
        this.countRequest(host, "502");
        ctx.log.debug("tcp tunnel failed", { port: publicPort, error: errorMessage(err) });
        return;
      }
      try {
        await ts.reply(this.responseTimeoutMs);
      } catch (err) {
        ts.release();
        this.countRequest(
          host,
          err instanceof TunnelError && err.reason === "timeout" ? "504" : "502",
        );
        ctx.log.debug("tcp tunnel failed", { port: publicPort, error: errorMessage(err) });
        return;
      }
      this.countRequest(host, "proxied");
      try {
        const r = await relay(conn, ts.body(), { signal: ctx.signal });
        this.countBytes(host, r.aToB, r.bToA);
      } finally {
        ts.release();
      }
    }, { log: this.log.child({ tcp: publicPort }), handshakeTimeoutMs: 0 });
    client.tcp.set(publicPort, srv);
    this.#tcpOwners.set(publicPort, client);
    log.info("listening", { name: `tcp-${publicPort}`, addr });
    return { publicPort, ok: true, addr };
  }

  /**
   * Define a TCP tunnel on the server side (admin API, `--tcp`): `publicPort` is opened
   * while the client with `identifier` is connected (now, or whenever it connects) and
   * closed when it disconnects or the tunnel is removed. Its connections ask the client for
   * `localPort` (its default `--local` when absent), which the client dials only if its own
   * allow rules permit it.
   *
   * The identifier needs no virtual host: naming it here lets its client connect (a TCP-only
   * client, as with frp or rathole) for as long as a tunnel names it.
   *
   * Throws {@linkcode TcpTunnelError}: "bad-request" (not a port, empty identifier),
   * "not-allowed" (outside `tcpPorts`), "in-use" (defined already, held by a client's own
   * tunnel, or bound by another program).
   */
  addTcpTunnel(spec: TcpTunnelSpecServer): TcpTunnelInfo {
    const { publicPort, identifier, localPort } = spec;
    if (!isPort(publicPort)) throw new TcpTunnelError("bad-request", "publicPort must be 1-65535");
    if (localPort !== undefined && !isPort(localPort)) {
      throw new TcpTunnelError("bad-request", "localPort must be 1-65535");
    }
    if (!this.#inTcpRange(publicPort)) {
      const range = this.#opts.tcpPorts;
      throw new TcpTunnelError(
        "not-allowed",
        range
          ? `port ${publicPort} is outside the server's TCP ports ${range.min}-${range.max}`
          : "this server allows no TCP tunnels (no tcpPorts / --tcp-ports)",
      );
    }
    if (typeof identifier !== "string" || identifier === "") {
      throw new TcpTunnelError("bad-request", "identifier must be a non-empty string");
    }
    // From here on synchronous, so a client's handshake sees the tunnel either before
    // (and opens it) or after (and this opens it).
    if (this.#serverTcp.has(publicPort) || this.#tcpOwners.has(publicPort)) {
      throw new TcpTunnelError("in-use", `port ${publicPort} already has a TCP tunnel`);
    }
    const key = digest(identifier);
    const fp = fingerprint(identifier);
    const def: ServerTcpTunnel = {
      publicPort,
      key,
      fingerprint: fp,
      localPort: localPort === undefined ? "" : String(localPort),
    };
    const client = this.#clients.get(key);
    const log = client ? this.log.child({ client: fp, cid: client.id }) : this.log;
    if (client?.serverTcpReady && !client.closing) {
      const r = this.#listenTcp(client, publicPort, def.localPort, log);
      if (!r.ok) throw new TcpTunnelError(busy(r.error), `cannot bind ${publicPort}: ${r.error}`);
    } else {
      // Not connected now: check the port can be bound, so a busy port is reported today.
      try {
        Deno.listen({ hostname: this.#opts.tcpHost ?? "127.0.0.1", port: publicPort }).close();
      } catch (err) {
        throw new TcpTunnelError(
          busy(errorMessage(err)),
          `cannot bind ${publicPort}: ${errorMessage(err)}`,
        );
      }
    }
    this.#serverTcp.set(publicPort, def);
    this.#tcpIdentifiers.set(key, (this.#tcpIdentifiers.get(key) ?? 0) + 1);
    log.info("tcp tunnel added", {
      port: publicPort,
      client: fp,
      localPort: def.localPort || "default",
    });
    return this.#tcpInfo(def);
  }

  /** Remove a server-defined TCP tunnel and close its port; false if there was none. */
  async removeTcpTunnel(publicPort: number): Promise<boolean> {
    const def = this.#serverTcp.get(publicPort);
    if (!def) return false;
    this.#serverTcp.delete(publicPort);
    const uses = (this.#tcpIdentifiers.get(def.key) ?? 1) - 1;
    if (uses > 0) this.#tcpIdentifiers.set(def.key, uses);
    else this.#tcpIdentifiers.delete(def.key);
    const owner = this.#tcpOwners.get(publicPort);
    const srv = owner?.tcp.get(publicPort);
    if (owner && srv) {
      owner.tcp.delete(publicPort);
      this.#tcpOwners.delete(publicPort);
      await srv.stop(0);
    }
    this.log.info("tcp tunnel removed", { port: publicPort, client: def.fingerprint });
    return true;
  }

  /** Every TCP tunnel: server-defined ones (open or waiting for their client) and the ones
   * clients asked for. No secrets. */
  tcpTunnels(): TcpTunnelInfo[] {
    const out = [...this.#serverTcp.values()].map((d) => this.#tcpInfo(d));
    for (const [publicPort, owner] of this.#tcpOwners) {
      if (this.#serverTcp.has(publicPort)) continue;
      out.push({
        publicPort,
        client: owner.fingerprint,
        source: "client",
        open: true,
        addr: owner.tcp.get(publicPort) ? formatAddr(owner.tcp.get(publicPort)!.addr) : undefined,
      });
    }
    return out.sort((a, b) => a.publicPort - b.publicPort);
  }

  #tcpInfo(d: ServerTcpTunnel): TcpTunnelInfo {
    const owner = this.#tcpOwners.get(d.publicPort);
    const srv = owner?.key === d.key ? owner.tcp.get(d.publicPort) : undefined;
    return {
      publicPort: d.publicPort,
      client: d.fingerprint,
      source: "server",
      localPort: d.localPort === "" ? null : Number(d.localPort),
      open: !!srv,
      addr: srv ? formatAddr(srv.addr) : undefined,
    };
  }

  /** Connected clients (no secrets). */
  clients(): ClientInfo[] {
    return [...this.#clients.values()].filter((c) => c.ready).map((c) => ({
      id: c.id,
      fingerprint: c.fingerprint,
      remote: c.remote,
      since: c.since,
      hosts: c.hosts,
      tcpPorts: [...c.tcp.keys()],
      rttMs: c.session.rttMs,
    }));
  }

  /** Status per registered host: connected client, counters. */
  async status(): Promise<HostStatus[]> {
    const out: HostStatus[] = [];
    for (const { host, identifier } of await this.registry.listHosts()) {
      const c = this.#clients.get(digest(identifier));
      out.push({
        host,
        client: fingerprint(identifier),
        connected: !!c?.ready,
        ...this.hostStats(host),
      });
    }
    return out;
  }

  /** Close every client session and TCP tunnel. */
  async close(): Promise<void> {
    this.#closed = true;
    liveServers.delete(this);
    const all = [...this.#clients.values()];
    await Promise.allSettled(all.map((c) => c.close("shutdown")));
    await Promise.allSettled(all.map((c) => c.session.closed));
  }
}
