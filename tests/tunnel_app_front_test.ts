/**
 * The embeddable (Hono) front's own request path: Deno.serve hands public requests straight
 * to the proxy (Hono only for the control path), the target is taken off the URL text when
 * the URL parser would change nothing, and each pooled tunnel stream carries one deadline for
 * its idle time and its responses' timeout.
 */
import { assert, assertEquals } from "./_assert.ts";
import { fetchText, run, within } from "./_util.ts";
import { startClient, startHonoTunnel } from "./_tunnel.ts";
import { originTarget } from "../lib/tunnel/app.ts";
import { Logger } from "../lib/log.ts";
import { closeQuietly } from "../lib/net/mod.ts";

/** An app that answers every request with its method and target (as Deno.serve saw them). */
function startTargetApp(): { port: number; hang: () => void; close(): Promise<void> } {
  const hangs: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const u = new URL(req.url);
    if (u.pathname === "/hang") await new Promise<void>((r) => hangs.push(r));
    const body = `${req.method} ${u.pathname}${u.search}`;
    return new Response(body, { headers: { "x-target": body } });
  });
  return {
    port: server.addr.port,
    hang: () => hangs.splice(0).forEach((r) => r()),
    close: async () => {
      hangs.splice(0).forEach((r) => r());
      await server.shutdown();
    },
  };
}

/** The Hono front serving host 127.0.0.1 by a client of the target app. */
async function withFront(
  id: string,
  responseTimeoutMs: number,
  fn: (
    ctx: {
      t: ReturnType<typeof startHonoTunnel>;
      c: ReturnType<typeof startClient>;
      app: ReturnType<typeof startTargetApp>;
    },
  ) => Promise<void>,
): Promise<void> {
  const app = startTargetApp();
  const t = startHonoTunnel({ server: { responseTimeoutMs } });
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    await fn({ t, c, app });
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
}

/** One request written as is (curl and fetch would normalise the target first). */
function rawGet(port: number, target: string, method = "GET", rest = "\r\n"): Promise<string> {
  return within(
    rawRequest(
      port,
      `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n${rest}`,
    ),
    `the answer to ${method} ${target}`,
  );
}

/** Write `request` (latin-1 text) and read everything until the front closes. */
async function rawRequest(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(16 * 1024);
    for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
    return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  } finally {
    conn.close();
  }
}

Deno.test("tunnel app front: a target read off the URL text equals the URL parser's pathname + search", () => {
  // Characters the parser keeps, escapes, or reads as dot segments and empty queries.
  const alphabet = "aZ09-._~!$&'()*+,;=:@/%?#|^[]\\\"<>`{} \u00e9.2eE";
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
  let checked = 0;
  for (let i = 0; i < 50_000; i++) {
    let target = "/";
    for (let j = rand(14); j > 0; j--) target += alphabet[rand(alphabet.length)];
    const url = `http://h.test:8080${target}`;
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      continue; // not a URL Deno.serve could hand a handler
    }
    assertEquals(originTarget(url), u.pathname + u.search, JSON.stringify(target));
    checked++;
  }
  assert(checked > 40_000, `checked ${checked}`);
  for (const [target, want] of [["/a/./b/../c?x=1", "/a/c?x=1"], ["/p?", "/p"], ["/%2e/x", "/x"]]) {
    assertEquals(originTarget(`http://h.test${target}`), want);
  }
});

Deno.test("tunnel app front: targets reach the app as before (raw, normalised, odd), HEAD keeps its head and Content-Length", async () => {
  await withFront("identifier-front-targets-01", 10_000, async ({ t }) => {
    const cases: [string, string][] = [
      ["/plain/path?q=1&r=a:b@c", "/plain/path?q=1&r=a:b@c"],
      ["/a/./b/../c?x", "/a/c?x"],
      ["/sp%20ace?q='x'", "/sp%20ace?q=%27x%27"],
      ["/empty-query?", "/empty-query"],
      // The control path's neighbours are public paths: the app answers them.
      ["/_controlPath_", "/_controlPath_"],
      ["/_controlPath_/x", "/_controlPath_/x"],
    ];
    for (const [sent, seen] of cases) {
      const res = await rawGet(t.port, sent);
      assert(res.startsWith("HTTP/1.1 200"), `${sent}: ${res.slice(0, 60)}`);
      assert(res.endsWith(`\r\n\r\nGET ${seen}`), `${sent}: ${JSON.stringify(res.slice(-60))}`);
    }
    // HEAD: the app's head without a body, its Content-Length the size a GET gets (the
    // front sent "content-length: 0" before).
    const head = await rawGet(t.port, "/h?x=1", "HEAD");
    assert(head.startsWith("HTTP/1.1 200"), head);
    assert(/\r\nx-target: HEAD \/h\?x=1\r\n/i.test(head), head);
    assert(/\r\ncontent-length: 11\r\n/i.test(head), head);
    assert(head.endsWith("\r\n\r\n"), JSON.stringify(head));
  });
});

