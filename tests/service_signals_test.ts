/**
 * services/_kit.ts's signals while a service starts: a supervisor may signal as soon as a
 * "listening" line shows, before the service is fully up (here depot-server, whose listeners
 * are announced before it joins its cluster's Redis).
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly } from "../lib/net/mod.ts";
import { listenLocal } from "./_util.ts";
import { startDepotServerService } from "./_depot.ts";

Deno.test("services: SIGTERM after the listening lines, while still starting, exits 0", async () => {
  // A "Redis" that takes the connection and never answers: depot-server's start waits there,
  // after its control, socks and tunnel listeners said "listening".
  const silent = listenLocal();
  const held: Deno.TcpConn[] = [];
  const accepting = (async () => {
    try {
      for (;;) held.push(await silent.accept());
    } catch {
      // the listener closed at the end of the test
    }
  })();
  try {
    const server = await startDepotServerService([
      ...["--registry", `redis://127.0.0.1:${silent.addr.port}`, "--cluster-listen", "127.0.0.1:0"],
      ...["--cluster-token", "signals-cluster"],
    ], { env: { DEPOT_TOKEN: "signals-token" } });
    assert(!server.lines.some((l) => /msg="registry"/.test(l)), server.lines.join("\n"));
    // Before the fix: no handler yet, the signal's default action (exit 143).
    const code = await server.stop("SIGTERM");
    assertEquals(code, 0, server.lines.join("\n"));
    assert(server.lines.some((l) => /msg="stopped"/.test(l)), server.lines.join("\n"));
  } finally {
    closeQuietly(silent);
    await accepting;
    for (const c of held) closeQuietly(c);
  }
});
