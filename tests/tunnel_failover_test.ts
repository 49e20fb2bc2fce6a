/** Clients coming and going: 502/504, reconnects, restarts, duplicates, wrong identifiers. */
import { Logger } from "../lib/log.ts";
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { closeQuietly, relay, writeAll } from "../lib/net/mod.ts";
import { rawGet, startApp, startClient, startTunnel, type TestClient } from "./_tunnel.ts";
import { until, within } from "./_util.ts";

const local = (port: number) => ({ host: "127.0.0.1", port });

// Every wait below is bounded (within(), 60 s): a hang fails, naming what it waited for.

/**
 * Clean-up steps, each bounded and each run even when an earlier one failed (a client that
 * does not stop must not also leave the server running); the first failure is rethrown.
 */
async function cleanUp(steps: [string, () => Promise<void>][]): Promise<void> {
  let first: unknown;
  for (const [what, step] of steps) {
    try {
      await within(step(), what);
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
}

/** rawGet, bounded and named (rawGet's own 30 s guard fails with a bare read error). */
function get(port: number, host: string, path: string): ReturnType<typeof rawGet> {
  const what = `GET http://${host}${path}`;
  return within(
    rawGet(port, host, path).catch((err) => {
      throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }),
    what,
  );
}

/** Wait for the next handshake of client `name`, bounded. */
function connected(name: string, c: TestClient): Promise<void> {
  return within(c.connected(), `${name} connected`);
}

Deno.test("tunnel: 502 without a client, 504 when the app does not answer, 502 when it is down", async () => {
  const app = startApp();
  const t = startTunnel({ responseTimeoutMs: 500 });
  const id = "identifier-timeouts-0001";
  try {
    await within(t.server.addHost("app.test", id), "addHost");
    const none = await get(t.port, "app.test", "/hello");
    assertEquals(none.status, 502);
    assertMatch(none.body, /app\.test/);
    const c = startClient({ server: t.url, identifier: id, local: local(app.port) });
    try {
      await connected("client", c);
      const hang = await get(t.port, "app.test", "/hang");
      assertEquals(hang.status, 504);
      assertEquals((await get(t.port, "app.test", "/hello?id=1")).body, "hello 1");
    } finally {
      await cleanUp([["client stop", c.stop]]);
    }
    // A client whose local app is not listening: 502 (dial failed), never a hang.
    const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const deadPort = dead.addr.port;
    dead.close();
    const c2 = startClient({ server: t.url, identifier: id, local: local(deadPort) });
    try {
      await connected("client of a dead app", c2);
      const r = await get(t.port, "app.test", "/hello");
      assertEquals(r.status, 502);
    } finally {
      await cleanUp([["client of a dead app stop", c2.stop]]);
    }
  } finally {
    await cleanUp([["tunnel close", t.close], ["app close", app.close]]);
  }
});

Deno.test("tunnel: two vhosts served by two clients at once", async () => {
  const a = startApp("alpha");
  const b = startApp("beta");
  const t = startTunnel();
  await within(t.server.addHost("alpha.test", "identifier-alpha-0001"), "addHost alpha");
  await within(t.server.addHost("beta.test", "identifier-beta-0002"), "addHost beta");
  const ca = startClient({
    server: t.url,
    identifier: "identifier-alpha-0001",
    local: local(a.port),
  });
  const cb = startClient({
    server: t.url,
    identifier: "identifier-beta-0002",
    local: local(b.port),
  });
  try {
    await Promise.all([connected("client alpha", ca), connected("client beta", cb)]);
    const rs = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const host = i % 2 ? "alpha.test" : "beta.test";
        return get(t.port, host, `/name?id=${i}`).then((r) => ({ i, host, r }));
      }),
    );
    for (const { i, host, r } of rs) {
      assertEquals(r.body, `${host === "alpha.test" ? "alpha" : "beta"} ${i}`);
    }
    // One public connection switching hosts between requests is re-routed per Host.
    const conn = await within(Deno.connect({ hostname: "127.0.0.1", port: t.port }), "connect");
    let text = "";
    try {
      const req = (h: string, id: number) => `GET /name?id=${id} HTTP/1.1\r\nHost: ${h}\r\n\r\n`;
      await within(
        conn.write(
          new TextEncoder().encode(
            req("alpha.test", 1) + req("beta.test", 2) +
              `GET /name?id=3 HTTP/1.1\r\nHost: alpha.test\r\nConnection: close\r\n\r\n`,
          ),
        ),
        "pipelined requests sent",
      );
      const buf = new Uint8Array(65536);
      while (true) {
        const n = await within(conn.read(buf), "pipelined answers (until the front closes)");
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
    } finally {
      conn.close();
    }
    const bodies = [...text.matchAll(/(alpha|beta) \d/g)].map((m) => m[0]);
    assertEquals(bodies, ["alpha 1", "beta 2", "alpha 3"]);
    const status = await within(t.server.status(), "status");
    assertEquals(status.length, 2);
    assert(status.every((s) => s.connected && s.requests > 0 && s.bytesOut > 0));
  } finally {
    await cleanUp([
      ["client alpha stop", ca.stop],
      ["client beta stop", cb.stop],
      ["tunnel close", t.close],
      ["app alpha close", a.close],
      ["app beta close", b.close],
    ]);
  }
});

