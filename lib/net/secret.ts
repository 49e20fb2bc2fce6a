/**
 * Constant-time comparison of secrets (tokens, passwords), so a client cannot learn a
 * secret byte by byte from how long a rejection takes.
 * @module
 */

const encoder = new TextEncoder();

/**
 * Fewest characters a shared secret (depot, fusion and link tokens, the admin token, an exit's
 * SOCKS password, a tunnel identifier) may have: a one-letter token is guessed at once, limiter
 * or not. The tunnel identifier's 8 (lib/tunnel `minIdentifierChars`), so deployments that
 * satisfy one satisfy both; `openssl rand -hex 16` gives 32.
 */
export const minSecretChars = 8;

/**
 * Secrets up to this many bytes are compared over exactly this many (zero-padded), so the
 * work does not depend on where they differ nor on their lengths; longer ones over the longer
 * one's length.
 */
const paddedCompareBytes = 1024;
const padA = new Uint8Array(paddedCompareBytes);
const padB = new Uint8Array(paddedCompareBytes);

/**
 * Whether `a` equals `b`, in time independent of where they differ and of their lengths.
 *
 * Both sides are copied into zero-padded 1 KiB buffers and compared over all of them (their
 * lengths folded into the result), so a length mismatch leaks nothing either. Longer inputs
 * are compared over the longer one's length, each side read as zeros past its end: the time
 * then tells the longer length and nothing of the bytes (their SHA-256 hashes, compared
 * before, took time in proportion to the lengths too, and loaded node:crypto into every
 * service). Hashing every comparison cost ~25 µs per call here; the padded loop ~1 µs.
 *
 * @example
 * ```ts
 * import { timingSafeEqual } from "./secret.ts";
 * console.assert(timingSafeEqual("s3cret", "s3cret"));
 * console.assert(!timingSafeEqual("s3cret", "s3cre"));
 * console.assert(!timingSafeEqual("s3cret", "s3cret\0"));
 * ```
 */
export function timingSafeEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const ba = typeof a === "string" ? encoder.encode(a) : a;
  const bb = typeof b === "string" ? encoder.encode(b) : b;
  if (ba.length > paddedCompareBytes || bb.length > paddedCompareBytes) return equalLong(ba, bb);
  padA.set(ba);
  padB.set(bb);
  let diff = ba.length ^ bb.length;
  for (let i = 0; i < paddedCompareBytes; i++) diff |= padA[i] ^ padB[i];
  // Zeroed again at once: no secret lingers here, and the next call starts from zeros.
  padA.fill(0);
  padB.fill(0);
  return diff === 0;
}

/** {@linkcode timingSafeEqual} past `paddedCompareBytes`: over the longer length, zeros past
 * the shorter one's end, the lengths folded in. */
function equalLong(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.max(a.length, b.length);
  let diff = a.length ^ b.length;
  for (let i = 0; i < n; i++) diff |= (i < a.length ? a[i] : 0) ^ (i < b.length ? b[i] : 0);
  return diff === 0;
}

/**
 * Whether `a` equals `b`, for secrets whose length is public (keys a server generated itself,
 * always as long): constant time over the characters, a length mismatch false at once. The
 * hashing {@linkcode timingSafeEqual} once did cost ~25 µs per call here (two SHA-256
 * hashes), a share of a short tunnel's set-up; this costs well under one.
 *
 * @example
 * ```ts
 * import { equalFixedLength } from "./secret.ts";
 * console.assert(equalFixedLength("0f1e2d3c", "0f1e2d3c"));
 * console.assert(!equalFixedLength("0f1e2d3c", "0f1e2d3d"));
 * ```
 */
export function equalFixedLength(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * An `authenticate(username, password)` callback accepting exactly one pair, compared in
 * constant time (both fields always compared, so timing does not tell which one was wrong).
 * Used by the SOCKS5 and HTTP proxy servers.
 */
export function staticCredentials(
  username: string,
  password: string,
): (u: string, p: string) => boolean {
  return (u, p) => {
    const userOk = timingSafeEqual(u, username);
    const passOk = timingSafeEqual(p, password);
    return userOk && passOk;
  };
}
