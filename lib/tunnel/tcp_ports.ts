/**
 * Public TCP port ownership of a tunnel server (as frp's port manager): which ports clients
 * may ask for, which ones the server defined for which identifier, who holds each bound
 * port, and the listeners that relay each public connection over a tunnel stream.
 * @module
 */

import type { Logger } from "../log.ts";
import { errorMessage, formatAddr, relay, serve } from "../net/mod.ts";
import { encodeProxyHeader } from "../proxyproto/mod.ts";
import type { HandshakeRequest, TcpTunnelResult, TransportProtocol } from "./protocol.ts";
import { fingerprint, type RouteOrigin } from "./registry.ts";
import { type ClientConn, clientKey } from "./client_conn.ts";
import { TunnelError, type TunnelStream } from "./tunnel_stream.ts";

/** A TCP tunnel defined on the server side (admin API `POST /tcp`, `--tcp`). */
export interface TcpTunnelSpecServer {
  /** Public port on the server; must be inside `tcpPorts`. */
  publicPort: number;
  /** The secret of the client that serves it (a host must be registered for it). */
  identifier: string;
  /** Local port the client is asked to dial; its default `--local` when absent. */
  localPort?: number;
  /** Where it was defined (shown by the admin API). @default "admin" */
  origin?: RouteOrigin;
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
  /** Server-defined: where it was defined. */
  origin?: RouteOrigin;
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

/** What the port manager needs of the server core to relay a public TCP connection. */
export interface TcpStreamOpener {
  /** Time a client has to answer a tunnel stream. */
  readonly responseTimeoutMs: number;
  /** Open a tunnel stream to `client` (see `TunnelServer.openStream`). */
  openStream(
    client: ClientConn,
    host: string,
    transportProtocol: TransportProtocol,
    localPort: string,
    firstData?: Uint8Array,
    serverTcpPort?: number,
  ): Promise<TunnelStream>;
  /** Count one connection with its outcome ("proxied", "502", "504"). */
  countRequest(host: string, outcome: string): void;
}

/** Options of {@linkcode TcpPorts}. */
export interface TcpPortsOptions {
  /** Public TCP ports clients may ask for (inclusive range); none when absent. */
  range?: { min: number; max: number };
  /** Address public TCP tunnels bind. */
  hostname: string;
  /**
   * Send a PROXY header of this version (the public client and the port it reached) as the
   * first bytes of every TCP tunnel connection, so the app behind the client learns who
   * connected (nginx `listen … proxy_protocol`; frp's `proxy_protocol_version`).
   */
  sendProxyProtocol?: 1 | 2;
  /** Where listeners log. */
  log: Logger;
}

/** A server-defined TCP tunnel: its client by digest only (the secret is not kept). */
interface ServerTcpTunnel {
  publicPort: number;
  /** Kept for the state file (the admin's tunnels survive a restart). */
  identifier: string;
  origin: RouteOrigin;
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

/** The public TCP ports of one tunnel server: definitions, owners, listeners. */
export class TcpPorts {
  #owners = new Map<number, ClientConn>();
  #defined = new Map<number, ServerTcpTunnel>();
  /**
   * Digests of the identifiers server-defined TCP tunnels name, with how many name each:
   * these identifiers may connect without any virtual host (a TCP-only client).
   */
  #identifiers = new Map<string, number>();

  /** Ports relayed through `core`'s tunnel streams. */
  constructor(readonly core: TcpStreamOpener, readonly opts: TcpPortsOptions) {}

  /** Whether a server-defined tunnel names the identifier with this client key. */
  names(key: string): boolean {
    return this.#identifiers.has(key);
  }

