/**
 * AuthFailureLimiter: burst, refill, growing and capped penalty, per-address and per-user
 * isolation, a right secret never held, IPv6 /64 grouping, bounded map.
 */

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

Deno.test("ratelimit: past the burst wrong answers are held, longer with the debt", () => {
  let now = 0;
  const l = new AuthFailureLimiter({ burst: 3, perMinute: 6, maxDelayMs: 30_000, now: () => now });
  for (let i = 0; i < 3; i++) {
    assertEquals(l.penaltyMs("10.0.0.1:1"), 0);
    l.failed("10.0.0.1:1");
  }
  assertEquals(l.penaltyMs("10.0.0.1:2"), 0, "the burst is spent, no debt yet");
  l.failed("10.0.0.1:2");
  assertEquals(l.penaltyMs("10.0.0.1:2"), 10_000, "6/min: one token per 10 s");
  l.failed("10.0.0.1:2");
  assertEquals(l.penaltyMs("10.0.0.1:2"), 20_000, "the debt grows");
  for (let i = 0; i < 10; i++) l.failed("10.0.0.1:2");
  assertEquals(l.penaltyMs("10.0.0.1:2"), 30_000, "capped at maxDelayMs");
  assertEquals(l.penaltyMs("10.0.0.2:2"), 0, "another address is unaffected");
  assertEquals(l.penaltyMs("10.0.0.1:2", "bob"), 0, "another claimed user is unaffected");
  now += 10 * 60_000; // fully refilled: forgotten
  assertEquals(l.penaltyMs("10.0.0.1:5"), 0);
  assertEquals(l.size, 0);
});

Deno.test("ratelimit: verify lets the right secret through at once, however many failed", async () => {
  const l = new AuthFailureLimiter({ burst: 2, perMinute: 6, maxDelayMs: 1 });
  const verdicts = [];
  for (let i = 0; i < 5; i++) verdicts.push(await l.verify("10.0.0.1:1", () => false));
  assertEquals(verdicts, ["wrong", "wrong", "limited", "limited", "limited"]);
  assertEquals(l.delayed, 3, "wrong answers past the burst were held");
  assert(l.penaltyMs("10.0.0.1:1") > 0, "the address is in debt");
  const before = l.delayed;
  assertEquals(await l.verify("10.0.0.1:2", () => true), "ok");
  assertEquals(await l.verify("10.0.0.1:3", () => Promise.resolve(true)), "ok");
  assertEquals(l.delayed, before, "a right secret is never held");
});

Deno.test("ratelimit: an abort during the penalty rejects with its reason", async () => {
  const l = new AuthFailureLimiter({ burst: 1, perMinute: 1, maxDelayMs: 60_000 });
  l.failed("10.0.0.1:1");
  const ac = new AbortController();
  const p = l.verify("10.0.0.1:2", () => false, { signal: ac.signal });
  ac.abort(new Error("stopped"));
  let why = "";
  await p.catch((e) => why = (e as Error).message);
  assertEquals(why, "stopped");
});

Deno.test("ratelimit: one IPv6 /64 shares a bucket", () => {
  const l = new AuthFailureLimiter({ burst: 2, perMinute: 1 });
  l.failed("[2001:db8:0:1::a]:1");
  l.failed("[2001:db8:0:1::b]:1");
  l.failed("[2001:db8:0:1::b]:1");
  assert(l.penaltyMs("[2001:db8:0:1::c]:1") > 0);
  assertEquals(l.penaltyMs("[2001:db8:0:2::a]:1"), 0);
});

Deno.test("ratelimit: the map stays bounded under many addresses", () => {
  const l = new AuthFailureLimiter({ burst: 1, perMinute: 1, maxEntries: 100 });
  for (let i = 0; i < 10_000; i++) {
    const a = `10.${i >> 16 & 255}.${i >> 8 & 255}.${i & 255}:1`;
    l.failed(a);
    l.failed(a);
  }
  assertEquals(l.size, 100);
  assert(l.penaltyMs("10.0.39.15:1") > 0, "the most recent failures are remembered");
  assertEquals(l.penaltyMs("10.0.0.0:1"), 0, "the oldest were evicted");
});
