/**
 * A new depot-local against a server from before `standbyMax` (its welcome offers "open" but
 * names no bound): the local keeps at most `legacyStandbyPerExit` (16) standby spares, what
 * such a server holds per exit (it closes more), however far requests outrun them. The server
 * is driven by hand: a control connection that welcomes without the field, and a tunnel port
 * that holds every standby announced on it and counts them.
 */

import { ControlConn, ControlReader } from "../lib/control/mod.ts";
import { DepotLocal, type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { legacyStandbyPerExit, maxStandbyPerExit } from "../lib/depot/protocol.ts";
import { BufferedReader, closeQuietly } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { listenLocal, until } from "./_util.ts";

Deno.test("depot-local against a server without standbyMax in welcome keeps 16 standby spares at most", async () => {
  assert(legacyStandbyPerExit < maxStandbyPerExit, "the legacy bound is the smaller one");
  const control = listenLocal();
  const tunnel = listenLocal();
  const closed = listenLocal();
  const deadPort = closed.addr.port;
  closed.close(); // a port nobody listens on: every request's dial fails at once
  const conns = new Set<Deno.Conn>();
  /** Standby spares the server holds now, and the most it held at once. */
  let standbys = 0, mostStandbys = 0;
  const failed: number[] = [];
  let ctl: ControlConn<DepotMessage> | undefined;
  const sessionKey = "ab".repeat(16);

  const serveTunnels = (async () => {
    for await (const conn of tunnel) {
      conns.add(conn);
      void (async () => {
        const r = new BufferedReader(conn, 1024);
        // A request's own tunnel dial closes unused (its target dial failed): no frame.
        const first = await new ControlReader(r, depotProtocol).read().catch(() => null);
        if (first?.type !== "standby") return;
        assertEquals([first.name, first.sessionKey], ["default", sessionKey]);
        mostStandbys = Math.max(mostStandbys, ++standbys);
        // Held idle, as the server holds a standby, until the local closes it.
        await conn.read(new Uint8Array(1)).catch(() => null);
        standbys--;
      })().finally(() => {
        conns.delete(conn);
        closeQuietly(conn);
      });
    }
  })();
  const serveControl = (async () => {
    const conn = await control.accept();
    ctl = new ControlConn(conn, depotProtocol);
    const hello = await ctl.expect("hello", 10_000);
    assert(hello.features?.includes("open"), "the local offers open");
    // The welcome of a server before `standbyMax`: "open" with a session key, no bound.
    await ctl.send({
      type: "welcome",
      name: "default",
      heartbeatMs: 60_000,
      tunnelPort: tunnel.addr.port,
      features: ["end", "udp", "open"],
      spareIdleMs: 600_000,
      sessionKey,
    });
    for (let m; (m = await ctl.receive()) !== null;) {
      if (m.type === "connectFailed") failed.push(m.id);
    }
  })().catch(() => {
    // The control connection ends with the test (the local stops).
  });

  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: control.addr.port },
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const running = local.run();
  try {
    await local.waitConnected(true, 10_000);
    assertEquals(local.status().spares?.max, legacyStandbyPerExit);
    // Requests on the control connection found no standby: each doubles the spares the local
    // wants (2, 4 … up to its bound); their target dials fail and are reported.
    const n = 8;
    for (let id = 1; id <= n; id++) {
      await ctl!.send({
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
    ctl?.close();
    await serveControl;
    control.close();
    tunnel.close();
    for (const c of conns) closeQuietly(c);
    await serveTunnels;
  }
});
