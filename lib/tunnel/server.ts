/**
 * The tunnel server core, shared by both front ends (the standalone HTTP/1 fast path and
 * the embeddable Hono app): authenticates clients, runs their mux sessions and control
 * handshakes, routes virtual hosts to sessions and opens tunnel streams. Public TCP and UDP
 * ports are owned by tcp_ports.ts and udp_ports.ts, counters kept by stats.ts, Prometheus
 * export is metrics.ts.
 * @module
 */

import { sha256Hex } from "../net/sha256.ts";
import { Session, type SessionOptions, type Stream } from "../mux/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import { type AuthFailureLimiter, verifySecret } from "../net/ratelimit.ts";
import {
  BufferedReader,
  closeQuietly,
  concatBytes,
  type Duplex,
  errorMessage,
  writeAll,
} from "../net/mod.ts";
import { type Outgoing, randomSecret } from "../control/mod.ts";
import {
  defaultHeartbeatIntervalMs,
  defaultHeartbeatTimeoutMs,
  encodeMessage,
  expectMessage,
  type HandshakeResponse,
  readMessage,
  sessionEndReport,
  sessionEndWaitMs,
  sessionEndWithin,
  type TransportProtocol,
} from "./protocol.ts";
import {
  type ClientRecord,
  fingerprint,
  type HostEntry,
  identifierDigest,
  MemoryRegistry,
  normalizeHost,
  normalizeHostPattern,
  type Registry,
  RegistryUnavailableError,
  type RouteOrigin,
} from "./registry.ts";
import { ClientConn, type ClientInfo, clientKey } from "./client_conn.ts";
import { type BalancePolicy, ClientGroup } from "./group.ts";
import { HealthLog } from "./health_log.ts";
import { type HostStats, type HostStatus, TunnelStats } from "./stats.ts";
import { TcpPorts, type TcpTunnelInfo, type TcpTunnelSpecServer } from "./tcp_ports.ts";
import { UdpPorts, type UdpTunnelInfo, type UdpTunnelSpecServer } from "./udp_ports.ts";
import type { FlowLimits } from "../udp/mod.ts";
import { type StreamReopen, TunnelError, TunnelStream } from "./tunnel_stream.ts";
import {
  type AccessDenied,
  HostAccess,
  type HostAccessInfo,
  type HostAccessSpec,
} from "./access.ts";
import {
  accountDigest,
  claimIdentifier,
  type ClaimRefusal,
  isDnsLabel,
  type SubdomainClaims,
} from "./subdomains.ts";
import { timingSafeEqual } from "../net/secret.ts";
import { HostRewrite, type HostRewriteInfo, type HostRewriteSpec } from "./rewrite.ts";
import { HostRules } from "./host_rules.ts";
import { type TunnelConfig, TunnelConfigApplier, type TunnelConfigResult } from "./config.ts";
import type { PortClaims } from "./port_claims.ts";

// Both sides' heartbeat defaults live in protocol.ts (the client imports them from there, not
// this module and the server's graph behind it); re-exported here where they were.
export { defaultHeartbeatIntervalMs, defaultHeartbeatTimeoutMs } from "./protocol.ts";

/** Default time a client has to answer a tunnel stream (and its app the first byte): 504 after. */
export const defaultResponseTimeoutMs = 60_000;
/** Shortest interval of a cluster instance's look for claims no instance keeps. */
export const minClaimSweepMs = 1_000;
/** Time a new client has to open its control stream and send its handshake. */
export const defaultClientHandshakeTimeoutMs = 10_000;

/**
 * What to do when a second client connects with an identifier that is already connected:
 * it replaces the first, is refused, or joins it in a group that shares the load
 * (group.ts).
 */
export type DuplicatePolicy = "replace" | "refuse" | "balance";

/** Options of {@linkcode TunnelServer}. */
export interface TunnelServerOptions {
  /** Hosts and client locations. @default new MemoryRegistry() */
  registry?: Registry;
  /** Policy for a second client with a connected identifier. @default "replace" */
  duplicate?: DuplicatePolicy;
  /** How a group (`duplicate: "balance"`) spreads streams. @default "round-robin" */
  balance?: BalancePolicy;
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
  /** Send a PROXY header (v1 or v2) first on every TCP tunnel connection (see TcpPorts). */
  tcpSendProxyProtocol?: 1 | 2;
  /** Public UDP ports clients may ask for (inclusive range); none when absent. */
  udpPorts?: { min: number; max: number };
  /** Address public UDP tunnels bind. @default "127.0.0.1" */
  udpHost?: string;
  /** Bounds of each public UDP port's peer flows (idle timeout, flows, queued bytes). */
  udpLimits?: FlowLimits;
  /** Extra mux session options. */
  mux?: SessionOptions;
  /** Where events are logged. @default silent */
  log?: Logger;
  /** Subdomain claims under a domain by account tokens (`--domain`, `--account-token`). */
  subdomains?: SubdomainClaims;
  /**
   * The hosts' access rules and header rewrites: a cluster's in Redis
   * ({@linkcode ClusterHostRules}). @default in this process
   */
  rules?: HostRules;
}

/** A control-path request admitted (with the identifier its session runs under) or refused. */
export type Admission =
  | { ok: true; identifier: string }
  | { ok: false; reason: Exclude<AuthResult, "ok"> | ClaimRefusal };

/**
 * A subdomain claim as the state file keeps it: the host, the SHA-256 digest of the account
 * token holding it (never the token), and when its client left (absent: connected).
 */
export interface ClaimRecord {
  /** `name.<domain>`. */
  host: string;
  /** SHA-256 hex digest of the account token. */
  account: string;
  /** Epoch ms when its client left; the name is released `--subdomain-grace` after. */
  leftAt?: number;
}

/**
 * A digest of the rules a client sent (its access rules and header rewrites as sent, "" for
 * none): a group's members must all send the same. The rules hold credentials: only their
 * digest is kept for the comparison.
 */
