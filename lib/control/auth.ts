/**
 * Constant-time secret comparison for control handshakes (tokens, per-request keys,
 * SOCKS passwords), and random secrets for per-request keys.
 * @module
 */

import { createHash, timingSafeEqual as nodeTimingSafeEqual } from "node:crypto";

const encoder = new TextEncoder();

/**
 * Whether `a` equals `b`, in time independent of where they differ and of their lengths:
 * both are hashed with SHA-256 first, so the comparison always runs over 32 bytes.
 *
 * @example
 * ```ts
 * import { timingSafeEqual } from "./auth.ts";
 * console.assert(timingSafeEqual("s3cret", "s3cret"));
 * console.assert(!timingSafeEqual("s3cret", "s3cre"));
 * ```
 */
export function timingSafeEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const ha = createHash("sha256").update(typeof a === "string" ? encoder.encode(a) : a).digest();
  const hb = createHash("sha256").update(typeof b === "string" ? encoder.encode(b) : b).digest();
  return nodeTimingSafeEqual(ha, hb);
}

/** A random secret of `bytes` bytes as lowercase hex (per-request tunnel keys). */
export function randomSecret(bytes = 16): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
