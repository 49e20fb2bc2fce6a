import { Reply, Socks5Error, Socks5ReplyError } from "../lib/socks5/mod.ts";
import { dial } from "../lib/net/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { fakeLocal, socksDial, startDepot } from "./_depot.ts";
import { listenLocal, readWithin } from "./_util.ts";

function unusedPort(): number {
  const l = listenLocal();
  const port = l.addr.port;
  l.close();
  return port;
}

async function replyOf(p: Promise<unknown>): Promise<number> {
  const err = await assertRejects(p);
  assert(err instanceof Socks5ReplyError, `expected a SOCKS reply error, got ${err}`);
  return err.reply;
}

Deno.test("depot: refused target → 0x05, unresolvable → 0x04, policy → 0x02", async () => {
  const depot = await startDepot({
    locals: [{ allow: (d) => d.port !== 9 }],
  });
  try {
    const port = unusedPort();
    assertEquals(
      await replyOf(socksDial(depot.socksPort, { host: "127.0.0.1", port })),
      Reply.connectionRefused,
    );
    assertEquals(
      await replyOf(socksDial(depot.socksPort, { host: "no-such-host.invalid", port: 80 })),
      Reply.hostUnreachable,
    );
    assertEquals(
      await replyOf(socksDial(depot.socksPort, { host: "127.0.0.1", port: 9 })),
      Reply.notAllowed,
    );
    const st = depot.server.status();
    assertEquals(st.recentFailures.map((f) => f.reason), ["refused", "resolve", "not-allowed"]);
    assertEquals(depot.locals[0].status().failures, 3);
  } finally {
    await depot.close();
  }
});

Deno.test("depot: no local connected → prompt 0x03, not a hang", async () => {
  const depot = await startDepot({ locals: [] });
  try {
    const t0 = performance.now();
    assertEquals(
      await replyOf(socksDial(depot.socksPort, { host: "127.0.0.1", port: 80 })),
      Reply.networkUnreachable,
    );
    // Not a timing assertion on the machine's speed: just "not the pending timeout".
    assert(performance.now() - t0 < depot.server.pendingTimeoutMs);
    assertEquals(depot.server.status().recentFailures[0].reason, "no-exit");
  } finally {
    await depot.close();
  }
});

Deno.test("depot: a request the exit never answers times out (0x06) and is cancelled", async () => {
  const depot = await startDepot({ locals: [], server: { pendingTimeoutMs: 200 } });
  const ctl = await fakeLocal(depot.controlPort);
  try {
    const got = socksDial(depot.socksPort, { host: "example.invalid", port: 80 });
    const connect = await ctl.expect("connect", 5000);
    assertEquals(connect.host, "example.invalid");
    assertEquals(await replyOf(got), Reply.ttlExpired);
    const cancel = await ctl.expect("cancel", 5000);
    assertEquals(cancel.id, connect.id);
    assertEquals(depot.server.pendingCount, 0);
  } finally {
    ctl.close();
    await depot.close();
  }
});

Deno.test("depot: pending requests are bounded: beyond maxPending → 0x01 at once", async () => {
  const depot = await startDepot({ locals: [], server: { maxPending: 2 } });
  const ctl = await fakeLocal(depot.controlPort);
  try {
    const a = socksDial(depot.socksPort, { host: "a.invalid", port: 1 });
    const b = socksDial(depot.socksPort, { host: "b.invalid", port: 1 });
    const ca = await ctl.expect("connect", 5000);
    const cb = await ctl.expect("connect", 5000);
    assertEquals(depot.server.pendingCount, 2);
    assertEquals(
      await replyOf(socksDial(depot.socksPort, { host: "c.invalid", port: 1 })),
      Reply.generalFailure,
    );
    for (const c of [ca, cb]) {
      await ctl.send({ type: "connectFailed", id: c.id, reason: "timeout" });
    }
    assertEquals(await replyOf(a), Reply.ttlExpired);
    assertEquals(await replyOf(b), Reply.ttlExpired);
    assertEquals(depot.server.pendingCount, 0);
  } finally {
    ctl.close();
    await depot.close();
  }
});

Deno.test("depot: failure reported by the exit maps through the reply table", async () => {
  const depot = await startDepot({ locals: [] });
  const ctl = await fakeLocal(depot.controlPort);
  try {
    const got = socksDial(depot.socksPort, { host: "x.invalid", port: 1 });
    const c = await ctl.expect("connect", 5000);
    await ctl.send({ type: "connectFailed", id: c.id, reason: "network-unreachable" });
    assertEquals(await replyOf(got), Reply.networkUnreachable);
  } finally {
    ctl.close();
    await depot.close();
  }
});

Deno.test("depot: exit with a password refuses clients without credentials (0xFF)", async () => {
  const depot = await startDepot({ locals: [{ socksPassword: "pw" }] });
  try {
    const err = await assertRejects(socksDial(depot.socksPort, { host: "127.0.0.1", port: 1 }));
    assert(err instanceof Socks5Error && err.reason === "no-acceptable-method", String(err));
    const bad = await assertRejects(
      socksDial(depot.socksPort, { host: "127.0.0.1", port: 1 }, {
        username: "default",
        password: "nope",
      }),
    );
    assert(bad instanceof Socks5Error && bad.reason === "auth-failed", String(bad));
    // Empty username also means the default exit.
    const port = unusedPort();
    assertEquals(
      await replyOf(
        socksDial(depot.socksPort, { host: "127.0.0.1", port }, { username: "", password: "pw" }),
      ),
      Reply.connectionRefused,
    );
  } finally {
    await depot.close();
  }
});

Deno.test("depot: SOCKS clients that are not SOCKS5 are closed, the server keeps going", async () => {
  const depot = await startDepot();
  try {
    const c = await dial("127.0.0.1", depot.socksPort);
    await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    assertEquals(
      await readWithin(c, new Uint8Array(16), "the server closing a non-SOCKS5 client"),
      null,
    );
    c.close();
    const port = unusedPort();
    assertEquals(
      await replyOf(socksDial(depot.socksPort, { host: "127.0.0.1", port })),
      Reply.connectionRefused,
    );
  } finally {
    await depot.close();
  }
});
