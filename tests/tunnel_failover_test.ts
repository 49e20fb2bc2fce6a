/** Clients coming and going: 502/504, reconnects, restarts, duplicates, wrong identifiers. */
import { Logger } from "../lib/log.ts";
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { rawGet, startApp, startClient, startTunnel } from "./_tunnel.ts";

const local = (port: number) => ({ host: "127.0.0.1", port });

/** Poll `fn` until it returns true (bounded; the condition is what the test checks). */
async function eventually(fn: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("condition not reached in time");
}

Deno.test("tunnel: 502 without a client, 504 when the app does not answer, 502 when it is down", async () => {
  const app = startApp();
  const t = startTunnel({ responseTimeoutMs: 500 });
  const id = "identifier-timeouts-0001";
  await t.server.addHost("app.test", id);
  try {
    const none = await rawGet(t.port, "app.test", "/hello");
    assertEquals(none.status, 502);
    assertMatch(none.body, /app\.test/);
    const c = startClient({ server: t.url, identifier: id, local: local(app.port) });
    try {
      await c.connected();
      const hang = await rawGet(t.port, "app.test", "/hang");
      assertEquals(hang.status, 504);
      assertEquals((await rawGet(t.port, "app.test", "/hello?id=1")).body, "hello 1");
    } finally {
      await c.stop();
    }
    // A client whose local app is not listening: 502 (dial failed), never a hang.
    const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const deadPort = dead.addr.port;
    dead.close();
    const c2 = startClient({ server: t.url, identifier: id, local: local(deadPort) });
    try {
      await c2.connected();
      const r = await rawGet(t.port, "app.test", "/hello");
      assertEquals(r.status, 502);
    } finally {
      await c2.stop();
    }
  } finally {
    await t.close();
    await app.close();
  }
});

Deno.test("tunnel: two vhosts served by two clients at once", async () => {
  const a = startApp("alpha");
  const b = startApp("beta");
  const t = startTunnel();
  await t.server.addHost("alpha.test", "identifier-alpha-0001");
  await t.server.addHost("beta.test", "identifier-beta-0002");
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
    await Promise.all([ca.connected(), cb.connected()]);
    const rs = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const host = i % 2 ? "alpha.test" : "beta.test";
        return rawGet(t.port, host, `/name?id=${i}`).then((r) => ({ i, host, r }));
      }),
    );
    for (const { i, host, r } of rs) {
      assertEquals(r.body, `${host === "alpha.test" ? "alpha" : "beta"} ${i}`);
    }
    // One public connection switching hosts between requests is re-routed per Host.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    const req = (h: string, id: number) => `GET /name?id=${id} HTTP/1.1\r\nHost: ${h}\r\n\r\n`;
    await conn.write(
      new TextEncoder().encode(
        req("alpha.test", 1) + req("beta.test", 2) +
          `GET /name?id=3 HTTP/1.1\r\nHost: alpha.test\r\nConnection: close\r\n\r\n`,
      ),
    );
    let text = "";
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    conn.close();
    const bodies = [...text.matchAll(/(alpha|beta) \d/g)].map((m) => m[0]);
    assertEquals(bodies, ["alpha 1", "beta 2", "alpha 3"]);
    const status = await t.server.status();
    assertEquals(status.length, 2);
    assert(status.every((s) => s.connected && s.requests > 0 && s.bytesOut > 0));
  } finally {
    await ca.stop();
    await cb.stop();
    await t.close();
    await a.close();
    await b.close();
  }
});

Deno.test("tunnel: client stopped mid-test gives 502, restarted it serves again", async () => {
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-restart-0003";
  await t.server.addHost("app.test", id);
  try {
    const c1 = startClient({ server: t.url, identifier: id, local: local(app.port) });
    await c1.connected();
    assertEquals((await rawGet(t.port, "app.test", "/hello?id=1")).status, 200);
    await c1.stop();
    await eventually(async () => (await rawGet(t.port, "app.test", "/hello")).status === 502);
    const c2 = startClient({ server: t.url, identifier: id, local: local(app.port) });
    try {
      await c2.connected();
      assertEquals((await rawGet(t.port, "app.test", "/hello?id=2")).body, "hello 2");
    } finally {
      await c2.stop();
    }
  } finally {
    await t.close();
    await app.close();
  }
});

