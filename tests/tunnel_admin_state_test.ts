/**
 * tunnel-server's admin state, with curl against real tunnel-server and tunnel-client
 * processes: `POST /hosts` on a served host answers 409 (or takes it over with `replace`,
 * ending the old client's session, which then exits as its identifier is refused), hosts and TCP tunnels added through the API survive a
 * restart (and access rules and header rewrites set through the API) through `--state-file` (written atomically, mode 0600), and `GET` lists say where
 * each came from (flag, file, admin).
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { freePort, portOf, run, type ServiceProcess, startService, within } from "./_util.ts";
import { curl, startApp } from "./_tunnel.ts";

const token = "admin-token-for-state-tests";
const idA = "state-identifier-aaaa-0001";
const idB = "state-identifier-bbbb-0002";
const idFlag = "state-identifier-flag-0003";
const bearerA = "state-bearer-token-0004";
const auth = ["-H", `Authorization: Bearer ${bearerA}`];

async function eventually(what: string, fn: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** curl against the admin API: status and parsed JSON body. */
async function admin(
  port: number,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const r = await run("curl", [
    "-sS",
    "--max-time",
    "30",
    "-X",
    method,
    "-H",
    `Authorization: Bearer ${token}`,
    "-H",
    "Content-Type: application/json",
    ...(body === undefined ? [] : ["--data", JSON.stringify(body)]),
    "-w",
    "\n%{http_code}",
    `http://127.0.0.1:${port}${path}`,
  ]);
  const i = r.stdout.lastIndexOf("\n");
  const text = r.stdout.slice(0, i);
  return { status: Number(r.stdout.slice(i + 1)), json: text ? JSON.parse(text) : null };
}