function rulesDigest(access: unknown, rewrite: unknown): string {
  if (access === undefined && rewrite === undefined) return "";
  return sha256Hex(JSON.stringify([access ?? null, rewrite ?? null]));
}

/**
 * Whether two identifiers are one, compared by digest in constant time: a shared registry
 * names an identifier this process never saw by a digest stand-in (registry.ts digestRef).
 */
function sameIdentifier(a: string, b: string): boolean {
  return timingSafeEqual(identifierDigest(a), identifierDigest(b));
}

/** `addHost` refused: the host is registered already (the admin API's 409). */
export class HostTakenError extends Error {
  override name = "HostTakenError";
  /** The host asked for. */
  constructor(readonly host: string) {
    super(`host ${host} is served already (send "replace": true to take it over)`);
  }
}

/** Result of routing a Host to a client. */
export type Route =
  | { ok: true; host: string; client: ClientConn }
  | { ok: false; status: 404 | 502 | 503; host: string };

/**
 * Result of authenticating a client's identifier before the upgrade; a refusal names its
 * reason (logged as `failure=`): no identifier header, an identifier no host or TCP tunnel
 * names, or (policy "refuse") one whose client is connected already.
 */
export type AuthResult =
  | "ok"
  | "no-identifier"
  | "unknown-identifier"
  | "identifier-connected"
  | "registry-unavailable";

/** Client connects and disconnects of one server, for `warren_tunnel_client_events_total`. */
export interface ClientEvents {
  /** Sessions that finished their handshake. */
  connected: number;
  /** Sessions that ended (after a handshake or not). */
  disconnected: number;
}