Deno.test("tunnel: the client reconnects after a server restart and when the first attempt fails", async () => {
  const app = startApp();
  const id = "identifier-srvrestart-04";
  // No server yet: the client's first attempts fail and it keeps trying.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const c = startClient({
    server: `http://127.0.0.1:${port}`,
    identifier: id,
    local: local(app.port),
  });
  try {
    await new Promise((r) => setTimeout(r, 300));
    assertEquals(c.client.connects, 0);
    let t = startTunnel({}, port);
    await t.server.addHost("app.test", id);
    await c.connected();
    assertEquals((await rawGet(port, "app.test", "/hello?id=1")).body, "hello 1");
    await t.close();
    t = startTunnel({}, port);
    try {
      await t.server.addHost("app.test", id);
      await eventually(() => Promise.resolve(c.client.connects >= 2));
      assertEquals((await rawGet(port, "app.test", "/hello?id=2")).body, "hello 2");
    } finally {
      await t.close();
    }
  } finally {
    await c.stop();
    await app.close();
  }
});

Deno.test("tunnel: a second client with the same identifier replaces the first (or is refused)", async () => {
  const a = startApp("first");
  const b = startApp("second");
  const id = "identifier-duplicate-05";
  for (const policy of ["replace", "refuse"] as const) {
    const t = startTunnel({ duplicate: policy });
    await t.server.addHost("app.test", id);
    const c1 = startClient({ server: t.url, identifier: id, local: local(a.port) });
    await c1.connected();
    assertEquals((await rawGet(t.port, "app.test", "/name")).body, "first ");
    const c2 = startClient({ server: t.url, identifier: id, local: local(b.port) });
    try {
      if (policy === "replace") {
        await c2.connected();
        await eventually(async () =>
          (await rawGet(t.port, "app.test", "/name")).body === "second "
        );
        await eventually(() => Promise.resolve(c1.client.state === "replaced"));
        assertEquals(t.server.clients().length, 1);
      } else {
        await new Promise((r) => setTimeout(r, 300));
        assertEquals(c2.client.connects, 0);
        assertEquals((await rawGet(t.port, "app.test", "/name")).body, "first ");
      }
    } finally {
      await c1.stop();
      await c2.stop();
      await t.close();
    }
  }
  await a.close();
  await b.close();
});

Deno.test("tunnel: a wrong identifier is refused and never logged", async () => {
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => lines.push(l));
  const app = startApp();
  const t = startTunnel({ log });
  await t.server.addHost("app.test", "identifier-right-000006");
  const wrong = "identifier-WRONG-secret-777";
  const c = startClient({ server: t.url, identifier: wrong, local: local(app.port), log });
  try {
    await new Promise((r) => setTimeout(r, 400));
    assertEquals(c.client.connects, 0);
    assertEquals((await rawGet(t.port, "app.test", "/hello")).status, 502);
    assert(lines.some((l) => /unauthorized|unknown/.test(l)), lines.join("\n"));
    assert(
      !lines.some((l) => l.includes(wrong) || l.includes("identifier-right")),
      "secret logged",
    );
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});

Deno.test("tunnel: garbage on the public port and after a control upgrade never breaks the server", async () => {
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-garbage-00013";
  await t.server.addHost("app.test", id);
  const send = async (bytes: Uint8Array): Promise<string> => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    try {
      await conn.write(bytes);
      await conn.closeWrite();
      const buf = new Uint8Array(4096);
      let text = "";
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      return text;
    } catch {
      return "";
    } finally {
      try {
        conn.close();
      } catch {
        // Closed by the server.
      }
    }
  };
  try {
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
      await c.connected();
      assertEquals((await rawGet(t.port, "app.test", "/hello?id=1")).body, "hello 1");
    } finally {
      await c.stop();
    }
  } finally {
    await t.close();
    await app.close();
  }
});
