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
 * A random secret of `bytes` bytes as lowercase hex (per-request tunnel keys).
 *
 * @example
 * ```ts
 * import { randomSecret } from "./auth.ts";
 * console.assert(randomSecret(16).length === 32);
 * ```
 */
export function randomSecret(bytes = 16): string {
  let hex = "";
  for (const x of crypto.getRandomValues(new Uint8Array(bytes))) hex += hexByte[x];
  return hex;
}
