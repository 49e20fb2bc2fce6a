/**
 * The host registry: which virtual host belongs to which identifier, and where the client
 * holding that identifier is connected.
 *
 * Behind a small async interface so a later step can back it with Redis (several
 * tunnel-server instances sharing hosts and knowing which instance holds a client's
 * session) without touching the routing code. Live mux sessions are never stored here:
 * they are process-local objects kept by the TunnelServer.
 * @module
 */

import { sha256Hex } from "../net/sha256.ts";
import { timingSafeEqual } from "../net/secret.ts";
import { errorMessage } from "../net/mod.ts";

/**
 * A shared registry (Redis) is unreachable: it cannot take a new registration now (clients
 * are refused with reason `registry-unavailable`; held ones keep serving).
 */
export class RegistryUnavailableError extends Error {
  override name = "RegistryUnavailableError";
  /** `what` was being done when the store failed with `cause`. */
  constructor(what: string, cause: unknown) {
    super(`registry unavailable (${what}): ${errorMessage(cause)}`, { cause });
  }
}

/**
 * Retry-After (seconds) of the 503 a public request gets when the registry cannot say where
 * its client is (Redis down in a cluster): about when a reconnect attempt may have found it.
 */
export const registryRetryAfterS = 2;

/**
 * Where a host or a server-defined TCP tunnel came from: a flag (`--host`, `--tcp`), a hosts
 * file, the admin API (kept in the state file across restarts), or a client's subdomain claim.
 */
export type RouteOrigin = "flag" | "file" | "admin" | "claim";

/** One virtual host and the identifier (secret) of the client that serves it. */
export interface HostEntry {
  /** Lower-case host name without port, e.g. `app.example.com`. */
  host: string;
  /** The secret of the client serving it. */
  identifier: string;
}

/** Where a client holding an identifier is connected (no secret in here). */
export interface ClientRecord {
  /** SHA-256 prefix of the identifier: safe to log and show. */
  fingerprint: string;
  /** Server-local client connection number. */
  clientId: number;
  /** Which server instance holds the session (always "local" for the in-memory registry). */
  instance: string;
  /** Remote address of the client's transport connection. */
  remote: string;
  /** Epoch ms when it connected. */
  since: number;
}

/** Hosts and client locations; every method is async so a networked store can implement it. */
export interface Registry {
  /** This server instance's name in a shared registry (its ClientRecords carry it). */
  readonly instance?: string;
  /** Map `host` to `identifier`, replacing any previous mapping of that host. */
  addHost(host: string, identifier: string): Promise<void>;
  /** Forget `host`; false if it was not registered. */
  removeHost(host: string): Promise<boolean>;
  /**
   * The identifier of the entry `host` (normalised by {@linkcode normalizeHostPattern}: a
   * wildcard entry is found by its own name `*.example.com`), if any.
   */
  lookup(host: string): Promise<string | undefined>;
  /**
   * {@linkcode lookup} for routing one public request: a shared store may answer from a
   * cache it keeps coherent with change notices (stale for a bounded time at most).
   */
  route(host: string): Promise<string | undefined>;
  /** Every registered host. */
  listHosts(): Promise<HostEntry[]>;
  /** The hosts served by `identifier`. */
  hostsOf(identifier: string): Promise<string[]>;
  /**
   * Whether `identifier` is registered for at least one host, compared in constant time:
   * the lookup goes through its SHA-256 digest, then the stored secret is compared with
   * `timingSafeEqual`, so response time never depends on how much of a guess was right.
   */
  isKnown(identifier: string): Promise<boolean>;
  /** Record (or with `undefined`, clear) where the client of `identifier` is connected. */
  setClient(identifier: string, rec: ClientRecord | undefined): Promise<void>;
  /** Where the client of `identifier` is connected, if anywhere. */
  getClient(identifier: string): Promise<ClientRecord | undefined>;
  /** Every connected client. */
  listClients(): Promise<ClientRecord[]>;
}

/**
 * Prefix of the stand-in a shared registry (redis_registry.ts) returns for an identifier it
 * keeps only as a digest and this process has never seen: `sha256:<hex digest>`.
 */
export const digestRefPrefix = "sha256:";

/** The stand-in identifier of SHA-256 hex digest `d` (see {@linkcode digestRefPrefix}). */
export function digestRef(d: string): string {
  return digestRefPrefix + d;
}

/** The SHA-256 hex digest of an identifier (or the one a {@linkcode digestRef} names). */
export function identifierDigest(identifier: string): string {
  return identifier.startsWith(digestRefPrefix) && identifier.length === 71
    ? identifier.slice(7)
    : sha256Hex(identifier);
}

