/**
 * Public port ownership of a tunnel server (as frp's port manager), shared by TCP and UDP
 * tunnels: which ports clients may ask for, which ones the server defined for which
 * identifier, and who holds each bound port. What a bound port does with its traffic is the
 * protocol's own (tcp_ports.ts, udp_ports.ts).
 *
 * In a cluster (issue 19) a server-defined tunnel is bound on every instance as soon as it is
 * defined ("standing"), and each connection or UDP flow finds its client when it arrives:
 * held here, or by another instance, reached over the cluster link (lib/tunnel/cluster.ts).
 *
 * A port a client asks for in its handshake spans the cluster the same way: the instance
 * holding the client claims it in Redis (port_claims.ts: a lease of that instance, refused
 * while another client's claim lives), and every instance binds it while the claim lives,
 * its traffic finding the client as a server-defined port's does. An instance that cannot
 * bind a claimed port (another program has it there) logs it once, lists it in the admin API
 * with the error (`open: false`), tries again at each look at the claims (every heartbeat),
 * and the other instances keep serving it; the holder answers the client `ok` with that
 * error as a note, since the port is served elsewhere in the cluster.
 *
 * In a group (`duplicate: "balance"`) a port belongs to the identifier, not to one member:
 * every member that asks for it (or, for a server-defined tunnel, every member) serves it, each
 * new connection or UDP flow goes to one of them by the group's balance policy (a TCP
 * connection or a UDP flow is one unit, as one HTTP request is), and the port stays bound
 * until the last of them leaves. A member that leaves or fails its health check gets no new
 * connection or flow; those it carries end with it.
 * @module
 */

import type { Logger } from "../log.ts";
import { errorMessage } from "../net/mod.ts";
import type { HandshakeRequest, PortTunnelResult, TransportProtocol } from "./protocol.ts";
import { fingerprint, type RouteOrigin } from "./registry.ts";
import { type ClientConn, clientKey } from "./client_conn.ts";
import type { TunnelStream } from "./tunnel_stream.ts";
import { type BalancePolicy, ClientGroup, type MemberSkip } from "./group.ts";
import type { PortClaim, PortClaims } from "./port_claims.ts";

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
  /** In a cluster, a port a client asked for: the instance holding its client. */
  instance?: string;
  /** In a cluster, a port a client asked for and not bound here: why (served elsewhere). */
  error?: string;
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
  /** How a group's members share a port's connections and flows. */
  readonly balance: BalancePolicy;
  /**
   * Open a tunnel stream to `client` (see `TunnelServer.openStream`); one `client` did not
   * take goes to the next of `members`.
   */
  openStream(
    client: ClientConn,
    host: string,
    transportProtocol: TransportProtocol,
    localPort: string,
    firstData?: Uint8Array,
    serverPort?: number,
    members?: ClientGroup,
  ): Promise<TunnelStream>;
  /** Count one connection (or UDP flow) with its outcome ("proxied", "502", "504"). */
  countRequest(host: string, outcome: string): void;
  /** Whether the server is a cluster instance (server-defined ports are then standing). */
  readonly clustered: boolean;
  /** The ready client of `identifier`, held here or (in a cluster) by another instance. */
  anyClient(identifier: string): Promise<ClientConn | undefined>;
  /** In a cluster: the claims of the ports clients ask for (they then span the cluster). */
  readonly portClaims?: PortClaims;
}

/** Who serves a bound port's connections and flows. */
export interface PortClients {
  /**
   * The client of a connection or flow when it arrives (undefined: none is ready); members
   * in `skip` are passed over where there is a choice.
   */
  pick(skip?: MemberSkip): Promise<ClientConn | undefined>;
  /** The members serving it here: a stream one of them did not take goes to the next. */
  readonly members?: ClientGroup;
}

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

/** A port bound for the members of one identifier that serve it. */
interface Holding<L> {
  key: string;
  fingerprint: string;
  /** Members serving it, in the order they joined. */
  members: ClientGroup;
  /** Bound by the first member (joiners wait on it). */
  bound: Promise<L>;
  /** Set once bound. */
  listener?: L;
}

