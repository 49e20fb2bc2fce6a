/**
 * Constant-time secret comparison for control handshakes (tokens, per-request keys,
 * SOCKS passwords) and random per-request secrets. `timingSafeEqual` is lib/net's one
 * helper, re-exported so control users need a single import.
 * @module
 */

export { timingSafeEqual } from "../net/secret.ts";

/** The two char codes of each byte value's lowercase hex digits, byte x at 2x and 2x + 1. */
const hexCodes = new Uint16Array(512);
for (let x = 0; x < 256; x++) {
  const digits = x.toString(16).padStart(2, "0");
  hexCodes[2 * x] = digits.charCodeAt(0);
  hexCodes[2 * x + 1] = digits.charCodeAt(1);
}
/** Char codes of a hex string being built (reused: the functions below never yield). */
const hexScratch: number[] = [];

/**
 * `b[at, at + n)` as lowercase hex. Built from its char codes in one string: appending two
 * digits at a time made a chain of 2n partial strings to flatten (twice the time and ~700
 * bytes of garbage per 16-byte key; depot decodes keys on every request).
 *
 * @example
 * ```ts
 * import { hexOf } from "./auth.ts";
 * console.assert(hexOf(new Uint8Array([0, 0xab, 0x5]), 1, 2) === "ab05");
 * ```
 */
export function hexOf(b: Uint8Array, at = 0, n = b.length - at): string {
  // Long inputs go in pieces: apply() passes every code as an argument.
  if (n > 4096) return hexOf(b, at, 4096) + hexOf(b, at + 4096, n - 4096);
  hexScratch.length = 2 * n;
  for (let i = 0; i < n; i++) {
    const x = 2 * b[at + i];
    hexScratch[2 * i] = hexCodes[x];
    hexScratch[2 * i + 1] = hexCodes[x + 1];
  }
  return String.fromCharCode.apply(null, hexScratch);
}

/**
 * Random bytes drawn 4 KiB at a time, each handed out once: a `getRandomValues` call per
 * secret was a measurable share of a depot request's cost (one key per request).
 */
const randomBytes = new Uint8Array(4096);
/** Where the unused part of {@linkcode randomBytes} starts (its length: none left). */
let randomAt = randomBytes.length;

/**
 * A random secret of `bytes` bytes as lowercase hex (per-request tunnel keys).
 *
 * @example
 * ```ts
 * import { randomSecret } from "./auth.ts";
 * console.assert(randomSecret(16).length === 32);
 * ```
 */
export function randomSecret(bytes = 16): string {
  if (bytes > randomBytes.length) return hexOf(crypto.getRandomValues(new Uint8Array(bytes)));
  if (randomAt + bytes > randomBytes.length) {
    crypto.getRandomValues(randomBytes);
    randomAt = 0;
  }
  const hex = hexOf(randomBytes, randomAt, bytes);
  randomBytes.fill(0, randomAt, randomAt + bytes); // handed out: not kept
  randomAt += bytes;
  return hex;
}
