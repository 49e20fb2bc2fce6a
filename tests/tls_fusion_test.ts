/**
 * fusion over TLS as processes: paths with the right CA (and, for mutual TLS, a client
 * certificate; one path bound to a local address) carry 16 MiB each way byte-exact; a wrong
 * CA, a missing client certificate and plaintext paths are refused with a clear log line while
 * the server keeps serving; the token comes from a file.
 */
import { closeQuietly } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { startHashTarget } from "./_fusion.ts";
import { makePki, type Pki } from "./_tls.ts";
import {
  blockStreamSha256,
  drainHash,
  portOf,
  sendBlocks,
  type ServiceProcess,
  startService,
} from "./_util.ts";

const MiB = 1024 * 1024;

async function transfer(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const [, down] = await Promise.all([
      sendBlocks(conn, 16 * MiB, 1).then(() => conn.closeWrite()),
      drainHash(conn),
    ]);
    assertEquals(down, { bytes: 16 * MiB, sha256: blockStreamSha256(16 * MiB, 2) });
  } finally {
    closeQuietly(conn);
  }
}

async function withSetup(
  fn: (pki: Pki, tokenFile: string, target: ReturnType<typeof startHashTarget>) => Promise<void>,
): Promise<void> {
  const pki = await makePki();
  const target = startHashTarget(16 * MiB);
  const tokenFile = `${pki.dir}/token`;
  await Deno.writeTextFile(tokenFile, "fusion-tls-token\n");
  try {
    await fn(pki, tokenFile, target);
  } finally {
    await target.close();
    await pki.remove();
  }
}

Deno.test("fusion TLS: mutual TLS paths carry bytes; wrong CA and no client cert are refused", async () => {
  await withSetup(async (pki, tokenFile, target) => {
    const server = await startService("fusion-server.ts", [
      "--listen=127.0.0.1:0",
      `--target=127.0.0.1:${target.port}`,
      `--token-file=${tokenFile}`,
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
      `--tls-client-ca=${pki.ca}`,
    ]);
    const clients: ServiceProcess[] = [];
    try {
      const addr = server.addrs.get("listen")!;
      const start = async (extra: string[]) => {
        const c = await startService("fusion-client.ts", [
          "--listen=127.0.0.1:0",
          `--path=${addr.replace("127.0.0.1", "localhost")}`,
          `--path=127.0.0.1>${addr}`,
          `--token-file=${tokenFile}`,
          ...extra,
        ]);
        clients.push(c);
        return c;
      };
      const good = await start([
        `--tls-ca=${pki.ca}`,
        `--tls-client-cert=${pki.clientCert}`,
        `--tls-client-key=${pki.clientKey}`,
      ]);
      await transfer(portOf(good.addrs.get("listen")!));
      await server.waitFor(/msg="session closed".* end=done/);

      // A client trusting another CA refuses the server; the server sees the refusal.
      const wrongCa = await start([
        `--tls-ca=${pki.ca2}`,
        `--tls-client-cert=${pki.clientCert}`,
        `--tls-client-key=${pki.clientKey}`,
      ]);
      const c1 = await Deno.connect({
        hostname: "127.0.0.1",
        port: portOf(wrongCa.addrs.get("listen")!),
      });
      await wrongCa.waitFor(/msg="path TLS handshake failed".*failure=unknown-ca/);
      await server.waitFor(/msg="tls handshake failed".*failure=peer-rejected/);
      closeQuietly(c1);

      // No client certificate: the server refuses it.
      const noCert = await start([`--tls-ca=${pki.ca}`]);
      const c2 = await Deno.connect({
        hostname: "127.0.0.1",
        port: portOf(noCert.addrs.get("listen")!),
      });
      await server.waitFor(/msg="tls handshake failed".*failure=client-cert-required/);
      closeQuietly(c2);

      // Plaintext paths to the TLS port: refused, server stays up.
      const plain = await start([]);
      const c3 = await Deno.connect({
        hostname: "127.0.0.1",
        port: portOf(plain.addrs.get("listen")!),
      });
      await server.waitFor(/msg="tls handshake failed".*failure=not-tls/);
      closeQuietly(c3);

      await transfer(portOf(good.addrs.get("listen")!));
    } finally {
      for (const c of clients) await c.stop();
      await server.stop();
    }
  });
});

Deno.test("fusion TLS: server-only TLS with a name check; a wrong name is refused", async () => {
  await withSetup(async (pki, tokenFile, target) => {
    const server = await startService("fusion-server.ts", [
      "--listen=127.0.0.1:0",
      `--target=127.0.0.1:${target.port}`,
      `--token-file=${tokenFile}`,
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
    ]);
    const clients: ServiceProcess[] = [];
    try {
      const addr = server.addrs.get("listen")!;
      const good = await startService("fusion-client.ts", [
        "--listen=127.0.0.1:0",
        `--server=${addr}`,
        "--paths=2",
        `--token-file=${tokenFile}`,
        `--tls-ca=${pki.ca}`,
      ]);
      clients.push(good);
      await transfer(portOf(good.addrs.get("listen")!));
      const wrongName = await startService("fusion-client.ts", [
        "--listen=127.0.0.1:0",
        `--server=${addr}`,
        "--paths=1",
        `--token-file=${tokenFile}`,
        `--tls-ca=${pki.ca}`,
        "--tls-server-name=fusion.example",
      ]);
      clients.push(wrongName);
      const c = await Deno.connect({
        hostname: "127.0.0.1",
        port: portOf(wrongName.addrs.get("listen")!),
      });
      await wrongName.waitFor(/msg="path TLS handshake failed".*failure=hostname-mismatch/);
      closeQuietly(c);
    } finally {
      for (const c of clients) await c.stop();
      await server.stop();
    }
  });
});
