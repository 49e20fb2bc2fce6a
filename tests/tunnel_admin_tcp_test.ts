/**
 * TCP tunnels defined on the server side: the admin API (`GET/POST /tcp`, `DELETE /tcp/:port`)
 * opens a public port for a client while it is connected, closes it on removal or disconnect,
 * re-opens it when the client comes back, and refuses bad requests with clear 4xx answers. The
 * client dials only local ports it allows. tunnel-server's `--tcp` does the same from flags.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { blockStreamSha256, freePort, run, type ServiceProcess, startService } from "./_util.ts";
import { hashThrough, startApp, startClient, startHasher, startTunnel } from "./_tunnel.ts";
import { createAdminApp, type TcpTunnelInfo } from "../lib/tunnel/mod.ts";

async function refused(port: number): Promise<void> {
  await assertRejects(async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
  });
}

/** Wait until `check()` is true (a tunnel opens when its client's handshake is done). */
async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 60_000; // a hang's bound, never a timing check
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const token = "admin-token-for-tcp-tests";
const id = "admin-tcp-identifier-0001";

Deno.test("tunnel admin TCP: add for a connected client, 64 MiB by SHA-256, remove, client restart, errors", async () => {
  const hasher = startHasher();
  const app = startApp();
  const port = freePort();
  const t = startTunnel({ tcpPorts: { min: port, max: port } });
  await t.server.addHost("app.test", id);
  const admin = createAdminApp(t.server, { token });
  const call = async (method: string, path: string, body?: unknown, auth = token) => {
    const res = await admin.fetch(
      new Request(`http://admin${path}`, {
        method,
        headers: { authorization: `Bearer ${auth}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      }),
    );
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
  const clientOpts = {
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    allowPorts: [hasher.port],
  };
  let c = startClient(clientOpts);
  let busy: Deno.TcpListener | undefined;
  try {
    await c.connected();

    // Add for the connected client: the port opens at once.
    const add = await call("POST", "/tcp", {
      publicPort: port,
      identifier: id,
      localPort: hasher.port,
    });
    assertEquals(add.status, 201, JSON.stringify(add.json));
    const info = add.json as TcpTunnelInfo;
    assertEquals([info.publicPort, info.source, info.open, info.localPort], [
      port,
      "server",
      true,
      hasher.port,
    ]);
    assert(!JSON.stringify(info).includes(id), "identifier in the answer");
    const total = 64 * 1024 * 1024;
    const got = await Promise.all([1, 2].map((seed) => hashThrough(port, total, seed)));
    assertEquals(got, [blockStreamSha256(total, 1), blockStreamSha256(total, 2)]);
    const list = await call("GET", "/tcp");
    assertEquals(list.status, 200);
    assertEquals((list.json as TcpTunnelInfo[]).map((x) => [x.publicPort, x.open]), [[port, true]]);
    assertEquals(t.server.clients()[0].tcpPorts, [port]);

    // Taken: defined twice.
    const twice = await call("POST", "/tcp", { publicPort: port, identifier: id });
    assertEquals([twice.status, twice.json.reason], [409, "in-use"]);

    // Removing closes the port.
    assertEquals((await call("DELETE", `/tcp/${port}`)).status, 204);
    await refused(port);
    assertEquals((await call("DELETE", `/tcp/${port}`)).status, 404);
    assertEquals((await call("GET", "/tcp")).json, []);

    // Defined while the client is away: opens when it connects, closes when it leaves.
    await c.stop();
    await until(() => t.server.clients().length === 0, "the client to leave");
    const away = await call("POST", "/tcp", {
      publicPort: port,
      identifier: id,
      localPort: hasher.port,
    });
    assertEquals([away.status, away.json.open], [201, false]);
    await refused(port);
    c = startClient(clientOpts);
    await c.connected();
    await until(() => t.server.tcpTunnels()[0]?.open === true, "the port to open");
    assertEquals(await hashThrough(port, 1 << 20, 3), blockStreamSha256(1 << 20, 3));
    // Client restart: closed while it is gone, re-opened after it reconnects.
    await c.stop();
    await until(() => t.server.tcpTunnels()[0]?.open === false, "the port to close");
    await refused(port);
    c = startClient(clientOpts);
    await c.connected();
    await until(() => t.server.tcpTunnels()[0]?.open === true, "the port to re-open");
    assertEquals(await hashThrough(port, 1 << 20, 4), blockStreamSha256(1 << 20, 4));

    // A local port the client does not allow: the connection is closed, nothing dialled.
    assertEquals((await call("DELETE", `/tcp/${port}`)).status, 204);
    const notAllowed = await call("POST", "/tcp", {
      publicPort: port,
      identifier: id,
      localPort: hasher.port === 65535 ? 65534 : hasher.port + 1,
    });
    assertEquals(notAllowed.status, 201);
    assertEquals(await hashThrough(port, 1024, 5), "");
    assertEquals((await call("DELETE", `/tcp/${port}`)).status, 204);

    // Errors: out of range, busy, empty identifier, bad body, wrong token.
    const outside = await call("POST", "/tcp", {
      publicPort: port === 1 ? 2 : port - 1,
      identifier: id,
    });
    assertEquals([outside.status, outside.json.reason], [403, "not-allowed"]);
    for (const identifier of ["", "short", 7]) {
      const r = await call("POST", "/tcp", { publicPort: port, identifier });
      assertEquals(r.status, 400, JSON.stringify(identifier));
    }
    const bad = await call("POST", "/tcp", { publicPort: "x", identifier: id });
    assertEquals(bad.status, 400);
    const badLocal = await call("POST", "/tcp", { publicPort: port, identifier: id, localPort: 0 });
    assertEquals([badLocal.status, badLocal.json.reason], [400, "bad-request"]);
    busy = Deno.listen({ hostname: "127.0.0.1", port });
    const taken = await call("POST", "/tcp", { publicPort: port, identifier: id });
    assertEquals([taken.status, taken.json.reason], [409, "in-use"]);
    busy.close();
    busy = undefined;

    // An identifier no host has: a TCP tunnel naming it lets its client connect (TCP-only).
    const tcpOnly = "admin-tcp-only-identifier-02";
    assertEquals(await t.server.authenticate(tcpOnly), "unknown-identifier");
    const only = await call("POST", "/tcp", {
      publicPort: port,
      identifier: tcpOnly,
      localPort: hasher.port,
    });
    assertEquals([only.status, only.json.open], [201, false]);
    const c2 = startClient({ ...clientOpts, identifier: tcpOnly });
    try {
      await c2.connected();
      await until(() => t.server.tcpTunnels()[0]?.open === true, "the TCP-only client's port");
      assertEquals(await hashThrough(port, 1 << 20, 7), blockStreamSha256(1 << 20, 7));
    } finally {
      await c2.stop();
    }
    assertEquals((await call("DELETE", `/tcp/${port}`)).status, 204);
    assertEquals(
      await t.server.authenticate(tcpOnly),
      "unknown-identifier",
      "no tunnel names it any more",
    );
    for (const [m, p] of [["GET", "/tcp"], ["POST", "/tcp"], ["DELETE", `/tcp/${port}`]]) {
      const r = await call(
        m,
        p,
        m === "POST" ? { publicPort: port, identifier: id } : undefined,
        "wrong",
      );
      assertEquals(r.status, 401, `${m} ${p}`);
    }
    assertEquals((await call("GET", "/tcp")).json, []);
  } finally {
    busy?.close();
    await c.stop();
    await t.close();
    await hasher.close();
    await app.close();
  }
});

Deno.test("tunnel admin TCP: tunnel-server --tcp port:localPort=env:ID from the command line", async () => {
  const hasher = startHasher();
  const app = startApp();
  const port = freePort();
  const procs: ServiceProcess[] = [];
  try {
    // No --host: a TCP-only client needs none, its --tcp entry names the identifier.
    const server = await startService("tunnel-server.ts", [
      "--listen=127.0.0.1:0",
      `--tcp-ports=${port}-${port}`,
      `--tcp=${port}:${hasher.port}=env:APP_ID`,
      "--admin=127.0.0.1:0",
    ], { readyCount: 2, env: { APP_ID: id, TUNNEL_ADMIN_TOKEN: token } });
    procs.push(server);
    const client = await startService("tunnel-client.ts", [
      `--server=http://${server.addrs.get("http")}`,
      `--local=127.0.0.1:${app.port}`,
      `--allow-port=${hasher.port}`,
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
    procs.push(client);
    await server.waitFor(new RegExp(`msg="listening" name=tcp-${port}`));
    assertEquals(await hashThrough(port, 4 << 20, 6), blockStreamSha256(4 << 20, 6));
    const res = await fetch(`http://${server.addrs.get("admin")}/tcp`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const list = await res.json() as TcpTunnelInfo[];
    assertEquals(list.map((x) => [x.publicPort, x.source, x.open, x.localPort]), [[
      port,
      "server",
      true,
      hasher.port,
    ]]);
    for (const p of procs) {
      assert(!p.lines.some((l) => l.includes(id)), "identifier logged");
    }
    // From a config file, --tcp follows SIGHUP reloads (a bad value keeps the old tunnels).
    const dir = await Deno.makeTempDir({ prefix: "warren-tcp-" });
    try {
      const other = freePort();
      const lo = Math.min(port, other), hi = Math.max(port, other);
      const conf = (tcp: string) =>
        Deno.writeTextFile(
          `${dir}/t.toml`,
          `host = ["b.test=env:APP_ID"]\ntcp-ports = "${lo}-${hi}"\ntcp = ["${tcp}"]\n`,
        );
      await server.stop();
      await conf(`${port}:${hasher.port}=env:APP_ID`);
      const reloading = await startService("tunnel-server.ts", [
        "--listen=127.0.0.1:0",
        `--config=${dir}/t.toml`,
      ], { env: { APP_ID: id } });
      procs.push(reloading);
      await reloading.waitFor(new RegExp(`msg="tcp tunnel added" port=${port}`));
      await conf(`${other}=env:APP_ID`);
      reloading.child.kill("SIGHUP");
      await reloading.waitFor(new RegExp(`msg="tcp tunnel removed" port=${port}`));
      await reloading.waitFor(new RegExp(`msg="tcp tunnel added" port=${other}`));
      await conf(`${hi + 1}=env:APP_ID`);
      reloading.child.kill("SIGHUP");
      await reloading.waitFor(/outside --tcp-ports/);
      assert(!reloading.lines.some((l) => new RegExp(`tcp tunnel removed" port=${other}`).test(l)));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }

    // Bad --tcp values exit 2 with one line.
    for (
      const [arg, want] of [
        [`--tcp=${port}=env:APP_ID`, /--tcp-ports/],
        [`--tcp=x=env:APP_ID`, /--tcp must be/],
      ] as const
    ) {
      const r = await run(Deno.execPath(), [
        "run",
        "-A",
        new URL("../services/tunnel-server.ts", import.meta.url).pathname,
        "--listen=127.0.0.1:0",
        "--host=app.test=env:APP_ID",
        arg,
      ], { env: { APP_ID: id } });
      const err = r.stderr;
      assertEquals(r.code, 2, err);
      assert(want.test(err), err);
      assert(!err.includes(id), "identifier printed");
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await hasher.close();
    await app.close();
  }
});
