/**
 * Helpers for the property-based codec tests (fast-check): input mutations, split sources,
 * and the "clean failure" check every codec must pass on hostile input.
 *
 * A decoder facing garbage may end in exactly three ways: a result, a typed error with a
 * machine-readable `reason` (a `ProtocolError` or one of the protocol's own error classes),
 * or a defined reply on the wire. Anything else escaping (TypeError, RangeError …), a hang,
 * or a huge allocation driven by a length field is a bug.
 */

import fc from "./_fc.ts";
import { NetError, ProtocolError } from "../lib/net/mod.ts";
import { MuxError } from "../lib/mux/mod.ts";
import { Socks5Error } from "../lib/socks5/mod.ts";
import { ChunkedSource } from "./_chunked.ts";
import { collectGarbage } from "./_util.ts";

/** Per-case time limit: an in-memory decode that takes longer than this is a hang. */
export const caseTimeoutMs = 2_000;

/**
 * fast-check parameters: a seed from `FUZZ_SEED` reproduces a run, `FUZZ_RUNS_SCALE` (default 4)
 * scales the run counts
 * (the defaults keep the whole fuzz suite well under a minute on a busy 2-core box).
 */
export function fuzzParams(runs: number): fc.Parameters<unknown> {
  const seedText = Deno.env.get("FUZZ_SEED");
  const scale = Number(Deno.env.get("FUZZ_RUNS_SCALE") ?? "4");
  return {
    numRuns: Math.max(1, Math.round(runs * scale)),
    ...(seedText ? { seed: Number(seedText) } : {}),
  };
}

/** Error classes that count as a clean, typed protocol failure. */
export function isCleanError(err: unknown): boolean {
  if (err instanceof ProtocolError || err instanceof MuxError || err instanceof Socks5Error) {
    return typeof err.reason === "string" && err.reason.length > 0;
  }
  return err instanceof NetError; // Socks5ReplyError: a defined failure reply
}

/** The outcome of one decode under a time limit. */
export type Outcome<T> =
  | { kind: "ok"; value: T }
  | { kind: "error"; error: Error & { reason: string } };

/**
 * Run `fn` under `caseTimeoutMs`; resolve its value or its clean error. Throws (failing the
 * property) on a hang or on any other exception.
 */
export async function clean<T>(fn: () => Promise<T> | T, what = "decode"): Promise<Outcome<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no result within ${caseTimeoutMs} ms (hang)`)),
      caseTimeoutMs,
    );
  });
  try {
    const value = await Promise.race([Promise.resolve().then(fn), hang]);
    return { kind: "ok", value };
  } catch (err) {
    if (isCleanError(err)) return { kind: "error", error: err as Error & { reason: string } };
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** One edit of a valid encoding. */
export type Mutation =
  | { op: "flip"; at: number; bit: number }
  | { op: "truncate"; at: number }
  | { op: "insert"; at: number; byte: number }
  | { op: "delete"; at: number }
  | { op: "max32"; at: number }
  | { op: "set"; at: number; byte: number };

/** Arbitrary mutations; positions are fractions of the input length. */
export const mutationArb: fc.Arbitrary<Mutation[]> = fc.array(
  fc.oneof(
    fc.record({
      op: fc.constant("flip" as const),
      at: fc.nat(),
      bit: fc.integer({ min: 0, max: 7 }),
    }),
    fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
    fc.record({
      op: fc.constant("insert" as const),
      at: fc.nat(),
      byte: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({ op: fc.constant("delete" as const), at: fc.nat() }),
    fc.record({ op: fc.constant("max32" as const), at: fc.nat() }),
    fc.record({
      op: fc.constant("set" as const),
      at: fc.nat(),
      byte: fc.integer({ min: 0, max: 255 }),
    }),
  ),
  { minLength: 1, maxLength: 4 },
);

/** Apply `muts` to a copy of `input`. `max32` writes 0xFFFFFFFF (a 4 GiB length field). */
export function mutate(input: Uint8Array, muts: readonly Mutation[]): Uint8Array {
  let b = input.slice();
  for (const m of muts) {
    const at = b.length === 0 ? 0 : m.at % (b.length + (m.op === "insert" ? 1 : 0));
    switch (m.op) {
      case "flip":
        if (b.length > 0) b[at] ^= 1 << m.bit;
        break;
      case "truncate":
        b = b.slice(0, at);
        break;
      case "insert": {
        const o = new Uint8Array(b.length + 1);
        o.set(b.subarray(0, at));
        o[at] = m.byte;
        o.set(b.subarray(at), at + 1);
        b = o;
        break;
      }
      case "delete":
        if (b.length > 0) b = Uint8Array.of(...b.subarray(0, at), ...b.subarray(at + 1));
        break;
      case "max32":
        for (let i = 0; i < 4 && at + i < b.length; i++) b[at + i] = 0xff;
        break;
      case "set":
        if (b.length > 0) b[at] = m.byte;
        break;
    }
  }
  return b;
}

/** Arbitrary read-split patterns for ChunkedSource: a cycle of chunk sizes. */
export const splitArb: fc.Arbitrary<number[]> = fc.array(fc.integer({ min: 1, max: 64 }), {
  minLength: 1,
  maxLength: 8,
});

/** A ChunkedSource over `data` whose reads cycle through `sizes`. */
export function splitSource(data: Uint8Array, sizes: readonly number[]): ChunkedSource {
  let i = 0;
  return new ChunkedSource(data, () => sizes[i++ % sizes.length]);
}

/** Arbitrary raw bytes (garbage input). */
export const bytesArb: fc.Arbitrary<Uint8Array> = fc.uint8Array({ maxLength: 512 });

/** Concatenate byte arrays. */
export function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

/** Memory growth while `fn` runs, in bytes, each side measured after a full GC. */
export async function heapGrowth(fn: () => Promise<unknown>): Promise<number> {
  collectGarbage();
  const before = Deno.memoryUsage();
  await fn();
  collectGarbage();
  const after = Deno.memoryUsage();
  return Math.max(
    after.heapUsed - before.heapUsed,
    after.external - before.external,
    after.rss - before.rss,
  );
}
