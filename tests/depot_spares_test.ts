import { type Duplex, writeAll } from "../lib/net/mod.ts";
import { SparePool } from "../lib/depot/spares.ts";
import { assert, assertEquals } from "./_assert.ts";
import { socksDial, startDepot, startTarget } from "./_depot.ts";
import { readAll, until as untilHolds } from "./_util.ts";

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
  } finally {
    await depot.close();
    await target.close();
  }
});

Deno.test("depot spares: expired spares are replaced; requests keep working", async () => {
  const target = startTarget();
  // Server handshake timeout 300 ms → spares live at most ~150 ms, then are redialled.
  const depot = await startDepot({ server: { handshakeTimeoutMs: 300 } });
  try {
    await new Promise((r) => setTimeout(r, 700));
    assertEquals(await echo(depot.socksPort, target.port, "late"), "late");
    assertEquals(depot.locals[0].status().failures, 0);
  } finally {
    await depot.close();
    await target.close();
  }
});

Deno.test("depot spares: a spare the server dropped is replaced by a fresh connection", async () => {
  const target = startTarget();
  // The server cuts silent tunnel connections after 300 ms but lets locals keep spares for
  // 60 s: every spare is dead by the time it is used.
  const depot = await startDepot({ server: { handshakeTimeoutMs: 300, spareIdleMs: 60_000 } });
  try {
    await new Promise((r) => setTimeout(r, 500));
    for (let i = 0; i < 4; i++) {
      assertEquals(await echo(depot.socksPort, target.port, `n${i}`), `n${i}`);
    }
    assertEquals(depot.locals[0].status().failures, 0);
    assert(depot.locals[0].status().spares!.hits >= 1, "dead spares were taken and replaced");
  } finally {
    await depot.close();
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
