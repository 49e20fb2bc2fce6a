/**
 * Slowloris against every handshake listener (in-process, short handshake timeouts): depot's
 * SOCKS5, control and tunnel ports, the tunnel server's HTTP front, the fusion server. Each
 * attacker dribbles a VALID handshake one byte every 200 ms (so an idle timer would never
 * fire): the handshake deadline must close it before the handshake is whole, and while 20 of
 * them hang on, a good client is still served. No clock is asserted: the server and the
 * attackers share one event loop, so a box slow enough to delay the deadline dribbles slower
 * too, and dribbling a handshake takes over 3 deadlines. A server that queues the attackers
 * (serial handshakes, a full connection limit) lets their whole handshake in or refuses the
 * good client. (seaprox's SOCKS5/HTTP listeners: seaprox_hostile_test.ts.)
 */

import { assert } from "./_assert.ts";
import { closeQuietly, dial, serve, writeAll } from "../lib/net/mod.ts";
import { encodeFrame as encodeControl } from "../lib/control/mod.ts";
import { encodeHello } from "../lib/sequencer/mod.ts";
import { FusionClient, FusionServer } from "../lib/fusion/mod.ts";
import { socksDial, startDepot, startTarget } from "./_depot.ts";
import { serveTunnel, TunnelServer } from "../lib/tunnel/mod.ts";
import { startClient, startTunnel } from "./_tunnel.ts";
import { startHttpProxy } from "./_http.ts";
import { listenLocal, readAll, readWithin, startOrigin, until, within } from "./_util.ts";
import { startHashTarget } from "./_fusion.ts";

const handshakeTimeoutMs = 1_000;
/** One byte this often: far faster than the deadline, so only a total deadline stops it. */
const dribbleMs = 200;
const attackers = 20;
const enc = new TextEncoder();

interface Attack {
  /** Whether the server closed the connection before the whole handshake was sent. */
  cut: boolean;
  /** Bytes of the handshake sent before the close (all of them when not cut). */
  sent: number;
  /** ms from connect until the close or the last byte (reported, never asserted). */
  ms: number;
}

/**
 * Dribble `handshake` on `c` one byte every `dribbleMs` until the server closes the connection
 * or the whole handshake was sent (then it was not cut: the attack ends there). `begun` is
 * called once the first byte went out.
 */
async function dribble(c: Deno.TcpConn, handshake: Uint8Array, begun = () => {}): Promise<Attack> {
  const t0 = performance.now();
  let closed = false;
  const reader = (async () => {
    const buf = new Uint8Array(1024);
    try {
      while ((await c.read(buf)) !== null) { /* an answer is fine, the close is what counts */ }
    } catch {
      // A reset is a close too.
    }
    closed = true;
  })();
  let sent = 0;
  try {
    while (!closed && sent < handshake.length) {
      try {
        await writeAll(c, handshake.subarray(sent, sent + 1));
      } catch {
        // The server closed: its close (or reset) ends the reader too.
        await within(reader, "the read to end on a connection the server closed");
        break;
      }
      if (++sent === 1) begun();
      await new Promise((r) => setTimeout(r, dribbleMs));
    }
    return { cut: closed && sent < handshake.length, sent, ms: performance.now() - t0 };
  } finally {
    closeQuietly(c);
    await reader;
  }
}

/**
 * Run `attackers` slowloris clients at `port`; once each has begun, `good()` must succeed
 * while they hang on; every attacker must have been cut before its handshake was whole.
 */
