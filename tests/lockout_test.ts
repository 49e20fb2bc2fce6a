/**
 * Issue 16, "lockout turned against the rightful user": failed-login limits keyed by source
 * address used to refuse the right secret once an attacker on the same address (or a shared
 * proxy in front) had spent the budget. Now wrong secrets are answered late and the right one
 * still gets through: the tunnel client's identifier, depot-local's token. (The SOCKS password
 * case is tests/ratelimit_proxy_auth_test.ts.)
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { startTunnel } from "./_tunnel.ts";
import { fakeLocal, startDepot } from "./_depot.ts";
import { AuthFailureLimiter } from "../lib/net/mod.ts";
import { ConnectError, connectTransport } from "../lib/tunnel/mod.ts";

const opts = { sanitizeOps: true, sanitizeResources: true };
/** Penalties capped short so the test is quick; nothing here depends on their length. */
const limiter = () => new AuthFailureLimiter({ burst: 3, perMinute: 6, maxDelayMs: 20 });

Deno.test(
  { name: "lockout: the tunnel client gets in after wrong identifiers from its address", ...opts },
  async () => {
    const authLimiter = limiter();
    const t = startTunnel({ authLimiter });
    try {
      const identifier = await t.server.addHost("app.test", "right-identifier-123");
      for (let i = 0; i < 8; i++) {
        const err = await assertRejects(() =>
          connectTransport(t.url, `guess-${i}-identifier`, { transport: "raw" })
        );
        assert(err instanceof ConnectError && err.reason === "unauthorized", String(err));
      }
      assert(authLimiter.delayed > 0, "wrong identifiers past the burst were answered late");
      for (const transport of ["raw", "websocket"] as const) {
        const conn = await connectTransport(t.url, identifier, { transport });
        conn.close();
      }
    } finally {
      await t.close();
    }
  },
);

Deno.test(
  { name: "lockout: depot-local's right token passes after wrong ones from its address", ...opts },
  async () => {
    const authLimiter = limiter();
    const depot = await startDepot({
      server: { token: "right-depot-token", authLimiter },
      locals: [],
    });
    try {
      for (let i = 0; i < 8; i++) {
        await assertRejects(() => fakeLocal(depot.controlPort, { token: `wrong-${i}`, name: "x" }));
      }
      assert(authLimiter.delayed > 0, "wrong tokens past the burst were answered late");
      const ctl = await fakeLocal(depot.controlPort, { token: "right-depot-token", name: "x" });
      ctl.close();
      const local = await depot.addLocal({ token: "right-depot-token", name: "real" });
      assertEquals(local.name, "real");
    } finally {
      await depot.close();
    }
  },
);