/** One member's share of a port: stopping it leaves the port; the last one out unbinds it. */
class PortHold implements PortListener {
  constructor(readonly addrText: string, readonly stop: () => Promise<void>) {}
}

/** A port a client asked for somewhere in the cluster, bound here while its claim lives. */
interface ClaimedPort<L> {
  claim: PortClaim;
  /** Its listener here, once bound. */
  listener?: L;
  /** Why it could not be bound here (tried again at each look at the claims). */
  error?: string;
  /** performance.now() when a client here claimed it: claims read before that miss it. */
  claimedMs: number;
}

/** The local members of one identifier that claimed a port in the cluster. */
interface Claimers {
  key: string;
  /** SHA-256 hex digest of the identifier (as a claim names it). */
  client: string;
  members: ClientGroup;
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
  /** Bound ports of local clients (and those being bound), by public port. */
  #holdings = new Map<number, Holding<L>>();
  #defined = new Map<number, DefinedTunnel>();
  /**
   * Digests of the identifiers server-defined tunnels name, with how many name each: these
   * identifiers may connect without any virtual host (a TCP- or UDP-only client).
   */
  #identifiers = new Map<string, number>();
  /** In a cluster: the server-defined tunnels' listeners, bound while they are defined. */
  #standing = new Map<number, L>();
  /** In a cluster: the ports clients asked for (here or elsewhere), bound while claimed. */
  #claimed = new Map<number, ClaimedPort<L>>();
  /** In a cluster: the local clients that claimed each port (its release waits for the last). */
  #claimers = new Map<number, Claimers>();
  /** Changes to `#claimed` run one after another (binding takes turns). */
  #claimTurn: Promise<void> = Promise.resolve();
  /** close() was called: nothing is bound any more. */
  #closed = false;

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
   * Bind `publicPort`; each connection or flow goes to the client `clients` picks then.
   * With `serverLocalPort` (a server-defined tunnel) the client is asked for that local
   * port. Throws with the reason when it cannot be bound.
   */
  protected abstract bind(
    clients: PortClients,
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
   * At `client`'s handshake (its secret `identifier`): bind the ports it asked for (`wanted`;
   * in a cluster, claim them for every instance), then its server-defined ones (or join them,
   * when a member of its group holds them). The results go into the handshake response.
   */
  async openFor(
    client: ClientConn,
    identifier: string,
    wanted: HandshakeRequest["tcp"],
    log: Logger,
  ): Promise<PortTunnelResult[]> {
    const out: PortTunnelResult[] = [];
    for (const { publicPort } of wanted ?? []) {
      if (!this.#inRange(publicPort)) {
        out.push({ publicPort, ok: false, error: "port not allowed by the server" });
        continue;
      }
      const held = this.#holdings.get(publicPort);
      const defined = this.#defined.get(publicPort);
      if ((held && held.key !== client.key) || (defined && defined.key !== client.key)) {
        out.push({ publicPort, ok: false, error: "port in use by another client" });
        continue;
      }
      if (defined) {
        out.push({ publicPort, ok: false, error: "port defined by the server for this client" });
        continue;
      }
      const claims = this.core.portClaims;
      out.push(
        claims
          ? await this.#claim(claims, client, identifier, publicPort, log)
          : await this.#open(client, publicPort, undefined, log),
      );
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

  /** `client` is gone: it leaves the ports it served (its close() did so already). */
  async releaseAll(client: ClientConn): Promise<void> {
    for (const [port, h] of this.#holdings) {
      if (h.members.members.includes(client)) await this.#leave(port, h, client);
    }
  }

  /** `client` leaves port `port`; the port is unbound when no member serves it any more. */
  #leave(port: number, h: Holding<L>, client: ClientConn): Promise<void> {
    if (!h.members.remove(client) || this.#holdings.get(port) !== h) return Promise.resolve();
    const left = h.members.members.length;
    if (left > 0) {
      this.log.info(`${this.protocol} tunnel handed on`, {
        port,
        client: h.fingerprint,
        left: client.id,
        members: left,
      });
      return Promise.resolve();
    }
    this.#holdings.delete(port);
    return h.listener?.stop() ?? Promise.resolve();
  }

  #inRange(port: number): boolean {
    const range = this.range;
    return !!range && port >= range.min && port <= range.max;
  }

  /**
   * Bind for `client` (the port is claimed while binding), or join the binding of a member of
   * its group, which then shares the port's connections and flows with it.
   */
  async #open(
    client: ClientConn,
    publicPort: number,
    serverLocalPort: string | undefined,
    log: Logger,
  ): Promise<PortTunnelResult> {
    if (client.closing) return { publicPort, ok: false, error: "client closed" };
    let h = this.#holdings.get(publicPort);
    if (h && h.key !== client.key) {
      return { publicPort, ok: false, error: "port in use by another client" };
    }
    const binding = !h;
    if (!h) {
      const members = new ClientGroup();
      const pick = (skip?: MemberSkip) => Promise.resolve(members.pick(this.core.balance, skip));
      h = {
        key: client.key,
        fingerprint: client.fingerprint,
        members,
        bound: this.bind({ pick, members }, publicPort, serverLocalPort, log),
      };
      this.#holdings.set(publicPort, h);
    }
    let l: L;
    try {
      l = await h.bound;
    } catch (err) {
      if (this.#holdings.get(publicPort) === h) this.#holdings.delete(publicPort);
      return { publicPort, ok: false, error: errorMessage(err) };
    }
    const current = this.#holdings.get(publicPort) === h;
    if (client.closing || !current) {
      // The client left (or the tunnel was removed) while the port was being bound.
      if (binding && (!current || h.members.members.length === 0)) {
        if (current) this.#holdings.delete(publicPort);
        await l.stop();
      }
      return { publicPort, ok: false, error: "client closed" };
    }
    h.listener = l;
    h.members.add(client);
    const held = h;
    this.held(client).set(
      publicPort,
      new PortHold(l.addrText, () => this.#leave(publicPort, held, client)),
    );
    if (binding) {
      log.info("listening", { name: `${this.protocol}-${publicPort}`, addr: l.addrText });
    } else {
      log.info(`${this.protocol} tunnel joined`, {
        port: publicPort,
        members: h.members.members.length,
      });
    }
    return { publicPort, ok: true, addr: l.addrText };
  }

  /**
   * In a cluster: claim `publicPort` for `client` in Redis, then bind it here too. A group's
   * members each claim it (the same identifier's claim); the last to leave releases it.
   */
  async #claim(
    claims: PortClaims,
    client: ClientConn,
    identifier: string,
    publicPort: number,
    log: Logger,
  ): Promise<PortTunnelResult> {
    if (client.closing) return { publicPort, ok: false, error: "client closed" };
    let r: Awaited<ReturnType<PortClaims["claim"]>>;
    try {
      r = await claims.claim(this.protocol, publicPort, identifier);
    } catch (err) {
      return { publicPort, ok: false, error: `port not claimed: ${errorMessage(err)}` };
    }
    if (!r.ok) {
      log.info(`${this.protocol} port refused: another client holds it`, {
        port: publicPort,
        holder: r.claim.instance,
        other: r.claim.fingerprint,
      });
      return {
        publicPort,
        ok: false,
        error: `port in use by another client (on instance ${r.claim.instance})`,
      };
    }
    let g = this.#claimers.get(publicPort);
    // Another identifier's entry is stale: Redis just gave the port to this one.
    if (g?.key !== client.key) {
      g = { key: client.key, client: r.claim.client, members: new ClientGroup() };
      this.#claimers.set(publicPort, g);
    }
    g.members.add(client);
    const group = g;
    const leave = () => this.#unclaim(claims, publicPort, group, client, identifier, log);
    await this.#inTurn(() => this.#stand(r.claim, performance.now()));
    if (client.closing) {
      // It left meanwhile (its close() may have stopped its ports already: leaving twice is
      // nothing).
      await leave();
      return { publicPort, ok: false, error: "client closed" };
    }
    const l = this.#claimed.get(publicPort);
    this.held(client).set(publicPort, new PortHold(l?.listener?.addrText ?? "", leave));
    if (l?.listener) return { publicPort, ok: true, addr: l.listener.addrText };
    return {
      publicPort,
      ok: true,
      error: `claimed for the cluster; not bound on this instance (${l?.error ?? "closing"}): ` +
        "the other instances serve it",
    };
  }

  /** `client` leaves the claim of `port`; the last local member out releases it. */
  async #unclaim(
    claims: PortClaims,
    port: number,
    group: Claimers,
    client: ClientConn,
    identifier: string,
    log: Logger,
  ): Promise<void> {
    this.held(client).delete(port);
    if (!group.members.remove(client) || group.members.members.length > 0) return;
    if (this.#claimers.get(port) === group) this.#claimers.delete(port);
    await claims.release(this.protocol, port, identifier).catch((err) =>
      log.warn(`${this.protocol} port claim not released: it ends with its lease`, {
        port,
        error: errorMessage(err),
      })
    );
  }

  /** Run `f` after the changes to the claimed ports before it. */
  #inTurn(f: () => Promise<void>): Promise<void> {
    const p = this.#claimTurn.then(f);
    // The next turn runs whatever this one did; its caller sees its failure.
    this.#claimTurn = p.catch(() => {});
    return p;
  }

