import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startOrigin } from "./_util.ts";
import { curl, startClient, startTunnel } from "./_tunnel.ts";

const id = "test-identifier-0123456789";

Deno.test("tunnel: curl GET through the fast path reaches the local app", async () => {
  const origin = startOrigin();
  const t = startTunnel();
  await t.server.addHost("app.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: origin.port },
  });
  try {
    await c.connected();
    const r = await curl(t.port, "app.test", "/hello?id=7");
    assertEquals(r.status, 200, r.stderr);
    assertEquals(r.body, "hello 7");
    const missing = await curl(t.port, "nope.test", "/hello");
    assertEquals(missing.status, 404);
    assertMatch(missing.body, /nope\.test/);
  } finally {
    await c.stop();
    await t.close();
    await origin.close();
  }
  assert(true);
});
