/**
 * Public port ownership of a tunnel server (as frp's port manager), shared by TCP and UDP
 * tunnels: which ports clients may ask for, which ones the server defined for which
 * identifier, and who holds each bound port. What a bound port does with its traffic is the
 * protocol's own (tcp_ports.ts, udp_ports.ts).
 *
 * In a cluster (issue 19) a server-defined tunnel is bound on every instance as soon as it is
 * defined ("standing"), and each connection or UDP flow finds its client when it arrives:
 * held here, or by another instance, reached over the cluster link (lib/tunnel/cluster.ts).
 * Ports a client asks for in its handshake stay on the instance holding it.
 * @module
 */

import type { Logger } from "../log.ts";
import { errorMessage } from "../net/mod.ts";
import type { HandshakeRequest, PortTunnelResult, TransportProtocol } from "./protocol.ts";
import { fingerprint, type RouteOrigin } from "./registry.ts";
import { type ClientConn, clientKey } from "./client_conn.ts";
import type { TunnelStream } from "./tunnel_stream.ts";

/** The protocol of a public port tunnel. */
export type PortProtocol = "tcp" | "udp";

/** A tunnel defined on the server side (admin API `POST /tcp` or `/udp`, `--tcp`, `--udp`). */
export interface PortTunnelSpec {
  /** Public port on the server; must be inside the protocol's port range. */
  publicPort: number;
  /** The secret of the client that serves it. */
  identifier: string;
  /** Local port the client is asked for; its default when absent. */
  localPort?: number;
  /** Where it was defined (shown by the admin API). @default "admin" */
  origin?: RouteOrigin;
}

