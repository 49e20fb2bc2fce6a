/** seaprox on IPv6 loopback: an [::1] listener, IPv6 destinations, seed-style descriptions. */

import { assertEquals, assertMatch } from "./_assert.ts";
import { closeQuietly, dial, withPrefix, writeAll } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { askAfterEof, portFor, startSeaproxService } from "./_seaprox.ts";
import { readAll } from "./_util.ts";

Deno.test("seaprox ipv6: [::1] listeners reach an IPv6-only destination", async () => {
  // An echo-after-EOF server on ::1 only.
  const l = Deno.listen({ hostname: "::1", port: 0 });
  const port = l.addr.port;
  l.close();
  const v6 = Deno.listen({ hostname: "::1", port });
  const served = (async () => {
    for await (const c of v6) {
      try {
        const req = await readAll(c);
        await writeAll(c, new TextEncoder().encode(`v6 got ${req.length}`));
        await c.closeWrite();
      } finally {
        closeQuietly(c);
      }
    }
  })();
  const sp = await startSeaproxService([
    `static://[::1]:0?to=[::1]:${port}`,
    "socks5://[::1]:0",
  ]);
  try {
    assertMatch(sp.addrs.get("static")!, /^\[::1\]:\d+$/);
    const s = await dial("::1", portFor(sp, "static"));
    try {
      assertEquals(await askAfterEof(s, "hello"), "v6 got 5");
    } finally {
      closeQuietly(s);
    }
    const c = await dial("::1", portFor(sp, "socks5"));
    try {
      const { bound, leftover } = await socks5Connect(c, { host: "::1", port });
      assertEquals(bound.host, "::1");
      assertEquals(await askAfterEof(withPrefix(c, leftover), "abc"), "v6 got 3");
    } finally {
      closeQuietly(c);
    }
    await sp.waitFor(/proxy="socks5\[ipv6\[\[::1\]:\d+\]->ipv6\[\[::1\]:\d+\]\]" end=done/);
  } finally {
    assertEquals(await sp.stop(), 0);
    v6.close();
    await served;
  }
});
