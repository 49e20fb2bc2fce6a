/**
 * tunnel-client --inspect (issue 18): curl -> tunnel-server -> tunnel-client -> a local app,
 * all processes. The inspector's JSON API lists the requests newest first with their
 * method, path, status, duration, sizes, headers and first body bytes (binary and compressed
 * bodies marked, not decoded); a replay reaches the local app again and is listed as one; a
 * large transfer passes byte-exact (SHA-256) while only the cap is kept; headless chromium
 * shows a request arriving while the page is open and replays it with its button.
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  blockStream,
  blockStreamSha256,
  portOf,
  run,
  type ServiceProcess,
  startService,
  within,
} from "./_util.ts";
import { curl } from "./_tunnel.ts";
import { withBrowser } from "./_status.ts";
import { createHash } from "node:crypto";

const identifier = "inspect-identifier-0001";
const vhost = "app.localhost";

/** A local app that records what it was asked (method and target, in order). */
function startRecordingApp(): { port: number; seen: string[]; close(): Promise<void> } {
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    seen.push(`${req.method} ${url.pathname}${url.search}`);
    if (url.pathname === "/hello") return new Response(`hello ${url.searchParams.get("id")}`);
    if (url.pathname === "/echo") {
      return new Response(await req.arrayBuffer(), { headers: { "content-type": "text/plain" } });
    }
    if (url.pathname === "/bin") {
      const b = new Uint8Array(5000).map((_, i) => i % 256);
      return new Response(b, { headers: { "content-type": "application/octet-stream" } });
    }
    if (url.pathname === "/gz") {
      const gz = new Response(
        new Blob(["compressed text ".repeat(100)]).stream()
          .pipeThrough(new CompressionStream("gzip")),
      );
      return new Response(await gz.arrayBuffer(), {
        headers: { "content-type": "text/plain", "content-encoding": "gzip" },
      });
    }
    if (url.pathname === "/sha256") {
      const h = createHash("sha256");
      let n = 0;
      for await (const c of req.body ?? new ReadableStream()) {
        h.update(c);
        n += c.length;
      }
      return Response.json({ sha256: h.digest("hex"), bytes: n });
    }
    const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
    if (m) {
      const it = blockStream(Number(m[1]));
      return new Response(
        new ReadableStream<Uint8Array>({
          pull(c) {
            const r = it.next();
            if (r.done) c.close();
            else c.enqueue(r.value.slice());
          },
        }),
        { headers: { "content-length": m[1], "content-type": "application/octet-stream" } },
      );
    }
    return new Response("not found", { status: 404 });
  });
  return { port: server.addr.port, seen, close: () => server.shutdown() };
}

interface Setup {
  app: ReturnType<typeof startRecordingApp>;
  port: number;
  inspect: string;
  procs: ServiceProcess[];
}

/** tunnel-server and tunnel-client (with --inspect on port 0) in front of a recording app. */
async function setup(extra: string[]): Promise<Setup> {
  const app = startRecordingApp();
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--host",
      `${vhost}=${identifier}`,
    ]);
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    const client = await startService("tunnel-client.ts", [
      "--server",
      `http://127.0.0.1:${port}`,
      "--local",
      `127.0.0.1:${app.port}`,
      "--inspect",
      "127.0.0.1:0",
      ...extra,
    ], { ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: identifier } });
    procs.push(client);
    return { app, port, inspect: `http://${client.addrs.get("inspect")}`, procs };
  } catch (err) {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
    throw err;
  }
}

async function teardown(s: Setup): Promise<void> {
  for (const p of s.procs.reverse()) await p.stop();
  await s.app.close();
}

// deno-lint-ignore no-explicit-any
type Json = any;

async function getJson(url: string, init?: RequestInit): Promise<{ status: number; body: Json }> {
  return await within(
    fetch(url, init).then(async (r) => ({ status: r.status, body: await r.json() })),
    `GET ${url}`,
  );
}

/** The list once `pred` holds (the tap records as bytes pass: a response may still be landing). */
async function listWhen(base: string, pred: (l: Json[]) => boolean): Promise<Json[]> {
  // A bound for a hang (60 s), far above what recording takes.
  for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
    const l = (await getJson(`${base}/api/requests`)).body.requests;
    if (pred(l)) return l;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the inspector never showed the expected requests");
}

