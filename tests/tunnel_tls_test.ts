/** wss://: the client reaches the server through TLS (the embeddable front on Deno.serve with a cert). */
import { assertEquals } from "./_assert.ts";
import { run } from "./_util.ts";
import { startApp, startClient, testLog } from "./_tunnel.ts";
import { createTunnelApp, serveTunnel, TunnelServer } from "../lib/tunnel/mod.ts";

Deno.test("tunnel: the client connects over https/wss with a private CA (both fronts)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "warren-tls-" });
  const app = startApp();
  try {
    // A private CA and a leaf for localhost/127.0.0.1 signed by it (rustls rejects a
    // self-signed CA used as the server certificate).
    const sh = (cmd: string) => run("sh", ["-c", cmd]);
    const steps = [
      `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 ` +
      `-subj /CN=warren-test-ca -keyout ${dir}/ca.key -out ${dir}/ca.pem ` +
      `-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign`,
      `openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost ` +
      `-keyout ${dir}/key.pem -out ${dir}/leaf.csr`,
      `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > ${dir}/ext`,
      `openssl x509 -req -in ${dir}/leaf.csr -CA ${dir}/ca.pem -CAkey ${dir}/ca.key ` +
      `-CAcreateserial -days 1 -extfile ${dir}/ext -out ${dir}/cert.pem`,
    ];
    for (const step of steps) {
      const r = await sh(step);
      assertEquals(r.code, 0, r.stderr);
    }
    const cert = await Deno.readTextFile(`${dir}/cert.pem`);
    const ca = await Deno.readTextFile(`${dir}/ca.pem`);
    const key = await Deno.readTextFile(`${dir}/key.pem`);
    for (const front of ["hono", "fast"] as const) {
      await oneFront(front, cert, key, ca, dir, app.port);
    }
  } finally {
    await app.close();
    await Deno.remove(dir, { recursive: true });
  }
});

async function oneFront(
  front: "hono" | "fast",
  cert: string,
  key: string,
  ca: string,
  dir: string,
  appPort: number,
): Promise<void> {
  {
    const server = new TunnelServer({ log: testLog("tls-tunnel") });
    const id = "identifier-over-tls-0011";
    await server.addHost("app.test", id);
    const https = front === "hono"
      ? Deno.serve(
        { hostname: "127.0.0.1", port: 0, cert, key, onListen() {} },
        createTunnelApp(server, { proto: "https" }).fetch,
      )
      : serveTunnel(Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key }), server, {
        proto: "https",
      });
    const c = startClient({
      server: `wss://localhost:${https.addr.port}`,
      identifier: id,
      local: { host: "127.0.0.1", port: appPort },
      caCerts: [ca],
    });
    try {
      await c.connected();
      const r = await run("curl", [
        "-sS",
        "--cacert",
        `${dir}/ca.pem`,
        "-H",
        "Host: app.test",
        `https://127.0.0.1:${https.addr.port}/headers`,
      ]);
      const h = JSON.parse(r.stdout).headers as Record<string, string>;
      assertEquals(h["x-forwarded-proto"], "https");
      assertEquals(h["host"], "app.test");
    } finally {
      await c.stop();
      await server.close();
      if ("shutdown" in https) await https.shutdown();
      else await https.stop(200);
    }
  }
}
