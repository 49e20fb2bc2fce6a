/**
 * tunnel-server `--access-log info`: one "access" line per request (host, method, path
 * without its query, status, bytes in/out, ms, request id, client fingerprint), with curl
 * against tunnel-server and tunnel-client processes — kept-alive requests on one stream,
 * a streamed POST body, a chunked response, an app 404; bodies arrive intact; off by default.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, readAll, run, type ServiceProcess, startService, until } from "./_util.ts";
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
    await until(
      "two access lines",
      () => lines.filter((l) => /msg="?access"? /.test(l)).length >= 2,
    )
      .catch(() => {
        // The count check below fails with every line logged.
      });
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

/** Exact responses of the raw app below, by request path (latin-1 text). */
const rawResponses: Record<string, string> = {
  // As a serialiser writes it: relayed as it came.
  "/canon": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
  // No reason phrase, bare LF, no space after a colon, trailing space: the front writes the
  // head it parsed (`HTTP/1.1 201 `, `X-A: b`, CRLF).
  "/odd": "HTTP/1.1 201\nX-A:b \r\nContent-Length: 2\n\r\nhi",
  // A body far larger than one read of the front: the head goes on, then the body by its length.
  "/big": "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + "0123456789".repeat(10_000),
  // An interim head, then a chunked response.
  "/early":
    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
  // HEAD: the length announces a body that never comes.
  "/head": "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n",
  // The app closes 5 bytes into a 10-byte body (the app below closes after this one).
  "/cut": "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
  // A length that is no number: the head is relayed, then the connection ends (as it did when
  // each piece was written at once).
  "/badlen": "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
};
/** What the public client receives for each path. */
const publicResponses: Record<string, string> = {
  ...rawResponses,
  "/odd": "HTTP/1.1 201 \r\nX-A: b\r\nContent-Length: 2\r\n\r\nhi",
};

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/**
 * An app that answers each request head (no bodies) on a connection with `rawResponses`
 * byte for byte, recording how many bytes each request head had as it arrived.
 */
function startRawApp(): { port: number; received: Map<string, number>; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received = new Map<string, number>();
  const conns = new Set<Deno.Conn>();
  const serveConn = async (c: Deno.Conn) => {
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(16 * 1024);
    try {
      while (true) {
        const end = new TextDecoder("latin1").decode(buf).indexOf("\r\n\r\n");
        if (end < 0) {
          const n = await c.read(chunk);
          if (n === null) return;
          const more = new Uint8Array(buf.length + n);
          more.set(buf);
          more.set(chunk.subarray(0, n), buf.length);
          buf = more;
          continue;
        }
        const head = new TextDecoder("latin1").decode(buf.subarray(0, end));
        const path = head.split(" ")[1].split("?")[0];
        received.set(path, end + 4);
        buf = buf.slice(end + 4);
        await c.write(latin1(rawResponses[path]));
        if (path === "/cut" || path === "/badlen") return;
      }
    } catch {
      // The tunnel client closed the connection at the end of the test.
    } finally {
      conns.delete(c);
      c.close();
    }
  };
  const accepting = (async () => {
    for await (const c of listener) {
      conns.add(c);
      serveConn(c);
    }
  })();
  return {
    port: listener.addr.port,
    received,
    close: async () => {
      listener.close();
      for (const c of conns) c.close();
      await accepting;
    },
  };
}

Deno.test("tunnel access log: the fields of each line, and in/out counting the bytes that went each way", async () => {
  const app = startRawApp();
  const [server, client, port] = await startPair(app, ["--access-log", "info"]);
  const pub = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const requests: [string, string, number][] = [
      ["GET", "/canon", 200],
      ["GET", "/big", 200],
      ["GET", "/odd", 201],
      ["GET", "/early", 200],
      ["HEAD", "/head", 200],
    ];
    // Pipelined on one kept-alive connection, then its end: the responses follow in order,
    // several of them maybe in one read of the tunnel stream.
    await pub.write(
      latin1(requests.map(([m, p]) => `${m} ${p}?q=1 HTTP/1.1\r\nHost: app.test\r\n\r\n`).join("")),
    );
    await pub.closeWrite();
    assertEquals(
      new TextDecoder("latin1").decode(await readAll(pub)),
      requests.map(([, p]) => publicResponses[p]).join(""),
    );
    await server.waitFor(/path=\/head /);
    const lines = server.lines.filter((l) => /msg="?access"? /.test(l));
    assertEquals(lines.length, requests.length, lines.join("\n"));
    const cid = field(lines[0], "cid"), client0 = field(lines[0], "client");
    const rid = field(lines[0], "rid").replace(/\.1$/, "");
    const remote = `127.0.0.1:${(pub.localAddr as Deno.NetAddr).port}`;
    for (const [i, [method, path, status]] of requests.entries()) {
      const ms = field(lines[i], "ms");
      assertMatch(ms, /^\d+$/);
      assertEquals(
        lines[i].replace(/^ts=\S+ /, ""),
        `level=info svc=tunnel-server msg="access" host=app.test method=${method} path=${path} ` +
          `status=${status} in=${app.received.get(path)} ` +
          `out=${publicResponses[path].length} ms=${ms} rid=${rid}.${i + 1} client=${client0} ` +
          `cid=${cid} remote=${remote}`,
      );
    }
    assertMatch(field(lines[0], "ts"), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assertMatch(client0, /^[0-9a-f]{12}$/);
    assertMatch(cid, /^\d+$/);
  } finally {
    pub.close();
    await client.stop();
    await server.stop();
    await app.close();
  }
});

Deno.test("tunnel access log: a response that breaks off reaches the client as far as it came, without a line", async () => {
  const app = startRawApp();
  const [server, client, port] = await startPair(app, ["--access-log", "info"]);
  try {
    for (const path of ["/cut", "/badlen"]) {
      const pub = await Deno.connect({ hostname: "127.0.0.1", port });
      const remote = `127.0.0.1:${(pub.localAddr as Deno.NetAddr).port}`;
      try {
        await pub.write(latin1(`GET ${path} HTTP/1.1\r\nHost: app.test\r\n\r\n`));
        // What the app sent (the head, and the 5 body bytes of /cut), then the front's close.
        assertEquals(new TextDecoder("latin1").decode(await readAll(pub)), rawResponses[path]);
      } finally {
        pub.close();
      }
      const done = await server.waitFor(new RegExp(`msg="request done" remote=${remote} `));
      assertEquals([field(done, "end"), field(done, "failure")], ["reset", "io"], done);
    }
    assert(!server.lines.some((l) => /msg="?access"? /.test(l)), server.lines.join("\n"));
  } finally {
    await client.stop();
    await server.stop();
    await app.close();
  }
});
