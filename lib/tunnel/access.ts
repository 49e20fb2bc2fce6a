/**
 * Per-host access rules of a tunnel server: basic auth, bearer tokens and a source CIDR allow
 * list, checked at the server before a request reaches the client (401/403). Credentials are
 * kept only as keyed digests (HMAC-SHA-256: a cluster shares them through Redis without the
 * secrets, see host_rules.ts), compared in constant time and never shown (the admin API lists
 * only how many there are).
 * @module
 */

import { hmacSha256Hex } from "../net/sha256.ts";
import { Acl } from "../net/acl.ts";
import { timingSafeEqual } from "../net/secret.ts";
import { bearerToken } from "./forward.ts";

/**
 * What a credential is kept and compared as: an HMAC-SHA-256 (hex) under a key. Every instance
 * of a cluster must use the same key (the cluster token), else a rule set on one never admits
 * a request on another.
 */
export type CredentialDigest = (credential: string) => string;

/** A {@linkcode CredentialDigest} under `key`. */
export function credentialDigest(key: string | Uint8Array): CredentialDigest {
  return hmacSha256Hex(key);
}

/** This process's own key: rules that never leave it (flags, state file, a client's own). */
const processDigest = credentialDigest(crypto.getRandomValues(new Uint8Array(32)));

/** The rules of one host, as flags and the admin API write them. */
export interface HostAccessSpec {
  /** `user:password` pairs, any of which passes (HTTP Basic). */
  basic?: string[];
  /** Bearer tokens, any of which passes. */
  bearer?: string[];
  /** Source addresses or CIDRs allowed (others: 403), checked before credentials. */
  allow?: string[];
}

/** What the admin API shows of a host's rules (no secret). */
export interface HostAccessInfo {
  basic: number;
  bearer: number;
  allow: string[];
}

/** One host's rules as a shared store keeps them: credentials as digests, never in clear. */
export interface StoredHostAccess {
  /** Digests of `basic:<base64 of user:password>` (the Authorization value's token). */
  basic: string[];
  /** Digests of `bearer:<token>`. */
  bearer: string[];
  /** Source addresses or CIDRs allowed. */
  allow: string[];
}

/** A refused request: its status, the reason logged, and the challenge of a 401. */
export interface AccessDenied {
  status: 401 | 403;
  reason: "source-not-allowed" | "no-credentials" | "wrong-credentials";
  /** `WWW-Authenticate` value of a 401. */
  challenge?: string;
}

/** A rule that cannot be used. */
export class HostAccessError extends Error {
  override name = "HostAccessError";
}

const cidrLike = /^[0-9a-f:.]+(\/\d{1,3})?$/i;

const hexDigest = /^[0-9a-f]{64}$/;

function checkAllow(allow: unknown): string[] {
  if (!Array.isArray(allow)) throw new HostAccessError("allow must be a list");
  for (const a of allow) {
    if (typeof a !== "string" || !cidrLike.test(a)) {
      throw new HostAccessError(`allow must be addresses or CIDRs, got ${JSON.stringify(a)}`);
    }
  }
  return allow;
}

/** One host's compiled rules. */
export class HostAccess {
  readonly #basic: string[];
  readonly #bearer: string[];
  readonly #allow: Acl | undefined;
  readonly #allowText: string[];
  readonly #digest: CredentialDigest;

  /**
   * Check and compile `spec` (its credentials kept only as `digest`s of them); throws
   * {@linkcode HostAccessError} naming the bad value. `stored`: already digested rules
   * ({@linkcode fromStored}), used instead of `spec`.
   */
  constructor(
    spec: HostAccessSpec,
    digest: CredentialDigest = processDigest,
    stored?: StoredHostAccess,
  ) {
    this.#digest = digest;
    if (stored) {
      this.#basic = stored.basic;
      this.#bearer = stored.bearer;
      this.#allowText = stored.allow;
    } else {
      for (const b of spec.basic ?? []) {
        if (typeof b !== "string" || b.indexOf(":") <= 0) {
          throw new HostAccessError("basic credentials must be user:password");
        }
      }
      for (const t of spec.bearer ?? []) {
        if (typeof t !== "string" || t.length < 8) {
          throw new HostAccessError("bearer tokens need 8+ characters");
        }
      }
      this.#basic = (spec.basic ?? []).map((b) => digest(`basic:${btoa(b)}`));
      this.#bearer = (spec.bearer ?? []).map((t) => digest(`bearer:${t}`));
      this.#allowText = checkAllow(spec.allow ?? []);
    }
    this.#allow = this.#compileAllow();
  }

