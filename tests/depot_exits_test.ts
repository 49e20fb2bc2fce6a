import { DepotLocal, DepotServer } from "../lib/depot/mod.ts";
import { AuthFailureLimiter, writeAll } from "../lib/net/mod.ts";
import { Reply, Socks5ReplyError } from "../lib/socks5/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { fakeLocal, socksDial, startDepot, startTarget } from "./_depot.ts";
import { listenLocal, readAll } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function echoVia(socksPort: number, targetPort: number, text: string, user?: string) {
  const c = await socksDial(
    socksPort,
    { host: "127.0.0.1", port: targetPort },
    user ? { username: user, password: "" } : undefined,
  );
  await writeAll(c, enc.encode(`E${text}`));
  await c.closeWrite();
  const got = dec.decode(await readAll(c));
  c.close();
  return got;
}

Deno.test("depot exits: same-name reconnect replaces a stale session cleanly", async () => {
  const target = startTarget();
  const depot = await startDepot({ locals: [] });
  // A stale session: said hello, then went silent (its network vanished).
  const stale = await fakeLocal(depot.controlPort, { name: "office" });
  try {
    assertEquals(depot.server.exitNames(), ["office"]);
    const fresh = await depot.addLocal({ name: "office" });
    assertEquals(depot.server.exitNames(), ["office"]);
    // The stale one was told why and closed.
    const err = await assertRejects(stale.expect("connect", 5000));
    assertEquals((err as { reason?: string }).reason, "replaced");
    assertEquals(await echoVia(depot.socksPort, target.port, "hi", "office"), "hi");
    assertEquals(fresh.status().total, 1);
  } finally {
    stale.close();
    await depot.close();
    await target.close();
  }
});

Deno.test("depot exits: a silent control connection is declared dead within 3 heartbeats", async () => {
  const depot = await startDepot({ locals: [], server: { heartbeatMs: 100 } });
  const ctl = await fakeLocal(depot.controlPort);
  try {
    // Never read: pings go unanswered. The server must drop the exit by itself.
    await until(() => depot.server.exitNames().length === 0, "dead exit removed");
    const err = await assertRejects(
      socksDial(depot.socksPort, { host: "127.0.0.1", port: 1 }),
    );
    assert(err instanceof Socks5ReplyError && err.reply === Reply.networkUnreachable);
  } finally {
    ctl.close();
    await depot.close();
  }
});

Deno.test("depot exits: the local measures RTT and the server shows it", async () => {
  const depot = await startDepot({ server: { heartbeatMs: 50 } });
  try {
    await until(
      () =>
        depot.server.status().exits[0]?.rttMs !== null && depot.locals[0].status().rttMs !== null,
      "rtt on both sides",
    );
  } finally {
    await depot.close();
  }
});

Deno.test("depot exits: a local started before its server keeps retrying, then connects", async () => {
  const probe = listenLocal();
  const port = probe.addr.port;
  probe.close();
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port },
    backoff: { initialMs: 20, maxMs: 100 },
  });
  const running = local.run();
  const server = new DepotServer({ heartbeatMs: 200 });
  try {
    await until(() => local.status().attempts >= 2, "two failed attempts");
    assertEquals(local.connected, false);
    assert((local.status().lastError ?? "").includes("refused"), local.status().lastError ?? "");
    server.start({
      control: Deno.listen({ hostname: "127.0.0.1", port }),
      socks: listenLocal(),
      tunnel: listenLocal(),
    });
    await local.waitConnected(true, 10_000);
    assertEquals(server.exitNames(), ["default"]);
  } finally {
    await local.stop();
    await running;
    await server.stop(200);
  }
});

Deno.test("depot exits: server restart: relays close, the local reconnects, requests work", async () => {
  const target = startTarget();
  const first = await startDepot({ server: { heartbeatMs: 100 } });
  const local = first.locals[0];
  const port = first.controlPort;
  let second: DepotServer | undefined;
  try {
    // A long-lived connection through the first server.
    const c = await socksDial(first.socksPort, { host: "127.0.0.1", port: target.port });
    await writeAll(c, enc.encode("Ekeep"));
    await first.server.stop(100);
    // The relay was cut: the client sees EOF (or a reset), not a hang.
    await readAll(c).catch(() => new Uint8Array());
    c.close();
    await local.waitConnected(false, 10_000);
    second = new DepotServer({ heartbeatMs: 100 });
    second.start({
      control: Deno.listen({ hostname: "127.0.0.1", port }),
      socks: listenLocal(),
      tunnel: listenLocal(),
    });
    await local.waitConnected(true, 10_000);
    assertEquals(await echoVia(second.addrs.socks.port, target.port, "again"), "again");
  } finally {
    await first.close();
    await second?.stop(100);
    await target.close();
  }
});

