/**
 * The host registry in Redis, shared by several tunnel-server instances (issue 19): hosts,
 * identifiers as SHA-256 digests (the secret itself never leaves the process), and which
 * instance holds each client as a lease the holder refreshes every heartbeat, so an instance
 * that dies loses its clients within `leaseMs`.
 *
 * Client: `@redis/client`, the core of node-redis (Redis Inc.'s maintained client; the
 * `redis` package is it plus module commands we do not use). It reconnects by itself, and
 * with the offline queue off a command during an outage fails at once instead of waiting.
 *
 * Redis unreachable: lookups answer from the last copy of the hosts (read every heartbeat,
 * kept up by the change notices), so held clients keep serving; a host the copy lacks is asked
 * of the peers ({@linkcode RedisRegistry.askPeersForHost}, set by cluster.ts); `isKnown`/`addHost`/`setClient` throw
 * {@linkcode RegistryUnavailableError} (new registrations are refused with that reason).
 * When Redis returns, each heartbeat rewrites the held leases (at once on reconnecting), and
 * when the instance's own key was gone (Redis restarted empty, or this instance was cut off
 * beyond its lease) it writes back the hosts added through it too; a lookup of one of those
 * meanwhile waits for that write-back rather than answer that the host does not exist.
 * The others' write-backs come within {@linkcode settleMs} of that: meanwhile a host missing from
 * Redis is routed by the copy read before the loss, and a lease missing can be waited for
 * ({@linkcode RedisRegistry.awaitWriteBack}), so neither answers 404 or no-client for a client
 * that is still connected. The wait ends sooner once every instance live before the loss has
 * written its record back (its hosts and leases come before it): what is missing then is gone.
 *
 * Routing lookups (`route`, `locate`) answer from a {@linkcode LookupCache} while a second
 * connection is subscribed to the change notices every instance publishes on `events` when
 * it writes a host or a lease: a notice drops the entry at once, a lost one (subscriber
 * reconnecting) is bounded by `cacheMs`, and the cache is off while the subscriber is down.
 *
 * Keys, under `prefix`: `hosts` (hash host -> digest), `ids` (hash digest -> host count),
 * `client:<digest>` (lease: JSON ClientRecord), `standby:<digest>` (hash instance -> JSON
 * ClientRecord of the instances standing by for that lease, living as long), `instance:<name>`
 * (lease: JSON {@linkcode InstanceRecord}), `instances` (set of the instance names, pruned of
 * the expired ones by each heartbeat's read); channel `events` (`h:<host>`, `c:<digest>`,
 * `i:<name>`, and `l:<name>`: that instance found its records lost, so every instance checks
 * its own at once: a FLUSHALL drops no connection, and would otherwise go unnoticed until
 * each one's next beat). A lookup that misses also checks this instance's own record, in the
 * same script, so the first miss after a FLUSHALL starts the write-backs.
 * Extensions ({@linkcode RegistryExtension}) keep their own keys beside these and their own
 * notices on the same channel: the hosts' rules (host_rules.ts: `rules`, `r:<field>`), the
 * ports clients ask for (port_claims.ts: `port:<proto>:<port>`, `ports`, `p:<proto>:<port>`).
 * @module
 */

import { sha256Hex } from "../net/sha256.ts";
import { errorMessage } from "../net/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import { randomSecret } from "../control/mod.ts";
import {
  type ClientRecord,
  digestRef,
  type HostEntry,
  identifierDigest,
  normalizeHostPattern,
  type Registry,
  RegistryUnavailableError,
} from "./registry.ts";
import { LookupCache } from "./lookup_cache.ts";
import { refreshLease } from "../cluster/lease.ts";
import {
  newRedisClient,
  ReconnectPauses,
  type RedisClient as Client,
} from "../cluster/reconnect.ts";

/** Default lifetime of a lease (client, instance) not refreshed: 3 heartbeats. */
export const defaultLeaseMs = 6_000;
/** Time to connect to Redis (at start and on each reconnect attempt). */
export const redisConnectTimeoutMs = 3_000;
/** Longest wait between reconnect attempts. */
export const redisMaxReconnectDelayMs = 2_000;
/**
 * Default lifetime of a cached routing answer: how long a lost change notice can route
 * requests to where a client used to be (a notice that arrives drops it at once).
 */
export const defaultLookupCacheMs = 1_000;

/**
 * How long after finding its own record lost (Redis restarted empty, FLUSHALL) an instance
 * expects the others' write-backs: each reconnects within {@linkcode redisMaxReconnectDelayMs}
 * and writes its hosts, leases and record at once then, or at its next beat at the latest.
 */
export function settleMs(leaseMs: number): number {
  return leaseMs + redisMaxReconnectDelayMs;
}

/** Longest wait for a write-back's notice before Redis is read again (a notice can be lost). */
export const writeBackPollMs = 250;

/** One tunnel-server instance as the cluster sees it. */
export interface InstanceRecord {
  /** Its name (random per process unless given). */
  name: string;
  /** Where other instances reach it (`--advertise`), if it takes cluster links. */
  advertise?: string;
  /** Epoch ms when it started. */
  since: number;
}