async function attack(
  label: string,
  port: number,
  handshake: Uint8Array,
  good: () => Promise<void>,
) {
  // Long enough that dribbling it takes far longer than the deadline.
  assert(handshake.length * dribbleMs > 3 * handshakeTimeoutMs, `${label}: handshake too short`);
  let begun = 0;
  const attacks = Array.from({ length: attackers }, async () => {
    const c = await within(dial("127.0.0.1", port), `${label}: an attacker's connection`);
    return await dribble(c, handshake, () => begun++);
  });
  await until(`${label}: every attacker sending`, () => begun === attackers);
  const t0 = performance.now();
  await within(good(), `${label}: the good client served while attackers hang on`);
  const goodMs = performance.now() - t0;
  const results = await Promise.all(attacks);
  const worst = Math.max(...results.map((r) => r.ms));
  const sent = Math.max(...results.map((r) => r.sent));
  console.log(
    `${label}: ${attackers} attackers cut after <= ${Math.round(worst)} ms (sent <= ${sent} of ` +
      `${handshake.length} bytes); good client served in ${Math.round(goodMs)} ms`,
  );
  const whole = results.filter((r) => !r.cut).length;
  assert(whole === 0, `${label}: ${whole} attackers got their whole handshake in uncut`);
}

Deno.test("slowloris: depot SOCKS5, control and tunnel ports cut dribbled handshakes", async () => {
  const target = startTarget();
  const depot = await startDepot({ server: { handshakeTimeoutMs, token: "slow-token" } });
  try {
    const domain = "a-very-long-host-name-that-takes-a-while.example.org";
    const socks = Uint8Array.of(5, 1, 0, 5, 1, 0, 3, domain.length, ...enc.encode(domain), 0, 80);
    const goodSocks = async () => {
      const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
      try {
        await writeAll(c, enc.encode("Eping"));
        await c.closeWrite();
        const back = new TextDecoder().decode(await readAll(c));
        assert(back === "ping", back);
      } finally {
        c.close();
      }
    };
    await attack("depot socks", depot.socksPort, socks, goodSocks);
    const hello = encodeControl({
      v: 1,
      type: "hello",
      role: "depot-local",
      token: "slow-token",
      name: "slow",
    });
    await attack("depot control", depot.controlPort, hello, async () => {
      const local = await depot.addLocal({ name: "good" });
      assert(local !== undefined);
    });
    const tunnel = encodeControl({ v: 1, type: "tunnel", id: 1, key: "0".repeat(32) });
    await attack("depot tunnel", depot.tunnelPort, tunnel, goodSocks);
  } finally {
    await depot.close();
    await target.close();
  }
});

Deno.test("slowloris: the tunnel server's HTTP front cuts dribbled request heads", async () => {
  const server = new TunnelServer();
  const front = serveTunnel(listenLocal(), server, { handshakeTimeoutMs });
  const t = { port: front.addr.port, url: `http://127.0.0.1:${front.addr.port}` };
  try {
    const head = enc.encode(
      "GET /some/long/path/to/request HTTP/1.1\r\nHost: app.example\r\nX-Pad: slowly\r\n\r\n",
    );
    await attack("tunnel front", t.port, head, async () => {
      const r = await fetch(`${t.url}/x`, { headers: { host: "nobody.example" } });
      await r.body?.cancel();
      assert(r.status === 502 || r.status === 404, `status ${r.status}`);
    });
  } finally {
    await server.close();
    await front.stop(200);
  }
});

Deno.test("slowloris: the fusion server cuts dribbled path hellos", async () => {
  const target = startHashTarget(0);
  const token = "slow-fusion-token-with-some-length";
  const server = new FusionServer({
    token,
    target: { host: "127.0.0.1", port: target.port },
    handshakeTimeoutMs,
  });
  const srv = serve(listenLocal(), server.handle, { handshakeTimeoutMs });
  const client = new FusionClient({ token, paths: [{ host: "127.0.0.1", port: srv.addr.port }] });
  try {
    const hello = encodeHello(new Uint8Array(16).fill(7), 1, enc.encode(token), false);
    await attack("fusion", srv.addr.port, hello, async () => {
      const s = client.open();
      try {
        await writeAll(s, enc.encode("hello through fusion"));
        await s.closeWrite();
        await readAll(s);
      } finally {
        s.close();
        await s.closed;
      }
    });
  } finally {
    await client.close();
    await srv.stop(500);
    await server.close();
    await target.close();
  }
});

