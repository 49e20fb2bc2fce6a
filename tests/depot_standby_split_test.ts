/**
 * depot-local's standby spare takes the request the server writes on it however the frame
 * arrives: whole in the spare's first read with bytes behind it (decoded from that read), or
 * in pieces over many writes (read on behind what came), the bytes behind it leading the
 * relayed stream either way. The server is driven by hand (`handServer`); the target is a
 * listener of the test that reads what the local relays and answers.
 */

import { ControlReader, encodeFrame } from "../lib/control/mod.ts";
import { DepotLocal, depotProtocol } from "../lib/depot/mod.ts";
import { BufferedReader, closeQuietly, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { handServer } from "./_depot.ts";
import { listenLocal, readAll, within } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** One request written on the first standby spare, `pieces` writes long (1: all at once). */
async function standbyRequest(pieces: number): Promise<void> {
  const target = listenLocal();
  const sessionKey = "ab".repeat(16);
  // The request and the client's first bytes behind it, as the server may write them.
  const request = encodeFrame({
    v: depotProtocol.version,
    type: "connect",
    id: 7,
    key: "cd".repeat(16),
    host: "127.0.0.1",
    port: target.addr.port,
  });
  const wire = new Uint8Array([...request, ...enc.encode("ping")]);
  const used = Promise.withResolvers<Duplex>();
  let standbys = 0;
  const server = handServer({
    welcome: {
      name: "default",
      heartbeatMs: 60_000,
      features: ["end", "open"],
      spareIdleMs: 600_000,
      sessionKey,
      standbyMax: 4,
    },
    async onTunnel({ first, rest }) {
      if (first?.type !== "standby" || standbys++ > 0) return;
      assertEquals(first.sessionKey, sessionKey);
      // Split at every `step` bytes, each piece its own write a turn after the last (the
      // local's read may still take several at once: the pieces make a split likely, and
      // the outcome must be the same however they were read).
      const step = Math.ceil(wire.length / pieces);
      for (let at = 0; at < wire.length; at += step) {
        await writeAll(rest, wire.subarray(at, at + step));
        if (pieces > 1) await new Promise((r) => setTimeout(r, 2));
      }
      used.resolve(rest);
    },
  });
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: server.controlPort },
    compact: false,
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const running = local.run();
  let app: Deno.TcpConn | undefined;
  try {
    await within(server.welcomed, "hello and welcome");
    app = await within(target.accept(), "the local's dial of the target");
    const spare = await within(used.promise, "the request written on a standby spare");
    // The bytes behind the request come first, then the target's answer goes back.
    const got = new Uint8Array(4);
    let have = 0;
    while (have < 4) {
      const n = await within(app.read(got.subarray(have)), "the bytes behind the request");
      if (n === null) break;
      have += n;
    }
    assertEquals(dec.decode(got.subarray(0, have)), "ping");
    await writeAll(app, enc.encode("pong"));
    await app.closeWrite();
    const buffered = new BufferedReader(spare, 1024);
    const answer = await within(
      new ControlReader(buffered, depotProtocol).read(),
      "the local's answer on the spare",
    );
    assertEquals([answer?.type, answer?.type === "tunnel" ? answer.id : -1], ["tunnel", 7]);
    const after = await within(
      readAll(withPrefix(spare, buffered.takeBuffered()), "the target's answer and FIN"),
      "the target's answer and FIN",
    );
    assertEquals(dec.decode(after), "pong");
  } finally {
    closeQuietly(app);
    await local.stop();
    await running;
    await server.close();
    target.close();
  }
}

Deno.test("depot-local: a request whole in a standby spare's first read, bytes behind it", async () => {
  await standbyRequest(1);
});

Deno.test("depot-local: a request split over many writes on a standby spare, bytes behind it", async () => {
  await standbyRequest(40);
});
