/**
 * Leaving through a proxy (like chisel's `--proxy`): tunnel-client, depot-local,
 * fusion-client and a seaprox link reach their server only through tinyproxy (HTTP CONNECT)
 * or microsocks (SOCKS5), 4 MiB byte-exact by SHA-256, each proxy's log showing the server
 * it was asked for; the services read `ALL_PROXY` and respect `NO_PROXY`; the settings
 * themselves (`proxyFor`, `bypassesProxy`, `parseProxyUrl`) as plain functions.
 */

import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { FusionClient, FusionServer } from "../lib/fusion/mod.ts";
import { closeQuietly, serve } from "../lib/net/mod.ts";
import { directDialer, LinkClient, serveLink } from "../lib/proxy/mod.ts";
import {
  bypassesProxy,
  dialTransport,
  parseProxyUrl,
  ProxyConfigError,
  proxyFor,
  proxySettings,
} from "../lib/transport/mod.ts";
import { startDepot } from "./_depot.ts";
import { startHashTarget } from "./_fusion.ts";
import { startApp, startClient, startTunnel, testLog } from "./_tunnel.ts";
import { makePki } from "./_tls.ts";
import { serveTunnel, TunnelServer } from "../lib/tunnel/mod.ts";
import { startMicrosocks, startTinyproxy } from "./_upstreams.ts";
import {
  blockStreamSha256,
  drainHash,
  freePort,
  listenLocal,
  run,
  sendBlocks,
  sha256,
  startOrigin,
  startService,
  until,
  within,
} from "./_util.ts";

const totalBytes = 4 << 20;

Deno.test("egress: proxy settings pick the proxy per carrier and honour NO_PROXY", () => {
  const s = proxySettings({
    all: "socks5://u:p%40ss@10.0.0.1",
    https: "http://10.0.0.2:3128",
    noProxy: "internal.example, .corp.example,10.1.2.3,db:5432",
  });
  assertEquals(s.all?.addr, { host: "10.0.0.1", port: 1080 });
  assertEquals(s.all?.auth, { username: "u", password: "p@ss" });
  assertEquals(s.all?.display, "socks5://u:***@10.0.0.1");
  const at = (host: string, port = 443) => ({ host, port });
  assertEquals(proxyFor(s, at("server.example"), false)?.kind, "socks5");
  assertEquals(proxyFor(s, at("server.example"), true)?.kind, "http");
  for (const direct of ["internal.example", "a.internal.example", "x.corp.example", "10.1.2.3"]) {
    assertEquals(proxyFor(s, at(direct), true), undefined, direct);
  }
  assert(bypassesProxy(at("db", 5432), s.noProxy!));
  assert(!bypassesProxy(at("db", 5433), s.noProxy!));
  assert(!bypassesProxy(at("notinternal.example"), s.noProxy!));
  assert(bypassesProxy(at("anything"), ["*"]));
  assertEquals(parseProxyUrl("http://[::1]").addr, { host: "::1", port: 80 });
  assertEquals(proxyFor(undefined, at("x"), false), undefined);
  for (const bad of ["https://p:443", "ftp://p", "p:3128", "http://"]) {
    assert(assertThrows(() => parseProxyUrl(bad), bad) instanceof ProxyConfigError, bad);
  }
});

Deno.test("egress: tunnel-client through tinyproxy (HTTP CONNECT), 4 MiB each way", async () => {
  const tp = await startTinyproxy();
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-egress-http-0001";
  await t.server.addHost("app.test", id);
  const client = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    proxy: proxySettings({ all: `http://127.0.0.1:${tp.port}` }),
  });
  const upload = await Deno.makeTempFile();
  try {
    await client.connected();
    await tp.waitFor(new RegExp(`CONNECT 127\\.0\\.0\\.1:${t.port} `));
    const host = ["-H", "Host: app.test", "-sS", "--max-time", "60"];
    const down = await run("curl", [...host, `${t.url}/bytes/${totalBytes}?seed=3`]);
    assertEquals(down.code, 0, down.stderr);
    assertEquals(sha256(down.raw), blockStreamSha256(totalBytes, 3));
    const body = new Uint8Array(totalBytes);
    crypto.getRandomValues(body.subarray(0, 65536));
    await Deno.writeFile(upload, body);
    const up = await run("curl", [...host, "--data-binary", `@${upload}`, `${t.url}/sha256`]);
    assertEquals(JSON.parse(up.stdout), { sha256: sha256(body), bytes: totalBytes }, up.stderr);
  } finally {
    await Deno.remove(upload);
    await client.stop();
    await t.close();
    await app.close();
    await tp.stop();
  }
});

