/** services/tunnel-server.ts and services/tunnel-client.ts as processes. */
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, run, startService } from "./_util.ts";
import { rawGet, startApp } from "./_tunnel.ts";

const svc = (name: string) => new URL(`../services/${name}`, import.meta.url).pathname;

async function eventually(fn: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("condition not reached in time");
}

Deno.test("tunnel services: --help, bad flags and a busy port exit with one line", async () => {
  for (const name of ["tunnel-server.ts", "tunnel-client.ts"]) {
    const help = await run(Deno.execPath(), ["run", "-A", svc(name), "--help"]);
    assertEquals(help.code, 0);
    assertMatch(help.stdout, /usage: tunnel-/);
    const bad = await run(Deno.execPath(), ["run", "-A", svc(name), "--no-such-flag"]);
    assertEquals(bad.code, 2);
    assertEquals(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  }
  const noId = await run(Deno.execPath(), [
    "run",
    "-A",
    svc("tunnel-client.ts"),
    "--server",
    "http://127.0.0.1:1",
  ], {
    env: { TUNNEL_IDENTIFIER: "" },
  });
  assertEquals(noId.code, 2);
  const badHost = await run(Deno.execPath(), [
    "run",
    "-A",
    svc("tunnel-server.ts"),
    "--host",
    "nohostpart",
  ]);
  assertEquals(badHost.code, 2);
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const r = await run(Deno.execPath(), [
      "run",
      "-A",
      svc("tunnel-server.ts"),
      "--listen",
      `127.0.0.1:${busy.addr.port}`,
    ]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /already in use/);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
  } finally {
    busy.close();
  }
});

Deno.test("tunnel services: serve, dead client detected by heartbeat, reconnect, metrics, admin, SIGTERM", async () => {
  const app = startApp();
  const identifier = "service-identifier-very-secret-42";
  const server = await startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--host",
    "app.test=env:APP_ID",
    "--heartbeat",
    "500",
    "--metrics",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--log-level",
    "debug",
  ], { readyCount: 2, env: { APP_ID: identifier, TUNNEL_ADMIN_TOKEN: "admin-token-1234" } });
  const port = portOf(server.addrs.get("http")!);
  const clientArgs = [
    "--server",
    `http://127.0.0.1:${port}`,
    "--local",
    `127.0.0.1:${app.port}`,
    "--heartbeat",
    "500",
    "--backoff-max",
    "500",
    "--metrics",
    "127.0.0.1:0",
    "--log-level",
    "debug",
  ];
  const env = { TUNNEL_IDENTIFIER: identifier };
  let client = await startService("tunnel-client.ts", clientArgs, {
    readyCount: 0,
    ready: /msg="connected"/,
    env,
  });
  try {
    // Success checks poll: on a loaded box a heartbeat may lapse and the client reconnect.
    await eventually(async () =>
      (await rawGet(port, "app.test", "/hello?id=1")).body === "hello 1"
    );
    // A frozen client (no FIN, no answers) is declared dead by the heartbeat within seconds.
    client.child.kill("SIGSTOP");
    const frozenAt = Date.now();
    await eventually(async () => (await rawGet(port, "app.test", "/hello")).status === 502);
    // Without the heartbeat a stopped peer's connection stays up (its kernel still ACKs): a
    // bound this generous keeps the check meaningful on a loaded box.
    assert(Date.now() - frozenAt < 30_000, "dead client detected within seconds");
    client.child.kill("SIGCONT");
    // It notices its session is gone and reconnects by itself.
    await eventually(async () =>
      (await rawGet(port, "app.test", "/hello?id=2")).body === "hello 2"
    );
    // Killed outright and restarted: 502, then served again.
    await client.stop("SIGKILL");
    await eventually(async () => (await rawGet(port, "app.test", "/hello")).status === 502);
    client = await startService("tunnel-client.ts", clientArgs, {
      readyCount: 0,
      ready: /msg="connected"/,
      env,
    });
    await eventually(async () =>
      (await rawGet(port, "app.test", "/hello?id=3")).body === "hello 3"
    );
    // Admin API and metrics.
    const adminPort = portOf(server.addrs.get("admin")!);
    const hosts = () =>
      fetch(`http://127.0.0.1:${adminPort}/hosts`, {
        headers: { authorization: "Bearer admin-token-1234" },
      }).then((r) => r.json()) as Promise<{ host: string; connected: boolean; requests: number }[]>;
    assertEquals((await hosts())[0].host, "app.test");
    await eventually(async () => {
      const h = (await hosts())[0];
      return h.connected && h.requests >= 3;
    });
    const denied = await fetch(`http://127.0.0.1:${adminPort}/hosts`);
    assertEquals(denied.status, 401);
    await denied.body?.cancel();
    const metricsLine = server.lines.find((l) => /msg="metrics listening"/.test(l))!;
    const mport = portOf(/addr=(\S+)/.exec(metricsLine)![1]);
    const text = await fetch(`http://127.0.0.1:${mport}/metrics`).then((r) => r.text());
    assertMatch(text, /warren_tunnel_requests_total\{host="app.test",outcome="proxied"\} \d+/);
    assertMatch(text, /warren_tunnel_bytes_total\{host="app.test",direction="out"\} \d+/);
    assertMatch(text, /warren_tunnel_clients 1/);
    const cm = client.lines.find((l) => /msg="metrics listening"/.test(l))!;
    const status = await fetch(`http://127.0.0.1:${portOf(/addr=(\S+)/.exec(cm)![1])}/status`)
      .then((r) => r.json()) as { state: string; connects: number; streams: number };
    assert(status.connects >= 1 && status.streams >= 1, JSON.stringify(status));
    // The identifier never reaches a log line.
    assert(
      ![...server.lines, ...client.lines].some((l) => l.includes(identifier)),
      "identifier logged",
    );
  } finally {
    const cc = await client.stop("SIGTERM");
    const sc = await server.stop("SIGTERM");
    await app.close();
    assertEquals(cc, 0);
    assertEquals(sc, 0);
  }
});
