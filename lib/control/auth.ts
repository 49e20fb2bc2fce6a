/**
 * Constant-time secret comparison for control handshakes (tokens, per-request keys,
 * SOCKS passwords) and random per-request secrets. `timingSafeEqual` is lib/net's one
 * helper, re-exported so control users need a single import.
 * @module
 */

export { timingSafeEqual } from "../net/secret.ts";

/** Two hex digits of each byte value (a lookup: formatting each byte was most of the cost). */
const hexByte: readonly string[] = Array.from(
  { length: 256 },
  (_, x) => x.toString(16).padStart(2, "0"),
);

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
  if (bytes > randomBytes.length) {
    let hex = "";
    for (const x of crypto.getRandomValues(new Uint8Array(bytes))) hex += hexByte[x];
    return hex;
  }
  if (randomAt + bytes > randomBytes.length) {
    crypto.getRandomValues(randomBytes);
    randomAt = 0;
  }
  let hex = "";
  for (let i = randomAt; i < randomAt + bytes; i++) hex += hexByte[randomBytes[i]];
  randomBytes.fill(0, randomAt, randomAt + bytes); // handed out: not kept
  randomAt += bytes;
  return hex;
}