Deno.test("tunnel: client stopped mid-test gives 502, restarted it serves again", async () => {
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-restart-0003";
  try {
    await within(t.server.addHost("app.test", id), "addHost");
    const c1 = startClient({ server: t.url, identifier: id, local: local(app.port) });
    try {
      await connected("first client", c1);
      assertEquals((await get(t.port, "app.test", "/hello?id=1")).status, 200);
    } finally {
      await cleanUp([["first client stop", c1.stop]]);
    }
    await until(
      "502 once the first client stopped",
      async () => (await rawGet(t.port, "app.test", "/hello")).status === 502,
    );
    const c2 = startClient({ server: t.url, identifier: id, local: local(app.port) });
    try {
      await connected("second client", c2);
      assertEquals((await get(t.port, "app.test", "/hello?id=2")).body, "hello 2");
    } finally {
      await cleanUp([["second client stop", c2.stop]]);
    }
  } finally {
    await cleanUp([["tunnel close", t.close], ["app close", app.close]]);
  }
});

Deno.test("tunnel: the client reconnects after a server restart and when the first attempt fails", async () => {
  const app = startApp();
  const id = "identifier-srvrestart-04";
  // No server yet: the client's first attempts fail and it keeps trying.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const lines: string[] = [];
  const c = startClient({
    server: `http://127.0.0.1:${port}`,
    identifier: id,
    local: local(app.port),
    log: new Logger("info", {}, (l) => void lines.push(l)),
  });
  try {
    await until(
      "two failed attempts to reach the absent server",
      () =>
        lines.filter((l) => /msg="cannot connect to server".* failure=dial/.test(l)).length >= 2,
    );
    assertEquals(c.client.connects, 0);
    const t = startTunnel({}, port);
    try {
      await within(t.server.addHost("app.test", id), "addHost");
      await connected("client", c);
      assertEquals((await get(port, "app.test", "/hello?id=1")).body, "hello 1");
    } finally {
      await cleanUp([["first tunnel close", t.close]]);
    }
    const t2 = startTunnel({}, port);
    try {
      await within(t2.server.addHost("app.test", id), "addHost (restarted server)");
      await until(
        "client reconnected to the restarted server",
        () => c.client.connects >= 2,
      );
      assertEquals((await get(port, "app.test", "/hello?id=2")).body, "hello 2");
    } finally {
      await cleanUp([["restarted tunnel close", t2.close]]);
    }
  } finally {
    await cleanUp([["client stop", c.stop], ["app close", app.close]]);
  }
});

Deno.test("tunnel: a second client with the same identifier replaces the first (or is refused)", async () => {
  const a = startApp("first");
  const b = startApp("second");
  const id = "identifier-duplicate-05";
  try {
    for (const policy of ["replace", "refuse"] as const) {
      const t = startTunnel({ duplicate: policy });
      let c1: TestClient | undefined;
      let c2: TestClient | undefined;
      try {
        await within(t.server.addHost("app.test", id), `${policy}: addHost`);
        c1 = startClient({ server: t.url, identifier: id, local: local(a.port) });
        await connected(`${policy}: first client`, c1);
        assertEquals((await get(t.port, "app.test", "/name")).body, "first ");
        // The second client's log: its refusals (409) are what the "refuse" half observes.
        const c2Lines: string[] = [];
        c2 = startClient({
          server: t.url,
          identifier: id,
          local: local(b.port),
          log: new Logger("info", {}, (l) => void c2Lines.push(l)),
        });
        if (policy === "replace") {
          await connected(`${policy}: second client`, c2);
          await until(
            `${policy}: the second client answers`,
            async () => (await rawGet(t.port, "app.test", "/name")).body === "second ",
          );
          const first = c1;
          await until(
            `${policy}: the first client is told it was replaced`,
            () => first.client.state === "replaced",
          );
          assertEquals(t.server.clients().length, 1);
        } else {
          // Refused (409) twice: it tried, and trying again changed nothing. A server that
          // let it in would never refuse it, and a refusal counted with connects > 0 fails.
          const refusals = () =>
            c2Lines.filter((l) => /msg="cannot connect to server".* failure=duplicate/.test(l))
              .length;
          await until(
            `${policy}: the second client refused twice as a duplicate`,
            () => refusals() >= 2,
          );
          assertEquals(c2.client.connects, 0, c2Lines.join("\n"));
          assertEquals((await get(t.port, "app.test", "/name")).body, "first ");
        }
      } finally {
        await cleanUp([
          [`${policy}: first client stop`, () => c1?.stop() ?? Promise.resolve()],
          [`${policy}: second client stop`, () => c2?.stop() ?? Promise.resolve()],
          [`${policy}: tunnel close`, t.close],
        ]);
      }
    }
  } finally {
    await cleanUp([["app first close", a.close], ["app second close", b.close]]);
  }
});

