/**
 * Ports a client asks for in its own handshake, across a tunnel-server cluster (issue 19).
 * The instance holding the client claims the port in Redis as a lease of its own (refreshed
 * with its heartbeat, like a client's), and every instance binds the port while a claim
 * for it lives: connections and datagrams reaching any instance go to the holder over the
 * cluster link, as those of a server-defined port do (port_tunnels.ts).
 *
 * - A claim names the client by its identifier's digest: the same client may take it over
 *   from another instance (it reconnected there, its old instance dead or not), another
 *   client is refused with the holder's name.
 * - The holder releases it when its client leaves; the lease of a killed instance expires
 *   within `leaseMs`. Either way every instance stops the port at its next look.
 * - A claim gone from Redis without its release notice (Redis restarted empty, or an outage
 *   outlived the lease) is kept for one more `leaseMs` from the first scan that missed it: a
 *   live holder writes it back at once when Redis returns (as it does its host and client
 *   leases), so the other instances keep the port and its connections meanwhile. One still
 *   missing then has no holder left (or its release notice was lost): it is dropped.
 * - Instances learn of claims from a `p:<proto>:<port>` change notice (pub/sub, sent on every
 *   claim; `p:-<proto>:<port>` on a release) and from a scan of the claims every heartbeat,
 *   which also finds the leases that expired (Redis sends no notice for those).
 *
 * Keys, under the registry's prefix: `port:<proto>:<port>` (lease: JSON {@linkcode PortClaim})
 * and `ports` (set of `<proto>:<port>`: the claims' index).
 * @module
 */

import type { Logger } from "../log.ts";
import { errorMessage } from "../net/mod.ts";
import { type LeaseClient, refreshLease } from "../cluster/lease.ts";
import { digestRef, identifierDigest } from "./registry.ts";
import type { RegistryExtension } from "./redis_registry.ts";

/** The protocol of a claimed port (the same as port_tunnels.ts `PortProtocol`). */
export type ClaimProtocol = "tcp" | "udp";

/** One claim as Redis keeps it: which client's, held by which instance. */
export interface PortClaim {
  /** "tcp" or "udp". */
  proto: ClaimProtocol;
  /** The public port. */
  port: number;
  /** SHA-256 hex digest of the client's identifier. */
  client: string;
  /** Its first 12 hex digits, for logs and the admin API. */
  fingerprint: string;
  /** The instance holding the client (the lease's holder). */
  instance: string;
}

/** What {@linkcode PortClaims} needs of the registry (a RedisRegistry). */
export interface ClaimRegistry {
  /** This instance's name (the holder a claim names). */
  readonly instance: string;
  /** Lifetime of a claim not refreshed (the registry's leases'). */
  readonly leaseMs: number;
  /** The Redis connection. */
  readonly redis: LeaseClient;
  /** `name` under the registry's key prefix. */
  key(name: string): string;
  /** Announce change `what` to every instance (this one included). */
  notify(what: string): Promise<void>;
  /** The identifier of digest `d` when this process has seen it. */
  knownIdentifier(d: string): string | undefined;
}

/** Every claim of the cluster, read from Redis from `startedMs` (performance.now()) on. */
export type ClaimsListener = (claims: PortClaim[], startedMs: number) => void;

// The set `ports` indexes the claims (`<proto>:<port>`), so reading them costs one call
// however many other keys the registry has; an index entry whose lease expired is dropped
// when the claims are read.
// Atomic claim: nil when taken (new, or the same client's from any instance), else the
// value of the other client's claim.
const claimScript = `local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur).client ~= ARGV[3] then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
return false`;
// Atomic release: only this instance's claim for this client.
const releaseScript = `local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if c.instance ~= ARGV[1] or c.client ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[3])
return 1`;
// Every live claim; index entries of expired leases are dropped.
const listScript = `local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. m)
  if v then table.insert(out, v) else redis.call('SREM', KEYS[1], m) end
end
return out`;
const indexScript = `redis.call('SADD', KEYS[1], ARGV[1])`;

/**
 * The port claims of one instance, and the cluster's as it last read them: an extension of
 * the registry (`registry.extend(claims)`), which hands it the `p:` notices and a `sync`
 * every heartbeat.
 */
