/**
 * lib/http serveHttp (the --metrics, --status and --admin listeners): curl and fetch as
 * peers (GET, HEAD, a JSON POST with Content-Length and chunked), requests split into
 * single bytes, and hostile input answered with a status and a close — malformed heads,
 * oversize heads and bodies, smuggling framings, a Host that would move the URL, truncation,
 * random bytes — while the server keeps answering.
 */

import { assert, assertEquals } from "./_assert.ts";
import { serveHttp } from "../lib/http/mod.ts";
import type { Server } from "../lib/net/mod.ts";
import { readAll } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** An echo of what the handler saw: method, path, Host, remote, body. */
async function withServer(
  fn: (port: number, server: Server) => Promise<void>,
  opts: { maxBodyBytes?: number } = {},
): Promise<void> {
  const server = serveHttp(
    Deno.listen({ hostname: "127.0.0.1", port: 0 }),
    async (req, info) => {
      const url = new URL(req.url);
      if (url.pathname === "/empty") return new Response(null, { status: 204 });
      if (url.pathname === "/throw") throw new Error("handler bug");
      return Response.json({
        method: req.method,
        path: url.pathname + url.search,
        host: url.host,
        remote: info.remoteAddr.hostname,
        body: await req.text(),
        type: req.headers.get("content-type"),
      });
    },
    opts,
  );
  try {
    await fn(server.addr.port, server);
  } finally {
    await server.stop();
  }
}

async function curl(...args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("curl", { args: ["-sS", ...args], stdout: "piped" }).output();
  return { code: r.code, out: dec.decode(r.stdout) };
}

/** Send `bytes` (in `pieces` writes) and read the whole answer until the server closes. */
async function raw(port: number, bytes: Uint8Array, pieces = 1): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const step = Math.max(1, Math.ceil(bytes.length / pieces));
    for (let i = 0; i < bytes.length; i += step) {
      // The server may answer and close before the rest is written (an early 4xx).
      if (await c.write(bytes.subarray(i, i + step)).catch(() => -1) < 0) break;
    }
    await c.closeWrite().catch(() => {});
    return dec.decode(await readAll(c).catch(() => new Uint8Array()));
  } finally {
    c.close();
  }
}

Deno.test("serveHttp: curl GET, HEAD, JSON POST (length and chunked), 204", async () => {
  await withServer(async (port) => {
    const get = await curl(`http://127.0.0.1:${port}/metrics?x=1`);
    assertEquals(JSON.parse(get.out).path, "/metrics?x=1");
    assertEquals(JSON.parse(get.out).remote, "127.0.0.1");
    const head = await curl("-I", `http://127.0.0.1:${port}/`);
    assert(/^HTTP\/1\.1 200/.test(head.out) && /content-length: \d+/i.test(head.out), head.out);
    const body = JSON.stringify({ host: "app.test", identifier: "x".repeat(20) });
    const post = await curl(
      ...["-X", "POST", "-H", "content-type: application/json", "--data-binary", body],
      `http://127.0.0.1:${port}/hosts`,
    );
    assertEquals(JSON.parse(post.out).body, body);
    assertEquals(JSON.parse(post.out).type, "application/json");
    const chunked = await curl(
      ...["-X", "POST", "-H", "transfer-encoding: chunked", "--data-binary", body],
      `http://127.0.0.1:${port}/hosts`,
    );
    assertEquals(JSON.parse(chunked.out).body, body);
    const empty = await curl(
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `http://127.0.0.1:${port}/empty`,
    );
    assertEquals(empty.out, "204");
    const res = await fetch(`http://127.0.0.1:${port}/a`, { method: "PUT", body: "hello" });
    assertEquals(res.headers.get("connection"), "close");
    assertEquals((await res.json()).body, "hello");
  });
});

Deno.test("serveHttp: a request split into single bytes", async () => {
  await withServer(async (port) => {
    const req = "POST /x HTTP/1.1\r\nHost: a.test:8080\r\nContent-Length: 5\r\n\r\nhello";
    const answer = await raw(port, enc.encode(req), req.length);
    assert(answer.startsWith("HTTP/1.1 200"), answer);
    const json = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
    assertEquals([json.host, json.body], ["a.test:8080", "hello"]);
  });
});

Deno.test("serveHttp: hostile requests get a status and a close, the server goes on", async () => {
  await withServer(async (port, server) => {
    const cases: [string, string | Uint8Array, RegExp][] = [
      ["malformed request line", "GARBAGE\r\n\r\n", /^HTTP\/1\.1 400/],
      ["HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", /^HTTP\/1\.1 (400|505)/],
      ["absolute-form target", "GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", /^HTTP\/1\.1 400/],
      ["Host with a path", "GET / HTTP/1.1\r\nHost: a/metrics?\r\n\r\n", /^HTTP\/1\.1 400/],
      ["Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", /^HTTP\/1\.1 400/],
      [
        "Content-Length with chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        /^HTTP\/1\.1 400/,
      ],
      [
        "two Content-Lengths",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        /^HTTP\/1\.1 400/,
      ],
      [
        "bad chunk size",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        /^HTTP\/1\.1 400/,
      ],
      [
        "body over the limit",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n",
        /^HTTP\/1\.1 413/,
      ],
      [
        "chunked body over the limit",
        `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${
          "x".repeat(1024)
        }\r\n400\r\n${"x".repeat(1024)}\r\n0\r\n\r\n`,
        /^HTTP\/1\.1 413/,
      ],
      [
        "head over 16 KiB",
        `GET / HTTP/1.1\r\nHost: a\r\nX: ${"y".repeat(20_000)}\r\n\r\n`,
        /^HTTP\/1\.1 431/,
      ],
      ["truncated head", "GET / HTTP/1.1\r\nHost: a\r\n", /^$/],
      ["truncated body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", /^$/],
      ["nothing at all", "", /^$/],
      ["a handler that throws", "GET /throw HTTP/1.1\r\nHost: a\r\n\r\n", /^HTTP\/1\.1 500/],
    ];
    for (const [what, req, want] of cases) {
      const answer = await raw(port, typeof req === "string" ? enc.encode(req) : req);
      assert(want.test(answer), `${what}: ${JSON.stringify(answer.slice(0, 120))}`);
      if (answer) assert(/\r\nconnection: close\r\n/i.test(answer), `${what}: closes`);
    }
    for (let i = 0; i < 50; i++) {
      const junk = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 400)));
      const answer = await raw(port, junk, 1 + (i % 4));
      assert(answer === "" || /^HTTP\/1\.1 [45]\d\d /.test(answer), JSON.stringify(answer));
    }
    const ok = await fetch(`http://127.0.0.1:${port}/still`);
    assertEquals((await ok.json()).path, "/still");
    assertEquals(server.stats.active, 0);
  }, { maxBodyBytes: 1024 });
});