Deno.test("tunnel: a wrong identifier is refused and never logged", async () => {
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => lines.push(l));
  const app = startApp();
  const t = startTunnel({ log });
  await within(t.server.addHost("app.test", "identifier-right-000006"), "addHost");
  const wrong = "identifier-WRONG-secret-777";
  const c = startClient({ server: t.url, identifier: wrong, local: local(app.port), log });
  try {
    await new Promise((r) => setTimeout(r, 400));
    assertEquals(c.client.connects, 0);
    assertEquals((await get(t.port, "app.test", "/hello")).status, 502);
    assert(lines.some((l) => /unauthorized|unknown/.test(l)), lines.join("\n"));
    assert(
      !lines.some((l) => l.includes(wrong) || l.includes("identifier-right")),
      "secret logged",
    );
  } finally {
    await cleanUp([["client stop", c.stop], ["tunnel close", t.close], ["app close", app.close]]);
  }
});

Deno.test("tunnel: garbage on the public port and after a control upgrade never breaks the server", async () => {
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-garbage-00013";
  /** Send `bytes`, half-close, read until the server closes (bounded): what it answered. */
  const send = async (bytes: Uint8Array): Promise<string> => {
    const conn = await within(Deno.connect({ hostname: "127.0.0.1", port: t.port }), "connect");
    let text = "";
    try {
      await conn.write(bytes);
      await conn.closeWrite();
      const buf = new Uint8Array(4096);
      while (true) {
        const n = await within(conn.read(buf), "the server's answer to garbage, then its close");
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      return text;
    } catch (err) {
      // The server may reset a connection that sent garbage; a wait that did not end is a
      // failure of the test.
      if (err instanceof Error && err.message.startsWith("timed out after")) throw err;
      return text;
    } finally {
      try {
        conn.close();
      } catch {
        // Closed by the server.
      }
    }
  };
  try {
    await within(t.server.addHost("app.test", id), "addHost");
    for (let i = 0; i < 20; i++) {
      await send(crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 3000))));
    }
    assertMatch(await send(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")), /^HTTP\/1.1 400/);
    assertMatch(
      await send(
        new TextEncoder().encode(
          "GET /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
      ),
      /^HTTP\/1.1 400/,
    );
    // A client with a valid identifier that speaks garbage after the upgrade.
    const key = "dGhlIHNhbXBsZSBub25jZQ==";
    const upgrade = `GET /_controlPath_/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
      `X-Tunnel-Identifier: ${id}\r\n\r\n`;
    const junk = crypto.getRandomValues(new Uint8Array(2000));
    const both = new Uint8Array(upgrade.length + junk.length);
    both.set(new TextEncoder().encode(upgrade));
    both.set(junk, upgrade.length);
    assertMatch(await send(both), /^HTTP\/1.1 101/);
    assertMatch(
      await send(new TextEncoder().encode(upgrade.replace(id, "nope-nope"))),
      /^HTTP\/1.1 401/,
    );
    // Still serving real clients.
    const c = startClient({ server: t.url, identifier: id, local: local(app.port) });
    try {
      await connected("client", c);
      assertEquals((await get(t.port, "app.test", "/hello?id=1")).body, "hello 1");
    } finally {
      await cleanUp([["client stop", c.stop]]);
    }
  } finally {
    await cleanUp([["tunnel close", t.close], ["app close", app.close]]);
  }
});

/** A relay in front of a tunnel's port that holds the client's bytes at one point. */
interface HoldingRelay {
  port: number;
  /** Resolves once the relay holds the client's bytes. */
  held: Promise<void>;
  /** Pass them on (and everything after). */
  release(): void;
  /** Release, stop accepting, wait for the relayed connections to end. */
  close(): Promise<void>;
}

/**
 * Relay connections to `port`, holding the client's first bytes ("upgrade": its upgrade
 * request) or, once the server's answer to it came, its first session bytes ("session": the
 * handshake) until `release()`: a test acts at that point of the client's attempt.
 */
function holdingRelay(port: number, hold: "upgrade" | "session"): HoldingRelay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held = Promise.withResolvers<void>();
  const released = Promise.withResolvers<void>();
  const relays: Promise<void>[] = [];
  const pass = async (from: Deno.Conn, to: Deno.Conn, buf: Uint8Array): Promise<boolean> => {
    const n = await from.read(buf);
    if (n !== null) await writeAll(to, buf.subarray(0, n));
    return n !== null;
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      relays.push((async () => {
        const up = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          const buf = new Uint8Array(65536);
          if (hold === "session" && !(await pass(conn, up, buf) && await pass(up, conn, buf))) {
            return;
          }
          const n = await conn.read(buf);
          if (n === null) return;
          held.resolve();
          await released.promise;
          await writeAll(up, buf.subarray(0, n));
          await relay(conn, up);
        } catch {
          // Either side cut its connection: the relay has nothing more to pass on.
        } finally {
          closeQuietly(conn);
          closeQuietly(up);
        }
      })());
    }
  })();
  return {
    port: listener.addr.port,
    held: held.promise,
    release: () => released.resolve(),
    close: async () => {
      released.resolve();
      listener.close();
      await accepting;
      await Promise.all(relays);
    },
  };
}

Deno.test("tunnel: a client stopped while its upgrade is on the way stops, and never connects", async () => {
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-stop-upgrade-08";
  await within(t.server.addHost("app.test", id), "addHost");
  // The relay holds the client's upgrade request until the test has stopped the client: the
  // server accepts a client told to stop before the answer came (in CI, the refused
  // duplicate retrying while the test stopped it, the first client just gone).
  const front = holdingRelay(t.port, "upgrade");
  const c = startClient({
    server: `http://127.0.0.1:${front.port}`,
    identifier: id,
    local: local(app.port),
  });
  try {
    await within(front.held, "the client's upgrade request");
    const stopped = c.stop(); // aborts now, before the server has answered
    front.release();
    await within(stopped, "client stop (asked for while its upgrade was on the way)");
    assertEquals(c.client.connects, 0);
    assertEquals(c.client.state, "stopped");
  } finally {
    // The server first: a client that did connect loses its session and then stops.
    await cleanUp([
      ["tunnel close", t.close],
      ["client stop", c.stop],
      ["relay close", front.close],
      ["app close", app.close],
    ]);
  }
});