Deno.test("tunnel inspector: the JSON API lists requests with their fields, replays one, guards its API", async () => {
  const s = await setup(["--inspect-body-bytes", "1024"]);
  const tmp = await Deno.makeTempFile();
  try {
    // The address is printed as a URL, as ngrok's "Web Interface" line.
    const addr = s.inspect.slice("http://".length);
    assert(
      s.procs[1].lines.some((l) => l.includes(`name=inspect addr=${addr} url=http://${addr}/`)),
    );
    assertEquals((await curl(s.port, vhost, "/hello?id=1")).body, "hello 1");
    const echo = await curl(s.port, vhost, "/echo", [
      "-H",
      "content-type: text/plain",
      "--data-binary",
      "ping-body",
    ]);
    assertEquals(echo.body, "ping-body");
    assertEquals((await curl(s.port, vhost, "/bin")).status, 200);
    assertEquals((await curl(s.port, vhost, "/gz")).status, 200);
    const list = await listWhen(
      s.inspect,
      (l) => l.length === 4 && l.every((x) => x.state === "done"),
    );
    // Newest first, with method, path, status, duration and sizes.
    assertEquals(list.map((x) => `${x.method} ${x.path} ${x.status}`), [
      "GET /gz 200",
      "GET /bin 200",
      "POST /echo 200",
      "GET /hello?id=1 200",
    ]);
    assert(list.every((x) => typeof x.durationMs === "number" && x.durationMs >= 0));
    assertEquals(list[0].host, vhost);
    assertEquals([list[1].responseBytes, list[2].requestBytes, list[2].responseBytes], [
      5000,
      9,
      9,
    ]);
    // Headers and bodies: text as text, binary cut at the cap, gzip marked compressed.
    const echoD = (await getJson(`${s.inspect}/api/requests/${list[2].id}`)).body;
    assert(
      echoD.requestHeaders.some(([k, v]: string[]) =>
        k.toLowerCase() === "content-type" && v === "text/plain"
      ),
    );
    assert(echoD.requestHeaders.some(([k]: string[]) => k.toLowerCase() === "x-forwarded-for"));
    assertEquals([echoD.requestBody.kind, echoD.requestBody.text], ["text", "ping-body"]);
    assertEquals([echoD.responseBody.kind, echoD.responseBody.text], ["text", "ping-body"]);
    assert(echoD.responseHeaders.some(([k]: string[]) => k.toLowerCase() === "content-type"));
    const bin = (await getJson(`${s.inspect}/api/requests/${list[1].id}`)).body.responseBody;
    assertEquals([bin.kind, bin.bytes, bin.keptBytes, bin.truncated], ["binary", 5000, 1024, true]);
    const kept = Uint8Array.from(atob(bin.base64), (c) => c.charCodeAt(0));
    assertEquals(kept, new Uint8Array(1024).map((_, i) => i % 256));
    const gz = (await getJson(`${s.inspect}/api/requests/${list[0].id}`)).body.responseBody;
    assertEquals([gz.kind, gz.encoding, gz.text], ["compressed", "gzip", undefined]);
    assertEquals(
      Uint8Array.from(atob(gz.base64), (c) => c.charCodeAt(0)).subarray(0, 2),
      new Uint8Array([0x1f, 0x8b]),
    );

    // Replay the POST: the app sees it a second time, the list shows it marked.
    assertEquals(s.app.seen.filter((x) => x === "POST /echo").length, 1);
    const noHeader = await getJson(`${s.inspect}/api/requests/${list[2].id}/replay`, {
      method: "POST",
    });
    assertEquals(noHeader.status, 403);
    const rep = await getJson(`${s.inspect}/api/requests/${list[2].id}/replay`, {
      method: "POST",
      headers: { "x-warren-inspect": "1" },
    });
    assertEquals(rep.status, 201);
    assertEquals([rep.body.replayOf, rep.body.status, rep.body.method, rep.body.path], [
      list[2].id,
      200,
      "POST",
      "/echo",
    ]);
    assertEquals(s.app.seen.filter((x) => x === "POST /echo").length, 2);
    const after = await listWhen(s.inspect, (l) => l.length === 5);
    assertEquals([after[0].id, after[0].replayOf, after[0].state], [
      rep.body.id,
      list[2].id,
      "done",
    ]);
    const repD = (await getJson(`${s.inspect}/api/requests/${rep.body.id}`)).body;
    assertEquals(repD.responseBody.text, "ping-body");

    // A body longer than the cap cannot be replayed; unknown ids are 404; a foreign Host 403.
    await Deno.writeFile(tmp, new Uint8Array(2000).fill(0x61));
    await curl(s.port, vhost, "/echo", ["--data-binary", `@${tmp}`]);
    const big = await listWhen(s.inspect, (l) => l.length === 6 && l[0].state === "done");
    const refused = await getJson(`${s.inspect}/api/requests/${big[0].id}/replay`, {
      method: "POST",
      headers: { "x-warren-inspect": "1" },
    });
    assertEquals([refused.status, refused.body.error], [409, "body-truncated"]);
    assertEquals((await getJson(`${s.inspect}/api/requests/99999`)).status, 404);
    const rebound = await run("curl", [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-H",
      "Host: evil.example",
      `${s.inspect}/api/requests`,
    ]);
    assertEquals(rebound.stdout, "403");
  } finally {
    await Deno.remove(tmp);
    await teardown(s);
  }
});