Deno.test("tunnel admin state: 409 on a served host, replace ends the old client, state file across a restart, origins", async () => {
  const dir = await Deno.makeTempDir();
  const stateFile = `${dir}/state.json`;
  const hostsFile = `${dir}/hosts`;
  await Deno.writeTextFile(hostsFile, `file.test ${idFlag}\n`);
  const appA = startApp("a");
  const appB = startApp("b");
  const httpPort = freePort();
  const tcpPort = freePort();
  const serverArgs = [
    "--listen",
    `127.0.0.1:${httpPort}`,
    "--admin",
    "127.0.0.1:0",
    "--state-file",
    stateFile,
    "--host",
    `flag.test=${idFlag}`,
    "--hosts-file",
    hostsFile,
    "--tcp-ports",
    `${tcpPort}-${tcpPort}`,
    "--heartbeat",
    "500",
  ];
  const env = { TUNNEL_ADMIN_TOKEN: token };
  const startServer = () => startService("tunnel-server.ts", serverArgs, { readyCount: 2, env });
  const startClient = (identifier: string, appPort: number) =>
    startService("tunnel-client.ts", [
      "--server",
      `http://127.0.0.1:${httpPort}`,
      "--local",
      `127.0.0.1:${appPort}`,
      "--backoff-max",
      "500",
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: identifier } });
  const procs: ServiceProcess[] = [];
  let server = await startServer();
  procs.push(server);
  try {
    let adminPort = portOf(server.addrs.get("admin")!);
    const add = await admin(adminPort, "POST", "/hosts", { host: "App.Test", identifier: idA });
    assertEquals(add.status, 201, JSON.stringify(add.json));
    assertEquals(add.json, { host: "app.test", identifier: idA });
    const clientA = await startClient(idA, appA.port);
    procs.push(clientA);
    await eventually(
      "app.test served by a",
      async () => (await curl(httpPort, "app.test", "/name?id=1")).body === "a 1",
    );

    // A served host is not silently re-registered: 409 with one clear error, and A serves on.
    const again = await admin(adminPort, "POST", "/hosts", { host: "app.test" });
    assertEquals(again.status, 409);
    assertEquals((again.json as { reason: string }).reason, "host-taken");
    assertMatch((again.json as { error: string }).error, /app\.test is served already/);
    const flagTaken = await admin(adminPort, "POST", "/hosts", { host: "flag.test" });
    assertEquals(flagTaken.status, 409);
    assertEquals((await curl(httpPort, "app.test", "/name?id=2")).body, "a 2");

    const tcp = await admin(adminPort, "POST", "/tcp", {
      publicPort: tcpPort,
      identifier: idA,
      localPort: appA.port,
    });
    assertEquals(tcp.status, 201, JSON.stringify(tcp.json));

    // Origins in the lists.
    const origins = async () => {
      const hosts = (await admin(adminPort, "GET", "/hosts")).json as {
        host: string;
        origin: string;
      }[];
      return Object.fromEntries(hosts.map((h) => [h.host, h.origin]));
    };
    assertEquals(await origins(), {
      "flag.test": "flag",
      "file.test": "file",
      "app.test": "admin",
    });
    const tcpList = (await admin(adminPort, "GET", "/tcp")).json as { origin: string }[];
    assertEquals(tcpList.map((t) => t.origin), ["admin"]);

    // An access rule set through the API is kept too.
    const rule = await admin(adminPort, "PUT", "/hosts/app.test/access", { bearer: [bearerA] });
    assertEquals(rule.status, 200, JSON.stringify(rule.json));
    assertEquals((await curl(httpPort, "app.test", "/name")).status, 401);
    // And header rewrites.
    const rw = await admin(adminPort, "PUT", "/hosts/app.test/rewrite", {
      response: { add: { "X-Kept": "yes" } },
    });
    assertEquals(rw.status, 200, JSON.stringify(rw.json));

    // The state file: only the admin's routes, private, no temporary file left.
    assertEquals((await Deno.stat(stateFile)).mode! & 0o777, 0o600);
    const saved = JSON.parse(await Deno.readTextFile(stateFile));
    assertEquals(saved.hosts, [{ host: "app.test", identifier: idA }]);
    assertEquals(saved.tcp, [{ publicPort: tcpPort, identifier: idA, localPort: appA.port }]);
    assertEquals(saved.access, [{ host: "app.test", bearer: [bearerA] }]);
    assertEquals(saved.rewrites, [{ host: "app.test", response: { add: { "X-Kept": "yes" } } }]);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["hosts", "state.json"]);

    // Restart: the admin's host and TCP tunnel are back, the client reconnects and serves.
    assertEquals(await server.stop("SIGTERM"), 0);
    server = await startServer();
    procs.push(server);
    adminPort = portOf(server.addrs.get("admin")!);
    await server.waitFor(/msg="state loaded".* hosts=1 tcp=1 access=1 rewrites=1/);
    assertEquals(await origins(), {
      "flag.test": "flag",
      "file.test": "file",
      "app.test": "admin",
    });
    await eventually(
      "app.test served again after the restart",
      async () => (await curl(httpPort, "app.test", "/name?id=3", auth)).body === "a 3",
    );
    assertEquals((await curl(httpPort, "app.test", "/name")).status, 401);
    const kept = await curl(httpPort, "app.test", "/name?id=4", [...auth, "-D", "/dev/stderr"]);
    assertEquals(kept.body, "a 4");
    assert(/^x-kept: yes\r?$/im.test(kept.stderr), kept.stderr);
    assertEquals((await admin(adminPort, "DELETE", "/hosts/app.test/rewrite")).status, 204);
    assertEquals((await admin(adminPort, "DELETE", "/hosts/app.test/access")).status, 204);
    await eventually("the TCP tunnel open again", async () => {
      const r = await run("curl", [
        "-sS",
        "--max-time",
        "10",
        `http://127.0.0.1:${tcpPort}/name?id=4`,
      ]);
      return r.stdout === "a 4";
    });

    // Take app.test over with "replace": A loses its last route and its session is ended.
    assertEquals((await admin(adminPort, "DELETE", `/tcp/${tcpPort}`)).status, 204);
    const take = await admin(adminPort, "POST", "/hosts", {
      host: "app.test",
      identifier: idB,
      replace: true,
    });
    assertEquals(take.status, 201, JSON.stringify(take.json));
    await clientA.waitFor(/msg="server ended the session" end=revoked/);
    // Its identifier names nothing any more: it is refused, gives up, exits 4 with one line.
    assertEquals((await within(clientA.child.status, "the refused client a to exit")).code, 4);
    // stop() on an exited process waits for its output to be read to the end: the last line.
    await clientA.stop();
    assertMatch(clientA.lines.at(-1)!, /^error: the server refused this identifier 3 times/);
    const clientB = await startClient(idB, appB.port);
    procs.push(clientB);
    await eventually(
      "app.test served by b",
      async () => (await curl(httpPort, "app.test", "/name?id=5")).body === "b 5",
    );
    const clients = (await admin(adminPort, "GET", "/clients")).json as { hosts: string[] }[];
    assertEquals(clients.map((c) => c.hosts), [["app.test"]]);
    const after = JSON.parse(await Deno.readTextFile(stateFile));
    assertEquals(after, {
      version: 1,
      hosts: [{ host: "app.test", identifier: idB }],
      tcp: [],
      access: [],
      rewrites: [],
      claims: [],
    });
    // No identifier in any log line.
    for (const p of procs) {
      for (const id of [idA, idB, idFlag, bearerA]) {
        assert(!p.lines.some((l) => l.includes(id)), `identifier logged: ${p.lines.join("\n")}`);
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGTERM");
    await appA.close();
    await appB.close();
    await Deno.remove(dir, { recursive: true });
  }
});
