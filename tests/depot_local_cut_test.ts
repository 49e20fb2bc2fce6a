/**
 * depot-local ends its relays when its control connection ends, although their tunnel
 * connections are still open (the local's side of depot_relay_cut): each request's abort is
 * aborted by the session's one listener on the control connection, and a `cancel{id}` aborts
 * that request alone. The server is driven by hand: a control connection and a tunnel port
 * that accepts each tunnel (`handServer`); every wait is bounded and names what it waited for.
 */

import { ControlWriter } from "../lib/control/mod.ts";
import { DepotLocal, depotProtocol } from "../lib/depot/mod.ts";
import { closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { endOf, handServer, socksDial, startDepot } from "./_depot.ts";
import { listenLocal, until, within } from "./_util.ts";

/** An echo target: every connection gets back what it sends. */
function echoTarget(): { port: number; close(): Promise<void> } {
  const l = listenLocal();
  const conns = new Set<Deno.Conn>();
  const serving = (async () => {
    for await (const c of l) {
      conns.add(c);
      void (async () => {
        const buf = new Uint8Array(1024);
        for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
          await writeAll(c, buf.subarray(0, n));
        }
      })().catch(() => {
        // Cut by the relay's end (reset): nothing left to echo.
      }).finally(() => {
        conns.delete(c);
        closeQuietly(c);
      });
    }
  })();
  return {
    port: l.addr.port,
    async close() {
      l.close();
      for (const c of conns) closeQuietly(c);
      await serving;
    },
  };
}

Deno.test("depot-local: the end of its control connection, or a cancel, cuts its relays; tunnels still open", async () => {
  const target = echoTarget();
  /** Accepted tunnels by request id (spares without a request yet are held apart). */
  const tunnels = new Map<number, Duplex>();
  const server = handServer({
    // No "open", "end" or "mux": one TCP tunnel per request, as the oldest servers take them.
    welcome: { name: "default", heartbeatMs: 60_000, features: [], spareIdleMs: 600_000 },
    async onTunnel({ conn, first, rest }) {
      if (first?.type !== "tunnel") return;
      await new ControlWriter(conn, depotProtocol).send({ type: "tunnelAccepted", id: first.id })
        .catch(() => {
          // A tunnel the local closed already: nothing to serve.
        });
      tunnels.set(first.id, rest);
    },
  });
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: server.controlPort },
    spareTunnels: 0,
    backoff: { initialMs: 60_000, maxMs: 60_000 }, // no second session inside the test
  });
  const running = local.run();
  const ping = new TextEncoder().encode("ping");
  /** Request `id` through the local, relaying both ways: its tunnel, after an echo. */
  const relaying = async (id: number): Promise<Duplex> => {
    await server.ctl.send({
      type: "connect",
      id,
      key: "cd".repeat(16),
      host: "127.0.0.1",
      port: target.port,
    });
    await until(`the tunnel of request ${id}`, () => tunnels.has(id));
    const t = tunnels.get(id)!;
    await writeAll(t, ping);
    const got = new Uint8Array(4);
    let n = 0;
    while (n < 4) {
      const r = await within(t.read(got.subarray(n)), `the echo of request ${id}`);
      if (r === null) throw new Error(`request ${id}: tunnel ended before its echo`);
      n += r;
    }
    assertEquals(got, ping);
    return t;
  };
  try {
    await within(server.welcomed, "hello and welcome");
    await local.waitConnected(true, 10_000);
    const [a, b, c] = [await relaying(1), await relaying(2), await relaying(3)];
    assertEquals(local.status().active, 3);
    // A cancel aborts that request alone: its relay is cut, the others go on.
    await server.ctl.send({ type: "cancel", id: 2 });
    await within(endOf(b), "the end of tunnel 2 after its cancel");
    await until("two relays left", () => local.status().active === 2);
    // The control connection only: the tunnels stay open on our side.
    server.ctl.close();
    for (const [i, t] of [a, c].entries()) await within(endOf(t), `the end of tunnel ${i}`);
    await until("no relay left", () => local.status().active === 0);
  } finally {
    // Tunnels and targets first: a relay left uncut (the bug this test looks for) ends with
    // them, so the local's stop, which waits for its relays, cannot hang the test.
    server.closeTunnels();
    await target.close();
    await within(local.stop(), "the local's stop");
    await running;
    await server.close();
  }
});

Deno.test("depot-local --mux: stop() mid-relay ends every request stream (status: none active); concurrent and repeated stop() calls return", async () => {
  const target = echoTarget();
  const depot = await startDepot({ locals: [{ mux: true }] });
  const local = depot.locals[0];
  const clients: Duplex[] = [];
  try {
    await until("requests go on streams", () => depot.server.status().muxSessions === 1);
    const ping = new TextEncoder().encode("ping");
    for (let i = 0; i < 4; i++) {
      const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
      clients.push(c);
      await writeAll(c, ping);
      const got = new Uint8Array(4);
      for (let n = 0; n < 4;) {
        const r = await within(c.read(got.subarray(n)), `the echo of client ${i}`);
        if (r === null) throw new Error(`client ${i}: ended before its echo`);
        n += r;
      }
    }
    assertEquals(local.status().active, 4);
    // Four handlers mid-relay: stop() cuts them; once it returns each has finished (its counters
    // and status updated). (The mux session's close ends them before run() returns, so this does
    // not tell whether stop() itself waited for them.)
    await within(local.stop(), "the local's stop");
    assertEquals(local.status().active, 0);
    // A second stop() at once, and one after, return too.
    await within(Promise.all([local.stop(), local.stop()]), "stop() again");
  } finally {
    for (const c of clients) closeQuietly(c);
    await depot.close();
    await target.close();
  }
});
