/**
 * Byte-array helpers every layer needs: join pieces into one array (a handshake replayed in
 * front of what followed it, a frame head and its body).
 * @module
 */

/**
 * Join `parts` into one new array. One part (or all but one empty) is returned as it is,
 * without a copy.
 *
 * @example
 * ```ts
 * import { concatBytes } from "./bytes.ts";
 * console.assert(concatBytes(new Uint8Array([1]), new Uint8Array([2, 3])).length === 3);
 * ```
 */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  return concatList(parts);
}

/**
 * {@linkcode concatBytes} over a list (no spread: safe for lists of any length, such as the
 * chunks a test collected one byte at a time).
 */
export function concatList(parts: readonly Uint8Array[]): Uint8Array {
  const nonEmpty = parts.filter((p) => p.length > 0);
  if (nonEmpty.length === 1) return nonEmpty[0];
  let total = 0;
  for (const p of nonEmpty) total += p.length;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of nonEmpty) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
