/**
 * A frozen holder (issue 19): instance A holds the client, and its link to instance B stops
 * carrying anything while its TCP connection stays open, as when A is stopped (SIGSTOP), swapped
 * out or cut off by a network that drops instead of refusing. A request reaching B for that
 * client must end with a 502 within the links' keepalive, a lease time (lib/tunnel/cluster.ts
 * `linkKeepalive`: 3 s leases here, so at most 5 s of silence plus a ping interval), not wait for
 * the mux default (no ping before 30 s, dead at 60 s), which left it hanging up to the 60 s
 * response timeout. Once A answers again, B serves the client over a new link.
 * In process: A's link port is reached through a relay the test can freeze (it stops passing
 * bytes both ways, holding the connections open); a real redis-server; every wait is bounded
 * and names what it waited for. The bound on B's answer (45 s) is far above the keepalive and
 * below the old code's earliest answer.
 */

import { assertEquals } from "./_assert.ts";
import { writeAll } from "../lib/net/mod.ts";
import { member } from "./_tunnel_cluster.ts";
import { rawGet, startApp, startClient } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { readAll, within } from "./_util.ts";
import { type FreezableRelay, freezableRelay } from "./_freeze.ts";

const id = "cluster-frozen-identifier-01";

/** A GET through `port` with Host `host`, its status line read within `ms` (naming `what`). */
async function statusOf(port: number, host: string, path: string, what: string, ms: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(
      conn,
      new TextEncoder().encode(
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      ),
    );
    const text = new TextDecoder().decode(await within(readAll(conn), what, ms));
    return Number(text.split(" ")[1]);
  } finally {
    conn.close();
  }
}

Deno.test("tunnel cluster: a request for a client held by a frozen instance gets 502 within the link keepalive, and is served over a new link once it answers again", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  let relay: FreezableRelay | undefined;
  const a = await member(redis.url, "a", {
    leaseMs: 3_000,
    advertise: (linkPort) => {
      relay = freezableRelay(linkPort);
      return `127.0.0.1:${relay.port}`;
    },
  });
  // A response timeout far beyond the test's bound: B's answer can only be the link's 502.
  const b = await member(redis.url, "b", {
    leaseMs: 3_000,
    server: { responseTimeoutMs: 600_000 },
  });
  await a.tunnel.server.addHost("app.test", id);
  const c = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await c.connected();
    // B reaches the client over its link to A (through the relay).
    assertEquals((await rawGet(b.tunnel.port, "app.test", "/name?id=first")).body, "app first");

    relay!.freeze();
    assertEquals(
      await statusOf(
        b.tunnel.port,
        "app.test",
        "/name?id=frozen",
        "B's answer while A is frozen",
        45_000,
      ),
      502,
    );

    relay!.thaw();
    assertEquals((await rawGet(b.tunnel.port, "app.test", "/name?id=back")).body, "app back");
  } finally {
    await c.stop();
    await b.close();
    await a.close();
    await relay?.close();
    await app.close();
    await redis.stop();
  }
});
