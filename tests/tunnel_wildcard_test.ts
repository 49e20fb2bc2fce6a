/**
 * Wildcard host entries: `--host '*.wild.localhost=…'` routes every name under
 * wild.localhost without an entry of its own to one client (an exact entry wins), tested with
 * curl against tunnel-server and tunnel-client processes; the clients print the public URL
 * of each host they serve on connect.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { portOf, run, type ServiceProcess, startService } from "./_util.ts";
import { curl, startApp } from "./_tunnel.ts";

const idWild = "wildcard-identifier-0001";
const idExact = "wildcard-identifier-0002";

Deno.test("tunnel wildcard host: *.wild.localhost routes every subdomain to one client, an exact entry wins, URLs printed", async () => {
  const wild = startApp("wild");
  const exact = startApp("exact");
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--host",
      `*.Wild.localhost=${idWild}`,
      "--host",
      `exact.wild.localhost=${idExact}`,
    ]);
    procs.push(server);
    const port = portOf(server.addrs.get("http")!);
    for (const [id, app] of [[idWild, wild], [idExact, exact]] as const) {
      const c = await startService("tunnel-client.ts", [
        "--server",
        `http://127.0.0.1:${port}`,
        "--local",
        `127.0.0.1:${app.port}`,
      ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
      procs.push(c);
    }
    const [, wildClient, exactClient] = procs;
    assertMatch(
      await wildClient.waitFor(/msg="forwarding"/),
      new RegExp(`url="?http://\\*\\.wild\\.localhost:${port}"? to=127\\.0\\.0\\.1:${wild.port}`),
    );
    assertMatch(
      await exactClient.waitFor(/msg="forwarding"/),
      new RegExp(`url=http://exact\\.wild\\.localhost:${port} `),
    );
    assertEquals((await curl(port, "a.wild.localhost", "/name?id=1")).body, "wild 1");
    assertEquals((await curl(port, "b.c.WILD.localhost:1234", "/name?id=2")).body, "wild 2");
    assertEquals((await curl(port, "exact.wild.localhost", "/name?id=3")).body, "exact 3");
    assertEquals((await curl(port, "wild.localhost", "/name")).status, 404);
    assertEquals((await curl(port, "x.other.localhost", "/name")).status, 404);
    // As a browser would reach it: the name resolved to the server.
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "30",
      "--resolve",
      `z.wild.localhost:${port}:127.0.0.1`,
      `http://z.wild.localhost:${port}/name?id=4`,
    ]);
    assertEquals(r.stdout, "wild 4");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await wild.close();
    await exact.close();
  }
});

Deno.test("tunnel wildcard host: malformed patterns are refused with one line", async () => {
  const svc = new URL("../services/tunnel-server.ts", import.meta.url).pathname;
  for (const bad of ["*.=x-identifier-1", "a.*.b=x-identifier-1", "**.b=x-identifier-1"]) {
    const r = await run(Deno.execPath(), ["run", "-A", svc, "--check-config", "--host", bad]);
    assertEquals(r.code, 2, `${bad}: ${r.stderr}`);
    assertMatch(r.stderr.trim(), /^error: .*bad host name/);
    assertEquals(r.stderr.trim().split("\n").length, 1);
  }
});
