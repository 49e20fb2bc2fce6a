/**
 * tunnel-server with mutual TLS on its public port (`--tls-client-ca`): tunnel clients (wss://
 * and the raw transport) and public https clients must present a certificate from that CA.
 * A client without a certificate, or with one from another CA, is refused with a clear log
 * line and keeps retrying; curl without a certificate fails; a 96 MiB upload passes (TCP
 * backpressure on the node:tls socket, no 64 MiB cut); plaintext fails cleanly; the
 * server keeps serving the good clients throughout.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startApp } from "./_tunnel.ts";
import { makePki, type Pki } from "./_tls.ts";
import {
  blockStream,
  blockStreamSha256,
  portOf,
  run,
  type ServiceProcess,
  sha256,
  startService,
  within,
} from "./_util.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";

const total = 8 * 1024 * 1024;

function curlArgs(pki: Pki, port: number, host: string, path: string, cert: boolean): string[] {
  return [
    "-sS",
    "--max-time",
    "20",
    "--cacert",
    pki.ca,
    ...(cert ? ["--cert", pki.clientCert, "--key", pki.clientKey] : []),
    "-H",
    `Host: ${host}`,
    `https://localhost:${port}${path}`,
  ];
}

Deno.test("tunnel mTLS: only certificates from the client CA reach the tunnel port", async () => {
  const pki = await makePki();
  const app = startApp("app");
  const app2 = startApp("app2");
  const id = "mtls-tunnel-identifier-0001";
  const id2 = "mtls-tunnel-identifier-0002";
  const procs: ServiceProcess[] = [];
  try {
    await Deno.writeTextFile(`${pki.dir}/id`, `${id}\n`);
    await Deno.writeTextFile(`${pki.dir}/id2`, `${id2}\n`);
    const server = await startService("tunnel-server.ts", [
      "--listen=127.0.0.1:0",
      "--host=app.test=env:APP_ID",
      "--host=app2.test=env:APP2_ID",
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
      `--tls-client-ca=${pki.ca}`,
    ], { env: { APP_ID: id, APP2_ID: id2 } });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    await server.waitFor(/msg="hosts".*tls=mutual/);

    // The right certificate: over the WebSocket transport and over the raw one.
    const good = await startService("tunnel-client.ts", [
      `--server=wss://localhost:${port}`,
      "--transport=websocket",
      `--identifier-file=${pki.dir}/id`,
      `--local=127.0.0.1:${app.port}`,
      `--tls-ca=${pki.ca}`,
      `--tls-client-cert=${pki.clientCert}`,
      `--tls-client-key=${pki.clientKey}`,
    ], { readyCount: 0, ready: /msg="connected"/ });
    procs.push(good);
    const goodRaw = await startService("tunnel-client.ts", [
      `--server=https://localhost:${port}`,
      `--identifier-file=${pki.dir}/id2`,
      `--local=127.0.0.1:${app2.port}`,
      "--transport=raw",
      `--tls-ca=${pki.ca}`,
      `--tls-client-cert=${pki.clientCert}`,
      `--tls-client-key=${pki.clientKey}`,
    ], { readyCount: 0, ready: /msg="connected"/ });
    procs.push(goodRaw);

    const check = async () => {
      const r = await run("curl", curlArgs(pki, port, "app.test", `/bytes/${total}?seed=9`, true));
      assertEquals(r.code, 0, r.stderr);
      assertEquals(sha256(r.raw), blockStreamSha256(total, 9));
      const r2 = await run("curl", curlArgs(pki, port, "app2.test", "/name?id=7", true));
      assertEquals(r2.code, 0, r2.stderr);
      assertEquals(r2.stdout, "app2 7");
    };
    await check();
    // The server names each client's certificate (CN agent-1) when it connects.
    assert(
      server.lines.filter((l) => /msg="client connected".*cert=agent-1/.test(l)).length >= 2,
      server.lines.join("\n"),
    );

    // An upload larger than what a node:tls socket used to buffer (64 MiB) before it was cut:
    // the public connection is paused at TCP while the tunnel catches up.
    const upload = 96 * 1024 * 1024;
    const file = `${pki.dir}/upload.bin`;
    const f = await Deno.open(file, { write: true, create: true });
    try {
      for (const b of blockStream(upload, 4)) await writeAll(f, b);
    } finally {
      f.close();
    }
    const up = await run("curl", [
      ...curlArgs(pki, port, "app.test", "/sha256", true),
      "--data-binary",
      `@${file}`,
    ]);
    assertEquals(up.code, 0, up.stderr);
    assertEquals(JSON.parse(up.stdout), { sha256: blockStreamSha256(upload, 4), bytes: upload });

    // A tunnel client without a certificate: refused, says why, keeps retrying.
    const noCert = await startService("tunnel-client.ts", [
      `--server=wss://localhost:${port}`,
      "--transport=websocket",
      `--identifier-file=${pki.dir}/id`,
      `--local=127.0.0.1:${app.port}`,
      `--tls-ca=${pki.ca}`,
      "--backoff-max=300",
    ], { readyCount: 0, ready: /msg="cannot connect to server"/ });
    procs.push(noCert);
    const noCertLine = noCert.lines.find((l) => /cannot connect to server/.test(l))!;
    assertMatch(noCertLine, /failure=tls/);
    assertMatch(noCertLine, /client certificate/);
    await server.waitFor(/msg="tls handshake failed".*failure=client-cert-required/);

    // One from another CA: refused too, on the server for "unknown-ca".
    const rogue = await startService("tunnel-client.ts", [
      `--server=wss://localhost:${port}`,
      "--transport=websocket",
      `--identifier-file=${pki.dir}/id`,
      `--local=127.0.0.1:${app.port}`,
      `--tls-ca=${pki.ca}`,
      `--tls-client-cert=${pki.rogueCert}`,
      `--tls-client-key=${pki.rogueKey}`,
      "--backoff-max=300",
    ], { readyCount: 0, ready: /msg="cannot connect to server"/ });
    procs.push(rogue);
    const rogueLine = rogue.lines.find((l) => /cannot connect to server/.test(l))!;
    assertMatch(rogueLine, /failure=tls/);
    assertMatch(rogueLine, /does not accept our client certificate/);
    await server.waitFor(/msg="tls handshake failed".*failure=unknown-ca/);

    // Both keep retrying (a later attempt is refused the same way) and neither crashed.
    for (const p of [noCert, rogue]) {
      await waitCount(p, /msg="cannot connect to server".*failure=tls/, 3);
      const exited = await Promise.race([
        p.child.status.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 100)),
      ]);
      assert(!exited, "a refused client exited");
      assert(!p.lines.some((l) => /msg="connected"/.test(l)), "a refused client registered");
    }

    // curl without a client certificate fails; with a stranger's too.
    const anon = await run("curl", curlArgs(pki, port, "app.test", "/hello", false));
    assert(anon.code !== 0, `curl without a certificate succeeded: ${anon.stdout}`);
    const stranger = await run("curl", [
      ...curlArgs(pki, port, "app.test", "/hello", false),
      "--cert",
      pki.rogueCert,
      "--key",
      pki.rogueKey,
    ]);
    assert(stranger.code !== 0, `curl with a rogue certificate succeeded: ${stranger.stdout}`);

    // Plaintext to the TLS port: no HTTP answer, a clean close, a clear log line.
    const plain = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await writeAll(plain, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"));
      const buf = new Uint8Array(256);
      const got: number[] = [];
      await within(
        (async () => {
          while (true) {
            const n = await plain.read(buf).catch(() => null);
            if (n === null) break;
            got.push(...buf.subarray(0, n));
          }
        })(),
        "the TLS port to close a plaintext connection",
      );
      assert(!new TextDecoder().decode(new Uint8Array(got)).includes("HTTP/1.1 200"));
    } finally {
      closeQuietly(plain);
    }
    await server.waitFor(/msg="tls handshake failed".*failure=not-tls/);

    // The good clients never dropped, and still serve.
    await check();
    for (const p of [good, goodRaw]) {
      assert(!p.lines.some((l) => /disconnected|cannot connect/.test(l)), p.lines.join("\n"));
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
    await app2.close();
    await pki.remove();
  }
});

/** Wait until `p` logged `count` lines matching `re`. */
async function waitCount(p: ServiceProcess, re: RegExp, count: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (p.lines.filter((l) => re.test(l)).length < count) {
    if (Date.now() > deadline) throw new Error(`fewer than ${count} ${re}:\n${p.lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
