/**
 * lib/net sha256 replaced node:crypto's createHash/createHmac in lib/tunnel (identifier, rule
 * and credential digests), so a tunnel service loads no node layer: the same hex as
 * node:crypto's (the oracle here) for the FIPS 180-4 examples, every length across the block
 * and padding boundaries (0-200 bytes, and 1 MiB), UTF-8 strings, HMAC keys shorter, equal to
 * and longer than a block, and random inputs.
 */

import { createHash, createHmac } from "node:crypto";
import { assertEquals } from "./_assert.ts";
import fc from "./_fc.ts";
import { hmacSha256Hex, sha256, sha256Hex } from "../lib/net/sha256.ts";

const nodeHex = (d: string | Uint8Array) => createHash("sha256").update(d).digest("hex");
const nodeHmac = (k: string | Uint8Array, d: string | Uint8Array) =>
  createHmac("sha256", k).update(d).digest("hex");

Deno.test("sha256: FIPS 180-4 examples and every length across the block boundaries", () => {
  assertEquals(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assertEquals(
    sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  const bytes = Uint8Array.from({ length: 200 }, (_, i) => (i * 37 + 11) & 255);
  for (let n = 0; n <= 200; n++) {
    assertEquals(sha256Hex(bytes.subarray(0, n)), nodeHex(bytes.subarray(0, n)), `${n} bytes`);
  }
  const big = new Uint8Array(1 << 20).map((_, i) => i & 255);
  assertEquals(sha256Hex(big), nodeHex(big), "1 MiB");
  assertEquals(
    sha256("caf\u00e9 \u20ac \u{1f600}"),
    new Uint8Array(createHash("sha256").update("caf\u00e9 \u20ac \u{1f600}").digest()),
  );
});

Deno.test("sha256: HMAC with short, block-long and long keys", () => {
  for (const keyLen of [0, 1, 31, 32, 63, 64, 65, 100, 200]) {
    const key = Uint8Array.from({ length: keyLen }, (_, i) => (i * 13 + 5) & 255);
    const mac = hmacSha256Hex(key);
    for (const data of ["", "a", "user:pass", "x".repeat(64), "y".repeat(200), "t\u00f6k\u20acn"]) {
      assertEquals(mac(data), nodeHmac(key, data), `key ${keyLen}, data ${data.length}`);
    }
  }
  assertEquals(hmacSha256Hex("cluster-token-\u00e9")("pw"), nodeHmac("cluster-token-\u00e9", "pw"));
  // RFC 4231 test case 2.
  assertEquals(
    hmacSha256Hex("Jefe")("what do ya want for nothing?"),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
});

Deno.test("sha256: random inputs as node:crypto", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.string({ maxLength: 80 }), (b, s) => {
      assertEquals(sha256Hex(b), nodeHex(b));
      assertEquals(sha256Hex(s), nodeHex(s));
      assertEquals(hmacSha256Hex(b)(s), nodeHmac(b, s));
    }),
    { numRuns: 2_000 },
  );
});
