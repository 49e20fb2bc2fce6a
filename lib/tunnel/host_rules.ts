/**
 * The server-side rules of each host entry (access rules, access.ts; header rewrites,
 * rewrite.ts), as flags, the admin API and the state file set them. They are applied where a
 * public request is parsed, on whichever instance it reached, so a cluster's instances must
 * all hold the same: {@linkcode HostRules} keeps them in this process, and
 * {@linkcode ClusterHostRules} in the registry's Redis, with a copy in every instance that
 * follows the change notices.
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { errorMessage } from "../net/mod.ts";
import {
  type CredentialDigest,
  credentialDigest,
  HostAccess,
  type HostAccessSpec,
  type StoredHostAccess,
} from "./access.ts";
import { HostRewrite, type HostRewriteSpec } from "./rewrite.ts";
import { RegistryUnavailableError, type RouteOrigin } from "./registry.ts";
import type { RedisRegistry, RegistryExtension } from "./redis_registry.ts";

/** One host's access rules, compiled, with where they came from. */
export interface AccessEntry {
  rule: HostAccess;
  /** As given, with its secrets (absent when read from Redis: only digests are there). */
  spec?: HostAccessSpec;
  origin: RouteOrigin;
}

/** One host's header rewrites, compiled and as given, with where they came from. */
export interface RewriteEntry {
  rule: HostRewrite;
  spec: HostRewriteSpec;
  origin: RouteOrigin;
}

/** The rules of one tunnel server's host entries, in this process. */
export class HostRules {
  /** Access rules by host entry (read on every request). */
  access: Map<string, AccessEntry> = new Map();
  /** Header rewrites by host entry (read on every request). */
  rewrites: Map<string, RewriteEntry> = new Map();

  /** Rules kept here, credentials digested under `digest` (a random key by default). */
  constructor(readonly digest?: CredentialDigest) {}

  /** Whether the rules are the cluster's (kept in Redis, not in the state file). */
  get shared(): boolean {
    return false;
  }

  /**
   * Set (or with `undefined`, clear) the access rules of the normalised entry `host`; throws
   * HostAccessError on a bad rule (and {@linkcode RegistryUnavailableError} when shared and
   * Redis is down).
   */
  setAccess(host: string, spec: HostAccessSpec | undefined, origin: RouteOrigin): Promise<void> {
    if (spec === undefined) this.access.delete(host);
    else this.access.set(host, { rule: new HostAccess(spec, this.digest), spec, origin });
    return Promise.resolve();
  }

  /** Set (or clear) the header rewrites of `host`; throws RewriteError on a bad rule. */
  setRewrite(host: string, spec: HostRewriteSpec | undefined, origin: RouteOrigin): Promise<void> {
    if (spec === undefined) this.rewrites.delete(host);
    else this.rewrites.set(host, { rule: new HostRewrite(spec), spec, origin });
    return Promise.resolve();
  }

