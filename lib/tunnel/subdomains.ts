/**
 * Subdomain claims (as ngrok's `--subdomain`): under `--domain t.example.com`, a client
 * holding an account token claims `name.t.example.com` or gets a random free name. One token
 * may own several names (each claim is its own session, keyed by token and name); names are
 * first come, stay reserved for the token while its client reconnects, and are released a
 * grace period after it left.
 * @module
 */

import { sha256Hex } from "../net/sha256.ts";
import { timingSafeEqual } from "../net/secret.ts";

/** The header a client names the subdomain it wants in (`*`: any free one). */
export const subdomainHeader = "x-tunnel-subdomain";

/** Default time a left client's names stay reserved for its token. */
export const defaultSubdomainGraceMs = 60_000;

/** Characters of a random subdomain. */
const randomLabelChars = 10;

/** Why a claim was refused (logged as `failure=`; the control path's answer). */
export type ClaimRefusal = "no-domain" | "not-an-account" | "bad-subdomain" | "host-taken";

/** A DNS label: 1-63 of a-z 0-9 and "-", not starting or ending with "-". */
export function isDnsLabel(name: string): boolean {
  return /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(name);
}

/** A random DNS label (lower-case letters and digits, starting with a letter). */
export function randomLabel(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(randomLabelChars));
  const alnum = "abcdefghijklmnopqrstuvwxyz0123456789";
  return [...bytes].map((b, i) => (i === 0 ? alnum[b % 26] : alnum[b % 36])).join("");
}

/** The SHA-256 hex digest of an account token: how the state file names a claim's owner. */
export function accountDigest(token: string): string {
  return digest(token);
}

/** The identifier a claim's session runs under: per token and name, never shown. */
export function claimIdentifier(token: string, name: string): string {
  return `${token}#${name}`;
}

/** Options of {@linkcode SubdomainClaims}. */
export interface SubdomainClaimsOptions {
  /** The parent domain names are claimed under (`t.example.com`). */
  domain: string;
  /** Account tokens allowed to claim. */
  tokens: string[];
  /** Reservation after a client left. @default 60000 */
  graceMs?: number;
}

/** The accounts, and the release timers of names whose client left. */
export class SubdomainClaims {
  /** The parent domain (lower case). */
  readonly domain: string;
  /** Reservation after a client left. */
  readonly graceMs: number;
  readonly #tokens = new Map<string, string>();
  readonly #release = new Map<string, ReturnType<typeof setTimeout>>();

  /** Claims under `opts.domain` for `opts.tokens`. */
  constructor(opts: SubdomainClaimsOptions) {
    this.domain = opts.domain.toLowerCase().replace(/\.$/, "");
    this.graceMs = opts.graceMs ?? defaultSubdomainGraceMs;
    for (const t of opts.tokens) this.#tokens.set(digest(t), t);
  }

  /** Whether `token` is an account token (constant time, through its digest). */
  isAccount(token: string): boolean {
    const t = this.#tokens.get(digest(token));
    return t !== undefined && timingSafeEqual(t, token);
  }

  /** The account token whose {@linkcode accountDigest} is `d`, if it is configured. */
  accountByDigest(d: string): string | undefined {
    return this.#tokens.get(d);
  }

  /**
   * The account token that claimed `name` if the claim identifier's SHA-256 digest is `d` (a
   * shared registry names hosts by digests only), else undefined: not a claim.
   */
  claimantOf(name: string, d: string): string | undefined {
    for (const t of this.#tokens.values()) {
      if (timingSafeEqual(digest(claimIdentifier(t, name)), d)) return t;
    }
    return undefined;
  }

  /** The public host of `name`. */
  hostOf(name: string): string {
    return `${name}.${this.domain}`;
  }

  /** The name to try for a wanted subdomain (`*`: a random one), or undefined if malformed. */
  nameFor(wanted: string): string | undefined {
    if (wanted === "*") return randomLabel();
    const name = wanted.trim().toLowerCase();
    return isDnsLabel(name) ? name : undefined;
  }

  /** The client of `host` is back (or new): keep the name. */
  keep(host: string): void {
    clearTimeout(this.#release.get(host));
    this.#release.delete(host);
  }

  /**
   * The client of `host` left: run `release` after `delayMs` (the grace period) unless kept
   * before.
   */
  leave(host: string, release: () => void, delayMs: number = this.graceMs): void {
    this.keep(host);
    const t = setTimeout(() => {
      this.#release.delete(host);
      release();
    }, delayMs);
    Deno.unrefTimer(t);
    this.#release.set(host, t);
  }

  /** Cancel every pending release (server close). */
  close(): void {
    for (const t of this.#release.values()) clearTimeout(t);
    this.#release.clear();
  }
}

function digest(s: string): string {
  return sha256Hex(s);
}