  /**
   * Bind the port of `claim` here unless bound already (a client here claimed it at
   * `claimedMs`); a failure is logged once, kept for the admin API and retried next time.
   * Its connections and flows go to the local members that claimed it, else to the
   * identifier's client wherever it is held.
   */
  async #stand(claim: PortClaim, claimedMs?: number): Promise<void> {
    const port = claim.port;
    if (this.#closed) return;
    let e = this.#claimed.get(port);
    if (!e) this.#claimed.set(port, e = { claim, claimedMs: claimedMs ?? -Infinity });
    e.claim = claim;
    if (claimedMs !== undefined) e.claimedMs = claimedMs;
    if (e.listener) return;
    const entry = e;
    const claims = this.core.portClaims!;
    const claimers = this.#claimers;
    const balance = this.core.balance;
    const anyClient = (identifier: string) => this.core.anyClient(identifier);
    const clients: PortClients = {
      pick(skip?: MemberSkip) {
        const g = claimers.get(port);
        const local = g?.client === entry.claim.client ? g.members.pick(balance, skip) : undefined;
        return local ? Promise.resolve(local) : anyClient(claims.identifierOf(entry.claim));
      },
      get members() {
        const g = claimers.get(port);
        return g?.client === entry.claim.client ? g.members : undefined;
      },
    };
    const fields = { port, client: claim.fingerprint, holder: claim.instance };
    try {
      entry.listener = await this.bind(clients, port, undefined, this.log);
      delete entry.error;
      this.log.info("listening", {
        name: `${this.protocol}-${port}`,
        addr: entry.listener.addrText,
        ...fields,
      });
    } catch (err) {
      const error = errorMessage(err);
      if (entry.error !== error) {
        this.log.warn(
          `${this.protocol} port claimed in the cluster not bound here: the other instances serve it`,
          { ...fields, error },
        );
      }
      entry.error = error;
    }
  }

