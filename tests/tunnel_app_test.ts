/** The embeddable Hono front (Deno.serve + Deno.upgradeWebSocket) and the admin API. */
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { blockStream, blockStreamSha256, run, until, within } from "./_util.ts";
import { createHash } from "node:crypto";
import { rawGet, startApp, startClient, startHonoTunnel } from "./_tunnel.ts";
import {
  connectTransport,
  createAdminApp,
  encodeMessage,
  expectMessage,
} from "../lib/tunnel/mod.ts";
import { Session, type Stream } from "../lib/mux/mod.ts";
import { BufferedReader, writeAll } from "../lib/net/mod.ts";

/** fetch through the tunnel; Deno's fetch derives Host from the URL, so the vhost is the IP. */
async function hostFetch(port: number, path: string, init: RequestInit = {}) {
  return await fetch(`http://127.0.0.1:${port}${path}`, init);
}

/** The Hono front serving `id` for host 127.0.0.1, the test app and a connected client. */
async function withHonoTunnel(
  id: string,
  opts: Parameters<typeof startHonoTunnel>[0],
  fn: (
    ctx: { t: ReturnType<typeof startHonoTunnel>; c: ReturnType<typeof startClient> },
  ) => Promise<void>,
): Promise<void> {
  const local = startApp();
  const t = startHonoTunnel(opts);
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: local.port },
  });
  try {
    await c.connected();
    await fn({ t, c });
  } finally {
    await c.stop();
    await t.close();
    await local.close();
  }
}

Deno.test("tunnel app: GET, streamed 32 MiB upload and download, chunked response, 404/502", async () => {
  await withHonoTunnel("identifier-hono-000008", {}, async ({ t, c }) => {
    const r = await hostFetch(t.port, "/hello?id=5");
    assertEquals(await r.text(), "hello 5");
    // Sequential requests reuse one keep-alive tunnel stream (and local connection).
    const before = c.client.streams;
    for (let i = 0; i < 10; i++) {
      assertEquals(await (await hostFetch(t.port, `/hello?id=${i}`)).text(), `hello ${i}`);
    }
    assert(c.client.streams - before <= 1, `streams opened: ${c.client.streams - before}`);
    const h = await (await hostFetch(t.port, "/headers")).json();
    assertEquals(h.headers["x-forwarded-for"], "127.0.0.1");
    assertMatch(h.headers["host"], /^127\.0\.0\.1:\d+$/);
    const total = 32 * 1024 * 1024;
    const it = blockStream(total, 9);
    const body = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        const n = it.next();
        if (n.done) ctrl.close();
        else ctrl.enqueue(n.value.slice());
      },
    });
    const up = await hostFetch(t.port, "/sha256", { method: "POST", body });
    assertEquals(await up.json(), { sha256: blockStreamSha256(total, 9), bytes: total });
    const down = await hostFetch(t.port, `/bytes/${total}?seed=4`);
    const { createHash } = await import("node:crypto");
    const hash = createHash("sha256");
    let n = 0;
    for await (const chunk of down.body!) {
      hash.update(chunk);
      n += chunk.length;
    }
    assertEquals(n, total);
    assertEquals(hash.digest("hex"), blockStreamSha256(total, 4));
    assertEquals(await (await hostFetch(t.port, "/chunked")).text(), "one,two,three");
    const concurrent = await Promise.all(
      Array.from(
        { length: 50 },
        (_, i) => hostFetch(t.port, `/hello?id=${i}`).then((r) => r.text()),
      ),
    );
    concurrent.forEach((b, i) => assertEquals(b, `hello ${i}`));
    // Client gone: the host answers 502.
    await c.stop();
    const gone = await hostFetch(t.port, "/hello");
    assertEquals(gone.status, 502);
    await gone.body?.cancel();
  });
});

