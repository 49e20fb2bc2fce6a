import { assertEquals, assertMatch } from "./_assert.ts";
import { startDepot } from "./_depot.ts";
import { run, startOrigin } from "./_util.ts";

Deno.test("depot: curl --socks5-hostname reaches an origin through depot-local", async () => {
  const origin = startOrigin();
  const depot = await startDepot({ server: { token: "t0ken" } });
  try {
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "20",
      "--socks5-hostname",
      `127.0.0.1:${depot.socksPort}`,
      `http://localhost:${origin.port}/hello?id=curl`,
    ]);
    assertEquals(r.stderr, "");
    assertEquals(r.stdout, "hello curl");
    const st = depot.server.status();
    assertEquals(st.exits.map((e) => e.name), ["default"]);
    assertEquals(st.total, 1);
  } finally {
    await depot.close();
    await origin.close();
  }
});

Deno.test("depot: curl with SOCKS auth picks the named exit and checks its password", async () => {
  const origin = startOrigin();
  const depot = await startDepot({
    server: { token: "t" },
    locals: [{ name: "office", socksPassword: "pw1" }, { name: "lab" }],
  });
  const curl = (userinfo: string) =>
    run("curl", [
      "-sS",
      "--max-time",
      "20",
      "--proxy",
      `socks5h://${userinfo}127.0.0.1:${depot.socksPort}`,
      `http://localhost:${origin.port}/hello?id=auth`,
    ]);
  try {
    const ok = await curl("office:pw1@");
    assertEquals(ok.stdout, "hello auth", ok.stderr);
    const bad = await curl("office:nope@");
    assertEquals(bad.code !== 0, true);
    const lab = await curl("lab:anything@");
    assertEquals(lab.stdout, "hello auth", lab.stderr);
    // No username → default exit, which is not connected: prompt failure (0x03).
    const none = await curl("");
    assertEquals(none.code !== 0, true);
    assertMatch(none.stderr, /\(3\)/);
    const byExit = Object.fromEntries(depot.server.status().exits.map((e) => [e.name, e.total]));
    assertEquals(byExit, { office: 1, lab: 1 });
  } finally {
    await depot.close();
    await origin.close();
  }
});

Deno.test("depot: npm socks client (with username/password) through depot", async () => {
  const origin = startOrigin();
  const depot = await startDepot({ locals: [{ name: "office", socksPassword: "pw" }] });
  try {
    const client = new URL("./_socks5_npm_client.ts", import.meta.url).pathname;
    const r = await run(Deno.execPath(), [
      "run",
      "-A",
      client,
      String(depot.socksPort),
      "localhost",
      String(origin.port),
      "/hello?id=npm",
      "office",
      "pw",
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, /hello npm/);
  } finally {
    await depot.close();
    await origin.close();
  }
});
