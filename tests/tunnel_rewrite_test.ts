/**
 * Header rewrites per host, with curl against tunnel-server and tunnel-client processes and
 * Python's http.server echoing the headers it got: the server's `--host-rewrite` (the Host the
 * app sees, request headers set/removed, response headers removed/added) and the client's own
 * (`--request-header-*`, `--response-header-*`, `--host-header`), the server's winning where
 * both touch a header; on every request of a kept-alive connection, and on HEAD (a parsed
 * response must keep its framing). The admin API sets and shows them (names, no values) and
 * the state file keeps them; framing and hop-by-hop headers are refused everywhere. The
 * embeddable front applies the same rules.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, run, type ServiceProcess, startService } from "./_util.ts";
import { startPythonHeaderEcho } from "./_echo_apps.ts";
import { startClient, startHonoTunnel } from "./_tunnel.ts";

const idA = "rewrite-identifier-aaaa-1";
const idB = "rewrite-identifier-bbbb-2";
const adminToken = "rewrite-admin-token-0001";
const secretValue = "Bearer app-side-secret-42";

interface Answer {
  status: number;
  headers: [string, string][];
  body: string;
}

/** curl -i through the tunnel (several paths: one kept-alive connection), each answer parsed. */
async function curlAll(port: number, vhost: string, paths: string[], extra: string[] = []) {
  const r = await run("curl", [
    "-sS",
    "-i",
    "--max-time",
    "30",
    "-H",
    `Host: ${vhost}`,
    ...extra,
    ...paths.map((p) => `http://127.0.0.1:${port}${p}`),
  ]);
  assertEquals(r.code, 0, r.stderr);
  const out: Answer[] = [];
  let rest = r.stdout;
  while (rest.startsWith("HTTP/")) {
    const end = rest.indexOf("\r\n\r\n");
    const lines = rest.slice(0, end).split("\r\n");
    const headers = lines.slice(1).map((l): [string, string] => {
      const i = l.indexOf(":");
      return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
    });
    const len = Number(headers.find(([k]) => k === "content-length")?.[1] ?? 0);
    const isHead = extra.includes("-I");
    const body = isHead ? "" : rest.slice(end + 4, end + 4 + len);
    out.push({ status: Number(lines[0].split(" ")[1]), headers, body });
    rest = rest.slice(end + 4 + (isHead ? 0 : len));
  }
  return out;
}

const values = (h: [string, string][], name: string) =>
  h.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);

