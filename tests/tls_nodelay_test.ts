/**
 * Connections accepted by lib/transport `listenTls` have Nagle off (TCP_NODELAY), on both
 * listener kinds. Why it matters: `Deno.listenTls` connections have no `setNoDelay`, so the
 * server side of every TLS listener (seaprox link far node, tunnel-server, depot-server, fusion) ran with
 * Nagle on and a small write after an unanswered one waited for the
 * peer's delayed ACK (a TLS link's set-up 44–53 ms, stalls of ~40 ms between frames; see
 * bench/RESULTS.md). Read off the accepted socket itself with getsockopt through libc (this
 * test's own FFI, not the code under test), no timing. Without FFI permission the listener
 * still serves and says in its log that Nagle stays on.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { makePki } from "./_tls.ts";
import { run } from "./_util.ts";
import { closeQuietly } from "../lib/net/mod.ts";
import { noDelayOf } from "./_nodelay.ts";
import {
  connectTls,
  listenTls,
  loadTlsClientConfig,
  loadTlsServerConfig,
} from "../lib/transport/mod.ts";

Deno.test("listenTls: accepted connections have TCP_NODELAY (Deno.listenTls, mutual node:tls)", async () => {
  const pki = await makePki();
  try {
    for (const mutual of [false, true]) {
      const cfg = loadTlsServerConfig({
        certFile: pki.serverCert,
        keyFile: pki.serverKey,
        ...(mutual ? { caFile: pki.ca } : {}),
      });
      const listener = await listenTls({ hostname: "127.0.0.1", port: 0 }, cfg);
      const client = loadTlsClientConfig({
        caFile: pki.ca,
        ...(mutual ? { certFile: pki.clientCert, keyFile: pki.clientKey } : {}),
      });
      const accepted = listener.accept();
      const conn = await connectTls("localhost", listener.addr.port, client, { timeoutMs: 30_000 });
      const server = await accepted;
      try {
        assertEquals(listener.mutual, mutual);
        const clientPort = (conn.localAddr as Deno.NetAddr).port;
        assertEquals(noDelayOf(listener.addr.port, clientPort), 1, `server, mutual=${mutual}`);
        assert(listener.noDelay, "listener says Nagle stays on");
      } finally {
        closeQuietly(conn);
        closeQuietly(server);
        listener.close();
      }
    }
  } finally {
    await pki.remove();
  }
});

Deno.test("listenTls without FFI permission: serves, and logs that Nagle stays on", async () => {
  const pki = await makePki();
  const script = `${pki.dir}/listen.ts`;
  try {
    await Deno.writeTextFile(
      script,
      `import { Logger } from "${new URL("../lib/log.ts", import.meta.url)}";
import { connectTls, listenTls, loadTlsClientConfig, loadTlsServerConfig } from "${new URL(
        "../lib/transport/mod.ts",
        import.meta.url,
      )}";
const log = new Logger("info", { svc: "t" }, (l) => console.log(l));
const cfg = loadTlsServerConfig({ certFile: "${pki.serverCert}", keyFile: "${pki.serverKey}" });
const listener = await listenTls({ hostname: "127.0.0.1", port: 0 }, cfg, { log });
const accepted = listener.accept();
const conn = await connectTls("localhost", listener.addr.port, loadTlsClientConfig({ caFile: "${pki.ca}" }));
const server = await accepted;
await server.write(new TextEncoder().encode("hi"));
const buf = new Uint8Array(8);
console.log("noDelay=" + listener.noDelay + " read=" + new TextDecoder().decode(buf.subarray(0, (await conn.read(buf)) ?? 0)));
conn.close(); server.close(); listener.close();
`,
    );
    const out = await run(Deno.execPath(), [
      "run",
      "--no-lock",
      `--config=${new URL("../deno.json", import.meta.url).pathname}`,
      "--allow-net",
      "--allow-read",
      "--allow-env",
      script,
    ]);
    assertEquals(out.code, 0, out.stderr);
    assertMatch(out.stdout, /noDelay=false read=hi/);
    assertMatch(out.stdout, /level=warn .*msg="tls listener without TCP_NODELAY.*--allow-ffi/);
  } finally {
    await pki.remove();
  }
});
