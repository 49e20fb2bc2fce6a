/**
 * A client session on the standalone front outlives the public idle timeout: the front's
 * idle timer is for public HTTP connections, and the control connection's liveness is the
 * mux heartbeat's job. (It used to stay armed after the upgrade and cut every session
 * `idleTimeoutMs` — 300 s by default — after it connected: 502 bursts and truncated
 * responses in long soaks.)
 */
import { assertEquals } from "./_assert.ts";
import { rawGet, startApp, startClient, startTunnel } from "./_tunnel.ts";

Deno.test("tunnel: a client session is not cut by the public idle timeout", async () => {
  const idleTimeoutMs = 200;
  const app = startApp();
  const t = startTunnel({}, 0, { idleTimeoutMs });
  const id = "identifier-idle-session-0001";
  await t.server.addHost("app.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    assertEquals(c.client.connects, 1);
    // Several idle checks pass (they run every idleTimeoutMs); heartbeats keep the session busy.
    await new Promise((r) => setTimeout(r, idleTimeoutMs * 6));
    assertEquals((await rawGet(t.port, "app.test", "/hello?id=7")).body, "hello 7");
    assertEquals(c.client.connects, 1, "the session was dropped and reconnected");
    assertEquals(c.client.state, "connected");
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});