/** One good request on a fresh connection (`request` must get a 200), then the open conn. */
async function keptAlive(port: number, request: string): Promise<Deno.TcpConn> {
  const c = await within(dial("127.0.0.1", port), "a keep-alive connection");
  await writeAll(c, enc.encode(request));
  const buf = new Uint8Array(4096);
  const n = await readWithin(c, buf, "the first answer on a keep-alive connection");
  const got = new TextDecoder().decode(buf.subarray(0, n ?? 0));
  assert(got.startsWith("HTTP/1.1 200"), got.slice(0, 40));
  return c;
}

/**
 * Dribble `head` on each kept-alive connection; fails unless the server cut every one before
 * the head was whole.
 */
async function dribbleHeads(label: string, conns: Deno.TcpConn[], head: Uint8Array) {
  const results = await Promise.all(conns.map((c) => dribble(c, head)));
  const worst = Math.max(...results.map((r) => r.ms));
  console.log(
    `${label}: ${conns.length} dribbled second heads cut after <= ${Math.round(worst)} ms`,
  );
  const whole = results.filter((r) => !r.cut).length;
  assert(whole === 0, `${label}: ${whole} dribbled keep-alive heads got in whole, uncut`);
}

Deno.test("slowloris: the HTTP proxy cuts a dribbled second head on a keep-alive connection", async () => {
  const origin = startOrigin();
  const proxy = startHttpProxy({ headTimeoutMs: handshakeTimeoutMs });
  try {
    const req = (id: number) =>
      `GET http://127.0.0.1:${origin.port}/hello?id=${id} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`;
    const conns = await Promise.all([1, 2, 3, 4, 5].map((i) => keptAlive(proxy.addr.port, req(i))));
    await dribbleHeads(
      "http proxy keep-alive",
      conns,
      enc.encode(req(9).replace("\r\n\r\n", "\r\nX-Pad: slowly-sent\r\n\r\n")),
    );
  } finally {
    await proxy.stop(200);
    await origin.close();
  }
});

Deno.test("slowloris: the tunnel front cuts a dribbled second head on a keep-alive connection", async () => {
  // serve()'s handshake timer ends with the first head; later heads have headTimeoutMs from
  // their first byte (before the fix: held until the 300 s idle timeout).
  const app = startOrigin();
  const t = startTunnel({}, 0, { headTimeoutMs: handshakeTimeoutMs });
  const id = "identifier-slowloris-0001";
  await t.server.addHost("app.test", id);
  const client = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await client.connected();
    const one = async () => {
      const c = await within(dial("127.0.0.1", t.port), "a keep-alive connection");
      await writeAll(c, enc.encode("GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n"));
      const buf = new Uint8Array(4096);
      const n = await readWithin(c, buf, "the first answer on a keep-alive connection");
      assert(new TextDecoder().decode(buf.subarray(0, n ?? 0)).startsWith("HTTP/1.1 200"));
      return c;
    };
    const head = enc.encode(
      "GET /hello HTTP/1.1\r\nHost: app.test\r\nX-Pad: a-long-header-value-sent-slowly\r\n\r\n",
    );
    // Each attacker makes one good request, then dribbles the next head.
    const conns = await Promise.all(Array.from({ length: 5 }, one));
    await dribbleHeads("tunnel keep-alive", conns, head);
    // A good keep-alive client is unaffected: two requests on one connection.
    const c = await one();
    await writeAll(c, enc.encode("GET /hello?id=2 HTTP/1.1\r\nHost: app.test\r\n\r\n"));
    const buf = new Uint8Array(4096);
    const n = await readWithin(c, buf, "the second answer on a keep-alive connection");
    assert(new TextDecoder().decode(buf.subarray(0, n ?? 0)).endsWith("hello 2"));
    closeQuietly(c);
  } finally {
    await client.stop();
    await t.close();
    await app.close();
  }
});