export class PortClaims implements RegistryExtension {
  /** Prefix of its change notices. */
  readonly noticePrefix = "p:";
  readonly #reg: ClaimRegistry;
  readonly #log: Logger;
  /**
   * Claims of clients held here (refreshed every heartbeat while ours), by `proto:port`; a
   * claim held here stays while its clients do, even when another instance took it over.
   */
  #held = new Map<string, PortClaim>();
  /**
   * Of those, the ones another instance holds now (a group member there claimed it, or the
   * client reconnected there while its old session here lingers): written back only when that
   * claim is gone, as a client's lease in standby is.
   */
  #standby = new Set<string>();
  #listeners = new Set<ClaimsListener>();
  /** A scan is running / another one was asked for meanwhile. */
  #scanning: Promise<void> | undefined;
  #again = false;
  /**
   * Every claim of the last scan by `proto:port`, with the start of the first scan that
   * missed it (undefined while Redis has it): see the module doc.
   */
  #seen = new Map<string, { claim: PortClaim; missingSinceMs?: number }>();
  /** Release notices by `proto:port`, when they came (forgotten at the next scan's start). */
  #releasedMs = new Map<string, number>();

  /** Claims kept in `registry`'s Redis; events go to `log`. */
  constructor(registry: ClaimRegistry, log: Logger) {
    this.#reg = registry;
    this.#log = log;
  }

