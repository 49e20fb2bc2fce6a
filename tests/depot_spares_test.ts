import { encodeFrame } from "../lib/control/mod.ts";
import { DepotLocal, depotProtocol } from "../lib/depot/mod.ts";
import { Logger } from "../lib/log.ts";
import { closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import { SparePool } from "../lib/depot/spares.ts";
import { assert, assertEquals } from "./_assert.ts";
import { handServer, socksDial, startDepot, startTarget } from "./_depot.ts";
import { readAll, until as untilHolds, within } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function echo(socksPort: number, targetPort: number, text: string): Promise<string> {
  const c = await socksDial(socksPort, { host: "127.0.0.1", port: targetPort });
  await writeAll(c, enc.encode(`E${text}`));
  await c.closeWrite();
  const got = dec.decode(await readAll(c));
  c.close();
  return got;
}

/** Poll `cond` until it holds (60 s bound for a hang, never for a slow box). */
function until(cond: () => boolean, what: string): Promise<void> {
  return untilHolds(what, cond);
}

Deno.test("depot spares: requests take pre-dialled tunnel connections", async () => {
  const target = startTarget();
  const depot = await startDepot();
  try {
    const local = depot.locals[0];
    await until(() => (local.status().spares?.ready ?? 0) === 2, "two spares ready");
    for (let i = 0; i < 5; i++) {
      assertEquals(await echo(depot.socksPort, target.port, `${i}`), `${i}`);
    }
    const spares = local.status().spares!;
    assert(spares.hits >= 1, JSON.stringify(spares));
    assertEquals(spares.hits + spares.misses, 5);
    // Every spare a request used was replaced (after its answer: see the pool test below).
    const held = () => depot.server.status().exits.find((e) => e.name === "default")?.spares;
    await until(() => local.status().spares?.ready === 2 && held() === 2, "spares replaced");
  } finally {
    await depot.close();
    await target.close();
  }
});

Deno.test("depot spares: standby spares the server drops are noticed and replaced; requests keep working", async () => {
  const target = startTarget();
  // The server holds 4 idle standby spares across its exits: the first exit's share is 4,
  // and a second exit halves it, so the server closes two of the first exit's standbys.
  // Spares live 20 s (the local's pool ticks every 5 s, and restores the count it wants on a
  // tick): the 2 replacements, just dialled when the requests start, are still held for them
  // (if the 2 others expire meanwhile, the server still holds the newest).
  const depot = await startDepot({
    server: { standbyTotal: 4, spareIdleMs: 20_000 },
    locals: [{ spareTunnels: 4 }],
  });
  const local = depot.locals[0];
  const held = () => depot.server.status().exits.find((e) => e.name === "default")?.spares;
  const ready = () => local.status().spares?.ready;
  try {
    await until(() => held() === 4 && ready() === 4, "4 standby spares ready and held");
    const second = await depot.addLocal({ name: "second", spareTunnels: 0 });
    // The drop itself: the server holds 2, and the local saw the 2 others end.
    await until(() => held() === 2 && ready() === 2, "2 standbys dropped, seen by the local");
    await second.stop();
    // The share is 4 again: the local dials 2 standbys for those the server dropped.
    await until(() => held() === 4 && ready() === 4, "the dropped standbys replaced");
    const before = local.status().spares!;
    for (let i = 0; i < 3; i++) {
      assertEquals(await echo(depot.socksPort, target.port, `s${i}`), `s${i}`);
    }
    assertEquals(local.status().failures, 0);
    // Each request came on a standby the server held (none on the control connection).
    const after = local.status().spares!;
    assertEquals([after.hits - before.hits, after.misses - before.misses], [3, 0]);
  } finally {
    await depot.close();
    await target.close();
  }
});

Deno.test('depot spares: without "open", a spare the server dropped is taken, found dead and replaced by a fresh connection', async () => {
  const target = startTarget();
  /** Relayed tunnels by request id: each writes `E<text>` and gets the target's echo. */
  const echoed = new Map<number, Promise<string>>();
  /** Requests the local reported failed (connectFailed): `id: reason`. */
  const failed: string[] = [];
  const key = "cd".repeat(16);
  const server = handServer({
    // A server before "open": spares stay silent until a request takes one; it lets the local
    // keep them 10 minutes (no expiry in the test), then cuts them itself, below.
    welcome: { name: "default", heartbeatMs: 60_000, features: [], spareIdleMs: 600_000 },
    async onTunnel({ conn, first, rest }) {
      if (first?.type !== "tunnel") return;
      assertEquals(first.key, key);
      const got = (async () => {
        await writeAll(
          conn,
          encodeFrame({ v: depotProtocol.version, type: "tunnelAccepted", id: first.id }),
        );
        await writeAll(conn, enc.encode(`E${first.id}`));
        await conn.closeWrite();
        return dec.decode(await readAll(rest));
      })();
      echoed.set(first.id, got);
      await got.catch(() => "");
    },
    onMessage(m) {
      if (m.type === "connectFailed") failed.push(`${m.id}: ${m.reason}`);
    },
  });
  const lines: string[] = [];
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: server.controlPort },
    backoff: { initialMs: 50, maxMs: 500 },
    log: new Logger("debug", {}, (l) => void lines.push(l)),
  });
  const running = local.run();
  try {
    await within(server.welcomed, "hello and welcome");
    await local.waitConnected(true, 10_000);
    const spares = () => local.status().spares!;
    await until(
      () => spares().ready === 2 && server.silent.size === 2,
      "2 spares at the tunnel port",
    );
    // The server drops both (as its handshake timer would): the local holds 2 dead spares.
    for (const c of server.silent) closeQuietly(c);
    for (let id = 1; id <= 4; id++) {
      await server.ctl.send({ type: "connect", id, key, host: "127.0.0.1", port: target.port });
      await until(() => echoed.has(id) || failed.length > 0, `request ${id}'s tunnel`);
      assertEquals(failed, []);
      assertEquals(await within(echoed.get(id)!, `request ${id}'s echo`), `${id}`);
    }
    assertEquals(local.status().failures, 0);
    // The first request took a spare (a dead one: both were), found it dead and dialled fresh.
    assert(spares().hits >= 1, JSON.stringify(spares()));
    assert(
      lines.some((l) => l.includes("spare tunnel was dead")),
      "a dead spare was taken and discarded",
    );
  } finally {
    await local.stop();
    await running;
    await server.close();
    await target.close();
  }
});