/** A port tunnel as the admin API lists it (no secret). */
export interface PortTunnelInfo {
  /** Public port on the server. */
  publicPort: number;
  /** Fingerprint of the identifier that serves it. */
  client: string;
  /** "server": defined by the admin API or a flag; "client": asked for in a handshake. */
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

/** Why a server-defined port tunnel cannot be added. */
export type PortTunnelFailure = "bad-request" | "not-allowed" | "in-use";

/** A refused `add`; the admin API maps `reason` to a 4xx status. */
export class PortTunnelError extends Error {
  /** Error class name. */
  override name = "PortTunnelError";
  /** A failure of kind `reason`. */
  constructor(readonly reason: PortTunnelFailure, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** What a port tunnel needs of the server core to relay public traffic. */
export interface PortStreamOpener {
  /** Time a client has to answer a tunnel stream. */
  readonly responseTimeoutMs: number;
  /** Open a tunnel stream to `client` (see `TunnelServer.openStream`). */
  openStream(
    client: ClientConn,
    host: string,
    transportProtocol: TransportProtocol,
    localPort: string,
    firstData?: Uint8Array,
    serverPort?: number,
  ): Promise<TunnelStream>;
  /** Count one connection (or UDP flow) with its outcome ("proxied", "502", "504"). */
  countRequest(host: string, outcome: string): void;
  /** Whether the server is a cluster instance (server-defined ports are then standing). */
  readonly clustered: boolean;
  /** The ready client of `identifier`, held here or (in a cluster) by another instance. */
  anyClient(identifier: string): Promise<ClientConn | undefined>;
}

/** Finds the client of a connection or flow when it arrives (undefined: none is ready). */
export type ClientFinder = () => Promise<ClientConn | undefined>;

/** A bound public port: what the owner stops when its client leaves. */
export interface PortListener {
  /** The bound address, for the admin API. */
  readonly addrText: string;
  /** Stop taking traffic and release the port. */
  stop(): Promise<void>;
}

/** A server-defined tunnel: its client by digest only (the secret is kept for the state file). */
interface DefinedTunnel {
  publicPort: number;
  identifier: string;
  origin: RouteOrigin;
  key: string;
  fingerprint: string;
  /** "" = the client's default service. */
  localPort: string;
}

/** Entries the handshake response's lists may carry (their schema's bound). */
const maxResults = 64;

function isPort(p: unknown): p is number {
  return typeof p === "number" && Number.isInteger(p) && p >= 1 && p <= 65535;
}

function busy(error: string): PortTunnelFailure {
  return /in use|AddrInUse/i.test(error) ? "in-use" : "bad-request";
}

/** Definitions and owners of one protocol's public ports; subclasses bind and relay. */
export abstract class PortTunnels<L extends PortListener> {
  #owners = new Map<number, ClientConn>();
  #defined = new Map<number, DefinedTunnel>();
  /**
   * Digests of the identifiers server-defined tunnels name, with how many name each: these
   * identifiers may connect without any virtual host (a TCP- or UDP-only client).
   */
  #identifiers = new Map<string, number>();
  /** In a cluster: the server-defined tunnels' listeners, bound while they are defined. */
  #standing = new Map<number, L>();

  /**
   * Ports of `protocol` inside `range` (none when absent), relayed through `core`; events
   * go to `log`.
   */
  constructor(
    readonly protocol: PortProtocol,
    readonly core: PortStreamOpener,
    readonly range: { min: number; max: number } | undefined,
    readonly log: Logger,
  ) {}

  /**
   * Bind `publicPort`; each connection or flow goes to the client `clientOf` finds then.
   * With `serverLocalPort` (a server-defined tunnel) the client is asked for that local
   * port. Throws with the reason when it cannot be bound.
   */
  protected abstract bind(
    clientOf: ClientFinder,
    publicPort: number,
    serverLocalPort: string | undefined,
    log: Logger,
  ): Promise<L>;

  /** Check that `port` can be bound now (bind and release it); throws when it cannot. */
  protected abstract probe(port: number): Promise<void>;

  /** The listeners `client` holds of this protocol (closed with it). */
  protected abstract held(client: ClientConn): Map<number, PortListener>;

  /** Whether a server-defined tunnel names the identifier with this client key. */
  names(key: string): boolean {
    return this.#identifiers.has(key);
  }

  /**
   * At `client`'s handshake: bind the ports it asked for (`wanted`), then its server-defined
   * ones. The results go into the handshake response.
   */
  async openFor(
    client: ClientConn,
    wanted: HandshakeRequest["tcp"],
    log: Logger,
  ): Promise<PortTunnelResult[]> {
    const out: PortTunnelResult[] = [];
    for (const { publicPort } of wanted ?? []) {
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
      out.push(await this.#open(client, publicPort, undefined, log));
    }
    // In one step with the ready flag: a tunnel added from now on is opened by add().
    client.serverPortsReady.add(this.protocol);
    const mine = [...this.#defined.values()].filter((d) => d.key === client.key);
    for (const spec of mine) {
      const standing = this.#standing.get(spec.publicPort);
      const r: PortTunnelResult = this.core.clustered
        ? standing
          ? { publicPort: spec.publicPort, ok: true, addr: standing.addrText }
          : { publicPort: spec.publicPort, ok: false, error: "port not bound" }
        : await this.#open(client, spec.publicPort, spec.localPort, log);
      if (!r.ok) {
        log.warn(`${this.protocol} tunnel not opened`, { port: spec.publicPort, error: r.error });
      }
      if (out.length < maxResults) out.push(r);
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
    const range = this.range;
    return !!range && port >= range.min && port <= range.max;
  }

  /** Bind for `client` and record it as the owner (the port is claimed while binding). */
  async #open(
    client: ClientConn,
    publicPort: number,
    serverLocalPort: string | undefined,
    log: Logger,
  ): Promise<PortTunnelResult> {
    if (client.closing) return { publicPort, ok: false, error: "client closed" };
    if (this.#owners.has(publicPort)) {
      return { publicPort, ok: false, error: "port in use by another client" };
    }
    this.#owners.set(publicPort, client);
    let l: L;
    try {
      l = await this.bind(() => Promise.resolve(client), publicPort, serverLocalPort, log);
    } catch (err) {
      this.#owners.delete(publicPort);
      return { publicPort, ok: false, error: errorMessage(err) };
    }
    if (client.closing || this.#owners.get(publicPort) !== client) {
      // The client left (or the tunnel was removed) while the port was being bound.
      await l.stop();
      if (this.#owners.get(publicPort) === client) this.#owners.delete(publicPort);
      return { publicPort, ok: false, error: "client closed" };
    }
    this.held(client).set(publicPort, l);
    log.info("listening", { name: `${this.protocol}-${publicPort}`, addr: l.addrText });
    return { publicPort, ok: true, addr: l.addrText };
  }

  /**
   * Define a server-side tunnel (see `TunnelServer.addTcpTunnel`); `clientOf` finds the
   * live client of a key, whose port is then bound at once.
   */
  async add(
    spec: PortTunnelSpec,
    clientOf: (key: string) => ClientConn | undefined,
  ): Promise<PortTunnelInfo> {
    const { publicPort, identifier, localPort } = spec;
    const kind = this.protocol.toUpperCase();
    if (!isPort(publicPort)) throw new PortTunnelError("bad-request", "publicPort must be 1-65535");
    if (localPort !== undefined && !isPort(localPort)) {
      throw new PortTunnelError("bad-request", "localPort must be 1-65535");
    }
    if (!this.#inRange(publicPort)) {
      const range = this.range;
      throw new PortTunnelError(
        "not-allowed",
        range
          ? `port ${publicPort} is outside the server's ${kind} ports ${range.min}-${range.max}`
          : `this server allows no ${kind} tunnels (no --${this.protocol}-ports)`,
      );
    }
    if (typeof identifier !== "string" || identifier === "") {
      throw new PortTunnelError("bad-request", "identifier must be a non-empty string");
    }
    if (this.#defined.has(publicPort) || this.#owners.has(publicPort)) {
      throw new PortTunnelError("in-use", `port ${publicPort} already has a ${kind} tunnel`);
    }
    const key = clientKey(identifier);
    const fp = fingerprint(identifier);
    const def: DefinedTunnel = {
      publicPort,
      identifier,
      origin: spec.origin ?? "admin",
      key,
      fingerprint: fp,
      localPort: localPort === undefined ? "" : String(localPort),
    };
    // Claimed before anything is awaited: a handshake from now on sees it and opens it.
    this.#defined.set(publicPort, def);
    this.#identifiers.set(key, (this.#identifiers.get(key) ?? 0) + 1);
    const client = clientOf(key);
    const log = client ? this.log.child({ client: fp, cid: client.id }) : this.log;
    let error: string | undefined;
    if (this.core.clustered) {
      try {
        const find = () => this.core.anyClient(identifier);
        const l = await this.bind(find, publicPort, def.localPort, this.log);
        if (this.#defined.get(publicPort) === def) {
          this.#standing.set(publicPort, l);
          this.log.info("listening", { name: `${this.protocol}-${publicPort}`, addr: l.addrText });
        } else await l.stop(); // removed while it was being bound
      } catch (err) {
        error = errorMessage(err);
      }
    } else if (client?.serverPortsReady.has(this.protocol) && !client.closing) {
      const r = await this.#open(client, publicPort, def.localPort, log);
      if (!r.ok) error = r.error;
    } else if (this.#owners.get(publicPort)?.key !== key) {
      // Not connected now: check the port can be bound, so a busy port is reported today.
      // (A handshake that opened it meanwhile is its client's own binding: that is fine.)
      error = await this.probe(publicPort).then(() => undefined, errorMessage);
      if (error !== undefined && this.#owners.get(publicPort)?.key === key) error = undefined;
    }
    if (error !== undefined) {
      this.#forget(def);
      throw new PortTunnelError(busy(error), `cannot bind ${publicPort}: ${error}`);
    }
    log.info(`${this.protocol} tunnel added`, {
      port: publicPort,
      client: fp,
      localPort: def.localPort || "default",
    });
    return this.#info(def);
  }

  #forget(def: DefinedTunnel): void {
    this.#defined.delete(def.publicPort);
    const uses = (this.#identifiers.get(def.key) ?? 1) - 1;
    if (uses > 0) this.#identifiers.set(def.key, uses);
    else this.#identifiers.delete(def.key);
  }

  /** Remove a server-defined tunnel and close its port; false if there was none. */
  async remove(publicPort: number): Promise<boolean> {
    const def = this.#defined.get(publicPort);
    if (!def) return false;
    this.#forget(def);
    const standing = this.#standing.get(publicPort);
    this.#standing.delete(publicPort);
    await standing?.stop();
    const owner = this.#owners.get(publicPort);
    const l = owner && this.held(owner).get(publicPort);
    if (owner) this.#owners.delete(publicPort);
    if (owner && l) {
      this.held(owner).delete(publicPort);
      await l.stop();
    }
    this.log.info(`${this.protocol} tunnel removed`, {
      port: publicPort,
      client: def.fingerprint,
    });
    return true;
  }

  /** The server-defined tunnels with their identifiers (secrets: for the state file only). */
  specs(): PortTunnelSpec[] {
    return [...this.#defined.values()].map((d) => ({
      publicPort: d.publicPort,
      identifier: d.identifier,
      ...(d.localPort === "" ? {} : { localPort: Number(d.localPort) }),
      origin: d.origin,
    }));
  }

  /** Every tunnel: server-defined ones (open or waiting) and the ones clients asked for. */
  list(): PortTunnelInfo[] {
    const out = [...this.#defined.values()].map((d) => this.#info(d));
    for (const [publicPort, owner] of this.#owners) {
      if (this.#defined.has(publicPort)) continue;
      const l = this.held(owner).get(publicPort);
      out.push({
        publicPort,
        client: owner.fingerprint,
        source: "client",
        open: !!l,
        addr: l?.addrText,
      });
    }
    return out.sort((a, b) => a.publicPort - b.publicPort);
  }

  /** Stop the standing listeners (the server is closing). */
  async close(): Promise<void> {
    const all = [...this.#standing.values()];
    this.#standing.clear();
    await Promise.allSettled(all.map((l) => l.stop()));
  }

  #info(d: DefinedTunnel): PortTunnelInfo {
    const owner = this.#owners.get(d.publicPort);
    const l = this.#standing.get(d.publicPort) ??
      (owner?.key === d.key ? this.held(owner).get(d.publicPort) : undefined);
    return {
      publicPort: d.publicPort,
      client: d.fingerprint,
      source: "server",
      origin: d.origin,
      localPort: d.localPort === "" ? null : Number(d.localPort),
      open: !!l,
      addr: l?.addrText,
    };
  }
}
