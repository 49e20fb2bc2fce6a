/** AuthFailureLimiter: burst, refill, per-address isolation, IPv6 /64 grouping, bounded map. */

import { assert, assertEquals } from "./_assert.ts";
import { AuthFailureLimiter, sourceKey } from "../lib/net/ratelimit.ts";

Deno.test("ratelimit: source keys group IPv6 by /64 and unwrap IPv4-mapped", () => {
  assertEquals(sourceKey("10.0.0.1:5000"), "10.0.0.1");
  assertEquals(sourceKey("10.0.0.1"), "10.0.0.1");
  assertEquals(sourceKey("[2001:db8:1:2:3:4:5:6]:443"), "2001:db8:1:2::/64");
  assertEquals(sourceKey("[2001:db8:1:2::9]:443"), "2001:db8:1:2::/64");
  assertEquals(sourceKey("2001:db8::1"), "2001:db8:0:0::/64");
  assertEquals(sourceKey("[::ffff:192.0.2.7]:80"), "192.0.2.7");
  assertEquals(sourceKey("[::1]:80"), "0:0:0:0::/64");
});

Deno.test("ratelimit: a burst of failures blocks the address until tokens refill", () => {
  let now = 0;
  const l = new AuthFailureLimiter({ burst: 3, perMinute: 6, now: () => now });
  for (let i = 0; i < 3; i++) {
    assert(l.allowed("10.0.0.1:1"));
    l.failed("10.0.0.1:1");
  }
  assert(!l.allowed("10.0.0.1:2"), "4th attempt inside the burst window is refused");
  assert(l.allowed("10.0.0.2:2"), "another address is unaffected");
  assertEquals(l.refused, 1);
  now += 9_999; // 6/min = one token per 10 s
  assert(!l.allowed("10.0.0.1:3"));
  now += 2;
  assert(l.allowed("10.0.0.1:3"));
  l.failed("10.0.0.1:3");
  assert(!l.allowed("10.0.0.1:4"));
  now += 60_000; // fully refilled: forgotten
  assert(l.allowed("10.0.0.1:5"));
  assertEquals(l.size, 0);
});

Deno.test("ratelimit: one IPv6 /64 shares a bucket", () => {
  const l = new AuthFailureLimiter({ burst: 2, perMinute: 1 });
  l.failed("[2001:db8:0:1::a]:1");
  l.failed("[2001:db8:0:1::b]:1");
  assert(!l.allowed("[2001:db8:0:1::c]:1"));
  assert(l.allowed("[2001:db8:0:2::a]:1"));
});

Deno.test("ratelimit: the map stays bounded under many addresses", () => {
  const l = new AuthFailureLimiter({ burst: 1, perMinute: 1, maxEntries: 100 });
  for (let i = 0; i < 10_000; i++) l.failed(`10.${i >> 16 & 255}.${i >> 8 & 255}.${i & 255}:1`);
  assertEquals(l.size, 100);
  assert(!l.allowed("10.0.39.15:1"), "the most recent failures are remembered");
  assert(l.allowed("10.0.0.0:1"), "the oldest were evicted");
});
