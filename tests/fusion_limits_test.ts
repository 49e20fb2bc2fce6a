/**
 * Fusion session lifecycle in-process: many sessions at once, backpressure from a target
 * that does not read, the grace period when every path is gone, and path limits.
 */
import { FusionClient, FusionServer } from "../lib/fusion/mod.ts";
import { Logger } from "../lib/log.ts";
import { closeQuietly, dial, serve, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { FaultyLink, startHashTarget } from "./_fusion.ts";
import { listenLocal, readAll, readWithin, sha256, TimedOutError, until, within } from "./_util.ts";

const token = "limits-token";
const timers = { heartbeatIntervalMs: 50, silenceTimeoutMs: 500, lingerMs: 500 };
const opts = { sanitizeOps: true, sanitizeResources: true };

Deno.test({ name: "fusion: 20 sessions at once, each intact", ...opts }, async () => {
  const target = startHashTarget(256 * 1024);
  const server = new FusionServer({ token, target: { host: "127.0.0.1", port: target.port } });
  const srv = serve(listenLocal(), server.handle);
  const client = new FusionClient({
    token,
    paths: [{ host: "127.0.0.1", port: srv.addr.port }, { host: "127.0.0.1", port: srv.addr.port }],
  });
  const cli = serve(listenLocal(), client.handle);
  try {
    const one = async (i: number) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: cli.addr.port });
      try {
        const payload = new Uint8Array(100_000 + i * 1000).fill(i);
        const [, back] = await Promise.all([
          writeAll(conn, payload).then(() => conn.closeWrite()),
          readAll(conn),
        ]);
        assertEquals(back.length, 256 * 1024);
        return sha256(payload);
      } finally {
        closeQuietly(conn);
      }
    };
    const sent = await Promise.all(Array.from({ length: 20 }, (_, i) => one(i)));
    await until("20 results at the target", () => target.results.length >= 20);
    assertEquals(target.results.map((r) => r.sha256).sort(), sent.sort());
  } finally {
    await cli.stop(1000);
    await client.close();
    await srv.stop(1000);
    await server.close();
    await target.close();
  }
});

Deno.test({
  name: "fusion: a target that does not read bounds the sender (to the smaller window)",
  ...opts,
}, async () => {
  const windowBytes = 1024 * 1024;
  const listener = listenLocal();
  let targetConn: Deno.TcpConn | undefined;
  const accepted = listener.accept().then((c) => targetConn = c);
  const server = new FusionServer({
    token,
    target: { host: "127.0.0.1", port: listener.addr.port },
    windowBytes,
  });
  const srv = serve(listenLocal(), server.handle);
  // The client would keep 16 windows in flight; the server's receive bound limits it.
  const client = new FusionClient({
    token,
    paths: [{ host: "127.0.0.1", port: srv.addr.port }],
    windowBytes: 16 * windowBytes,
  });
  const s = client.open();
  try {
    await within(accepted, "the fusion server's connection to the target");
    let written = 0;
    const chunk = new Uint8Array(64 * 1024);
    // What the sender may have accepted with the target not reading: the target's socket
    // buffers plus both session windows. A sender not bounded fails here instead of looping.
    const mostBytes = 2 * windowBytes + 32 * 1024 * 1024;
    // A write still pending one macrotask later waits for room in its send window (the only
    // wait of write()): the block, read off the session, never a guess from a timer.
    const pendsAfterTick = (w: Promise<unknown>) =>
      Promise.race([
        w.then(() => false),
        new Promise<boolean>((r) => setTimeout(() => r(true), 0)),
      ]);
    let w = s.write(chunk);
    while (!(await pendsAfterTick(w))) {
      written += chunk.length;
      assert(written < mostBytes, `accepted ${written} bytes, the target reading none`);
      w = s.write(chunk);
    }
    // Bounded by the server's window (1 MiB), not the client's own (16 MiB), and full.
    const unacked = s.sendBufferedBytes;
    assert(unacked <= windowBytes, `send buffer ${unacked} over the server's window`);
    assert(unacked > windowBytes / 2, `blocked with only ${unacked} bytes unacknowledged`);
    // Unblock the writer by reading at the target: every byte arrives.
    const received = (async () => {
      const buf = new Uint8Array(1 << 20);
      let n = 0;
      for (let r; (r = await readWithin(targetConn!, buf, "the target's bytes", n)) !== null;) {
        n += r;
      }
      return n;
    })();
    await within(w, "the blocked write, once the target reads");
    written += chunk.length;
    await within(s.closeWrite(), "the session's closeWrite acknowledged");
    await targetConn!.closeWrite();
    assertEquals(await received, written, "bytes at the target");
    assert(written > windowBytes / 2, `accepted only ${written} bytes`);
    assertEquals(await readWithin(s, new Uint8Array(10), "the session's EOF"), null);
    s.close();
    assertEquals((await within(s.closed, "the session's end")).end, "done");
  } finally {
    s.close();
    await client.close();
    await srv.stop(1000);
    await server.close();
    closeQuietly(targetConn);
    closeQuietly(listener);
  }
});

