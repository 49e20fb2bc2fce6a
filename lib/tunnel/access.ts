/**
 * Per-host access rules of a tunnel server: basic auth, bearer tokens and a source CIDR allow
 * list, checked at the server before a request reaches the client (401/403). Credentials are
 * compared in constant time and never shown (the admin API lists only how many there are).
 * @module
 */

import { Acl } from "../net/acl.ts";
import { timingSafeEqual } from "../net/secret.ts";
import { bearerToken } from "./forward.ts";

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

/** One host's compiled rules. */
export class HostAccess {
  readonly #basic: string[];
  readonly #bearer: string[];
  readonly #allow: Acl | undefined;
  readonly #allowText: string[];

  /** Check and compile `spec`; throws {@linkcode HostAccessError} naming the bad value. */
  constructor(spec: HostAccessSpec) {
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
    const allow = spec.allow ?? [];
    for (const a of allow) {
      if (typeof a !== "string" || !cidrLike.test(a)) {
        throw new HostAccessError(`allow must be addresses or CIDRs, got ${JSON.stringify(a)}`);
      }
    }
    this.#basic = (spec.basic ?? []).map((b) => btoa(b));
    this.#bearer = [...spec.bearer ?? []];
    try {
      this.#allow = allow.length > 0 ? new Acl({ allow }) : undefined;
    } catch (err) {
      throw new HostAccessError(`allow: ${(err as Error).message}`);
    }
    this.#allowText = allow;
    if (!this.#basic.length && !this.#bearer.length && !this.#allow) {
      throw new HostAccessError("access rules need basic, bearer or allow");
    }
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
    // Every candidate is compared, so the time does not tell which one was close.
    let ok = false;
    for (const b of this.#basic) ok = (basic !== undefined && timingSafeEqual(basic, b)) || ok;
    for (const t of this.#bearer) ok = (bearer !== undefined && timingSafeEqual(bearer, t)) || ok;
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
