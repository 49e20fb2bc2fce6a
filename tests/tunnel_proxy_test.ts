/** End-to-end behaviour of the standalone (fast-path) front with real clients. */
import { assertEquals, assertMatch } from "./_assert.ts";
import { blockStream, blockStreamSha256, run } from "./_util.ts";
import { curl, rawGet, startApp, startClient, startTunnel } from "./_tunnel.ts";

const id = "test-identifier-0123456789";
const local = (port: number) => ({ host: "127.0.0.1", port });

/** One tunnel, one app, one client for the duration of `fn`. */
async function withTunnel(
  fn: (ctx: { port: number; appPort: number }) => Promise<void>,
): Promise<void> {
  const app = startApp();
  const t = startTunnel();
  await t.server.addHost("app.test", id);
  const c = startClient({ server: t.url, identifier: id, local: local(app.port) });
  try {
    await c.connected();
    await fn({ port: t.port, appPort: app.port });
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
}

Deno.test("tunnel: GET reaches the local app; unknown host is 404 naming it", async () => {
  await withTunnel(async ({ port }) => {
    const r = await curl(port, "app.test", "/hello?id=7");
    assertEquals(r.status, 200, r.stderr);
    assertEquals(r.body, "hello 7");
    const missing = await curl(port, "nope.test", "/hello");
    assertEquals(missing.status, 404);
    assertMatch(missing.body, /nope\.test/);
  });
});

Deno.test("tunnel: X-Forwarded-For/-Proto/-Host are added and Host is kept", async () => {
  await withTunnel(async ({ port }) => {
    const r = await curl(port, "App.Test", "/headers", ["-H", "X-Forwarded-For: 6.6.6.6"]);
    assertEquals(r.status, 200, r.stderr);
    const h = JSON.parse(r.body).headers as Record<string, string>;
    assertEquals(h["host"], "App.Test");
    assertEquals(h["x-forwarded-for"], "127.0.0.1"); // untrusted incoming value replaced
    assertEquals(h["x-forwarded-proto"], "http");
    assertEquals(h["x-forwarded-host"], "App.Test");
  });
});

Deno.test("tunnel: POST 256 MiB upload arrives intact (SHA-256)", async () => {
  await withTunnel(async ({ port }) => {
    const total = 256 * 1024 * 1024;
    const curlUp = new Deno.Command("curl", {
      args: [
        "-sS",
        "--max-time",
        "120",
        "-H",
        "Host: app.test",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        "@-",
        `http://127.0.0.1:${port}/sha256`,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = curlUp.stdin.getWriter();
    for (const chunk of blockStream(total, 3)) await w.write(chunk);
    await w.close();
    const out = await curlUp.output();
    const text = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    const got = JSON.parse(text) as { sha256: string; bytes: number };
    assertEquals(got.bytes, total);
    assertEquals(got.sha256, blockStreamSha256(total, 3));
  });
});

Deno.test("tunnel: 64 MiB download, chunked upload and chunked response", async () => {
  await withTunnel(async ({ port }) => {
    const total = 64 * 1024 * 1024;
    const r = await run("sh", [
      "-c",
      `curl -sS -H 'Host: app.test' http://127.0.0.1:${port}/bytes/${total}?seed=5 | sha256sum`,
    ]);
    assertEquals(r.stdout.split(" ")[0], blockStreamSha256(total, 5));
    // Chunked request body (curl sends chunked when told so) echoed back.
    const up = await run("curl", [
      "-sS",
      "-H",
      "Host: app.test",
      "-H",
      "Transfer-Encoding: chunked",
      "--data-binary",
      "chunked-body-123",
      `http://127.0.0.1:${port}/echo`,
    ]);
    assertEquals(up.stdout, "chunked-body-123", up.stderr);
    const down = await curl(port, "app.test", "/chunked", ["--raw"]);
    assertMatch(down.body, /one,/);
    const decoded = await curl(port, "app.test", "/chunked");
    assertEquals(decoded.body, "one,two,three");
  });
});

Deno.test("tunnel: keep-alive carries several requests on one public connection", async () => {
  await withTunnel(async ({ port }) => {
    const r = await run("curl", [
      "-sS",
      "-v",
      "-H",
      "Host: app.test",
      `http://127.0.0.1:${port}/hello?id=1`,
      `http://127.0.0.1:${port}/hello?id=2`,
      `http://127.0.0.1:${port}/hello?id=3`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stdout, "hello 1hello 2hello 3");
    assertMatch(r.stderr, /Re-using existing connection|Reusing existing/);
  });
});

Deno.test("tunnel: 100 concurrent requests each get their own response", async () => {
  await withTunnel(async ({ port }) => {
    const results = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const res = await rawGet(port, "app.test", `/hello?id=${i}`);
        return { i, body: res.body, status: res.status };
      }),
    );
    for (const r of results) {
      assertEquals(r.status, 200);
      assertEquals(r.body, `hello ${r.i}`);
    }
  });
});

Deno.test("tunnel: a WebSocket echo passes through end to end", async () => {
  const app = startApp();
  const t = startTunnel();
  // Deno's WebSocket client sends Host from the URL, so the vhost is the address itself.
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({ server: t.url, identifier: id, local: local(app.port) });
  try {
    await c.connected();
    const ws = new WebSocket(`ws://127.0.0.1:${t.port}/ws`);
    const got: string[] = [];
    const done = new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        ws.send("ping-1");
        ws.send("x".repeat(100_000));
        ws.send("ping-3");
      };
      ws.onmessage = (e) => {
        got.push(String(e.data));
        if (got.length === 3) ws.close();
      };
      ws.onclose = () => resolve();
      ws.onerror = (e) => reject(new Error(`websocket error: ${(e as ErrorEvent).message}`));
    });
    await done;
    assertEquals(got, ["ping-1", "x".repeat(100_000), "ping-3"]);
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});

Deno.test("tunnel: the raw transport (Upgrade: warren-mux) carries the same traffic", async () => {
  const app = startApp();
  const t = startTunnel();
  await t.server.addHost("app.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: local(app.port),
    transport: "raw",
  });
  try {
    await c.connected();
    assertEquals((await rawGet(t.port, "app.test", "/hello?id=9")).body, "hello 9");
    const total = 32 * 1024 * 1024;
    const r = await run("sh", [
      "-c",
      `curl -sS -H 'Host: app.test' http://127.0.0.1:${t.port}/bytes/${total}?seed=2 | sha256sum`,
    ]);
    assertEquals(r.stdout.split(" ")[0], blockStreamSha256(total, 2));
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});

Deno.test("tunnel: a Host port selects a local port only when the client allows it", async () => {
  const main = startApp("main");
  const other = startApp("other");
  const t = startTunnel();
  await t.server.addHost("app.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: local(main.port),
    allowPorts: [other.port],
  });
  try {
    await c.connected();
    assertEquals((await rawGet(t.port, "app.test", "/name")).body, "main ");
    assertEquals((await rawGet(t.port, `app.test:${other.port}`, "/name")).body, "other ");
    // Not allowed: the request goes to --local, never to an arbitrary port on the client host.
    assertEquals((await rawGet(t.port, "app.test:22", "/name")).body, "main ");
    // The server's own port in Host counts as no port.
    assertEquals((await rawGet(t.port, `app.test:${t.port}`, "/name")).body, "main ");
  } finally {
    await c.stop();
    await t.close();
    await main.close();
    await other.close();
  }
});
