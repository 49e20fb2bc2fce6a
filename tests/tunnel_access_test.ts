/**
 * Per-host access on tunnel-server (basic auth, bearer token, source CIDR allow list) with
 * curl against tunnel-server and tunnel-client processes: refused requests are answered
 * 401/403 at the server and never reach the client (its stream count stays), the right
 * credentials pass, the admin API sets and clears rules and never shows a secret, and no
 * credential reaches a log line.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, run, type ServiceProcess, startService } from "./_util.ts";
import { curl, startApp, startClient, startHonoTunnel } from "./_tunnel.ts";

const id = "access-identifier-0001";
const adminToken = "access-admin-token-01";
const bearer = "bearer-token-for-access-77";
const password = "wonderland-pw-55";

Deno.test("tunnel per-host access: 401/403 before the client, basic and bearer pass, admin rules, no secret logged", async () => {
  const app = startApp("a");
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--host",
      `app.test=${id}`,
      "--host",
      `open.test=${id}`,
      "--host-access",
      `app.test=basic:alice:${password}`,
      "--host-access",
      "app.test=bearer:env:APP_BEARER",
      "--host-access",
      "open.test=allow:10.0.0.0/8",
      // The client's stream count is this test's probe of what reached it: a stream per
      // public connection (a kept stream would carry a request unseen).
      "--idle-streams",
      "0",
    ], { readyCount: 2, env: { APP_BEARER: bearer, TUNNEL_ADMIN_TOKEN: adminToken } });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    const adminPort = portOf(server.addrs.get("admin")!);
    const client = await startService("tunnel-client.ts", [
      "--server",
      `http://127.0.0.1:${port}`,
      "--local",
      `127.0.0.1:${app.port}`,
      "--metrics",
      "127.0.0.1:0",
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
    procs.push(client);
    const statusLine = await client.waitFor(/msg="metrics listening"/);
    const statusUrl = `http://127.0.0.1:${portOf(/addr=(\S+)/.exec(statusLine)![1])}/status`;
    const streams = async () =>
      ((await (await fetch(statusUrl)).json()) as { streams: number }).streams;

    const before = await streams();
    const none = await curl(port, "app.test", "/name?id=0", ["-D", "/dev/stderr"]);
    assertEquals(none.status, 401);
    assertMatch(none.stderr, /www-authenticate: Basic realm="tunnel"/i);
    assertEquals((await curl(port, "app.test", "/name", ["-u", "alice:wrong"])).status, 401);
    assertEquals(
      (await curl(port, "app.test", "/name", ["-H", "Authorization: Bearer wrong-token-1"])).status,
      401,
    );
    assertEquals((await curl(port, "open.test", "/name")).status, 403);
    assertEquals(await streams(), before, "a refused request reached the client");

    assertEquals(
      (await curl(port, "app.test", "/name?id=1", ["-u", `alice:${password}`])).body,
      "a 1",
    );
    assertEquals(
      (await curl(port, "app.test", "/name?id=2", ["-H", `Authorization: Bearer ${bearer}`])).body,
      "a 2",
    );
    assertEquals(await streams(), before + 2);

    // The admin API: rules without secrets, replaced, cleared.
    const adminCall = (method: string, path: string, body?: unknown) =>
      run("curl", [
        "-sS",
        "-X",
        method,
        "-H",
        `Authorization: Bearer ${adminToken}`,
        ...(body === undefined ? [] : ["--data", JSON.stringify(body)]),
        "-w",
        "\n%{http_code}",
        `http://127.0.0.1:${adminPort}${path}`,
      ]).then((r) => {
        const i = r.stdout.lastIndexOf("\n");
        return { status: Number(r.stdout.slice(i + 1)), text: r.stdout.slice(0, i) };
      });
    const hosts = await adminCall("GET", "/hosts");
    const app1 = (JSON.parse(hosts.text) as { host: string; access?: unknown }[])
      .find((h) => h.host === "app.test")!;
    assertEquals(app1.access, { basic: 1, bearer: 1, allow: [] });
    assert(!hosts.text.includes(password) && !hosts.text.includes(bearer), hosts.text);
    const put = await adminCall("PUT", "/hosts/open.test/access", { allow: ["127.0.0.0/8"] });
    assertEquals(put.status, 200, put.text);
    assertEquals((await curl(port, "open.test", "/name?id=3")).body, "a 3");
    assertEquals((await adminCall("PUT", "/hosts/open.test/access", { allow: ["x"] })).status, 400);
    assertEquals(
      (await adminCall("PUT", "/hosts/none.test/access", { allow: ["::1"] })).status,
      404,
    );
    assertEquals((await adminCall("DELETE", "/hosts/app.test/access")).status, 204);
    assertEquals((await curl(port, "app.test", "/name?id=4")).body, "a 4");

    await server.waitFor(/msg="access denied".*status=403.*failure=source-not-allowed/);
    for (const p of procs) {
      for (const secret of [password, bearer, "wrong-token-1", id]) {
        assert(!p.lines.some((l) => l.includes(secret)), `secret logged: ${secret}`);
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
  }
});

Deno.test("tunnel per-host access: a bad --host-access exits 2 with one line and no secret", async () => {
  const svc = new URL("../services/tunnel-server.ts", import.meta.url).pathname;
  for (const bad of ["app.test=basic:nopassword", "app.test=allow:not-a-cidr", "app.test=x:y"]) {
    const r = await run(Deno.execPath(), [
      "run",
      "-A",
      svc,
      "--check-config",
      "--host-access",
      bad,
    ]);
    assertEquals(r.code, 2, `${bad}: ${r.stderr}`);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert(!r.stderr.includes("nopassword"), r.stderr);
  }
});

Deno.test("tunnel per-host access: the embeddable (Hono) front refuses the same way before the client", async () => {
  const app = startApp("h");
  const t = startHonoTunnel();
  await t.server.addHost("app.test", id);
  await t.server.setAccess("app.test", { bearer: [bearer] });
  await t.server.setAccess("open.test", { allow: ["10.0.0.0/8"] });
  await t.server.addHost("open.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    const before = c.client.streams;
    const none = await curl(t.port, "app.test", "/name", ["-D", "/dev/stderr"]);
    assertEquals(none.status, 401);
    assertMatch(none.stderr, /www-authenticate: Bearer/i);
    assertEquals((await curl(t.port, "open.test", "/name")).status, 403);
    assertEquals(c.client.streams, before);
    const ok = await curl(t.port, "app.test", "/name?id=1", [
      "-H",
      `Authorization: Bearer ${bearer}`,
    ]);
    assertEquals(ok.body, "h 1");
  } finally {
    await c.stop();
    await t.close();
    await app.close();
  }
});