  /** Stop following shared changes (nothing to do in memory); before the registry closes. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Options of {@linkcode ClusterHostRules.start}. */
export interface ClusterHostRulesOptions {
  /**
   * The key credentials are digested under: the cluster token (every instance the same),
   * so a copy of Redis alone does not let anyone test passwords against the digests.
   */
  key: string;
  /** Where changes and bad records are logged. @default silent */
  log?: Logger;
}

/** Field of the rules hash counting its changes (a copy that read another count reloads). */
const versionField = "v";
/** Field holding a digest of a fixed text under the key, to tell a cluster token mismatch. */
const keyCheckField = "k";
const keyCheckText = "warren tunnel host rules key check";

// One change and its count, atomically: whoever reads the count also reads the change.
const writeScript = `if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('HSETNX', KEYS[1], '${keyCheckField}', ARGV[3])
return redis.call('HINCRBY', KEYS[1], '${versionField}', 1)`;
// The copy of a Redis that lost the hash (restarted empty): only the first instance writes.
const restoreScript = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', KEYS[1], '${versionField}', 1)
return 1`;

/**
 * The rules of a cluster's host entries, in the registry's Redis: hash `<prefix>rules`, field
 * `a:<host>` (access: JSON {@linkcode StoredHostAccess}, credentials as HMAC-SHA-256 digests
 * under the cluster token, never in clear) and `w:<host>` (rewrites: JSON
 * {@linkcode HostRewriteSpec}; its values go to the app, so they are kept as given), plus a
 * change count `v` and a key check `k`. Every write bumps the count and publishes `r:<field>`;
 * each instance reloads its copy on a notice (within a round trip), and every heartbeat when
 * the count differs from its copy's (a notice lost while the subscriber reconnected). Requests
 * read the copy: no Redis round trip per request, and served while Redis is down. A Redis
 * that lost the hash gets the copy written back.
 */
export class ClusterHostRules extends HostRules implements RegistryExtension {
  /** The notices of rule changes. */
  readonly noticePrefix = "r:";
  readonly #registry: RedisRegistry;
  readonly #log: Logger;
  readonly #hash: string;
  readonly #keyCheck: string;
  /** The fields of the last load, as Redis held them (written back if it lost them). */
  #raw: Record<string, string> = {};
  /** The change count of the last load (undefined: none yet). */
  #version: string | undefined;
  #loading: Promise<void> | undefined;
  #again = false;
  #keyWarned = false;
  #closed = false;

  private constructor(registry: RedisRegistry, opts: ClusterHostRulesOptions) {
    super(credentialDigest(opts.key));
    this.#registry = registry;
    this.#log = (opts.log ?? silentLogger).child({ rules: "redis" });
    this.#hash = registry.key("rules");
    this.#keyCheck = this.digest!(keyCheckText);
  }

  /**
   * The cluster's rules in `registry`'s Redis: read once, then followed (notices, heartbeat).
   * Throws {@linkcode RegistryUnavailableError} when the first read fails.
   */
  static async start(
    registry: RedisRegistry,
    opts: ClusterHostRulesOptions,
  ): Promise<ClusterHostRules> {
    const rules = new ClusterHostRules(registry, opts);
    try {
      await rules.#load();
    } catch (err) {
      throw new RegistryUnavailableError("read host rules", err);
    }
    registry.extend(rules);
    return rules;
  }

  override get shared(): boolean {
    return true;
  }

  override async setAccess(
    host: string,
    spec: HostAccessSpec | undefined,
    origin: RouteOrigin,
  ): Promise<void> {
    const stored = spec && { ...new HostAccess(spec, this.digest).toStored(), origin };
    await this.#write(`a:${host}`, stored);
  }

  override async setRewrite(
    host: string,
    spec: HostRewriteSpec | undefined,
    origin: RouteOrigin,
  ): Promise<void> {
    if (spec) new HostRewrite(spec); // refused here, before anything is written
    await this.#write(`w:${host}`, spec && { ...spec, origin });
  }

  /** Write one field (undefined: delete it), tell every instance, and reload the copy. */
  async #write(field: string, value: object | undefined): Promise<void> {
    try {
      await this.#registry.redis.eval(writeScript, {
        keys: [this.#hash],
        arguments: [field, value ? JSON.stringify(value) : "", this.#keyCheck],
      });
    } catch (err) {
      throw new RegistryUnavailableError("set host rules", err);
    }
    await this.#registry.notify(`${this.noticePrefix}${field}`);
    await this.#reload();
  }

  /** A change notice: reload the copy (the change is in Redis before its notice). */
  notice(_msg: string): void {
    void this.#reload();
  }

  /** Each heartbeat: reload when the count moved, write the copy back if Redis lost it. */
  async sync(): Promise<void> {
    if (this.#closed) return;
    try {
      const v = await this.#registry.redis.hGet(this.#hash, versionField);
      if (v === null && this.#version !== undefined && Object.keys(this.#raw).length > 0) {
        const args = Object.entries(this.#raw).flat();
        const wrote = await this.#registry.redis.eval(restoreScript, {
          keys: [this.#hash],
          arguments: args,
        });
        if (wrote === 1) this.#log.info("host rules written back: redis had lost them");
        await this.#registry.notify(`${this.noticePrefix}${versionField}`);
      } else if (v !== this.#version) {
        await this.#reload();
      }
    } catch (err) {
      // Redis is down: requests keep the copy; the next heartbeat looks again.
      this.#log.debug("host rules not synced", { error: errorMessage(err) });
    }
  }

  /** One load at a time; a request meanwhile runs one more after it. Never throws. */
  #reload(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#loading) {
      this.#again = true;
      return this.#loading;
    }
    this.#loading = (async () => {
      do {
        this.#again = false;
        try {
          await this.#load();
        } catch (err) {
          // Redis is down: the copy stays; the next heartbeat compares the count again.
          this.#log.warn("host rules not reloaded", { error: errorMessage(err) });
        }
      } while (this.#again && !this.#closed);
    })().finally(() => this.#loading = undefined);
    return this.#loading;
  }

  override async close(): Promise<void> {
    this.#closed = true;
    await this.#loading;
  }

  /** Read the whole hash into a fresh copy; a malformed record is skipped with a warning. */
  async #load(): Promise<void> {
    const raw = await this.#registry.redis.hGetAll(this.#hash);
    const access = new Map<string, AccessEntry>();
    const rewrites = new Map<string, RewriteEntry>();
    for (const [field, text] of Object.entries(raw)) {
      const host = field.slice(2);
      try {
        if (field.startsWith("a:")) {
          const { origin, ...stored } = JSON.parse(text) as StoredHostAccess & Origin;
          access.set(host, { rule: HostAccess.fromStored(stored, this.digest!), origin });
        } else if (field.startsWith("w:")) {
          const { origin, ...spec } = JSON.parse(text) as HostRewriteSpec & Origin;
          rewrites.set(host, { rule: new HostRewrite(spec), spec, origin });
        }
      } catch (err) {
        this.#log.warn("host rule in redis skipped", { field, error: errorMessage(err) });
      }
    }
    const check = raw[keyCheckField];
    if (check !== undefined && check !== this.#keyCheck && !this.#keyWarned) {
      this.#keyWarned = true;
      this.#log.error(
        "host rules were stored under another cluster token: their credentials never match here",
      );
    }
    this.access = access;
    this.rewrites = rewrites;
    this.#raw = raw;
    this.#version = raw[versionField];
  }
}

interface Origin {
  origin: RouteOrigin;
}
