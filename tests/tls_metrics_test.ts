/**
 * Failed TLS handshakes on a service listener are counted per listener and reason in the
 * process metrics (`warren_tls_handshake_failures_total`), not only logged.
 */
import { assert } from "./_assert.ts";
import { makePki } from "./_tls.ts";
import { Logger } from "../lib/log.ts";
import { listenTlsCounted } from "../lib/cli_security.ts";
import { metricsText } from "../lib/metrics.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";
import { connectTls, loadTlsClientConfig, loadTlsServerConfig } from "../lib/transport/tls.ts";
import { until, within } from "./_util.ts";

async function failures(listener: string, reason: string): Promise<number> {
  const text = await metricsText();
  const line = text.split("\n").find((l) =>
    l.startsWith("warren_tls_handshake_failures_total{") &&
    l.includes(`listener="${listener}"`) && l.includes(`reason="${reason}"`)
  );
  return line ? Number(line.split(" ").pop()) : 0;
}

Deno.test("tls metrics: plaintext and a missing client certificate are counted by reason", async () => {
  const pki = await makePki();
  const cfg = loadTlsServerConfig({
    certFile: pki.serverCert,
    keyFile: pki.serverKey,
    caFile: pki.ca,
  });
  const quiet = new Logger("error", {}, () => {});
  const listener = await listenTlsCounted(
    { host: "127.0.0.1", port: 0 },
    cfg,
    "metrics-test",
    quiet,
  );
  const port = listener.addr.port;
  try {
    const plain = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(plain, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await until("not-tls counted", async () => (await failures("metrics-test", "not-tls")) >= 1);
    closeQuietly(plain);

    // TLS 1.3: the client finishes first, then the server refuses the missing certificate.
    const before = await failures("metrics-test", "client-cert-required");
    try {
      const c = await connectTls("127.0.0.1", port, loadTlsClientConfig({ caFile: pki.ca }));
      await within(
        c.read(new Uint8Array(1)).catch(() => null),
        "the server to refuse a client without a certificate",
      );
      closeQuietly(c);
    } catch {
      // Refused during the handshake: also fine.
    }
    await until(
      "client-cert-required counted",
      async () => (await failures("metrics-test", "client-cert-required")) > before,
    );
    assert((await failures("metrics-test", "client-cert-required")) > before);
  } finally {
    listener.close();
    await pki.remove();
  }
});