  /**
   * At `client`'s handshake: bind the ports it asked for, then its server-defined ones.
   * The results go into the handshake response.
   */
  openFor(client: ClientConn, req: HandshakeRequest, log: Logger): TcpTunnelResult[] {
    const out: TcpTunnelResult[] = [];
    for (const { publicPort } of req.tcp ?? []) {
      if (!this.#inRange(publicPort)) {
        out.push({ publicPort, ok: false, error: "port not allowed by the server" });
        continue;
      }
      const owner = this.#owners.get(publicPort);
      const defined = this.#defined.get(publicPort);
      if ((owner && owner !== client) || (defined && defined.key !== client.key)) {
        out.push({ publicPort, ok: false, error: "port in use by another client" });
        continue;
      }
      if (defined) {
        out.push({ publicPort, ok: false, error: "port defined by the server for this client" });
        continue;
      }
      out.push(this.#listen(client, publicPort, undefined, log));
    }
    client.serverTcpReady = true;
    for (const spec of this.#defined.values()) {
      if (spec.key !== client.key) continue;
      const r = this.#listen(client, spec.publicPort, spec.localPort, log);
      if (!r.ok) log.warn("tcp tunnel not opened", { port: spec.publicPort, error: r.error });
      if (out.length < maxTcpResults) out.push(r);
    }
    return out;
  }

  /** `client` is gone: its ports have no owner any more (its close() stopped them). */
  releaseAll(client: ClientConn): void {
    for (const [port, owner] of this.#owners) {
      if (owner === client) this.#owners.delete(port);
    }
  }

  #inRange(port: number): boolean {
    const range = this.opts.range;
    return !!range && port >= range.min && port <= range.max;
  }

