/**
 * Both ends of a tunnel log why a session ended, above debug level: a transport cut without a
 * go away and a heartbeat timeout at warn (with the reason), an orderly stop, a server
 * shutdown and a replaced client at info. The identifier never appears, its fingerprint does.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startApp, startClient, startTunnel } from "./_tunnel.ts";
import { Logger } from "../lib/log.ts";
import { closeQuietly } from "../lib/net/mod.ts";
import { fingerprint } from "../lib/tunnel/mod.ts";

/** A logger keeping every line (debug and up). */
function capture(svc: string): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("debug", { svc }, (l) => lines.push(l)), lines };
}

/** Wait for a line matching `re`; fails with every line seen when none comes. */
async function waitLine(lines: string[], re: RegExp, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const hit = lines.find((l) => re.test(l));
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no line matching ${re}:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A TCP forwarder between client and server that the test can cut (both sockets closed, no go
 * away) or freeze (bytes stop flowing, sockets stay open: only heartbeats can notice).
 */
function startForwarder(target: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let thaw: () => void = () => {};
  let frozen: Promise<void> | null = null;
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        if (frozen) await frozen;
        let o = 0;
        while (o < n) o += await to.write(buf.subarray(o, n));
      }
    } catch {
      // Cut or closed by the other pump: the test decides what happens next.
    } finally {
      closeQuietly(from);
      closeQuietly(to);
    }
  };
  const pumps: Promise<void>[] = [];
  const loop = (async () => {
    for await (const c of listener) {
      const up = await Deno.connect({ hostname: "127.0.0.1", port: target });
      conns.add(c);
      conns.add(up);
      pumps.push(pump(c, up), pump(up, c));
    }
  })();
  return {
    port: listener.addr.port,
    cut() {
      for (const c of conns) closeQuietly(c);
      conns.clear();
    },
    freeze() {
      frozen = new Promise((r) => thaw = r);
    },
    async close() {
      frozen = null;
      thaw();
      listener.close();
      this.cut();
      await loop.catch(() => {});
      await Promise.all(pumps);
    },
  };
}

const id = "session-log-identifier-0001";

Deno.test("tunnel session end: a cut transport is logged at warn on both ends, with the reason", async () => {
  const srv = capture("tunnel-server");
  const cli = capture("tunnel-client");
  const app = startApp();
  const t = startTunnel({ log: srv.log });
  await t.server.addHost("app.test", id);
  const fwd = startForwarder(t.port);
  const c = startClient({
    server: `http://127.0.0.1:${fwd.port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    log: cli.log,
  });
  try {
    await c.connected();
    fwd.cut();
    const s = await waitLine(srv.lines, /msg="client disconnected"/);
    assert(/level=warn/.test(s), s);
    assert(/end=eof/.test(s) || /end=conn-error/.test(s), s);
    assert(s.includes(`client=${fingerprint(id)}`), s);
    const k = await waitLine(cli.lines, /msg="disconnected from server"/);
    assert(/level=warn/.test(k), k);
    assert(/end=(eof|conn-error)/.test(k), k);
    // It reconnects through the forwarder afterwards.
    await waitLine(srv.lines, /cid=2 msg="client connected"/);
  } finally {
    await c.stop();
    await t.close();
    await fwd.close();
    await app.close();
  }
  for (const l of [...srv.lines, ...cli.lines]) assert(!l.includes(id), `identifier logged: ${l}`);
});

Deno.test("tunnel session end: a heartbeat timeout is logged at warn on both ends", async () => {
  const srv = capture("tunnel-server");
  const cli = capture("tunnel-client");
  const app = startApp();
  const t = startTunnel({ log: srv.log, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 600 });
  await t.server.addHost("app.test", id);
  const fwd = startForwarder(t.port);
  const c = startClient({
    server: `http://127.0.0.1:${fwd.port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    heartbeatIntervalMs: 100,
    heartbeatTimeoutMs: 600,
    backoff: { initialMs: 5_000, maxMs: 5_000 },
    log: cli.log,
  });
  try {
    await c.connected();
    fwd.freeze();
    const s = await waitLine(srv.lines, /msg="client disconnected"/);
    assert(/level=warn.*end=keepalive-timeout.*why="heartbeat timeout/.test(s), s);
    const k = await waitLine(cli.lines, /msg="disconnected from server"/);
    assert(/level=warn.*end=keepalive-timeout/.test(k), k);
  } finally {
    await c.stop();
    await t.close();
    await fwd.close();
    await app.close();
  }
});

Deno.test("tunnel session end: stop, server shutdown and a replaced client are logged at info", async () => {
  const srv = capture("tunnel-server");
  const app = startApp();
  const t = startTunnel({ log: srv.log });
  await t.server.addHost("app.test", id);
  const clients = [capture("client-1"), capture("client-2"), capture("client-3")];
  const opts = (n: number) => ({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    log: clients[n].log,
  });
  const c1 = startClient(opts(0));
  let c2: ReturnType<typeof startClient> | undefined;
  let c3: ReturnType<typeof startClient> | undefined;
  try {
    await c1.connected();
    // The client stops: it says "stopped", the server hears an orderly go away.
    await c1.stop();
    const k1 = await waitLine(clients[0].lines, /msg="disconnected from server"/);
    assert(/level=info.*end=stopped/.test(k1), k1);
    const s1 = await waitLine(srv.lines, /cid=1 msg="client disconnected"/);
    assert(/level=info/.test(s1), s1);
    assert(/end=(remote-goaway|control-closed)/.test(s1), s1);

    // A second client is replaced by a third: info on the server for the old one.
    c2 = startClient(opts(1));
    await c2.connected();
    c3 = startClient(opts(2));
    await c3.connected();
    const s2 = await waitLine(srv.lines, /cid=2 msg="client disconnected"/);
    assert(/level=info.*end=replaced/.test(s2), s2);
    await c2.stop();

    // Server shutdown: info on both ends.
    await t.server.close();
    const s3 = await waitLine(srv.lines, /cid=3 msg="client disconnected"/);
    assert(/level=info.*end=shutdown/.test(s3), s3);
    const k3 = await waitLine(clients[2].lines, /msg="disconnected from server"/);
    assert(/level=info.*end=shutdown/.test(k3), k3);
    assertEquals(srv.lines.filter((l) => /level=(warn|error)/.test(l)), []);
  } finally {
    await c1.stop();
    await c2?.stop();
    await c3?.stop();
    await t.close();
    await app.close();
  }
});
