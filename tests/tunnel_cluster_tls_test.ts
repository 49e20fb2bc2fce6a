/**
 * TLS on the links between tunnel-server instances (`--cluster-tls-*`, issue 19), with real
 * certificates (tests/_tls.ts) and a real redis-server: a request handed over a mutual-TLS
 * link is served byte-exact; a plaintext dial and a stranger's certificate get no link even
 * with the right token; a link to a peer whose certificate the CA did not sign is refused;
 * bad flag combinations exit with one line.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { blockStreamSha256, portOf, run, type ServiceProcess, sha256 } from "./_util.ts";
import { curl, startApp, startClientProcess, startClusterMember } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { makePki } from "./_tls.ts";
import { encodeFrame, readFrameJson } from "../lib/control/mod.ts";
import { BufferedReader, closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import { connectTls, loadTlsClientConfig } from "../lib/transport/mod.ts";

const id = "cluster-tls-identifier-01";
const token = "cluster-tls-link-token-01";

/** What a peer gets after sending the link hello with the right token: the answer or why not. */
async function helloAnswer(conn: Duplex): Promise<string> {
  try {
    await writeAll(conn, encodeFrame({ token, from: "test" }));
    const f = await readFrameJson(new BufferedReader(conn), 4096);
    return f ? JSON.stringify(f.json) : "eof";
  } catch (err) {
    return `error: ${(err as Error).name}`;
  } finally {
    closeQuietly(conn);
  }
}

Deno.test("tunnel cluster TLS: a request handed over a mutual-TLS link is served byte-exact; strangers get no link", async () => {
  const pki = await makePki();
  const redis = await startRedis();
  const app = startApp("app");
  const procs: ServiceProcess[] = [];
  try {
    const tlsFlags = (cert: string, key: string) => [
      "--cluster-tls-cert",
      cert,
      "--cluster-tls-key",
      key,
      "--cluster-tls-ca",
      pki.ca,
    ];
    const instance = async (extra: string[], readyCount = 2) => {
      const p = await startClusterMember(redis.url, token, [
        "--host",
        `app.test=${id}`,
        ...extra,
      ], { readyCount });
      procs.push(p);
      return p;
    };
    const a = await instance(tlsFlags(pki.peerCert, pki.peerKey));
    const b = await instance(tlsFlags(pki.peerCert, pki.peerKey));
    const portA = portOf(a.addrs.get("http")!);
    const portB = portOf(b.addrs.get("http")!);
    procs.push(
      await startClientProcess(`127.0.0.1:${portA}`, app.port, id),
    );
    // B hands these to A over the TLS link.
    for (let i = 0; i < 3; i++) {
      assertEquals((await curl(portB, "app.test", `/name?id=${i}`)).body, `app ${i}`);
    }
    const total = 2 * 1024 * 1024 + 9;
    const down = await run("curl", [
      "-sS",
      "--max-time",
      "60",
      "-H",
      "Host: app.test",
      `http://127.0.0.1:${portB}/bytes/${total}?seed=9`,
    ]);
    assertEquals(down.code, 0, down.stderr);
    assertEquals(sha256(down.raw), blockStreamSha256(total, 9));
    await a.waitFor(/cluster link up/);

    // A's cluster port speaks only TLS with a client certificate of the cluster's CA.
    const clusterA = a.addrs.get("cluster")!;
    const plain = await Deno.connect({ hostname: "127.0.0.1", port: portOf(clusterA) });
    const plainAnswer = await helloAnswer(plain);
    assert(!plainAnswer.includes('"ok":true'), `plaintext got a link: ${plainAnswer}`);
    const rogueCfg = loadTlsClientConfig({
      caFile: pki.ca,
      certFile: pki.rogueCert,
      keyFile: pki.rogueKey,
    });
    const rogue = await connectTls("127.0.0.1", portOf(clusterA), rogueCfg).catch(() => null);
    if (rogue) {
      const rogueAnswer = await helloAnswer(rogue);
      assert(
        !rogueAnswer.includes('"ok":true'),
        `a stranger's certificate got a link: ${rogueAnswer}`,
      );
    }
    // Our own client certificate with the right token does get one (the check above can fail).
    const ours = await connectTls(
      "127.0.0.1",
      portOf(clusterA),
      loadTlsClientConfig({ caFile: pki.ca, certFile: pki.peerCert, keyFile: pki.peerKey }),
    );
    assertEquals(await helloAnswer(ours), '{"ok":true}');

    // An instance that trusts another CA: it refuses A's certificate, so its requests for
    // A's client fail (502) instead of going over an unverified link.
    const c = await instance([
      "--cluster-tls-cert",
      pki.peerCert,
      "--cluster-tls-key",
      pki.peerKey,
      "--cluster-tls-ca",
      pki.ca2,
    ]);
    const r = await curl(portOf(c.addrs.get("http")!), "app.test", "/name?id=c");
    assertEquals(r.status, 502);
    await c.waitFor(/cluster link failed/);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
    await redis.stop();
    await pki.remove();
  }
});

Deno.test("tunnel cluster TLS: bad --cluster-tls-* combinations exit with one line", async () => {
  const pki = await makePki();
  const svc = new URL("../services/tunnel-server.ts", import.meta.url).pathname;
  const base = ["run", "-A", svc, "--check-config", "--registry", "redis://127.0.0.1:1"];
  try {
    // [flags, whether TUNNEL_CLUSTER_TOKEN is set, what the one line says]
    const cases: [string[], boolean, RegExp][] = [
      [["--cluster-tls-cert", pki.peerCert], true, /--cluster-tls-cert and --cluster-tls-key/],
      [["--cluster-tls-ca", pki.ca], true, /need --cluster-tls-cert/],
      [
        ["--cluster-tls-cert", pki.peerCert, "--cluster-tls-key", pki.peerKey],
        false,
        /needs --cluster-token/,
      ],
      [
        [
          "--cluster-tls-cert",
          pki.serverCert,
          "--cluster-tls-key",
          pki.serverKey,
          "--cluster-tls-ca",
          pki.ca,
        ],
        true,
        /^error: --cluster-tls-\*: .*does not include clientAuth/,
      ],
      [
        ["--cluster-tls-cert", pki.ca2, "--cluster-tls-key", pki.ca],
        true,
        /^error: --cluster-tls-\*: .*key/,
      ],
    ];
    for (const [flags, withToken, want] of cases) {
      const env = withToken ? { TUNNEL_CLUSTER_TOKEN: token } : undefined;
      const r = await run(Deno.execPath(), [...base, ...flags], { env });
      assertEquals(r.code, 2, `${flags.join(" ")}: ${r.stderr}`);
      assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
      assertMatch(r.stderr, want);
    }
  } finally {
    await pki.remove();
  }
});
