/**
 * A client's own access rules (tunnel-client `--basic-auth`) count from the moment the client
 * becomes routable, not once the registry writes that follow its handshake are done (commit
 * 292313a). The server skips every access check while no host and no connected client has
 * rules, so a request that came in that window used to reach a `--basic-auth` client
 * unchecked (seen once as a 200 where a 401 was due, in tunnel_client_access under load).
 * Here the window is held open: the registry's write of the client's record waits until the
 * test lets it go, and requests sent meanwhile must get 401, never 200. In process; every
 * wait is bounded and names what it waited for.
 */

import { assertEquals } from "./_assert.ts";
import { type ClientRecord, MemoryRegistry } from "../lib/tunnel/mod.ts";
import { rawGet, startApp, startClient, startTunnel } from "./_tunnel.ts";
import { within } from "./_util.ts";

const id = "client-access-window-id-0001";
const login = "alice:window-password-0001";

/** A MemoryRegistry whose write of a client's record waits while `hold` is set. */
class HeldRegistry extends MemoryRegistry {
  hold: PromiseWithResolvers<void> | undefined = Promise.withResolvers<void>();
  /** Resolves when a client's record is being written (and held). */
  readonly writing = Promise.withResolvers<void>();
  override async setClient(identifier: string, rec: ClientRecord | undefined): Promise<void> {
    if (rec && this.hold) {
      this.writing.resolve();
      await this.hold.promise;
    }
    return await super.setClient(identifier, rec);
  }
}

Deno.test("tunnel client access: a client's own rules apply to requests that come while the registry still writes its record", async () => {
  const app = startApp("w");
  const registry = new HeldRegistry();
  const t = startTunnel({ registry });
  await t.server.addHost("app.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    access: { basic: [login] },
  });
  try {
    // The handshake is done (the client is told it is connected); its record is not written.
    await within(registry.writing.promise, "the registry write of the client's record");
    await c.connected();
    const before = c.client.streams;
    for (let i = 0; i < 3; i++) {
      const r = await rawGet(t.port, "app.test", `/name?id=${i}`);
      assertEquals(r.status, 401, `request ${i} in the window: ${r.head}`);
    }
    assertEquals(c.client.streams, before); // nothing reached the client
    // Routable meanwhile: the right credentials pass.
    const auth = `Authorization: Basic ${btoa(login)}`;
    assertEquals((await rawGet(t.port, "app.test", "/name?id=in", [auth])).body, "w in");
    assertEquals(c.client.streams, before + 1);
    const h = registry.hold!;
    registry.hold = undefined;
    h.resolve();
    assertEquals((await rawGet(t.port, "app.test", "/name?id=after")).status, 401);
    assertEquals(c.client.streams, before + 1);
  } finally {
    registry.hold?.resolve();
    await c.stop();
    await t.close();
    await app.close();
  }
});
