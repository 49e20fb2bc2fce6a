/**
 * tunnel over TLS as processes: tunnel-client registers over wss:// with a private CA and
 * requests pass byte-exact over https; a client trusting another CA is refused with a clear
 * log line; plaintext to the https port does not take the server down; the admin API wants
 * its token, and repeated wrong tokens from one address get 429; repeated unknown identifiers
 * are refused too.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startApp } from "./_tunnel.ts";
import { makePki } from "./_tls.ts";
import {
  blockStreamSha256,
  portOf,
  run,
  type ServiceProcess,
  sha256,
  startService,
  within,
} from "./_util.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";

const total = 4 * 1024 * 1024;

Deno.test("tunnel TLS: wss client with a private CA; wrong CA refused; plaintext; admin token", async () => {
  const pki = await makePki();
  const app = startApp();
  const identifier = "tls-tunnel-identifier-0042";
  const procs: ServiceProcess[] = [];
  try {
    await Deno.writeTextFile(`${pki.dir}/id`, `${identifier}\n`);
    const server = await startService("tunnel-server.ts", [
      "--listen=127.0.0.1:0",
      "--host=app.test=env:APP_ID",
      "--admin=127.0.0.1:0",
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
    ], { readyCount: 2, env: { APP_ID: identifier, TUNNEL_ADMIN_TOKEN: "admin-token-5678" } });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    const client = await startService("tunnel-client.ts", [
      `--server=wss://localhost:${port}`,
      `--identifier-file=${pki.dir}/id`,
      `--local=127.0.0.1:${app.port}`,
      `--tls-ca=${pki.ca}`,
    ], { readyCount: 0, ready: /msg="connected"/ });
    procs.push(client);
    const get = () =>
      run("curl", [
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        pki.ca,
        "-H",
        "Host: app.test",
        `https://localhost:${port}/bytes/${total}?seed=5`,
      ]);
    const r = await get();
    assertEquals(r.code, 0, r.stderr);
    assertEquals(sha256(r.raw), blockStreamSha256(total, 5));

    // A client that trusts another CA does not register, and says why.
    const wrong = await startService("tunnel-client.ts", [
      `--server=wss://localhost:${port}`,
      `--identifier-file=${pki.dir}/id`,
      `--local=127.0.0.1:${app.port}`,
      `--tls-ca=${pki.ca2}`,
    ], { readyCount: 0, ready: /msg="cannot connect to server"/ });
    procs.push(wrong);
    assertMatch(
      wrong.lines.find((l) => /cannot connect to server/.test(l))!,
      /UnknownIssuer|unknown|certificate/i,
    );

    // Plaintext HTTP to the https port: no answer worth having, and the server stays up.
    const plain = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(plain, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"));
    await within(
      plain.read(new Uint8Array(64)).catch(() => null),
      "the TLS port's answer to plaintext",
    )
      .finally(() => closeQuietly(plain));
    const again = await get();
    assertEquals(again.code, 0, again.stderr);

    // Admin API: no token 401; repeated wrong tokens from one address end in 429.
    const admin = `http://${server.addrs.get("admin")}`;
    const noToken = await fetch(`${admin}/hosts`);
    await noToken.body?.cancel();
    assertEquals(noToken.status, 401);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await fetch(`${admin}/hosts`, { headers: { authorization: "Bearer wrong" } });
      await res.body?.cancel();
      statuses.push(res.status);
    }
    assert(statuses.includes(429), `no 429 after repeated failures: ${statuses}`);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
    await pki.remove();
  }
});