Deno.test("depot spares: requests that find none make the pool keep more, a quiet spell fewer", async () => {
  let open = 0;
  const conn = (): Duplex => ({
    read: () => Promise.resolve(null),
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => void open--,
  });
  // Spares live 400 ms; the expiry tick (every 100 ms) shrinks the extra ones.
  const pool = new SparePool(2, 400, () => (open++, Promise.resolve(conn())), 16);
  try {
    await until(() => pool.stats.ready === 2, "two spares ready");
    pool.missed();
    pool.missed();
    await until(() => pool.stats.ready === 8, "twice as many per miss: 8");
    for (let i = 0; i < 5; i++) pool.missed();
    await until(() => pool.stats.ready === 16, "never more than max");
    assertEquals(pool.stats.misses, 7);
    // No miss for a while: back to `size` as spares expire and are replaced by fewer.
    await until(() => pool.stats.ready === 2, "back to two");
    assertEquals(open, 2);
  } finally {
    pool.close();
  }
});

Deno.test("depot spares: spares the server drops lower the count wanted, so a miss does not dial back up to max", async () => {
  const conns: Duplex[] = [];
  const conn = (): Duplex => ({
    read: () => new Promise<null>(() => {}),
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  });
  // Spares live a minute: no expiry tick gets between the steps.
  const pool = new SparePool(16, 60_000, () => {
    const c = conn();
    conns.push(c);
    return Promise.resolve(c);
  }, 64);
  try {
    await until(() => pool.stats.ready === 16, "16 spares ready");
    pool.missed();
    pool.missed();
    await until(() => pool.stats.ready === 64, "64 spares after two misses");
    // The server, short of file descriptors, keeps the 2 newest and closes the rest.
    for (const c of conns.slice(0, 62)) assert(pool.remove(c, false), "a held spare");
    assertEquals(pool.stats.ready, 2);
    const dialled = conns.length;
    pool.missed();
    await until(() => pool.stats.ready === 4, "twice what the server keeps");
    // The old pool dialled 62 here, each one accepted and closed by a server out of fds.
    assertEquals(conns.length - dialled, 2);
  } finally {
    pool.close();
  }
});

Deno.test("depot spares: a used standby is replaced when its request is answered (fill), not when taken out", async () => {
  const conns: Duplex[] = [];
  // Spares live a minute: no expiry tick (which refills too) gets between the steps.
  const pool = new SparePool(4, 60_000, () => {
    const c: Duplex = {
      read: () => new Promise<null>(() => {}),
      write: (p) => Promise.resolve(p.length),
      closeWrite: () => Promise.resolve(),
      close: () => {},
    };
    conns.push(c);
    return Promise.resolve(c);
  }, 16);
  try {
    await until(() => pool.stats.ready === 4, "4 spares ready");
    assertEquals(conns.length, 4);
    // The server wrote a request on the newest: taken out and counted, nothing dialled yet
    // (the refill's dial and standby frame went ahead of the request's answer before).
    assert(pool.remove(conns[3]), "a held spare");
    assertEquals([conns.length, pool.stats.ready, pool.stats.hits], [4, 3, 1]);
    // Answered: the replacement is dialled.
    pool.fill();
    assertEquals(conns.length, 5);
    await until(() => pool.stats.ready === 4, "replaced");
  } finally {
    pool.close();
  }
});