/**
 * Short, non-reversible tag of an identifier for logs and the admin API (12 hex digits);
 * a {@linkcode digestRef} stand-in has the same tag as the identifier it stands for.
 */
export function fingerprint(identifier: string): string {
  if (identifier.startsWith(digestRefPrefix) && identifier.length === 71) {
    return identifier.slice(7, 19);
  }
  return sha256Hex(identifier).slice(0, 12);
}

function digest(identifier: string): string {
  return sha256Hex(identifier);
}

/**
 * Normalise a Host header or host name: lower case, port and trailing dot removed,
 * IPv6 brackets kept. Returns "" for an empty or malformed value.
 */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end < 0 ? "" : h.slice(0, end + 1);
  }
  const colon = h.indexOf(":");
  if (colon >= 0) h = h.slice(0, colon);
  if (h.endsWith(".")) h = h.slice(0, -1);
  return /^[a-z0-9._-]+$/.test(h) ? h : "";
}

/**
 * {@linkcode normalizeHost} of a host name, or of a wildcard entry `*.example.com` (which
 * routes every name under example.com that has no entry of its own). "" when malformed.
 */
export function normalizeHostPattern(host: string): string {
  const t = host.trim();
  if (!t.startsWith("*.")) return normalizeHost(t);
  const rest = normalizeHost(t.slice(2));
  return rest && !rest.startsWith("[") && !rest.includes("*") ? `*.${rest}` : "";
}

/** The port written in a Host header (`app.example.com:3000` -> "3000"), or "" if none. */
export function hostPort(host: string): string {
  const h = host.trim();
  const m = h.startsWith("[") ? /\]:(\d{1,5})$/.exec(h) : /:(\d{1,5})$/.exec(h);
  return m ? m[1] : "";
}

/** A Registry in process memory: the default for a single tunnel-server. */
export class MemoryRegistry implements Registry {
  #hosts = new Map<string, string>();
  /** digest(identifier) -> identifier, for constant-time authentication. */
  #byDigest = new Map<string, { identifier: string; hosts: number }>();
  #clients = new Map<string, ClientRecord>();

  addHost(host: string, identifier: string): Promise<void> {
    const h = normalizeHostPattern(host);
    if (!h) return Promise.reject(new RangeError(`bad host name: ${JSON.stringify(host)}`));
    if (!identifier) return Promise.reject(new RangeError("empty identifier"));
    const prev = this.#hosts.get(h);
    if (prev !== undefined) this.#unref(prev);
    this.#hosts.set(h, identifier);
    const d = digest(identifier);
    const e = this.#byDigest.get(d);
    if (e) e.hosts++;
    else this.#byDigest.set(d, { identifier, hosts: 1 });
    return Promise.resolve();
  }

  #unref(identifier: string): void {
    const d = digest(identifier);
    const e = this.#byDigest.get(d);
    if (e && --e.hosts <= 0) this.#byDigest.delete(d);
  }

  removeHost(host: string): Promise<boolean> {
    const h = normalizeHostPattern(host);
    const prev = this.#hosts.get(h);
    if (prev === undefined) return Promise.resolve(false);
    this.#hosts.delete(h);
    this.#unref(prev);
    return Promise.resolve(true);
  }

  lookup(host: string): Promise<string | undefined> {
    return Promise.resolve(this.#hosts.get(normalizeHostPattern(host)));
  }

  route(host: string): Promise<string | undefined> {
    return this.lookup(host);
  }

  listHosts(): Promise<HostEntry[]> {
    return Promise.resolve([...this.#hosts].map(([host, identifier]) => ({ host, identifier })));
  }

  hostsOf(identifier: string): Promise<string[]> {
    const out: string[] = [];
    for (const [h, id] of this.#hosts) if (timingSafeEqual(id, identifier)) out.push(h);
    return Promise.resolve(out);
  }

  isKnown(identifier: string): Promise<boolean> {
    const e = this.#byDigest.get(digest(identifier));
    return Promise.resolve(e !== undefined && timingSafeEqual(e.identifier, identifier));
  }

  setClient(identifier: string, rec: ClientRecord | undefined): Promise<void> {
    if (rec) this.#clients.set(digest(identifier), rec);
    else this.#clients.delete(digest(identifier));
    return Promise.resolve();
  }

  getClient(identifier: string): Promise<ClientRecord | undefined> {
    return Promise.resolve(this.#clients.get(digest(identifier)));
  }

  listClients(): Promise<ClientRecord[]> {
    return Promise.resolve([...this.#clients.values()]);
  }
}