Deno.test("tunnel inspector: 8 MiB up and down pass byte-exact while only the cap is kept", async () => {
  const s = await setup(["--inspect-body-bytes", "4096"]);
  const tmp = await Deno.makeTempFile();
  const total = 8 << 20;
  try {
    const file = await Deno.open(tmp, { write: true });
    for (const c of blockStream(total, 7)) await file.write(c);
    file.close();
    const up = await curl(s.port, vhost, "/sha256", ["--data-binary", `@${tmp}`]);
    assertEquals(JSON.parse(up.body), { sha256: blockStreamSha256(total, 7), bytes: total });
    const down = await run("sh", [
      "-c",
      `curl -sS --max-time 60 -H 'Host: ${vhost}' http://127.0.0.1:${s.port}/bytes/${total} | sha256sum`,
    ]);
    assertEquals(down.stdout.split(" ")[0], blockStreamSha256(total));
    const list = await listWhen(
      s.inspect,
      (l) => l.length === 2 && l.every((x) => x.state === "done"),
    );
    const [dl, ul] = await Promise.all(
      list.map(async (x) => (await getJson(`${s.inspect}/api/requests/${x.id}`)).body),
    );
    assertEquals([ul.requestBody.bytes, ul.requestBody.keptBytes, ul.requestBody.truncated], [
      total,
      4096,
      true,
    ]);
    assertEquals([dl.responseBody.bytes, dl.responseBody.keptBytes, dl.responseBody.truncated], [
      total,
      4096,
      true,
    ]);
    assertEquals([dl.path, dl.status, ul.path, ul.method], [
      `/bytes/${total}`,
      200,
      "/sha256",
      "POST",
    ]);
  } finally {
    await Deno.remove(tmp);
    await teardown(s);
  }
});

Deno.test("tunnel inspector: the page in chromium shows a request arriving while it is open and replays it", async () => {
  const s = await setup([]);
  try {
    await withBrowser(async (browser) => {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      assertEquals((await page.goto(`${s.inspect}/`))?.status(), 200);
      await page.waitForFunction(`document.getElementById("info").textContent.includes("kept")`);
      assertEquals(await page.$$eval("tr.row", (r) => r.length), 0);
      assertEquals((await curl(s.port, vhost, "/hello?id=live")).body, "hello live");
      const row = page.locator("tr.row", { hasText: "/hello?id=live" });
      await row.waitFor();
      await page.waitForFunction(
        `document.querySelector("tr.row td.status").textContent === "200"`,
      );
      await row.locator("button.replay").click();
      await page.locator("span.replay-mark").first().waitFor();
      assertEquals(await page.$$eval("tr.row", (r) => r.length), 2);
      assertEquals(s.app.seen.filter((x) => x === "GET /hello?id=live").length, 2);
      // Clicking the row shows its headers and body.
      await page.locator("tr.row").first().click();
      await page.waitForFunction(
        `(document.querySelector("pre.body")?.textContent ?? "") === "hello live"`,
      );
      assertEquals(errors, []);
    });
  } finally {
    await teardown(s);
  }
});

Deno.test("tunnel inspector: a busy --inspect port ends tunnel-client with one line", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const svc = new URL("../services/tunnel-client.ts", import.meta.url).pathname;
    const r = await run(Deno.execPath(), [
      "run",
      "-A",
      svc,
      "--server",
      "http://127.0.0.1:1",
      "--inspect",
      `127.0.0.1:${busy.addr.port}`,
    ], { env: { TUNNEL_IDENTIFIER: identifier } });
    assert(r.code !== 0, r.stderr);
    const lines = r.stderr.trim().split("\n").filter((l) => /inspect/.test(l));
    assertEquals(lines.length, 1, r.stderr);
    assert(/already in use/.test(lines[0]), lines[0]);
  } finally {
    busy.close();
  }
});
