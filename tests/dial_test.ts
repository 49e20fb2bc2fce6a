import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { dial, NetError, resolveHost } from "../lib/net/mod.ts";
import { listenLocal } from "./_util.ts";

Deno.test("dial: connects and tries every address (localhost may resolve to ::1 first)", async () => {
  const l = listenLocal(); // 127.0.0.1 only: a ::1 attempt must be refused and skipped
  const [c, s] = await Promise.all([
    dial("localhost", l.addr.port, { prefer: "ipv6" }),
    l.accept(),
  ]);
  c.close();
  s.close();
  l.close();
});

Deno.test("dial: refused port fails with reason refused", async () => {
  const l = listenLocal();
  const port = l.addr.port;
  l.close();
  const e = await assertRejects(dial("127.0.0.1", port));
  assert(e instanceof NetError);
  assertEquals(e.reason, "refused");
});

Deno.test("dial: unresolvable name fails with reason resolve", async () => {
  const e = await assertRejects(dial("no-such-host.invalid", 80, { timeoutMs: 5000 }));
  assert(e instanceof NetError);
  assertEquals(e.reason, "resolve");
});

Deno.test("dial: abort signal fails with reason aborted", async () => {
  const ac = new AbortController();
  ac.abort();
  const e = await assertRejects(dial("127.0.0.1", 9, { signal: ac.signal }));
  assert(e instanceof NetError);
  assertEquals(e.reason, "aborted");
});

Deno.test("resolveHost: literals pass through, preference orders families", async () => {
  assertEquals(await resolveHost("[::1]"), ["::1"]);
  assertEquals(await resolveHost("10.1.2.3"), ["10.1.2.3"]);
  const v4 = await resolveHost("localhost", "ipv4");
  assert(v4[0].includes("."), `ipv4 first: ${v4}`);
});
