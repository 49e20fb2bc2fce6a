/**
 * tunnel-client's default transport "auto": the raw upgrade where the server takes it (the
 * standalone front), WebSocket where something on the way refuses it (here the embeddable
 * front, which only speaks WebSocket; a TLS proxy that hangs up on other upgrades), and once
 * refused, reconnects go straight to WebSocket.
 */
import { assert, assertEquals } from "./_assert.ts";
import { curl, startApp, startClient, startHonoTunnel, startTunnel } from "./_tunnel.ts";
import { Logger } from "../lib/log.ts";
import { BufferedReader, closeQuietly, relay, withPrefix, writeAll } from "../lib/net/mod.ts";
import { getHeader, readRequestHead, serializeRequestHead } from "../lib/http/mod.ts";
import { makePki } from "./_tls.ts";
import { until } from "./_util.ts";

function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("info", { svc: "tunnel-client" }, (l) => lines.push(l)), lines };
}

/** The embeddable front serving `id` for host 127.0.0.1 (it speaks only WebSocket). */
async function honoTunnel(id: string, port = 0) {
  const t = startHonoTunnel({ port });
  await t.server.addHost("127.0.0.1", id);
  return t;
}

Deno.test("tunnel transport auto: raw on the standalone front", async () => {
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-auto-0001";
  await t.server.addHost("app.test", id);
  const cap = capture();
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    log: cap.log,
  });
  try {
    await c.connected();
    const r = await curl(t.port, "app.test", "/hello?id=3");
    assertEquals(r.body, "hello 3");
    assert(cap.lines.some((l) => /msg="connected".*transport=raw/.test(l)), cap.lines.join("\n"));
    assert(!cap.lines.some((l) => /raw transport refused/.test(l)), cap.lines.join("\n"));
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});

Deno.test("tunnel transport auto: falls back to WebSocket once, and reconnects on it", async () => {
  const app = startApp();
  const id = "identifier-auto-0002";
  let t = await honoTunnel(id);
  const port = t.port;
  const cap = capture();
  const c = startClient({
    server: `http://127.0.0.1:${port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    log: cap.log,
  });
  const count = (re: RegExp) => cap.lines.filter((l) => re.test(l)).length;
  try {
    await c.connected();
    const r = await fetch(`http://127.0.0.1:${port}/hello?id=4`);
    assertEquals(await r.text(), "hello 4");
    assertEquals(count(/raw transport refused on the way/), 1, cap.lines.join("\n"));
    assertEquals(count(/msg="connected".*transport=websocket/), 1, cap.lines.join("\n"));

    // The server restarts on the same port: the client comes back on WebSocket directly.
    await t.close();
    t = await honoTunnel(id, port);
    await until(
      "the client's reconnect to the restarted server",
      () => count(/msg="connected"/) >= 2,
    );
    const r2 = await fetch(`http://127.0.0.1:${port}/hello?id=5`);
    assertEquals(await r2.text(), "hello 5");
    assertEquals(count(/raw transport refused on the way/), 1, cap.lines.join("\n"));
    assertEquals(count(/msg="connected".*transport=websocket/), 2, cap.lines.join("\n"));
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});

/**
 * A TLS-terminating proxy in front of the standalone front that forwards WebSocket upgrades
 * and hangs up on any other Upgrade (as some do), without answering.
 */
function wsOnlyTlsProxy(cert: string, key: string, upstreamPort: number) {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  const conns = new Set<Promise<void>>();
  let hangUps = 0;
  const serveOne = async (conn: Deno.TlsConn) => {
    try {
      const reader = new BufferedReader(conn);
      const head = await readRequestHead(reader);
      if (!head || getHeader(head.headers, "upgrade")?.toLowerCase() !== "websocket") {
        hangUps++;
        return closeQuietly(conn);
      }
      const up = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
      await writeAll(up, serializeRequestHead(head));
      await relay(withPrefix(conn, reader.takeBuffered()), up);
    } catch {
      closeQuietly(conn);
    }
  };
  const loop = (async () => {
    for await (const conn of listener) {
      const p = serveOne(conn);
      conns.add(p);
      p.finally(() => conns.delete(p));
    }
  })();
  return {
    port: listener.addr.port,
    hangUps: () => hangUps,
    async close() {
      listener.close();
      await loop;
      await Promise.all(conns);
    },
  };
}

Deno.test("tunnel transport auto: falls back to WebSocket when a TLS proxy hangs up on raw", async () => {
  const pki = await makePki();
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-auto-0003";
  await t.server.addHost("app.test", id);
  const proxy = wsOnlyTlsProxy(
    await Deno.readTextFile(pki.serverCert),
    await Deno.readTextFile(pki.serverKey),
    t.port,
  );
  const cap = capture();
  const c = startClient({
    server: `https://127.0.0.1:${proxy.port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    caCerts: [await Deno.readTextFile(pki.ca)],
    log: cap.log,
  });
  try {
    await c.connected().catch((err) => {
      throw new Error(`${err.message}; last log line: ${cap.lines.at(-1)}`);
    });
    const r = await curl(t.port, "app.test", "/hello?id=6");
    assertEquals(r.body, "hello 6");
    assertEquals(proxy.hangUps(), 1, "the raw upgrade was tried once");
    assert(cap.lines.some((l) => /raw transport refused on the way/.test(l)), cap.lines.join("\n"));
    assert(cap.lines.some((l) => /msg="connected".*transport=websocket/.test(l)));
  } finally {
    await c.stop();
    await proxy.close();
    await t.close();
    await app.close();
    await pki.remove();
  }
});
