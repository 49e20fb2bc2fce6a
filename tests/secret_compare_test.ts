/**
 * lib/net `timingSafeEqual` compares secrets longer than its 1 KiB pad by hand (it hashed them
 * with node:crypto before): equal, unequal at the first, a middle and the last byte, one a
 * prefix of the other, zero bytes past the end, either side long, at the pad's edge (1,024 and
 * 1,025 bytes), strings and bytes, and random pairs against plain equality.
 */

import { assert, assertEquals } from "./_assert.ts";
import fc from "./_fc.ts";
import { timingSafeEqual } from "../lib/net/secret.ts";

const bytes = (n: number, seed = 7) =>
  Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);
const flip = (b: Uint8Array, at: number) => {
  const c = b.slice();
  c[at] ^= 1;
  return c;
};
const plainEqual = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((v, i) => v === b[i]);

Deno.test("timingSafeEqual: equal, unequal and different lengths, short and long", () => {
  for (const n of [0, 1, 8, 1023, 1024, 1025, 4096, 70_000]) {
    const a = bytes(n);
    assert(timingSafeEqual(a, a.slice()), `equal ${n}`);
    for (const at of n === 0 ? [] : [0, n >> 1, n - 1]) {
      assert(!timingSafeEqual(a, flip(a, at)), `${n} differ at ${at}`);
      assert(!timingSafeEqual(flip(a, at), a), `${n} differ at ${at}, swapped`);
    }
    const longer = new Uint8Array(n + 1);
    longer.set(a); // one zero byte more: only the lengths differ
    assert(!timingSafeEqual(a, longer), `${n} vs ${n + 1} (zero)`);
    assert(!timingSafeEqual(longer, a), `${n + 1} (zero) vs ${n}`);
    assert(!timingSafeEqual(a, bytes(n + 3000)), `${n} vs ${n + 3000}`);
    assert(!timingSafeEqual(bytes(n + 3000), a), `${n + 3000} vs ${n}`);
  }
  const long = "s3cret-".repeat(300); // 2,100 characters
  assert(timingSafeEqual(long, long.slice()));
  assert(timingSafeEqual(long, new TextEncoder().encode(long)));
  assert(!timingSafeEqual(long, long.slice(0, -1)));
  assert(!timingSafeEqual(long + "\0", long));
  assert(!timingSafeEqual(long.slice(0, -1) + "_", long));
  assert(timingSafeEqual("tök€n".repeat(400), "tök€n".repeat(400)));
});

Deno.test("timingSafeEqual: random pairs as plain equality", () => {
  const len = fc.oneof(
    fc.nat(40),
    fc.integer({ min: 1000, max: 1100 }),
    fc.integer({
      min: 2000,
      max: 3000,
    }),
  );
  const pair = len.chain((n) =>
    fc.tuple(
      fc.uint8Array({ minLength: n, maxLength: n }),
      fc.oneof(
        fc.constant<[number, number] | null>(null),
        fc.tuple(fc.nat(n + 2), fc.integer({ min: -2, max: 2 })),
      ),
    )
  ).map(([a, change]) => {
    if (change === null) return [a, a.slice()] as const;
    const [at, lenDelta] = change;
    const b = new Uint8Array(Math.max(0, a.length + lenDelta));
    b.set(a.subarray(0, b.length));
    if (at < b.length) b[at] ^= 0x80;
    return [a, b] as const;
  });
  fc.assert(
    fc.property(pair, ([a, b]) => {
      assertEquals(timingSafeEqual(a, b), plainEqual(a, b));
    }),
    { numRuns: 3_000 },
  );
});