  /**
   * Bind `publicPort` for `client` and relay each connection over a tunnel stream. With
   * `serverLocalPort` (a server-defined tunnel) the client is asked for that local port.
   */
  #listen(
    client: ClientConn,
    publicPort: number,
    serverLocalPort: string | undefined,
    log: Logger,
  ): TcpTunnelResult {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: this.opts.hostname, port: publicPort });
    } catch (err) {
      return { publicPort, ok: false, error: errorMessage(err) };
    }
    const addr = formatAddr(listener.addr);
    const host = `tcp:${publicPort}`;
    const localPort = serverLocalPort ?? String(publicPort);
    const serverTcpPort = serverLocalPort === undefined ? undefined : publicPort;
    const core = this.core;
    const srv = serve(listener, async (conn, ctx) => {
      ctx.handshakeDone();
      const startedMs = performance.now();
      // One line per connection, as the HTTP front writes per request.
      const done = (end: string, up = 0, down = 0, failure?: string, error?: string) =>
        ctx.log.info("connection closed", {
          remote: ctx.remote,
          end,
          up,
          down,
          ms: Math.round(performance.now() - startedMs),
          failure,
          error,
        });
      let ts: TunnelStream;
      const { remoteAddr: from, localAddr: to } = conn;
      // The header rides in the stream's SYN with the request: no extra round trip.
      const header = this.opts.sendProxyProtocol &&
        encodeProxyHeader(
          this.opts.sendProxyProtocol,
          { host: from.hostname, port: from.port },
          { host: to.hostname, port: to.port },
        );
      try {
        ts = await core.openStream(
          client,
          host,
          "tcp",
          localPort,
          header || undefined,
          serverTcpPort,
        );
      } catch (err) {
        core.countRequest(host, "502");
        done("502", 0, 0, err instanceof TunnelError ? err.reason : "error", errorMessage(err));
        return;
      }
      try {
        await ts.reply(core.responseTimeoutMs);
      } catch (err) {
        ts.release();
        const outcome = err instanceof TunnelError && err.reason === "timeout" ? "504" : "502";
        core.countRequest(host, outcome);
        done(outcome, 0, 0, err instanceof TunnelError ? err.reason : "error", errorMessage(err));
        return;
      }
      core.countRequest(host, "proxied");
      try {
        const r = await relay(conn, ts.body(), { signal: ctx.signal });
        done(r.end, r.aToB, r.bToA);
      } finally {
        ts.release();
      }
    }, {
      log: this.opts.log.child({ tcp: publicPort }),
      handshakeTimeoutMs: 0,
      name: `tcp-${publicPort}`,
    });
    client.tcp.set(publicPort, srv);
    this.#owners.set(publicPort, client);
    log.info("listening", { name: `tcp-${publicPort}`, addr });
    return { publicPort, ok: true, addr };
  }

  /**
   * Define a server-side TCP tunnel (see `TunnelServer.addTcpTunnel`); `clientOf` finds the
   * live client of a key, whose port is then bound at once.
   */
  add(
    spec: TcpTunnelSpecServer,
    clientOf: (key: string) => ClientConn | undefined,
  ): TcpTunnelInfo {
    const { publicPort, identifier, localPort } = spec;
    if (!isPort(publicPort)) throw new TcpTunnelError("bad-request", "publicPort must be 1-65535");
    if (localPort !== undefined && !isPort(localPort)) {
      throw new TcpTunnelError("bad-request", "localPort must be 1-65535");
    }
    if (!this.#inRange(publicPort)) {
      const range = this.opts.range;
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
    if (this.#defined.has(publicPort) || this.#owners.has(publicPort)) {
      throw new TcpTunnelError("in-use", `port ${publicPort} already has a TCP tunnel`);
    }
    const key = clientKey(identifier);
    const fp = fingerprint(identifier);
    const def: ServerTcpTunnel = {
      publicPort,
      identifier,
      origin: spec.origin ?? "admin",
      key,
      fingerprint: fp,
      localPort: localPort === undefined ? "" : String(localPort),
    };
    const client = clientOf(key);
    const log = client ? this.opts.log.child({ client: fp, cid: client.id }) : this.opts.log;
    if (client?.serverTcpReady && !client.closing) {
      const r = this.#listen(client, publicPort, def.localPort, log);
      if (!r.ok) throw new TcpTunnelError(busy(r.error), `cannot bind ${publicPort}: ${r.error}`);
    } else {
      // Not connected now: check the port can be bound, so a busy port is reported today.
      try {
        Deno.listen({ hostname: this.opts.hostname, port: publicPort }).close();
      } catch (err) {
        throw new TcpTunnelError(
          busy(errorMessage(err)),
          `cannot bind ${publicPort}: ${errorMessage(err)}`,
        );
      }
    }
    this.#defined.set(publicPort, def);
    this.#identifiers.set(key, (this.#identifiers.get(key) ?? 0) + 1);
    log.info("tcp tunnel added", {
      port: publicPort,
      client: fp,
      localPort: def.localPort || "default",
    });
    return this.#info(def);
  }

  /** Remove a server-defined TCP tunnel and close its port; false if there was none. */
  async remove(publicPort: number): Promise<boolean> {
    const def = this.#defined.get(publicPort);
    if (!def) return false;
    this.#defined.delete(publicPort);
    const uses = (this.#identifiers.get(def.key) ?? 1) - 1;
    if (uses > 0) this.#identifiers.set(def.key, uses);
    else this.#identifiers.delete(def.key);
    const owner = this.#owners.get(publicPort);
    const srv = owner?.tcp.get(publicPort);
    if (owner && srv) {
      owner.tcp.delete(publicPort);
      this.#owners.delete(publicPort);
      await srv.stop(0);
    }
    this.opts.log.info("tcp tunnel removed", { port: publicPort, client: def.fingerprint });
    return true;
  }

  /** The server-defined tunnels with their identifiers (secrets: for the state file only). */
  specs(): TcpTunnelSpecServer[] {
    return [...this.#defined.values()].map((d) => ({
      publicPort: d.publicPort,
      identifier: d.identifier,
      ...(d.localPort === "" ? {} : { localPort: Number(d.localPort) }),
      origin: d.origin,
    }));
  }

  /** Every TCP tunnel: server-defined ones (open or waiting) and the ones clients asked for. */
  list(): TcpTunnelInfo[] {
    const out = [...this.#defined.values()].map((d) => this.#info(d));
    for (const [publicPort, owner] of this.#owners) {
      if (this.#defined.has(publicPort)) continue;
      const srv = owner.tcp.get(publicPort);
      out.push({
        publicPort,
        client: owner.fingerprint,
        source: "client",
        open: true,
        addr: srv ? formatAddr(srv.addr) : undefined,
      });
    }
    return out.sort((a, b) => a.publicPort - b.publicPort);
  }

  #info(d: ServerTcpTunnel): TcpTunnelInfo {
    const owner = this.#owners.get(d.publicPort);
    const srv = owner?.key === d.key ? owner.tcp.get(d.publicPort) : undefined;
    return {
      publicPort: d.publicPort,
      client: d.fingerprint,
      source: "server",
      origin: d.origin,
      localPort: d.localPort === "" ? null : Number(d.localPort),
      open: !!srv,
      addr: srv ? formatAddr(srv.addr) : undefined,
    };
  }
}
