/**
 * Fusion paths that try to join a session they do not belong to: a wrong token (even with
 * a live session's id), a rejoin of an unknown session, a joined path that sends a second
 * hello for another session, and garbage after the hello. Each is refused (welcome status
 * or path dropped) and a live session keeps its bytes exact.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, dial, serve, writeAll } from "../lib/net/mod.ts";
import { FusionClient, FusionServer } from "../lib/fusion/mod.ts";
import {
  encodeData,
  encodeFin,
  encodeHello,
  FrameDecoder,
  ResetCode,
  SeqFrameType,
  WelcomeStatus,
} from "../lib/sequencer/mod.ts";
import { startHashTarget } from "./_fusion.ts";
import { Logger } from "../lib/log.ts";
import { listenLocal, readAll, sha256, until, within } from "./_util.ts";

const token = "fusion-hostile-token";
const enc = new TextEncoder();
/** How long a raw path waits for the server to close it: a bound for a hang, not a timing check. */
const pathWaitMs = 60_000;

/**
 * Send `frames` on a fresh path; the welcome status (or null), whether it was closed, and the
 * code of the reset frame the server sent (or null). Reads until the server closes the path
 * (`pathWaitMs` at most: then `closed` is false), or with `stop: "welcome"` until an ok welcome.
 */
async function rawPath(
  port: number,
  frames: Uint8Array[],
  stop: "close" | "welcome" = "close",
): Promise<{
  status: number | null;
  closed: boolean;
  reset: number | null;
}> {
  const c = await dial("127.0.0.1", port);
  try {
    for (const f of frames) await writeAll(c, f);
    const dec = new FrameDecoder();
    const buf = new Uint8Array(4096);
    let status: number | null = null;
    let reset: number | null = null;
    let closed = false;
    const deadline = Date.now() + pathWaitMs;
    while (Date.now() < deadline) {
      let n: number | null;
      try {
        n = await within(
          c.read(buf).catch(() => null), // reset: closed
          "the server to close a raw path",
          deadline - Date.now(),
        );
      } catch {
        break; // not closed in time: `closed` stays false, the caller's assertion says so
      }
      if (n === null) {
        closed = true;
        break;
      }
      dec.push(buf.subarray(0, n));
      for (let f = dec.next(); f; f = dec.next()) {
        if (f.type === SeqFrameType.welcome && status === null) status = f.status;
        if (f.type === SeqFrameType.reset) (closed = true, reset = f.code);
      }
      if (status !== null && status !== WelcomeStatus.ok) continue; // read on to the close
      if (closed || (stop === "welcome" && status === WelcomeStatus.ok)) break;
    }
    return { status, closed, reset };
  } finally {
    closeQuietly(c);
  }
}

Deno.test("hostile fusion: paths for sessions they do not belong to are refused", async () => {
  const target = startHashTarget(64 * 1024);
  const server = new FusionServer({ token, target: { host: "127.0.0.1", port: target.port } });
  const srv = serve(listenLocal(), server.handle, { handshakeTimeoutMs: 2_000 });
  const client = new FusionClient({ token, paths: [{ host: "127.0.0.1", port: srv.addr.port }] });
  const s = client.open();
  try {
    await until("the client's first path", () => s.pathCount > 0);
    assertEquals(server.sessions.size, 1);
    const port = srv.addr.port;

    // 1. The live session's id with a wrong token: refused, no new session, nothing joined.
    const wrongToken = await rawPath(port, [encodeHello(s.id, 9, enc.encode("guess"), true)]);
    assertEquals(wrongToken.status, WelcomeStatus.badToken);
    assert(wrongToken.closed);
    // 2. Rejoin of a session that does not exist: refused.
    const unknown = await rawPath(port, [
      encodeHello(new Uint8Array(16).fill(1), 1, enc.encode(token), true),
    ]);
    assertEquals(unknown.status, WelcomeStatus.unknownSession);
    // 3. A wrong token for a new session: refused, and no session (no target dial) is made.
    const fresh = await rawPath(port, [
      encodeHello(new Uint8Array(16).fill(2), 1, enc.encode("x"), false),
    ]);
    assertEquals(fresh.status, WelcomeStatus.badToken);
    assertEquals(server.sessions.size, 1);

    // 4. A path that joined session B and then sends a hello for session A (switching
    //    sessions mid-path) or garbage: the path is dropped; A is untouched.
    const otherId = new Uint8Array(16).fill(3);
    const switcher = await rawPath(port, [
      encodeHello(otherId, 1, enc.encode(token), false),
      encodeHello(s.id, 2, enc.encode(token), true),
    ]);
    assertEquals(switcher.status, WelcomeStatus.ok);
    assert(switcher.closed, "a path that sent a second hello was kept");
    const garbage = await rawPath(port, [
      encodeHello(new Uint8Array(16).fill(4), 1, enc.encode(token), false),
      Uint8Array.of(0xee, 1, 2, 3),
    ]);
    assert(garbage.closed, "a path that sent garbage was kept");
    // Data frames on a path of session B never reach session A's target stream.
    await rawPath(port, [
      encodeHello(new Uint8Array(16).fill(5), 1, enc.encode(token), false),
      encodeData(0, enc.encode("INJECTED")),
    ], "welcome");

    // The live session still carries its bytes exactly.
    const payload = new Uint8Array(200_000).map((_, i) => i * 7);
    const [, back] = await Promise.all([
      writeAll(s, payload).then(() => s.closeWrite()),
      readAll(s),
    ]);
    assertEquals(back.length, 64 * 1024);
    await until(
      "the target's hash of the payload",
      () => target.results.some((r) => r.bytes === payload.length),
    );
    const mine = target.results.find((r) => r.bytes === payload.length);
    assertEquals(mine?.sha256, sha256(payload));
  } finally {
    s.close();
    await client.close();
    await srv.stop(500);
    await server.close();
    await target.close();
  }
});