/** Options of {@linkcode RedisRegistry.connect}. */
export interface RedisRegistryOptions {
  /** `redis://[:password@]host:port[/db]` (or `rediss://` for TLS). */
  url: string;
  /** This instance's name. @default random */
  instance?: string;
  /** Where other instances reach this one. */
  advertise?: string;
  /** Key prefix, so several clusters can share one Redis. @default "warren:tunnel:" */
  prefix?: string;
  /** Lease lifetime; refreshed every `leaseMs / 3`. @default 6000 */
  leaseMs?: number;
  /** Lifetime of cached routing answers; 0 turns the cache off. @default 1000 */
  cacheMs?: number;
  /** Where connection changes are logged. @default silent */
  log?: Logger;
}

/** The Redis client's bounds (the constants above). */
const redisLimits = {
  connectTimeoutMs: redisConnectTimeoutMs,
  maxReconnectDelayMs: redisMaxReconnectDelayMs,
};

/** The commands {@linkcode RedisRegistry.redis} lends an extension for its own keys. */
export interface RedisCommands {
  /** EVAL: one atomic script. */
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  /** HGET. */
  hGet(key: string, field: string): Promise<string | null>;
  /** HGETALL. */
  hGetAll(key: string): Promise<Record<string, string>>;
}

/**
 * Something else a cluster keeps in the registry's Redis, under its prefix (the host rules,
 * host_rules.ts): it gets the change notices the registry does not handle, and a look at Redis
 * every heartbeat and whenever notices resume after an outage (some may have been lost).
 */
export interface RegistryExtension {
  /** Prefix of its notices (`r:`); never one of the registry's own (`h:` `c:` `i:` `l:`). */
  readonly noticePrefix: string;
  /** A notice with that prefix, from any instance (this one included). */
  notice(msg: string): void;
  /** Compare with what Redis holds now; must not throw (Redis may be down). */
  sync(): Promise<void>;
}

function digest(identifier: string): string {
  return sha256Hex(identifier);
}

// Atomic host moves: the digest counts in `ids` follow the hosts hash.
const addScript = `local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev then
  if redis.call('HINCRBY', KEYS[2], prev, -1) <= 0 then redis.call('HDEL', KEYS[2], prev) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return prev`;
const removeScript = `local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], prev, -1) <= 0 then redis.call('HDEL', KEYS[2], prev) end
return 1`;

// A release of our lease: handed to a live instance standing by for the client (a member of
// its group is connected there), else deleted. 0 not ours, 1 deleted, 2 handed on.
const releaseScript = `local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur).instance ~= ARGV[1] then return 0 end
local standby = redis.call('HGETALL', KEYS[2])
for i = 1, #standby, 2 do
  if standby[i] ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. standby[i]) == 1 then
    redis.call('SET', KEYS[1], standby[i + 1], 'PX', ARGV[3])
    redis.call('HDEL', KEYS[2], standby[i])
    return 2
  end
end
redis.call('DEL', KEYS[1])
return 1`;

// The heartbeat's read, after this instance (ARGV[2]) joins the index of instances (KEYS[2]):
// the hosts (KEYS[1]) and the records of the live instances (ARGV[1] .. name); an expired
// one leaves the index (it rejoins at its next beat, if it lives).
const readScript = `redis.call('SADD', KEYS[2], ARGV[2])
local live = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local v = redis.call('GET', ARGV[1] .. n)
  if v then live[#live + 1] = v else redis.call('SREM', KEYS[2], n) end
end
return {redis.call('HGETALL', KEYS[1]), live}`;