Deno.test("depot exits: the local detects a silent server and reconnects", async () => {
  // A fake server: answers hello with welcome (heartbeat 100 ms), then never says anything.
  const { ControlConn } = await import("../lib/control/mod.ts");
  const { depotProtocol } = await import("../lib/depot/mod.ts");
  const listener = listenLocal();
  const held: { close(): void }[] = [];
  const serverLoop = (async () => {
    for await (const conn of listener) {
      const ctl = new ControlConn(conn, depotProtocol);
      held.push(ctl);
      await ctl.expect("hello", 5000);
      await ctl.send({ type: "welcome", name: "default", heartbeatMs: 100, tunnelPort: 1 });
      // Silent from here on: no pongs, no pings.
    }
  })().catch(() => {});
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: listener.addr.port },
    backoff: { initialMs: 20, maxMs: 50 },
  });
  const running = local.run();
  try {
    await until(() => local.status().sessions >= 2, "a second session after the first went dead");
  } finally {
    await local.stop();
    await running;
    listener.close();
    for (const c of held) c.close();
    await serverLoop;
  }
});

Deno.test("depot exits: stop() lets live relays finish within the drain time", async () => {
  const target = startTarget();
  const depot = await startDepot();
  try {
    const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
    await writeAll(c, enc.encode("Ebefore "));
    const stopping = depot.server.stop(10_000);
    // New clients are refused at once; the live connection keeps working.
    await assertRejects(socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port }));
    await writeAll(c, enc.encode("after"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "before after");
    c.close();
    await stopping;
    await depot.locals[0].waitConnected(false, 10_000);
  } finally {
    await depot.close();
    await target.close();
  }
});

Deno.test("depot exits: a second local without the exit's password cannot take the name over", async () => {
  const target = startTarget();
  const depot = await startDepot({ locals: [] });
  const pw = "office-socks-password";
  const holder = await fakeLocal(depot.controlPort, { name: "office", socksPassword: pw });
  try {
    // Without the password, or with another one: refused, and the holder keeps the exit.
    for (const socksPassword of [undefined, "another-password-123"]) {
      const err = await assertRejects(
        fakeLocal(depot.controlPort, { name: "office", socksPassword }),
      );
      assertEquals((err as { reason?: string }).reason, "name-taken", String(err));
    }
    assertEquals(depot.server.exitNames(), ["office"]);
    assertEquals(depot.server.status().exits[0].passwordProtected, true);
    // The SOCKS password still guards the exit.
    const wrong = await assertRejects(
      socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port }, {
        username: "office",
        password: "",
      }),
    );
    assert(!(wrong instanceof Socks5ReplyError), String(wrong)); // refused in the handshake
    // With the same password, a reconnecting local takes over (the holder is told why).
    const fresh = await depot.addLocal({ name: "office", socksPassword: pw });
    const err = await assertRejects(holder.expect("connect", 5000));
    assertEquals((err as { reason?: string }).reason, "replaced");
    const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port }, {
      username: "office",
      password: pw,
    });
    await writeAll(c, enc.encode("Ehi"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "hi");
    c.close();
    assertEquals(fresh.status().total, 1);
  } finally {
    holder.close();
    await depot.close();
    await target.close();
  }
});

Deno.test("depot exits: wrong SOCKS passwords go through the shared limiter, a right one passes", async () => {
  const target = startTarget();
  const authLimiter = new AuthFailureLimiter({ burst: 3, perMinute: 600, maxDelayMs: 20 });
  const pw = "office-socks-password";
  const depot = await startDepot({
    server: { authLimiter },
    locals: [{ name: "office", socksPassword: pw }],
  });
  try {
    const dest = { host: "127.0.0.1", port: target.port };
    for (let i = 0; i < 10; i++) {
      await assertRejects(
        socksDial(depot.socksPort, dest, { username: "office", password: `guess${i}` }),
      );
    }
    // Past the burst, wrong answers were held (counted, not timed).
    assertEquals(authLimiter.delayed, 7);
    const c = await socksDial(depot.socksPort, dest, { username: "office", password: pw });
    c.close();
  } finally {
    await depot.close();
    await target.close();
  }
});
