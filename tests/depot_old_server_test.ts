/**
 * A new depot-local against a server from before `standbyMax` (its welcome offers "open" but
 * names no bound): the local keeps at most `legacyStandbyPerExit` (16) standby spares, what
 * such a server holds per exit (it closes more), however far requests outrun them. The server
 * is driven by hand (`handServer`): a control connection that welcomes without the field, and a
 * tunnel port that holds every standby announced on it and counts them.
 */

import { DepotLocal } from "../lib/depot/mod.ts";
import { legacyStandbyPerExit, maxStandbyPerExit } from "../lib/depot/protocol.ts";
import { assert, assertEquals } from "./_assert.ts";
import { handServer } from "./_depot.ts";
import { listenLocal, until, within } from "./_util.ts";

Deno.test("depot-local against a server without standbyMax in welcome keeps 16 standby spares at most", async () => {
  assert(legacyStandbyPerExit < maxStandbyPerExit, "the legacy bound is the smaller one");
  const closed = listenLocal();
  const deadPort = closed.addr.port;
  closed.close(); // a port nobody listens on: every request's dial fails at once
  /** Standby spares the server holds now, and the most it held at once. */
  let standbys = 0, mostStandbys = 0;
  const failed: number[] = [];
  const sessionKey = "ab".repeat(16);
  const server = handServer({
    // The welcome of a server before `standbyMax`: "open" with a session key, no bound.
    welcome: {
      name: "default",
      heartbeatMs: 60_000,
      features: ["end", "udp", "open"],
      spareIdleMs: 600_000,
      sessionKey,
    },
    async onTunnel({ conn, first }) {
      // A request's own tunnel dial closes unused (its target dial failed): no frame.
      if (first?.type !== "standby") return;
      assertEquals([first.name, first.sessionKey], ["default", sessionKey]);
      mostStandbys = Math.max(mostStandbys, ++standbys);
      // Held idle, as the server holds a standby, until the local closes it.
      await conn.read(new Uint8Array(1)).catch(() => null);
      standbys--;
    },
    onMessage(m) {
      if (m.type === "connectFailed") failed.push(m.id);
    },
  });

  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: server.controlPort },
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const running = local.run();
  try {
    const hello = await within(server.welcomed, "hello and welcome");
    assert(hello.features?.includes("open"), "the local offers open");
    await local.waitConnected(true, 10_000);
    assertEquals(local.status().spares?.max, legacyStandbyPerExit);
    // Requests on the control connection found no standby: each doubles the spares the local
    // wants (2, 4 … up to its bound); their target dials fail and are reported.
    const n = 8;
    for (let id = 1; id <= n; id++) {
      await server.ctl.send({
        type: "connect",
        id,
        key: "cd".repeat(16),
        host: "127.0.0.1",
        port: deadPort,
      });
    }
    await until(`${n} connectFailed reports`, () => failed.length === n);
    const spares = () => local.status().spares;
    await until(
      `${legacyStandbyPerExit} standby spares ready at the local and held by the server`,
      () => spares()?.ready === legacyStandbyPerExit && standbys === legacyStandbyPerExit,
    );
    assertEquals(spares()?.misses, n);
    assertEquals(spares()?.max, legacyStandbyPerExit);
    assertEquals(mostStandbys, legacyStandbyPerExit);
  } finally {
    await local.stop();
    await running;
    await server.close();
  }
});