Deno.test("egress: depot-local through microsocks (SOCKS5, with a password)", async () => {
  const ms = await startMicrosocks({ user: "egress", pass: "pw" });
  const origin = startOrigin();
  const proxy = proxySettings({ all: `socks5://egress:pw@127.0.0.1:${ms.port}` });
  const depot = await startDepot({ locals: [{ proxy }] });
  try {
    // Both the control and the tunnel connections went through microsocks.
    await ms.waitFor(new RegExp(`connected to 127\\.0\\.0\\.1:${depot.controlPort}`));
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "60",
      "--socks5",
      `127.0.0.1:${depot.socksPort}`,
      `http://127.0.0.1:${origin.port}/bytes/${totalBytes}?seed=4`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(sha256(r.raw), blockStreamSha256(totalBytes, 4));
    await ms.waitFor(new RegExp(`connected to 127\\.0\\.0\\.1:${depot.tunnelPort}`));
  } finally {
    await depot.close();
    await origin.close();
    await ms.stop();
  }
});

Deno.test("egress: a seaprox link and a fusion-client through tinyproxy, byte-exact", async () => {
  const tp = await startTinyproxy();
  const proxy = proxySettings({ all: `http://127.0.0.1:${tp.port}` });
  const token = "egress-link-token-0123456789abcdef";
  const far = serveLink(listenLocal(), { token, dialer: directDialer() });
  const link = new LinkClient({ addr: { host: "127.0.0.1", port: far.addr.port }, token, proxy });
  const target = startHashTarget(totalBytes);
  const fusionServer = new FusionServer({
    token,
    target: { host: "127.0.0.1", port: target.port },
  });
  const fsrv = serve(listenLocal(), fusionServer.handle);
  const fusion = new FusionClient({
    token,
    paths: [{ host: "127.0.0.1", port: fsrv.addr.port }, {
      host: "127.0.0.1",
      port: fsrv.addr.port,
    }],
    proxy,
  });
  const fcli = serve(listenLocal(), fusion.handle);
  try {
    // The link: one stream to the hash target, 4 MiB each way.
    const s = await link.dial(
      { host: "127.0.0.1", port: target.port },
      AbortSignal.timeout(20_000),
    );
    const [, down] = await within(
      Promise.all([sendBlocks(s, totalBytes, 1).then(() => s.closeWrite()), drainHash(s)]),
      "4 MiB each way over the link stream",
    );
    closeQuietly(s);
    assertEquals(down, { bytes: totalBytes, sha256: blockStreamSha256(totalBytes, 2) });
    await tp.waitFor(new RegExp(`CONNECT 127\\.0\\.0\\.1:${far.addr.port} `));

    // Fusion: both paths through the proxy.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: fcli.addr.port });
    const [, fdown] = await within(
      Promise.all([sendBlocks(c, totalBytes, 1).then(() => c.closeWrite()), drainHash(c)]),
      "4 MiB each way through fusion",
    );
    closeQuietly(c);
    assertEquals(fdown, { bytes: totalBytes, sha256: blockStreamSha256(totalBytes, 2) });
    await until("the target to hash both uploads", () => target.results.length >= 2);
    assertEquals(target.results.length, 2, "the link stream and the fusion session uploaded");
    for (const got of target.results) {
      assertEquals(got, { bytes: totalBytes, sha256: blockStreamSha256(totalBytes, 1) });
    }
    const fusionConnect = `CONNECT 127\\.0\\.0\\.1:${fsrv.addr.port} `;
    // Both fusion paths went through the proxy.
    await tp.waitFor(new RegExp(`${fusionConnect}[\\s\\S]*${fusionConnect}`));
  } finally {
    await fcli.stop(500);
    await fusion.close();
    await fsrv.stop(500);
    await fusionServer.close();
    await link.close();
    await far.stop(500);
    await target.close();
    await tp.stop();
  }
});