Deno.test("hostile fusion: a peer sending sequence numbers out of bounds is cut, others go on", async () => {
  const target = startHashTarget(1024);
  const lines: string[] = [];
  const log = new Logger("info", {}, (l) => lines.push(l));
  const server = new FusionServer({ token, target: { host: "127.0.0.1", port: target.port }, log });
  const srv = serve(listenLocal(), server.handle, { handshakeTimeoutMs: 2_000 });
  const port = srv.addr.port;
  const hello = (id: number) =>
    encodeHello(new Uint8Array(16).fill(id), 1, enc.encode(token), false);
  try {
    // 1. Zero-length frames out of order, past the frame window (today: held without bound).
    const zeros = new Uint8Array(20_000 * 13);
    for (let i = 0; i < 20_000; i++) zeros.set(encodeData(1 + i, new Uint8Array(0)), i * 13);
    const empty = await rawPath(port, [hello(11), zeros]);
    assertEquals([empty.status, empty.reset], [WelcomeStatus.ok, ResetCode.protocol]);
    // 2. A fin far ahead.
    const fin = await rawPath(port, [hello(12), encodeFin(1_000_000)]);
    assertEquals([fin.status, fin.reset], [WelcomeStatus.ok, ResetCode.protocol]);
    // 3. One frame numbered 2^52 after a valid hello (today: a NACK walk over 2^52
    // seqs pins the event loop for good, so it comes last).
    const huge = await rawPath(port, [hello(10), encodeData(2 ** 52, enc.encode("x"))]);
    assertEquals([huge.status, huge.reset], [WelcomeStatus.ok, ResetCode.protocol]);
    const cuts = lines.filter((l) => l.includes("peer broke the sequence bounds"));
    assertEquals(cuts.length, 3, lines.join("\n"));
    assert(cuts.every((l) => /failure=seq-too-far/.test(l)), cuts.join("\n"));
    await until("the cut sessions to end", () => server.sessions.size === 0);

    // A well-behaved session afterwards carries its bytes exactly.
    const client = new FusionClient({ token, paths: [{ host: "127.0.0.1", port }] });
    const s = client.open();
    try {
      const payload = new Uint8Array(100_000).map((_, i) => i * 13);
      const [, back] = await Promise.all([
        writeAll(s, payload).then(() => s.closeWrite()),
        readAll(s),
      ]);
      assertEquals(back.length, 1024);
      await until(
        "the target's hash of the payload",
        () => target.results.some((r) => r.bytes === payload.length),
      );
      assertEquals(target.results.find((r) => r.bytes === payload.length)?.sha256, sha256(payload));
    } finally {
      s.close();
      await client.close();
    }
  } finally {
    await srv.stop(500);
    await server.close();
    await target.close();
  }
});
