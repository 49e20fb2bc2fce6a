/**
 * SHA-256 and HMAC-SHA-256 (FIPS 180-4, RFC 2104), synchronous, for the digests lib/tunnel
 * keeps of identifiers, rules and credentials. Web Crypto's `crypto.subtle` is asynchronous,
 * and those digests are computed inside synchronous APIs (a registry lookup, an access check);
 * node:crypto's `createHash` would load Deno's node layer into the service (~2 MB of heap that
 * every full GC marks, bench/RESULTS.md weight2). Strings are hashed as UTF-8, as node's
 * `update(string)` does. Not for secrets' comparison: see lib/net `timingSafeEqual`.
 * tests/sha256_test.ts holds both to node:crypto's on inputs across the block boundaries.
 * @module
 */

const encoder = new TextEncoder();
/** Bytes per SHA-256 block. */
const blockBytes = 64;

/** Round constants: the first 32 bits of the fractional parts of the cube roots of the first 64 primes. */
const k = new Uint32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);
/** Initial hash value: the first 32 bits of the fractional parts of the square roots of the first 8 primes. */
const initial = [
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
];
/** The message schedule, reused by every call (the functions here never re-enter). */
const w = new Uint32Array(64);

const bytesOf = (data: string | Uint8Array) =>
  typeof data === "string" ? encoder.encode(data) : data;

/** SHA-256 of the concatenation of `parts`. */
function digestParts(parts: Uint8Array[]): Uint8Array {
  const length = parts.reduce((n, p) => n + p.length, 0);
  // The message, a 0x80 byte, zeros, and its length in bits (64-bit big-endian), in blocks.
  const padded = new Uint8Array(Math.ceil((length + 9) / blockBytes) * blockBytes);
  let at = 0;
  for (const p of parts) {
    padded.set(p, at);
    at += p.length;
  }
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000)); // length * 8, high word
  view.setUint32(padded.length - 4, (length * 8) >>> 0);
  const h = initial.slice();
  for (let block = 0; block < padded.length; block += blockBytes) {
    for (let t = 0, i = block; t < 16; t++, i += 4) {
      w[t] = (padded[i] << 24) | (padded[i + 1] << 16) | (padded[i + 2] << 8) | padded[i + 3];
    }
    for (let t = 16; t < 64; t++) {
      const a = w[t - 15], b = w[t - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let t = 0; t < 64; t++) {
      const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + s1 + ch + k[t] + w[t]) | 0;
      const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (s0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h[0] = (h[0] + a) | 0;
    h[1] = (h[1] + b) | 0;
    h[2] = (h[2] + c) | 0;
    h[3] = (h[3] + d) | 0;
    h[4] = (h[4] + e) | 0;
    h[5] = (h[5] + f) | 0;
    h[6] = (h[6] + g) | 0;
    h[7] = (h[7] + hh) | 0;
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) outView.setUint32(i * 4, h[i] >>> 0);
  return out;
}

/** Two lowercase hex digits of each byte value. */
const hexPairs = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/** Lowercase hex of `bytes`. */
function hex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += hexPairs[bytes[i]];
  return s;
}

/**
 * SHA-256 of `data` (a string as UTF-8) as 32 bytes.
 *
 * @example
 * ```ts
 * import { sha256Hex } from "./sha256.ts";
 * console.assert(sha256Hex("abc") ===
 *   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
 * ```
 */
export function sha256(data: string | Uint8Array): Uint8Array {
  return digestParts([bytesOf(data)]);
}

/** SHA-256 of `data` (a string as UTF-8) as lowercase hex, as node's `digest("hex")`. */
export function sha256Hex(data: string | Uint8Array): string {
  return hex(sha256(data));
}

/**
 * HMAC-SHA-256 under `key` (a string as UTF-8), the pads worked out once: returns the
 * function of a message (a string as UTF-8) to its MAC as lowercase hex.
 */
export function hmacSha256Hex(key: string | Uint8Array): (data: string | Uint8Array) => string {
  let k0 = bytesOf(key);
  if (k0.length > blockBytes) k0 = sha256(k0); // RFC 2104: a long key is hashed first
  const inner = new Uint8Array(blockBytes).fill(0x36);
  const outer = new Uint8Array(blockBytes).fill(0x5c);
  for (let i = 0; i < k0.length; i++) {
    inner[i] ^= k0[i];
    outer[i] ^= k0[i];
  }
  return (data) => hex(digestParts([outer, digestParts([inner, bytesOf(data)])]));
}
