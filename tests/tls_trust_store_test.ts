/**
 * The TLS trust store is loaded as a service starts. Deno 2.9.6 loads it at the first TLS
 * client connection and keeps it for the process's life: when that load fails (out of file
 * descriptors at that moment, "Warning: Ignoring extra certs from … Too many open files"), the
 * NODE_EXTRA_CA_CERTS certificates are gone for good. Here the failure is a CA file removed
 * after start (no fd exhaustion needed): a process that loaded the store at start
 * (`loadTrustStore`) still trusts that CA; and a service loads it before it listens (a missing
 * NODE_EXTRA_CA_CERTS file is warned about at start, not at some later dial).
 */

import { assert, assertEquals } from "./_assert.ts";
import { makePki } from "./_tls.ts";
import { run, startService } from "./_util.ts";

Deno.test("tls trust store: loaded at start, a NODE_EXTRA_CA_CERTS CA still trusted after its file went away", async () => {
  const pki = await makePki();
  const l = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(pki.serverCert),
    key: await Deno.readTextFile(pki.serverKey),
  });
  const serving = (async () => {
    for await (const c of l) {
      await c.handshake().catch(() => {/* a refused client */}).finally(() => c.close());
    }
  })();
  try {
    const copy = `${pki.dir}/extra-ca.pem`;
    await Deno.copyFile(pki.ca, copy);
    const kit = new URL("../services/_kit.ts", import.meta.url).href;
    const script = `
      import { loadTrustStore } from ${JSON.stringify(kit)};
      loadTrustStore();
      Deno.removeSync(${JSON.stringify(copy)});
      const c = await Deno.connectTls({ hostname: "127.0.0.1", port: ${l.addr.port} });
      await c.handshake();
      c.close();
      console.log("trusted");
    `;
    const r = await run(Deno.execPath(), ["eval", script], { env: { NODE_EXTRA_CA_CERTS: copy } });
    assertEquals([r.code, r.stdout.trim()], [0, "trusted"], r.stderr);
  } finally {
    l.close();
    await serving;
    await pki.remove();
  }
});

Deno.test("tls trust store: a service loads it before it listens", async () => {
  const missing = "/nonexistent/warren-extra-ca.pem";
  const svc = await startService("seaprox.ts", ["--listen=socks5://127.0.0.1:0"], {
    env: { NODE_EXTRA_CA_CERTS: missing },
  });
  try {
    const warned = svc.lines.findIndex((l) => l.includes(`Ignoring extra certs from "${missing}"`));
    const listening = svc.lines.findIndex((l) => /msg="listening"/.test(l));
    assert(warned >= 0 && warned < listening, svc.lines.join("\n"));
  } finally {
    await svc.stop();
  }
});
