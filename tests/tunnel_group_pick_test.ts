/**
 * The pieces of groups and health checks on their own: ClientGroup's choice of member
 * (round-robin, least-streams, who is usable), the `health` control message, and the
 * health check's verdicts against real listeners (2xx, 503, refused, silent), and a group
 * behind the embeddable front.
 */

import { assertEquals, assertThrows } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { within } from "./_util.ts";
import {
  checkHttp,
  ClientConn,
  ClientGroup,
  decodeMessage,
  encodeMessage,
  HealthMonitor,
  isHealthPath,
} from "../lib/tunnel/mod.ts";
import { encodeFrame } from "../lib/control/mod.ts";
import { curl, startApp, startClient, startHonoTunnel } from "./_tunnel.ts";

async function members(n: number) {
  const pairs = await Promise.all(Array.from({ length: n }, () => muxPair()));
  const conns = pairs.map((p, i) => {
    const c = new ClientConn(i + 1, "fp", "remote", p.server, "key");
    c.ready = true;
    return c;
  });
  return { conns, close: () => Promise.all(pairs.map((p) => p.close())) };
}

Deno.test("group pick: round-robin over usable members, skipping unhealthy, not ready, tried and dead ones", async () => {
  const { conns: [a, b, c], close } = await members(3);
  try {
    const g = new ClientGroup();
    for (const m of [a, b, c]) g.add(m);
    const ids = (k: number, skip?: Set<ClientConn>) =>
      Array.from({ length: k }, () => g.pick("round-robin", skip)?.id);
    assertEquals(ids(6), [1, 2, 3, 1, 2, 3]);
    b.healthy = false;
    // B's turns are shared, not all given to the member after it.
    assertEquals(ids(4), [1, 3, 1, 3]);
    assertEquals(g.usableCount, 2);
    c.ready = false;
    assertEquals(ids(3), [1, 1, 1]);
    assertEquals(g.pick("round-robin", new Set([a])), undefined);
    b.healthy = true;
    c.ready = true;
    assertEquals(ids(3, new Set([a, c])), [2, 2, 2]);
    // A session that ended takes no stream, even before its attach() removed it.
    await a.session.close();
    await within(a.session.closed, "session a to end");
    assertEquals(ids(4).sort(), [2, 2, 3, 3]);
    assertEquals(g.remove(a), true);
    assertEquals(g.remove(a), false);
    assertEquals(g.first, b);
  } finally {
    await close();
  }
});

Deno.test("group pick: least-streams takes the member with the fewest open streams, ties in turn", async () => {
  const { conns: [a, b], close } = await members(2);
  try {
    const g = new ClientGroup();
    g.add(a);
    g.add(b);
    a.openStreams = 3;
    assertEquals([1, 2, 3].map(() => g.pick("least-streams")?.id), [2, 2, 2]);
    b.openStreams = 3;
    assertEquals([1, 2].map(() => g.pick("least-streams")?.id).sort(), [1, 2]);
    // Idle streams kept in a front's pool are not load.
    b.idleStreams = 2;
    assertEquals([1, 2].map(() => g.pick("least-streams")?.id), [2, 2]);
    b.idleStreams = 0;
    b.healthy = false;
    b.openStreams = 0;
    assertEquals(g.pick("least-streams")?.id, 1);
  } finally {
    await close();
  }
});

Deno.test("health message: encoded and checked like every control message", () => {
  const m = decodeMessage(encodeMessage({ type: "health", ok: false, error: "status 503" }));
  assertEquals(m, { v: 1, type: "health", ok: false, error: "status 503" });
  const bad = (x: object) => assertThrows(() => decodeMessage(encodeFrame(x, 65536)));
  bad({ v: 1, type: "health" });
  bad({ v: 1, type: "health", ok: "yes" });
  bad({ v: 1, type: "health", ok: true, error: "x".repeat(300) });
  bad({ v: 1, type: "handshakeRequest", healthCheck: 1 });
  assertEquals(
    decodeMessage(encodeMessage({ type: "handshakeRequest", healthCheck: true })),
    { v: 1, type: "handshakeRequest", healthCheck: true },
  );
});

Deno.test("health check: 2xx passes; 503, a refused dial and an app that never answers fail with the reason", async () => {
  let status = 204;
  const seen: string[] = [];
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    seen.push(`${new URL(req.url).pathname} ${req.headers.get("user-agent")}`);
    return new Response(null, { status });
  });
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const holding = (async () => {
    for await (const c of silent) held.push(c);
  })();
  const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const gonePort = gone.addr.port;
  gone.close();
  try {
    const target = { host: "127.0.0.1", port: app.addr.port };
    assertEquals(await checkHttp(target, "/healthz", 2000), undefined);
    status = 503;
    assertEquals(await checkHttp(target, "/healthz", 2000), "status 503");
    assertEquals(seen, [
      "/healthz warren-tunnel-health",
      "/healthz warren-tunnel-health",
    ]);
    const refused = await checkHttp({ host: "127.0.0.1", port: gonePort }, "/", 2000);
    assertEquals(typeof refused, "string");
    assertEquals(
      await checkHttp({ host: "127.0.0.1", port: silent.addr.port }, "/", 200),
      "no answer in 200 ms",
    );

    // A path that could smuggle a header (or is not a path) is refused up front.
    for (const path of ["/a\r\nX-Injected: 1", "/a b", "healthz", ""]) {
      assertEquals(isHealthPath(path), false, path);
      assertThrows(() => new HealthMonitor(target, { path }, { onChange: () => {} }));
    }
    assertEquals(isHealthPath("/healthz?full=1"), true);

    // The monitor: unhealthy until a check passes, out after `failures` in a row, back after one.
    const changes: boolean[] = [];
    status = 200;
    const mon = new HealthMonitor(target, { path: "/h", intervalMs: 20, failures: 2 }, {
      onChange: (ok) => void changes.push(ok),
    });
    mon.start();
    const until = async (f: () => boolean) => {
      while (!f()) await new Promise((r) => setTimeout(r, 10));
    };
    await until(() => changes.length === 1);
    status = 500;
    await until(() => changes.length === 2);
    assertEquals(mon.failing >= 2, true);
    status = 200;
    await until(() => changes.length === 3);
    await mon.stop();
    assertEquals(changes, [true, false, true]);
  } finally {
    silent.close();
    await holding;
    for (const c of held) c.close();
    await app.shutdown();
  }
});

Deno.test("group through the embeddable (Hono) front: requests alternate, and a member whose app is down passes them on", async () => {
  const a = startApp("a");
  const b = startApp("b");
  const t = startHonoTunnel({ server: { duplicate: "balance" } });
  const id = "hono-group-identifier-01";
  await t.server.addHost("app.test", id);
  const ca = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: a.port },
  });
  await ca.connected();
  const cb = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: b.port },
  });
  let bClosed = false;
  try {
    await cb.connected();
    const names: string[] = [];
    for (let i = 0; i < 6; i++) names.push((await curl(t.port, "app.test", `/name?id=${i}`)).body);
    assertEquals(names.map((n) => n[0]).sort().join(""), "aaabbb");
    await b.close();
    bClosed = true;
    for (let i = 0; i < 6; i++) {
      const r = await curl(t.port, "app.test", `/name?id=x${i}`);
      assertEquals([r.status, r.body], [200, `a x${i}`]);
    }
  } finally {
    await cb.stop();
    await ca.stop();
    await t.close();
    await a.close();
    if (!bClosed) await b.close();
  }
});
