/**
 * Access rules a client sets when it claims its host (tunnel-client `--basic-auth`,
 * `--bearer-auth`, `--allow-cidr`), with curl against tunnel-server and tunnel-client
 * processes: the server answers 401/403 before anything reaches the client (its stream count
 * stays), the right credentials pass, the admin API shows the rules as the client's (counts,
 * no secret), the server's own rules of a host win (the client is told), the rules end with
 * the client's session, rules the server cannot use refuse the client (it exits with one
 * line), and no credential reaches a log line.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, run, type ServiceProcess, startService, within } from "./_util.ts";
import { curl, startApp, startClient, startTunnel } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";

const account = "client-access-account-0001";
const plainId = "client-access-plain-id-0002";
const adminToken = "client-access-admin-0003";
const login = "alice:looking-glass-pw-11";
const bearer = "client-bearer-token-2222";

Deno.test("tunnel client access: rules set by the client when it claims a host, 401/403 before it, session-bound, no secret logged", async () => {
  const app = startApp("a");
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      ...["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--domain", "t.localhost"],
      ...["--account-token", "env:ACCOUNT", "--host", "plain.test=env:PLAIN_ID"],
      ...["--host-access", "plain.test=allow:10.0.0.0/8"],
      // The client's stream count is this test's probe of what reached it: a stream per
      // public connection (a kept stream would carry a request unseen).
      ...["--idle-streams", "0"],
    ], {
      readyCount: 2,
      env: { ACCOUNT: account, PLAIN_ID: plainId, TUNNEL_ADMIN_TOKEN: adminToken },
    });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    const adminPort = portOf(server.addrs.get("admin")!);
    const client = async (id: string, args: string[], ready = /msg="connected"/) => {
      const p = await startService("tunnel-client.ts", [
        ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
        ...args,
      ], {
        readyCount: 0,
        ready,
        env: { TUNNEL_IDENTIFIER: id, LOGIN: login, BEARER: bearer },
      });
      procs.push(p);
      return p;
    };
    const a = await client(account, [
      ...["--subdomain", "app", "--basic-auth", "env:LOGIN", "--bearer-auth", "env:BEARER"],
      ...["--metrics", "127.0.0.1:0"],
    ]);
    const statusLine = await a.waitFor(/msg="metrics listening"/);
    const statusUrl = `http://127.0.0.1:${portOf(/addr=(\S+)/.exec(statusLine)![1])}/status`;
    const streams = async () =>
      ((await (await fetch(statusUrl)).json()) as { streams: number }).streams;

    const before = await streams();
    const none = await curl(port, "app.t.localhost", "/name?id=0", ["-D", "/dev/stderr"]);
    assertEquals(none.status, 401);
    assertMatch(none.stderr, /www-authenticate: Basic realm="tunnel"/i);
    assertEquals(
      (await curl(port, "app.t.localhost", "/name", ["-u", "alice:wrong-password"])).status,
      401,
    );
    assertEquals(
      (await curl(port, "app.t.localhost", "/name", ["-H", "Authorization: Bearer nope-nope"]))
        .status,
      401,
    );
    assertEquals(await streams(), before); // nothing reached the client
    assertEquals((await curl(port, "app.t.localhost", "/name?id=1", ["-u", login])).body, "a 1");
    assertEquals(
      (await curl(port, "app.t.localhost", "/name?id=2", ["-H", `Authorization: Bearer ${bearer}`]))
        .body,
      "a 2",
    );
    assertEquals(await streams(), before + 2);
    await server.waitFor(/msg="access denied".*host=app\.t\.localhost.*failure=wrong-credentials/);

    // The admin API shows them as the client's, without secrets.
    const hosts = await run("curl", [
      ...["-sS", "--max-time", "30", "-H", `Authorization: Bearer ${adminToken}`],
      `http://127.0.0.1:${adminPort}/hosts`,
    ]);
    assert(!hosts.stdout.includes(bearer) && !hosts.stdout.includes(login), "secret shown");
    const app1 = (JSON.parse(hosts.stdout) as { host: string; access?: unknown }[])
      .find((h) => h.host === "app.t.localhost")!;
    assertEquals(app1.access, { basic: 1, bearer: 1, allow: [], from: "client" });

    // A source allow list of the client's: 403 from 127.0.0.1.
    const c = await client(account, ["--subdomain", "cidr", "--allow-cidr", "10.0.0.0/8"]);
    await c.waitFor(/msg="forwarding"/);
    assertEquals((await curl(port, "cidr.t.localhost", "/name")).status, 403);

    // The server's own rules of a host win over the client's, and the client is told.
    const p = await client(plainId, ["--basic-auth", "env:LOGIN"]);
    await p.waitFor(/msg="server note" note="plain\.test has access rules on the server/);
    assertEquals((await curl(port, "plain.test", "/name", ["-u", login])).status, 403);

    // The rules end with the session: the same claim without them is open.
    await a.stop();
    await client(account, ["--subdomain", "app"]);
    assertEquals((await curl(port, "app.t.localhost", "/name?id=3")).body, "a 3");

    for (const proc of procs) {
      for (const secret of [login, bearer, "looking-glass-pw-11", account, plainId]) {
        assert(!proc.lines.some((l) => l.includes(secret)), `secret logged: ${proc.lines}`);
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
  }
});

Deno.test("tunnel client access: rules the server cannot use refuse the client, which gives up at once", async () => {
  const t = startTunnel();
  await t.server.addHost("x.test", plainId);
  // Past the client's own flag checks (a library user, or an older client): the server judges.
  const c = startClient({
    server: t.url,
    identifier: plainId,
    local: { host: "127.0.0.1", port: 9 },
    access: { bearer: ["tiny-tk"] },
  });
  try {
    const deadline = Date.now() + 60_000; // a hang's bound
    while (c.client.state !== "refused" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(c.client.state, "refused");
    assertMatch(c.client.refusal!, /rules refused: bearer tokens need 8\+ characters/);
    assert(!c.client.refusal!.includes("tiny-tk"), "the token in the refusal");
    assertEquals(c.client.connects, 0);
    assertEquals(t.server.clients(), []);
  } finally {
    await c.stop();
    await t.close();
  }
});

Deno.test("tunnel client access in a cluster: another instance never serves a client with rules of its own", async () => {
  const redis = await startRedis();
  const app = startApp("a");
  const procs: ServiceProcess[] = [];
  try {
    const instance = async () => {
      const p = await startService("tunnel-server.ts", [
        ...["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"],
        ...["--registry", redis.url, "--heartbeat", "300ms", "--host", "app.test=env:ID"],
      ], {
        readyCount: 2,
        env: { TUNNEL_CLUSTER_TOKEN: "client-access-cluster-token", ID: plainId },
      });
      procs.push(p);
      return p;
    };
    const a = await instance();
    const b = await instance();
    const portA = portOf(a.addrs.get("http")!);
    const portB = portOf(b.addrs.get("http")!);
    procs.push(
      await startService("tunnel-client.ts", [
        ...["--server", `http://127.0.0.1:${portA}`, "--local", `127.0.0.1:${app.port}`],
        ...["--basic-auth", "env:LOGIN"],
      ], {
        readyCount: 0,
        ready: /msg="connected"/,
        env: { TUNNEL_IDENTIFIER: plainId, LOGIN: login },
      }),
    );
    // A, which holds the client, checks its rules.
    assertEquals((await curl(portA, "app.test", "/name?id=1")).status, 401);
    assertEquals((await curl(portA, "app.test", "/name?id=2", ["-u", login])).body, "a 2");
    // B would hand the request over unchecked: A refuses the stream, B answers 502.
    let status = 0;
    const deadline = Date.now() + 60_000; // a hang's bound
    while (status !== 502 && Date.now() < deadline) {
      status = (await curl(portB, "app.test", "/name?id=3")).status;
      if (status !== 502) await new Promise((r) => setTimeout(r, 200)); // lease not seen yet
    }
    assertEquals(status, 502);
    await a.waitFor(/msg="cluster stream refused: the client set its own access rules/);
    assertEquals((await curl(portB, "app.test", "/name?id=4", ["-u", login])).status, 502);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
    await redis.stop();
  }
});

Deno.test("tunnel access in a group: a host's rules leave round-robin alone (each request picks one member)", async () => {
  const appA = startApp("a");
  const appB = startApp("b");
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      ...["--listen", "127.0.0.1:0", "--duplicate", "balance", "--host", "app.test=env:ID"],
      ...["--host-access", "app.test=bearer:env:BEARER"],
    ], { env: { ID: plainId, BEARER: bearer } });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    for (const app of [appA, appB]) {
      procs.push(
        await startService("tunnel-client.ts", [
          ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
        ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: plainId } }),
      );
    }
    await server.waitFor(/msg="client connected".* members=2/);
    const names: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await curl(port, "app.test", `/name?id=${i}`, [
        ...["-H", `Authorization: Bearer ${bearer}`],
      ]);
      names.push(r.body.split(" ")[0]);
    }
    assertEquals(names.filter((n) => n === "a").length, 3, names.join(","));
    assertEquals(names.filter((n) => n === "b").length, 3, names.join(","));
    assertEquals((await curl(port, "app.test", "/name")).status, 401);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await appA.close();
    await appB.close();
  }
});

Deno.test("tunnel client access in a group: a member must send the group's rules, else it is refused with one line", async () => {
  const appA = startApp("a");
  const appB = startApp("b");
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      ...["--listen", "127.0.0.1:0", "--duplicate", "balance", "--host", "app.test=env:ID"],
    ], { env: { ID: plainId } });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    const member = async (appPort: number, args: string[], ready = /msg="connected"/) => {
      const p = await startService("tunnel-client.ts", [
        ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${appPort}`, ...args],
      ], {
        readyCount: 0,
        ready,
        env: { TUNNEL_IDENTIFIER: plainId, LOGIN: login, OTHER: "bob:other-password-1" },
      });
      procs.push(p);
      return p;
    };
    const rules = ["--basic-auth", "env:LOGIN", "--response-header-add", "X-Group: 1"];
    await member(appA.port, rules);
    // Without the rules, or with others: refused at once, one line, exit 4.
    for (const args of [[], ["--basic-auth", "env:OTHER", "--response-header-add", "X-Group: 1"]]) {
      const p = await member(appB.port, args, /./);
      const outcome = await p.waitFor(/msg="(giving up: rules refused|connected)"/);
      assertMatch(outcome, /giving up/); // (before, it joined the group)
      assertEquals((await within(p.child.status, "tunnel-client to give up")).code, 4);
      await p.stop(); // its output read to the end
      const errors = p.lines.filter((l) => l.startsWith("error: "));
      assertEquals(errors.length, 1, p.lines.join("\n"));
      assertMatch(
        errors[0],
        /refused this client's access rules .*every member must send the same/,
      );
    }
    await server.waitFor(/msg="client refused".*failure=group-rules-differ/);
    // The same rules: it joins, and the host is protected whichever member a request reaches.
    await member(appB.port, rules);
    await server.waitFor(/msg="client connected".* members=2/);
    for (let i = 0; i < 4; i++) assertEquals((await curl(port, "app.test", "/name")).status, 401);
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const r = await curl(port, "app.test", `/name?id=${i}`, ["-u", login]);
      names.add(r.body.split(" ")[0]);
    }
    assertEquals([...names].sort(), ["a", "b"]);
    for (const p of procs) {
      assert(!p.lines.some((l) => l.includes(login) || l.includes("other-password-1")));
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await appA.close();
    await appB.close();
  }
});
