/** End-to-end behaviour of the standalone (fast-path) front with real clients. */
import { assertEquals, assertMatch } from "./_assert.ts";
import { blockStream, blockStreamSha256, run, within } from "./_util.ts";
import { curl, rawGet, startApp, startClient, startTunnel } from "./_tunnel.ts";

const id = "test-identifier-0123456789";
const local = (port: number) => ({ host: "127.0.0.1", port });

/** One tunnel, one app, one client for the duration of `fn`. */
async function withTunnel(
  fn: (ctx: { port: number; appPort: number }) => Promise<void>,
): Promise<void> {
  const app = startApp();
  const t = startTunnel();
  await within(t.server.addHost("app.test", id), "addHost app.test");
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

Deno.test("tunnel: every kept-alive request gets its own X-Forwarded-* and Host", async () => {
  await withTunnel(async ({ port }) => {
    // Three requests on one connection (curl reuses it across --next): the front queues the
    // later heads on the kept stream from their own bytes and the X-Forwarded-* lines.
    const hosts = ["App.Test", "app.test", `APP.test:${port}`];
    const args = hosts.flatMap((h, i) => [
      ...(i > 0 ? ["--next"] : []),
      "-sS",
      "-H",
      `Host: ${h}`,
      "-w",
      "\n%{num_connects}\n",
      `http://127.0.0.1:${port}/headers`,
    ]);
    const r = await run("curl", ["--max-time", "30", ...args]);
    assertEquals(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assertEquals(lines.length, 6, r.stdout);
    assertEquals([lines[1], lines[3], lines[5]], ["1", "0", "0"], "one connection for all three");
    hosts.forEach((host, i) => {
      const h = JSON.parse(lines[2 * i]).headers as Record<string, string>;
      assertEquals(h["host"], host);
      assertEquals(h["x-forwarded-for"], "127.0.0.1");
      assertEquals(h["x-forwarded-proto"], "http");
      assertEquals(h["x-forwarded-host"], host);
    });
  });
});

Deno.test("tunnel: POST 256 MiB upload arrives intact (SHA-256)", async () => {
  await withTunnel(async ({ port }) => {
    const total = 256 * 1024 * 1024;
    const curlUp = new Deno.Command("curl", {
      args: [
        "-sS",
        // A bound on a stall, not on the whole upload: curl gives up only when under 1 byte/s
        // for 60 s (a slow box still moving bytes never trips it), or when it cannot connect.
        "--connect-timeout",
        "60",
        "--speed-limit",
        "1",
        "--speed-time",
        "60",
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
    await within(done, "the WebSocket echo of three messages and its close").catch((err) => {
      ws.close();
      throw err;
    });
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
  await within(t.server.addHost("app.test", id), "addHost app.test");
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
  await within(t.server.addHost("app.test", id), "addHost app.test");
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

/** Send `request` on a fresh connection and read until the server closes. */
async function exchange(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), 30_000); // fail, not hang, if never answered
  try {
    await conn.write(new TextEncoder().encode(request));
    const out: number[] = [];
    const buf = new Uint8Array(16 * 1024);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      out.push(...buf.subarray(0, n));
    }
    return new TextDecoder().decode(new Uint8Array(out));
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

Deno.test("tunnel: a malformed chunked request body is answered 400, the next client is served", async () => {
  await withTunnel(async ({ port }) => {
    const head = "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    // Bare LF after a chunk size, data longer than its size, a size that is not hex.
    for (
      const body of ["5\nhello\r\n0\r\n\r\n", "3\r\nhello\r\n0\r\n\r\n", "zz\r\nhi\r\n0\r\n\r\n"]
    ) {
      const answer = await exchange(port, head + body);
      assertMatch(answer, /^HTTP\/1\.1 400 /, JSON.stringify(body));
    }
    const r = await curl(port, "app.test", "/hello?id=9");
    assertEquals(r.body, "hello 9");
  });
});