Deno.test("tunnel admin API: token required; add, list, remove hosts; list clients", async () => {
  const t = startHonoTunnel();
  try {
    const admin = createAdminApp(t.server, { token: "admin-token-xyz" });
    const call = async (path: string, init: RequestInit = {}, token = "admin-token-xyz") =>
      await admin.fetch(
        new Request(`http://admin.local${path}`, {
          ...init,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        }),
      );
    assertEquals((await call("/hosts", {}, "wrong")).status, 401);
    const add = await call("/hosts", {
      method: "POST",
      body: JSON.stringify({ host: "New.Test" }),
    });
    assertEquals(add.status, 201);
    const added = await add.json() as { host: string; identifier: string };
    assert(added.identifier.length >= 16);
    const list = await (await call("/hosts")).json() as { host: string; connected: boolean }[];
    assertEquals(list.map((h) => [h.host, h.connected]), [["new.test", false]]);
    assert(!JSON.stringify(list).includes(added.identifier), "identifier must not be listed");
    const c = startClient({
      server: t.url,
      identifier: added.identifier,
      local: { host: "127.0.0.1", port: 9 },
    });
    try {
      await c.connected();
      const clients = await (await call("/clients")).json() as { hosts: string[] }[];
      assertEquals(clients.map((x) => x.hosts), [["new.test"]]);
    } finally {
      await c.stop();
    }
    assertEquals((await call("/hosts/new.test", { method: "DELETE" })).status, 204);
    assertEquals((await call("/hosts/new.test", { method: "DELETE" })).status, 404);
    assertEquals((await call("/hosts", { method: "POST", body: "nope" })).status, 400);
  } finally {
    await t.close();
  }
});

Deno.test("tunnel app: 504 when the app does not answer, 404 for an unknown host, 501 for non-WebSocket Upgrade", async () => {
  await withHonoTunnel(
    "identifier-hono-timeout-10",
    { server: { responseTimeoutMs: 400 } },
    async ({ t }) => {
      const hang = await hostFetch(t.port, "/hang");
      assertEquals(hang.status, 504);
      await hang.body?.cancel();
      // WebSocket passes (tests/tunnel_app_ws_test.ts); an incomplete WebSocket handshake is a
      // 400, any other Upgrade a 501.
      const ws = await hostFetch(t.port, "/ws", { headers: { upgrade: "websocket" } });
      assertEquals(ws.status, 400);
      await ws.body?.cancel();
      const up = await hostFetch(t.port, "/ws", { headers: { upgrade: "foo/2" } });
      assertEquals(up.status, 501);
      await up.body?.cancel();
      await t.server.removeHost("127.0.0.1");
      const gone = await hostFetch(t.port, "/hello");
      assertEquals(gone.status, 404);
      assertMatch(await gone.text(), /127\.0\.0\.1/);
    },
  );
});

Deno.test("tunnel app: an upload the public client abandons midway frees its tunnel stream; chunked upload by SHA-256", async () => {
  await withHonoTunnel("identifier-hono-abandon-11", {}, async ({ t }) => {
    for (const te of ["content-length: 67108864", "transfer-encoding: chunked"]) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
      try {
        await conn.write(
          new TextEncoder().encode(
            `POST /sha256 HTTP/1.1\r\nhost: 127.0.0.1:${t.port}\r\n${te}\r\n\r\n`,
          ),
        );
        const piece = new Uint8Array(1 << 20);
        const framed = te.startsWith("transfer")
          ? new Uint8Array([...new TextEncoder().encode("100000\r\n"), ...piece, 13, 10])
          : piece;
        for (let i = 0; i < 4; i++) {
          let o = 0;
          while (o < framed.length) o += await conn.write(framed.subarray(o));
        }
      } finally {
        conn.close();
      }
    }
    // Both streams go away (the app sees a cut body), and the tunnel keeps serving.
    const stats = t.server.hostStats("127.0.0.1");
    await until("the abandoned uploads' tunnel streams to close", () => stats.openStreams === 0);
    // A chunked upload from a pipe (curl's framing) arrives whole.
    const total = 24 * 1024 * 1024;
    const up = await run("sh", [
      "-c",
      `head -c ${total} /dev/zero | curl -sS -H 'Expect:' -X POST -T - ` +
      `http://127.0.0.1:${t.port}/sha256`,
    ]);
    const zeros = createHash("sha256").update(new Uint8Array(total)).digest("hex");
    assertEquals(JSON.parse(up.stdout), { sha256: zeros, bytes: total });
  });
});

/**
 * A keep-alive HTTP/1.1 app answering every GET "ok", which records how each of its
 * connections ended: "eof" (a FIN) or the read error's name (a reset), and calls `onEnd` then.
 */
