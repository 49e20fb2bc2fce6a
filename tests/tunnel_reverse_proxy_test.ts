/** The tunnel behind an ordinary reverse proxy (nginx): clients and public traffic through it. */
import { assertEquals } from "./_assert.ts";
import { blockStreamSha256, freePort, run } from "./_util.ts";
import { rawGet, startApp, startClient, startTunnel } from "./_tunnel.ts";

/** nginx in front of `upstreamPort` with the usual WebSocket-capable proxy settings. */
async function startNginx(upstreamPort: number): Promise<{ port: number; stop(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "warren-nginx-" });
  const port = freePort();
  const conf = `
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
    }
  }
}`;
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const child = new Deno.Command("nginx", {
    args: ["-c", `${dir}/nginx.conf`, "-p", dir],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const errText = (async () => {
    let s = "";
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) s += c;
    return s;
  })();
  const deadline = Date.now() + 10_000;
  while (true) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error(`nginx did not start: ${await errText}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    stop: async () => {
      child.kill("SIGQUIT");
      await child.status;
      await errText;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

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
    const got = await new Promise<string>((resolve, reject) => {
      ws.onopen = () => ws.send("through nginx");
      ws.onmessage = (e) => {
        resolve(String(e.data));
        ws.close();
      };
      ws.onerror = () => reject(new Error("websocket error"));
    });
    await new Promise<void>((r) =>
      ws.readyState === WebSocket.CLOSED ? r() : ws.onclose = () => r()
    );
    assertEquals(got, "through nginx");
  } finally {
    await c.stop();
    await t.close();
    await nginx.stop();
    await app.close();
  }
});