// The end of a write-back (hosts and leases written again after a loss): this instance's
// record (KEYS[1]) is written, and 1 returned, only while the write-back's mark (KEYS[2],
// written at its start) is there; 0: Redis lost its records again meanwhile.
const recordAfterWriteBackScript = `if redis.call('DEL', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;

// A lookup that also tells a miss with this instance's own record (KEYS[2]) gone: the value,
// else 1 (no such key or field), 0 (and Redis lost our record too: it lost everything).
const hostScript = `local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return v end
return redis.call('EXISTS', KEYS[2])`;
const leaseScript = `local v = redis.call('GET', KEYS[1])
if v then return v end
return redis.call('EXISTS', KEYS[2])`;

/** Where the client of an identifier is held: its lease and the holding instance's record. */
export interface ClientLocation {
  /** The lease. */
  rec: ClientRecord;
  /** The holding instance, while its own lease lives. */
  inst?: InstanceRecord;
  /** Whether this came from the cache (a failure on it is worth a fresh look). */
  cached: boolean;
}

/** A {@linkcode Registry} in Redis, shared by the instances of a tunnel-server cluster. */
export class RedisRegistry implements Registry {
  /** This instance's name (in every ClientRecord it writes). */
  readonly instance: string;
  readonly #client: Client;
  /** The connection subscribed to the change notices (a subscriber runs no commands). */
  readonly #sub: Client;
  /** The waits between reconnect attempts of both connections (close() outlasts them). */
  readonly #pauses: ReconnectPauses;
  readonly #p: string;
  readonly #leaseMs: number;
  readonly #log: Logger;
  readonly #self: InstanceRecord;
  /** Identifiers this process has seen (added here, or authenticated here): digest -> secret. */
  #known = new Map<string, string>();
  /** Hosts as last read from Redis (answers lookups while it is unreachable). */
  #hosts = new Map<string, string>();
  /** Hosts added through this instance, written back if Redis lost them. */
  #own = new Map<string, string>();
  /** Leases this instance holds or stands by for: digest -> record. */
  #held = new Map<string, ClientRecord>();
  /**
   * Of those, the ones another instance holds now while clients of the same identifier are
   * still connected here too (a group with members on several instances, or a client that
   * reconnected elsewhere before its old session here timed out): written back only when that
   * lease is gone, never taken from the other instance. Each is also in Redis (`standby:<d>`,
   * instance -> record), so that the holder's release hands the lease here at once.
   */
  #standby = new Set<string>();
  /** What else is kept beside the registry ({@linkcode extend}). */
  readonly #extensions: RegistryExtension[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #beat: Promise<void> = Promise.resolve();
  /**
   * The heartbeat run when Redis returns after an outage, while it runs: a host of this
   * instance missing meanwhile is being written back ({@linkcode lookup} waits for it).
   */
  #restore: Promise<void> | undefined;
  #up = false;
  /** close() was called: no more heartbeats. */
  #closed = false;
  /**
   * Until when (`performance.now()` ms) the others may still be writing back what Redis lost
   * (see {@linkcode settleMs}); 0 when nothing was lost.
   */
  #settleUntil = 0;
  /**
   * The other live instances as of the last heartbeat (the `instances` index and their
   * records): who can be asked while Redis cannot answer, and whose write-backs a loss waits
   * for.
   */
  #peers = new Map<string, InstanceRecord>();
  /** Instances that announced themselves (`i:<name>`) since the last heartbeat's read. */
  #joined = new Set<string>();
  /**
   * The instances live before Redis lost its records: once each has written its record back
   * (after its hosts and leases), what is still missing is gone, and the settle window ends.
   */
  #peersBefore = new Set<string>();
  /** The hosts as read before Redis lost them: they route misses until {@linkcode #settleUntil}. */
  #hostsBefore = new Map<string, string>();
  /** Waiters for a change notice (`c:<digest>`, `i:<name>`), by notice. */
  #noticeWaiters = new Map<string, Set<() => void>>();
  /** Whether the subscriber is connected: the caches are used only then. */
  #subUp = false;
  /** host -> digest (null: no such host). */
  readonly #hostCache: LookupCache<string | null>;
  /** digest -> lease (null: not held anywhere). */
  readonly #clientCache: LookupCache<ClientRecord | null>;
  /** instance name -> record (null: gone). */
  readonly #instCache: LookupCache<InstanceRecord | null>;

  private constructor(client: Client, pauses: ReconnectPauses, opts: RedisRegistryOptions) {
    this.#client = client;
    this.#pauses = pauses;
    this.#sub = client.duplicate();
    const cacheMs = opts.cacheMs ?? defaultLookupCacheMs;
    this.#hostCache = new LookupCache(cacheMs);
    this.#clientCache = new LookupCache(cacheMs);
    this.#instCache = new LookupCache(cacheMs);
    this.instance = opts.instance ?? randomSecret(4);
    this.#p = opts.prefix ?? "warren:tunnel:";
    this.#leaseMs = opts.leaseMs ?? defaultLeaseMs;
    this.#log = (opts.log ?? silentLogger).child({ registry: "redis" });
    this.#self = {
      name: this.instance,
      ...(opts.advertise ? { advertise: opts.advertise } : {}),
      since: Date.now(),
    };
  }

  /** Connect to Redis and start the heartbeat; throws when the first connect fails. */
  static async connect(opts: RedisRegistryOptions): Promise<RedisRegistry> {
    let connected = false;
    const pauses = new ReconnectPauses();
    const client = await newRedisClient(opts.url, () => connected, pauses, redisLimits);
    const reg = new RedisRegistry(client, pauses, opts);
    client.on("error", (err: unknown) => {
      if (reg.#up) reg.#log.warn("redis connection lost", { error: errorMessage(err) });
      reg.#up = false;
    });
    client.on("ready", () => {
      if (!reg.#up) reg.#log.info("redis connected");
      // Back after an outage: write back at once what a restart lost (the lease, the hosts),
      // rather than at the next beat, so lookups find them within a round trip.
      if (connected && !reg.#up && reg.#timer !== undefined) void reg.#recover();
      reg.#up = connected = true;
    });
    try {
      await client.connect();
    } catch (err) {
      // The reconnect strategy gave up: the client is closed already.
      throw new RegistryUnavailableError("connect", err);
    }
    await reg.#subscribe();
    await reg.#heartbeat();
    reg.#timer = setInterval(() => {
      reg.#beat = reg.#beat.then(() => reg.#heartbeat());
    }, Math.max(50, Math.floor(reg.#leaseMs / 3)));
    return reg;
  }

  #key(name: string): string {
    return this.#p + name;
  }

  /** Subscribe to the change notices; the caches are trusted only while subscribed. */
  async #subscribe(): Promise<void> {
    const sub = this.#sub;
    const off = () => {
      this.#subUp = false;
      this.#clearCaches();
    };
    sub.on("error", off);
    sub.on("end", off);
    try {
      await sub.connect();
      await sub.subscribe(this.#key("events"), (msg: string) => this.#notice(msg));
    } catch (err) {
      // Routing goes to Redis every time (no cache) while there are no notices.
      this.#log.warn("change notices unavailable: lookups are not cached", {
        error: errorMessage(err),
      });
      return;
    }
    this.#subUp = true;
    // Back after an outage (the client resubscribes by itself): notices may have been
    // missed meanwhile, so start from empty caches.
    sub.on("ready", () => {
      this.#clearCaches();
      this.#subUp = true;
      for (const e of this.#extensions) void e.sync();
    });
  }

  /**
   * Keep `ext` beside the registry: it gets its notices from now on and a `sync` every
   * heartbeat (see {@linkcode RegistryExtension}).
   */
  extend(ext: RegistryExtension): void {
    this.#extensions.push(ext);
  }

  /** The Redis connection, for an extension's own keys (named by {@linkcode key}). */
  get redis(): RedisCommands {
    return this.#client;
  }

  /** How long a lease lives unrefreshed (an extension's leases live as long). */
  get leaseMs(): number {
    return this.#leaseMs;
  }

  /** The Redis key of `name` under this cluster's prefix. */
  key(name: string): string {
    return this.#key(name);
  }

  /** Tell every instance (this one first) that `what` changed: an extension's notice. */
  notify(what: string): Promise<void> {
    return this.#publish(what);
  }

  /** Whether change notices arrive, so routing answers are cached (false during an outage). */
  get cacheActive(): boolean {
    return this.#subUp;
  }

  #clearCaches(): void {
    this.#hostCache.clear();
    this.#clientCache.clear();
    this.#instCache.clear();
  }

  /** A change notice from any instance (this one included). */
  #notice(msg: string): void {
    const what = msg.slice(2);
    const waiters = this.#noticeWaiters.get(msg);
    for (const w of waiters ?? []) w();
    if (msg.startsWith("h:")) {
      this.#hostCache.delete(what);
      // Redis says what that host is now: the copy from before the loss has no say any more.
      this.#hostsBefore.delete(what);
      void this.#copyHost(what);
    } else if (msg.startsWith("c:")) this.#clientCache.delete(what);
    else if (msg.startsWith("i:")) {
      this.#instCache.delete(what);
      if (what !== this.instance && !this.#peers.has(what)) this.#joined.add(what);
      if (what !== this.instance) void this.#followPeer(what);
      // An instance wrote its records back (or left): a wait for a lease may be over.
      for (const [k, ws] of this.#noticeWaiters) {
        if (k.startsWith("c:")) {
          for (const w of ws) w();
        }
      }
    } // Another instance found Redis had lost its records: so may ours be (a FLUSHALL drops no
    // connection, so nothing else tells us before the next beat).
    else if (msg.startsWith("l:")) {
      if (what !== this.instance) void this.#recover();
    } else {
      for (const e of this.#extensions) if (msg.startsWith(e.noticePrefix)) e.notice(msg);
    }
  }

  /**
   * Follow an instance's notice (it joined, wrote its record back, or left) in the peers
   * asked during an outage, rather than wait for the next heartbeat's read: a host added
   * through an instance that joined since is then found by asking it.
   */
  async #followPeer(name: string): Promise<void> {
    let rec: InstanceRecord | undefined;
    try {
      rec = await this.instanceRecord(name);
    } catch {
      // Redis went away just now: the peers stay as last read.
      return;
    }
    if (rec) this.#peers.set(name, rec);
    else this.#peers.delete(name);
  }

  /**
   * Follow a host's change in the copy that routes while Redis is unreachable (read whole at
   * each beat), so that a host added elsewhere since this instance's last beat is routed too
   * should Redis go away before the next one.
   */
  async #copyHost(h: string): Promise<void> {
    try {
      const d = await this.#client.hGet(this.#key("hosts"), h);
      if (d === null) this.#hosts.delete(h);
      else this.#hosts.set(h, d);
    } catch {
      // Redis went away just now: the copy keeps what was read last.
    }
  }

  /**
   * The hosts this instance routes by while Redis is unreachable: read at each heartbeat and
   * kept up by the change notices (for the status and the tests).
   */
  copiedHosts(): string[] {
    return [...this.#hosts.keys()].sort();
  }

  /** Tell every instance that `what` changed (after the write). */
  async #publish(what: string): Promise<void> {
    this.#notice(what);
    try {
      await this.#client.publish(this.#key("events"), what);
    } catch (err) {
      // The write it announces went through: the others' entries expire within cacheMs.
      this.#log.debug("change notice not sent", { error: errorMessage(err) });
    }
  }

  /**
   * Run a heartbeat now (after the one under way), to write back what Redis lost: on
   * reconnecting after an outage, on a lookup that found this instance's own record gone
   * (FLUSHALL without a disconnect), on another instance's loss notice (`l:<name>`). Its
   * promise is {@linkcode #restore} while it runs (concurrent callers share it).
   */
  #recover(): Promise<void> {
    if (this.#restore === undefined && !this.#closed) {
      const restore = this.#restore = this.#beat = this.#beat.then(() => this.#heartbeat());
      void restore.then(() => {
        if (this.#restore === restore) this.#restore = undefined;
      });
    }
    return this.#restore ?? Promise.resolve();
  }

  #fail(what: string, err: unknown): never {
    throw new RegistryUnavailableError(what, err);
  }

  /**
   * Refresh this instance's and its clients' leases; write back what a restart lost: the
   * hosts added here, then the clients' leases, then the instance's own record, so another
   * instance that finds the record knows the leases are there too ({@linkcode mayHold}
   * relies on it), and one that finds a lease finds the hosts.
   */
  async #heartbeat(): Promise<void> {
    const c = this.#client;
    try {
      const px = { expiration: { type: "PX" as const, value: this.#leaseMs } };
      const had = await c.exists(this.#key(`instance:${this.instance}`));
      if (!had && this.#timer !== undefined) {
        // Lost (not the first beat): the others write back theirs meanwhile (settleMs).
        this.#settleUntil = performance.now() + settleMs(this.#leaseMs);
        // (Lost again meanwhile: what was read since the first loss may lack some.)
        const again = this.#settling();
        this.#hostsBefore = new Map([...(again ? this.#hostsBefore : []), ...this.#hosts]);
        this.#peersBefore = new Set([
          ...(again ? this.#peersBefore : []),
          ...this.#peers.keys(),
          ...this.#joined,
        ]);
        this.#log.info("redis lost this instance's records: writing them back", {
          settleMs: settleMs(this.#leaseMs),
        });
        await this.#publish(`l:${this.instance}`);
      }
      const mark = this.#key(`writeback:${this.instance}`);
      if (!had) {
        // A FLUSHALL before this write-back ends takes the mark too: then the record is not
        // written (see below), so the loss stays visible and the write-back runs again.
        await c.set(mark, "1", px);
        // Back after an outage or a Redis restart: the hosts added here first.
        for (const [host, d] of this.#own) {
          if (await c.hGet(this.#key("hosts"), host) === null) {
            await this.#writeHost(host, d);
            await this.#publish(`h:${host}`);
          }
        }
      }
      for (const [d, rec] of this.#held) {
        // A client that reconnected to another instance keeps its new lease there while our
        // old session times out.
        const kept = await refreshLease(
          c,
          this.#key(`client:${d}`),
          JSON.stringify(rec),
          this.#leaseMs,
          this.instance,
          this.#key(`standby:${d}`),
        );
        if (kept === "not-ours") {
          // Another instance registered this client since (it reconnected there, or another
          // member of its group connected there): its lease while it lasts. The script noted
          // this instance in `standby:<d>` for a lease.
          if (!this.#standby.has(d)) {
            this.#standby.add(d);
            this.#log.info("client now held by another instance", { client: d.slice(0, 12) });
          }
          continue;
        }
        if (this.#standby.delete(d)) {
          this.#log.info("client held here again", { client: d.slice(0, 12) });
          await c.hDel(this.#key(`standby:${d}`), this.instance);
        }
        if (kept === "written-back") await this.#publish(`c:${d}`); // written back: it was gone
      }
      // Found at the start of this beat, the record is refreshed only if still there: gone
      // since (a FLUSHALL inside this beat), writing it would hide the loss from every later
      // beat and lookup, and the hosts added here would stay lost. The loss's beat runs now.
      // Not found (this beat wrote back), it is written only if the write-back's mark is still
      // there, for the same reason: a FLUSHALL after some of the hosts went back took them.
      const self = JSON.stringify(this.#self);
      const key = this.#key(`instance:${this.instance}`);
      if (!had) {
        const written = await c.eval(recordAfterWriteBackScript, {
          keys: [key, mark],
          arguments: [self, String(this.#leaseMs)],
        });
        if (Number(written) === 0) return await this.#heartbeat(); // lost again: write back
      } else if (await c.set(key, self, { ...px, condition: "XX" }) === null) {
        return await this.#heartbeat(); // it finds the record gone: no XX, no loop
      }
      // Back after an outage or a Redis restart: the others may have cached us as gone.
      if (!had) await this.#publish(`i:${this.instance}`);
      const [hosts, live] = await c.eval(readScript, {
        keys: [this.#key("hosts"), this.#key("instances")],
        arguments: [this.#key("instance:"), this.instance],
      }) as [string[], string[]];
      this.#hosts = new Map();
      for (let i = 0; i + 1 < hosts.length; i += 2) this.#hosts.set(hosts[i], hosts[i + 1]);
      this.#peers = new Map();
      for (const v of live) {
        const r = JSON.parse(v) as InstanceRecord;
        if (r.name !== this.instance) this.#peers.set(r.name, r);
      }
      this.#joined.clear();
      for (const e of this.#extensions) await e.sync();
    } catch (err) {
      // The outage is logged by the "error" handler; the next beat tries again.
      this.#log.debug("heartbeat failed", { error: errorMessage(err) });
    }
  }

  async #writeHost(host: string, d: string): Promise<string | null> {
    const prev = await this.#client.eval(addScript, {
      keys: [this.#key("hosts"), this.#key("ids")],
      arguments: [host, d],
    });
    return typeof prev === "string" ? prev : null;
  }

  /** The secret of digest `d` when this process knows it, else a stand-in naming the digest. */
  #identifierOf(d: string): string {
    return this.#known.get(d) ?? digestRef(d);
  }

  async addHost(host: string, identifier: string): Promise<void> {
    const h = normalizeHostPattern(host);
    if (!h) throw new RangeError(`bad host name: ${JSON.stringify(host)}`);
    if (!identifier) throw new RangeError("empty identifier");
    const d = digest(identifier);
    try {
      await this.#writeHost(h, d);
    } catch (err) {
      this.#fail("add host", err);
    }
    this.#known.set(d, identifier);
    this.#own.set(h, d);
    this.#hosts.set(h, d);
    await this.#publish(`h:${h}`);
  }

  async removeHost(host: string): Promise<boolean> {
    const h = normalizeHostPattern(host);
    let n: unknown;
    try {
      n = await this.#client.eval(removeScript, {
        keys: [this.#key("hosts"), this.#key("ids")],
        arguments: [h],
      });
    } catch (err) {
      this.#fail("remove host", err);
    }
    this.#own.delete(h);
    this.#hosts.delete(h);
    await this.#publish(`h:${h}`);
    return n === 1;
  }

  /**
   * The digest Redis holds for host `h`. Redis just back (restarted empty) may not have a
   * host added through this instance yet: such a miss waits for the write-back under way and
   * reads again, rather than answer that the host does not exist; for `routing`, another
   * instance's host is taken from the copy read before the loss while the others write back
   * ({@linkcode settleMs}). Throws when Redis is unreachable.
   */
  async #hostDigest(h: string, routing = false): Promise<string | null> {
    let d = await this.#readOrRecover(hostScript, this.#key("hosts"), h);
    if (d === null && this.#restore !== undefined && this.#own.has(h)) {
      await this.#restore;
      d = await this.#client.hGet(this.#key("hosts"), h);
    }
    // Another instance's host, not written back yet: routed as it was before the loss (only
    // routed: who owns a host, for the admin API and claims, is Redis's answer alone).
    if (d === null && routing && this.#settling()) d = this.#hostsBefore.get(h) ?? null;
    return d;
  }

  /**
   * Read field `field` of hash `key` (or, without a field, string `key`) with `script`; a miss
   * with this instance's own record gone as well (Redis lost its records, and no reconnect
   * told us: FLUSHALL) first writes back what was lost and starts the settle window at once
   * ({@linkcode #recover}), then reads again.
   */
  async #readOrRecover(script: string, key: string, field?: string): Promise<string | null> {
    const r = await this.#client.eval(script, {
      keys: [key, this.#key(`instance:${this.instance}`)],
      arguments: field === undefined ? [] : [field],
    });
    if (typeof r === "string") return r;
    if (r !== 0) return null;
    await this.#recover();
    return field === undefined ? await this.#client.get(key) : await this.#client.hGet(key, field);
  }

  /** Whether the others may still be writing back what Redis lost ({@linkcode settleMs}). */
  #settling(): boolean {
    if (this.#settleUntil === 0) return false;
    if (performance.now() < this.#settleUntil) return true;
    this.#endSettle();
    return false;
  }

  #endSettle(): void {
    this.#settleUntil = 0;
    this.#hostsBefore = new Map();
    this.#peersBefore = new Set();
  }

  /**
   * Whether every instance live before the loss (and `holder`, named by a lease found since)
   * has written its record back, so its hosts and leases are back too: then a miss is an
   * answer. False when Redis cannot tell.
   */
  async #allWrittenBack(holder?: string): Promise<boolean> {
    const names = [...new Set([...this.#peersBefore, ...(holder ? [holder] : [])])];
    if (names.length === 0) return true;
    try {
      return await this.#client.exists(names.map((n) => this.#key(`instance:${n}`))) ===
        names.length;
    } catch {
      // Redis is unreachable again: not known, so keep waiting (within settleMs).
      return false;
    }
  }

  /**
   * Redis lost its records a moment ago ({@linkcode settleMs}) and `at` (a {@linkcode locate}
   * answer: none, or a lease whose instance record is missing) may be a write-back still to
   * come: wait for its notice (the lease's `c:<digest>`, or the holder's `i:<name>`), at most
   * {@linkcode writeBackPollMs} (a notice may be lost). True: look again; false: nothing is
   * being written back, `at` is the answer. Once every instance live before the loss has
   * written its record back (after its hosts and leases), the window ends: true once more,
   * so the caller's next look, after those write-backs, is the answer.
   */
  async awaitWriteBack(identifier: string, at: ClientLocation | undefined): Promise<boolean> {
    if (!this.#settling()) return false;
    if (await this.#allWrittenBack(at?.rec.instance)) {
      // Everything lost is back, maybe since `at` was read: one more look is the answer.
      this.#log.info("every instance wrote its records back: the settle window ends");
      this.#endSettle();
      return true;
    }
    const msg = at ? `i:${at.rec.instance}` : `c:${identifierDigest(identifier)}`;
    const waitMs = Math.min(writeBackPollMs, this.#settleUntil - performance.now());
    let waiters = this.#noticeWaiters.get(msg);
    if (!waiters) this.#noticeWaiters.set(msg, waiters = new Set());
    let timer: ReturnType<typeof setTimeout> | undefined;
    let wake = () => {};
    const woken = new Promise<void>((r) => wake = r);
    waiters.add(wake);
    try {
      timer = setTimeout(wake, waitMs);
      await woken;
    } finally {
      clearTimeout(timer);
      waiters.delete(wake);
      if (waiters.size === 0) this.#noticeWaiters.delete(msg);
    }
    return true;
  }

  async lookup(host: string): Promise<string | undefined> {
    const h = normalizeHostPattern(host);
    let d: string | null | undefined;
    try {
      d = await this.#hostDigest(h);
    } catch {
      // Redis is down: route by the copy of the last heartbeat (held clients keep serving).
      d = this.#hosts.get(h);
    }
    return d ? this.#identifierOf(d) : undefined;
  }

  /**
   * {@linkcode lookup} for routing a request: from the cache while change notices arrive
   * (no round trip), else from Redis.
   */
  async route(host: string): Promise<string | undefined> {
    const h = normalizeHostPattern(host);
    let d = await this.hostHere(h);
    if (d === undefined) {
      // Redis is unreachable and the copy lacks the host. A wildcard entry of the copy that
      // covers it routes it, as the copy's own hosts do: no such entry, so the caller's walk
      // goes on to that wildcard (asking about the name first could only give a 503).
      if (this.#copyCovers(h)) return undefined;
      // Else it may have been added since (on an instance that reaches Redis), so the peers
      // are asked (none to ask: no such host).
      d = this.askPeersForHost ? await this.askPeersForHost(h) : null;
      if (d === undefined) {
        throw new RegistryUnavailableError("route", new Error("no instance could tell"));
      }
      if (d !== null) this.#hosts.set(h, d);
    }
    return d ? this.#identifierOf(d) : undefined;
  }

  /**
   * Whether a wildcard entry of the hosts copy covers `h` (a normalized name or wildcard
   * entry): for `a.b.example.com`, `*.b.example.com` or `*.example.com`.
   */
  #copyCovers(h: string): boolean {
    for (let i = h.indexOf("."); i > 0; i = h.indexOf(".", i + 1)) {
      const w = `*${h.slice(i)}`;
      if (w !== h && this.#hosts.has(w)) return true;
    }
    return false;
  }

  /**
   * Where a request for `host` (a normalized entry) goes, as this instance alone can tell:
   * the digest of its identifier, null when there is no such host, undefined when Redis is
   * unreachable and the copy (see {@linkcode copiedHosts}) lacks it. From the cache while
   * change notices arrive; also what this instance answers a peer asking (cluster.ts).
   */
  async hostHere(h: string): Promise<string | null | undefined> {
    const hit = this.#subUp ? this.#hostCache.get(h) : undefined;
    if (hit) return hit.value;
    const epoch = this.#hostCache.epoch;
    let d: string | null;
    try {
      d = await this.#hostDigest(h, true);
    } catch {
      // Redis is down: route by the copy (held clients keep serving).
      return this.#hosts.get(h);
    }
    if (this.#subUp) this.#hostCache.set(h, d, epoch);
    return d;
  }

  /**
   * Asks the other instances (lib/tunnel/cluster.ts sets it) for a host this instance
   * cannot route while Redis is unreachable: its digest, null when every one said there is
   * none, undefined when that cannot be told (then `route` throws RegistryUnavailableError).
   */
  askPeersForHost?: (host: string) => Promise<string | null | undefined>;

  async listHosts(): Promise<HostEntry[]> {
    let all: Record<string, string>;
    try {
      all = await this.#client.hGetAll(this.#key("hosts"));
    } catch {
      // Redis is down: the copy of the last heartbeat.
      all = Object.fromEntries(this.#hosts);
    }
    return Object.entries(all).map(([host, d]) => ({ host, identifier: this.#identifierOf(d) }));
  }

  async hostsOf(identifier: string): Promise<string[]> {
    const d = digest(identifier);
    return (await this.listHosts()).filter((e) => e.identifier === this.#identifierOf(d))
      .map((e) => e.host);
  }

  /** Whether a host names `identifier`: looked up by digest (a hash lookup, no comparison). */
  async isKnown(identifier: string): Promise<boolean> {
    const d = digest(identifier);
    let n: string | null;
    try {
      n = await this.#client.hGet(this.#key("ids"), d);
    } catch (err) {
      this.#fail("authenticate", err);
    }
    if (n === null || Number(n) <= 0) return false;
    this.#known.set(d, identifier);
    return true;
  }

  async setClient(identifier: string, rec: ClientRecord | undefined): Promise<void> {
    const d = digest(identifier);
    const key = this.#key(`client:${d}`);
    if (!rec) {
      this.#held.delete(d);
      const standby = this.#standby.delete(d);
      try {
        if (standby) await this.#client.hDel(this.#key(`standby:${d}`), this.instance);
        // Ours even when standing by, if a release handed it here since the last beat.
        await this.#release(d);
      } catch (err) {
        this.#fail("release client", err);
      }
      return;
    }
    const held = { ...rec, instance: this.instance };
    try {
      await this.#client.set(key, JSON.stringify(held), {
        expiration: { type: "PX", value: this.#leaseMs },
      });
    } catch (err) {
      this.#fail("register client", err);
    }
    this.#held.set(d, held);
    if (this.#standby.delete(d)) {
      await this.#client.hDel(this.#key(`standby:${d}`), this.instance).catch(() => {
        // Redis went down just now: the entry expires within leaseMs; a release handing the
        // lease here meanwhile finds this instance holding the client anyway.
      });
    }
    // A client held here is reachable over the links whether or not a host names it (a
    // TCP- or UDP-only client's identifier is named by the tunnels, not the hosts).
    this.#known.set(d, identifier);
    await this.#publish(`c:${d}`);
  }

  /**
   * Release our lease of digest `d`, if ours still (another instance may hold this client by
   * now): to an instance standing by for it, else away; then tell every instance.
   */
  async #release(d: string): Promise<void> {
    const n = await this.#client.eval(releaseScript, {
      keys: [this.#key(`client:${d}`), this.#key(`standby:${d}`)],
      arguments: [this.instance, this.#key("instance:"), String(this.#leaseMs)],
    });
    if (n === 2) {
      this.#log.info("client lease handed to an instance standing by", {
        client: d.slice(0, 12),
      });
    }
    if (n !== 0) await this.#publish(`c:${d}`);
  }

  async getClient(identifier: string): Promise<ClientRecord | undefined> {
    const d = identifierDigest(identifier);
    try {
      const v = await this.#client.get(this.#key(`client:${d}`));
      return v ? JSON.parse(v) as ClientRecord : undefined;
    } catch {
      // Redis is down: only our own clients are known for sure.
      return this.#held.get(d);
    }
  }

  async listClients(): Promise<ClientRecord[]> {
    return (await this.#scan("client:*")).map((v) => JSON.parse(v) as ClientRecord);
  }

  /** The secret of digest `d` if this process has seen it (its clients authenticated here). */
  knownIdentifier(d: string): string | undefined {
    return this.#known.get(d);
  }

  /** The live instance `name`, if its lease has not expired. */
  async instanceRecord(name: string): Promise<InstanceRecord | undefined> {
    let v: string | null;
    try {
      v = await this.#client.get(this.#key(`instance:${name}`));
    } catch (err) {
      this.#fail("find instance", err);
    }
    return v ? JSON.parse(v) as InstanceRecord : undefined;
  }

  /**
   * Where the client of `identifier` is held, for routing a request to it: from the cache
   * while change notices arrive, unless `fresh` (a cached answer just failed). Throws
   * {@linkcode RegistryUnavailableError} when Redis is needed and unreachable.
   */
  async locate(identifier: string, fresh = false): Promise<ClientLocation | undefined> {
    const d = identifierDigest(identifier);
    const useCache = this.#subUp && !fresh;
    let cached = true;
    let rec = useCache ? this.#clientCache.get(d)?.value : undefined;
    if (rec === undefined) {
      cached = false;
      const epoch = this.#clientCache.epoch;
      let v: string | null;
      try {
        v = await this.#readOrRecover(leaseScript, this.#key(`client:${d}`));
      } catch (err) {
        this.#fail("find client", err);
      }
      rec = v ? JSON.parse(v) as ClientRecord : null;
      if (this.#subUp) this.#clientCache.set(d, rec, epoch);
    }
    if (!rec) return undefined;
    let inst = useCache ? this.#instCache.get(rec.instance)?.value : undefined;
    if (inst === undefined) {
      cached = false;
      const epoch = this.#instCache.epoch;
      inst = (await this.instanceRecord(rec.instance)) ?? null;
      if (this.#subUp) this.#instCache.set(rec.instance, inst, epoch);
    }
    return { rec, ...(inst ? { inst } : {}), cached };
  }

  /**
   * Whether instance `name`, which held the client of `identifier` when it was last looked
   * up, may hold it still although no live lease says where it is: while that instance's own
   * record is missing from Redis too (Redis restarted empty or lost the keys, and it has not
   * written them back yet), or while Redis cannot tell. Its heartbeat writes its clients'
   * leases before its own record, so once the record is back a missing lease means it no
   * longer holds the client. Read afresh (no cache): the record first, then the lease.
   */
  async mayHold(identifier: string, name: string): Promise<boolean> {
    try {
      if (await this.#client.get(this.#key(`instance:${name}`)) === null) return true;
      const v = await this.#client.get(this.#key(`client:${identifierDigest(identifier)}`));
      return v !== null && (JSON.parse(v) as ClientRecord).instance === name;
    } catch {
      // Redis is unreachable: only that instance can tell (it refuses a client it lost).
      return true;
    }
  }

  /**
   * Drop what the cache says about `identifier`'s client (and its instance, when named):
   * routing to it failed, so the next request looks it up afresh.
   */
  forget(identifier: string, instance?: string): void {
    this.#clientCache.delete(identifierDigest(identifier));
    if (instance !== undefined) this.#instCache.delete(instance);
  }

  /**
   * The other instances live at the last heartbeat (read from Redis then, and followed by
   * their notices since): whom to ask while Redis cannot answer.
   */
  peers(): InstanceRecord[] {
    return [...this.#peers.values()];
  }

  /** The live instances of the cluster (their leases not expired). */
  async instances(): Promise<InstanceRecord[]> {
    return (await this.#scan("instance:*")).map((v) => JSON.parse(v) as InstanceRecord);
  }

  async #scan(pattern: string): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const keys of this.#client.scanIterator({ MATCH: this.#key(pattern) })) {
        if (keys.length === 0) continue;
        for (const v of await this.#client.mGet(keys)) if (v) out.push(v);
      }
    } catch (err) {
      this.#fail("list", err);
    }
    return out;
  }

  /** Stop the heartbeat, release this instance's leases (best effort) and disconnect. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#closed = true;
    // Nothing more is waited for: the lookups waiting for a write-back look again now.
    this.#settleUntil = 0;
    for (const waiters of this.#noticeWaiters.values()) for (const w of waiters) w();
    await this.#beat;
    try {
      for (const d of this.#held.keys()) {
        if (this.#standby.has(d)) {
          await this.#client.hDel(this.#key(`standby:${d}`), this.instance);
        }
        await this.#release(d);
      }
      await this.#client.del(this.#key(`instance:${this.instance}`));
      await this.#publish(`i:${this.instance}`);
      await this.#client.close();
    } catch (err) {
      // Redis is down: the leases expire by themselves within leaseMs.
      this.#log.debug("leases not released", { error: errorMessage(err) });
      this.#client.destroy();
    }
    this.#held.clear();
    this.#standby.clear();
    this.#subUp = false;
    try {
      await this.#sub.close();
    } catch {
      // Never connected, or Redis is down: nothing to unsubscribe from.
      if (this.#sub.isOpen) this.#sub.destroy();
    }
    // A connection closed while it waited to reconnect (Redis down) still has that wait's timer.
    await this.#pauses.settled();
  }
}