  /**
   * In a cluster: every claim of the cluster as read from `startedMs` on. Claimed ports are
   * bound here (or tried again), released ones closed; a port this instance defines on the
   * server side stays its own.
   */
  syncClaims(claims: PortClaim[], startedMs: number): Promise<void> {
    return this.#inTurn(async () => {
      const want = new Map<number, PortClaim>();
      for (const c of claims) {
        if (c.proto === this.protocol && !this.#defined.has(c.port)) want.set(c.port, c);
      }
      for (const [port, e] of this.#claimed) {
        if (want.has(port) || e.claimedMs >= startedMs) continue;
        // Still claimed by clients here (another instance's member of their group released
        // it): the claims' refresh writes it back, the port stays.
        if (this.#claimers.get(port)?.client === e.claim.client) continue;
        this.#claimed.delete(port);
        await e.listener?.stop();
        this.log.info(`${this.protocol} port released in the cluster: closed`, {
          port,
          client: e.claim.fingerprint,
        });
      }
      for (const c of want.values()) await this.#stand(c);
    });
  }

  /**
   * Define a server-side tunnel (see `TunnelServer.addTcpTunnel`); `clientsOf` lists the
   * live clients of a key (a group's members), whose port is then bound at once.
   */
  async add(
    spec: PortTunnelSpec,
    clientsOf: (key: string) => readonly ClientConn[],
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
    if (
      this.#defined.has(publicPort) || this.#holdings.has(publicPort) ||
      this.#claimed.has(publicPort)
    ) {
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
    const clients = clientsOf(key);
    const ready = clients.filter((c) => c.serverPortsReady.has(this.protocol) && !c.closing);
    const logOf = (c: ClientConn) => this.log.child({ client: fp, cid: c.id });
    let error: string | undefined;
    if (this.core.clustered) {
      try {
        const pick = () => this.core.anyClient(identifier);
        const l = await this.bind({ pick }, publicPort, def.localPort, this.log);
        if (this.#defined.get(publicPort) === def) {
          this.#standing.set(publicPort, l);
          this.log.info("listening", { name: `${this.protocol}-${publicPort}`, addr: l.addrText });
        } else await l.stop(); // removed while it was being bound
      } catch (err) {
        error = errorMessage(err);
      }
    } else if (ready.length > 0) {
      // Every member serves it; it is refused only when none could.
      const results: PortTunnelResult[] = [];
      for (const c of ready) results.push(await this.#open(c, publicPort, def.localPort, logOf(c)));
      if (!results.some((r) => r.ok)) error = results[0].error;
    } else if (this.#holdings.get(publicPort)?.key !== key) {
      // Not connected now: check the port can be bound, so a busy port is reported today.
      // (A handshake that opened it meanwhile is its client's own binding: that is fine.)
      error = await this.probe(publicPort).then(() => undefined, errorMessage);
      if (error !== undefined && this.#holdings.get(publicPort)?.key === key) error = undefined;
    }
    if (error !== undefined) {
      this.#forget(def);
      throw new PortTunnelError(busy(error), `cannot bind ${publicPort}: ${error}`);
    }
    (clients.length > 0 ? logOf(clients[0]) : this.log).info(`${this.protocol} tunnel added`, {
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
    const h = this.#holdings.get(publicPort);
    if (h) {
      this.#holdings.delete(publicPort);
      for (const m of h.members.members) this.held(m).delete(publicPort);
      // Still being bound: its binder stops it (it finds the tunnel gone).
      await h.listener?.stop();
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
    for (const [publicPort, e] of this.#claimed) {
      if (this.#defined.has(publicPort)) continue;
      out.push({
        publicPort,
        client: e.claim.fingerprint,
        source: "client",
        open: !!e.listener,
        addr: e.listener?.addrText,
        instance: e.claim.instance,
        ...(e.error === undefined ? {} : { error: e.error }),
      });
    }
    for (const [publicPort, h] of this.#holdings) {
      if (this.#defined.has(publicPort)) continue;
      out.push({
        publicPort,
        client: h.fingerprint,
        source: "client",
        open: !!h.listener,
        addr: h.listener?.addrText,
      });
    }
    return out.sort((a, b) => a.publicPort - b.publicPort);
  }

  /** Stop the standing and claimed ports' listeners (the server is closing). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#inTurn(async () => {
      const all = [...this.#standing.values()];
      for (const e of this.#claimed.values()) if (e.listener) all.push(e.listener);
      this.#standing.clear();
      this.#claimed.clear();
      await Promise.allSettled(all.map((l) => l.stop()));
    });
  }

  #info(d: DefinedTunnel): PortTunnelInfo {
    const h = this.#holdings.get(d.publicPort);
    const l = this.#standing.get(d.publicPort) ?? (h?.key === d.key ? h.listener : undefined);
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