/** Every live TunnelServer of the process (lib/tunnel/metrics.ts reads them at scrape). */
export const liveTunnelServers: Set<TunnelServer> = new Set();

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
  /** How a group spreads streams over its members. */
  readonly balance: BalancePolicy;
  /** 504 after this long without an answer. */
  readonly responseTimeoutMs: number;
  readonly #opts: TunnelServerOptions;
  /** The live clients of each identifier (by client key): one, or a group's members. */
  #clients = new Map<string, ClientGroup>();
  /** Per-host counters (status page, admin API, metrics). */
  readonly stats: TunnelStats = new TunnelStats();
  /** Client connects and disconnects so far. */
  readonly clientEvents: ClientEvents = { connected: 0, disconnected: 0 };
  readonly #tcp: TcpPorts;
  readonly #udp: UdpPorts;
  /** Where each registered host came from (absent: added through the API, "admin"). */
  #hostOrigins = new Map<string, RouteOrigin>();
  /** Access rules and header rewrites by host entry (the cluster's, when shared). */
  readonly #rules: HostRules;
  /** Connected clients that set access rules of their own (checkAccess is free at 0). */
  #clientAccess = 0;
  /** The claim each claim session (by client key) holds. */
  #claims = new Map<string, ClaimRecord>();
  /**
   * Run after a subdomain claim was made, released, or its client came or left (the state
   * file is written here); it must not throw.
   */
  onClaimsChange?: () => void;
  /**
   * Wildcard entries registered through this server (route() skips their walk when 0, unless
   * the registry is shared).
   */
  #wildcards = 0;
  #nextClient = 0;
  /** The look for claims no instance keeps (a shared registry with subdomains). */
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #nextRequest = 0;
  readonly #instance: string;
  #closed = false;

  /** A server core with no clients yet. */
  constructor(opts: TunnelServerOptions = {}) {
    this.#opts = opts;
    this.registry = opts.registry ?? new MemoryRegistry();
    this.#rules = opts.rules ?? new HostRules();
    this.#instance = this.registry.instance ?? randomSecret(4);
    this.log = opts.log ?? silentLogger;
    this.duplicate = opts.duplicate ?? "replace";
    this.balance = opts.balance ?? "round-robin";
    this.responseTimeoutMs = opts.responseTimeoutMs ?? defaultResponseTimeoutMs;
    this.#tcp = new TcpPorts(this, {
      range: opts.tcpPorts,
      hostname: opts.tcpHost ?? "127.0.0.1",
      sendProxyProtocol: opts.tcpSendProxyProtocol,
      log: this.log,
    });
    this.#udp = new UdpPorts(this, {
      ...opts.udpLimits,
      range: opts.udpPorts,
      hostname: opts.udpHost ?? "127.0.0.1",
      log: this.log,
    });
    liveTunnelServers.add(this);
    const claims = opts.subdomains;
    if (claims && this.registry.instance !== undefined) {
      this.#sweepTimer = setInterval(
        () => void this.#sweepClaims(),
        Math.max(minClaimSweepMs, claims.graceMs / 2),
      );
      Deno.unrefTimer(this.#sweepTimer);
    }
  }

  /**
   * Serve `host` with the client holding `identifier` (a fresh random one when omitted).
   * Returns the identifier: hand it to the client, it is its secret.
   *
   * A host registered already is replaced, unless `exclusive` (the admin API without
   * `replace`), which throws {@linkcode HostTakenError} instead. A replaced host's previous
   * client loses it; when it then serves nothing else, its session is ended ("revoked").
   */
  async addHost(
    host: string,
    identifier?: string,
    opts: { origin?: RouteOrigin; exclusive?: boolean } = {},
  ): Promise<string> {
    const id = identifier ?? randomSecret(24);
    const h = normalizeHostPattern(host);
    const prev = h ? await this.registry.lookup(h) : undefined;
    if (prev !== undefined && opts.exclusive) throw new HostTakenError(h);
    await this.registry.addHost(host, id);
    this.#hostOrigins.set(h, opts.origin ?? "admin");
    this.#wildcards = this.#countWildcards();
    if (prev !== undefined && clientKey(prev) !== clientKey(id)) await this.#revoke(h, prev);
    for (const c of this.#members(clientKey(id))) if (!c.hosts.includes(h)) c.hosts.push(h);
    this.log.info("host added", {
      host: h,
      client: fingerprint(id),
      origin: opts.origin ?? "admin",
      ...(prev !== undefined ? { replaced: fingerprint(prev) } : {}),
    });
    return id;
  }

  #countWildcards(): number {
    let n = 0;
    for (const h of this.#hostOrigins.keys()) if (h.startsWith("*.")) n++;
    return n;
  }

  /** The live clients of `key` (a group's members; none when not connected). */
  #members(key: string): readonly ClientConn[] {
    return this.#clients.get(key)?.members ?? [];
  }

  /** Every live client (each group member). */
  *#allClients(): Iterable<ClientConn> {
    for (const g of this.#clients.values()) yield* g.members;
  }

  /** `host` was given to another identifier: its old clients lose it, and end if idle. */
  async #revoke(host: string, oldIdentifier: string): Promise<void> {
    for (const old of [...this.#members(clientKey(oldIdentifier))]) {
      old.hosts = old.hosts.filter((x) => x !== host);
      if (old.hosts.length > 0 || old.tcp.size > 0 || old.udp.size > 0) continue;
      this.log.info("client ended: its last host was given to another client", {
        client: old.fingerprint,
        cid: old.id,
        host,
      });
      await old.close("revoked");
    }
  }

  /** Stop serving `host`; false if it was not registered. */
  async removeHost(host: string): Promise<boolean> {
    const h = normalizeHostPattern(host);
    const ok = await this.registry.removeHost(h);
    this.#hostOrigins.delete(h);
    this.#wildcards = this.#countWildcards();
    for (const c of this.#allClients()) c.hosts = c.hosts.filter((x) => x !== h);
    for (const [key, c] of this.#claims) {
      if (c.host !== h) continue;
      this.#claims.delete(key);
      this.#opts.subdomains?.keep(h); // no release timer left for a host that is gone
      this.onClaimsChange?.();
    }
    if (ok) this.log.info("host removed", { host: h });
    return ok;
  }

  /**
   * The hosts, server-defined TCP and UDP tunnels and access rules set through the admin
   * API, with their secrets: what the state file keeps across restarts.
   */
  async adminRoutes(): Promise<{
    hosts: HostEntry[];
    tcp: TcpTunnelSpecServer[];
    udp: UdpTunnelSpecServer[];
    access: ({ host: string } & HostAccessSpec)[];
    rewrites: ({ host: string } & HostRewriteSpec)[];
  }> {
    const hosts = (await this.registry.listHosts()).filter((e) =>
      (this.#hostOrigins.get(e.host) ?? "admin") === "admin"
    );
    // Shared rules are kept by Redis (where they have no clear secrets): not in the file.
    const rules = this.#rules.shared ? undefined : this.#rules;
    const access = [...rules?.access ?? []].filter(([, a]) => a.origin === "admin" && a.spec)
      .map(([host, a]) => ({ host, ...a.spec }));
    const rewrites = [...rules?.rewrites ?? []].filter(([, r]) => r.origin === "admin")
      .map(([host, r]) => ({ host, ...r.spec }));
    const admin = (t: { origin?: RouteOrigin }) => t.origin === "admin";
    return {
      hosts,
      tcp: this.#tcp.specs().filter(admin),
      udp: this.#udp.specs().filter(admin),
      access,
      rewrites,
    };
  }

  /**
   * Check a client's identifier before upgrading its connection (constant time). With
   * `remote` and an `authLimiter`, a known identifier passes whatever failed before it from
   * that address, and an unknown one from an address past its budget is answered late.
   */
  async authenticate(identifier: string | undefined, remote?: string): Promise<AuthResult> {
    const limiter = remote !== undefined ? this.#opts.authLimiter : undefined;
    let known: boolean;
    try {
      known = await verifySecret(limiter, remote ?? "-", async () =>
        !!identifier &&
        (this.#tcp.names(clientKey(identifier)) || this.#udp.names(clientKey(identifier)) ||
          !!this.#opts.subdomains?.isAccount(identifier) ||
          await this.registry.isKnown(identifier)));
    } catch (err) {
      if (!(err instanceof RegistryUnavailableError)) throw err;
      this.log.warn("client refused: registry unavailable", { error: err.message });
      return "registry-unavailable";
    }
    if (!identifier) return "no-identifier";
    if (!known) return "unknown-identifier";
    if (this.duplicate === "refuse" && this.#clients.has(clientKey(identifier))) {
      return "identifier-connected";
    }
    return "ok";
  }

  /**
   * {@linkcode authenticate}, then the subdomain claim a client asked for (`wanted`: a DNS
   * label, or `*` for a random free one): an account token gets `wanted.<domain>` unless
   * another token holds it ("host-taken"), and its session runs under an identifier per
   * token and name (one token, several names at once). Without `wanted`, as today.
   */
  async admit(
    identifier: string | undefined,
    remote: string | undefined,
    wanted?: string,
  ): Promise<Admission> {
    const result = await this.authenticate(identifier, remote);
    if (wanted === undefined) {
      return result === "ok" ? { ok: true, identifier: identifier! } : {
        ok: false,
        reason: result,
      };
    }
    if (result !== "ok" && result !== "identifier-connected") return { ok: false, reason: result };
    const claims = this.#opts.subdomains;
    if (!claims) return { ok: false, reason: "no-domain" };
    if (!claims.isAccount(identifier!)) return { ok: false, reason: "not-an-account" };
    for (let tries = 0;; tries++) {
      const name = claims.nameFor(wanted);
      if (!name) return { ok: false, reason: "bad-subdomain" };
      const host = claims.hostOf(name);
      const derived = claimIdentifier(identifier!, name);
      const key = clientKey(derived);
      const owner = await this.registry.lookup(host);
      if (owner !== undefined && !sameIdentifier(owner, derived)) {
        if (wanted === "*" && tries < 8) continue;
        return { ok: false, reason: "host-taken" };
      }
      if (this.duplicate === "refuse" && this.#clients.has(key)) {
        return { ok: false, reason: "identifier-connected" };
      }
      if (owner === undefined) {
        try {
          await this.addHost(host, derived, { origin: "claim", exclusive: true });
        } catch (err) {
          // Claimed by another token in the meantime: as if it had been taken before.
          if (!(err instanceof HostTakenError)) throw err;
          if (wanted === "*" && tries < 8) continue;
          return { ok: false, reason: "host-taken" };
        }
        this.#claims.set(key, { host, account: accountDigest(identifier!) });
        this.log.info("subdomain claimed", { host, client: fingerprint(derived) });
      } else if (!this.#claims.has(key)) {
        // Its own name, claimed through another instance of the cluster (or before this one
        // restarted): kept here from now on, with its release when the client leaves.
        this.#adoptClaim(key, host, accountDigest(identifier!));
      }
      // Released after the handshake time and the grace period unless its session comes up
      // (attach stops the clock, and restarts it when the session ends or never came up).
      if (!this.#clients.has(key)) {
        this.#leaveClaim(key, Date.now(), defaultClientHandshakeTimeoutMs);
      }
      return { ok: true, identifier: derived };
    }
  }

  /**
   * Start the grace period of the claim of client `key` (if it has one): from now, or from
   * `leftAt` (a claim restored from the state file), `extraMs` later (an admitted client
   * still has to come up).
   */
  #leaveClaim(key: string, leftAt = Date.now(), extraMs = 0): void {
    const claim = this.#claims.get(key);
    const claims = this.#opts.subdomains;
    // Clients leaving because the server stops did not leave: their grace starts at the next
    // start (restoreClaim), so a server that was down longer than it gives no name away.
    if (claim === undefined || !claims || this.#closed) return;
    claim.leftAt = leftAt;
    const { host } = claim;
    claims.leave(
      host,
      () => void this.#releaseClaim(key, claim),
      Math.max(0, leftAt + claims.graceMs + extraMs - Date.now()),
    );
    this.onClaimsChange?.();
  }

  /**
   * The grace of `claim` is over: release its name, unless its client is back, here or (a
   * shared registry) on another instance, which kept the claim when it came.
   */
  async #releaseClaim(key: string, claim: ClaimRecord): Promise<void> {
    if (this.#clients.has(key) || this.#claims.get(key) !== claim) return;
    const { host } = claim;
    const heldElsewhere = async (identifier: string) => {
      const rec = await this.registry.getClient(identifier);
      return rec !== undefined && rec.instance !== this.#instance ? rec.instance : undefined;
    };
    try {
      const owner = await this.registry.lookup(host);
      const at = owner !== undefined ? await heldElsewhere(owner) : undefined;
      if (at !== undefined) {
        this.#claims.delete(key);
        this.log.info("subdomain claim left to the instance holding its client", {
          host,
          instance: at,
        });
        this.onClaimsChange?.();
        return;
      }
      if (this.#clients.has(key) || this.#claims.get(key) !== claim) return;
      // removeHost drops the claim too (and tells the state file).
      await this.removeHost(host);
      this.log.info("subdomain released", { host });
      // Its client came up on another instance between the look and the removal: give the
      // name back (that instance checks for its host after its lease, so one of us sees it).
      const token = this.#opts.subdomains?.accountByDigest(claim.account);
      const name = host.slice(0, host.indexOf("."));
      if (owner !== undefined && token !== undefined && await heldElsewhere(owner)) {
        await this.#reclaim(host, claimIdentifier(token, name));
      }
    } catch (err) {
      this.log.warn("subdomain release failed", { host, error: errorMessage(err) });
    }
  }

  /**
   * In a cluster: the claimed names whose client no instance holds and which no timer here
   * runs for (the instance that kept them died, or restarted without a state file) get their
   * grace from now, so they are released as if their client had just left. Every instance
   * looks; the release checks again, so several finding the same claim release it once.
   */
  async #sweepClaims(): Promise<void> {
    const claims = this.#opts.subdomains!;
    const suffix = `.${claims.domain}`;
    try {
      const kept = new Set([...this.#claims.values()].map((c) => c.host));
      for (const { host, identifier } of await this.registry.listHosts()) {
        if (this.#closed) return;
        if (!host.endsWith(suffix) || kept.has(host)) continue;
        const name = host.slice(0, -suffix.length);
        const token = isDnsLabel(name)
          ? claims.claimantOf(name, identifierDigest(identifier))
          : undefined;
        if (token === undefined || await this.registry.getClient(identifier)) continue;
        const key = clientKey(claimIdentifier(token, name));
        if (this.#claims.has(key)) continue;
        this.#adoptClaim(key, host, accountDigest(token));
        this.#leaveClaim(key);
      }
    } catch (err) {
      // Redis is down: the next look finds them.
      this.log.debug("claims not swept", { error: errorMessage(err) });
    }
  }

  /** Give `host`, released meanwhile, back to its claim `identifier` unless taken since. */
  async #reclaim(host: string, identifier: string): Promise<void> {
    try {
      await this.addHost(host, identifier, { origin: "claim", exclusive: true });
      this.log.info("subdomain claimed again for its client", { host });
    } catch (err) {
      if (!(err instanceof HostTakenError)) throw err;
      // Claimed by another token in between: the name is theirs now, as after any release.
      this.log.info("subdomain taken while its client moved", { host });
    }
  }

  /**
   * The subdomain claims held now (the state file keeps them, so a restart within their
   * grace period does not give a name away): no token, only its digest.
   */
  claimRecords(): ClaimRecord[] {
    return [...this.#claims.values()]
      .filter((c) => this.#hostOrigins.get(c.host) === "claim")
      .map((c) => ({ ...c }));
  }

  /**
   * Restore a claim from the state file: its account token must still be one of
   * `--account-token` and its host under `--domain`. Its grace period runs from `leftAt`
   * (from now when its client was connected: it reconnects after the restart); a claim past
   * it is not restored. Throws naming why it cannot be restored.
   */
  async restoreClaim(rec: ClaimRecord): Promise<void> {
    const claims = this.#opts.subdomains;
    if (!claims) throw new RangeError("no --domain: subdomain claims are not served");
    const suffix = `.${claims.domain}`;
    const name = rec.host.endsWith(suffix) ? rec.host.slice(0, -suffix.length) : "";
    if (!isDnsLabel(name)) {
      throw new RangeError(`not a name under --domain ${claims.domain}`);
    }
    const token = claims.accountByDigest(rec.account);
    if (token === undefined) throw new RangeError("its account token is no longer configured");
    const leftAt = rec.leftAt ?? Date.now();
    if (leftAt + claims.graceMs <= Date.now()) throw new RangeError("its grace period is over");
    const derived = claimIdentifier(token, name);
    const key = clientKey(derived);
    // A shared registry may hold it still (this instance restarted, the cluster did not).
    const owner = await this.registry.lookup(rec.host);
    if (owner !== undefined && sameIdentifier(owner, derived)) {
      this.#adoptClaim(key, rec.host, rec.account);
    } else {
      await this.addHost(rec.host, derived, { origin: "claim", exclusive: true });
      this.#claims.set(key, { host: rec.host, account: rec.account });
    }
    this.#leaveClaim(key, leftAt);
  }

  /** Keep the claim of `host`, which the registry holds already, as this instance's. */
  #adoptClaim(key: string, host: string, account: string): void {
    this.#hostOrigins.set(host, "claim");
    this.#claims.set(key, { host, account });
    this.log.info("subdomain claim kept here", { host });
  }

  /**
   * Set (or with `undefined`, clear) the access rules of the entry `host` (a wildcard entry
   * covers its names): on every instance of a cluster sharing {@linkcode HostRules}. Throws
   * HostAccessError on a bad rule, RegistryUnavailableError when Redis is down.
   */
  async setAccess(
    host: string,
    spec: HostAccessSpec | undefined,
    origin: RouteOrigin = "admin",
  ): Promise<void> {
    const h = normalizeHostPattern(host);
    if (!h) throw new RangeError(`bad host name: ${JSON.stringify(host)}`);
    await this.#rules.setAccess(h, spec, origin);
    const info = this.accessInfo(h);
    this.log.info(info ? "host access set" : "host access cleared", {
      host: h,
      ...(info ? { basic: info.basic, bearer: info.bearer, allow: info.allow.join(",") } : {}),
    });
  }

  /** The access rules of the entry `host` (no secrets), if any. */
  accessInfo(host: string): HostAccessInfo | undefined {
    return this.#rules.access.get(normalizeHostPattern(host))?.rule.info();
  }

  /**
   * Whether a public request routed to the entry `target.host` and its client (the one
   * {@linkcode route} chose, or the one of a kept-alive stream) from `ip` with this
   * Authorization may reach it; the refusal to answer otherwise. The entry's rules (flags,
   * admin API) win; else those the client set in its handshake. Free when no host and no
   * client has rules.
   */
  checkAccess(
    target: { host: string; client?: ClientConn },
    authorization: string | undefined,
    ip: string,
  ): AccessDenied | undefined {
    const rules = this.#rules.access;
    if (rules.size === 0 && this.#clientAccess === 0) return undefined;
    return (rules.get(target.host)?.rule ?? target.client?.access)?.check(authorization, ip);
  }

  /**
   * Set (or with `undefined`, clear) the header rewrites of the entry `host`; throws
   * RewriteError on a bad rule. Logged with header names only (values may be credentials).
   */
  async setRewrite(
    host: string,
    spec: HostRewriteSpec | undefined,
    origin: RouteOrigin = "admin",
  ): Promise<void> {
    const h = normalizeHostPattern(host);
    if (!h) throw new RangeError(`bad host name: ${JSON.stringify(host)}`);
    await this.#rules.setRewrite(h, spec, origin);
    const info = this.rewriteInfo(h);
    this.log.info(info ? "host rewrite set" : "host rewrite cleared", {
      host: h,
      ...(info
        ? {
          hostHeader: info.host,
          request: [...info.request.set, ...info.request.add, ...info.request.remove].join(","),
          response: [...info.response.set, ...info.response.add, ...info.response.remove]
            .join(","),
        }
        : {}),
    });
  }

  /** The header rewrites of the entry `host` (names, no values), if any. */
  rewriteInfo(host: string): HostRewriteInfo | undefined {
    return this.#rules.rewrites.get(normalizeHostPattern(host))?.rule.info();
  }

  /**
   * The header rewrites of a routed request: its client's own (from its handshake), then the
   * entry's (flags, admin API), which win where both touch a header. Undefined: none.
   */
  rewriteOf(route: { host: string; client: ClientConn }): HostRewrite | undefined {
    const rules = this.#rules.rewrites;
    const entry = rules.size ? rules.get(route.host)?.rule : undefined;
    const own = route.client.rewrite;
    return own ? own.then(entry) : entry;
  }

  /** Counters of `host` (created on first use). */
  hostStats(host: string): HostStats {
    return this.stats.host(host);
  }

  /** Counters of every host seen so far. */
  allHostStats(): [string, HostStats][] {
    return this.stats.hosts();
  }

  /** Count one request to `host` with its outcome ("proxied", "404", "502", ...). */
  countRequest(host: string, outcome: string): void {
    this.stats.countRequest(host, outcome);
  }

  /**
   * Count relayed bytes of `host` that did not go through a {@linkcode TunnelStream} (which
   * counts its own).
   */
  countBytes(host: string, inBytes: number, outBytes: number): void {
    const s = this.stats.host(host);
    s.bytesIn += inBytes;
    s.bytesOut += outBytes;
  }

  /**
   * Find the connected client serving `host` (a Host header value or a bare name): its own
   * entry, else the nearest wildcard entry (`a.b.example.com`: `*.b.example.com`, then
   * `*.example.com`). The route's `host` is the entry (a wildcard's requests are counted
   * under its pattern, so random names cannot grow the per-host counters).
   */
  async route(host: string): Promise<Route> {
    const h = normalizeHost(host);
    let entry = h;
    let identifier: string | undefined;
    let client: ClientConn | undefined;
    // A shared registry (a cluster) holds wildcards added through the other instances too.
    const walk = this.#wildcards > 0 || this.registry.instance !== undefined;
    try {
      identifier = h ? await this.registry.route(h) : undefined;
      for (let i = h.indexOf("."); identifier === undefined && walk && i > 0;) {
        entry = `*${h.slice(i)}`;
        identifier = await this.registry.route(entry);
        i = h.indexOf(".", i + 1);
      }
      if (identifier === undefined) return { ok: false, status: 404, host: h };
      client = this.#clients.get(clientKey(identifier))?.pick(this.balance);
      if (!client && this.remoteClient) client = await this.remoteClient(identifier);
    } catch (err) {
      // In a cluster, Redis down: which client serves the host, or where it is, cannot be
      // told now (not "no such host", not "no client").
      if (!(err instanceof RegistryUnavailableError)) throw err;
      return { ok: false, status: 503, host: entry };
    }
    if (!client || !client.ready) return { ok: false, status: 502, host: entry };
    return { ok: true, host: entry, client };
  }

  /**
   * Open a tunnel stream to `client`: the ControlMsg (with a fresh request id) and
   * `firstData` ride in the stream's SYN frame. Call `reply()` on the result next.
   * `serverPort` marks a server-defined TCP or UDP tunnel (sent as the message's `publicPort`).
   */
  async openStream(
    client: ClientConn,
    host: string,
    transportProtocol: TransportProtocol,
    localPort: string,
    firstData?: Uint8Array,
    serverPort?: number,
    members?: ClientGroup,
  ): Promise<TunnelStream> {
    const requestId = `${this.#instance}.${++this.#nextRequest}`;
    const msg = encodeMessage({
      type: "controlMsg",
      action: "RequestClientSession",
      transportProtocol,
      localPort,
      requestId,
      ...(serverPort !== undefined ? { publicPort: serverPort } : {}),
    });
    const open = (c: ClientConn, fin = false): Promise<Stream> => {
      const head = c.streamPrefix ? concatBytes(c.streamPrefix, msg) : msg;
      return c.session.open({ data: firstData ? concatBytes(head, firstData) : head, fin });
    };
    // A group's member that cannot take the request hands it to the next one: for a TCP or
    // UDP port, the next of the members that serve it.
    const group = transportProtocol === "http" ? this.#clients.get(client.key) : members;
    const reopen = group && group.members.length > 1
      ? this.#reopener(group, host, open)
      : undefined;
    let stream: Stream;
    try {
      stream = await open(client);
    } catch (err) {
      const next = await reopen?.(client, false);
      if (!next) {
        throw new TunnelError("closed", `cannot open a stream: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      ({ stream, client } = next);
    }
    return new TunnelStream(
      stream,
      requestId,
      host,
      this.stats.host(host),
      firstData?.length,
      client,
      reopen,
    );
  }

  /** Opens a request again on the group's members not tried yet, each once. */
  #reopener(
    group: ClientGroup,
    host: string,
    open: (c: ClientConn, fin: boolean) => Promise<Stream>,
  ): StreamReopen {
    const tried = new Set<ClientConn>();
    return async (failed, fin) => {
      tried.add(failed);
      this.log.debug("request passed to the next group member", { host, cid: failed.id });
      for (let c; (c = group.pick(this.balance, tried));) {
        try {
          return { stream: await open(c, fin), client: c };
        } catch {
          tried.add(c); // its session is over: the next member
        }
      }
      return undefined;
    };
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
    const key = clientKey(identifier);
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
    // A claimed name is not released while its session comes up (see the finally below).
    const claim = this.#claims.get(key);
    if (claim) this.#opts.subdomains?.keep(claim.host);
    const session = Session.server(transport, {
      keepaliveIntervalMs: this.#opts.heartbeatIntervalMs ?? defaultHeartbeatIntervalMs,
      keepaliveTimeoutMs: this.#opts.heartbeatTimeoutMs ?? defaultHeartbeatTimeoutMs,
      drainTimeoutMs: 2_000,
      ...this.#opts.mux,
    });
    const client = new ClientConn(++this.#nextClient, fp, remote, session, key);
    let countedAccess = false;
    // The previous client of this identifier keeps serving until the new one has done its
    // handshake; then it is told "replaced" and closed, and the new one takes its place
    // ("balance": the new one joins it instead).
    const takeOver = async (): Promise<boolean> => {
      let group = this.#clients.get(key);
      // A loop: another newcomer may register while the previous one is being closed; it is
      // replaced too, or it would keep a session that no request ever reaches (and that
      // believes it is connected) while this one overwrote its entry.
      while (group && this.duplicate !== "balance") {
        if (this.duplicate === "refuse") return false;
        for (const prev of group.members) {
          this.log.info("client replaced by a new connection", {
            client: fp,
            old: prev.id,
            remote,
          });
        }
        this.#clients.delete(key);
        await Promise.all(group.members.map((prev) => prev.close("replaced")));
        group = this.#clients.get(key);
      }
      // The server closed during the handshake: close() did not see this client, so taking
      // it now would leave its session alive on a closed server.
      if (this.#closed) return false;
      if (!group) this.#clients.set(key, group = new ClientGroup());
      group.add(client);
      // Counted as it becomes routable: checkAccess skips every check while the count is 0,
      // and counted after the registry writes below, its first requests went unchecked.
      if (client.access) {
        this.#clientAccess++;
        countedAccess = true;
      }
      return true;
    };
    const log = this.log.child({ client: fp, cid: client.id });
    const healthLog = new HealthLog(log);
    try {
      const control = await this.#handshake(client, identifier, log, takeOver);
      if (!control) return;
      await this.registry.setClient(identifier, this.#record(client));
      const claimed = this.#claims.get(key);
      if (claimed !== undefined) {
        this.#opts.subdomains?.keep(claimed.host);
        delete claimed.leftAt;
        this.onClaimsChange?.();
        // Released by the instance it came from, its grace over as it came here: claim it
        // again (after the lease, so that instance's second look finds it otherwise).
        if (this.registry.instance && (await this.registry.lookup(claimed.host)) === undefined) {
          await this.#reclaim(claimed.host, identifier).catch((err) =>
            log.warn("subdomain not claimed again", { error: errorMessage(err) })
          );
        }
      }
      this.clientEvents.connected++;
      const members = this.#members(key).length;
      log.info("client connected", {
        remote,
        hosts: client.hosts.join(","),
        ...(members > 1 ? { members } : {}),
        ...(client.healthy ? {} : { health: "waiting for its first check" }),
        ...(certName === undefined ? {} : { cert: certName }),
      });
      // Live until the session dies (go away, heartbeat timeout, transport EOF) or the
      // client closes its control stream.
      const controlDone = (async () => {
        try {
          let m;
          while ((m = await readMessage(control)) !== null) {
            // Other types after the handshake are ignored for forward compatibility.
            if (m.type === "health") this.#health(client, m.ok, m.error, healthLog);
          }
        } catch (err) {
          log.debug("control stream ended", { error: errorMessage(err) });
        }
      })();
      const refuseStreams = (async () => {
        // Clients never open streams after the control stream: reset any that arrive.
        while (true) {
          // A failed accept means the session is over: nothing left to refuse.
          const s = await session.accept().catch(() => null);
          if (s === null) return;
          s.reset();
        }
      })();
      // The control stream usually ends together with the session: give the mux a moment to
      // settle why (heartbeat timeout, transport cut, go away) before logging it.
      let end = await Promise.race([session.closed, controlDone.then(() => undefined)]);
      if (!end) {
        // The client is leaving. Our side of the control stream too, and the fronts' idle
        // streams, or its session's drain waits for them and then resets them (and so its
        // app's kept-alive connections).
        if (client.control) closeQuietly(client.control);
        client.dropIdle();
        end = await sessionEndWithin(session, sessionEndWaitMs);
      }
      const r = sessionEndReport(end, client.endCause);
      log[r.level]("client disconnected", {
        end: r.reason,
        why: r.why,
        error: r.error,
        remote,
        ms: Date.now() - client.since,
      });
      void refuseStreams; // never rejects: a failed accept ends it
    } catch (err) {
      log.warn("client session failed", { error: errorMessage(err) });
    } finally {
      const group = this.#clients.get(key);
      if (group?.remove(client)) {
        const next = group.first;
        if (!next) this.#clients.delete(key);
        await this.registry.setClient(identifier, next && this.#record(next)).catch(() => {
          // A registry outage must not keep a dead client around locally.
        });
        if (next) log.info("group member left", { members: group.members.length });
      }
      // No session of this identifier is left (it ended, or never came up): the grace starts.
      if (!this.#clients.has(key)) this.#leaveClaim(key);
      this.clientEvents.disconnected++;
      healthLog.close();
      if (countedAccess) this.#clientAccess--;
      await client.close();
      await this.#tcp.releaseAll(client);
      await this.#udp.releaseAll(client);
    }
  }

  /** Where `client` is, for the registry. */
  #record(client: ClientConn): ClientRecord {
    return {
      fingerprint: client.fingerprint,
      clientId: client.id,
      instance: this.#instance,
      remote: client.remote,
      since: client.since,
    };
  }

  /** A client's health check changed its verdict: it leaves or rejoins the rotation. */
  #health(client: ClientConn, ok: boolean, error: string | undefined, log: HealthLog): void {
    if (client.healthy === ok) return;
    client.healthy = ok;
    const group = this.#clients.get(client.key);
    const fields = { usable: group?.usableCount ?? 0, members: group?.members.length ?? 0 };
    log.transition(ok, ok ? fields : { ...fields, error });
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
      // The client's own rules for its hosts: checked before it takes over from anyone. A
      // group's members must all send the same (else the host's protection would depend on
      // the member a request lands on).
      let refused: { failure: string; error: string } | undefined;
      try {
        if (req.access) client.access = new HostAccess(req.access);
        if (req.rewrite) client.rewrite = new HostRewrite(req.rewrite as HostRewriteSpec);
        client.rulesDigest = rulesDigest(req.access, req.rewrite);
        const first = this.#clients.get(client.key)?.first;
        if (
          this.duplicate === "balance" && first && first.rulesDigest !== client.rulesDigest
        ) {
          refused = {
            failure: "group-rules-differ",
            error: "this host's group serves with other access rules or header rewrites of " +
              "its clients: every member must send the same",
          };
        }
      } catch (err) {
        refused = { failure: "bad-rules", error: errorMessage(err) };
      }
      if (refused) {
        // The reason names the rule, never a credential or a header value.
        log.warn("client refused", refused);
        const refusal: Outgoing<HandshakeResponse> = {
          type: "handshakeResponse",
          ok: false,
          hosts: [],
          tcp: [],
          error: `rules refused: ${refused.error}`,
        };
        await writeAll(control, encodeMessage(refusal))
          .then(() => control.closeWrite())
          .catch(() => {
            // The client left already: nobody to tell.
          });
        // Let the client read it and hang up first (a go away now could overtake it there).
        await sessionEndWithin(client.session, sessionEndWaitMs);
        return null;
      }
      if (!(await takeOver())) {
        log.warn(
          this.#closed ? "client refused: the server is closing" : "duplicate client refused",
        );
        return null;
      }
      client.hosts = await this.registry.hostsOf(identifier);
      if (req.healthCheck) client.healthy = false;
      // A group's members share its TCP/UDP ports (port_tunnels.ts).
      const tcp = await this.#tcp.openFor(client, identifier, req.tcp, log);
      const udp = await this.#udp.openFor(client, identifier, req.udp, log);
      // The server's own rules of a host win over the client's: say so.
      const notes = client.access
        ? client.hosts.filter((h) => this.#rules.access.has(h)).map((h) =>
          `${h} has access rules on the server: they apply instead of this client's`
        )
        : [];
      const resp: Outgoing<HandshakeResponse> = {
        type: "handshakeResponse",
        ok: true,
        hosts: client.hosts,
        tcp,
        ...(udp.length > 0 ? { udp } : {}),
        ...(notes.length ? { notes: notes.slice(0, 16) } : {}),
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
   * Rejects with {@linkcode PortTunnelError}: "bad-request" (not a port, empty identifier),
   * "not-allowed" (outside `tcpPorts`), "in-use" (defined already, held by a client's own
   * tunnel, or bound by another program).
   */
  addTcpTunnel(spec: TcpTunnelSpecServer): Promise<TcpTunnelInfo> {
    return this.#tcp.add(spec, (key) => this.#members(key));
  }

  /**
   * Define a UDP tunnel on the server side (admin API, `--udp`), as
   * {@linkcode addTcpTunnel} does for TCP: `publicPort` (inside `udpPorts`) is bound while
   * the client is connected, and each peer's datagrams go to its `localPort` as one flow.
   */
  async addUdpTunnel(spec: UdpTunnelSpecServer): Promise<UdpTunnelInfo> {
    return this.#udp.describe(await this.#udp.add(spec, (key) => this.#members(key)));
  }

  /** Remove a server-defined UDP tunnel and close its port; false if there was none. */
  removeUdpTunnel(publicPort: number): Promise<boolean> {
    return this.#udp.remove(publicPort);
  }

  /** Every UDP tunnel with its flows and datagram counters. No secrets. */
  udpTunnels(): UdpTunnelInfo[] {
    return this.#udp.list();
  }

  /** Remove a server-defined TCP tunnel and close its port; false if there was none. */
  removeTcpTunnel(publicPort: number): Promise<boolean> {
    return this.#tcp.remove(publicPort);
  }

  /** Every TCP tunnel: server-defined ones (open or waiting for their client) and the ones
   * clients asked for. No secrets. */
  tcpTunnels(): TcpTunnelInfo[] {
    return this.#tcp.list();
  }

  /**
   * Where clients held by other cluster instances are found (lib/tunnel/cluster.ts sets it):
   * `route()` asks it when no local client serves a host. Throws RegistryUnavailableError
   * when where the client is cannot be told now (`route()`: 503).
   */
  remoteClient?: (identifier: string) => Promise<ClientConn | undefined>;

  /**
   * In a cluster: the claims through which the ports clients ask for span every instance
   * (set by {@linkcode attachPortClaims}).
   */
  portClaims?: PortClaims;
  #claimsOff?: () => void;

  /**
   * Make the ports clients ask for span the cluster (lib/tunnel/cluster.ts): claimed in
   * `claims`, bound here whenever claimed anywhere. `undefined` stops following the claims.
   */
  attachPortClaims(claims: PortClaims | undefined): void {
    this.#claimsOff?.();
    this.#claimsOff = undefined;
    this.portClaims = claims;
    if (!claims) return;
    this.#claimsOff = claims.onChange((list, startedMs) => {
      for (const ports of [this.#tcp, this.#udp]) {
        ports.syncClaims(list, startedMs).catch((err) =>
          this.log.warn(`${ports.protocol} ports not synced with the cluster's claims`, {
            error: errorMessage(err),
          })
        );
      }
    });
    void claims.rescan();
  }

  /** Whether this server is a cluster instance (lib/tunnel/cluster.ts attached it). */
  get clustered(): boolean {
    return this.remoteClient !== undefined;
  }

  /**
   * The ready client of `identifier`: held here (a group's next member in turn), else, in a
   * cluster, held by another instance (reached over the link).
   */
  async anyClient(identifier: string): Promise<ClientConn | undefined> {
    let c = this.localClient(identifier);
    try {
      c ??= await this.remoteClient?.(identifier);
    } catch (err) {
      // A port's connection has no status to tell "cannot be told now": refused as no-client.
      if (!(err instanceof RegistryUnavailableError)) throw err;
    }
    return c?.ready ? c : undefined;
  }

  /**
   * The ready local client of `identifier` (a group's next member in turn), if it is
   * connected here.
   */
  localClient(identifier: string): ClientConn | undefined {
    return this.#clients.get(clientKey(identifier))?.pick(this.balance);
  }

  /** Connected clients, each group member on its own (no secrets). */
  clients(): ClientInfo[] {
    return [...this.#allClients()].filter((c) => c.ready).map((c) => c.info());
  }

  /** Status per registered host: connected client, counters. */
  async status(): Promise<HostStatus[]> {
    const out: HostStatus[] = [];
    for (const { host, identifier } of await this.registry.listHosts()) {
      const members = this.#members(clientKey(identifier)).filter((c) => c.ready);
      const c = members[0] as ClientConn | undefined; // a group's members set the same rules
      out.push({
        host,
        client: fingerprint(identifier),
        connected: members.length > 0,
        members: members.length,
        healthy: members.filter((c) => c.healthy).length,
        origin: this.#hostOrigins.get(host) ?? "admin",
        ...(this.#rules.access.has(host)
          ? { access: this.#rules.access.get(host)!.rule.info() }
          : c?.ready && c.access
          ? { access: { ...c.access.info(), from: "client" as const } }
          : {}),
        ...(this.#rules.rewrites.has(host)
          ? { rewrite: this.#rules.rewrites.get(host)!.rule.info() }
          : {}),
        ...(c?.ready && c.rewrite ? { clientRewrite: c.rewrite.info() } : {}),
        ...this.hostStats(host),
      });
    }
    return out;
  }

  #config?: TunnelConfigApplier;

  /**
   * Make the config-defined hosts and TCP tunnels `cfg` (start and reload): only what changed
   * is touched, hosts and tunnels added through the admin API stay (lib/tunnel/config.ts).
   */
  applyConfig(cfg: TunnelConfig): Promise<TunnelConfigResult> {
    return (this.#config ??= new TunnelConfigApplier(this)).apply(cfg);
  }

  /** Close every client session and TCP tunnel. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    this.attachPortClaims(undefined);
    this.#opts.subdomains?.close();
    liveTunnelServers.delete(this);
    await Promise.allSettled([this.#tcp.close(), this.#udp.close()]);
    const all = [...this.#allClients()];
    await Promise.allSettled(all.map((c) => c.close("shutdown")));
    await Promise.allSettled(all.map((c) => c.session.closed));
  }
}