Deno.test("tunnel rewrites: server and client header rules, Host rewrite, keep-alive, HEAD, admin API, state file", async () => {
  const app = await startPythonHeaderEcho();
  const dir = await Deno.makeTempDir();
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      ...["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
      ...["--host", "a.test=env:ID_A", "--host", "b.test=env:ID_B"],
      ...["--host-rewrite", "a.test=host:internal.local:8000"],
      ...["--host-rewrite", "a.test=req-set:X-Env:prod"],
      ...["--host-rewrite", "a.test=req-remove:X-Debug"],
      ...["--host-rewrite", "a.test=res-remove:X-Powered-By"],
      ...["--host-rewrite", "a.test=res-add:X-Frame-Options:DENY"],
      ...["--state-file", `${dir}/state.json`],
    ], {
      readyCount: 2,
      env: { ID_A: idA, ID_B: idB, TUNNEL_ADMIN_TOKEN: adminToken },
    });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    const adminPort = portOf(server.addrs.get("admin")!);
    const client = await startService("tunnel-client.ts", [
      ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
      ...["--request-header-add", "X-Client: one", "--request-header-set", "X-Env: client"],
      ...["--response-header-set", "X-App: replaced"],
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: idA } });
    procs.push(client);

    const [first, second] = await curlAll(port, "a.test", ["/one", "/two"], [
      ...["-H", "X-Debug: 1", "-H", "X-Env: dev"],
    ]);
    for (const r of [first, second]) {
      assertEquals(r.status, 200);
      const seen = JSON.parse(r.body) as [string, string][];
      assertEquals(values(seen, "host"), ["internal.local:8000"]);
      assertEquals(values(seen, "x-forwarded-host"), ["a.test"]);
      assertEquals(values(seen, "x-env"), ["prod"]); // the server's rule wins
      assertEquals(values(seen, "x-debug"), []);
      assertEquals(values(seen, "x-client"), ["one"]);
      assertEquals(values(r.headers, "x-powered-by"), []);
      assertEquals(values(r.headers, "x-frame-options"), ["DENY"]);
      assertEquals(values(r.headers, "x-app"), ["replaced"]);
      assert(values(r.headers, "server")[0]?.startsWith("BaseHTTP"), "untouched headers stay");
    }
    // HEAD: the response is parsed for its rules and must not wait for a body.
    const [head] = await curlAll(port, "a.test", ["/h"], ["-I"]);
    assertEquals(head.status, 200);
    assertEquals(values(head.headers, "x-frame-options"), ["DENY"]);
    assertEquals(values(head.headers, "x-powered-by"), []);

    // The admin API: rules for b.test (a value that is a credential toward the app).
    const admin = async (method: string, path: string, body?: unknown) => {
      const r = await run("curl", [
        ...["-sS", "--max-time", "30", "-X", method, "-w", "\n%{http_code}"],
        ...["-H", `Authorization: Bearer ${adminToken}`, "-H", "Content-Type: application/json"],
        ...(body === undefined ? [] : ["--data", JSON.stringify(body)]),
        `http://127.0.0.1:${adminPort}${path}`,
      ]);
      const i = r.stdout.lastIndexOf("\n");
      return { status: Number(r.stdout.slice(i + 1)), text: r.stdout.slice(0, i) };
    };
    const bad = await admin("PUT", "/hosts/b.test/rewrite", {
      request: { set: { "Content-Length": "0" } },
    });
    assertEquals(bad.status, 400);
    assertMatch(bad.text, /Content-Length is a framing or hop-by-hop header/);
    assertEquals(
      (await admin("PUT", "/hosts/b.test/rewrite", { request: { remove: ["Connection"] } }))
        .status,
      400,
    );
    const put = await admin("PUT", "/hosts/b.test/rewrite", {
      request: { set: { Authorization: secretValue }, add: [["X-Via", "tunnel"]] },
      response: { remove: ["Server"] },
    });
    assertEquals(put.status, 200, put.text);
    assert(!put.text.includes(secretValue), "a header value answered");
    assertEquals(JSON.parse(put.text).request.set, ["Authorization"]);
    const hosts = await admin("GET", "/hosts");
    assert(!hosts.text.includes(secretValue), "a header value listed");
    const b = (JSON.parse(hosts.text) as { host: string; rewrite?: unknown }[])
      .find((h) => h.host === "b.test")!;
    assertEquals(b.rewrite, {
      request: { set: ["Authorization"], add: ["X-Via"], remove: [] },
      response: { set: [], add: [], remove: ["Server"] },
    });
    const state = JSON.parse(await Deno.readTextFile(`${dir}/state.json`));
    assertEquals(state.rewrites, [{
      host: "b.test",
      request: { set: { Authorization: secretValue }, add: [["X-Via", "tunnel"]] },
      response: { remove: ["Server"] },
    }]);
    const clientB = await startService("tunnel-client.ts", [
      ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: idB } });
    procs.push(clientB);
    const [rb] = await curlAll(port, "b.test", ["/"], ["-H", "Authorization: Basic eDp5"]);
    const seenB = JSON.parse(rb.body) as [string, string][];
    assertEquals(values(seenB, "authorization"), [secretValue]);
    assertEquals(values(seenB, "x-via"), ["tunnel"]);
    assertEquals(values(seenB, "host"), ["b.test"]);
    assertEquals(values(rb.headers, "server"), []);
    assertEquals(values(rb.headers, "x-powered-by"), ["python"]);
    assertEquals((await admin("DELETE", "/hosts/b.test/rewrite")).status, 204);
    const [rb2] = await curlAll(port, "b.test", ["/"]);
    assertEquals(values(JSON.parse(rb2.body) as [string, string][], "x-via"), []);
    for (const p of procs) {
      assert(!p.lines.some((l) => l.includes(secretValue)), "a header value logged");
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tunnel rewrites: framing and hop-by-hop headers refused in flags (exit 2, one line)", async () => {
  const svc = (name: string) => new URL(`../services/${name}`, import.meta.url).pathname;
  const cases: [string, string[]][] = [
    ["tunnel-server.ts", ["--host-rewrite", "a.test=req-set:Content-Length:5"]],
    ["tunnel-server.ts", ["--host-rewrite", "a.test=res-remove:Transfer-Encoding"]],
    ["tunnel-server.ts", ["--host-rewrite", "a.test=req-add:Host:x"]],
    ["tunnel-client.ts", ["--server", "http://x", "--request-header-set", "Connection: close"]],
    ["tunnel-client.ts", ["--server", "http://x", "--response-header-add", "X-A: a\u0001"]],
  ];
  for (const [name, args] of cases) {
    const r = await run(Deno.execPath(), ["run", "-A", svc(name), "--check-config", ...args], {
      env: { TUNNEL_IDENTIFIER: idA },
    });
    assertEquals(r.code, 2, `${name} ${args.join(" ")}: ${r.stderr}`);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test("tunnel rewrites: the embeddable front applies a client's rules", async () => {
  const app = await startPythonHeaderEcho();
  const t = startHonoTunnel();
  await t.server.addHost("h.test", idA);
  await t.server.setRewrite("h.test", { response: { add: [["X-Server-Rule", "yes"]] } }, "flag");
  const c = startClient({
    server: t.url,
    identifier: idA,
    local: { host: "127.0.0.1", port: app.port },
    rewrite: {
      host: "app.internal",
      request: { set: [["X-Env", "client"]] },
      response: { remove: ["X-Powered-By"] },
    },
  });
  try {
    await c.connected();
    const [r] = await curlAll(t.port, "h.test", ["/"]);
    const seen = JSON.parse(r.body) as [string, string][];
    assertEquals(values(seen, "host"), ["app.internal"]);
    assertEquals(values(seen, "x-env"), ["client"]);
    assertEquals(values(r.headers, "x-powered-by"), []);
    assertEquals(values(r.headers, "x-server-rule"), ["yes"]);
  } finally {
    await c.stop();
    await t.close();
    await app.stop();
  }
});
