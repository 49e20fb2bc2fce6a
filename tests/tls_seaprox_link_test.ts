/**
 * seaprox links over TLS as processes: node A (`--via link://`) reaches node B
 * (`--listen link://` with a certificate and a client CA) and 16 MiB pass byte-exact through a
 * SOCKS5 CONNECT; a wrong CA, a missing client certificate and a plaintext link are refused
 * with clear log lines while B keeps serving.
 */

import { assertEquals } from "./_assert.ts";
import { concat } from "./_socks5.ts";
import { blockSourceServer, portFor } from "./_seaprox.ts";
import { makePki, type Pki } from "./_tls.ts";
import {
  blockStreamSha256,
  drainHash,
  readWithin,
  type ServiceProcess,
  startService,
} from "./_util.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";

const total = 16 * 1024 * 1024;

/** SOCKS5 CONNECT through `socksPort`; returns the reply code and the connection. */
async function socksConnect(socksPort: number, port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: socksPort });
  await writeAll(conn, concat([5, 1, 0], [5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 255]));
  const reply = new Uint8Array(12);
  let got = 0;
  while (got < reply.length) {
    const n = await readWithin(conn, reply.subarray(got), "the SOCKS5 replies", got);
    if (n === null) break;
    got += n;
  }
  // reply: method selection (2 bytes), then VER REP RSV ATYP …
  return { rep: got >= 4 ? reply[3] : -1, conn };
}

async function nodeA(pki: Pki, linkPort: number, tls: string[]): Promise<ServiceProcess> {
  return await startService("seaprox.ts", [
    "--listen=socks5://127.0.0.1:0",
    `--via=link://localhost:${linkPort}`,
    `--link-token-file=${pki.dir}/token`,
    "--prefer-ipv4",
    ...tls,
  ]);
}

Deno.test("seaprox link TLS: mutual TLS carries bytes; wrong CA, no cert, plaintext refused", async () => {
  const pki = await makePki();
  const source = blockSourceServer(total, 3);
  const nodes: ServiceProcess[] = [];
  try {
    await Deno.writeTextFile(`${pki.dir}/token`, "link-tls-token\n");
    const b = await startService("seaprox.ts", [
      "--listen=link://127.0.0.1:0",
      `--link-token-file=${pki.dir}/token`,
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
      `--tls-client-ca=${pki.ca}`,
    ]);
    nodes.push(b);
    const linkPort = portFor(b, "link");
    const good = await nodeA(pki, linkPort, [
      `--tls-ca=${pki.ca}`,
      `--tls-client-cert=${pki.clientCert}`,
      `--tls-client-key=${pki.clientKey}`,
    ]);
    nodes.push(good);
    await good.waitFor(/msg="link up"/);
    const ok = await socksConnect(portFor(good, "socks5"), source.port);
    assertEquals(ok.rep, 0);
    assertEquals(await drainHash(ok.conn), { bytes: total, sha256: blockStreamSha256(total, 3) });
    closeQuietly(ok.conn);

    const wrongCa = await nodeA(pki, linkPort, [
      `--tls-ca=${pki.ca2}`,
      `--tls-client-cert=${pki.clientCert}`,
      `--tls-client-key=${pki.clientKey}`,
    ]);
    nodes.push(wrongCa);
    await wrongCa.waitFor(/msg="link connect failed".*unknown-ca/);
    await b.waitFor(/msg="tls handshake failed".*failure=peer-rejected/);

    const noCert = await nodeA(pki, linkPort, [`--tls-ca=${pki.ca}`]);
    nodes.push(noCert);
    await b.waitFor(/msg="tls handshake failed".*failure=client-cert-required/);
    await noCert.waitFor(/msg="link connect failed"/);

    const plain = await nodeA(pki, linkPort, []);
    nodes.push(plain);
    await b.waitFor(/msg="tls handshake failed".*failure=not-tls/);
    // A dial through a link that never came up is refused, not hung.
    const refused = await socksConnect(portFor(plain, "socks5"), source.port);
    assertEquals(refused.rep !== 0, true);
    await plain.waitFor(/msg="link connect failed".*answered with TLS/);
    closeQuietly(refused.conn);

    // B still serves the good node.
    const again = await socksConnect(portFor(good, "socks5"), source.port);
    assertEquals(again.rep, 0);
    assertEquals((await drainHash(again.conn)).bytes, total);
    closeQuietly(again.conn);
  } finally {
    for (const n of nodes.reverse()) await n.stop();
    await source.close();
    await pki.remove();
  }
});