  /**
   * The rules a shared store kept ({@linkcode toStored}), checked against credentials through
   * `digest` (the key they were stored under); throws {@linkcode HostAccessError} when
   * malformed.
   */
  static fromStored(stored: StoredHostAccess, digest: CredentialDigest): HostAccess {
    const digests = (v: unknown, what: string): string[] => {
      if (!Array.isArray(v) || v.some((d) => typeof d !== "string" || !hexDigest.test(d))) {
        throw new HostAccessError(`stored ${what} must be a list of SHA-256 hex digests`);
      }
      return v;
    };
    if (typeof stored !== "object" || stored === null) {
      throw new HostAccessError("stored rules must be {basic, bearer, allow}");
    }
    return new HostAccess({}, digest, {
      basic: digests(stored.basic, "basic"),
      bearer: digests(stored.bearer, "bearer"),
      allow: checkAllow(stored.allow),
    });
  }

  /** The rules with their credentials as digests: what a shared store keeps. */
  toStored(): StoredHostAccess {
    return { basic: [...this.#basic], bearer: [...this.#bearer], allow: [...this.#allowText] };
  }

  #compileAllow(): Acl | undefined {
    let acl: Acl | undefined;
    try {
      acl = this.#allowText.length > 0 ? new Acl({ allow: this.#allowText }) : undefined;
    } catch (err) {
      throw new HostAccessError(`allow: ${(err as Error).message}`);
    }
    if (!this.#basic.length && !this.#bearer.length && !acl) {
      throw new HostAccessError("access rules need basic, bearer or allow");
    }
    return acl;
  }

  /** Whether a request from `ip` with this `Authorization` value may pass (undefined: yes). */
  check(authorization: string | undefined, ip: string): AccessDenied | undefined {
    if (this.#allow && !this.#allow.check({ host: ip, port: 0 }).allowed) {
      return { status: 403, reason: "source-not-allowed" };
    }
    if (!this.#basic.length && !this.#bearer.length) return undefined;
    const auth = authorization ?? "";
    const basic = /^basic\s+(\S+)\s*$/i.exec(auth)?.[1];
    const bearer = bearerToken(auth);
    // One digest per credential presented; every stored one is compared, so the time does not
    // tell which one was close.
    let ok = false;
    if (basic !== undefined && this.#basic.length) {
      const d = this.#digest(`basic:${basic}`);
      for (const b of this.#basic) ok = timingSafeEqual(d, b) || ok;
    }
    if (bearer !== undefined && this.#bearer.length) {
      const d = this.#digest(`bearer:${bearer}`);
      for (const t of this.#bearer) ok = timingSafeEqual(d, t) || ok;
    }
    if (ok) return undefined;
    return {
      status: 401,
      reason: basic === undefined && bearer === undefined ? "no-credentials" : "wrong-credentials",
      challenge: this.#basic.length ? `Basic realm="tunnel", charset="UTF-8"` : "Bearer",
    };
  }

  /** The rules without their secrets. */
  info(): HostAccessInfo {
    return { basic: this.#basic.length, bearer: this.#bearer.length, allow: this.#allowText };
  }
}

/**
 * One `--host-access` value: `vhost=basic:user:password`, `vhost=bearer:token` or
 * `vhost=allow:cidr` (repeat the flag to combine); returns the host and the rule added.
 */
export function parseHostAccessFlag(value: string): [string, HostAccessSpec] {
  const m = /^([^=]+)=(basic|bearer|allow):(.+)$/.exec(value);
  if (!m) {
    throw new HostAccessError(
      `--host-access must be vhost=basic:user:password, vhost=bearer:token or vhost=allow:cidr`,
    );
  }
  return [m[1], { [m[2]]: [m[3]] }];
}
