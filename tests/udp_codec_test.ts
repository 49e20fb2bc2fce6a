/**
 * The SOCKS5 UDP request header (RFC 1928 §7, lib/socks5 `decodeSocks5Udp`/`encodeSocks5Udp`):
 * any datagram round-trips (IPv4, IPv6, domain; empty and large payloads); every truncation of
 * a header is a typed "truncated" error; random and mutated bytes end in a result or a typed
 * `ProtocolError`, never another exception; the fragment field is reported as sent.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../lib/socks5/mod.ts";
import { ProtocolError } from "../lib/net/mod.ts";
import { fuzzParams } from "./_fuzz.ts";

const labelArb = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/);
const domainArb = fc.array(labelArb, { minLength: 1, maxLength: 6 })
  .map((ls) => ls.join(".") + ".example")
  .filter((d) => d.length <= 255);
const destArb = fc.record({
  host: fc.oneof(fc.ipV4(), domainArb, fc.constantFrom("::1", "2001:db8::7", "fe80::1:2")),
  port: fc.integer({ min: 0, max: 65535 }),
});
const payloadArb = fc.uint8Array({ maxLength: 2048 });

Deno.test("udp codec: any datagram round-trips with its destination and payload", () => {
  fc.assert(
    fc.property(destArb, payloadArb, (dest, data) => {
      const got = decodeSocks5Udp(encodeSocks5Udp(dest, data));
      assertEquals(got.frag, 0);
      assertEquals([got.dest.host, got.dest.port], [dest.host, dest.port]);
      assertEquals([...got.data], [...data]);
    }),
    fuzzParams(200),
  );
});

Deno.test("udp codec: every truncated header is a typed 'truncated' error", () => {
  fc.assert(
    fc.property(destArb, (dest) => {
      const whole = encodeSocks5Udp(dest, new Uint8Array(0));
      for (let n = 0; n < whole.length; n++) {
        let err: unknown;
        try {
          decodeSocks5Udp(whole.subarray(0, n));
        } catch (e) {
          err = e;
        }
        assert(err instanceof ProtocolError, `prefix ${n}/${whole.length}: ${err}`);
        assertEquals(err.reason, "truncated");
      }
      assertEquals(decodeSocks5Udp(whole).data.length, 0);
    }),
    fuzzParams(100),
  );
});

Deno.test("udp codec: random and mutated datagrams give a result that wraps again, or a typed error", () => {
  const mutated = fc.tuple(destArb, payloadArb, fc.array(fc.nat(), { maxLength: 4 }))
    .map(([dest, data, flips]) => {
      const b = encodeSocks5Udp(dest, data);
      for (const f of flips) b[f % b.length] ^= 1 << (f % 8);
      return b;
    });
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated), (b) => {
      let d;
      try {
        d = decodeSocks5Udp(b);
        assert(d.dest.port >= 0 && d.dest.port <= 65535);
        assert(d.data.length <= b.length);
      } catch (err) {
        assert(err instanceof ProtocolError, `untyped failure: ${err}`);
        const reasons = ["truncated", "bad-address-type", "empty-domain", "bad-domain"];
        assert(reasons.includes(err.reason), err.reason);
        return;
      }
      // What a relay decoded it wraps again for the next hop: that must not throw (a name
      // not UTF-8 decoded to U+FFFD, 3 bytes each, and could pass 255 bytes).
      encodeSocks5Udp(d.dest, d.data);
    }),
    fuzzParams(500),
  );
});

Deno.test("udp codec: the fragment field, unknown address types and empty names", () => {
  const b = encodeSocks5Udp({ host: "10.1.2.3", port: 53 }, Uint8Array.of(1, 2, 3));
  b[2] = 0x81; // a fragment: the relay must see it to drop it
  const d = decodeSocks5Udp(b);
  assertEquals([d.frag, d.dest.host, d.dest.port, [...d.data]], [0x81, "10.1.2.3", 53, [1, 2, 3]]);
  const bad = (bytes: number[], reason: string) => {
    try {
      decodeSocks5Udp(Uint8Array.from(bytes));
    } catch (err) {
      assert(err instanceof ProtocolError);
      return assertEquals(err.reason, reason);
    }
    throw new Error(`decoded ${bytes}`);
  };
  bad([0, 0, 0, 0x02, 1, 2, 3, 4, 0, 53], "bad-address-type");
  bad([0, 0, 0, 0x03, 0, 0, 53], "empty-domain");
  bad([0, 0, 0, 0x03, 5, 0x61, 0x62], "truncated");
  bad([0, 0, 0, 0x03, 2, 0xff, 0x61, 0, 53], "bad-domain");
});
