/**
 * Subdomains under `tunnel-server --domain t.localhost`, with curl against tunnel-server and
 * tunnel-client processes: an account token claims `app.t.localhost` (`--subdomain app`) and,
 * at the same time, a random free name (`--random-subdomain`); each client prints its public
 * URL; another token asking for a held name is refused (409) and its client exits with one
 * line; the name stays reserved while its client reconnects and is released after the grace
 * period; a plain identifier cannot claim.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, run, type ServiceProcess, startService, within } from "./_util.ts";
import { curl, startApp } from "./_tunnel.ts";
import { SubdomainClaims, TunnelServer } from "../lib/tunnel/mod.ts";

const tokenA = "account-token-aaaa-0001";
const tokenB = "account-token-bbbb-0002";
const plain = "plain-identifier-cccc-0003";

Deno.test("tunnel subdomains: claim, random, printed URLs, 409 for another token, reserved while reconnecting, released after the grace", async () => {
  const appA = startApp("a");
  const appR = startApp("random");
  const appB = startApp("b");
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--domain",
      "t.localhost",
      "--account-token",
      "env:ACCOUNT_A",
      "--account-token",
      "env:ACCOUNT_B",
      "--subdomain-grace",
      "1500ms",
      "--host",
      `plain.localhost=${plain}`,
    ], { env: { ACCOUNT_A: tokenA, ACCOUNT_B: tokenB } });
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    const client = (token: string, appPort: number, extra: string[], ready = /msg="connected"/) =>
      startService("tunnel-client.ts", [
        "--server",
        `http://127.0.0.1:${port}`,
        "--local",
        `127.0.0.1:${appPort}`,
        "--backoff-max",
        "300",
        ...extra,
      ], { readyCount: 0, ready, env: { TUNNEL_IDENTIFIER: token } });
    const exitLine = async (p: ServiceProcess): Promise<[number, string[]]> => {
      const code = (await within(p.child.status, "tunnel-client to exit")).code;
      await p.stop();
      return [code, p.lines.filter((l) => l.startsWith("error: "))];
    };

    let a = await client(tokenA, appA.port, ["--subdomain", "App"]);
    procs.push(a);
    assertMatch(
      await a.waitFor(/msg="forwarding"/),
      new RegExp(`url=http://app\\.t\\.localhost:${port} `),
    );
    assertEquals((await curl(port, "app.t.localhost", "/name?id=1")).body, "a 1");

    // The same token holds a second, random name at the same time.
    const r = await client(tokenA, appR.port, ["--random-subdomain"]);
    procs.push(r);
    const url = /url=http:\/\/([a-z][a-z0-9]{9})\.t\.localhost:/.exec(
      await r.waitFor(/msg="forwarding"/),
    );
    assert(url, r.lines.join("\n"));
    const random = `${url[1]}.t.localhost`;
    assertEquals((await curl(port, random, "/name?id=2")).body, "random 2");
    assertEquals((await curl(port, "app.t.localhost", "/name?id=3")).body, "a 3");
    // As a browser reaches it: the name resolved to the server.
    const viaResolve = await run("curl", [
      "-sS",
      "--max-time",
      "30",
      "--resolve",
      `${random}:${port}:127.0.0.1`,
      `http://${random}:${port}/name?id=4`,
    ]);
    assertEquals(viaResolve.stdout, "random 4");
    assertEquals((await curl(port, "nothing.t.localhost", "/name")).status, 404);

    // Another token asking for app: 409, and its client ends with one line.
    const [codeB, linesB] = await exitLine(
      await client(tokenB, appB.port, ["--subdomain", "app"], /./),
    );
    assertEquals(codeB, 4);
    assertEquals(linesB.length, 1);
    assertMatch(
      linesB[0],
      /^error: the server refused subdomain app 3 times in a row \(server answered 409/,
    );
    await server.waitFor(/msg="client refused".*failure=host-taken/);

    // A plain identifier cannot claim (403), and exits too.
    const [codeP] = await exitLine(await client(plain, appB.port, ["--subdomain", "other"], /./));
    assertEquals(codeP, 4);
    await server.waitFor(/msg="client refused".*failure=not-an-account/);

    // A's client restarts within the grace: app is still its own. The new one connects once
    // the server has seen the old one leave: before, it is a duplicate (409), and 3 of those
    // end the client (a loaded box once took longer than its 3 attempts, about 450 ms).
    const beforeStop = server.lines.length;
    await a.stop();
    await server.waitFor(/msg="client disconnected"/, 60_000, beforeStop);
    a = await client(tokenA, appA.port, ["--subdomain", "app"]);
    procs.push(a);
    assertEquals((await curl(port, "app.t.localhost", "/name?id=5")).body, "a 5");

    // A leaves for good: after the grace the name is released and B may claim it.
    await a.stop();
    await server.waitFor(/msg="subdomain released" host=app\.t\.localhost/);
    const b = await client(tokenB, appB.port, ["--subdomain", "app"]);
    procs.push(b);
    assertEquals((await curl(port, "app.t.localhost", "/name?id=6")).body, "b 6");
    for (const p of procs) {
      for (const secret of [tokenA, tokenB, plain]) {
        assert(!p.lines.some((l) => l.includes(secret)), "secret logged");
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await appA.close();
    await appR.close();
    await appB.close();
  }
});

Deno.test("tunnel subdomains: a malformed --subdomain or --account-token without --domain exits 2 with one line", async () => {
  const svc = (n: string) => new URL(`../services/${n}`, import.meta.url).pathname;
  const cases: [string, string[]][] = [
    ["tunnel-client.ts", ["--server", "http://127.0.0.1:1", "--subdomain", "bad_name"]],
    ["tunnel-client.ts", ["--server", "http://127.0.0.1:1", "--subdomain=x-"]],
    ["tunnel-server.ts", ["--account-token", "some-long-token"]],
  ];
  for (const [name, args] of cases) {
    const r = await run(Deno.execPath(), ["run", "-A", svc(name), "--check-config", ...args], {
      env: { TUNNEL_IDENTIFIER: plain },
    });
    assertEquals(r.code, 2, `${name} ${args.join(" ")}: ${r.stderr}`);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test("tunnel subdomains: a name stays reserved for its token with no client connected (before the grace ends)", async () => {
  const server = new TunnelServer({
    subdomains: new SubdomainClaims({
      domain: "t.localhost",
      tokens: [tokenA, tokenB],
      graceMs: 3_600_000,
    }),
  });
  try {
    const first = await server.admit(tokenA, undefined, "app");
    assert(first.ok);
    assertEquals(await server.admit(tokenB, undefined, "app"), { ok: false, reason: "host-taken" });
    assertEquals(
      await server.admit(tokenA, undefined, "app"),
      first,
      "the same token gets it back",
    );
    assertEquals(await server.admit(tokenB, undefined, "App_"), {
      ok: false,
      reason: "bad-subdomain",
    });
    assertEquals(await server.admit(plain, undefined, "x"), {
      ok: false,
      reason: "unknown-identifier",
    });
    const hosts = await server.status();
    assertEquals(hosts.map((h) => [h.host, h.origin]), [["app.t.localhost", "claim"]]);
  } finally {
    await server.close();
  }
});
