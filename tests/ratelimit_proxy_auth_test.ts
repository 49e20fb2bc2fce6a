/**
 * seaprox user:pass listeners rate-limit failed credentials per client address: after the
 * burst, even the right password is refused until the budget refills (no resetting it with a
 * known-good login). Per-address isolation is covered by tests/ratelimit_auth_test.ts.
 */

import { assert } from "./_assert.ts";
import { AuthFailureLimiter, closeQuietly } from "../lib/net/mod.ts";
import { parseListenUrl, startSeaprox } from "../lib/proxy/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";

Deno.test("ratelimit: SOCKS5 passwords after too many failures from one address", async () => {
  let now = 0;
  const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const c of target) closeQuietly(c);
  })();
  const sp = await startSeaprox({
    listeners: [parseListenUrl("socks5://alice:right@127.0.0.1:0")],
    authLimiter: new AuthFailureLimiter({ burst: 3, perMinute: 6, now: () => now }),
  });
  const port = sp.servers[0].addr.port;
  const attempt = async (password: string): Promise<boolean> => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await socks5Connect(conn, { host: "127.0.0.1", port: target.addr.port }, {
        username: "alice",
        password,
      });
      return true;
    } catch {
      return false;
    } finally {
      closeQuietly(conn);
    }
  };
  try {
    assert(await attempt("right"));
    for (let i = 0; i < 3; i++) assert(!(await attempt("wrong")));
    assert(!(await attempt("right")), "limited: even the right password is refused");
    now += 10_001; // one token back
    assert(await attempt("right"));
  } finally {
    await sp.stop(0);
    target.close();
    await accepting;
  }
});
