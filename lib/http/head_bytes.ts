/**
 * What the head parser (`head.ts`) and the head scans (`head_scan.ts`) share: the default
 * limits and the latin-1 decoding of head bytes (its own module so neither imports the other's).
 * @module
 */

/** Largest head accepted by default: start line plus header fields plus CRLFs. */
export const defaultMaxHeadBytes = 64 * 1024;
/** Most header fields accepted in one head by default. */
export const defaultMaxHeaders = 100;

/** Bytes per `String.fromCharCode` call (its arguments go on the stack). */
const charCodeChunkBytes = 8192;
const asciiDecoder = new TextDecoder();

/**
 * Bytes up to which `String.fromCharCode` beats a TextDecoder call (an op) for a short value
 * (a response's `Content-Length`, a chunk size).
 */
const shortDecodeBytes = 16;

/** Bytes to a string one char per byte (latin-1), fast for the common ASCII case. */
export function decodeLatin1(b: Uint8Array): string {
  if (b.length <= shortDecodeBytes) {
    return String.fromCharCode.apply(null, b as unknown as number[]);
  }
  let ascii = true;
  for (let i = 0; i < b.length && ascii; i++) ascii = b[i] < 0x80;
  if (ascii) return asciiDecoder.decode(b);
  let s = "";
  for (let i = 0; i < b.length; i += charCodeChunkBytes) {
    const part = b.subarray(i, i + charCodeChunkBytes) as unknown as number[];
    s += String.fromCharCode.apply(null, part);
  }
  return s;
}
