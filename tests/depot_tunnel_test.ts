import { randomSecret } from "../lib/control/mod.ts";
import { dial, withPrefix, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { fakeLocal, rawFrame, rawTunnel, socksDial, startDepot } from "./_depot.ts";
import { readAll, until } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("depot tunnel: unknown id, wrong key and used id are refused; the right one relays", async () => {
  const depot = await startDepot({ locals: [] });
  const ctl = await fakeLocal(depot.controlPort);
  try {
    const unknown = await rawTunnel(depot.tunnelPort, 424242, randomSecret());
    assertEquals(unknown.answer?.type, "error");
    assertEquals((unknown.answer as { reason: string }).reason, "unknown-request");
    unknown.conn.close();

    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 80 });
    const req = await ctl.expect("connect", 60_000);
    const wrong = await rawTunnel(depot.tunnelPort, req.id, randomSecret());
    assertEquals((wrong.answer as { reason: string }).reason, "bad-key");
    wrong.conn.close();
    assertEquals(depot.server.pendingCount, 1, "a wrong key does not cancel the request");

    const right = await rawTunnel(depot.tunnelPort, req.id, req.key);
    assertEquals(right.answer?.type, "tunnelAccepted");
    const used = await rawTunnel(depot.tunnelPort, req.id, req.key);
    assertEquals((used.answer as { reason: string }).reason, "unknown-request");
    used.conn.close();

    // The SOCKS client is now joined to our hand-made tunnel, both ways, with half-close.
    const c = await client;
    await writeAll(c, enc.encode("ping"));
    await c.closeWrite();
    const tunnelSide = withPrefix(right.conn, right.reader.takeBuffered());
    const tunnelIn = dec.decode(await readAll(tunnelSide));
    assertEquals(tunnelIn, "ping");
    await writeAll(right.conn, enc.encode("pong"));
    await right.conn.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "pong");
    c.close();
    right.conn.close();
  } finally {
    ctl.close();
    await depot.close();
  }
});

Deno.test("depot tunnel: garbage and silence on the tunnel port are refused and cleaned up", async () => {
  const depot = await startDepot({ server: { handshakeTimeoutMs: 1000 } });
  try {
    const junk = await dial("127.0.0.1", depot.tunnelPort);
    await writeAll(junk, crypto.getRandomValues(new Uint8Array(64)));
    await readAll(junk); // answered (maybe an error frame) and closed
    junk.close();
    const huge = await dial("127.0.0.1", depot.tunnelPort);
    await writeAll(huge, rawFrame("", 1 << 30));
    await readAll(huge);
    huge.close();
    const silent = await dial("127.0.0.1", depot.tunnelPort);
    assertEquals((await readAll(silent)).length, 0, "silent tunnel closed by the handshake timer");
    silent.close();
    // Still serving.
    const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = target.accept();
    const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.addr.port });
    (await accepted).close();
    assertEquals((await readAll(c)).length, 0);
    c.close();
    target.close();
  } finally {
    await depot.close();
  }
});

Deno.test("depot control: wrong token is refused and the local keeps retrying", async () => {
  const depot = await startDepot({ locals: [], server: { token: "right" } });
  const { DepotLocal } = await import("../lib/depot/mod.ts");
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: depot.controlPort },
    token: "wrong",
    backoff: { initialMs: 20, maxMs: 50 },
  });
  const running = local.run();
  try {
    await until(
      "the local's unauthorized refusal",
      () => (local.status().lastError ?? "").includes("unauthorized"),
    );
    const attempts = local.status().attempts;
    await until(
      "two more attempts of the refused local",
      () => local.status().attempts >= attempts + 2,
    );
    assertEquals(depot.server.exitNames(), []);
    assertEquals(local.connected, false);
  } finally {
    await local.stop();
    await running;
    await depot.close();
  }
});

Deno.test("depot control: garbage on the control port gets an error and a close", async () => {
  const depot = await startDepot();
  try {
    for (
      const bytes of [
        enc.encode("hello server\n"),
        rawFrame('{"v":1,"type":"hello"}'),
        rawFrame('{"v":7,"type":"hello","role":"depot-local","token":"","name":"x"}'),
        crypto.getRandomValues(new Uint8Array(100)),
      ]
    ) {
      const c = await dial("127.0.0.1", depot.controlPort);
      await writeAll(c, bytes);
      await readAll(c);
      c.close();
    }
    assertEquals(depot.server.exitNames(), ["default"]);
    assert(depot.locals[0].connected);
  } finally {
    await depot.close();
  }
});

Deno.test("depot tunnel: the local's tunnel address can be overridden (NAT, port forward)", async () => {
  const { relay, serve } = await import("../lib/net/mod.ts");
  const { startTarget } = await import("./_depot.ts");
  const depot = await startDepot({ locals: [] });
  const target = startTarget();
  // A port forward in front of the tunnel port, as a NAT box would have.
  let forwarded = 0;
  const forward = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn, ctx) => {
    ctx.handshakeDone();
    forwarded++;
    await relay(conn, await dial("127.0.0.1", depot.tunnelPort));
  });
  try {
    await depot.addLocal({
      tunnel: { host: "127.0.0.1", port: forward.addr.port },
      spareTunnels: 0,
    });
    const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
    await writeAll(c, enc.encode("Evia forward"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "via forward");
    c.close();
    assertEquals(forwarded, 1);
  } finally {
    await depot.close();
    await forward.stop(100);
    await target.close();
  }
});