function startEndRecordingApp(onEnd: () => void): {
  port: number;
  accepted(): number;
  ends: string[];
  close(): Promise<void>;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ends: string[] = [];
  const served: Promise<void>[] = [];
  let accepted = 0;
  const serve = async (conn: Deno.Conn) => {
    const buf = new Uint8Array(16 * 1024);
    let head = "";
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) {
          ends.push("eof");
          onEnd();
          return;
        }
        head += new TextDecoder().decode(buf.subarray(0, n));
        while (head.includes("\r\n\r\n")) {
          head = head.slice(head.indexOf("\r\n\r\n") + 4);
          await conn.write(
            new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
          );
        }
      }
    } catch (err) {
      ends.push((err as Error).name);
      onEnd();
    } finally {
      conn.close();
    }
  };
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        served.push(serve(conn));
      }
    } catch {
      // The listener closed: close() ends the loop this way.
    }
  })();
  return {
    port: listener.addr.port,
    accepted: () => accepted,
    ends,
    async close() {
      listener.close();
      await loop;
      await Promise.all(served);
    },
  };
}

Deno.test("tunnel app: a client that stops has its idle streams let go at once: its app's kept-alive connection ends with a FIN", async () => {
  // Clients the server let go (its session over) when the app's connection ended.
  let goneAtEnd = -1;
  const app = startEndRecordingApp(() => goneAtEnd = t.server.clientEvents.disconnected);
  const t = startHonoTunnel();
  const id = "identifier-hono-leaving-12";
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    // Its drain outlasts any slow run: it ends when its streams do, never by its timer (which
    // resets what is left: with the default 2 s, the app saw a reset).
    mux: { drainTimeoutMs: 30_000 },
  });
  try {
    await c.connected();
    const res = await hostFetch(t.port, "/");
    assertEquals([res.status, await res.text()], [200, "ok"]);
    // The front keeps the stream idle for the next request; the client now leaves.
    await c.stop();
    await until("the app's connection to end", () => app.ends.length === app.accepted());
    assertEquals(app.ends, ["eof"]);
    // Let go as the client closed its control stream, not once the server gave up waiting for
    // the session to end (sessionEndWaitMs, when the client's drain timer used to win).
    assertEquals(goneAtEnd, 0, "the idle stream was let go only after the session ended");
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});

Deno.test("tunnel app: a stream first pooled after the client closed its control stream is let go at once, not kept for the session's end", async () => {
  // A client (driven by hand) that closes its control stream and still serves the streams
  // the server opens: a request for a host it had served none of comes after that, so the
  // front makes its idle-stream pool then. The old pool took its "client leaving" hook after
  // the hooks had run: the stream stayed idle until the server gave up waiting for the
  // session (sessionEndWaitMs), which a draining client's streams then waited for.
  const t = startHonoTunnel();
  const id = "identifier-hono-late-pool-1";
  await t.server.addHost("late.test", id);
  const session = Session.client(
    await connectTransport(t.url, id, { transport: "websocket" }),
    { drainTimeoutMs: 30_000 },
  );
  try {
    const control = await session.open();
    const ctl = new BufferedReader(control);
    await writeAll(control, encodeMessage({ type: "handshakeRequest", client: "test", tcp: [] }));
    assertEquals((await within(expectMessage(ctl, "handshakeResponse"), "the handshake")).ok, true);
    // Leaving: the server closes its side in answer, having let the fronts' idle streams go.
    await control.closeWrite();
    assertEquals(await within(ctl.fill(), "the server's end of the control stream"), false);
    control.close();

    const served = (async () => {
      const s: Stream | null = await within(session.accept(), "the request's stream");
      const r = new BufferedReader(s!);
      const msg = await expectMessage(r, "controlMsg");
      await writeAll(
        s!,
        encodeMessage({ type: "streamReply", requestId: msg.requestId, ok: true }),
      );
      while ((await r.readLine(8192)).length > 0) { /* the request head */ }
      await writeAll(
        s!,
        new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
      );
      // The front keeps the stream for a next request, or lets it go: FIN (or a reset).
      const ended = await within(r.fill().catch(() => false), "the front to let the stream go");
      const gone = t.server.clientEvents.disconnected;
      s!.close();
      return { ended, gone };
    })();
    const res = await rawGet(t.port, "late.test", "/");
    assertEquals([res.status, res.body], [200, "ok"]);
    const { ended, gone } = await served;
    assertEquals(ended, false, "more bytes on the stream after the response");
    // Let go as the response ended, not once the server gave up waiting for the session.
    assertEquals(gone, 0, "the idle stream was let go only after the session ended");
  } finally {
    await session.close();
    await t.close();
  }
});