Deno.test("tunnel app front: a GET or HEAD with content is refused (501), not sent on without it", async () => {
  // Deno.serve hands no body for GET and HEAD: the front forwarded the head alone, announcing
  // content that never came (an app reading it waits; one that does not reads the next request).
  await withFront("identifier-front-content-06", 10_000, async ({ t }) => {
    const refused = [
      ["GET", "/g", "Content-Length: 5\r\n\r\nhello"],
      ["HEAD", "/h", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
    ];
    for (const [method, target, rest] of refused) {
      const res = await rawGet(t.port, target, method, rest);
      assert(res.startsWith("HTTP/1.1 501"), `${method} ${target}: ${res.slice(0, 60)}`);
      if (method === "GET") assert(res.includes("cannot pass this (embeddable) tunnel front"), res);
    }
    // No content, or content where Deno hands it on: passed as before.
    for (const zero of ["0", "00"]) {
      const empty = await rawGet(t.port, "/z", "GET", `Content-Length: ${zero}\r\n\r\n`);
      assert(empty.startsWith("HTTP/1.1 200") && empty.endsWith("\r\n\r\nGET /z"), empty);
    }
    const post = await rawGet(t.port, "/p", "POST", "Content-Length: 5\r\n\r\nhello");
    assert(post.startsWith("HTTP/1.1 200") && post.endsWith("\r\n\r\nPOST /p"), post);
  });
});

Deno.test("tunnel app front: fields named by Connection stay on their hop, both ways (RFC 9110 7.6.1)", async () => {
  // The app answers with the head it received as its body, and names a field of its own.
  const app = startRawApp((_target, head) => {
    const body = head.toLowerCase();
    return "HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nX-Kept: 2\r\n" +
      `Content-Length: ${body.length}\r\n\r\n${body}`;
  });
  const t = startHonoTunnel();
  const id = "identifier-front-connection-07";
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    const res = await rawGet(
      t.port,
      "/c",
      "GET",
      "Connection: X-Secret\r\nX-Secret: 1\r\nX-Other: 2\r\n\r\n",
    );
    assert(res.startsWith("HTTP/1.1 200"), res);
    const [head, body] = res.toLowerCase().split("\r\n\r\n");
    assert(body.includes("\r\nx-other: 2\r\n") && !body.includes("x-secret"), body);
    assert(head.includes("\r\nx-kept: 2") && !head.includes("x-resp-hop"), head);
  } finally {
    await c.stop();
    await t.close();
    app.close();
  }
});

Deno.test("tunnel app front: the control path answers as before, also written with %-escapes", async () => {
  await withFront("identifier-front-control-02", 10_000, async ({ t }) => {
    for (const path of ["/_controlPath_/", "/_controlPath_/?a=1", "/_control%50ath_/"]) {
      const res = await within(fetch(`${t.url}${path}`), `GET ${t.url}${path}`);
      assertEquals(res.status, 400, path);
      assertEquals(await res.text(), "websocket upgrade required\n", path);
    }
    // curl's own request through the same listener still reaches the app.
    const out = await run("curl", ["-sS", `${t.url}/curl?x=1`]);
    assertEquals(out.stdout.trim(), "GET /curl?x=1");
  });
});

