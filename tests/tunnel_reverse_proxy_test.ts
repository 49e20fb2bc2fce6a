/** The tunnel behind an ordinary reverse proxy (nginx): clients and public traffic through it. */
import { assertEquals } from "./_assert.ts";
import { blockStreamSha256, run, within } from "./_util.ts";
import { startNginx } from "./_nginx.ts";
import { rawGet, startApp, startClient, startTunnel } from "./_tunnel.ts";

Deno.test("tunnel: works through nginx (client's WebSocket, public requests, a WebSocket echo)", async () => {
  const app = startApp();
  const t = startTunnel({}, 0, { trustForwarded: true, proto: "https" });
  const nginx = await startNginx(t.port);
  const id = "identifier-behind-nginx-09";
  await t.server.addHost("app.test", id);
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({
    server: `http://127.0.0.1:${nginx.port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    assertEquals((await rawGet(nginx.port, "app.test", "/hello?id=4")).body, "hello 4");
    // Behind a trusted proxy the chain is kept and extended.
    const h = JSON.parse((await rawGet(nginx.port, "app.test", "/headers")).body).headers;
    assertEquals(h["x-forwarded-for"], "127.0.0.1, 127.0.0.1");
    assertEquals(h["x-forwarded-proto"], "https");
    assertEquals(h["host"], "app.test");
    const total = 32 * 1024 * 1024;
    const r = await run("sh", [
      "-c",
      `curl -sS -H 'Host: app.test' http://127.0.0.1:${nginx.port}/bytes/${total}?seed=8 | sha256sum`,
    ]);
    assertEquals(r.stdout.split(" ")[0], blockStreamSha256(total, 8));
    const ws = new WebSocket(`ws://127.0.0.1:${nginx.port}/ws`);
    const closed = new Promise<void>((r) => ws.addEventListener("close", () => r()));
    const got = await within(
      new Promise<string>((resolve, reject) => {
        ws.onopen = () => ws.send("through nginx");
        ws.onmessage = (e) => {
          resolve(String(e.data));
          ws.close();
        };
        ws.onerror = () => reject(new Error("websocket error"));
      }),
      "the WebSocket echo through nginx",
    ).catch((err) => (ws.close(), Promise.reject(err)));
    await within(closed, "the WebSocket close through nginx");
    assertEquals(got, "through nginx");
  } finally {
    await c.stop();
    await t.close();
    await nginx.stop();
    await app.close();
  }
});
