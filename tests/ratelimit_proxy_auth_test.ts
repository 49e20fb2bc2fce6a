/**
 * seaprox user:pass listeners rate-limit failed credentials per client address and user: past
 * the burst wrong passwords are answered late, and the right password still gets through at
 * once (issue 16: five wrong ones used to lock the rightful user out). Per-address isolation
 * is covered by tests/ratelimit_auth_test.ts.
 */

import { assert } from "./_assert.ts";
import { AuthFailureLimiter, closeQuietly } from "../lib/net/mod.ts";
import { parseListenUrl, startSeaprox } from "../lib/proxy/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";

Deno.test("ratelimit: the right SOCKS5 password passes after many wrong ones from its address", async () => {
  // A short cap on the penalty keeps the test quick; what it checks does not depend on it.
  const limiter = new AuthFailureLimiter({ burst: 3, perMinute: 6, maxDelayMs: 20 });
  const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const c of target) closeQuietly(c);
  })();
  const sp = await startSeaprox({
    listeners: [parseListenUrl("socks5://alice:right@127.0.0.1:0")],
    authLimiter: limiter,
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
    for (let i = 0; i < 6; i++) assert(!(await attempt("wrong")));
    assert(limiter.delayed >= 3, "wrong passwords past the burst were answered late");
    assert(await attempt("right"), "the right password is not locked out");
    assert(!(await attempt("wrong")), "and a wrong one is still refused");
  } finally {
    await sp.stop(0);
    target.close();
    await accepting;
  }
});
