/**
 * Fusion client and server in-process over 2–3 loopback paths (each through a FaultyLink):
 * 64 MiB each way compared by SHA-256, with a path cut, a path silenced, and paths
 * returning mid-transfer.
 */
import { FusionClient, FusionServer, type SessionSummary } from "../lib/fusion/mod.ts";
import { closeQuietly, serve, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { FaultyLink, startHashTarget } from "./_fusion.ts";
import {
  blockStream,
  blockStreamSha256,
  drainHash,
  listenLocal,
  sendBlocks,
  until,
} from "./_util.ts";

const MiB = 1024 * 1024;
const token = "loopback-token";
/**
 * Short timers, but not so short that a starved process drops healthy paths: with a 600 ms
 * silence timeout and a 5 s grace, a loaded box dropped paths as silent every few seconds
 * (and could lose every path for the grace time, failing the session).
 */
const fastTimers = {
  heartbeatIntervalMs: 100,
  silenceTimeoutMs: 3_000,
  graceMs: 30_000,
  lingerMs: 1_000,
};

interface Rig {
  links: FaultyLink[];
  client: FusionClient;
  server: FusionServer;
  clientAddr: number;
  target: ReturnType<typeof startHashTarget>;
  close(): Promise<void>;
}

function rig(
  nPaths: number,
  sendBack: number,
  localBind = false,
  rateBytesPerSec = 0,
): Rig {
  const target = startHashTarget(sendBack);
  const server = new FusionServer({
    token,
    target: { host: "127.0.0.1", port: target.port },
    ...fastTimers,
  });
  const srv = serve(listenLocal(), server.handle);
  const links = Array.from(
    { length: nPaths },
    () => new FaultyLink(srv.addr.port, rateBytesPerSec),
  );
  const client = new FusionClient({
    token,
    paths: links.map((l, i) => ({
      host: "127.0.0.1",
      port: l.port,
      ...(localBind && i === 0 ? { localAddress: "127.0.0.1" } : {}),
    })),
    backoff: { initialMs: 50, maxMs: 300 },
    ...fastTimers,
  });
  const cli = serve(listenLocal(), client.handle);
  return {
    links,
    client,
    server,
    clientAddr: cli.addr.port,
    target,
    close: async () => {
      await cli.stop(2000);
      await client.close();
      await srv.stop(2000);
      await server.close();
      for (const l of links) await l.close();
      await target.close();
    },
  };
}

/** 64 MiB up and down through the rig; `during` runs once `atBytes` went up. */
async function transfer(
  r: Rig,
  bytes: number,
  during?: () => Promise<void> | void,
): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: r.clientAddr });
  try {
    const up = (async () => {
      const half = Math.floor(bytes / 2);
      await sendBlocks(conn, half, 1);
      await during?.();
      // the rest of the stream: same block sequence continued from `half`
      await sendRest(conn, bytes, half);
      await conn.closeWrite();
    })();
    const [, down] = await Promise.all([up, drainHash(conn)]);
    assertEquals(down.bytes, bytes, "bytes down");
    assertEquals(down.sha256, blockStreamSha256(bytes, 2), "sha256 down");
  } finally {
    closeQuietly(conn);
  }
  // The target records its hash once its side finished.
  await until("the target's hash of the upload", () => r.target.results.length > 0);
  assertEquals(r.target.results[0], { bytes, sha256: blockStreamSha256(bytes, 1) }, "sha256 up");
}

/** Send bytes [from, total) of the block stream of `total` bytes (seed 1). */
async function sendRest(conn: Deno.Conn, total: number, from: number): Promise<void> {
  let pos = 0;
  for (const chunk of blockStream(total, 1)) {
    const end = pos + chunk.length;
    if (end > from) {
      await writeAll(conn, chunk.subarray(Math.max(0, from - pos)));
    }
    pos = end;
  }
}

async function lastSummary(r: Rig): Promise<SessionSummary> {
  await until("the client's session summary", () => r.client.recent.length > 0);
  return r.client.recent[r.client.recent.length - 1];
}

/** Live paths of the client's session (the transfer's: the rig carries one at a time). */
function livePaths(r: Rig): number {
  return [...r.client.sessions][0]?.pathCount ?? 0;
}

const opts = { sanitizeOps: true, sanitizeResources: true };

Deno.test({ name: "fusion loopback: 64 MiB each way over 3 paths", ...opts }, async () => {
  const r = await rig(3, 64 * MiB);
  try {
    await transfer(r, 64 * MiB);
    assert(
      r.links.every((l) => l.bytes > 1 * MiB),
      `every path carried data: ${r.links.map((l) => l.bytes)}`,
    );
  } finally {
    await r.close();
  }
});

Deno.test(
  { name: "fusion loopback: a path cut mid-transfer, then returning", ...opts },
  async () => {
    const r = await rig(2, 64 * MiB, true, 15 * MiB);
    try {
      await transfer(r, 64 * MiB, async () => {
        r.links[0].down = true;
        r.links[0].cut();
        await until("the cut path to leave the session", () => livePaths(r) < 2);
        await new Promise((x) => setTimeout(x, 300)); // reconnects refused meanwhile
        r.links[0].restore();
        // The rest of the upload waits for it: it came back mid-transfer on any box.
        await until("the cut path to come back", () => livePaths(r) === 2);
      });
      const sum = await lastSummary(r);
      console.log(JSON.stringify(sum));
      assertEquals(sum.end, "done");
      assert(sum.paths.some((p) => p.end === "eof" || p.end === "error"), "a path went down");
      assert(sum.paths.length >= 3, "the cut path came back");
    } finally {
      await r.close();
    }
  },
);

Deno.test({ name: "fusion loopback: a path silenced mid-transfer", ...opts }, async () => {
  const r = await rig(2, 64 * MiB, false, 15 * MiB);
  try {
    await transfer(r, 64 * MiB, async () => {
      r.links[1].silence();
      await until("the silence timer to drop the path", () => livePaths(r) < 2);
      r.links[1].restore();
      // The rest of the upload waits for it: it came back mid-transfer on any box.
      await until("the silenced path to come back", () => livePaths(r) === 2);
    });
    const sum = await lastSummary(r);
    console.log(JSON.stringify(sum));
    assertEquals(sum.end, "done");
    assert(sum.paths.some((p) => p.end === "silent"), "the silent path was dropped");
    assert(sum.paths.length >= 3, "the silenced path came back");
  } finally {
    await r.close();
  }
});

Deno.test(
  { name: "fusion loopback: a wrong token ends the session at once", ...opts },
  async () => {
    const target = startHashTarget(10);
    const server = new FusionServer({
      token,
      target: { host: "127.0.0.1", port: target.port },
      ...fastTimers,
    });
    const srv = serve(listenLocal(), server.handle);
    const bad = new FusionClient({
      token: "wrong",
      paths: [{ host: "127.0.0.1", port: srv.addr.port }],
      ...fastTimers,
    });
    try {
      const s = bad.open();
      const summary: SessionSummary = await s.closed;
      assertEquals(summary.end, "peer-reset");
      assertEquals(server.sessions.size, 0);
    } finally {
      await bad.close();
      await srv.stop(1000);
      await server.close();
      await target.close();
    }
  },
);
