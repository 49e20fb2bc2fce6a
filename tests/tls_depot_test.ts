/**
 * depot over TLS as processes: depot-local reaches depot-server's control and tunnel ports
 * through mutual TLS (TCP tunnels and --mux), bytes pass byte-exact through curl; a wrong CA,
 * a missing client certificate and a plaintext local are refused with clear log lines while
 * the server keeps serving; depot-local's --deny answers SOCKS reply 0x02, also for a name
 * that resolves to a denied address.
 */

import { assert, assertEquals } from "./_assert.ts";
import { socksDial } from "./_depot.ts";
import { makePki, type Pki } from "./_tls.ts";
import {
  blockStreamSha256,
  run,
  type ServiceProcess,
  sha256,
  startOrigin,
  startService,
} from "./_util.ts";
import { Socks5ReplyError } from "../lib/socks5/mod.ts";

const total = 4 * 1024 * 1024;
const env = { DEPOT_TOKEN: "tls-depot-token" };

function startLocal(control: string, extra: string[], ready = /msg="connected"/) {
  return startService("depot-local.ts", [
    `--server=${control.replace("127.0.0.1", "localhost")}`,
    ...extra,
  ], { readyCount: 0, ready, env });
}

const goodTls = (pki: Pki) => [
  `--tls-ca=${pki.ca}`,
  `--tls-client-cert=${pki.clientCert}`,
  `--tls-client-key=${pki.clientKey}`,
];

async function curlBytes(socks: string, originPort: number): Promise<void> {
  const r = await run("curl", [
    "-sS",
    "--max-time",
    "20",
    "--socks5-hostname",
    socks,
    `http://127.0.0.1:${originPort}/bytes/${total}?seed=4`,
  ]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.raw.length, total);
  assertEquals(sha256(r.raw), blockStreamSha256(total, 4));
}

Deno.test("depot TLS: mutual TLS control and tunnels; wrong CA, no cert, plaintext refused", async () => {
  const pki = await makePki();
  const origin = startOrigin();
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("depot-server.ts", [
      "--control=:0",
      "--socks=:0",
      "--tunnel=:0",
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
      `--tls-client-ca=${pki.ca}`,
    ], { readyCount: 3, env });
    procs.push(server);
    const control = server.addrs.get("control")!;
    const socks = server.addrs.get("socks")!;

    const local = await startLocal(control, goodTls(pki));
    procs.push(local);
    await curlBytes(socks, origin.port);
    await local.stop();

    const muxLocal = await startLocal(control, [...goodTls(pki), "--mux"]);
    procs.push(muxLocal);
    await curlBytes(socks, origin.port);

    const wrongCa = await startLocal(control, [
      `--tls-ca=${pki.ca2}`,
      `--tls-client-cert=${pki.clientCert}`,
      `--tls-client-key=${pki.clientKey}`,
    ], /unknown-ca/);
    procs.push(wrongCa);
    await server.waitFor(/msg="tls handshake failed".*failure=peer-rejected/);

    const noCert = await startLocal(control, [`--tls-ca=${pki.ca}`], /msg="starting"/);
    procs.push(noCert);
    await server.waitFor(/msg="tls handshake failed".*failure=client-cert-required/);

    const plain = await startLocal(control, [], /msg="starting"/);
    procs.push(plain);
    await server.waitFor(/msg="tls handshake failed".*failure=not-tls/);

    // Still serving through the good local.
    await curlBytes(socks, origin.port);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await origin.close();
    await pki.remove();
  }
});

Deno.test("depot ACL: --deny answers 0x02, by literal and by resolved name", async () => {
  const origin = startOrigin();
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("depot-server.ts", [
      "--control=:0",
      "--socks=:0",
      "--tunnel=:0",
    ], { readyCount: 3, env });
    procs.push(server);
    const local = await startService("depot-local.ts", [
      `--server=${server.addrs.get("control")}`,
      `--allow=127.0.0.0/8:${origin.port}`,
      "--deny=127.0.0.2",
      "--deny=*.blocked.test",
    ], { readyCount: 0, ready: /msg="connected"/, env });
    procs.push(local);
    const socksPort = Number(server.addrs.get("socks")!.split(":").pop());
    const ok = await socksDial(socksPort, { host: "localhost", port: origin.port });
    ok.close();
    for (
      const dest of [
        { host: "127.0.0.2", port: origin.port },
        { host: "127.0.0.1", port: origin.port + 1 },
        { host: "x.blocked.test", port: origin.port },
      ]
    ) {
      try {
        const c = await socksDial(socksPort, dest);
        c.close();
        throw new Error(`${dest.host}:${dest.port} was allowed`);
      } catch (err) {
        assert(err instanceof Socks5ReplyError, String(err));
        assertEquals(err.reply, 2);
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await origin.close();
  }
});
