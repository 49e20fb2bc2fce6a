/**
 * Unknown-host 404s: counted on their own, and their names kept in a bounded list of the
 * most recent ones (the status page's "unknown hosts" table), through both fronts with curl.
 * A flood of random names moves the list along but never grows it.
 */

import { assertEquals } from "./_assert.ts";
import { curl, startHonoTunnel, startTunnel } from "./_tunnel.ts";
import { recentUnknownHostsKept } from "../lib/tunnel/mod.ts";

Deno.test("tunnel unknown hosts: 404s counted, recent names listed newest first, list bounded", async () => {
  for (const start of [startTunnel, startHonoTunnel]) {
    const t = start();
    try {
      await t.server.addHost("known.test", "known-identifier-0001");
      assertEquals((await curl(t.port, "typo.test", "/")).status, 404);
      const flood = recentUnknownHostsKept + 5;
      for (let i = 0; i < flood; i++) {
        assertEquals((await curl(t.port, `r${i}.scan.test`, "/")).status, 404);
      }
      assertEquals((await curl(t.port, "Typo.test:81", "/")).status, 404);
      // A known host without a client is a 502, not an unknown host.
      assertEquals((await curl(t.port, "known.test", "/")).status, 502);
      const s = t.server.stats;
      assertEquals(s.unknownHostRequests, flood + 2);
      const recent = s.recentUnknownHosts();
      assertEquals(recent.length, recentUnknownHostsKept);
      // typo.test left the list during the flood and came back: once since then.
      assertEquals(recent[0].host, "typo.test");
      assertEquals(recent[0].requests, 1);
      assertEquals(recent[1].host, `r${flood - 1}.scan.test`);
      assertEquals(recent.at(-1)!.host, `r${flood - recentUnknownHostsKept + 1}.scan.test`);
      assertEquals(recent.some((u) => u.host === "known.test"), false);
    } finally {
      await t.close();
    }
  }
});