Deno.test("tunnel app front: a reused stream times out (504) when its response does not come; idle streams are closed", async () => {
  // 2 s: short for the hanging request, long for the others to answer on a loaded box.
  await withFront("identifier-front-reuse-03", 2_000, async ({ t, c, app }) => {
    assertEquals(await fetchText(`${t.url}/one`), "GET /one");
    const opened = c.client.streams;
    // The next request takes the pooled stream; the app never answers it.
    const hang = await within(fetch(`${t.url}/hang`), `GET ${t.url}/hang`);
    assertEquals(hang.status, 504);
    await hang.body?.cancel();
    assertEquals(c.client.streams, opened, "the hanging request reused the pooled stream");
    app.hang();
    // The timed-out stream is not reused: the next request opens another and is answered.
    assertEquals(await fetchText(`${t.url}/two`), "GET /two");
    assertEquals(c.client.streams, opened + 1);
    // A stream idle in the pool is closed after its idle time (4 s).
    const stats = t.server.hostStats("127.0.0.1");
    assertEquals(stats.openStreams, 1);
    for (const deadline = Date.now() + 60_000; stats.openStreams > 0 && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(stats.openStreams, 0, "the idle stream was closed");
    assertEquals(await fetchText(`${t.url}/three`), "GET /three");
  });
});

/**
 * A raw app: reads a request head and answers what `script` gives for its target (written
 * as is, then the connection is closed).
 */
function startRawApp(
  script: (target: string, head: string) => string,
): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  void (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      void (async () => {
        try {
          let head = "";
          const buf = new Uint8Array(4096);
          while (!head.includes("\r\n\r\n")) {
            const n = await conn.read(buf);
            if (n === null) return;
            head += new TextDecoder().decode(buf.subarray(0, n));
          }
          await conn.write(new TextEncoder().encode(script(head.split(" ")[1], head)));
        } catch {
          // The front went away first: nothing to answer.
        } finally {
          conns.delete(conn);
          closeQuietly(conn);
        }
      })();
    }
  })();
  return {
    port: listener.addr.port,
    close: () => {
      listener.close();
      for (const c of conns) closeQuietly(c);
    },
  };
}

Deno.test("tunnel app front: with the default response timeout (60 s) an idle pooled stream is still closed after its idle time (4 s)", async () => {
  await withFront("identifier-front-idle-05", 60_000, async ({ t, c }) => {
    for (let i = 0; i < 3; i++) {
      assertEquals(await fetchText(`${t.url}/k${i}`), `GET /k${i}`);
    }
    const stats = t.server.hostStats("127.0.0.1");
    assertEquals(stats.openStreams, 1);
    assertEquals(c.client.streams, 1);
    // Far below the response timeout: the idle time closes it, not the response watch.
    for (const deadline = Date.now() + 60_000; stats.openStreams > 0 && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(stats.openStreams, 0, "the idle stream was closed");
  });
});

Deno.test("tunnel app front: 1xx heads are skipped for the final response; malformed heads from the app are a 502 and a log line", async () => {
  const body = "final body, byte for byte\n";
  const app = startRawApp((target) =>
    target === "/early"
      ? "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
        `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-App: yes\r\n\r\n${body}`
      : target === "/bad-status"
      ? "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"
      : target === "/bad-field"
      ? "HTTP/1.1 200 OK\r\nBad Field: x\r\nContent-Length: 0\r\n\r\n"
      : "HTTP/1.1 200 OK\r\nContent-Len" // cut inside the head
  );
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => lines.push(l));
  const t = startHonoTunnel({ server: { log } });
  const id = "identifier-front-heads-04";
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    const early = await within(fetch(`${t.url}/early`), `GET ${t.url}/early`);
    assertEquals(early.status, 200);
    assertEquals(early.headers.get("x-app"), "yes");
    assertEquals(await early.text(), body);
    for (const path of ["/bad-status", "/bad-field", "/cut"]) {
      const before = lines.length;
      const res = await within(fetch(`${t.url}${path}`), `GET ${t.url}${path}`);
      assertEquals(res.status, 502, path);
      assert((await res.text()).includes("502"), path);
      const logged = lines.slice(before).find((l) => l.includes("bad response from tunnel"));
      assert(logged !== undefined, `${path}: no log line in ${lines.slice(before).join("\n")}`);
    }
    // The front keeps serving.
    assertEquals(await fetchText(`${t.url}/early`), body);
  } finally {
    await c.stop();
    await t.close();
    app.close();
  }
});
