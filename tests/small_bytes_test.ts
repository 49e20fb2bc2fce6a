/** lib/net smallBytes: small arrays carved from a shared slab never overlap and start zeroed. */
import { smallBytes, smallBytesMax } from "../lib/net/bytes.ts";
import { assert, assertEquals } from "./_assert.ts";

Deno.test("smallBytes: zeroed, disjoint views across slabs; large ones get their own buffer", () => {
  const got: Uint8Array[] = [];
  for (let i = 0; i < 2_000; i++) {
    const n = i % 97;
    const a = smallBytes(n);
    assertEquals(a.length, n);
    assert(a.every((x) => x === 0), "a fresh array is zeroed");
    a.fill(i % 251 + 1); // a later array must not see these bytes
    got.push(a);
  }
  // Writing each one never changed another: every array still holds only its own value.
  for (const [i, a] of got.entries()) assert(a.every((x) => x === i % 251 + 1), `array ${i}`);
  const big = smallBytes(smallBytesMax + 1);
  assertEquals(big.byteOffset, 0);
  assertEquals(big.buffer.byteLength, smallBytesMax + 1);
});
