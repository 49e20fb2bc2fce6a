/**
 * depot-server writes a granted request's SOCKS reply before its counters and metrics (dmuxset).
 * If that bookkeeping throws while the reply's write fails too, the write's rejection must still
 * be handled (an unhandled one ends a Deno process), and the tunnel the exit opened must not be
 * left behind as a live connection.
 */
import type { Duplex } from "../lib/net/mod.ts";
import { silentLogger } from "../lib/log.ts";
import * as m from "../lib/depot/metrics.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { startDepot, tcpPair } from "./_depot.ts";
import { acceptWithin, listenLocal, readWithin, within } from "./_util.ts";

/** A CONNECT request to 127.0.0.1:`port` after the no-auth greeting. */
function connectRequest(port: number): Uint8Array {
  return new Uint8Array([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff]);
}

/**
 * The server side of `conn`, except that every write longer than the greeting's answer (two
 * bytes) fails as if the client had reset the connection: the success reply's write rejects.
 */
function replyFails(conn: Deno.TcpConn): Duplex {
  return {
    read: (p) => conn.read(p),
    write: (p) =>
      p.length > 2
        ? Promise.reject(new Deno.errors.ConnectionReset("the SOCKS client is gone"))
        : conn.write(p),
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
  };
}

for (const metric of ["active", "connect"] as const) {
  Deno.test(`depot: the ${metric} metric throws while the reply's write fails: handled, tunnel closed`, async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: PromiseRejectionEvent) => {
      e.preventDefault();
      unhandled.push(e.reason);
    };
    globalThis.addEventListener("unhandledrejection", onUnhandled);
    const target = listenLocal();
    const depot = await startDepot();
    const [client, server] = await tcpPair();
    const broke = new Error("metric broke");
    // A series of the server's (the in-process local counts into its own), made to throw.
    const series = metric === "active" ? m.serverSeries.active : m.serverSeries.connect;
    const s = series as unknown as Record<string, unknown>;
    const name = metric === "connect" ? "observe" : "inc";
    const before = s[name];
    s[name] = () => {
      throw broke;
    };
    let accepted: Deno.TcpConn | undefined;
    try {
      await client.write(connectRequest(target.addr.port));
      const handled = depot.server.handleSocks(replyFails(server), {
        remote: "127.0.0.1:1",
        log: silentLogger,
        handshakeDone() {},
      });
      accepted = await acceptWithin(target, "the exit's dial to the target");
      const err = await assertRejects(() => handled);
      assert(err === broke, `handleSocks rejected with ${err}, not the metric's error`);
      // A turn of the event loop: an unhandled rejection is reported by then.
      await new Promise((r) => setTimeout(r, 0));
      assertEquals(unhandled.length, 0, `unhandled rejections: ${unhandled.join("; ")}`);
      assertEquals(depot.server.status().active, 0, "a relay counted that never runs");
      // The exit's tunnel was closed: the target's connection ends.
      const buf = new Uint8Array(16);
      assertEquals(await readWithin(accepted, buf, "the end of the abandoned tunnel"), null);
    } finally {
      s[name] = before;
      accepted?.close();
      client.close();
      try {
        server.close();
      } catch {
        // closed by the handler's path already
      }
      // Bounded: on the code before the fix the tunnel was left open (neither relayed nor
      // closed) and the local's stop waits for it; the assertion above has failed by then.
      await within(depot.close(), "the depot's close").catch((err) => console.error(err));
      target.close();
      globalThis.removeEventListener("unhandledrejection", onUnhandled);
    }
  });
}