Deno.test(
  { name: "fusion: with every path gone past the grace period both ends close", ...opts },
  async () => {
    const target = startHashTarget(0);
    const server = new FusionServer({
      token,
      target: { host: "127.0.0.1", port: target.port },
      graceMs: 400,
      ...timers,
    });
    const srv = serve(listenLocal(), server.handle);
    const link = new FaultyLink(srv.addr.port);
    const client = new FusionClient({
      token,
      paths: [{ host: "127.0.0.1", port: link.port }],
      graceMs: 400,
      backoff: { initialMs: 50, maxMs: 100 },
      ...timers,
    });
    const cli = serve(listenLocal(), client.handle);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: cli.addr.port });
      try {
        await writeAll(conn, new Uint8Array(1000));
        await until("a session at the server", () => server.sessions.size > 0);
        link.down = true;
        link.cut();
        // The client side gives up: its connection is closed (EOF or reset), not left hanging.
        const buf = new Uint8Array(100);
        const end = await readWithin(conn, buf, "the client side to give up").catch((e) => e);
        assert(
          end === null || end instanceof Error && !(end instanceof TimedOutError),
          `read gave ${end}`,
        );
      } finally {
        closeQuietly(conn);
      }
      await until(
        "the session's end at both sides",
        () => client.recent.length > 0 && server.recent.length > 0,
      );
      assertEquals(client.recent[0]?.end, "no-paths");
      assertEquals(server.recent[0]?.end, "no-paths");
    } finally {
      await cli.stop(1000);
      await client.close();
      await srv.stop(1000);
      await server.close();
      await link.close();
      await target.close();
    }
  },
);

/** A logger keeping its lines in `lines`. */
function recording(lines: string[]): Logger {
  return new Logger("debug", {}, (l) => void lines.push(l));
}

/** How many of `lines` say a path was refused for `why`. */
function count(lines: string[], why: string): number {
  return lines.filter((l) => l.includes("path refused") && l.includes(`why="${why}"`)).length;
}

Deno.test({ name: "fusion: paths beyond the per-session limit are refused", ...opts }, async () => {
  const target = startHashTarget(0);
  const server = new FusionServer({
    token,
    target: { host: "127.0.0.1", port: target.port },
    maxPathsPerSession: 1,
  });
  const lines: string[] = [];
  const srv = serve(listenLocal(), server.handle, { log: recording(lines) });
  const client = new FusionClient({
    token,
    paths: [1, 2, 3].map(() => ({ host: "127.0.0.1", port: srv.addr.port })),
    backoff: { initialMs: 20, maxMs: 50 },
  });
  const s = client.open();
  try {
    await until("the session's first path", () => s.pathCount > 0);
    // The other paths tried and were refused (twice in all; they keep trying).
    await until("two paths refused at the limit", () => count(lines, "path limit") >= 2);
    assertEquals(server.sessions.size, 1);
    assertEquals([...server.sessions.values()][0].pathCount, 1);
    assertEquals(s.pathCount, 1);
    await writeAll(s, new TextEncoder().encode("still works"));
    await s.closeWrite();
    assertEquals((await readAll(s)).length, 0);
    s.close();
    assertEquals((await s.closed).end, "done");
  } finally {
    s.close();
    await client.close();
    await srv.stop(1000);
    await server.close();
    await target.close();
  }
});

Deno.test({ name: "fusion: sessions beyond the server's limit get no path", ...opts }, async () => {
  const target = startHashTarget(0);
  const server = new FusionServer({
    token,
    target: { host: "127.0.0.1", port: target.port },
    maxSessions: 1,
  });
  const lines: string[] = [];
  const srv = serve(listenLocal(), server.handle, { log: recording(lines) });
  const client = new FusionClient({
    token,
    paths: [{ host: "127.0.0.1", port: srv.addr.port }],
    backoff: { initialMs: 20, maxMs: 50 },
  });
  try {
    const first = client.open();
    await until("the first session's path", () => first.pathCount > 0);
    const second = client.open();
    await until("the second session refused", () => count(lines, "session limit") >= 1);
    assertEquals(first.pathCount, 1);
    assertEquals(second.pathCount, 0);
    assertEquals(server.sessions.size, 1);
  } finally {
    await client.close();
    await srv.stop(1000);
    await server.close();
    await target.close();
  }
});

Deno.test("fusion limits: a silent pre-auth path holds a few KiB, path state comes after the hello", async () => {
  // Measured by the process's array-buffer memory (counted, not timed): each silent
  // connection used to hold the 256 KiB decoder buffer of a joined path before any hello.
  const server = new FusionServer({ token, target: { host: "127.0.0.1", port: 9 } });
  const srv = serve(listenLocal(), server.handle, { handshakeTimeoutMs: 60_000 });
  const silent: Deno.TcpConn[] = [];
  try {
    const before = Deno.memoryUsage().external;
    for (let i = 0; i < 100; i++) silent.push(await dial("127.0.0.1", srv.addr.port));
    await until("100 silent connections accepted", () => srv.stats.active >= 100);
    const perConnKiB = (Deno.memoryUsage().external - before) / 1024 / 100;
    assert(perConnKiB < 32, `${perConnKiB.toFixed(1)} KiB of buffers per silent connection`);
  } finally {
    for (const c of silent) closeQuietly(c);
    await srv.stop(500);
    await server.close();
  }
});
