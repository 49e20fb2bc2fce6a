/** handleHttpProxy against real curl: forward (-x) and CONNECT (-p -x), keep-alive, auth, errors. */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startHttpProxy } from "./_http.ts";
import { freePort, run, startOrigin } from "./_util.ts";
import { NetError, staticCredentials } from "../lib/net/mod.ts";

const curlBase = ["-sS", "--max-time", "20"];

Deno.test("http proxy: curl -x forwards, keeps the client connection alive, re-dials per host", async () => {
  const a = startOrigin();
  const b = startOrigin();
  const proxy = startHttpProxy();
  try {
    const px = `http://127.0.0.1:${proxy.addr.port}`;
    const r = await run("curl", [
      ...curlBase,
      "-v",
      "-x",
      px,
      `http://127.0.0.1:${a.port}/hello?id=1`,
      `http://127.0.0.1:${a.port}/hello?id=2`,
      `http://localhost:${b.port}/hello?id=3`,
    ]);
    assertEquals([r.code, r.stdout], [0, "hello 1hello 2hello 3"], r.stderr);
    assertMatch(r.stderr, /Re-using existing connection/);
    assertEquals(proxy.stats.total, 1, "three requests, one client connection");
    assertEquals(proxy.exchanges.map((e) => [e.method, e.status, e.dest?.port]), [
      ["GET", 200, a.port],
      ["GET", 200, a.port],
      ["GET", 200, b.port],
    ]);
    // 404 passes through untouched, HEAD has no body.
    const nf = await run("curl", [
      ...curlBase,
      "-x",
      px,
      "-w",
      "%{http_code}",
      `http://127.0.0.1:${a.port}/nope`,
    ]);
    assertEquals(nf.stdout, "not found404");
    const head = await run("curl", [
      ...curlBase,
      "-I",
      "-x",
      px,
      `http://127.0.0.1:${a.port}/bytes/5`,
    ]);
    assertMatch(head.stdout, /^HTTP\/1.1 200/);
    assertMatch(head.stdout, /content-length: 5/i);
  } finally {
    await proxy.stop();
    await a.close();
    await b.close();
  }
});

Deno.test("http proxy: curl -p -x tunnels through CONNECT", async () => {
  const origin = startOrigin();
  const proxy = startHttpProxy();
  try {
    const r = await run("curl", [
      ...curlBase,
      "-p",
      "-x",
      `http://127.0.0.1:${proxy.addr.port}`,
      `http://127.0.0.1:${origin.port}/hello?id=tunnel`,
    ]);
    assertEquals([r.code, r.stdout], [0, "hello tunnel"], r.stderr);
    await proxy.stop(); // the exchange is reported once the tunnel has closed
    assertEquals(proxy.exchanges[0].method, "CONNECT");
    assertEquals(proxy.exchanges[0].status, 200);
    assert(proxy.exchanges[0].requestBytes > 0 && proxy.exchanges[0].responseBytes > 0);
  } finally {
    await proxy.stop();
    await origin.close();
  }
});

Deno.test("http proxy: Basic proxy auth — 407 without or with wrong credentials", async () => {
  const origin = startOrigin();
  const proxy = startHttpProxy({ authenticate: staticCredentials("alice", "s3cret") });
  try {
    const px = `http://127.0.0.1:${proxy.addr.port}`;
    const url = `http://127.0.0.1:${origin.port}/hello?id=auth`;
    const none = await run("curl", [...curlBase, "-i", "-x", px, url]);
    assertMatch(none.stdout, /^HTTP\/1.1 407/);
    assertMatch(none.stdout, /Proxy-Authenticate: Basic realm="warren"/);
    const wrong = await run("curl", [
      ...curlBase,
      "-w",
      "%{http_code}",
      "-o",
      "/dev/null",
      "-x",
      px,
      "-U",
      "alice:nope",
      url,
    ]);
    assertEquals(wrong.stdout, "407");
    const ok = await run("curl", [...curlBase, "-x", px, "-U", "alice:s3cret", url]);
    assertEquals([ok.code, ok.stdout], [0, "hello auth"], ok.stderr);
    const okConnect = await run("curl", [
      ...curlBase,
      "-p",
      "-x",
      `http://alice:s3cret@127.0.0.1:${proxy.addr.port}`,
      url,
    ]);
    assertEquals([okConnect.code, okConnect.stdout], [0, "hello auth"], okConnect.stderr);
    const badConnect = await run("curl", [...curlBase, "-p", "-x", px, url]);
    assert(badConnect.code !== 0);
    assertMatch(badConnect.stderr, /407/);
    assertEquals(proxy.exchanges.filter((e) => e.status === 407).length, 3);
    assertEquals(proxy.exchanges.find((e) => e.status === 200)?.username, "alice");
  } finally {
    await proxy.stop();
    await origin.close();
  }
});

Deno.test("http proxy: 502 for refused or unresolvable upstreams, 504 on timeout, 403 on policy", async () => {
  const proxy = startHttpProxy();
  const slow = startHttpProxy({
    connect: (dest) =>
      dest.port === 1
        ? Promise.reject(new NetError("not-allowed", "port 1 is off limits"))
        : new Promise((_, reject) =>
          setTimeout(() => reject(new NetError("timeout", "dial timed out")), 20)
        ),
  });
  try {
    const px = `http://127.0.0.1:${proxy.addr.port}`;
    const fmt = ["-w", "\n%{http_code}"];
    const refused = await run("curl", [
      ...curlBase,
      ...fmt,
      "-x",
      px,
      `http://127.0.0.1:${freePort()}/`,
    ]);
    assertMatch(refused.stdout, /^502 Bad Gateway: connection refused .*\n+502$/);
    const nx = await run("curl", [...curlBase, ...fmt, "-x", px, "http://no-such-host.invalid/"]);
    assertMatch(nx.stdout, /^502 Bad Gateway: cannot resolve host .*\n+502$/);
    const refusedConnect = await run("curl", [
      ...curlBase,
      "-p",
      "-x",
      px,
      `http://127.0.0.1:${freePort()}/`,
    ]);
    assert(refusedConnect.code !== 0);
    assertMatch(refusedConnect.stderr, /502/);
    const spx = `http://127.0.0.1:${slow.addr.port}`;
    const timeout = await run("curl", [
      ...curlBase,
      ...fmt,
      "-x",
      spx,
      "http://example.invalid:8080/",
    ]);
    assertMatch(timeout.stdout, /^504 Gateway Timeout: connection timed out .*\n+504$/);
    const forbidden = await run("curl", [
      ...curlBase,
      ...fmt,
      "-x",
      spx,
      "http://example.invalid:1/",
    ]);
    assertMatch(forbidden.stdout, /^403 Forbidden: destination not allowed .*\n+403$/);
    assertEquals(proxy.exchanges.map((e) => e.failure), ["refused", "resolve", "refused"]);
  } finally {
    await proxy.stop();
    await slow.stop();
  }
});
