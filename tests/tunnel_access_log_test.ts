/**
 * tunnel-server `--access-log info`: one "access" line per request (host, method, path
 * without its query, status, bytes in/out, ms, request id, client fingerprint), with curl
 * against tunnel-server and tunnel-client processes — kept-alive requests on one stream,
 * a streamed POST body, a chunked response, an app 404; bodies arrive intact; off by default.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, run, type ServiceProcess, startService } from "./_util.ts";
import { curl, startApp, startClient, startHonoTunnel } from "./_tunnel.ts";
import { Logger } from "../lib/log.ts";

const id = "access-log-identifier-01";

function field(line: string, name: string): string {
  return new RegExp(`\\b${name}=("[^"]*"|\\S+)`).exec(line)?.[1].replace(/^"|"$/g, "") ?? "";
}

async function startPair(
  app: { port: number },
  extra: string[],
): Promise<[ServiceProcess, ServiceProcess, number]> {
  const server = await startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--host",
    `app.test=${id}`,
    ...extra,
  ]);
  const port = portOf(server.addrs.get("http")!);
  const client = await startService("tunnel-client.ts", [
    "--server",
    `http://127.0.0.1:${port}`,
    "--local",
    `127.0.0.1:${app.port}`,
  ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
  return [server, client, port];
}

Deno.test("tunnel access log: one line per request with status, sizes, request id and client; off by default", async () => {
  const app = startApp("a");
  const procs: ServiceProcess[] = [];
  try {
    const [server, client, port] = await startPair(app, ["--access-log", "info"]);
    procs.push(client, server);
    const access = () => server.lines.filter((l) => /msg="?access"? /.test(l));

    // Two requests kept alive on one connection (one tunnel stream): two lines, ids .1 and .2.
    const two = await run("curl", [
      "-sS",
      "-H",
      "Host: app.test",
      `http://127.0.0.1:${port}/name?id=1&token=secret-in-query`,
      `http://127.0.0.1:${port}/nope`,
    ]);
    assertMatch(two.stdout, /^a 1/);
    const big = new Uint8Array(300_000).map((_, i) => i % 251);
    const post = await run("curl", [
      "-sS",
      "-H",
      "Host: app.test",
      "--data-binary",
      "@-",
      `http://127.0.0.1:${port}/echo`,
    ], { stdin: big });
    assertEquals(post.raw.length, big.length);
    assertEquals(post.raw, big);
    assertEquals((await curl(port, "app.test", "/chunked")).body, "one,two,three");
    await server.waitFor(/path=\/chunked/);

    const lines = access();
    assertEquals(lines.length, 4, lines.join("\n"));
    const [l1, l2, l3, l4] = lines;
    assertEquals([field(l1, "method"), field(l1, "path"), field(l1, "status")], [
      "GET",
      "/name",
      "200",
    ]);
    assertEquals([field(l2, "path"), field(l2, "status")], ["/nope", "404"]);
    const rid1 = field(l1, "rid"), rid2 = field(l2, "rid");
    assertEquals(rid1.replace(/\.1$/, ".2"), rid2, `${rid1} ${rid2}`);
    assertEquals(field(l1, "host"), "app.test");
    assertMatch(field(l1, "client"), /^[0-9a-f]{12}$/);
    assert(Number(field(l1, "in")) > 0 && Number(field(l1, "out")) > "a 1".length, l1);
    assertEquals([field(l3, "method"), field(l3, "path"), field(l3, "status")], [
      "POST",
      "/echo",
      "200",
    ]);
    assert(Number(field(l3, "in")) > big.length && Number(field(l3, "out")) > big.length, l3);
    assert(Number(field(l3, "ms")) >= 0, l3);
    assertEquals(field(l4, "status"), "200");
    assert(!server.lines.some((l) => l.includes("secret-in-query")), "query logged");
    assert(!server.lines.some((l) => l.includes(id)), "identifier logged");
  } finally {
    for (const p of procs) await p.stop();
  }
  // Off by default: requests are served, no access line.
  const [server, client, port] = await startPair(app, []);
  try {
    assertEquals((await curl(port, "app.test", "/name?id=9")).body, "a 9");
    assert(!server.lines.some((l) => /msg="?access"? /.test(l)), server.lines.join("\n"));
  } finally {
    await client.stop();
    await server.stop();
    await app.close();
  }
});

Deno.test("tunnel access log: the embeddable (Hono) front with accessLog writes the same line", async () => {
  const lines: string[] = [];
  const log = new Logger("info", {}, (l) => lines.push(l));
  const app = startApp("h");
  const t = startHonoTunnel({ server: { log }, app: { accessLog: true } });
  await t.server.addHost("app.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    assertEquals((await curl(t.port, "app.test", "/name?id=1&token=q-secret")).body, "h 1");
    const big = new Uint8Array(200_000).map((_, i) => i % 249);
    const post = await run("curl", [
      "-sS",
      "-H",
      "Host: app.test",
      "-H",
      "Transfer-Encoding: chunked",
      "--data-binary",
      "@-",
      `http://127.0.0.1:${t.port}/echo`,
    ], { stdin: big });
    assertEquals(post.raw, big);
    const deadline = Date.now() + 10_000;
    while (lines.filter((l) => /msg="?access"? /.test(l)).length < 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const access = lines.filter((l) => /msg="?access"? /.test(l));
    assertEquals(access.length, 2, lines.join("\n"));
    const [get, echo] = access;
    assertEquals([
      field(get, "host"),
      field(get, "method"),
      field(get, "path"),
      field(get, "status"),
    ], [
      "app.test",
      "GET",
      "/name",
      "200",
    ]);
    assertEquals(field(get, "out"), "3");
    assertEquals([field(echo, "method"), field(echo, "in"), field(echo, "out")], [
      "POST",
      String(big.length),
      String(big.length),
    ]);
    assertMatch(field(echo, "client"), /^[0-9a-f]{12}$/);
    assert(!lines.some((l) => l.includes("q-secret") || l.includes(id)), "secret logged");
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});