Deno.test("egress: tunnel-client reads ALL_PROXY and respects NO_PROXY", async () => {
  const ms = await startMicrosocks();
  const app = startApp();
  const t = startTunnel();
  const id = "identifier-egress-env-0001";
  await t.server.addHost("app.test", id);
  const args = ["--server", t.url, "--identifier", id, "--local", `127.0.0.1:${app.port}`];
  const ready = /msg="connected"/;
  try {
    const viaEnv = await startService("tunnel-client.ts", args, {
      env: { ALL_PROXY: `socks5://127.0.0.1:${ms.port}` },
      ready,
      readyCount: 0,
    });
    assertEquals(await viaEnv.stop(), 0);
    await ms.waitFor(new RegExp(`connected to 127\\.0\\.0\\.1:${t.port}`));

    // A dead proxy, but NO_PROXY names the server: it is reached directly.
    const dead = freePort();
    const direct = await startService("tunnel-client.ts", args, {
      env: { ALL_PROXY: `http://127.0.0.1:${dead}`, NO_PROXY: "localhost,127.0.0.1" },
      ready,
      readyCount: 0,
    });
    assertEquals(await direct.stop(), 0);
  } finally {
    await t.close();
    await app.close();
    await ms.stop();
  }
});

Deno.test("egress: wss:// tunnel-client through tinyproxy, TLS end to end (HTTPS_PROXY role)", async () => {
  const pki = await makePki();
  const tp = await startTinyproxy();
  const app = startApp();
  const server = new TunnelServer({ log: testLog("egress-tls") });
  const id = "identifier-egress-tls-0001";
  await server.addHost("app.test", id);
  const cert = await Deno.readTextFile(pki.serverCert);
  const key = await Deno.readTextFile(pki.serverKey);
  const front = serveTunnel(Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key }), server, {
    proto: "https",
  });
  const client = startClient({
    server: `wss://localhost:${front.addr.port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    caCerts: [await Deno.readTextFile(pki.ca)],
    // A dead ALL_PROXY: only the https proxy may be used for a TLS carrier.
    proxy: proxySettings({
      all: `http://127.0.0.1:${freePort()}`,
      https: `http://127.0.0.1:${tp.port}`,
    }),
  });
  try {
    await client.connected();
    // tinyproxy saw only the CONNECT: the TLS inside it is end to end.
    await tp.waitFor(new RegExp(`CONNECT localhost:${front.addr.port} `));
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "60",
      "--cacert",
      pki.ca,
      "-H",
      "Host: app.test",
      `https://127.0.0.1:${front.addr.port}/bytes/${totalBytes}?seed=6`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(sha256(r.raw), blockStreamSha256(totalBytes, 6));
  } finally {
    await client.stop();
    await server.close();
    await front.stop(200);
    await app.close();
    await tp.stop();
    await pki.remove();
  }
});

Deno.test("egress: what cannot go through a proxy is refused, never dialled directly", async () => {
  const proxy = parseProxyUrl("http://127.0.0.1:9");
  // A listener that accepts and never answers: a direct dial would hang here, not fail fast.
  const target = listenLocal();
  const ep = (kind: "tcp" | "tls") => ({
    kind,
    host: "127.0.0.1",
    port: target.addr.port,
    path: "/",
  });
  const cases: [Parameters<typeof dialTransport>, RegExp][] = [
    [[ep("tcp"), { proxy, localAddress: "127.0.0.1" }], /local address/],
    [[ep("tls"), { proxy, localAddress: "127.0.0.1" }], /local address through a proxy/],
    [[ep("tls"), { proxy, tls: { cert: "x", key: "y" } }], /client certificate through a proxy/],
  ];
  try {
    for (const [args, want] of cases) {
      const err = await dialTransport(...args).then(() => undefined, (e: Error) => e);
      assert(err && want.test(err.message), String(err));
    }
  } finally {
    target.close();
  }
});