  #key(proto: ClaimProtocol, port: number): string {
    return this.#reg.key(`port:${proto}:${port}`);
  }

  /**
   * Claim `port` for the client of `identifier`, held here: `ok` with our claim, or not with
   * the other client's. Throws when Redis cannot be reached.
   */
  async claim(
    proto: ClaimProtocol,
    port: number,
    identifier: string,
  ): Promise<{ ok: boolean; claim: PortClaim }> {
    const d = identifierDigest(identifier);
    const claim: PortClaim = {
      proto,
      port,
      client: d,
      fingerprint: d.slice(0, 12),
      instance: this.#reg.instance,
    };
    const other = await this.#reg.redis.eval(claimScript, {
      keys: [this.#key(proto, port), this.#reg.key("ports")],
      arguments: [JSON.stringify(claim), String(this.#reg.leaseMs), d, `${proto}:${port}`],
    });
    if (typeof other === "string") return { ok: false, claim: JSON.parse(other) as PortClaim };
    this.#held.set(`${proto}:${port}`, claim);
    this.#standby.delete(`${proto}:${port}`);
    await this.#reg.notify(`p:${proto}:${port}`);
    return { ok: true, claim };
  }

  /** The client of `identifier` left: release its claim of `port` if this instance holds it. */
  async release(proto: ClaimProtocol, port: number, identifier: string): Promise<void> {
    const held = this.#held.get(`${proto}:${port}`);
    const d = identifierDigest(identifier);
    if (held?.client === d) {
      this.#held.delete(`${proto}:${port}`);
      this.#standby.delete(`${proto}:${port}`);
    }
    const n = await this.#reg.redis.eval(releaseScript, {
      keys: [this.#key(proto, port), this.#reg.key("ports")],
      arguments: [this.#reg.instance, d, `${proto}:${port}`],
    });
    if (n === 1) await this.#reg.notify(`p:-${proto}:${port}`);
  }

  /** The identifier of a claim's client (its secret when known here: a local client's). */
  identifierOf(claim: PortClaim): string {
    return this.#reg.knownIdentifier(claim.client) ?? digestRef(claim.client);
  }

  /** Every live claim of the cluster; throws when Redis cannot be reached. */
  async list(): Promise<PortClaim[]> {
    const values = await this.#reg.redis.eval(listScript, {
      keys: [this.#reg.key("ports")],
      arguments: [this.#reg.key("port:")],
    });
    return Array.isArray(values)
      ? values.filter((v): v is string => typeof v === "string").map((v) =>
        JSON.parse(v) as PortClaim
      )
      : [];
  }

  /**
   * Call `fn` with every claim after each scan (a notice, a heartbeat, `rescan()`); returns
   * the function that stops it.
   */
  onChange(fn: ClaimsListener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** A change notice for a port (from any instance): read the claims again. */
  notice(msg: string): void {
    const what = msg.slice(this.noticePrefix.length);
    if (what.startsWith("-")) this.#releasedMs.set(what.slice(1), performance.now());
    void this.rescan();
  }

  /** Heartbeat (and notices back after an outage): {@linkcode refresh}; never throws. */
  async sync(): Promise<void> {
    try {
      await this.refresh();
    } catch (err) {
      // Redis is down (the registry logs the outage): the next beat tries again.
      this.#log.debug("port claims not refreshed", { error: errorMessage(err) });
    }
  }

  /** Read the claims and tell the listeners (one scan at a time; one more if asked meanwhile). */
  rescan(): Promise<void> {
    if (this.#listeners.size === 0) return Promise.resolve();
    if (this.#scanning) {
      this.#again = true;
      return this.#scanning;
    }
    this.#scanning = (async () => {
      do {
        this.#again = false;
        const startedMs = performance.now();
        let claims: PortClaim[];
        try {
          claims = await this.list();
        } catch (err) {
          // Redis is down: ports stay as they are; the heartbeat after it returns reads again.
          this.#log.debug("port claims not read", { error: errorMessage(err) });
          continue;
        }
        // A claim of clients held here is gone (another instance released it, or an outage
        // outlived its lease): written back now rather than at the next beat.
        const live = new Set(claims.map((c) => `${c.proto}:${c.port}`));
        claims = this.#withMissing(claims, startedMs);
        for (const fn of this.#listeners) fn(claims, startedMs);
        if ([...this.#held.keys()].some((k) => !live.has(k))) void this.sync();
      } while (this.#again);
    })().finally(() => this.#scanning = undefined);
    return this.#scanning;
  }

  /**
   * `claims` as read at `startedMs`, plus those of the previous scans Redis lost without a
   * release notice, while they may still be written back (see the module doc).
   */
  #withMissing(claims: PortClaim[], startedMs: number): PortClaim[] {
    const seen = this.#seen;
    this.#seen = new Map(claims.map((c) => [`${c.proto}:${c.port}`, { claim: c }]));
    const out = [...claims];
    for (const [k, s] of seen) {
      if (this.#seen.has(k)) continue;
      // Its holder released it (the notice came since the previous scan started).
      const released = this.#releasedMs.has(k);
      const since = s.missingSinceMs ?? startedMs;
      if (released || startedMs - since >= this.#reg.leaseMs) continue;
      if (s.missingSinceMs === undefined) {
        this.#log.info(
          "port claim gone from Redis unreleased: kept while its holder may write it back",
          {
            port: k,
            holder: s.claim.instance,
            client: s.claim.fingerprint,
          },
        );
      }
      this.#seen.set(k, { claim: s.claim, missingSinceMs: since });
      out.push(s.claim);
    }
    for (const [k, ms] of this.#releasedMs) if (ms <= startedMs) this.#releasedMs.delete(k);
    return out;
  }

  /**
   * Heartbeat: refresh the claims held here (one that another instance took is left to it
   * while it lasts), then read every claim. Throws when Redis is unreachable.
   */
  async refresh(): Promise<void> {
    for (const [k, claim] of this.#held) {
      const r = await refreshLease(
        this.#reg.redis,
        this.#key(claim.proto, claim.port),
        JSON.stringify(claim),
        this.#reg.leaseMs,
        this.#reg.instance,
      );
      if (r === "not-ours") {
        if (!this.#standby.has(k)) {
          this.#standby.add(k);
          this.#log.info("port now claimed by another instance", {
            port: k,
            client: claim.fingerprint,
          });
        }
        continue;
      }
      if (this.#standby.delete(k)) {
        this.#log.info("port claimed here again", { port: k, client: claim.fingerprint });
      }
      if (r === "written-back") {
        // Gone (Redis restarted empty, or an outage outlived the lease): indexed again.
        await this.#reg.redis.eval(indexScript, { keys: [this.#reg.key("ports")], arguments: [k] });
        await this.#reg.notify(`p:${k}`);
      }
    }
    void this.rescan();
  }
}