Deno.test("tunnel: clients of one identifier connecting at once end with one connected, the others replaced", async () => {
  const app = startApp("one");
  const t = startTunnel({ duplicate: "replace" });
  const id = "identifier-replace-race-09";
  await within(t.server.addHost("app.test", id), "addHost");
  // Each newcomer replaces the one before; one that registered while another was closing
  // its predecessor was overwritten without being told, and stayed "connected" for good.
  const n = 4;
  const cs = Array.from(
    { length: n },
    () => startClient({ server: t.url, identifier: id, local: local(app.port) }),
  );
  const states = () => cs.map((c) => c.client.state).join(" ");
  try {
    await until(
      `${n - 1} clients replaced`,
      () => cs.filter((c) => c.client.state === "replaced").length === n - 1,
    ).catch((err) => {
      throw new Error(`${err.message} (client states: ${states()})`, { cause: err });
    });
    const [last] = cs.filter((c) => c.client.state !== "replaced");
    await connected("the client left", last);
    assertEquals(t.server.clients().length, 1);
    assertEquals((await get(t.port, "app.test", "/name?id=1")).body, "one 1");
  } finally {
    await cleanUp([
      ...cs.map((c, i): [string, () => Promise<void>] => [`client ${i} stop`, c.stop]),
      ["tunnel close", t.close],
      ["app close", app.close],
    ]);
  }
});

Deno.test("tunnel: a client whose handshake arrives after the server closed is not taken", async () => {
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-late-handshake-10";
  await within(t.server.addHost("app.test", id), "addHost");
  // The relay passes the upgrade both ways, then holds the client's handshake until the test
  // has closed the server.
  const front = holdingRelay(t.port, "session");
  const c = startClient({
    server: `http://127.0.0.1:${front.port}`,
    identifier: id,
    local: local(app.port),
  });
  try {
    await within(front.held, "the client's handshake, held by the relay");
    await within(t.server.close(), "server close");
    front.release();
    await until("the client's held attempt to end", () => c.client.state !== "connecting");
    assertEquals(c.client.connects, 0, "the closed server took the client");
    assertEquals(t.server.clients().length, 0, "clients held by the closed server");
  } finally {
    await cleanUp([
      ["tunnel close", t.close],
      ["client stop", c.stop],
      ["relay close", front.close],
      ["app close", app.close],
    ]);
  }
});
